"""A course's end, ``nbh course delete`` (nbh-course-delete@<course>.service),
and its new name, ``nbh course rename``.

The unit runs as root: a course's things belong to several accounts (the
checkout to nbh-courses, workspaces to nbh-jupyter, disks to root). It
refuses while a server of the course runs; the caller stops them first when
asked to (``--force``, the staff page's "stop its servers"). Then, in this
order, so that nothing of the course starts again meanwhile:

1. its settings leave /etc/nbhosting/courses: the front end and autopull no
   longer know it, and an entry URL of it is a 404;
2. every unit of its students stops (listening sockets included: an open tab
   starts nothing);
3. its disks are unmounted, and what students made is moved, not copied,
   into archives/<course>-<when>/ (root's alone): the workspaces, their
   disks' images, the shared pages, the token generations, the names LTI
   launches gave, the settings;
4. what can be made again is removed: the checkout, the build's storage and
   record.

Nothing of a student's is removed here: ``nbh course delete --remove-work``
(root, the command itself) removes the archive afterwards, explicitly.

``nbh course rename OLD NEW``, run by nbh-course-rename@OLD:NEW.service
(':' is no course name's, and a unit name's), goes the same way: refused
while a server runs, the course unknown under either name meanwhile (its
settings set aside), its students' units stopped, its disks unmounted;
then each of its folders takes the new name (renames, on the file system
they are on), each student's shared pages folder its new id (ids derive
from the pair), and the settings come back under the new name. Students
find their work under the new name's entry URLs; the old name's are 404s.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from . import disks, ltinames, paths, tokens
from .names import BadName, Instance, check_course, escape
from .systemd import RUNNING_STATES, Systemd

ARCHIVES_DIR = paths.DATA_DIR / "archives"
BUILD_DIR = Path("/var/lib/nbh-build")
# The templates whose instances are the course's students' units.
STUDENT_TEMPLATES = ("nbh-jupyter@{}-*.service", "nbh-proxy@{}-*.service", "nbh-jupyter@{}-*.socket",
                     "nbh-upstream@{}-*.socket")


RENAME_SEPARATOR = ":"


class StillRunning(Exception):
    """Servers of the course run: stop them first (--force)."""


def student_unit_patterns(course: str) -> list[str]:
    """Every unit of the course's students, and of no other course: a '-' in
    a course's name is escaped (\\x2d), so "a-*" is not "a\\x2db-*"."""
    return [template.format(escape(check_course(course))) for template in STUDENT_TEMPLATES]


async def running_servers(systemd: Systemd, course: str) -> list[str]:
    return [unit for unit, _, _ in await systemd.list_units(student_unit_patterns(course)[:1], RUNNING_STATES)]


async def stop_servers(systemd: Systemd, course: str) -> list[str]:
    """Stop the course's running servers (what --force does before the unit)."""
    running = await running_servers(systemd, course)
    for unit in running:
        await systemd.stop(unit, "replace-irreversibly")
    return running


async def _stop_student_units(systemd: Systemd, course: str) -> int:
    units = [unit for unit, _, _ in await systemd.list_units(student_unit_patterns(course))]
    for unit in units:
        await systemd.stop(unit, "replace-irreversibly")
    return len(units)


def _unmount_under(folder: Path) -> None:
    """Unmount the disks mounted at or below folder (workspaces, shared pages)."""
    prefix = str(folder) + "/"
    with open("/proc/self/mountinfo") as mounts:
        points = [line.split()[4] for line in mounts]
    for point in sorted((p for p in points if p == str(folder) or p.startswith(prefix)), reverse=True):
        done = subprocess.run(["umount", point], capture_output=True, text=True)
        if done.returncode:
            raise OSError(f"umount {point}: {done.stderr.strip()}")


def _move(source: Path, archive: Path, name: str) -> bool:
    if not source.exists() and not source.is_symlink():
        return False
    archive.mkdir(mode=0o700, parents=True, exist_ok=True)
    # a rename where it can (one file system: instant); else copied, links as
    # links, then removed (the settings, in /etc; a workspaces volume of its own)
    shutil.move(source, archive / name)
    return True


async def delete(systemd: Systemd, course: str, now: float | None = None) -> Path:
    """The unit's work: the course gone, its students' work in the archive returned."""
    check_course(course)
    settings = paths.COURSE_SETTINGS_DIR / f"{course}.toml"
    if not settings.exists():
        raise FileNotFoundError(f"no course {course}")
    if running := await running_servers(systemd, course):
        raise StillRunning(f"{len(running)} servers of {course} run (nbh course delete --force stops them)")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    archive = ARCHIVES_DIR / f"{course}-{stamp}"
    ARCHIVES_DIR.mkdir(mode=0o700, exist_ok=True)
    _move(settings, archive, "settings.toml")
    print(f"{course}: settings moved to {archive}: the course is unknown from now on", flush=True)
    print(f"{course}: {await _stop_student_units(systemd, course)} units of its students stopped", flush=True)
    workspaces, shared = paths.WORKSPACES_DIR / course, paths.SHARED_DIR / course
    for folder in (workspaces, shared, BUILD_DIR / "courses" / course):
        _unmount_under(folder)
    for source, name in ((workspaces, "workspaces"), (disks.DISKS_DIR / course, "disks"), (shared, "shared"),
                         (paths.TOKENS_DIR / course, "tokens"), (ltinames.NAMES_DIR / course, "lti-names")):
        if _move(source, archive, name):
            print(f"{course}: {source} moved to {archive / name}", flush=True)
    for removed in (paths.COURSES_DIR / course, BUILD_DIR / "courses" / course):
        if removed.is_dir() and not removed.is_symlink():
            shutil.rmtree(removed)
            print(f"{course}: {removed} removed", flush=True)
    for removed in (paths.COURSES_DIR / f".{course}.update", paths.BUILDS_DIR / f"{course}.json",
                    BUILD_DIR / "disks" / f"{course}.ext4"):
        with contextlib.suppress(FileNotFoundError):
            removed.unlink()
    return archive


