"""nbh-web: the front end the LMS's iframes talk to.

``GET /ipythonExercice/<course>/<notebook>/<student>`` (and the same under
``/notebookLazyCopy/``): check the names, authorize the request (a signed
URL, or in referer mode the LMS page and a long id), make sure
the student's server runs, copy the notebook if the student has none, and
redirect to it under ``/nb/<course>/<student>/`` with the server's token in
the URL, which works in a cross-site iframe without any cookie. When the
server takes longer than ``start_page_after`` to start, the student sees a
"starting" page that follows the start (server-sent events) and moves on.
A server that is not running is started only if the host can take it
(capacity.Admission): else a "come back in a few minutes" page (503).

Socket-activated (nbh-web.socket), run as the unprivileged account nbh; it
keeps no state that matters, so it can be restarted at any time without
touching a student's server.

Signed URLs and wait tickets are credentials: the logs name the path of a
request, never its query.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import json
import logging
import os
import socket
import sys
import syslog
import time
from urllib.parse import quote

import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.web
from pystemd import daemon

from . import access, capacity, config, courses, events, nofollow, tokens, workspace
from .names import BadName, Instance
from .systemd import Systemd, SystemdError

log = logging.getLogger("nbh-web")
access_log = logging.getLogger("tornado.access")
TICKET_TTL = 600
PROGRESS_EVERY = 0.5
# Entries are GETs: no request has a use for a body. nginx says the same
# (client_max_body_size), and lets no header block past 4 x 8 KiB through.
MAX_BODY_SIZE = 4096
MAX_HEADER_SIZE = 40 * 1024
# Seconds, for a student the host cannot take now (Retry-After).
RETRY_AFTER = 120


class Frontend:
    """What the handlers share: settings, keys, systemd, starts under way."""

    def __init__(self, settings: config.Config, secret: bytes, lms_key: bytes | None):
        self.settings = settings
        self.secret = secret
        self.lms_key = lms_key
        self._systemd: Systemd | None = None
        self._starts: dict[Instance, asyncio.Task] = {}
        self.admission = capacity.Admission(settings.limits)

    async def systemd(self) -> Systemd:
        if self._systemd is None or not self._systemd.bus.connected:
            self._systemd = await Systemd.connect()
        return self._systemd

    def start(self, instance: Instance) -> asyncio.Task:
        """One start per student, however many requests ask for it at once."""
        task = self._starts.get(instance)
        if task is None:
            task = asyncio.ensure_future(self._start(instance))
            self._starts[instance] = task
            task.add_done_callback(lambda _: self._starts.pop(instance, None))
        return task

    async def _start(self, instance: Instance) -> None:
        systemd = await self.systemd()
        state = await systemd.active_state(instance.service)
        # Running, and reachable through its socket: nothing to do (the warm path).
        if state == "active" and await systemd.active_state(instance.socket) == "active":
            return
        if state in ("active", "activating", "reloading"):  # counted already
            await systemd.start_instance(instance)
            return
        async with self.admission.admit(systemd, instance):
            await systemd.start_instance(instance)

    async def state(self, instance: Instance) -> str:
        state = await (await self.systemd()).state(instance.service)
        return f"{state.ActiveState}/{state.SubState}"

    def notebook_url(self, instance: Instance, notebook: str) -> str:
        token = tokens.instance_token(self.secret, instance)
        return f"{instance.base_url}notebooks/{quote(notebook)}?token={token}"

    # Tickets let the "starting" page follow the start without a cookie.
    def ticket(self, course: str, notebook: str, student: str) -> str:
        payload = base64.urlsafe_b64encode(json.dumps(
            [course, notebook, student, int(time.time()) + TICKET_TTL]).encode()).decode()
        return f"{payload}.{self._mac(payload)}"

    def read_ticket(self, ticket: str) -> tuple[str, str, str]:
        payload, _, mac = ticket.partition(".")
        if not hmac.compare_digest(self._mac(payload), mac):
            raise access.Refused("bad ticket")
        course, notebook, student, expires = json.loads(base64.urlsafe_b64decode(payload))
        if expires < time.time():
            raise access.Refused("expired ticket")
        return course, notebook, student

    def _mac(self, payload: str) -> str:
        return hmac.new(self.secret, b"ticket:" + payload.encode(), hashlib.sha256).hexdigest()


class HostBusy(tornado.web.HTTPError):
    """503 with Retry-After, and a page that says to come back."""

    def __init__(self, error: capacity.HostFull):
        if error.reason == "max_running":
            reason, self.explanation = "The host is full", "The host is full: try again in a few minutes."
        else:
            reason, self.explanation = ("The host is busy", "Too many new students are arriving at once: "
                                        "try again in a few minutes.")
        super().__init__(503, "%s", str(error), reason=reason)


class Handler(tornado.web.RequestHandler):
    """Pages for a student in an iframe: small, framable by the LMS, uncached."""

    @property
    def frontend(self) -> Frontend:
        return self.application.settings["frontend"]

    def set_default_headers(self) -> None:
        web = self.frontend.settings.web
        self.set_header("Content-Security-Policy", f"frame-ancestors {web.frame_ancestors}")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header("X-Content-Type-Options", "nosniff")

    def log_exception(self, typ, value, tb) -> None:
        """Tornado's own names the URI, query and all: here only the path."""
        where = f"{self.request.method} {self.request.path}"
        if isinstance(value, tornado.web.HTTPError):
            if value.log_message:
                message = value.log_message % value.args if value.args else value.log_message
                log.warning("%d %s: %s", value.status_code, where, message)
        else:
            log.error("uncaught exception in %s", where, exc_info=(typ, value, tb))

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        """Tornado's own puts the bytes in its message, which is logged."""
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise self.refuse(400, "Bad request", f"invalid UTF-8 in {name or 'the path'}") from None

    def prepare(self) -> None:
        if self.request.method != "GET":
            raise self.refuse(405, "Method not allowed", f"{self.request.method} {self.request.path}: "
                              "only GET")

    def write_error(self, status_code: int, **kwargs) -> None:
        error = kwargs.get("exc_info", (None, None))[1]
        if status_code == 405:
            self.set_header("Allow", "GET")
        if isinstance(error, HostBusy):
            self.set_header("Retry-After", str(RETRY_AFTER))
        self.set_header("Content-Type", "text/html; charset=utf-8")
        body = getattr(error, "explanation", self._reason)
        self.finish(page(f"{status_code} {self._reason}", html.escape(body), retry=status_code >= 500))

    def refuse(self, status: int, reason: str, log_message: str, **fields) -> tornado.web.HTTPError:
        """An HTTP error for the student, with its event in the journal."""
        events.refused(status, log_message, NBH_URL=self.request.path,
                       NBH_REFERER=self.request.headers.get("Referer"), **fields)
        return tornado.web.HTTPError(status, "%s", log_message, reason=reason)

    def entry(self, course: str, notebook: str, student: str) -> tuple[Instance, courses.Course, str]:
        """The pair and the notebook's path in the course, or an HTTP error."""
        try:
            instance = Instance(course, student)
            course_found = courses.load(course)
            path = courses.find_notebook(course_found, notebook)
        except BadName as error:
            raise self.refuse(400, "Bad name", str(error)) from None
        except courses.UnknownCourse as error:
            raise self.refuse(404, "Unknown course", str(error), NBH_COURSE=course) from None
        except courses.UnknownNotebook as error:
            raise self.refuse(404, "Unknown notebook", str(error), NBH_COURSE=course,
                              NBH_NOTEBOOK=notebook) from None
        except courses.CourseError as error:  # the operator's to mend, not the student's
            raise tornado.web.HTTPError(500, "%s", str(error), reason="This course is misconfigured") from None
        return instance, course_found, path

    async def open_notebook(self, instance: Instance, course: courses.Course, notebook: str) -> str:
        """After the start: the copy, the event, and where to go."""
        try:
            url = self.frontend.notebook_url(instance, notebook)
        except (OSError, tokens.TokenError) as error:  # the operator's to mend
            raise tornado.web.HTTPError(500, "%s", str(error), reason="Your server's token cannot be read") from None
        try:
            copied = await asyncio.get_running_loop().run_in_executor(
                None, workspace.copy_notebook, instance, course.path, notebook)
        except (nofollow.NotAFile, FileNotFoundError) as error:
            # Listed when the entry began, a link or gone now (a course update meanwhile).
            raise self.refuse(404, "Unknown notebook", f"{instance.path}: not copying {notebook}: {error}",
                              NBH_COURSE=instance.course, NBH_STUDENT=instance.student,
                              NBH_NOTEBOOK=notebook) from None
        except OSError as error:
            events.send("failure", instance, f"{instance.path}: cannot copy {notebook}: {error}",
                        NBH_NOTEBOOK=notebook, NBH_REASON=str(error))
            raise tornado.web.HTTPError(500, "%s", str(error), reason="Your notebook could not be copied") from None
        events.send("open", instance, f"{instance.path} opens {notebook}" + (" (copied)" if copied else ""),
                    NBH_NOTEBOOK=notebook, NBH_COPIED="yes" if copied else "no")
        return url

    def host_busy(self, instance: Instance, notebook: str, error: capacity.HostFull) -> HostBusy:
        """The host cannot take this student now: the page, and a `full` event."""
        events.send("full", instance, f"{instance.path} not started: {error}", priority=syslog.LOG_WARNING,
                    NBH_NOTEBOOK=notebook, NBH_STATUS="503", NBH_REASON=error.reason)
        return HostBusy(error)

    def start_failed(self, instance: Instance, notebook: str, error: Exception) -> tornado.web.HTTPError:
        events.send("failure", instance, f"{instance.path} could not start: {error}",
                    NBH_NOTEBOOK=notebook, NBH_REASON=str(error))
        return tornado.web.HTTPError(503, "%s", str(error), reason="Your notebook server could not start")


