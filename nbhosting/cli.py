"""The ``nbh`` command, for operators.

Every error is one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import grp
import json
import os
import pwd
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import httpx

from . import (access, ask, autopull, config, course_images, courses, courseunits, cull, disks, events, gc,
               jupyter_static, lifecycle, lti, origins, paths, sampler, staff, stats, store, tokens)
from .names import BadName, Instance, check_course, check_student
from .systemd import Systemd, SystemdError

CONTAINER_USER = "nbh-jupyter"
WEB_USER = "nbh"
UNIT_DIR = Path("/etc/systemd/system")
DROPIN_DIR = UNIT_DIR / "nbh-jupyter@.service.d"
# limits.build_disk_max: the build's storage on the course's build disk.
BUILD_DISK_DROPIN = """\
# Written by `nbh setup` from nbhosting.toml [limits] build_disk_max; edit that file instead.
[Unit]
BindsTo=nbh-course-disk@%i.service
After=nbh-course-disk@%i.service
"""
# The units that read another party's input (a student's notebook, a
# course's repository) see no process but their own with systemd >= 257's
# PrivatePIDs=; an older systemd would warn of an unknown key at every
# reload, so the drop-in is written only where the installed one knows it.
PRIVATE_PIDS_UNITS = ("nbh-render@.service", "nbh-course-update@.service")
PRIVATE_PIDS_SINCE = 257
PRIVATE_PIDS_DROPIN = """\
# Written by `nbh setup`: this systemd knows PrivatePIDs= (257 and later).
[Service]
# A PID namespace of the unit's own, its first process PID 1. (257 logs
# "Supervising process ... which is not our child" at each start: its
# executor forks that first process; systemd follows it by its cgroup.)
PrivatePIDs=yes
"""
# HTTP/2 on the site's TLS servers where nginx has the `http2` directive
# (1.25.1 and later: Debian 13, Fedora); 1.22's (Debian 12) is a flag of the
# `listen` lines, which newer ones warn of, so there the site stays HTTP/1.1.
# nginx/nbhosting.conf includes /etc/nbhosting/nginx/*.conf in each.
NGINX_HTTP2_SINCE = (1, 25, 1)
NGINX_HTTP2_CONF = paths.CONF_DIR / "nginx" / "http2.conf"
NGINX_HTTP2_TEXT = """\
# Written by `nbh setup`: this nginx ({version}) has the http2 directive.
http2 on;
"""


# Precompressed brotli (foo.js.br, written by every extraction) beside gzip
# under /_jupyter/, where nginx loads the brotli_static module (Debian's
# libnginx-mod-http-brotli-static): nginx/jupyter-static.conf includes
# /etc/nbhosting/nginx/static/*.conf. Found by the files that load modules,
# as Debian and Fedora lay them out: `nginx -T` needs the site whole, which
# it is not before its certificate.
NGINX_MODULE_LOADERS = ("/etc/nginx/modules-enabled/*.conf", "/usr/share/nginx/modules/*.conf")
NGINX_BROTLI_CONF = paths.CONF_DIR / "nginx" / "static" / "brotli.conf"
NGINX_BROTLI_TEXT = """\
# Written by `nbh setup`: this nginx loads ngx_http_brotli_static_module ({loader}).
brotli_static on;
"""


class CommandError(Exception):
    """Ends the command with this message and exit status 1."""


def connect() -> Systemd:
    return Systemd.connect(os.environ.get("NBH_BUS_ADDRESS"))


async def start(args) -> None:
    instance = Instance(args.course, args.student)
    async with await connect() as systemd:
        await systemd.start_instance(instance, await courses.limits_for_start(systemd, config.load(), instance))
    print(f"{instance.path}: started, {instance.base_url}")


async def stop(args) -> None:
    instance = Instance(args.course, args.student)
    async with await connect() as systemd:
        await systemd.stop_instance(instance)
    print(f"{instance.path}: stopped")


def _since(usec: int) -> str:
    if not usec:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(usec / 1e6))


def _memory(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value / 2**20:.1f}M"


async def status(args) -> None:
    if args.student and not args.course:
        raise CommandError("a student needs a course")
    try:
        secret = tokens.read_secret()  # to ask the servers how idle they are
    except OSError:
        secret = None
    async with await connect() as systemd:
        if args.student:
            units = [Instance(args.course, args.student).service]
        else:
            units = await systemd.list_instances()
        rows = []
        for unit in units:
            instance = Instance.from_unit(unit)
            if args.course and instance.course != check_course(args.course):
                continue
            state = await systemd.state(unit)
            age = idle = None
            if state.ActiveState == "active":
                age = time.time() - state.active_since_usec / 1e6
                if secret:
                    try:
                        idle = (await cull.activity(instance, secret)).idle
                    except (ask.AskError, OSError):
                        pass
            rows.append((instance.course, instance.student, f"{state.ActiveState}/{state.SubState}",
                         _since(state.since_usec), _memory(state.MemoryCurrent), config.duration_text(age),
                         config.duration_text(idle), _disk(instance)))
    _table(("COURSE", "STUDENT", "STATE", "SINCE", "MEMORY", "AGE", "IDLE", "DISK"), rows)
    if not args.student:
        used = {course: disks.used(course) for course in sorted({row[0] for row in rows})}
        if any(used.values()):
            print()
            _table(("COURSE", "WORKSPACE DISKS"), [(course, _memory(value)) for course, value in used.items()])


def _disk(instance: Instance) -> str:
    """What the workspace's own disk takes on the host, or "-" for a folder."""
    try:
        return _memory(disks.image_path(instance).stat().st_blocks * 512)
    except OSError:
        return "-"


