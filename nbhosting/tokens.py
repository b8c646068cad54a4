"""Per-server secrets, derived from one host secret.

The front end and a student's unit agree on the server's token without
storing anything: it is an HMAC of the instance under the host secret, which
the unit gets as a systemd credential and the container never sees.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

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


def server_token(secret: bytes, instance_path: str) -> str:
    return hmac.new(secret, b"jupyter-token:" + instance_path.encode(), hashlib.sha256).hexdigest()


def create_secret(path: Path = SECRET_PATH, group_id: int = 0) -> bool:
    """Write a new random secret unless there is one; True when written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o440)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_hex(32) + "\n")
    os.chown(path, 0, group_id)
    return True
