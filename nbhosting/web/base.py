"""What every nbh-web handler shares: the Frontend (settings, keys, systemd,
starts under way), the base handler (headers, error pages, logs that name a
path and never a query) and the page skeleton."""

from __future__ import annotations

import asyncio
import base64
import hmac
import html
import json
import logging
import os
import time
from urllib.parse import quote

import tornado.iostream
import tornado.web

from .. import access, capacity, config, courses, dormant, events, origins, prestart, tokens
from ..names import Instance
from ..systemd import Systemd

log = logging.getLogger("nbh-web")
TICKET_TTL = 600
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
        self._prestarts: set[asyncio.Task] = set()
        # (instance, notebook) -> when its kernel was asked for (time.monotonic()),
        # for web.prestart_timeout; oldest first, as they were asked.
        self._prestarted: dict[tuple[Instance, str], float] = {}
        self.admission = capacity.Admission(settings.limits)

    async def systemd(self) -> Systemd:
        if self._systemd is None or not self._systemd.bus.connected:
            self._systemd = await Systemd.connect()
        return self._systemd

    def start(self, instance: Instance) -> asyncio.Task:
        """One start per student, however many requests ask for it at once;
        each marks the student seen (before the start: dormant.put_to_sleep)."""
        try:
            dormant.mark_seen(instance)
        except OSError as error:  # the operator's to mend; not the student's entry
            log.error("cannot mark %s seen: %s", instance.path, error)
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
        # A new server: none of the kernels asked of the one before are in it.
        for key in [key for key in self._prestarted if key[0] == instance]:
            del self._prestarted[key]
        limits = await courses.limits_for_start(systemd, self.settings, instance)
        async with self.admission.admit(systemd, instance):
            await systemd.start_instance(instance, limits)

    def prestart(self, instance: Instance, notebook: str) -> None:
        """Start the notebook's kernel in the running server, not awaited:
        it starts while the browser loads the page (web.prestart_timeout).

        Asked once per notebook within the timeout: the kernel asked for is
        still there, adopted or waiting for its page, and a warm entry is
        spared a request to the server."""
        timeout = self.settings.web.prestart_timeout
        if not timeout:
            return
        now = time.monotonic()
        while self._prestarted:
            oldest, asked = next(iter(self._prestarted.items()))
            if asked > now - timeout:
                break
            del self._prestarted[oldest]
        if (instance, notebook) in self._prestarted:
            return
        self._prestarted[instance, notebook] = now
        task = asyncio.ensure_future(prestart.prestart(instance, self.secret, notebook, timeout))
        self._prestarts.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._prestarts.discard)

    async def state(self, instance: Instance) -> str:
        state = await (await self.systemd()).state(instance.service)
        return f"{state.ActiveState}/{state.SubState}"

    def notebook_url(self, instance: Instance, notebook: str, interface: str | None = None) -> str:
        """The notebook's page, in Notebook 7 or (interface "lab") JupyterLab."""
        token = tokens.instance_token(self.secret, instance)
        page = "lab/tree" if interface == "lab" else "notebooks"
        return f"{self.server_origin(instance)}{instance.base_url}{page}/{quote(notebook)}?token={token}"

    def server_origin(self, instance: Instance) -> str:
        """Where the pair's server answers: its own origin (web.student_origin,
        reached through a link made here), or "" for the site's."""
        web = self.settings.web
        if not web.student_origin:
            return ""
        key = tokens.origin_key(self.secret, instance)
        origins.link(instance, key)
        return web.student_url(key)

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
        return tokens.derive(self.secret, "ticket", payload.encode()).hex()


class HostBusy(tornado.web.HTTPError):
    """503 with Retry-After, and a page that says to come back."""

    def __init__(self, error: capacity.HostFull):
        if error.reason in ("max_running", "disk"):
            reason, self.explanation = "The host is full", "The host is full: try again in a few minutes."
        else:
            reason, self.explanation = ("The host is busy", "Too many new students are arriving at once: "
                                        "try again in a few minutes.")
        super().__init__(503, "%s", str(error), reason=reason)


PIECE = 256 << 10


class FilePieces:
    """The file, a piece at a time, no more than the size it had when opened
    (one rewritten meanwhile is cut, never longer than said). Its descriptor
    is closed at the end, or by close(), whether reading began or not (a
    generator's finally would not run if it never began)."""

    def __init__(self, fd: int, size: int):
        self.fd: int | None = fd
        self.left = size

    def __iter__(self) -> FilePieces:
        return self

    def __next__(self) -> bytes:
        piece = os.read(self.fd, min(PIECE, self.left)) if self.fd is not None and self.left > 0 else b""
        if not piece:
            self.close()
            raise StopIteration
        self.left -= len(piece)
        return piece

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


class BaseHandler(tornado.web.RequestHandler):
    """Small uncached pages; errors logged by path only, refusals as journal events."""

    allowed_methods: tuple[str, ...] = ("GET",)

    async def send_file(self, opened: tuple[int, int]) -> None:
        """A file (a descriptor and its size) as the body, a piece at a time,
        each sent before the next is read: as much memory for a slow reader as
        for a fast one. The descriptor is closed."""
        self.set_header("Content-Length", opened[1])
        pieces = FilePieces(*opened)
        loop = asyncio.get_running_loop()
        try:
            while piece := await loop.run_in_executor(None, next, pieces, b""):
                self.write(piece)
                await self.flush()
        except tornado.iostream.StreamClosedError:
            return  # the reader went away
        finally:
            pieces.close()
        self.finish()

    def start_events(self) -> None:
        """The answer is a stream of server-sent events, which nginx passes on
        as they come."""
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("X-Accel-Buffering", "no")

    async def send_event(self, event: str | None, data: object = None) -> bool:
        """One event, sent at once (None: a keep-alive comment); False when
        the reader went away."""
        self.write(f"event: {event}\ndata: {json.dumps(data)}\n\n" if event else ": alive\n\n")
        return await self.flushed()

    async def flushed(self) -> bool:
        """What was written, sent now; False when the reader went away."""
        try:
            await self.flush()
        except tornado.iostream.StreamClosedError:
            return False
        return True

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

    def write_error(self, status_code: int, **kwargs) -> None:
        error = kwargs.get("exc_info", (None, None))[1]
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods))
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

class NotFoundHandler(BaseHandler):
    def prepare(self) -> None:
        raise self.refuse(404, "Not found", f"no such page {self.request.path!r}")


STYLE = """body{font:16px/1.5 system-ui,sans-serif;margin:3em auto;max-width:36em;color:#222}
progress{width:100%}a{color:#0645ad}"""


def page(title: str, body: str, retry: bool = False, script: str = "") -> str:
    link = '<p><a href="" onclick="location.reload();return false">Try again</a></p>' if retry else ""
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><p>{body}</p>{link}"
            f"{script}</body></html>")