async def cull_command(args) -> None:
    settings = config.load()
    async with await connect() as systemd:
        decisions = await cull.cull(systemd, settings, dry_run=args.dry_run)
    verb = "would stop" if args.dry_run else "stopped"
    rows = [(d.instance.course, d.instance.student, verb if d.cull else "keeps", d.reason) for d in decisions]
    _table(("COURSE", "STUDENT", "", "WHY"), rows)


async def gc_command(args) -> None:
    dormant_after = config.load().cull.dormant_after
    async with await connect() as systemd:
        removed = await gc.collect(systemd, dry_run=args.dry_run, dormant_after=dormant_after)
    for thing in removed:
        print(("would remove " if args.dry_run else "removed ") + thing)
    if not removed:
        print("nothing to remove")


def logs(args) -> int:
    instance = Instance(args.course, args.student)
    argv = ["journalctl", "--no-pager", "-o", "short-iso"]
    for unit in instance.units:
        argv += ["--unit", unit]
    if args.follow:
        argv.append("--follow")
    if args.lines is not None:
        argv += ["--lines", str(args.lines)]
    try:
        return subprocess.run(argv).returncode
    except FileNotFoundError:
        raise CommandError("journalctl is not installed") from None


def setup(args) -> None:
    """What the package scripts do after the accounts exist; idempotent."""
    if os.geteuid() != 0:
        raise CommandError("setup must run as root")
    try:
        web_group = grp.getgrnam(WEB_USER).gr_gid
        pwd.getpwnam(CONTAINER_USER)
    except KeyError as error:
        raise CommandError(f"missing account {error} (systemd-sysusers nbhosting.conf)") from None
    settings = config.load()
    for path in (tokens.SECRET_PATH, access.LMS_KEY_PATH):
        if tokens.create_secret(path, group_id=web_group):
            print(f"created {path}")
    if not lti.TOOL_KEY_PATH.exists() and tokens.create_secret(lti.TOOL_KEY_PATH, web_group, lti.new_tool_key()):
        print(f"created {lti.TOOL_KEY_PATH}")
    if origins.write_mode(settings.web):
        print(f"{'wrote' if settings.web.student_origin else 'removed'} {origins.MODE_FLAG}")
    DROPIN_DIR.mkdir(parents=True, exist_ok=True)
    # Sorted before the 50-MemoryMax.conf and 50-CPUQuota.conf that a course's
    # own limits leave (SetUnitProperties, runtime), which must win.
    (DROPIN_DIR / "40-limits.conf").write_text(settings.limits.dropin())
    (DROPIN_DIR / "50-limits.conf").unlink(missing_ok=True)  # its name before 0.2
    for section, dropins in (("cull", settings.cull.dropins()), ("courses", settings.courses.dropins()),
                             ("events", settings.events.dropins())):
        for unit, text in dropins.items():
            folder = UNIT_DIR / f"{unit}.d"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"50-{section}.conf").write_text(text)
    build_disk = UNIT_DIR / "nbh-course-build@.service.d" / "50-disk.conf"
    if settings.limits.build_disk_max_bytes:
        build_disk.parent.mkdir(parents=True, exist_ok=True)
        build_disk.write_text(BUILD_DISK_DROPIN)
    else:
        build_disk.unlink(missing_ok=True)
    private_pids = systemd_version() >= PRIVATE_PIDS_SINCE
    for unit in PRIVATE_PIDS_UNITS:
        dropin = UNIT_DIR / f"{unit}.d" / "60-private-pids.conf"
        if private_pids:
            dropin.parent.mkdir(parents=True, exist_ok=True)
            dropin.write_text(PRIVATE_PIDS_DROPIN)
        else:
            dropin.unlink(missing_ok=True)
    version = nginx_version()
    if version and version >= NGINX_HTTP2_SINCE:
        NGINX_HTTP2_CONF.parent.mkdir(mode=0o755, exist_ok=True)
        NGINX_HTTP2_CONF.write_text(NGINX_HTTP2_TEXT.format(version=".".join(map(str, version))))
    else:
        NGINX_HTTP2_CONF.unlink(missing_ok=True)
    if loader := nginx_module_loader("ngx_http_brotli_static_module"):
        NGINX_BROTLI_CONF.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        NGINX_BROTLI_CONF.write_text(NGINX_BROTLI_TEXT.format(loader=loader))
    else:
        NGINX_BROTLI_CONF.unlink(missing_ok=True)
    if Path("/run/systemd/system").is_dir():
        subprocess.run(["systemctl", "daemon-reload"], check=True)


