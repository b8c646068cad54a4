"""Courses: each one a git repository cloned under the data directory.

A course's settings (git URL, branch, image, limits, staff, ...) are a
small TOML file in ``paths.COURSE_SETTINGS_DIR``: a course exists exactly
when its settings file does. ``register`` writes it; the first ``update``
(run by nbh-course-update@<course>.service, as the account that owns the
checkouts) clones. The work tree is ``paths.COURSES_DIR / name``,
world-readable because the front end and the containers read it; students'
copies live elsewhere, so an update may reset it at will.

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
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from . import config, files, nofollow, paths, textnotebooks
from .names import COURSE_RE, STAFF_ACCOUNT_RE, BadName, check_course, check_notebook

GIT_TIMEOUT = 300
# Protocols git may use unless the operator says otherwise: not ext::, which runs commands.
GIT_PROTOCOLS = "file:git:http:https:ssh"
# An image reference as podman takes it, conservatively: no spaces, no leading '-'.
IMAGE_RE = re.compile(r"[a-z0-9][A-Za-z0-9._/:@-]{0,254}")
BRANCH_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]{0,254}")
URL_MAX = 1024
NOTEBOOK_SUFFIX = ".ipynb"
# The image setting that means "the course's own build" (nbh-course-build@).
OWN_IMAGE = "course"
# Where a course's repository may say how its image is built.
CONTAINERFILES = (".nbhosting/Containerfile", ".nbhosting/Dockerfile")
# What `nbh course set` and the staff pages may change.
SETTINGS = ("branch", "image", "idle_timeout", "memory_max", "cpu_quota", "disk_max", "staff", "autopull",
            "autobuild", "archived", "interface", "hide", "text_notebooks")
# What a student's notebook opens in: Notebook 7 (the default) or JupyterLab.
INTERFACES = ("notebook", "lab")
# What a course hides from its students: menu entries by command id
# (docmanager:rename), toolbar items by name (save).
HIDE_ITEM_RE = re.compile(r"[A-Za-z0-9_.:@/-]{1,100}")
HIDE_MAX = 50
_KEYS = ("git_url", *SETTINGS)
_SIZE_RE = re.compile(r"[0-9]+[KMGT]?")
MEMORY_MIN, MEMORY_MAX = 64 << 20, 1 << 40
# A workspace's own file system (disks.py): big enough for ext4's journal.
DISK_MIN, DISK_MAX = 32 << 20, 1 << 40


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
    memory_max: int | None = None  # bytes per server; None: the configuration's limits.memory_max
    cpu_quota: int | None = None  # percent of one CPU per server; None: limits.cpu_quota
    disk_max: int | None = None  # bytes of a new workspace's own disk; None: limits.disk_max
    staff: tuple[str, ...] = ()  # staff accounts granted this course (admins have them all)
    autopull: bool = False  # nbh-autopull.timer updates it
    autobuild: bool = False  # ... and builds its image when its Containerfile changed
    archived: bool = False  # over: autopull leaves it alone, its students' servers save nothing
    interface: str | None = None  # None: Notebook 7; or "lab"
    hide: tuple[str, ...] = ()  # menu commands and toolbar items its students do not see
    text_notebooks: bool = False  # its .md and .py jupytext notebooks are notebooks (textnotebooks.py)

    @property
    def path(self) -> Path:
        """The git work tree."""
        return paths.COURSES_DIR / self.name


def _settings_path(name: str) -> Path:
    return paths.COURSE_SETTINGS_DIR / f"{name}.toml"


def _checked(name: str, git_url: object, branch: object = None, image: object = None,
             idle_timeout: object = None, memory_max: object = None, cpu_quota: object = None,
             disk_max: object = None, staff: object = (), autopull: object = False, autobuild: object = False,
             archived: object = False, interface: object = None, hide: object = (),
             text_notebooks: object = False) -> Course:
    """The same checks for what an operator types and what a settings file says."""
    if (not isinstance(git_url, str) or not git_url or len(git_url) > URL_MAX
            or git_url.startswith("-") or " " in git_url or not git_url.isprintable()):
        raise CourseError(f"bad git URL {git_url!r}: empty, too long, leading '-', "
                          "or a space or control character")
    if branch is not None and not (isinstance(branch, str) and BRANCH_RE.fullmatch(branch)):
        raise CourseError(f"bad branch {branch!r}: letters, digits, '_', '.', '/' or '-'")
    if image is not None and not (isinstance(image, str) and IMAGE_RE.fullmatch(image)):
        raise CourseError(f"bad image {image!r}: not an image reference like quay.io/jupyter/base-notebook:latest, "
                          f"nor {OWN_IMAGE!r} (the course's own build)")
    if idle_timeout is not None and not (type(idle_timeout) is int and 60 <= idle_timeout <= 7 * 86400):
        raise CourseError(f"bad idle_timeout {idle_timeout!r}: seconds, from 60 to 604800")
    if memory_max is not None and not (type(memory_max) is int and MEMORY_MIN <= memory_max <= MEMORY_MAX):
        raise CourseError(f"bad memory_max {memory_max!r}: bytes, from 64M to 1T")
    if cpu_quota is not None and not (type(cpu_quota) is int and 1 <= cpu_quota <= 6400):
        raise CourseError(f"bad cpu_quota {cpu_quota!r}: percent of one CPU, from 1 to 6400")
    if disk_max is not None and not (type(disk_max) is int and DISK_MIN <= disk_max <= DISK_MAX):
        raise CourseError(f"bad disk_max {disk_max!r}: bytes, from 32M to 1T")
    if not (isinstance(staff, (list, tuple)) and all(isinstance(x, str) and STAFF_ACCOUNT_RE.fullmatch(x) for x in staff)):
        raise CourseError(f"bad staff {staff!r}: account names, lower-case letters, digits, '_', '.', '-'")
    for key, value in (("autopull", autopull), ("autobuild", autobuild), ("archived", archived),
                       ("text_notebooks", text_notebooks)):
        if type(value) is not bool:
            raise CourseError(f"bad {key} {value!r}: yes or no")
    if interface is not None and interface not in INTERFACES:
        raise CourseError(f"bad interface {interface!r}: notebook or lab")
    if not (isinstance(hide, (list, tuple)) and len(hide) <= HIDE_MAX
            and all(isinstance(x, str) and HIDE_ITEM_RE.fullmatch(x) for x in hide)):
        raise CourseError(f"bad hide {hide!r}: at most {HIDE_MAX} command ids or toolbar item names "
                          "(letters, digits, '_', '.', ':', '@', '/', '-')")
    return Course(name, git_url, branch, image, idle_timeout, memory_max, cpu_quota, disk_max,
                  tuple(sorted(set(staff))), autopull, autobuild, archived,
                  None if interface == "notebook" else interface, tuple(dict.fromkeys(hide)), text_notebooks)


def parse_setting(key: str, text: str) -> object:
    """A setting as a person types it (the CLI, a form) -> its value; checked by change().

    An empty text means the default (None, no staff, no).
    """
    text = text.strip()
    if key not in SETTINGS:
        raise CourseError(f"unknown setting {key!r}: one of {', '.join(SETTINGS)}")
    if key in ("autopull", "autobuild", "archived", "text_notebooks"):
        if text.lower() in ("yes", "true", "on", "1"):
            return True
        if text.lower() in ("", "no", "false", "off", "0"):
            return False
        raise CourseError(f"bad {key} {text!r}: yes or no")
    if key in ("staff", "hide"):
        return tuple(name for name in re.split(r"[\s,]+", text) if name)
    if not text or text == "default":
        return None
    if key == "idle_timeout":
        if not text.isascii() or not text.isdigit():
            raise CourseError(f"bad idle_timeout {text!r}: seconds, from 60 to 604800")
        return int(text)
    if key in ("memory_max", "disk_max"):
        size = text.upper().removesuffix("B")
        if not _SIZE_RE.fullmatch(size) or not text.isascii():
            raise CourseError(f"bad {key} {text!r}: a size like 512M or 2G")
        return config.size_bytes(size)
    if key == "cpu_quota":
        number = text.removesuffix("%")
        if not number.isascii() or not number.isdigit():
            raise CourseError(f"bad cpu_quota {text!r}: a percentage like 100%")
        return int(number)
    return text  # branch, image: checked by change()


def setting_texts(course: Course) -> dict[str, str]:
    """Each setting as a person types it, which parse_setting reads back: the
    staff pages' form and `nbh course show` both show these. "" is the default."""
    texts = {}
    for key in SETTINGS:
        value = getattr(course, key)
        if isinstance(value, bool):
            texts[key] = "yes" if value else ""
        elif key in ("staff", "hide"):
            texts[key] = ", ".join(value)
        elif value is None:
            texts[key] = ""
        elif key in ("memory_max", "disk_max"):
            texts[key] = config.size_text(value)
        elif key == "cpu_quota":
            texts[key] = f"{value}%"
        else:
            texts[key] = str(value)
    return texts


