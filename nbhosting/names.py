"""Course, student and notebook names, and the systemd instance of a pair.

Everything that comes from a URL or a command line is checked here first,
against strict character sets, before it reaches a unit name, a path or a
container; what passes can be used in all three without quoting.

The instance of (course, student) is the systemd path-escaping of
``course/student``, so ``nbh-jupyter@<instance>.service`` names exactly one
pair and ``%I`` in a unit gives ``course/student`` back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A course name appears in paths, unit names and container names: no dot, so
# that the container name nbh.<course>.<student> splits in one way only.
COURSE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
# Open edX anonymous ids are 32 hex digits; Moodle ids are numbers.
STUDENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")
# Each part of a notebook path: what course repositories use in file names.
# A staff member's own workspace in a course ("open a notebook as myself")
# is the student name STAFF_PREFIX + account: of the students' character set
# (so polkit, nginx and the units take it as they are), and refused as a
# student at the entry (check_student), so it is never a student's.
STAFF_PREFIX = "staff."
STAFF_ACCOUNT_RE = re.compile(r"[a-z][a-z0-9_.-]{0,31}")
NOTEBOOK_PART_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.,+=@ -]{0,127}")
NOTEBOOK_MAX_PARTS = 16

UNIT_NAME_MAX = 255
# The longest unit prefix and suffix around an instance: "nbh-jupyter@" ".service".
_LONGEST_AFFIXES = len("nbh-jupyter@") + len(".service")
# Socket paths are limited to 108 bytes (sun_path) with the final NUL.
SOCKET_PATH_MAX = 107

# Characters systemd leaves as they are when escaping (src/basic/unit-name.c).
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.")


class BadName(ValueError):
    """A name that nbhosting refuses; the message says which and why."""


def check_course(course: str) -> str:
    if not isinstance(course, str) or not COURSE_RE.fullmatch(course):
        raise BadName(
            f"bad course name {course!r}: 1 to 32 letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    return course


def check_student(student: str) -> str:
    """A student's name, as an entry URL or the LMS gives it: never a staff workspace."""
    check_workspace(student)
    if student.startswith(STAFF_PREFIX):
        raise BadName(f"bad student name {student!r}: {STAFF_PREFIX!r} starts staff members' workspaces")
    return student


def check_workspace(student: str) -> str:
    """The student part of an instance: a student's name, or a staff workspace."""
    if not isinstance(student, str) or not STUDENT_RE.fullmatch(student):
        raise BadName(
            f"bad student name {student!r}: 1 to 40 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    if student.startswith(STAFF_PREFIX) and not STAFF_ACCOUNT_RE.fullmatch(student[len(STAFF_PREFIX):]):
        raise BadName(f"bad staff workspace {student!r}: {STAFF_PREFIX!r} and a staff account's name")
    return student


def staff_workspace(account: str) -> str:
    """The student name of a staff member's own workspace."""
    if not isinstance(account, str) or not STAFF_ACCOUNT_RE.fullmatch(account):
        raise BadName(f"bad staff account {account!r}: 1 to 32 lower-case letters, digits, '_', '.' "
                      "or '-', starting with a letter")
    return STAFF_PREFIX + account


def check_notebook(path: str) -> str:
    """A notebook path relative to a course: no '..', no absolute path."""
    if not isinstance(path, str) or not path or len(path) > 1024:
        raise BadName(f"bad notebook path {path!r}: empty or too long")
    parts = path.split("/")
    if len(parts) > NOTEBOOK_MAX_PARTS:
        raise BadName(f"bad notebook path {path!r}: more than {NOTEBOOK_MAX_PARTS} levels")
    for part in parts:
        # The character set already excludes NUL, control characters, '\\',
        # an empty part (leading, trailing or doubled '/') and a leading '.'
        # (so '.', '..' and hidden files), but say why in plain words.
        if part in ("", ".", ".."):
            raise BadName(f"bad notebook path {path!r}: empty, '.' or '..' part")
        if not NOTEBOOK_PART_RE.fullmatch(part) or part.endswith(" "):
            raise BadName(f"bad notebook path {path!r}: unexpected character in {part!r}")
    return path


def escape(text: str) -> str:
    """systemd's unit name escaping of a relative path (systemd-escape --path)."""
    out = []
    for i, char in enumerate(text):
        if char == "/":
            out.append("-")
        elif char in _PLAIN and not (i == 0 and char == "."):
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode())
    return "".join(out)