def nginx_version(said: str | None = None) -> tuple[int, ...] | None:
    """The installed nginx's version, from what `nginx -v` says (run here
    unless given); None without one."""
    if said is None:
        try:
            said = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr
        except OSError:
            return None
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", said)
    return tuple(int(part) for part in found.groups()) if found else None


def nginx_module_loader(module: str, root: str = "/") -> str | None:
    """The file that makes nginx load this dynamic module, if there is one."""
    for pattern in NGINX_MODULE_LOADERS:
        for loader in sorted(Path(root).glob(pattern.lstrip("/"))):
            with contextlib.suppress(OSError, UnicodeDecodeError):
                if re.search(rf"^\s*load_module\s+[\"']?\S*\b{module}\.so[\"']?\s*;", loader.read_text(), re.M):
                    return "/" + str(loader.relative_to(root))
    return None


def systemd_version() -> int:
    """The installed systemd's version (the one that runs, or will run, the units)."""
    try:
        first = subprocess.run(["systemctl", "--version"], capture_output=True, text=True, check=True).stdout
        return int(first.split()[1])
    except (OSError, subprocess.CalledProcessError, IndexError, ValueError):
        raise CommandError("cannot tell the installed systemd's version (systemctl --version)") from None


def mount_shared(args) -> None:
    if os.geteuid() != 0:
        raise CommandError("mount-shared must run as root")
    for course in disks.mount_all_shared():
        print(f"mounted the shared pages disk of {course}")


def extract_static(args) -> None:
    """After the site's image is built or imported (a course's build does it
    for its own): its Notebook files, for nginx to serve to every student."""
    if os.geteuid() != 0:
        raise CommandError("jupyter-static must run as root")
    image = args.image or course_images.base_image()
    try:
        entry = jupyter_static.extract(image)
    except (jupyter_static.StaticError, OSError) as error:
        raise CommandError(f"{image}: {error}; its servers serve their own static files") from None
    print(f"{image}: {jupyter_static.URL_PREFIX}{entry['id']}/ ({jupyter_static.STATIC_ROOT / entry['id']})")


def sign(args) -> None:
    """The entry URL for the LMS, signed with the key it shares with us: one
    that nbh-web accepts in every mode, or an error saying why there is none."""
    course = courses.load(args.course)
    courses.find_notebook(course, args.notebook)
    check_student(args.student)
    if lti.is_lti_student(args.student):
        raise CommandError(f"student names {lti.STUDENT_PREFIX}* are those of LTI launches: nbh-web refuses them here")
    web = config.load().web
    ttl = web.signature_ttl if args.ttl is None else args.ttl
    if ttl <= 0:
        raise CommandError(f"--ttl {ttl}: a URL must stay valid a positive number of seconds")
    try:
        key = access.read_key()
    except FileNotFoundError:
        raise CommandError(f"no LMS key at {access.LMS_KEY_PATH}: run `nbh setup` as root") from None
    except PermissionError:
        raise CommandError(f"cannot read {access.LMS_KEY_PATH}: run as root or as nbh") from None
    if not key:
        raise CommandError(f"{access.LMS_KEY_PATH} is empty: remove it and run `nbh setup` as root")
    query = access.signed_query(key, args.course, args.notebook, args.student, ttl)
    print(f"{web.public_url}/ipythonExercice/{args.course}/{quote(args.notebook)}/{args.student}?{query}")


def _require_root(command: str, group: str) -> int:
    """The id of the group that is to read what the command writes."""
    if os.geteuid() != 0:
        raise CommandError(f"{command} must run as root")
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise CommandError(f"missing group {group!r} (systemd-sysusers nbhosting.conf)") from None


async def revoke(args) -> None:
    """A new token for the pair; its running server stops, and the next
    visit starts it again with the new token."""
    instance = Instance(args.course, args.student)
    group_id = _require_root("revoke", CONTAINER_USER)  # nbh-jupyter-run reads the generation
    new = tokens.bump_generation(instance, group_id)
    async with await connect() as systemd:
        running = await systemd.active_state(instance.service) not in ("inactive", "failed")
        if running:
            await systemd.stop_instance(instance)
    events.send("revoke", instance, f"{instance.path}: token revoked (generation {new})"
                + (", server stopped" if running else ""), NBH_GENERATION=new)
    print(f"{instance.path}: token revoked (generation {new})" + ("; its server stopped" if running else ""))


async def rotate_secret(args) -> None:
    """A new host secret, so every server's token changes: nbh-web restarts
    with it and every running server stops, to start with its new token at
    its next visit."""
    tokens.replace_secret(group_id=_require_root("rotate-secret", WEB_USER))
    async with await connect() as systemd:
        await systemd.restart("nbh-web.service")
        running = [Instance.from_unit(unit) for unit in await systemd.list_instances()
                   if await systemd.active_state(unit) not in ("inactive", "failed")]
        await asyncio.gather(*(systemd.stop_instance(instance) for instance in running))
    print(f"new {tokens.SECRET_PATH}; nbh-web restarted; {len(running)} running servers stopped")