class EntryHandler(Handler):
    """The URL the LMS embeds."""

    async def get(self, course: str, notebook: str, student: str) -> None:
        instance, found, path = self.entry(course, notebook, student)
        web = self.frontend.settings.web
        try:
            access.authorize(web, self.frontend.lms_key, course, notebook, student,
                             self.request.headers.get("Referer"),
                             self.get_query_argument("expires", None), self.get_query_argument("signature", None))
        except access.Refused as error:
            raise self.refuse(403, "Not allowed", str(error), NBH_COURSE=course, NBH_STUDENT=student,
                              NBH_NOTEBOOK=notebook) from None
        start = self.frontend.start(instance)
        try:
            await asyncio.wait_for(asyncio.shield(start), web.start_page_after)
        except TimeoutError:
            ticket = self.frontend.ticket(course, path, student)
            self.finish(starting_page(f"/_nbh/wait?ticket={ticket}", self.request.uri))
            return
        except capacity.HostFull as error:
            raise self.host_busy(instance, path, error) from None
        except (SystemdError, OSError) as error:
            raise self.start_failed(instance, path, error) from None
        self.redirect(await self.open_notebook(instance, found, path))


class WaitHandler(Handler):
    """Server-sent events for the "starting" page: progress, then where to go."""

    async def get(self) -> None:
        try:
            course, notebook, student = self.frontend.read_ticket(self.get_query_argument("ticket"))
        except (access.Refused, ValueError, TypeError) as error:
            raise self.refuse(403, "Not allowed", f"wait: {error}") from None
        instance, found, path = self.entry(course, notebook, student)
        self.set_header("Content-Type", "text/event-stream")
        start, began = self.frontend.start(instance), time.monotonic()
        while not start.done():
            try:
                state = await self.frontend.state(instance)
            except SystemdError:
                state = "starting"
            await self.send("progress", {"state": state, "elapsed": round(time.monotonic() - began, 1)})
            await asyncio.wait([start], timeout=PROGRESS_EVERY)
        try:
            start.result()
        except capacity.HostFull as error:
            await self.send("failed", {"message": self.host_busy(instance, path, error).explanation})
        except (SystemdError, OSError) as error:
            self.start_failed(instance, path, error)
            await self.send("failed", {"message": "Your notebook server could not start."})
        else:
            try:
                url = await self.open_notebook(instance, found, path)
            except tornado.web.HTTPError as error:
                await self.send("failed", {"message": error.reason})
            else:
                await self.send("ready", {"url": url})
        self.finish()

    async def send(self, event: str, data: dict) -> None:
        self.write(f"event: {event}\ndata: {json.dumps(data)}\n\n")
        try:
            await self.flush()
        except tornado.iostream.StreamClosedError:
            pass  # the page went away; the start goes on for the next visit


