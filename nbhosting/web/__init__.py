"""nbh-web: the front end the LMS's iframes talk to.

One module per part of the site: ``entry`` (the student's entry URL and
its "starting" page); ``lti`` (LTI 1.3 launches); ``shared`` (the students'
shared pages); ``staff`` (the staff pages) and ``stats`` (their statistics);
``base`` (what every handler shares). Each gives its routes; this module
puts them together in one application, and serves it.

Socket-activated (nbh-web.socket), run as the unprivileged account nbh; it
keeps no state that matters, so it can be restarted at any time without
touching a student's server.

Signed URLs and wait tickets are credentials: the logs name the path of a
request, never its query.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys

import tornado.httpserver
import tornado.netutil
import tornado.web
from pystemd import daemon

from .. import access, config, origins, tokens
from . import lti, staff, stats
from .base import Frontend, NotFoundHandler
from .entry import EntryHandler, WaitHandler
from .shared import SharedPageHandler

log = logging.getLogger("nbh-web")
access_log = logging.getLogger("tornado.access")
# Entries are GETs: no request has a use for a body but an LTI launch's,
# which raises its own limit (web/lti.py). nginx says the same
# (client_max_body_size), and lets no header block past 4 x 8 KiB through.
MAX_BODY_SIZE = 4096
MAX_HEADER_SIZE = 40 * 1024

NAME = r"[^/]+"


def log_request(handler: tornado.web.RequestHandler) -> None:
    """The access log: method, path without the query (signatures, tickets), status, time."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    access_log.log(level, "%d %s %s %.1fms", status, handler.request.method, handler.request.path,
                   1000 * handler.request.request_time())


def make_app(frontend: Frontend) -> tornado.web.Application:
    entry = rf"/(?:ipythonExercice|notebookLazyCopy)/({NAME})/(.+)/({NAME})/?"
    # LTI 1.3 launches (web/lti.py), beside the entry URLs
    lti_routes = [(r"/lti/login", lti.LoginHandler), (r"/lti/launch", lti.LaunchHandler),
                  (r"/lti/jwks", lti.JwksHandler)]
    # The staff pages (web/staff.py, web/stats.py): sessions, and CSRF checked
    # by their own handlers, not here, so that the students' entry needs no cookie.
    staff_routes = [*staff.routes(), *stats.routes(), (r"/staff/.*", staff.StaffNotFoundHandler)]
    return tornado.web.Application(
        [(entry, EntryHandler), (r"/_nbh/wait", WaitHandler), *lti_routes, *staff_routes,
         (rf"/shared/({NAME})/({NAME})/({NAME})", SharedPageHandler), (r".*", NotFoundHandler)],
        frontend=frontend, lti=lti.LtiTool(frontend),
        xsrf_cookies=False, compress_response=False, log_function=log_request,
        **staff.settings(frontend.settings, frontend.secret),
    )


def warn_about_mode(web: config.Web, lms_key: bytes | None) -> None:
    """What an operator must know of the mode, once, at start."""
    if web.auth == "referer":
        log.warning("web.auth = 'referer': an entry with an allowed Referer (which any client can "
                    "forge) and a student id of %d or more characters opens that student's notebook; "
                    "this trusts the ids' secrecy (use signed URLs where the LMS can)", web.min_student_id)
    if not lms_key:
        log.warning("no LMS key in %s: signed URLs are refused%s", access.LMS_KEY_PATH,
                    ", and so is every entry" if web.auth == "signed" else "")


def listening_sockets() -> list[socket.socket]:
    """The sockets systemd passes (nbh-web.socket); else $NBH_WEB_LISTEN."""
    count = daemon.listen_fds()
    if count:
        sockets = [socket.socket(fileno=daemon.LISTEN_FDS_START + i) for i in range(count)]
        for listening in sockets:
            listening.setblocking(False)  # Tornado accepts until EAGAIN
        return sockets
    path = os.environ.get("NBH_WEB_LISTEN", "/run/nbhosting/web.sock")
    return [tornado.netutil.bind_unix_socket(path, mode=0o666)]


async def serve() -> None:
    settings = config.load()
    secret = tokens.read_secret()
    try:
        lms_key = access.read_key()
    except FileNotFoundError:
        lms_key = None
    warn_about_mode(settings.web, lms_key)
    origins.check_mode(settings.web)
    frontend = Frontend(settings, secret, lms_key)
    await frontend.systemd()
    server = tornado.httpserver.HTTPServer(make_app(frontend), xheaders=True, max_body_size=MAX_BODY_SIZE,
                                           max_header_size=MAX_HEADER_SIZE)
    server.add_sockets(listening_sockets())
    daemon.notify(False, "READY=1")
    log.info("nbh-web ready")
    await asyncio.Event().wait()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        asyncio.run(serve())
    except (OSError, ValueError) as error:  # config.ConfigError is a ValueError
        print(f"nbh-web: {error}", file=sys.stderr)
        return 1
    return 0

