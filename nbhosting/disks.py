"""A workspace's own disk: the kernel's bound on what one student can fill.

The host has no quota that works everywhere (ext4's and XFS's project quotas
need a kernel built with CONFIG_QUOTA and a file system mounted for them), so
a bounded workspace is a file system of its own: an ext4 image of
``disk_max`` bytes, ``disks/<course>/<student>.ext4``, sparse (it takes on
the host what the student wrote, mounted with ``discard`` so that deleting
gives it back), mounted over the workspace folder while the student's server
runs. A student who fills it gets ENOSPC; the host, the event store and the
other students do not notice.

The server's root steps mount it (``nbh-jupyter-run --derive``, before the
container starts) and unmount it (``umount``, after the container is
removed: nbh-jupyter@.service). So the disk is mounted exactly while the
server runs: nbh-web copies notebooks in after the start, and refuses to
write into the folder of a bounded workspace that is not mounted
(``check_mounted``), which would put files on the host's disk, under the
mount point, hidden at the next start.

The same images bound a course's shared pages (``limits.shared_disk_max``:
one disk per course, mounted until shutdown, since pages are served while
their authors' servers are stopped) and its builds (course_images.py).

A workspace gets its disk when it is new (its folder is empty) and the
course's ``disk_max`` (or the site's ``limits.disk_max``) is set; a workspace
made before keeps being a folder: nothing of a student's is ever moved.
Where no loop device can be had, the new workspace is a folder too, with a
warning in the unit's journal: the host's ``limits.disk_full`` still guards
the other students' new workspaces.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from . import paths
from .names import Instance

DISKS_DIR = paths.DATA_DIR / "disks"
# No reserved blocks (the student's disk is all theirs), a 4 MiB journal (not
# 32 MiB: ext4's default for 1G), and an image left sparse: mkfs discards
# (punches out) the inode tables and the journal instead of writing zeros.
MKFS = ["mkfs.ext4", "-q", "-m", "0", "-J", "size=4"]
MOUNT_OPTIONS = "loop,nosuid,nodev,discard"


class DiskError(OSError):
    """A bounded workspace that cannot be used now; the message is one line."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


def image_path(instance: Instance) -> Path:
    return DISKS_DIR / instance.course / f"{instance.student}.ext4"


def check_mounted(instance: Instance, opened: int) -> None:
    """For the front end, on a descriptor it opened in a workspace, before it
    writes or reads there: a bounded workspace is there only while its disk
    is mounted. Opened first, checked after: a disk with a file open cannot
    be unmounted, so what is found stays true. The disks' folders are 0710
    root:nbh: the front end finds a student's image by its name, lists none,
    and no other account finds any."""
    if (os.fstat(opened).st_dev == os.stat(paths.WORKSPACES_DIR / instance.course).st_dev
            and os.path.lexists(image_path(instance))):
        raise DiskError(f"{instance.path}: the workspace is on a disk of its own, mounted while the server runs")