class NotFoundHandler(Handler):
    def prepare(self) -> None:
        raise self.refuse(404, "Not found", f"no such page {self.request.path!r}")


STYLE = """body{font:16px/1.5 system-ui,sans-serif;margin:3em auto;max-width:36em;color:#222}
progress{width:100%}a{color:#0645ad}"""


def page(title: str, body: str, retry: bool = False, script: str = "") -> str:
    link = '<p><a href="" onclick="location.reload();return false">Try again</a></p>' if retry else ""
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><p>{body}</p>{link}"
            f"{script}</body></html>")


def starting_page(wait_url: str, entry_url: str) -> str:
    script = f"""<progress id=bar></progress><p id=state></p>
<script>
const events = new EventSource({json.dumps(wait_url)});
events.addEventListener("progress", e => {{
  const d = JSON.parse(e.data);
  document.getElementById("state").textContent = d.state + ", " + d.elapsed + " s";
}});
events.addEventListener("ready", e => {{ events.close(); location.replace(JSON.parse(e.data).url); }});
events.addEventListener("failed", e => {{
  events.close();
  document.getElementById("bar").remove();
  document.getElementById("state").innerHTML = JSON.parse(e.data).message +
    ' <a href={html.escape(json.dumps(entry_url))}>Try again</a>';
}});
</script>"""
    return page("Starting your notebook…", "Your own Jupyter server is starting; this takes a few seconds.",
                script=script)


NAME = r"[^/]+"


def log_request(handler: tornado.web.RequestHandler) -> None:
    """The access log: method, path without the query (signatures, tickets), status, time."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    access_log.log(level, "%d %s %s %.1fms", status, handler.request.method, handler.request.path,
                   1000 * handler.request.request_time())


def make_app(frontend: Frontend) -> tornado.web.Application:
    entry = rf"/(?:ipythonExercice|notebookLazyCopy)/({NAME})/(.+)/({NAME})/?"
    return tornado.web.Application(
        [(entry, EntryHandler), (r"/_nbh/wait", WaitHandler), (r".*", NotFoundHandler)],
        frontend=frontend, xsrf_cookies=False, compress_response=False, log_function=log_request,
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


if __name__ == "__main__":
    sys.exit(main())
