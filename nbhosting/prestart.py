"""The kernel is ready when the page is: as an entry redirects a student to a
notebook, nbh-web asks the student's server (on its own socket, with its
token) to start that notebook's kernel, while the browser loads Notebook's
page; Notebook then adopts that kernel instead of starting one
(images/jupyter/nbh_prestart.py). Never awaited by the entry: a server that
cannot pre-start (an older image, a notebook that names no kernel) costs
the student nothing, the page starts its kernel as before.
"""

from __future__ import annotations

import logging

import httpx

from . import tokens
from .cull import ASK_TIMEOUT, client
from .names import Instance

log = logging.getLogger("nbh-web")


async def prestart(instance: Instance, secret: bytes, notebook: str, timeout: int) -> bool:
    """Ask for the notebook's kernel; whether one was started (False when the
    notebook has a session already, or names no kernel the server has)."""
    headers = {"Authorization": f"token {tokens.instance_token(secret, instance)}"}
    try:
        async with client(instance) as http:
            response = await http.post(f"http://localhost{instance.base_url}nbh/prestart", headers=headers,
                                       json={"path": notebook, "timeout": timeout}, timeout=ASK_TIMEOUT)
    except (httpx.HTTPError, OSError) as error:
        log.warning("prestart %s: %s", instance.path, error or type(error).__name__)
        return False
    if response.status_code != 200:  # 404: an image without nbh_prestart
        log.info("prestart %s: answered %d", instance.path, response.status_code)
        return False
    try:
        return response.json().get("started") is True
    except (ValueError, AttributeError):
        return False