def _empty(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return next(entries, None) is None


def _make_image(image: Path, size: int, owner: tuple[int, int]) -> None:
    try:
        image.parent.mkdir(mode=0o710)
    except FileExistsError:
        pass
    else:  # as disks/ is (tmpfiles.d): the front end's group may look an image up
        os.chown(image.parent, 0, image.parent.parent.stat().st_gid)
        os.chmod(image.parent, 0o710)
    make_image(image, size, owner)


def make_image(image: Path, size: int, owner: tuple[int, int]) -> None:
    """As root: a new sparse ext4 image whose root folder is `owner`'s."""
    fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    try:
        subprocess.run([*MKFS, "-E", f"lazy_journal_init=1,root_owner={owner[0]}:{owner[1]}", str(image)],
                       check=True, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        image.unlink()
        raise DiskError(f"{image}: mkfs.ext4 failed: {getattr(error, 'stderr', '') or error}".strip()) from None


def mount(instance: Instance, workspace: Path, size_of_new: Callable[[], int]) -> str:
    """As root, before the server starts: mount the workspace's disk, making
    it if the workspace is new and size_of_new() (bytes; asked of a new
    workspace only) is not 0. What was done, for the journal; DiskError if
    the workspace cannot be used safely."""
    return _mount(image_path(instance), workspace, size_of_new)


def shared_image(course: str) -> Path:
    """The course's shared pages' disk (no student name starts with '.')."""
    return DISKS_DIR / course / ".shared.ext4"


def mount_shared(course: str, size_of_new: Callable[[], int]) -> str:
    """As root: the course's shared pages folder on its disk (made if the
    folder is new and size_of_new() is not 0), mounted until shutdown: the
    pages are served whether their authors' servers run or not. Each start
    of a course's server (--derive) and of nbh-web (after a reboot) asks."""
    folder = paths.SHARED_DIR / course
    if not folder.exists():
        owner = folder.parent.stat()
        folder.mkdir(mode=0o710)
        os.chown(folder, owner.st_uid, owner.st_gid)
        os.chmod(folder, 0o710)
    return _mount(shared_image(course), folder, size_of_new)


def mount_all_shared() -> list[str]:
    """As root, when nbh-web starts: every course's shared pages disk that
    is not mounted (after a reboot); what was mounted."""
    mounted = []
    with contextlib.suppress(FileNotFoundError), os.scandir(DISKS_DIR) as courses:
        for course in courses:
            if os.path.isfile(shared_image(course.name)) and not os.path.ismount(paths.SHARED_DIR / course.name):
                mount_shared(course.name, lambda: 0)
                mounted.append(course.name)
    return mounted


def _mount(image: Path, folder: Path, size_of_new: Callable[[], int]) -> str:
    if os.path.ismount(folder):
        return "mounted already"  # an unmount that found it busy, or the course's shared pages
    if not image.exists():
        if not _empty(folder) or not (size := size_of_new()):
            return "a folder"
        info = folder.stat()
        _make_image(image, size, (info.st_uid, info.st_gid))
        made = True
    else:
        if not _empty(folder):
            # Files written while it was not mounted: never hide them.
            raise DiskError(f"{folder}: files in the folder of a disk of its own; "
                            f"move them into the disk ({image}) by hand")
        made = False
    mode = folder.stat().st_mode & 0o7777
    try:
        mount_image(image, folder)
    except DiskError as error:
        if made:
            image.unlink()
            return f"a folder: no disk of its own could be mounted ({error.reason})"
        raise
    if made:
        os.chmod(folder, mode)  # the unit's StateDirectoryMode= (set-group-id), the shared folder's 0710
        with contextlib.suppress(OSError):
            (folder / "lost+found").rmdir()  # root's, of no use in a student's listing
        return f"a new disk of {size} bytes"
    return "its disk"


def mount_image(image: Path, folder: Path) -> None:
    """As root: the image over the folder, as every disk here is mounted."""
    try:
        subprocess.run(["mount", "-o", MOUNT_OPTIONS, "--", str(image), str(folder)],
                       check=True, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        reason = (getattr(error, "stderr", "") or str(error)).strip().splitlines()[-1]
        raise DiskError(f"{image}: cannot mount it: {reason}", reason) from None


def used(course: str) -> int:
    """Bytes that the course's workspaces on disks of their own take on the
    host (their images' allocated blocks): the sampler's disk_bytes. As the
    front end's account, which finds each image by its student's name (it
    lists workspaces/<course>, not disks/<course>): a stat per student."""
    total = 0
    if not (DISKS_DIR / course).is_dir():
        return total  # no disk in the course: no stat per student
    with contextlib.suppress(FileNotFoundError), os.scandir(paths.WORKSPACES_DIR / course) as students:
        for student in students:
            with contextlib.suppress(OSError):
                total += (DISKS_DIR / course / f"{student.name}.ext4").stat(follow_symlinks=False).st_blocks * 512
    return total