def archives_of(course: str) -> list[Path]:
    """The course's archives, oldest first."""
    check_course(course)
    return sorted(ARCHIVES_DIR.glob(f"{course}-[0-9]*-[0-9]*"))


def rename_instance(old: str, new: str) -> str:
    """nbh-course-rename@'s instance: both names checked, and different."""
    if check_course(old) == check_course(new):
        raise BadName(f"{old} is its name already")
    return f"{old}{RENAME_SEPARATOR}{new}"


def parse_rename_instance(instance: str) -> tuple[str, str]:
    old, separator, new = instance.partition(RENAME_SEPARATOR)
    if not separator:
        raise BadName(f"not OLD{RENAME_SEPARATOR}NEW: {instance!r}")
    rename_instance(old, new)
    return old, new


def _course_folders(course: str) -> list[Path]:
    """Every file and folder named after the course, its settings' aside."""
    return [paths.WORKSPACES_DIR / course, disks.DISKS_DIR / course, paths.SHARED_DIR / course,
            paths.TOKENS_DIR / course, paths.DATA_DIR / "seen" / course, ltinames.NAMES_DIR / course,
            paths.COURSES_DIR / course,
            paths.COURSES_DIR / f".{course}.update", paths.BUILDS_DIR / f"{course}.json",
            BUILD_DIR / "courses" / course, BUILD_DIR / "disks" / f"{course}.ext4"]


async def rename(systemd: Systemd, old: str, new: str, secret: bytes) -> int:
    """The unit's work: the course and its students' work under the new
    name; how many students' shared pages folders took their new id."""
    rename_instance(old, new)
    settings, aside = (paths.COURSE_SETTINGS_DIR / f"{old}.toml",
                       paths.COURSE_SETTINGS_DIR / f".{old}.renaming-to-{new}")
    target = paths.COURSE_SETTINGS_DIR / f"{new}.toml"
    if not settings.exists():
        raise FileNotFoundError(f"no course {old}")
    taken = [str(p) for p in [target, *_course_folders(new)] if p.exists() or p.is_symlink()]
    if taken:
        raise FileExistsError(f"{new} is taken: {', '.join(taken)}")
    for action in ("update", "build"):
        if await systemd.active_state(f"nbh-course-{action}@{old}.service") in RUNNING_STATES:
            raise StillRunning(f"an {action} of {old} is under way")
    students = sorted(entry.name for entry in os.scandir(paths.WORKSPACES_DIR / old)) \
        if (paths.WORKSPACES_DIR / old).is_dir() else []
    for student in students:
        try:
            Instance(old, student)
        except BadName:
            continue  # not a student's folder
        try:
            Instance(new, student)
        except BadName as error:  # their units' names would be too long under the new name
            raise BadName(f"{student}: {error}") from None
    if running := await running_servers(systemd, old):
        raise StillRunning(f"{len(running)} servers of {old} run (nbh course rename --force stops them)")
    os.rename(settings, aside)
    print(f"{old}: unknown under either name while it is renamed ({aside})", flush=True)
    print(f"{old}: {await _stop_student_units(systemd, old)} units of its students stopped", flush=True)
    for folder in (paths.WORKSPACES_DIR / old, paths.SHARED_DIR / old, BUILD_DIR / "courses" / old):
        _unmount_under(folder)
    for source, destination in zip(_course_folders(old), _course_folders(new), strict=True):
        if source.exists() or source.is_symlink():
            os.rename(source, destination)
            print(f"{old}: {source} is {destination}", flush=True)
    if disks.shared_image(new).is_file():
        disks.mount_shared(new, lambda: 0)
    moved = _new_share_ids(old, new, students, secret)
    os.rename(aside, target)
    print(f"{old}: is {new} ({moved} students' shared pages under their new ids)", flush=True)
    return moved


def _new_share_ids(old: str, new: str, students: list[str], secret: bytes) -> int:
    """A pair's shared pages folder is named by an id derived from the pair:
    each takes the one of its new pair (old addresses are gone)."""
    moved = 0
    for student in students:
        try:
            before, after = Instance(old, student), Instance(new, student)
        except BadName:
            continue  # not a student's folder, or too long a name under the new course's
        folder = paths.SHARED_DIR / new / tokens.share_id(secret, before)
        if folder.is_dir() and not folder.is_symlink():
            os.rename(folder, paths.SHARED_DIR / new / tokens.share_id(secret, after))
            moved += 1
    return moved