def _table(header: tuple[str, ...], rows: list[tuple]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


async def _follow_unit(action: str, name: str, instance: str | None = None) -> None:
    """Start the course's unit (nbh-course-<action>@<instance or name>),
    print its output as it comes, fail as it fails."""
    courses.load(name)  # an unknown course is one line here, not a failed unit
    async with await connect() as systemd:
        run = await courseunits.start(systemd, action, instance or name)
        print(f"{run.unit} (journalctl _SYSTEMD_INVOCATION_ID={run.invocation})", flush=True)
        async for line in courseunits.follow(run, systemd):
            print(f"  {line}", flush=True)
        outcome = await courseunits.outcome(systemd, run)
    if not outcome.ok:
        raise CommandError(f"{name}: {action} failed: {outcome.message}")


async def course_create(args) -> None:
    if args.here:
        course = courses.create(args.name, args.git_url, branch=args.branch, image=args.image,
                                idle_timeout=args.idle_timeout)
        print(f"{course.name}: cloned {course.git_url} (commit {courses.commit(course)})")
        return
    courses.register(args.name, args.git_url, branch=args.branch, image=args.image,
                     idle_timeout=args.idle_timeout)
    try:
        await _follow_unit("update", args.name)
    except BaseException:
        if courses.unregister_if_never_cloned(args.name):
            print(f"{args.name}: not created", file=sys.stderr)
        raise
    events.journal_only("course-create", f"course {args.name} created from {args.git_url}",
                        NBH_COURSE=args.name)


def _in_unit(action: str, name: str, work, done: bool = True) -> str:
    """What the course's unit runs: the work, and its event (a failure, or
    when done, the action's)."""
    try:
        result = work(name)
    except (courses.CourseError, courses.UnknownCourse, OSError) as error:
        events.journal_only("failure", f"course {name}: {action} failed: {error}", NBH_COURSE=name,
                            NBH_ACTION=action, NBH_REASON=str(error))
        raise
    if not done:
        return result
    events.journal_only(f"course-{action}", f"course {name}: {action} done: {result}", NBH_COURSE=name,
                        NBH_RESULT=result)
    return result


async def course_update(args) -> None:
    if args.here:
        print(f"{args.name}: at {_in_unit('update', args.name, courses.update)}")
    else:
        await _follow_unit("update", args.name)


async def course_build(args) -> None:
    """The unit's three steps (course_images.py), or the unit started and followed."""
    if args.step == "disk":
        print(_in_unit("build", args.name, course_images.build_disk, done=False))
    elif args.step == "prepare":
        _in_unit("build", args.name, course_images.prepare, done=False)
    elif args.step == "build":
        _in_unit("build", args.name, course_images.build, done=False)
    elif args.step == "install":
        print(f"{args.name}: built {_in_unit('build', args.name, course_images.install)}")
    else:
        await _follow_unit("build", args.name)


async def _lifecycle_work(action: str, course: str, work):
    """What nbh-course-delete@ and nbh-course-rename@ run (--here):
    work(systemd); a refusal or a failure is a failure event and one line."""
    async with await connect() as systemd:
        try:
            return await work(systemd)
        except (lifecycle.StillRunning, BadName, OSError) as error:
            events.journal_only("failure", f"course {course}: {action} failed: {error}", NBH_COURSE=course,
                                NBH_ACTION=action, NBH_REASON=str(error))
            raise CommandError(f"{course}: {error}") from None


async def _stop_servers_if_forced(args) -> None:
    if args.force:
        async with await connect() as systemd:
            stopped = await lifecycle.stop_servers(systemd, args.name)
        print(f"{args.name}: {len(stopped)} running servers stopped")


async def course_delete(args) -> None:
    """The unit's work (--here), or: the servers stopped (--force), the unit
    started and followed, and its archive removed (--remove-work, root)."""
    if args.here:
        archive = await _lifecycle_work("delete", args.name, lambda systemd: lifecycle.delete(systemd, args.name))
        events.journal_only("course-delete", f"course {args.name} deleted, its students' work kept in {archive}",
                            NBH_COURSE=args.name, NBH_ARCHIVE=str(archive))
        print(f"{args.name}: deleted, its students' work kept in {archive}")
        return
    if args.remove_work and os.geteuid() != 0:
        raise CommandError("--remove-work: only root removes students' work")
    courses.load(args.name)
    await _stop_servers_if_forced(args)
    before = set(lifecycle.archives_of(args.name))
    await _follow_unit("delete", args.name)
    for archive in sorted(set(lifecycle.archives_of(args.name)) - before) if args.remove_work else ():
        shutil.rmtree(archive)
        events.journal_only("course-delete", f"course {args.name}: its students' work removed ({archive})",
                            NBH_COURSE=args.name, NBH_ARCHIVE=str(archive), NBH_REMOVED="yes")
        print(f"{args.name}: {archive} removed, as --remove-work asked")


async def course_rename(args) -> None:
    """The unit's work (--here, OLD:NEW as the unit passes it), or: the
    servers stopped (--force), the unit started and followed."""
    if args.here:
        old, new = lifecycle.parse_rename_instance(args.name)
        moved = await _lifecycle_work("rename", old,
                                      lambda systemd: lifecycle.rename(systemd, old, new, tokens.read_secret()))
        events.journal_only("course-rename", f"course {old} renamed {new}", NBH_COURSE=new, NBH_OLD_NAME=old,
                            NBH_SHARED_MOVED=str(moved))
        print(f"{old}: renamed {new}")
        return
    if args.new_name is None:
        raise CommandError("course rename: the new name is missing")
    instance = lifecycle.rename_instance(args.name, args.new_name)
    courses.load(args.name)
    await _stop_servers_if_forced(args)
    await _follow_unit("rename", args.name, instance)


def course_set(args) -> None:
    values = {}
    for assignment in args.settings:
        key, equals, text = assignment.partition("=")
        if not equals:
            raise CommandError(f"{assignment!r}: expected KEY=VALUE, KEY one of {', '.join(courses.SETTINGS)}")
        values[key] = courses.parse_setting(key, text)
    course = courses.change(args.name, **values)
    events.journal_only("course-set", f"course {args.name}: " + ", ".join(args.settings), NBH_COURSE=args.name)
    course_show(argparse.Namespace(name=course.name, notebooks=False))


async def course_autopull(args) -> None:
    async with await connect() as systemd:
        said = await autopull.pull_all(systemd)
    for _ok, line in said:
        print(line)
    failed = [line for ok, line in said if not ok]
    if failed:
        raise CommandError(f"{len(failed)} of {len(said)} failed")


def course_list(args) -> None:
    rows = []
    for course in courses.all_courses():
        status = courses.status(course)
        rows.append((course.name, course.image or "default", course.branch or "default",
                     len(courses.notebooks(course)), status.commit or "-",
                     "archived" if course.archived else "autopull" if course.autopull else ""))
    _table(("NAME", "IMAGE", "BRANCH", "NOTEBOOKS", "COMMIT", ""), rows)


def course_show(args) -> None:
    course = courses.load(args.name)
    status = courses.status(course)
    found = courses.notebooks(course)
    updated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(status.updated)) if status.updated else "never"
    print(f"name:        {course.name}")
    print(f"git-url:     {course.git_url}")
    texts = courses.setting_texts(course)
    for key in courses.SETTINGS:  # as `nbh course set` takes them; "" is the default
        text = texts[key] or ("no" if isinstance(getattr(course, key), bool) else
                              "-" if key in ("staff", "hide") else "default")
        if key == "image" and course.image == courses.OWN_IMAGE:
            text += f" ({status.image or 'not built yet'})"
        print(f"{key + ':':<12} {text}")
    print(f"path:        {course.path}")
    print(f"commit:      {status.commit or 'never cloned'}")
    print(f"updated:     {updated}")
    print(f"notebooks:   {len(found)}")
    if getattr(args, "notebooks", True):
        for notebook in found:
            print(f"  {notebook}")


