"""Text notebooks (jupytext): courses written as MyST Markdown (.md) or
percent-format Python (.py), reviewable in git.

With the course's ``text_notebooks`` setting, each update (nbh-course-update@,
as the checkouts' account, in its sandbox: the course's files are parsed
there, never in the front end) writes beside each text notebook the .ipynb
that jupytext makes of it, untracked. ``git clean`` removes them at the next
update, which writes them again from the new text. Everything after that
sees a notebook like any other: the entry copies it, the student's server
resets to it and shares it, the staff pages compare with it. An entry URL
may name the text file (``w1/intro.md``) or no suffix at all.

A text notebook is a .md or .py file that begins with jupytext's header
(``jupytext --to md:myst`` and ``--to py:percent`` write one): README.md
and helper.py stay what they are, files beside the notebooks. A text
notebook whose .ipynb is in the repository is left alone: the repository's
wins.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

SUFFIXES = (".md", ".py")
# What jupytext's header holds (md: YAML front matter; py: the same, commented).
_HEADER_KEY = re.compile(r"(?:# ?)?\s*(?:jupytext|kernelspec|jupyter):")
_HEAD_BYTES = 8192
# A course's text files past these are not looked at: a notebook is smaller.
FILE_MAX = 16 << 20
FILES_MAX = 20000


def is_text_notebook(path: Path) -> bool:
    """A .md or .py file (no link) that begins with jupytext's header."""
    if path.suffix not in SUFFIXES:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as file:
        head = file.read(_HEAD_BYTES).decode("utf-8", "replace")
    lines = head.split("\n")
    delimiter = "---" if path.suffix == ".md" else "# ---"
    if lines[0].rstrip() != delimiter:
        return False
    for line in lines[1:200]:
        if line.rstrip() == delimiter:
            return False  # the header ended with none of jupytext's keys
        if _HEADER_KEY.match(line):
            return True
    return False


def _text_files(root: Path):
    """The checkout's .md and .py regular files, walked without following a
    link, hidden folders (.git) left out."""
    seen = 0
    for folder, folders, files in os.walk(root):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in files:
            path = Path(folder, name)
            if path.suffix in SUFFIXES and not name.startswith(".") and not path.is_symlink():
                seen += 1
                if seen > FILES_MAX:
                    return
                yield path


def generate(root: Path) -> tuple[list[str], list[str]]:
    """The .ipynb of each text notebook of the checkout, written beside it
    where none is; the paths written, and the text notebooks that jupytext
    could not read (with why)."""
    import jupytext  # noqa: PLC0415 (the updates' only)
    import nbformat  # noqa: PLC0415

    written, failed = [], []
    for path in _text_files(root):
        target = path.with_suffix(".ipynb")
        if os.path.lexists(target) or path.stat().st_size > FILE_MAX or not is_text_notebook(path):
            continue
        relative = str(path.relative_to(root))
        try:
            notebook = jupytext.read(path)
            text = nbformat.writes(notebook)
        except Exception as error:  # noqa: BLE001 -- jupytext raises many kinds; the course's to mend
            failed.append(f"{relative}: {type(error).__name__}: {error}")
            continue
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        written.append(str(target.relative_to(root)))
    return written, failed


def from_url(notebook: str) -> str:
    """The notebook an entry URL's name stands for, once text notebooks are
    .ipynb: w1/intro.md -> w1/intro.ipynb."""
    for suffix in SUFFIXES:
        if notebook.endswith(suffix):
            return notebook.removesuffix(suffix) + ".ipynb"
    return notebook
