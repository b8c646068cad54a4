"""`make demo`: a course, and a page standing for the LMS, in the sandbox.

The demo makes a small git repository, creates the course from it as an
operator would (`nbh course create`), and serves a page on another site
(http://localhost:8790) that embeds a notebook through the entry URL, as a
course page of FUN-MOOC does, signed with the key the site shares with the
LMS (the default mode, web.auth = "signed").
"""

from __future__ import annotations

import html
import sys
from pathlib import Path
from urllib.parse import quote

from nbhosting import access, config

from . import sandbox

COURSE, STUDENT = "demo", "student"
NOTEBOOKS = {
    "w1/w1-s1-c1-hello.ipynb": ["# Hello\n", "Run the cell below (Shift-Enter), change it, save."],
    "w1/w1-s2-c1-numbers.ipynb": ["# Numbers\n", "Integers in Python are unbounded."],
}


def notebook(text: list[str], code: str) -> dict:
    return {
        "cells": [
            {"cell_type": "markdown", "id": "intro", "metadata": {}, "source": text},
            {"cell_type": "code", "execution_count": None, "id": "code", "metadata": {}, "outputs": [],
             "source": [code]},
        ],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5,
    }


def make_course() -> None:
    sandbox.make_course(COURSE, {path: notebook(text, "print(2 ** 100)") for path, text in NOTEBOOKS.items()})


def entry_url(notebook: str, signed: bool = True) -> str:
    """As the LMS embeds it: signed with the key it shares with the site
    (web.auth = "signed", the default), valid for web.signature_ttl."""
    url = f"{sandbox.SITE_URL}/ipythonExercice/{COURSE}/{quote(notebook)}/{STUDENT}"
    if not signed:
        return url
    key = access.read_key(sandbox.path(str(access.LMS_KEY_PATH)))
    ttl = config.load(sandbox.path(str(config.DEFAULT_PATH))).web.signature_ttl
    return f"{url}?{access.signed_query(key, COURSE, notebook, STUDENT, ttl)}"


def lms_page() -> str:
    frames = "\n".join(
        f"<h2>{html.escape(path)}</h2>\n<iframe src=\"{html.escape(entry_url(path.removesuffix('.ipynb')))}\" "
        f"width=100% height=600></iframe>"
        for path in NOTEBOOKS
    )
    return (f"<!doctype html><html><head><meta charset=utf-8><title>A course page</title></head>"
            f"<body style='font-family:sans-serif;max-width:70em;margin:auto'>"
            f"<h1>A course page of the LMS</h1>\n{frames}\n</body></html>")


def main() -> int:
    make_course()
    page = sandbox.path(f"{sandbox.LMS_ROOT}/index.html")
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(lms_page())
    page.parent.chmod(0o755)
    page.chmod(0o644)
    module = f"{Path(sys.executable).parent.parent.name}/bin/python -m devtools.sandbox"
    print(f"""
The sandbox is up, with the course {COURSE!r}.

  the LMS page:   http://localhost:{sandbox.LMS_PORT}/   (two notebooks of {STUDENT!r}, in iframes)
  one entry URL:  {entry_url("w1/w1-s1-c1-hello")}
                  (signed with /etc/nbhosting/lms-key, as the LMS does; without its signature,
                  {entry_url("w1/w1-s1-c1-hello", signed=False)}
                  is refused, 403, whatever its Referer; `nbh sign` prints such URLs)
  from another machine: ssh -L {sandbox.LMS_PORT}:127.0.0.1:{sandbox.LMS_PORT} -L {sandbox.HTTP_PORT}:127.0.0.1:{sandbox.HTTP_PORT} this-host

  a shell:        {module} exec -- bash
  the servers:    {module} exec -- nbh status
  the journal:    {module} exec -- journalctl NBH_EVENT=open
  stop it all:    make demo-down
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
