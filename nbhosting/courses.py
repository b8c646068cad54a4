"""Courses: each one a git repository cloned under the data directory.

A course's settings (git URL, branch, image) are a small TOML file in
``paths.COURSE_SETTINGS_DIR``, written only once the clone succeeded, so a
course exists exactly when its settings file does. The work tree is
``paths.COURSES_DIR / name``, world-readable because the front end and the
containers read it; students' copies live elsewhere, so an update may reset
it at will.

git gets its arguments as a list, never through a shell, and never waits
for a password.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from . import nofollow, paths
from .names import COURSE_RE, BadName, check_course, check_notebook

GIT_TIMEOUT = 300
# Protocols git may use unless the operator says otherwise: not ext::, which runs commands.
GIT_PROTOCOLS = "file:git:http:https:ssh"
# An image reference as podman takes it, conservatively: no spaces, no leading '-'.
IMAGE_RE = re.compile(r"[a-z0-9][A-Za-z0-9._/:@-]{0,254}")
BRANCH_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]{0,254}")
URL_MAX = 1024
NOTEBOOK_SUFFIX = ".ipynb"


class UnknownCourse(LookupError):
    """No such course: a 404 for the front end, one line for the command."""


class UnknownNotebook(LookupError):
    """No such notebook in the course, or one that is not a notebook file of its own."""


class CourseError(Exception):
    """A course that cannot be created or updated; the message is one line."""


@dataclass(frozen=True)
class Course:
    name: str
    git_url: str
    branch: str | None  # None: the remote's default branch
    image: str | None  # None: the default image
    idle_timeout: int | None = None  # seconds; None: the configuration's cull.idle_timeout

    @property
    def path(self) -> Path:
        """The git work tree."""
        return paths.COURSES_DIR / self.name


def _settings_path(name: str) -> Path:
    return paths.COURSE_SETTINGS_DIR / f"{name}.toml"


def _checked(name: str, git_url: object, branch: object, image: object, idle_timeout: object = None) -> Course:
    """The same checks for what an operator types and what a settings file says."""
    if (not isinstance(git_url, str) or not git_url or len(git_url) > URL_MAX
            or git_url.startswith("-") or " " in git_url or not git_url.isprintable()):
        raise CourseError(f"bad git URL {git_url!r}: empty, too long, leading '-', "
                          "or a space or control character")
    if branch is not None and not (isinstance(branch, str) and BRANCH_RE.fullmatch(branch)):
        raise CourseError(f"bad branch {branch!r}: letters, digits, '_', '.', '/' or '-'")
    if image is not None and not (isinstance(image, str) and IMAGE_RE.fullmatch(image)):
        raise CourseError(f"bad image {image!r}: not an image reference like quay.io/jupyter/base-notebook:latest")
    if idle_timeout is not None and not (type(idle_timeout) is int and 60 <= idle_timeout <= 7 * 86400):
        raise CourseError(f"bad idle_timeout {idle_timeout!r}: seconds, from 60 to 604800")
    return Course(name, git_url, branch, image, idle_timeout)


def load(name: str) -> Course:
    check_course(name)
    path = _settings_path(name)
    try:
        settings = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UnknownCourse(f"unknown course {name!r}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise CourseError(f"{path}: {error}") from None
    unknown = sorted(set(settings) - {"git_url", "branch", "image", "idle_timeout"})
    if unknown:
        raise CourseError(f"{path}: unknown key {unknown[0]!r}")
    try:
        return _checked(name, settings.get("git_url"), settings.get("branch"), settings.get("image"),
                        settings.get("idle_timeout"))
    except CourseError as error:
        raise CourseError(f"{path}: {error}") from None


def all_courses() -> list[Course]:
    names = sorted(file.stem for file in paths.COURSE_SETTINGS_DIR.glob("*.toml"))
    # A file whose name is not a course's (a backup, a stray file) is not a course.
    return [load(name) for name in names if COURSE_RE.fullmatch(name)]


def _git_env() -> dict[str, str]:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    env.setdefault("GIT_ALLOW_PROTOCOL", GIT_PROTOCOLS)
    # ssh asks for passwords and host keys on the terminal, not through git.
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    return env


def _git(tree: Path | None, *args: str) -> str:
    """Run git (in the work tree `tree`); its stdout, or CourseError with its last word."""
    argv = ["git", *(["-C", str(tree)] if tree else []), *args]
    try:
        result = subprocess.run(argv, check=False, capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, env=_git_env(), timeout=GIT_TIMEOUT)
    except FileNotFoundError:
        raise CourseError("git is not installed") from None
    except subprocess.TimeoutExpired:
        raise CourseError(f"git {args[0]} timed out after {GIT_TIMEOUT} s") from None
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise CourseError(f"git {args[0]} failed: {lines[-1] if lines else f'exit status {result.returncode}'}")
    return result.stdout.strip()


def commit(course: Course) -> str:
    """The short hash of the commit the work tree is at."""
    return _git(course.path, "rev-parse", "--short", "HEAD")


def _share(tree: Path) -> None:
    """Make the work tree world-readable whatever the umask; keep .git private.

    .git/config holds the URL, credentials included if the operator put any,
    and the containers see the whole tree.
    """
    tree.chmod(0o755)
    for top, dirs, files in os.walk(tree):
        if top == str(tree) and ".git" in dirs:
            dirs.remove(".git")
            (tree / ".git").chmod(0o700)
        for name in dirs:
            path = os.path.join(top, name)
            if not os.path.islink(path):  # chmod would follow it
                os.chmod(path, 0o755)
        for name in files:
            path = os.path.join(top, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                os.chmod(path, 0o755 if mode & 0o111 else 0o644)


def _write_settings(course: Course) -> None:
    """By hand, as tomllib only reads; json.dumps quotes a valid TOML basic string."""
    lines = ["# Written by `nbh course create`.\n", f"git_url = {json.dumps(course.git_url, ensure_ascii=False)}\n"]
    for key in ("branch", "image", "idle_timeout"):
        value = getattr(course, key)
        if value is not None:
            lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}\n")
    path = _settings_path(course.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{course.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as file:
            file.writelines(lines)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def create(name: str, git_url: str, branch: str | None = None, image: str | None = None,
           idle_timeout: int | None = None) -> Course:
    """Clone next to the destination and rename into place: a failure leaves nothing."""
    check_course(name)
    course = _checked(name, git_url, branch, image, idle_timeout)
    if _settings_path(name).exists() or os.path.lexists(course.path):
        raise CourseError(f"course {name!r} already exists")
    paths.COURSES_DIR.mkdir(parents=True, exist_ok=True)
    # Hidden, so never taken for a course (course names start with a letter or digit).
    temporary = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=paths.COURSES_DIR))
    placed = False
    try:
        _git(None, "clone", "--quiet", *(["--branch", branch] if branch else []), "--", git_url, str(temporary))
        try:
            _git(temporary, "rev-parse", "--verify", "--quiet", "HEAD")
        except CourseError:
            raise CourseError(f"git clone failed: {git_url} has no commit to check out") from None
        _share(temporary)
        try:
            os.rename(temporary, course.path)
        except OSError:  # created meanwhile by someone else
            raise CourseError(f"course {name!r} already exists") from None
        placed = True
        _write_settings(course)
    except BaseException:
        shutil.rmtree(course.path if placed else temporary, ignore_errors=True)
        raise
    return course


def _remote_branch(course: Course) -> str:
    if course.branch:
        return f"origin/{course.branch}"
    # Follow the remote's default branch, should it change after the clone.
    _git(course.path, "remote", "set-head", "origin", "--auto")
    return _git(course.path, "symbolic-ref", "--short", "refs/remotes/origin/HEAD")


def update(name: str) -> str:
    """Fetch and hard-reset to the remote branch; the new short commit.

    Students' workspaces are elsewhere: nothing of theirs is touched.
    """
    course = load(name)
    if not (course.path / ".git").is_dir():
        raise CourseError(f"course {name!r} has no git work tree at {course.path}")
    _git(course.path, "fetch", "--quiet", "origin")
    _git(course.path, "reset", "--quiet", "--hard", _remote_branch(course))
    _git(course.path, "clean", "-fdxq")
    _share(course.path)
    return commit(course)


def _is_notebook(tree: Path, relative: str) -> bool:
    """A regular .ipynb file, not hidden, reached from the tree through no link.

    A link is never a notebook, even one to another notebook of the course:
    the copy (workspace.copy_notebook) opens the file the same way, so what
    is listed here is what can be copied.
    """
    if not relative.endswith(NOTEBOOK_SUFFIX):
        return False
    try:
        check_notebook(relative)  # no hidden part, no '..'
        os.close(nofollow.open_file(tree, relative))
    except (BadName, OSError):
        return False
    return True


def notebooks(course: Course) -> list[str]:
    """Every notebook of the course, as relative POSIX paths, sorted."""
    tree = course.path.resolve()
    found = []
    for top, dirs, files in os.walk(tree):
        # Hidden folders, .git and .ipynb_checkpoints among them, are not looked into.
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        for name in files:
            if name.endswith(NOTEBOOK_SUFFIX):
                relative = Path(top, name).relative_to(tree).as_posix()
                if _is_notebook(tree, relative):
                    found.append(relative)
    return sorted(found)


def find_notebook(course: Course, notebook: str) -> str:
    """The notebook named in a URL (with or without .ipynb), as a relative path."""
    check_notebook(notebook)
    relative = notebook if notebook.endswith(NOTEBOOK_SUFFIX) else notebook + NOTEBOOK_SUFFIX
    if not _is_notebook(course.path.resolve(), relative):
        raise UnknownNotebook(f"unknown notebook {notebook!r} in course {course.name!r}")
    return relative
