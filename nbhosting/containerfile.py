"""What a course's Containerfile may not ask of the build.

A course's Containerfile is its staff's input to the host. The known
escapes of buildah (CVE-2024-1753 among them: a bind mount whose source, a
link in an earlier stage, is resolved on the host) go through ``RUN
--mount``: of type bind or cache from another stage or image (``from=``), or
with a source that climbs out of the context. Those are refused before the
build, each with its line and its reason in the build's log. It is a first
wall only: the build's unit must already find nothing to steal.

The check reads the file as buildah does (parser directives, the escape
character, continuation lines) and errs on the side of refusing: any
``--mount`` anywhere in an instruction is judged, and one that names a
variable (``$``), whose value the build would choose, is refused.
"""

from __future__ import annotations

import posixpath
import re

_DIRECTIVE = re.compile(r"#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$")
_MOUNT = re.compile(r"--mount(?:=|\s+)(\S+)", re.IGNORECASE)


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, instruction) of each instruction, continuations joined."""
    lines = text.splitlines()
    escape = "\\"
    for line in lines:  # parser directives come first, before any other line
        directive = _DIRECTIVE.match(line)
        if not directive:
            break
        if directive[1].lower() == "escape" and directive[2] in ("\\", "`"):
            escape = directive[2]
    instructions: list[tuple[int, str]] = []
    current: list[str] = []
    start = 0
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not current:
            start = number
        if stripped.endswith(escape):
            current.append(stripped[:-1].rstrip())
            continue
        current.append(stripped)
        instructions.append((start, " ".join(current)))
        current = []
    if current:
        instructions.append((start, " ".join(current)))
    return instructions


def mount_problem(spec: str) -> str | None:
    """Why a ``--mount`` value is refused, or None."""
    spec = spec.strip("'\"")
    if "$" in spec:
        return "a mount that names a variable"
    fields: dict[str, str] = {}
    for field in spec.split(","):
        key, _, value = field.partition("=")
        fields[key.strip().lower()] = value.strip()
    kind = fields.get("type", "bind").lower()
    if kind in ("bind", "cache") and "from" in fields:
        return f"a {kind} mount from another stage or image (from=): its links are followed on the host"
    for key in ("source", "src"):
        source = fields.get(key)
        if source is not None and posixpath.normpath("./" + source.lstrip("/")).startswith(".."):
            return f"a {kind} mount whose source leaves the build's context ({source})"
    return None


def refusals(text: str) -> list[str]:
    """Each refused mount, as 'line N: reason'; empty when the file may be built."""
    found = []
    for number, instruction in logical_lines(text):
        for spec in _MOUNT.findall(instruction):
            problem = mount_problem(spec)
            if problem:
                found.append(f"line {number}: {problem}")
    return found
