"""Open a file of a folder without following any symbolic link on the way.

A course repository is written by someone else, and the front end that
copies its notebooks can read the host's secrets: a link anywhere on the
path (a folder or the file itself) must not lead it out of the course, and
anything but a regular file (a fifo would block the copy, a device) is
refused. Each level is opened relative to the one above with O_NOFOLLOW, and
the file is checked on the descriptor that is then read, so a link swapped
in after a check is refused too.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a fifo does not wait for a writer; fstat then refuses it.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class NotAFile(OSError):
    """A link, or anything but a regular file, on the way to the file."""


def open_file(root: Path, relative: str) -> int:
    """A read-only descriptor of root/relative, a regular file reached through no link.

    FileNotFoundError when it is not there, NotAFile when a link, a fifo, a
    folder or another odd file is on the way.
    """
    parts = relative.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise NotAFile(f"{relative!r} is not a path inside {root}")
    try:
        fd = os.open(root, DIR_FLAGS)
    except OSError as error:
        raise _refused(error, root, ".") from None
    try:
        for depth, part in enumerate(parts[:-1]):
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as error:
                raise _refused(error, root, "/".join(parts[:depth + 1]), fd) from None
            os.close(fd)
            fd = child
        try:
            file = os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
        except OSError as error:
            raise _refused(error, root, relative, fd) from None
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(file).st_mode):
        os.close(file)
        raise NotAFile(f"{relative} in {root} is not a regular file")
    os.set_blocking(file, True)
    return file


def open_dirs(root: Path, parts: tuple[str, ...]) -> int:
    """A descriptor of the folder root/parts..., reached through no link."""
    if any(part in ("", ".", "..") for part in parts):
        raise NotAFile(f"{'/'.join(parts)!r} is not a path inside {root}")
    fd = os.open(root, DIR_FLAGS)
    try:
        for part in parts:
            child = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except OSError:
        os.close(fd)
        raise
    return fd


def _refused(error: OSError, root: Path, relative: str, dir_fd: int | None = None) -> OSError:
    """ELOOP: a link (O_NOFOLLOW); ENOTDIR: a link or a file where a folder should be."""
    if error.errno not in (errno.ELOOP, errno.ENOTDIR):
        return error
    name = relative.rpartition("/")[2]
    try:
        link = stat.S_ISLNK(os.stat(name if dir_fd is not None else root, dir_fd=dir_fd,
                                    follow_symlinks=False).st_mode)
    except OSError:
        link = error.errno == errno.ELOOP
    return NotAFile(f"{relative} in {root} is {'a symbolic link' if link else 'not a folder'}")


def write_owned(folder: str | Path, files: dict[str, str]) -> None:
    """As root, new files in a folder that another account writes (a unit's
    runtime folder): each of mode 0400, owned by the folder's owner. Nothing
    there is followed nor kept: a link or a file in a name's place is removed
    first, and the new one is created exclusively."""
    fd = os.open(folder, DIR_FLAGS)
    try:
        owner = os.fstat(fd)
        for name, text in files.items():
            try:
                os.unlink(name, dir_fd=fd)
            except FileNotFoundError:
                pass
            file = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o400,
                           dir_fd=fd)
            with os.fdopen(file, "w") as out:
                os.fchown(file, owner.st_uid, owner.st_gid)
                out.write(text)
    finally:
        os.close(fd)
