"""Files replaced whole: a reader sees the old content or the new, never
half of either, and a crash leaves one of them. The text is written aside
in the same folder under a name of its own, flushed to the disk, then
renamed over the path (rename(2) is atomic, and replaces a link at the
path, never what it points to)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def replace_text(path: Path, text: str, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
    """`text` becomes the file at `path`, with `mode` whatever the umask and,
    given, `owner` (uid, gid), both set before a byte is written."""
    fd, aside = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            if owner is not None:
                os.fchown(file.fileno(), *owner)
            os.fchmod(file.fileno(), mode)
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(aside, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(aside)
        raise
