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

from . import tokens
from .ask import AskError, get_json
from .names import Instance

log = logging.getLogger("nbh-web")


async def prestart(instance: Instance, secret: bytes, notebook: str, timeout: int) -> bool:
    """Ask for the notebook's kernel; whether one was started (False when the
    notebook has a session already, or names no kernel the server has). The
    server's answer is bounded as the cull's are: it runs a student's code."""
    try:
        answer = await get_json(instance, "nbh/prestart", tokens.instance_token(secret, instance), "POST",
                                {"path": notebook, "timeout": timeout})
    except AskError as error:  # 404: an image without nbh_prestart
        log.info("prestart %s: %s", instance.path, error)
        return False
    return isinstance(answer, dict) and answer.get("started") is True
