"""A student's workspace: their copies of the course's notebooks.

The front end (account nbh, in the group nbh-jupyter) copies a notebook
into a workspace only when the student has no copy yet, and never
overwrites: the file is written aside and linked into place, and link()
fails if anything is there. Workspaces are set-group-id directories of the
group nbh-jupyter (StateDirectoryMode=2770 in nbh-jupyter@.service), so a
copy is writable by the student's container, which runs as nbh-jupyter.
Every folder is opened without following symbolic links: a student can make
links in their own workspace, and the front end must not follow one out.
Nor is the course file: the front end can read the host's secrets, and a
course update may have turned a notebook into a link to one since it was
listed (nofollow.open_file).
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from . import disks, nofollow, paths
from .names import Instance

_DIR_FLAGS = nofollow.DIR_FLAGS


class WorkspaceError(OSError):
    pass


def workspace_dir(instance: Instance) -> Path:
    return paths.WORKSPACES_DIR / instance.course / instance.student


def checked(instance: Instance, opened: int) -> int:
    """`opened`, a descriptor in the workspace, if the front end may use it:
    else closed, and DiskError (a workspace on a disk of its own that is not
    mounted now: disks.py)."""
    try:
        disks.check_mounted(instance, opened)
    except OSError:
        os.close(opened)
        raise
    return opened


def _open_dirs(root: Path, parts: tuple[str, ...]) -> int:
    """The folder root/parts..., made as needed, as an fd; no link followed."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parts:
            try:
                # set-group-id comes from the parent (RestrictSUIDSGID= forbids asking for it)
                os.mkdir(part, 0o770, dir_fd=fd)
            except FileExistsError:
                pass
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except OSError as error:
        os.close(fd)
        raise WorkspaceError(f"cannot make {'/'.join(parts)} in {root}: {error.strerror}") from None
    return fd


def copy_notebook(instance: Instance, course_dir: Path, notebook: str) -> bool:
    """Copy the course's notebook to the student's unless they have one; True if copied.

    nofollow.NotAFile or FileNotFoundError when the course's notebook is a
    link, not a regular file, or gone: then nothing is made in the workspace.
    """
    source = nofollow.open_file(course_dir, notebook)
    try:
        return _copy(instance, source, PurePosixPath(notebook))
    finally:
        os.close(source)


def _copy(instance: Instance, source: int, relative: PurePosixPath) -> bool:
    directory = checked(instance, _open_dirs(workspace_dir(instance), relative.parent.parts))
    try:
        try:
            os.stat(relative.name, dir_fd=directory, follow_symlinks=False)
            return False  # the student's own copy, whatever it has become
        except FileNotFoundError:
            pass
        temporary = f".nbh-copy-{secrets.token_hex(8)}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o660, dir_fd=directory)
        try:
            with os.fdopen(fd, "wb") as out, os.fdopen(source, "rb", closefd=False) as src:
                os.fchmod(out.fileno(), 0o660)  # whatever the umask
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            try:
                os.link(temporary, relative.name, src_dir_fd=directory, dst_dir_fd=directory,
                        follow_symlinks=False)
            except FileExistsError:
                return False  # a concurrent request copied it first
            return True
        finally:
            os.unlink(temporary, dir_fd=directory)
    finally:
        os.close(directory)


# -- what the course's staff see of it ------------------------------------------

# Notebooks listed at most.
LIST_MAX = 2000


@dataclass(frozen=True)
class Copy:
    """A notebook of the student's workspace, as the staff pages list it."""

    notebook: str
    size: int
    modified: float
    differs: bool | None  # from the course's; None: the course has none of that path


def notebooks_of(instance: Instance, course_dir: Path) -> list[Copy]:
    """The student's notebooks, their folders walked without following a
    link (a student can make links in their workspace), hidden ones left
    out, sorted by path."""
    found: list[Copy] = []
    try:
        root = checked(instance, nofollow.open_dirs(workspace_dir(instance), ()))
    except FileNotFoundError:
        return found
    pending = [(root, "")]
    try:
        while pending and len(found) < LIST_MAX:
            fd, prefix = pending.pop()
            try:
                with os.scandir(fd) as entries:
                    for entry in entries:
                        if entry.name.startswith(".") or entry.is_symlink():
                            continue
                        if entry.is_dir(follow_symlinks=False):
                            pending.append((os.open(entry.name, _DIR_FLAGS, dir_fd=fd), f"{prefix}{entry.name}/"))
                        elif entry.name.endswith(".ipynb") and entry.is_file(follow_symlinks=False):
                            info = entry.stat(follow_symlinks=False)
                            found.append(Copy(prefix + entry.name, info.st_size, info.st_mtime,
                                              _differs(fd, entry.name, course_dir, prefix + entry.name)))
            finally:
                os.close(fd)
    finally:
        for fd, _ in pending:
            os.close(fd)
    return sorted(found, key=lambda copy: copy.notebook)[:LIST_MAX]


def _differs(folder: int, name: str, course_dir: Path, relative: str) -> bool | None:
    try:
        theirs = nofollow.open_file(course_dir, relative)
    except OSError:
        return None
    try:
        mine = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
    except OSError:
        os.close(theirs)
        return None
    try:
        if not stat.S_ISREG(os.fstat(mine).st_mode) or os.fstat(mine).st_size != os.fstat(theirs).st_size:
            return True
        while True:  # a piece at a time: a listing holds no notebook whole
            piece = os.read(mine, 1 << 20)
            if piece != os.read(theirs, 1 << 20):
                return True
            if not piece:
                return False
    finally:
        os.close(mine)
        os.close(theirs)


def open_copy(instance: Instance, notebook: str) -> tuple[int, int]:
    """A read-only descriptor of the student's notebook, and its size,
    reached through no link (NotAFile, FileNotFoundError otherwise)."""
    if not notebook.endswith(".ipynb"):
        raise nofollow.NotAFile(f"{notebook!r} is not a notebook")
    fd = checked(instance, nofollow.open_file(workspace_dir(instance), notebook))
    return fd, os.fstat(fd).st_size
