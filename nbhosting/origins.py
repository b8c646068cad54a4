"""Per-student origins (web.student_origin): each pair's server on a host
name of its own, ``<key>.<domain>``, where key is tokens.origin_key.

nginx cannot compute a key, so the front end leaves it a way from the key
to the pair: at each entry, ``/run/nbhosting/keys/<key>.sock``, a symbolic
link to the pair's listening socket. nginx's per-student server connects
there, whatever the path asked: a page on one pair's origin reaches no other
pair's server, and a key no entry made leads nowhere (503).

In this mode the site's own origin serves no student's server: nginx
answers its /nb/ with 404 while MODE_FLAG exists, which `nbh setup` writes
or removes after the configuration, and nbh-web checks at start.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import config, paths
from .names import Instance

KEYS_DIR = Path(os.environ.get("NBH_KEYS_DIR", "/run/nbhosting/keys"))
MODE_FLAG = paths.CONF_DIR / "student-origins"
FLAG_TEXT = """\
# Written by `nbh setup`: web.student_origin is set, and nginx serves the
# students' servers on their own origins only, none under the site's /nb/.
"""


class ModeMismatch(ValueError):
    pass


def link(instance: Instance, key: str) -> None:
    """Make the key lead to the pair's socket (idempotent, atomic)."""
    path = KEYS_DIR / f"{key}.sock"
    target = instance.listen_socket
    try:
        if os.readlink(path) == target:
            return
    except FileNotFoundError:
        pass
    temporary = KEYS_DIR / f".{key}.{os.getpid()}"
    temporary.unlink(missing_ok=True)
    os.symlink(target, temporary)
    os.replace(temporary, path)


def write_mode(web: config.Web) -> bool:
    """MODE_FLAG as the configuration says (`nbh setup`); True if it changed."""
    if web.student_origin:
        if MODE_FLAG.exists():
            return False
        MODE_FLAG.write_text(FLAG_TEXT)
        return True
    if not MODE_FLAG.exists():
        return False
    MODE_FLAG.unlink()
    return True


def check_mode(web: config.Web) -> None:
    """nbh-web's check at start: nginx's mode is the configuration's."""
    if bool(web.student_origin) != MODE_FLAG.exists():
        state = "is set" if web.student_origin else "is not set"
        raise ModeMismatch(f"web.student_origin {state}, but {MODE_FLAG} says otherwise: run `nbh setup`")