_ESCAPE_RE = re.compile(r"\\x([0-9a-f]{2})")


def unescape(text: str) -> str:
    """The inverse of `escape`, as systemd's ``%I`` computes it."""
    raw = bytearray()
    i = 0
    while i < len(text):
        match = _ESCAPE_RE.match(text, i)
        if match:
            raw.append(int(match.group(1), 16))
            i = match.end()
        else:
            raw.extend(b"/" if text[i] == "-" else text[i].encode())
            i += 1
    return raw.decode()


@dataclass(frozen=True)
class Instance:
    """One (course, student) pair and the names systemd and podman know it by."""

    course: str
    student: str

    def __post_init__(self) -> None:
        check_course(self.course)
        check_workspace(self.student)
        if len(self.name) + _LONGEST_AFFIXES > UNIT_NAME_MAX:
            raise BadName(f"course and student names too long for a unit: {self.path!r}")
        if max(len(self.listen_socket), len(self.upstream_socket)) > SOCKET_PATH_MAX:
            raise BadName(f"course and student names too long for a socket: {self.path!r}")

    @classmethod
    def from_path(cls, path: str) -> Instance:
        """From ``course/student``, the form ``%I`` gives in a unit."""
        course, sep, student = path.partition("/")
        if not sep:
            raise BadName(f"bad instance {path!r}: expected COURSE/STUDENT")
        return cls(course, student)

    @classmethod
    def from_name(cls, name: str) -> Instance:
        """From the escaped instance, as in ``nbh-jupyter@<name>.service``."""
        instance = cls.from_path(unescape(name))
        if instance.name != name:
            raise BadName(f"bad instance name {name!r}: not in systemd's escaped form")
        return instance

    @classmethod
    def from_unit(cls, unit: str) -> Instance:
        match = re.fullmatch(r"nbh-(?:jupyter|proxy|upstream)@(.+)\.(?:service|socket)", unit)
        if not match:
            raise BadName(f"not an nbhosting instance unit: {unit!r}")
        return cls.from_name(match.group(1))

    @classmethod
    def from_container(cls, name: str) -> Instance:
        """From a container's name (the inverse of .container)."""
        course, _, student = name.removeprefix("nbh.").partition(".")
        instance = cls(course, student)
        if instance.container != name:
            raise BadName(f"not an nbhosting container: {name!r}")
        return instance

    @property
    def is_staff(self) -> bool:
        return self.student.startswith(STAFF_PREFIX)

    @property
    def path(self) -> str:
        return f"{self.course}/{self.student}"

    @property
    def name(self) -> str:
        return escape(self.path)

    @property
    def service(self) -> str:
        return f"nbh-jupyter@{self.name}.service"

    @property
    def socket(self) -> str:
        return f"nbh-jupyter@{self.name}.socket"

    @property
    def proxy(self) -> str:
        return f"nbh-proxy@{self.name}.service"

    @property
    def upstream(self) -> str:
        return f"nbh-upstream@{self.name}.socket"

    @property
    def units(self) -> tuple[str, str, str, str]:
        return (self.socket, self.proxy, self.service, self.upstream)

    @property
    def container(self) -> str:
        # Valid for podman ([a-zA-Z0-9][a-zA-Z0-9_.-]*) and one-to-one, as a
        # course name has no dot.
        return f"nbh.{self.course}.{self.student}"

    @property
    def listen_socket(self) -> str:
        """Where nginx connects: the socket unit's ListenStream=."""
        return f"/run/nbhosting/nb/{self.path}.sock"

    @property
    def upstream_socket(self) -> str:
        """Where Jupyter itself listens (nbh-upstream@.socket, the proxy's
        upstream): made by systemd, out of the container's reach, and there
        only while the server runs, so asking there never starts a server."""
        return f"/run/nbhosting/upstream/{self.path}.sock"

    @property
    def base_url(self) -> str:
        return f"/nb/{self.path}/"