def course_parser(commands) -> None:
    group = commands.add_parser("course", help="courses: git repositories of notebooks")
    course_commands = group.add_subparsers(dest="course_command", required=True, metavar="COMMAND")
    here = {"action": "store_true", "help": "do it in this process, as the course's unit does, instead of "
            "starting the unit (for the unit itself, and tests)"}
    sub = course_commands.add_parser("create", help="register a course and clone it (nbh-course-update@)")
    sub.add_argument("name")
    sub.add_argument("git_url", metavar="git-url")
    sub.add_argument("--branch", help="follow this branch (default: the remote's default branch)")
    sub.add_argument("--image", help="the course's Jupyter image (default: the default image; "
                     f"{courses.OWN_IMAGE!r}: its own build)")
    sub.add_argument("--idle-timeout", type=int, metavar="SECONDS",
                     help="stop a student's idle server after this long (default: cull.idle_timeout)")
    sub.add_argument("--here", **here)
    sub.set_defaults(run=course_create)
    sub = course_commands.add_parser("update", help="fetch and reset to the remote branch (nbh-course-update@)")
    sub.add_argument("name")
    sub.add_argument("--here", **here)
    sub.set_defaults(run=course_update)
    sub = course_commands.add_parser("build", help="build the course's own image (nbh-course-build@)")
    sub.add_argument("name")
    sub.add_argument("--step", choices=("disk", "prepare", "build", "install"),
                     help="one step of nbh-course-build@.service, in this process")
    sub.set_defaults(run=course_build)
    sub = course_commands.add_parser("delete", help="delete a course, its students' work kept in an archive "
                                     "(nbh-course-delete@)")
    sub.add_argument("name")
    sub.add_argument("--force", action="store_true", help="stop its running servers first (else: refused)")
    sub.add_argument("--remove-work", action="store_true",
                     help="then remove the archive of its students' work too (root): nothing is kept")
    sub.add_argument("--here", **here)
    sub.set_defaults(run=course_delete)
    sub = course_commands.add_parser("rename", help="give a course a new name, its students' work with it "
                                     "(nbh-course-rename@OLD:NEW)")
    sub.add_argument("name", help="the course (the unit gives OLD:NEW here, with --here)")
    sub.add_argument("new_name", metavar="new-name", nargs="?")
    sub.add_argument("--force", action="store_true", help="stop its running servers first (else: refused)")
    sub.add_argument("--here", **here)
    sub.set_defaults(run=course_rename)
    sub = course_commands.add_parser("set", help="change settings: " + ", ".join(courses.SETTINGS))
    sub.add_argument("name")
    sub.add_argument("settings", nargs="+", metavar="KEY=VALUE")
    sub.set_defaults(run=course_set)
    course_commands.add_parser("autopull", help="update the courses with autopull on (nbh-autopull.timer)"
                               ).set_defaults(run=course_autopull)
    course_commands.add_parser("list", help="courses, their image, branch and notebooks").set_defaults(run=course_list)
    sub = course_commands.add_parser("show", help="a course's settings and notebooks")
    sub.add_argument("name")
    sub.set_defaults(run=course_show)


