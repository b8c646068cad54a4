"""The student's entry: the URL the LMS embeds, and the "starting" page.

``GET /ipythonExercice/<course>/<notebook>/<student>`` (and the same under
``/notebookLazyCopy/``): check the names, authorize the request (a signed
URL, or in referer mode the LMS page and a long id), make sure the student's
server runs, copy the notebook if the student has none, and redirect to it
under ``/nb/<course>/<student>/`` with the server's token in the URL, which
works in a cross-site iframe without any cookie. When the server takes
longer than ``start_page_after`` to start, the student sees a "starting"
page that follows the start (server-sent events) and moves on. A server
that is not running is started only if the host can take it
(capacity.Admission): else a "come back in a few minutes" page (503).
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import syslog
import time

import tornado.iostream
import tornado.web

from .. import access, capacity, courses, events, mappings, nofollow, tokens
from ..names import BadName, Instance, check_student
from ..systemd import SystemdError
from .base import BaseHandler, HostBusy, page

PROGRESS_EVERY = 0.5
log = logging.getLogger("nbh-web")


class StudentHandler(BaseHandler):
    """Pages for a student in an iframe: GET only (unless a subclass says
    otherwise), framable by the LMS."""

    def prepare(self) -> None:
        if self.request.method not in self.allowed_methods:
            raise self.refuse(405, "Method not allowed", f"{self.request.method} {self.request.path}: "
                              f"only {', '.join(self.allowed_methods)}")

    def entry(self, course: str, notebook: str, student: str) -> tuple[Instance, courses.Course, str]:
        """The pair and the notebook's path in the course, or an HTTP error."""
        try:
            instance = Instance(course, check_student(student))  # never a staff workspace
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
            url = self.frontend.notebook_url(instance, notebook, course.interface)
        except (OSError, tokens.TokenError) as error:  # the operator's to mend
            raise tornado.web.HTTPError(500, "%s", str(error), reason="Your server's token cannot be read") from None
        try:
            copied, unplaced = await asyncio.get_running_loop().run_in_executor(
                None, mappings.copy_with_neighbours, instance, course.path, notebook)
        except (nofollow.NotAFile, FileNotFoundError) as error:
            # Listed when the entry began, a link or gone now (a course update meanwhile).
            raise self.refuse(404, "Unknown notebook", f"{instance.path}: not copying {notebook}: {error}",
                              NBH_COURSE=instance.course, NBH_STUDENT=instance.student,
                              NBH_NOTEBOOK=notebook) from None
        except OSError as error:
            events.send("failure", instance, f"{instance.path}: cannot copy {notebook}: {error}",
                        NBH_NOTEBOOK=notebook, NBH_REASON=str(error))
            raise tornado.web.HTTPError(500, "%s", str(error), reason="Your notebook could not be copied") from None
        if unplaced:
            log.warning("%s: %s opens without its neighbours: %s", instance.path, notebook, unplaced)
        self.frontend.prestart(instance, notebook)
        events.send("open", instance, f"{instance.path} opens {notebook}" + (" (copied)" if copied else ""),
                    NBH_NOTEBOOK=notebook, NBH_COPIED="yes" if copied else "no")
        return url

    async def start_and_open(self, instance: Instance, course: courses.Course, notebook: str,
                             retry_url: str | None) -> None:
        """Start the server, then redirect to the notebook; or, if the start
        takes longer than start_page_after, the "starting" page, which
        follows it with a ticket and offers retry_url should it fail."""
        start = self.frontend.start(instance)
        try:
            await asyncio.wait_for(asyncio.shield(start), self.frontend.settings.web.start_page_after)
        except TimeoutError:
            ticket = self.frontend.ticket(instance.course, notebook, instance.student)
            self.finish(starting_page(f"/_nbh/wait?ticket={ticket}", retry_url))
            return
        except capacity.HostFull as error:
            raise self.host_busy(instance, notebook, error) from None
        except (SystemdError, OSError) as error:
            raise self.start_failed(instance, notebook, error) from None
        self.redirect(await self.open_notebook(instance, course, notebook))

    def host_busy(self, instance: Instance, notebook: str, error: capacity.HostFull) -> HostBusy:
        """The host cannot take this student now: the page, and a `full` event."""
        events.send("full", instance, f"{instance.path} not started: {error}", priority=syslog.LOG_WARNING,
                    NBH_NOTEBOOK=notebook, NBH_STATUS="503", NBH_REASON=error.reason)
        return HostBusy(error)

    def start_failed(self, instance: Instance, notebook: str, error: Exception) -> tornado.web.HTTPError:
        events.send("failure", instance, f"{instance.path} could not start: {error}",
                    NBH_NOTEBOOK=notebook, NBH_REASON=str(error))
        return tornado.web.HTTPError(503, "%s", str(error), reason="Your notebook server could not start")


class EntryHandler(StudentHandler):
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
        await self.start_and_open(instance, found, path, self.request.uri)


class WaitHandler(StudentHandler):
    """Server-sent events for the "starting" page: progress, then where to go."""

    async def get(self) -> None:
        try:
            course, notebook, student = self.frontend.read_ticket(self.get_query_argument("ticket"))
        except (access.Refused, ValueError, TypeError) as error:
            raise self.refuse(403, "Not allowed", f"wait: {error}") from None
        instance, found, path = self.entry(course, notebook, student)
        self.start_events()
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
        await self.send_event(event, data)  # the page may have gone: the start goes on for the next visit


def starting_page(wait_url: str, entry_url: str | None) -> str:
    """entry_url: where "Try again" leads after a failure; None for an entry
    that cannot be repeated from here (an LTI launch, which is a POST)."""
    again = (f"' <a href={html.escape(json.dumps(entry_url))}>Try again</a>'" if entry_url
             else "' Open it again from your course page.'")
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
    {again};
}});
</script>"""
    return page("Starting your notebook…", "Your own Jupyter server is starting; this takes a few seconds.",
                script=script)
