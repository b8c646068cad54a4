"""Per-server secrets, derived from one host secret.

The front end and a student's unit agree on the server's token without
storing anything but a number: it is an HMAC of the instance and its
generation under the host secret, which the unit gets as a systemd
credential and the container never sees. ``nbh revoke`` bumps a pair's
generation, kept in ``tokens/<course>/<student>`` (absent means 0), so the
old token fails from the server's next start on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from . import files, paths
from .names import Instance

SECRET_PATH = Path("/etc/nbhosting/secret")
SECRET_CREDENTIAL = "nbh-secret"


def read_secret(path: Path = SECRET_PATH) -> bytes:
    """The host secret, from the unit's credential when there is one."""
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials:
        path = Path(credentials) / SECRET_CREDENTIAL
    secret = path.read_bytes().strip()
    if len(secret) < 32:
        raise ValueError(f"{path}: the host secret is shorter than 32 bytes")
    return secret


class TokenError(ValueError):
    """A generation file that is not a number: the message names it."""


_GENERATION = re.compile(r"[0-9]{1,18}")


# Every use of the host secret, by name: each is an HMAC of its label and a
# message, and no label begins another, so that no value made for one use
# passes for another's. Changing one changes what every running server,
# session or link holds.
LABELS = {
    "token": b"jupyter-token:",  # a server's token (server_token)
    "shared": b"shared-pages:",  # a pair's shared pages folder (share_id)
    "origin": b"origin:",  # a pair's own origin (origin_key)
    "notary": b"notary:",  # Jupyter's notebook signatures in a pair's server
    "ticket": b"ticket:",  # the front end's start tickets (web/base.py)
    "staff-cookies": b"nbhosting staff session cookies",  # web/staff.py
    "lti-state": b"nbh-lti-state",  # an LTI login's state (lti.py)
}


def derive(secret: bytes, use: str, message: bytes = b"") -> bytes:
    return hmac.new(secret, LABELS[use] + message, hashlib.sha256).digest()


def server_token(secret: bytes, instance_path: str, generation: int = 0) -> str:
    """Generation 0 is the token of servers made before revocation existed."""
    message = instance_path.encode()
    if generation:
        # no name holds a newline, so the message stays one-to-one
        message += b"\ngeneration:%d" % generation
    return derive(secret, "token", message).hex()


def generation_path(instance: Instance, tokens_dir: Path = paths.TOKENS_DIR) -> Path:
    return tokens_dir / instance.course / instance.student


def generation(instance: Instance, tokens_dir: Path = paths.TOKENS_DIR) -> int:
    """The pair's generation: 0 until it is first revoked."""
    path = generation_path(instance, tokens_dir)
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return 0
    if not _GENERATION.fullmatch(text):
        raise TokenError(f"{path}: not a token generation (a number): {text[:40]!r}")
    return int(text)


def instance_token(secret: bytes, instance: Instance) -> str:
    return server_token(secret, instance.path, generation(instance))


def _pair_id(secret: bytes, use: str, instance: Instance) -> str:
    """26 base32 letters (130 bits) of an HMAC of the pair for this use:
    stable, and no one can tell from it whose it is nor find another's."""
    digest = derive(secret, use, instance.path.encode())
    return base64.b32encode(digest[:16]).decode().lower()[:26]


def share_id(secret: bytes, instance: Instance) -> str:
    """The name of the pair's shared pages folder, in their addresses
    (/shared/<course>/<id>/<page>)."""
    return _pair_id(secret, "shared", instance)


def origin_key(secret: bytes, instance: Instance) -> str:
    """The first label of the pair's own origin (web.student_origin)."""
    return _pair_id(secret, "origin", instance)


def notary_secret(secret: bytes, instance: Instance) -> str:
    """The key of Jupyter's notebook signatures in the pair's server: the
    same at every start, so what the student ran stays trusted."""
    return derive(secret, "notary", instance.path.encode()).hex()


SHARE_ID_RE = re.compile(r"[a-z2-7]{26}")


def bump_generation(instance: Instance, group_id: int, tokens_dir: Path = paths.TOKENS_DIR) -> int:
    """Revoke the pair's token (root): the next generation, written aside then
    renamed, so a reader sees the old number or the new one, never half."""
    path = generation_path(instance, tokens_dir)
    for folder in (tokens_dir, path.parent):
        try:
            folder.mkdir(mode=0o750)
        except FileExistsError:
            continue
        os.chown(folder, 0, group_id)
        folder.chmod(0o750)  # whatever the umask
    new = generation(instance, tokens_dir) + 1
    files.replace_text(path, f"{new}\n", 0o640, owner=(0, group_id))
    return new


def replace_secret(path: Path = SECRET_PATH, group_id: int = 0) -> None:
    """A new random secret, written aside then renamed: readers see the old
    one or the new one, whole."""
    files.replace_text(path, secrets.token_hex(32) + "\n", 0o440, owner=(0, group_id))


def create_secret(path: Path = SECRET_PATH, group_id: int = 0, content: str | None = None) -> bool:
    """Write a new random secret (or this one, a key) unless there is one; True when written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o440)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_hex(32) + "\n" if content is None else content)
    os.chown(path, 0, group_id)
    return True
