"""Notebook's page asks ``api/nbconvert`` for its "Save and Export Notebook
As" menu as it opens a notebook. Jupyter answers by importing nbconvert and
every exporter, 0.3 to 0.4 CPU second on the server's one thread, and the
page's request for the notebook itself waits behind it.

The answer depends only on the exporters installed (nbconvert's entry
points): the image computes it once, as it is built (``python -m
nbh_exporters``, in install), and this serves it from that file as long as
the same exporters are installed, which the first request checks (0.04
second). A course's image may add some: then, and without the file, Jupyter's
own handler answers.
"""

import json
import os
import sys
from importlib.metadata import entry_points

from jupyter_server.auth.decorator import authorized
from jupyter_server.services.nbconvert.handlers import NbconvertRootHandler
from jupyter_server.utils import url_path_join
from tornado import web

FILE = os.path.join(sys.prefix, "share", "nbhosting", "exporters.json")


def _jupyter_server_extension_points():
    return [{"module": "nbh_exporters"}]


def installed():
    """The exporters installed: name, class, and the distribution that has it."""
    return sorted([e.name, e.value, e.dist and e.dist.name, e.dist and e.dist.version]
                  for e in entry_points(group="nbconvert.exporters"))


def exporters():
    """What Jupyter's api/nbconvert answers, computed as it does."""
    from nbconvert.exporters import base

    answer = {}
    for name in base.get_export_names():
        try:
            answer[name] = {"output_mimetype": base.get_exporter(name).output_mimetype}
        except ValueError:
            continue
    return answer


def cached():
    """The image's answer, or None if it is missing or stale."""
    try:
        with open(FILE) as f:
            kept = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(kept, dict) or kept.get("installed") != installed():
        return None
    return kept.get("exporters")


class ExportersHandler(NbconvertRootHandler):
    answer = None  # the image's, once checked: json, or "" if it is missing or stale

    @web.authenticated
    @authorized
    async def get(self):
        cls = type(self)
        if cls.answer is None:
            kept = cached()
            cls.answer = json.dumps(kept) if isinstance(kept, dict) else ""
            self.log.info("nbh_exporters: api/nbconvert answered %s", "from " + FILE if cls.answer else
                          "by Jupyter: the image's list of exporters is missing or stale")
        if not cls.answer:
            return await super().get()
        self.finish(cls.answer)


def _load_jupyter_server_extension(serverapp):
    # Extensions' handlers come before Jupyter's own (tornado's add_handlers).
    serverapp.web_app.add_handlers(".*$", [(url_path_join(serverapp.base_url, "api/nbconvert"),
                                            ExportersHandler)])


if __name__ == "__main__":
    os.makedirs(os.path.dirname(FILE), exist_ok=True)
    with open(FILE + ".tmp", "w") as f:
        json.dump({"installed": installed(), "exporters": exporters()}, f)
    os.replace(FILE + ".tmp", FILE)