def load(name: str) -> Course:
    check_course(name)
    path = _settings_path(name)
    try:
        settings = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UnknownCourse(f"unknown course {name!r}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise CourseError(f"{path}: {error}") from None
    unknown = sorted(set(settings) - set(_KEYS))
    if unknown:
        raise CourseError(f"{path}: unknown key {unknown[0]!r}")
    try:
        return _checked(name, **settings)
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
        # git's own verdict is its first "fatal:" line; advice follows it.
        verdict = next((line for line in lines if line.startswith(("fatal:", "error:"))), lines[-1] if lines else "")
        raise CourseError(f"git {args[0]} failed: {verdict or f'exit status {result.returncode}'}")
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
    for top, dirs, names in os.walk(tree):
        if top == str(tree) and ".git" in dirs:
            dirs.remove(".git")
            (tree / ".git").chmod(0o700)
        for name in dirs:
            path = os.path.join(top, name)
            if not os.path.islink(path):  # chmod would follow it
                os.chmod(path, 0o755)
        for name in names:
            path = os.path.join(top, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                os.chmod(path, 0o755 if mode & 0o111 else 0o644)


def _write_settings(course: Course) -> None:
    """By hand, as tomllib only reads; json.dumps quotes a valid TOML basic string."""
    lines = ["# Written by `nbh course` and the staff pages.\n"]
    for key in _KEYS:
        value = getattr(course, key)
        if value is not None and value is not False and value != ():
            lines.append(f"{key} = {json.dumps(list(value) if key in ('staff', 'hide') else value, ensure_ascii=False)}\n")
    path = _settings_path(course.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    files.replace_text(path, "".join(lines))


def register(name: str, git_url: str, branch: str | None = None, image: str | None = None,
             idle_timeout: int | None = None) -> Course:
    """A new course's settings, no checkout yet: its first update clones it."""
    check_course(name)
    course = _checked(name, git_url, branch, image, idle_timeout)
    if _settings_path(name).exists() or os.path.lexists(course.path):
        raise CourseError(f"course {name!r} already exists")
    _write_settings(course)
    return course


def unregister_if_never_cloned(name: str) -> bool:
    """After a failed first update: a course that never had a checkout is forgotten."""
    if os.path.lexists(paths.COURSES_DIR / name):
        return False
    _settings_path(name).unlink(missing_ok=True)
    return True


def staff_may_set(changed: dict[str, object], limits_images: tuple, memory_max: int, cpu_quota: int,
                  idle_timeout: int, disk_max: int = 0) -> None:
    """What a course's staff (not an admin) may set, within the site's own
    limits: the site's image, the course's own build or an image an admin
    allowed (never another course's build); no more memory, CPU, idle time or
    disk than the site gives a server (disk_max 0: the site sets no bound, and
    a course may set any).
    CourseError naming the bound."""
    image = changed.get("image")
    if image is not None and image != OWN_IMAGE and image not in limits_images:
        raise CourseError(f"image {image!r} is not allowed to a course's staff: the site's (empty), "
                          f"{OWN_IMAGE!r} or one of limits.images ({', '.join(limits_images) or 'none'})")
    for key, most in (("memory_max", memory_max), ("cpu_quota", cpu_quota), ("idle_timeout", idle_timeout),
                      ("disk_max", disk_max or DISK_MAX)):
        value = changed.get(key)
        if isinstance(value, int) and value > most:
            raise CourseError(f"{key} {value} is over the site's {most}: an admin may set it")


def change(name: str, **values: object) -> Course:
    """Change some settings, checked as load() checks them; written atomically."""
    course = load(name)
    unknown = sorted(set(values) - set(SETTINGS))
    if unknown:
        raise CourseError(f"unknown setting {unknown[0]!r}: one of {', '.join(SETTINGS)}")
    current = {key: getattr(course, key) for key in _KEYS}
    changed = _checked(name, **{**current, **values})
    _write_settings(changed)
    return changed


def create(name: str, git_url: str, branch: str | None = None, image: str | None = None,
           idle_timeout: int | None = None) -> Course:
    """register() and the first update, in this process: a failure leaves nothing."""
    course = register(name, git_url, branch, image, idle_timeout)
    try:
        update(name)
    except BaseException:
        unregister_if_never_cloned(name)
        raise
    return course


def _text_notebooks(course: Course, tree: Path | None = None) -> None:
    """With its text_notebooks setting, the .ipynb of each of the course's
    text notebooks, beside it (textnotebooks.py); said in the unit's log."""
    if not course.text_notebooks:
        return
    written, failed = textnotebooks.generate(tree or course.path)
    print(f"text notebooks: {len(written)} made into .ipynb" + "".join(f"\n  {path}" for path in written[:50]))
    for reason in failed:
        print(f"text notebook not read: {reason}")


def _clone(course: Course) -> None:
    """Clone next to the destination and rename into place: a failure leaves nothing."""
    paths.COURSES_DIR.mkdir(parents=True, exist_ok=True)
    # Hidden, so never taken for a course (course names start with a letter or digit).
    temporary = Path(tempfile.mkdtemp(prefix=f".{course.name}.", dir=paths.COURSES_DIR))
    try:
        _git(None, "clone", "--quiet", *(["--branch", course.branch] if course.branch else []), "--",
             course.git_url, str(temporary))
        try:
            _git(temporary, "rev-parse", "--verify", "--quiet", "HEAD")
        except CourseError:
            raise CourseError(f"git clone failed: {course.git_url} has no commit to check out") from None
        _text_notebooks(course, temporary)
        _share(temporary)
        try:
            os.rename(temporary, course.path)
        except OSError:  # created meanwhile by someone else
            raise CourseError(f"course {course.name!r} already has a work tree") from None
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _remote_branch(course: Course) -> str:
    if course.branch:
        return f"origin/{course.branch}"
    # Follow the remote's default branch, should it change after the clone.
    _git(course.path, "remote", "set-head", "origin", "--auto")
    return _git(course.path, "symbolic-ref", "--short", "refs/remotes/origin/HEAD")


def update(name: str) -> str:
    """Clone (the first time), or fetch and hard-reset to the remote branch; the new short commit.

    A fetch or a branch that fails leaves the previous checkout as it was.
    Students' workspaces are elsewhere: nothing of theirs is touched.
    """
    course = load(name)
    if not os.path.lexists(course.path):
        _clone(course)
    elif not (course.path / ".git").is_dir():
        raise CourseError(f"course {name!r} has no git work tree at {course.path}")
    else:
        if course.git_url != _git(course.path, "remote", "get-url", "origin"):
            _git(course.path, "remote", "set-url", "origin", "--", course.git_url)
        _git(course.path, "fetch", "--quiet", "--prune", "origin")
        target = _remote_branch(course)
        try:
            _git(course.path, "rev-parse", "--verify", "--quiet", target + "^{commit}")
        except CourseError:
            raise CourseError(f"no branch {target.removeprefix('origin/')!r} in {course.git_url}") from None
        _git(course.path, "reset", "--quiet", "--hard", target)
        _git(course.path, "clean", "-fdxq")  # and the text notebooks' .ipynb, written again below
        _text_notebooks(course)
        _share(course.path)
    short = commit(course)
    files.replace_text(_update_record(name), json.dumps({"commit": short, "time": time.time()}))
    return short


@dataclass(frozen=True)
class CourseStatus:
    commit: str | None  # where the work tree is; None: never cloned
    updated: float | None  # when the last update succeeded (epoch)
    image: str | None  # the image a student's next start gets; None: the default, or no build yet


def _update_record(name: str) -> Path:
    # Beside the work trees, where only their account writes; hidden, so never a course.
    return paths.COURSES_DIR / f".{name}.update"


def build_record(name: str) -> dict | None:
    """What nbh-course-build@ last built for the course: image, commit, containerfile, time."""
    try:
        record = json.loads((paths.BUILDS_DIR / f"{name}.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("image"), str) else None


def image_of(course: Course, default: str) -> str:
    """The image a server of this course starts from; CourseError if it has none yet."""
    if course.image != OWN_IMAGE:
        return course.image or default
    record = build_record(course.name)
    if record is None or not IMAGE_RE.fullmatch(record["image"]):
        raise CourseError(f"course {course.name!r} uses its own image, which was never built "
                          f"(nbh course build {course.name})")
    return record["image"]


def status(course: Course) -> CourseStatus:
    try:
        record = json.loads(_update_record(course.name).read_text())
        short, updated = str(record["commit"]), float(record["time"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        short, updated = None, None
    record = build_record(course.name) if course.image == OWN_IMAGE else None
    image = record["image"] if record else None if course.image == OWN_IMAGE else course.image
    return CourseStatus(short, updated, image)


def server_limits(course: Course, default_memory: str, default_cpu: str) -> tuple[int, int] | None:
    """(MemoryMax bytes, CPUQuota percent) of the course's servers, if it sets either."""
    if course.memory_max is None and course.cpu_quota is None:
        return None
    memory = course.memory_max if course.memory_max is not None else parse_setting("memory_max", default_memory)
    cpu = course.cpu_quota if course.cpu_quota is not None else parse_setting("cpu_quota", default_cpu)
    return memory, cpu


async def limits_for_start(systemd, settings, instance) -> tuple[int, int] | None:
    """The course's own limits for a server about to start; the configuration's
    again for one that had a course's limits that the course no longer sets."""
    memory, cpu = settings.limits.memory_max, settings.limits.cpu_quota
    found = server_limits(load(instance.course), memory, cpu)
    if found is None and await systemd.has_runtime_properties(instance.service):
        return parse_setting("memory_max", memory), parse_setting("cpu_quota", cpu)
    return found


def containerfile(course: Course) -> str | None:
    """The course's Containerfile, relative to its tree, if it ships one (no link)."""
    for relative in CONTAINERFILES:
        try:
            os.close(nofollow.open_file(course.path.resolve(), relative))
        except OSError:
            continue
        return relative
    return None


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
    return notebooks_in(course.path)


def notebooks_in(tree: Path) -> list[str]:
    """Every notebook in this checkout, as notebooks() lists a course's."""
    tree = tree.resolve()
    found = []
    for top, dirs, names in os.walk(tree):
        # Hidden folders, .git and .ipynb_checkpoints among them, are not looked into.
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        for name in names:
            if name.endswith(NOTEBOOK_SUFFIX):
                relative = Path(top, name).relative_to(tree).as_posix()
                if _is_notebook(tree, relative):
                    found.append(relative)
    return sorted(found)


def find_notebook(course: Course, notebook: str) -> str:
    """The notebook named in a URL (with or without .ipynb), as a relative path."""
    check_notebook(notebook)
    if course.text_notebooks:
        notebook = textnotebooks.from_url(notebook)
    relative = notebook if notebook.endswith(NOTEBOOK_SUFFIX) else notebook + NOTEBOOK_SUFFIX
    if not _is_notebook(course.path.resolve(), relative):
        raise UnknownNotebook(f"unknown notebook {notebook!r} in course {course.name!r}")
    return relative
