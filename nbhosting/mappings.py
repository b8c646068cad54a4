"""A notebook's neighbours: the course's data, figures and modules beside
the student's copy, so that what the notebook reads by a relative path
(``data/x.csv``, ``figures/y.png``, ``import helper``) is there, as in a
checkout of the course.

The front end places, beside the copy in the workspace, a symbolic link to
each neighbour as the container sees it, under the course's read-only
mount (``/home/jovyan/course/<folder>/<name>``): why links rather than
mounts or an overlay:

- a link follows the course: an update reaches the student at once, and
  the neighbours it adds at the student's next entry;
- the student's own file wins: a link is made only where nothing is, never
  over a file, and the student may delete it or put their own in its place;
- it reads only what the container can: the course, read-only, and on the
  host it leads nowhere (no /home/jovyan there), so nothing of the host's
  follows it into another workspace;
- a mount would shadow the student's files, and one per file would not
  follow an update (git replaces files); an overlay needs a mount per
  server that rootless podman cannot make on every file system.

Which neighbours: by default, every entry of the notebook's folder that is
not a notebook, not hidden, not a link, and not a folder that holds
notebooks (those are the student's to copy); or the names that the
course's ``.nbhosting/nbhosting.toml`` lists (``mappings = ["data",
"figures", "*.py"]``, patterns of names in the notebook's folder).
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import tomllib
from pathlib import Path, PurePosixPath

from . import courses, nofollow, textnotebooks, workspace
from .names import Instance

# Where the student's container has the course (jupyter_run: --volume ...:ro).
COURSE_MOUNT = PurePosixPath("/home/jovyan/course")
CONFIG = ".nbhosting/nbhosting.toml"
PATTERN_RE = re.compile(r"[A-Za-z0-9_*?\[\]!-][A-Za-z0-9_.*?\[\]!-]{0,99}")
PATTERNS_MAX = 50


def patterns(course_dir: Path) -> tuple[str, ...] | None:
    """The course's mappings, or None (the default: every neighbour)."""
    try:
        fd = nofollow.open_file(course_dir, CONFIG)
    except FileNotFoundError:
        return None
    except (nofollow.NotAFile, OSError) as error:
        raise courses.CourseError(f"{CONFIG}: {error}") from None
    with os.fdopen(fd, "rb") as file:
        try:
            settings = tomllib.loads(file.read(1 << 16).decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise courses.CourseError(f"{CONFIG}: {error}") from None
    if "mappings" not in settings:
        return None
    chosen = settings["mappings"]
    if not (isinstance(chosen, list) and len(chosen) <= PATTERNS_MAX
            and all(isinstance(p, str) and PATTERN_RE.fullmatch(p) for p in chosen)):
        raise courses.CourseError(f"{CONFIG}: mappings must be a list of at most {PATTERNS_MAX} patterns of names "
                          "in a notebook's folder (letters, digits, '_', '.', '-', '*', '?', [...]: no '/')")
    return tuple(chosen)


@functools.lru_cache(maxsize=1024)
def _neighbours(course_dir: Path, folder: PurePosixPath, chosen: tuple[str, ...] | None,
                version: tuple) -> tuple[str, ...]:
    del version  # the cache's key: the course's checkout as it is now
    try:
        fd = nofollow.open_dirs(course_dir, folder.parts)
    except OSError:
        return ()
    holding = set()
    if chosen is None:  # the folders here that hold notebooks, at any depth: the student copies those
        prefix = "" if folder == PurePosixPath(".") else f"{folder}/"
        holding = {path[len(prefix):].split("/", 1)[0] for path in courses.notebooks_in(course_dir)
                   if path.startswith(prefix) and "/" in path[len(prefix):]}
    found = []
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith(".") or name.endswith(courses.NOTEBOOK_SUFFIX) or entry.is_symlink():
                    continue
                if chosen is not None:
                    if any(fnmatch.fnmatchcase(name, pattern) for pattern in chosen):
                        found.append(name)
                    continue
                if name not in holding and not _text_source(course_dir, folder, name):
                    found.append(name)
    finally:
        os.close(fd)
    return tuple(sorted(found))


def _text_source(course_dir: Path, folder: PurePosixPath, name: str) -> bool:
    """A text notebook whose .ipynb is beside it (textnotebooks.py): the
    student has the notebook; its text is no neighbour of it."""
    path = course_dir / folder / name
    return (path.suffix in textnotebooks.SUFFIXES and path.with_suffix(courses.NOTEBOOK_SUFFIX).is_file()
            and textnotebooks.is_text_notebook(path))


def neighbours(course_dir: Path, notebook: str) -> tuple[str, ...]:
    """The names in the notebook's folder of the course to place beside the copy."""
    try:
        version = os.stat(course_dir / ".git" / "index").st_mtime_ns
    except OSError:
        version = None
    return _neighbours(course_dir, PurePosixPath(notebook).parent, patterns(course_dir), (version,))


def place(instance: Instance, course_dir: Path, notebook: str) -> list[str]:
    """Link the notebook's neighbours beside the student's copy where the
    student has nothing of that name; the names linked now."""
    folder = PurePosixPath(notebook).parent
    names = neighbours(course_dir, notebook)
    if not names:
        return []
    directory = workspace.checked(instance, nofollow.open_dirs(workspace.workspace_dir(instance), folder.parts))
    placed = []
    try:
        for name in names:
            try:
                os.symlink(str(COURSE_MOUNT / folder / name), name, dir_fd=directory)
            except FileExistsError:
                continue  # the student's own (or a link placed before)
            placed.append(name)
    finally:
        os.close(directory)
    return placed


def unlink_placed_folders(instance: Instance, notebook: str) -> list[str]:
    """The folders on the way to the notebook's copy that are links into the
    course (a folder placed as data, to which an update of the course has
    since added notebooks): removed, so that a folder of the student's own
    takes their place. Such a link leads into the read-only course:
    removing it loses nothing. The paths removed."""
    removed = []
    parts = PurePosixPath(notebook).parent.parts
    root = workspace.workspace_dir(instance)
    for depth, name in enumerate(parts):
        try:
            fd = workspace.checked(instance, nofollow.open_dirs(root, parts[:depth]))
        except OSError:
            break  # not there yet, or a link of the student's own on the way: the copy says so
        try:
            if os.readlink(name, dir_fd=fd).startswith(f"{COURSE_MOUNT}/"):
                os.unlink(name, dir_fd=fd)
                removed.append("/".join(parts[:depth + 1]))
        except OSError:
            pass  # not a link: a folder, or nothing yet
        finally:
            os.close(fd)
    return removed


def copy_with_neighbours(instance: Instance, course_dir: Path, notebook: str) -> tuple[bool, str | None]:
    """The student's copy of the notebook (workspace.copy_notebook, whose
    errors it raises), then its neighbours: whether the notebook was copied,
    and why the neighbours are not placed, if they are not (the notebook
    opens all the same)."""
    unlink_placed_folders(instance, notebook)
    copied = workspace.copy_notebook(instance, course_dir, notebook)
    try:
        place(instance, course_dir, notebook)
    except (courses.CourseError, OSError) as error:
        return copied, str(error)
    return copied, None