def lti_add(args) -> None:
    _require_root("lti add", WEB_USER)
    platform = lti.Platform(args.name, args.issuer, tuple(args.client_id), tuple(args.deployment_id),
                            args.auth_url, args.jwks_url, tuple(args.courses or ()))
    lti.add(platform)
    courses = "every course" if "*" in platform.courses else ", ".join(platform.courses) or "no course yet (--courses)"
    print(f"{platform.name}: registered; its students are lti.{platform.name}.*; it may launch into "
          f"{courses}; nbh-web reads it at the next launch")


def lti_list(args) -> None:
    rows = [(p.name, p.issuer, " ".join(p.client_ids), " ".join(p.deployment_ids), " ".join(p.courses) or "-",
             "removed" if p.removed else "") for p in lti.all_platforms(removed=True)]
    _table(("NAME", "ISSUER", "CLIENT IDS", "DEPLOYMENT IDS", "COURSES", ""), rows)


def lti_remove(args) -> None:
    _require_root("lti remove", WEB_USER)
    lti.remove(args.name)
    print(f"{args.name}: removed; launches from it are refused (its name stays its issuer's)")


def lti_fetch_keys(args) -> int:
    """Every platform's JWKS into nbh-web's cache (nbh-lti-keys.service, as nbh)."""
    failed = 0
    for platform in lti.all_platforms():
        try:
            print(f"{platform.name}: {lti.fetch_keys(platform)} keys from {platform.jwks_url}")
        except (lti.RegistrationError, httpx.HTTPError, OSError) as error:
            print(f"nbh: {platform.name}: {error}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def lti_parser(commands) -> None:
    group = commands.add_parser("lti", help="LTI 1.3 platforms (LMSs) that may launch students")
    lti_commands = group.add_subparsers(dest="lti_command", required=True, metavar="COMMAND")
    sub = lti_commands.add_parser("add", help="register a platform, or change it: the same name and issuer (root)")
    sub.add_argument("name", help="1 to 10 lower-case letters or digits: its students are lti.NAME.*")
    sub.add_argument("--issuer", required=True, help="the platform's iss, e.g. https://lms.example.org")
    sub.add_argument("--client-id", required=True, action="append", help="the client id it gave the tool (repeat)")
    sub.add_argument("--deployment-id", required=True, action="append", help="a deployment id (repeat)")
    sub.add_argument("--auth-url", required=True, help="its OIDC authorization endpoint")
    sub.add_argument("--jwks-url", required=True, help="its public keyset URL")
    sub.add_argument("--courses", nargs="+", metavar="COURSE",
                     help="the courses it may launch into, or '*' for all (default: none)")
    sub.set_defaults(run=lti_add)
    lti_commands.add_parser("list", help="the platforms, removed ones too").set_defaults(run=lti_list)
    sub = lti_commands.add_parser("remove", help="refuse its launches from now on (root)")
    sub.add_argument("name")
    sub.set_defaults(run=lti_remove)
    lti_commands.add_parser("fetch-keys", help="fetch the platforms' keys (nbh-lti-keys.service)"
                            ).set_defaults(run=lti_fetch_keys)


async def sample(args) -> None:
    settings = config.load()
    async with await connect() as systemd:
        samples, closed = await sampler.sample(systemd, settings)
    rows = [(name or "(host)", fields["NBH_SERVERS"], fields["NBH_KERNELS"], fields["NBH_BUSY_KERNELS"],
             _memory(fields["NBH_MEMORY_BYTES"])) for name, fields in samples.items()]
    _table(("COURSE", "SERVERS", "KERNELS", "BUSY", "MEMORY"), rows)
    for close in closed:
        print(f"closed {close.instance.path} {close.notebook} after {close.duration:.0f} s ({close.reason})")


EVENT_COLUMNS = ("time", "event", "course", "student", "notebook")


def events_command(args) -> None:
    try:
        query = store.Query(args.course, args.student, args.notebook, args.event,
                            store.parse_time(args.since) if args.since else None,
                            store.parse_time(args.until) if args.until else None, args.limit)
    except ValueError as error:
        raise CommandError(str(error)) from None
    db = store.open_reader(Path(args.store))
    try:
        {"json": _json_events, "csv": _csv_events, "table": _table_events}[args.format](store.rows(db, query))
    except sqlite3.Error as error:
        raise CommandError(f"cannot read the event store: {error}") from None
    finally:
        db.close()


def _table_events(rows) -> None:
    write = sys.stdout.write
    for when, event, course, student, notebook, fields in rows:
        write(f"{when} {event:<7} {course or '-'} {student or '-'} {notebook or '-'}"
              f"{' ' + fields if fields != '{}' else ''}\n")


def _json_events(rows) -> None:
    """One array, written as it is read: a month of events need not fit in
    memory. Each event is one object, its fields beside the columns."""
    write, dumps = sys.stdout.write, json.dumps
    write("[")
    for number, (*columns, fields) in enumerate(rows):
        head = dumps(dict(zip(EVENT_COLUMNS, columns)))
        write(("," if number else "") + "\n" + head[:-1] + ("," + fields[1:] if fields != "{}" else "}"))
    write("\n]\n")


def _csv_events(rows) -> None:
    """One row an event; the fields other than the columns as one JSON column."""
    writer = csv.writer(sys.stdout)
    writer.writerow([*EVENT_COLUMNS, "fields"])
    writer.writerows(rows)


def stats_command(args) -> None:
    """One plot's data, as the stats page's CSV link gives it."""
    try:
        since = store.parse_time(args.since) if args.since else None
        until = store.parse_time(args.until) if args.until else None
    except ValueError as error:
        raise CommandError(str(error)) from None
    db = store.open_reader(Path(args.store))
    try:
        table = stats.table(db, args.course, args.plot, since, until, staff=args.staff)
    except sqlite3.Error as error:
        raise CommandError(f"cannot read the event store: {error}") from None
    finally:
        db.close()
    if args.format == "csv":
        sys.stdout.write(table.csv())
    else:
        _table(table.columns, table.rows)


def stats_parser(commands) -> None:
    sub = commands.add_parser("stats", help="a course's statistics: one plot's data (the stats page's CSV)")
    sub.add_argument("course")
    sub.add_argument("plot", choices=list(stats.PLOTS))
    sub.add_argument("--since", metavar="T", help="7d, 12h, 30m, today, 2026-11-01[T10:00] (default: all)")
    sub.add_argument("--until", metavar="T", help="as --since")
    sub.add_argument("--format", choices=("table", "csv"), default="table")
    sub.add_argument("--staff", action="store_true",
                     help="count the staff's own workspaces (staff.<account>) as students")
    sub.add_argument("--store", default=str(store.DEFAULT_PATH), metavar="PATH",
                     help=f"the database to read (default {store.DEFAULT_PATH})")
    sub.set_defaults(run=stats_command)


def events_parser(commands) -> None:
    sub = commands.add_parser("events", help="events kept in the store (nbh-events.service)")
    sub.add_argument("--course")
    sub.add_argument("--student")
    sub.add_argument("--notebook")
    sub.add_argument("--event", choices=sorted(events.EVENTS))
    sub.add_argument("--since", metavar="T", help="7d, 12h, 30m, today, 2026-11-01[T10:00]")
    sub.add_argument("--until", metavar="T", help="as --since")
    sub.add_argument("--limit", type=int, metavar="N", help="the first N only")
    sub.add_argument("--format", choices=("table", "json", "csv"), default="table")
    sub.add_argument("--store", default=str(store.DEFAULT_PATH), metavar="PATH",
                     help=f"the database to read (default {store.DEFAULT_PATH}), a copy for example")
    sub.set_defaults(run=events_command)
    commands.add_parser("sample", help="sample the courses and the host (nbh-sample.timer runs it)"
                        ).set_defaults(run=sample)
def _password(args) -> str:
    """From stdin's first line (--password-stdin), or typed twice on the terminal."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    import getpass  # noqa: PLC0415 -- only here
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise CommandError("the two passwords differ")
    return first


def _staff_event(args, message: str) -> None:
    by = pwd.getpwuid(os.geteuid()).pw_name
    events.staff("staff-account", args.name, f"{message} (nbh staff {args.staff_command}, by {by})",
                 NBH_ACTION=args.staff_command, NBH_BY=by)


def staff_add(args) -> None:
    group = _require_root("staff add", WEB_USER)
    account = staff.add(args.name, _password(args), args.admin, group)
    _staff_event(args, f"staff account {account.name} added ({account.role})")
    print(f"{account.name}: added ({account.role})")


def staff_remove(args) -> None:
    lost = staff.remove(args.name, _require_root("staff remove", WEB_USER))
    _staff_event(args, f"staff account {args.name} removed" + (f", from {', '.join(lost)}" if lost else ""))
    print(f"{args.name}: removed" + (f", no longer staff of {', '.join(lost)}" if lost else ""))


def staff_passwd(args) -> None:
    staff.set_password(args.name, _password(args), _require_root("staff passwd", WEB_USER))
    _staff_event(args, f"staff account {args.name}: new password, sessions ended")
    print(f"{args.name}: new password; their sessions have ended")


def staff_grant(args) -> None:
    """Admin, or staff of courses: each course's staff setting, changed as the settings form does."""
    group = _require_root(f"staff {args.staff_command}", WEB_USER)
    if not staff.load().get(staff.check_name(args.name)):
        raise CommandError(f"no account {args.name!r} (nbh staff add)")
    if not args.admin and not args.courses:
        raise CommandError("name courses, or --admin")
    granting = args.staff_command == "grant"
    if args.admin:
        staff.set_admin(args.name, granting, group)
    for course in args.courses:
        (staff.grant if granting else staff.revoke)(args.name, course)
    what = ", ".join((["admin"] if args.admin else []) + args.courses)
    _staff_event(args, f"staff account {args.name}: {'granted' if granting else 'revoked'} {what}")
    print(f"{args.name}: {'granted' if granting else 'revoked'} {what}")


def staff_list(args) -> None:
    all_courses = courses.all_courses()
    rows = [(a.name, a.role, "all" if a.admin else ", ".join(staff.granted(a.name, all_courses)) or "-")
            for a in sorted(staff.load().values(), key=lambda a: a.name)]
    _table(("NAME", "ROLE", "COURSES"), rows)


def staff_parser(commands) -> None:
    group = commands.add_parser("staff", help="staff accounts of the staff pages (/staff/), and their courses")
    staff_commands = group.add_subparsers(dest="staff_command", required=True, metavar="COMMAND")
    for name, run, help in (("add", staff_add, "add an account (root)"),
                            ("passwd", staff_passwd, "a new password; the account's sessions end (root)")):
        sub = staff_commands.add_parser(name, help=help)
        sub.add_argument("name")
        sub.add_argument("--password-stdin", action="store_true", help="read the password from stdin's first line")
        if name == "add":
            sub.add_argument("--admin", action="store_true", help="every course, and creating courses")
        sub.set_defaults(run=run)
    sub = staff_commands.add_parser("remove", help="remove an account and its grants (root)")
    sub.add_argument("name")
    sub.set_defaults(run=staff_remove)
    for name, help in (("grant", "make an account staff of courses, or admin (root)"),
                       ("revoke", "the opposite of grant (root)")):
        sub = staff_commands.add_parser(name, help=help)
        sub.add_argument("name")
        sub.add_argument("courses", nargs="*", metavar="COURSE")
        sub.add_argument("--admin", action="store_true", help="the admin role")
        sub.set_defaults(run=staff_grant)
    staff_commands.add_parser("list", help="accounts, roles and courses").set_defaults(run=staff_list)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="nbh", description="nbhosting: Jupyter for MOOC students")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def pair(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help)
        sub.add_argument("course")
        sub.add_argument("student")
        return sub

    pair("start", "start a student's server and wait until it answers").set_defaults(run=start)
    pair("stop", "stop a student's server (its socket keeps listening)").set_defaults(run=stop)
    sub = commands.add_parser("status", help="state, since when and memory of the servers")
    sub.add_argument("course", nargs="?")
    sub.add_argument("student", nargs="?")
    sub.set_defaults(run=status)
    sub = pair("logs", "a student's server journal")
    sub.add_argument("-f", "--follow", action="store_true")
    sub.add_argument("-n", "--lines", type=int)
    sub.set_defaults(run=logs)
    sub = commands.add_parser("cull", help="stop the idle servers (nbh-cull.timer runs it)")
    sub.add_argument("--dry-run", action="store_true", help="say what would be stopped, and why")
    sub.set_defaults(run=cull_command)
    sub = commands.add_parser("gc", help="remove containers, sockets and folders of no running unit; "
                              "unload the students not seen for cull.dormant_after")
    sub.add_argument("--dry-run", action="store_true")
    sub.set_defaults(run=gc_command)
    sub = commands.add_parser("sign", help="a signed entry URL for the LMS")
    sub.add_argument("--ttl", type=int, help="seconds it stays valid (web.signature_ttl)")
    sub.add_argument("course")
    sub.add_argument("notebook", help="as in the URL, with or without .ipynb")
    sub.add_argument("student")
    sub.set_defaults(run=sign)
    pair("revoke", "a new token for a student's server; the old one fails (root)").set_defaults(run=revoke)
    commands.add_parser("setup", help="host secret, LMS key and unit limits (root)").set_defaults(run=setup)
    sub = commands.add_parser("jupyter-static", help="extract an image's Notebook files for nginx to serve "
                              "(root; after the site's image changes)")
    sub.add_argument("image", nargs="?", help="default: the site's image")
    sub.set_defaults(run=extract_static)
    commands.add_parser("mount-shared", help="mount the courses' shared pages disks "
                        "(nbh-shared-disks.service, root)").set_defaults(run=mount_shared)
    commands.add_parser("rotate-secret", help="a new host secret: every server token changes, "
                        "running servers stop (root)").set_defaults(run=rotate_secret)
    course_parser(commands)
    lti_parser(commands)
    events_parser(commands)
    stats_parser(commands)
    staff_parser(commands)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        result = args.run(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return result or 0
    except (BadName, CommandError, SystemdError, config.ConfigError, courses.UnknownCourse, tokens.TokenError,
            store.StoreError,
            courses.UnknownNotebook, courses.CourseError, lti.RegistrationError, OSError,
            courses.UnknownNotebook, courses.CourseError, lti.RegistrationError, staff.StaffError, OSError,
            subprocess.CalledProcessError) as error:
        print(f"nbh: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
