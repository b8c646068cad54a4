"""ExecStart and ExecStopPost of nbh-jupyter@.service.

``nbh-jupyter-run --derive COURSE/STUDENT`` (ExecStartPre=+, root) reads
the host secret and writes what is derived from it for this pair alone (the
server's token, the notary's key, the shared pages' id) into the server's
runtime folder. The containers' account never holds the secret: a container
that escapes to it finds the tokens of the servers that run, not the means
to make any other (or a staff session).

``nbh-jupyter-run COURSE/STUDENT`` checks the pair, then execs podman. It
runs as the containers' account at every server start, so it imports little
and does only what a unit setting cannot: make the pair's shared pages
folder and build the podman command line for the pair.

``--derive`` also mounts the workspace's own disk, if it has one or if the
new workspace is to have one (disks.py); the unit unmounts it after the
container is gone.

``nbh-jupyter-run --stopped COURSE/STUDENT`` removes the pair's container by
its name, which comes from the unit's own instance and nothing the container
could write, and logs the stop; ``--leftover`` removes those of every
server that is not running (after a failure, nbh-jupyter-leftover.service).
--stopped runs at every stop, the cull's included, so the modules only a
start needs are imported by the start, and --derive (a process of its own
on every start's path) imports only the names and the tokens.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .names import BadName, Instance

if TYPE_CHECKING:
    from .courses import Course

PODMAN = "/usr/bin/podman"
DEFAULT_IMAGE = "localhost/nbhosting/jupyter:test"
# Jupyter, its kernels and what a student starts from a notebook; the unit's
# TasksMax= bounds the whole unit as well.
PIDS_LIMIT = 256
# journald's socket: the image's nbh_menus sends its events (reset, share)
# there; journald names the sender's unit, which the store believes.
JOURNAL_SOCKET = "/run/systemd/journal/socket"


def podman_argv(instance: Instance, course: Course, runtime_dir: str, image: str,
                lms_origins: str, shared_dir: Path, share_id: str, started_at: str,
                share_origin: str = "", static_env: dict[str, str] | None = None) -> list[str]:
    """share_origin: where the shared pages are, when not on the server's
    own origin (per-student origins: the site's). static_env: where the
    site serves the image's static files (jupyter_static.for_start)."""
    from .workspace import workspace_dir  # noqa: PLC0415 (the start's)

    return [
        PODMAN, "run",
        # conmon stays as the unit's main process, the podman client exits;
        # READY=1 comes from Jupyter itself (the image's nbh_ready extension).
        # The unit's listening socket (LISTEN_FDS) is passed on to Jupyter.
        "--detach", "--sdnotify=container",
        "--rm", "--replace", "--name", instance.container,
        # the image is the site's or a course's build, in local storage: a
        # name that is not there fails the start, it is never fetched
        "--pull=never",
        "--network=none",
        "--security-opt", "label=disable",
        # A student's code needs no privilege: no capability, no setuid, a
        # read-only image (tmpfs on /tmp, /run, /var/tmp and the home folder).
        "--cap-drop=ALL",
        "--security-opt", "no-new-privileges",
        "--read-only",
        "--tmpfs", "/home/jovyan:rw,nosuid,nodev,size=256m,mode=0700",
        "--pids-limit", str(PIDS_LIMIT),
        "--label", f"nbh.instance={instance.path}",
        "--env", f"NBH_BASE_URL={instance.base_url}",
        # the LMS may frame the notebook (Content-Security-Policy)
        "--env", f"NBH_FRAME_ANCESTORS={lms_origins}",
        # the File menu's "Show my student id", "Share" and the course's hidden items
        "--env", f"NBH_COURSE={instance.course}",
        "--env", f"NBH_STUDENT={instance.student}",
        "--env", f"NBH_SHARE_URL={share_origin}/shared/{instance.course}/{share_id}/",
        "--env", f"NBH_HIDE={','.join(course.hide)}",
        # for the "ready" event's seconds, which the image's nbh_ready logs
        "--env", f"NBH_STARTED_AT={started_at}",
        # Notebook's scripts from the site's copy of the image's (nbh_static)
        *[arg for name, value in (static_env or {}).items() for arg in ("--env", f"{name}={value}")],
        "--volume", f"{runtime_dir}:/run/nbh:ro",
        # an archived course's students read their work and run it, and save nothing
        "--volume", f"{workspace_dir(instance)}:/home/jovyan/work" + (":ro" if course.archived else ""),
        "--volume", f"{course.path}:/home/jovyan/course:ro",
        "--volume", f"{shared_dir}:/home/jovyan/shared",
        "--volume", f"{JOURNAL_SOCKET}:{JOURNAL_SOCKET}",
        image,
    ]


# What --derive writes into the runtime folder (mounted read-only at /run/nbh
# in the container): each derived from the host secret for the pair alone.
DERIVED = ("token", "notary-secret", "share-id")


def derive(instance: Instance, runtime_dir: str) -> None:
    """As root: the pair's derived values, each a file of mode 0400 owned by the
    folder's owner (the unit's User=). That account can write in the folder,
    so nothing in it is followed: no link, no file that was there before."""
    from . import nofollow, tokens  # noqa: PLC0415 (the start's)

    secret = tokens.read_secret()
    values = {"token": tokens.instance_token(secret, instance),
              "notary-secret": tokens.notary_secret(secret, instance),
              "share-id": tokens.share_id(secret, instance)}
    nofollow.write_owned(runtime_dir, {name: values[name] for name in DERIVED})


@functools.cache
def _limits():
    """The configuration's [limits], read once by a start that needs them."""
    from . import config  # noqa: PLC0415 (a new disk's only)

    try:
        return config.load().limits
    except config.ConfigError as error:
        raise ValueError(f"the size of a new disk: {error}") from None


def disk_max(instance: Instance) -> int:
    """The bytes of a new workspace's own disk: the course's, else the site's (0: none)."""
    from . import courses  # noqa: PLC0415 (a new workspace's only)

    try:
        course = courses.load(instance.course)
    except (courses.UnknownCourse, courses.CourseError) as error:
        raise ValueError(f"the size of the new workspace's disk: {error}") from None
    return course.disk_max if course.disk_max is not None else _limits().disk_max_bytes


def shared_disk_max() -> int:
    return _limits().shared_disk_max_bytes


def mount_disk(instance: Instance) -> None:
    """As root, after derive(): the workspace's own disk, and the course's
    shared pages disk, mounted (disks.py)."""
    from . import disks  # noqa: PLC0415 (the start's)
    from .workspace import workspace_dir  # noqa: PLC0415

    for what, done in (
            ("the new workspace", disks.mount(instance, workspace_dir(instance), lambda: disk_max(instance))),
            ("the course's shared pages", disks.mount_shared(instance.course, shared_disk_max))):
        if done.startswith("a folder:"):  # it should have had a disk: the operator's to know
            print(f"nbh-jupyter-run: {instance.path}: warning: {what}: {done}", file=sys.stderr)
        elif done.startswith("a new disk"):
            print(f"nbh-jupyter-run: {instance.path}: {what}: {done}", file=sys.stderr)


def prepare(instance: Instance, runtime_dir: str) -> tuple[Path, str]:
    """Make the pair's shared pages folder, named by the id --derive wrote,
    in the course's (which --derive made, disks.mount_shared). That folder,
    and its id."""
    from . import paths, tokens  # noqa: PLC0415 (the start's)

    share_id = (Path(runtime_dir) / "share-id").read_text()
    if not tokens.SHARE_ID_RE.fullmatch(share_id):
        raise ValueError(f"{runtime_dir}/share-id: not a shared pages id (was --derive run?)")
    shared = paths.SHARED_DIR / instance.course / share_id
    try:
        shared.mkdir(mode=0o750)
    except FileExistsError:
        pass
    else:
        shared.chmod(0o750)  # whatever the umask
    return shared, share_id


def started_at() -> str:
    """CLOCK_BOOTTIME seconds at which systemd forked this ExecStart=, as the
    unit left "inactive": the kernel's record of this process (to 1/CLK_TCK s),
    so that no other process is spawned at each start to ask systemd."""
    with open("/proc/self/stat") as stat:
        ticks = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
    return f"{ticks / os.sysconf('SC_CLK_TCK'):.2f}"


def stopped(instance: Instance) -> int:
    """ExecStopPost=: the event, then no container left behind, whatever
    happened. The event first: journald ties an entry to its unit by its
    sender's cgroup, which a process that has exited no longer has, and the
    store believes a student unit's entries only when tied (follower.py)."""
    from . import events  # noqa: PLC0415
    events.after_stop(instance, os.environ)
    return remove_container(instance)


def remove_container(instance: Instance) -> int:
    """No container of the pair left: the stop's last step, and what
    nbh-jupyter-leftover.service does for the unit whose failure starts it."""
    import subprocess  # noqa: PLC0415 (the stop's only)

    from . import podman  # noqa: PLC0415
    try:
        removed = podman.remove(instance.container, lambda args: subprocess.run(
            [PODMAN, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60))
    except (OSError, subprocess.TimeoutExpired) as error:
        print(f"nbh-jupyter-run: cannot remove {instance.container}: {error}", file=sys.stderr)
    else:
        if removed.returncode != 0:
            print(f"nbh-jupyter-run: podman rm {instance.container}: {removed.stderr.strip()[-300:]}",
                  file=sys.stderr)
    return 0


def leftover() -> int:
    """nbh-jupyter-leftover.service: the containers of every server that is
    not running, not only the failed one's. systemd names that one
    ($MONITOR_UNIT) only when no other failed unit triggered this one, and
    a failure while this runs merges its start into this run."""
    import subprocess  # noqa: PLC0415 (a failure's only)

    listing = subprocess.run([PODMAN, "ps", "--all", "--format", "{{.Names}}"], stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=60)
    instances = []
    for name in listing.stdout.split():
        try:
            instances.append(Instance.from_container(name))
        except BadName:
            continue  # not ours
    if instances:
        states = subprocess.run(["systemctl", "show", "--property=ActiveState", "--value",
                                 *(i.service for i in instances)], stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=60).stdout.split()
        for instance, state in zip(instances, states, strict=False):
            if state in ("inactive", "failed"):
                remove_container(instance)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--leftover"]:
        return leftover()
    step = argv[0] if argv[:1] in (["--stopped"], ["--derive"]) else None
    try:
        (pair,) = argv[1:] if step else argv
        instance = Instance.from_path(pair)
    except (ValueError, BadName) as error:
        print(f"nbh-jupyter-run: {error}", file=sys.stderr)
        return 2
    if step == "--stopped":
        return stopped(instance)
    runtime_dir = os.environ.get("RUNTIME_DIRECTORY", "")
    if not runtime_dir:
        print("nbh-jupyter-run: no RUNTIME_DIRECTORY (run it from nbh-jupyter@.service)", file=sys.stderr)
        return 2
    if step == "--derive":
        try:
            derive(instance, runtime_dir)
            mount_disk(instance)
        except (OSError, ValueError) as error:
            print(f"nbh-jupyter-run: {error}", file=sys.stderr)
            return 1
        return 0
    from . import config, courses, events, jupyter_static  # noqa: PLC0415 (the start's)

    if os.environ.get("LISTEN_FDS") != "1":
        print("nbh-jupyter-run: no listening socket (nbh-upstream@.socket) was passed", file=sys.stderr)
        return 2
    try:
        course = courses.load(instance.course)
        settings = config.load()
        # A course's own build: the one recorded when this start begins.
        image = courses.image_of(course, os.environ.get("NBH_IMAGE") or DEFAULT_IMAGE)
        shared_dir, share_id = prepare(instance, runtime_dir)
    except (courses.UnknownCourse, courses.CourseError, config.ConfigError, OSError, ValueError) as error:
        print(f"nbh-jupyter-run: {error}", file=sys.stderr)
        return 1
    events.send("start", instance, f"starting {instance.path} with {image}", NBH_IMAGE=image)
    web = settings.web
    argv = podman_argv(instance, course, runtime_dir, image, " ".join(web.lms_origins), shared_dir, share_id,
                       started_at(), share_origin=web.public_url if web.student_origin else "",
                       static_env=jupyter_static.for_start(image))
    os.execv(argv[0], argv)


if __name__ == "__main__":
    sys.exit(main())
