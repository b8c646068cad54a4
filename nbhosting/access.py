"""Who may open a notebook: the LMS's referer, and/or a URL it signed.

A signed URL carries ``expires`` (Unix time) and ``signature``, the
HMAC-SHA256 under the key shared with the LMS of course, notebook (as in
the URL), student and expiry, one per line.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path
from urllib.parse import urlsplit

from . import config, paths

LMS_KEY_PATH = paths.CONF_DIR / "lms-key"


class Refused(Exception):
    """The entry is not authorized; the message says why, for the journal."""


def read_key(path: Path = LMS_KEY_PATH) -> bytes:
    return path.read_bytes().strip()


def signature(key: bytes, course: str, notebook: str, student: str, expires: int) -> str:
    message = f"{course}\n{notebook}\n{student}\n{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signed_query(key: bytes, course: str, notebook: str, student: str, ttl: int,
                 now: float | None = None) -> str:
    expires = int((now or time.time()) + ttl)
    return f"expires={expires}&signature={signature(key, course, notebook, student, expires)}"


def check_referer(web: config.Web, referer: str | None) -> None:
    if not referer:
        raise Refused("no Referer (the LMS page must embed the notebook)")
    parts = urlsplit(referer)
    origin = f"{parts.scheme}://{parts.netloc}"
    if origin not in web.lms_origins:
        raise Refused(f"Referer {origin!r} is not an allowed LMS origin")


def check_signature(key: bytes | None, course: str, notebook: str, student: str,
                    expires: str | None, given: str | None, now: float | None = None) -> None:
    if not key:
        raise Refused("signed URLs are required but no LMS key is set")
    if not expires or not given:
        raise Refused("the URL is not signed")
    if not expires.isdigit() or len(expires) > 12:
        raise Refused("bad expiry in the signed URL")
    if int(expires) < (now or time.time()):
        raise Refused("the signed URL has expired")
    if not hmac.compare_digest(signature(key, course, notebook, student, int(expires)), given):
        raise Refused("bad signature")


def authorize(web: config.Web, key: bytes | None, course: str, notebook: str, student: str,
              referer: str | None, expires: str | None, given: str | None) -> None:
    """Raise Refused unless every check the configuration requires passes."""
    if web.require_referer:
        check_referer(web, referer)
    if web.require_signature:
        check_signature(key, course, notebook, student, expires, given)
