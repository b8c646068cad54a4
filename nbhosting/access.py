"""Who may open a notebook: a URL the LMS signed, or (referer mode) its page.

A signed URL carries ``expires`` (Unix time) and ``signature``, the
HMAC-SHA256 under the key shared with the LMS of course, notebook (as in
the URL), student and expiry, one per line. Only the LMS has the key, so a
signed URL cannot be forged; a Referer can, by anyone, which is why referer
mode also asks for a student id long enough to be a secret.

Everything here comes from the request as it was sent: anything malformed
is refused (403), never an exception of another kind (500).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

from . import config, paths
from .lti import STUDENT_PREFIX, is_lti_student

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
    try:
        parts = urlsplit(referer)
    except ValueError:  # "http://[": an invalid IPv6 address
        raise Refused("malformed Referer") from None
    origin = f"{parts.scheme}://{parts.netloc}"
    if origin not in web.lms_origins:
        raise Refused(f"Referer {origin!r} is not an allowed LMS origin")


_EXPIRES = re.compile(r"[0-9]{1,12}")  # ASCII digits only: str.isdigit() accepts '²'
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


def check_signature(key: bytes | None, course: str, notebook: str, student: str,
                    expires: str | None, given: str | None, now: float | None = None) -> None:
    if not key:
        raise Refused("signed URLs are required but no LMS key is set")
    if not expires or not given:
        raise Refused("the URL is not signed")
    if not _EXPIRES.fullmatch(expires):
        raise Refused("bad expiry in the signed URL")
    if not _SIGNATURE.fullmatch(given):
        raise Refused("malformed signature")
    if int(expires) < (now or time.time()):
        raise Refused("the signed URL has expired")
    if not hmac.compare_digest(signature(key, course, notebook, student, int(expires)), given):
        raise Refused("bad signature")


def check_student_id(web: config.Web, student: str) -> None:
    if len(student) < web.min_student_id:
        raise Refused(f"student id shorter than web.min_student_id ({web.min_student_id}): "
                      "in referer mode, the id is what cannot be guessed")


def authorize(web: config.Web, key: bytes | None, course: str, notebook: str, student: str,
              referer: str | None, expires: str | None, given: str | None) -> None:
    """Raise Refused unless the entry is allowed in the configured mode.

    A URL that carries a signature is judged by it alone, in every mode: a
    bad one is refused even where a referer would have done.
    """
    if is_lti_student(student):  # theirs alone, so that no entry reaches an LTI student's workspace
        raise Refused(f"student names {STUDENT_PREFIX}* are those of LTI launches")
    if expires is not None or given is not None:
        check_signature(key, course, notebook, student, expires, given)
    elif web.auth == "referer":
        check_referer(web, referer)
        check_student_id(web, student)
    else:
        raise Refused("the URL is not signed (web.auth = 'signed')")
