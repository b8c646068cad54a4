"""The names LTI launches give students, for their course's staff to find
them: the LMS sends ``name`` (or ``given_name`` and ``family_name``) when
its privacy settings allow; a student is otherwise known by the id their
LMS sent (``sub``), which the staff pages find too.

Kept by nbh-web at each launch that brings one, as
lti/names/<course>/<student> (nbh's alone, beside the LTI nonces), rewritten
only when it changed; read back per course, once per change of the
course's folder (a name is written by a rename into it, which changes the
folder's time), however many times the staff page asks.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from . import paths
from .names import Instance

NAMES_DIR = paths.DATA_DIR / "lti" / "names"
NAME_MAX = 100
# A folder's time is the kernel's coarse clock (a tick, a few ms): well past it.
RACY_NS = 1_000_000_000
_SPACES = re.compile(r"\s+")


def from_claims(claims: dict) -> str:
    """A launch's student's name as people know it; '' when the LMS sent none."""
    name = claims.get("name")
    if not isinstance(name, str) or not name.strip():
        parts = [claims.get(key) for key in ("given_name", "family_name")]
        name = " ".join(part for part in parts if isinstance(part, str))
    name = "".join(char for char in _SPACES.sub(" ", name) if char.isprintable()).strip()
    return name[:NAME_MAX]


def _path(instance: Instance) -> Path:
    return NAMES_DIR / instance.course / instance.student


def remember(instance: Instance, name: str) -> bool:
    """Keep the student's name, if it is new or changed: whether it was written."""
    if not name:
        return False
    path = _path(instance)
    try:
        if path.read_text(encoding="utf-8") == name:
            return False
    except FileNotFoundError:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{instance.student}.new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(name)
    os.replace(temporary, path)
    return True


class CourseNames:
    """Each course's {student: name}, read again when its folder changed."""

    def __init__(self, folder: Path = NAMES_DIR):
        self.folder = folder
        self._cache: dict[str, tuple[int, dict[str, str]]] = {}

    def of(self, course: str) -> dict[str, str]:
        folder = self.folder / course
        try:
            changed = os.stat(folder).st_mtime_ns
        except FileNotFoundError:
            return {}
        cached = self._cache.get(course)
        if cached and cached[0] == changed:
            return cached[1]
        found = {}
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    with open(entry.path, encoding="utf-8", errors="replace") as opened:
                        found[entry.name] = opened.read(NAME_MAX * 4)
                except OSError:
                    continue
        # A change within the same clock tick as this read would leave the
        # folder's time as it is now: a folder that changed that recently is
        # read again next time (git's "racy" index entries, the same way).
        if time.time_ns() - changed > RACY_NS:
            self._cache[course] = (changed, found)
        return found
