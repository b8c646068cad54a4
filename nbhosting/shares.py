"""The students' shared pages: static copies of notebooks, for anyone with
the link.

A student's server writes them (the image's nbh_menus, "Share a static
version") in its own folder, shared/<course>/<id>/<page>.html, where <id>
is derived from the pair under the host secret (tokens.share_id) and <page>
is random: an address tells nothing of whose page it is, and another cannot
be guessed from it. The front end serves them read-only. Their content is
the student's (notebook output is any HTML), so they are served under a
Content-Security-Policy sandbox without allow-same-origin: no script runs,
nothing is fetched, and the page has no access to the site's origin.
"""

from __future__ import annotations

import os
import re

from . import nofollow, paths
from .names import BadName, check_course
from .tokens import SHARE_ID_RE

PAGE_RE = re.compile(r"[a-z2-7]{26}")
# The largest page served (nbconvert's of a 50-cell notebook with 5 figures
# is a few MiB), sent a piece at a time (web/base.py: send_file).
PAGE_MAX = 32 << 20
# What a shared page may use: its own inline styles, inline images, fonts.
POLICY = ("sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:; "
          "form-action 'none'; base-uri 'none'")


class NoSuchPage(LookupError):
    """Never shared, withdrawn, or not a page address at all: a 404."""


def open_page(course: str, share_id: str, page: str) -> int:
    """A read-only descriptor of the page, reached through no link."""
    try:
        check_course(course)
    except BadName as error:
        raise NoSuchPage(str(error)) from None
    if not SHARE_ID_RE.fullmatch(share_id) or not PAGE_RE.fullmatch(page):
        raise NoSuchPage(f"not a shared page's address: {share_id}/{page}")
    try:
        return nofollow.open_file(paths.SHARED_DIR / course / share_id, f"{page}.html")
    except FileNotFoundError:
        raise NoSuchPage(f"no shared page {course}/{share_id}/{page}") from None
    except (nofollow.NotAFile, PermissionError) as error:
        raise NoSuchPage(f"shared page {course}/{share_id}/{page} refused: {error}") from None


def open_page_within(course: str, share_id: str, page: str, limit: int = PAGE_MAX) -> tuple[int, int]:
    """The page's descriptor and size, refused past `limit` bytes: a student
    may write anything in their folder, which the front end would read."""
    fd = open_page(course, share_id, page)
    size = os.fstat(fd).st_size
    if size > limit:
        os.close(fd)
        raise NoSuchPage(f"shared page {course}/{share_id}/{page} is larger than {limit} bytes ({size})")
    return fd, size
