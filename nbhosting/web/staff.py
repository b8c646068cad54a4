"""The staff pages, under /staff/: courses, their settings, updates and
builds with their live output, their students, and a staff member's own
notebook server.

Every page needs a session (else the login page) that may act on the
course (else 403); every POST carries Tornado's CSRF token (else 403); no
page may be framed. Handlers are thin: they call what ``nbh course`` and
``nbh staff`` call (courses, courseunits, staff), and every action is a
journal event naming the staff member (NBH_STAFF=).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import secrets
import syslog
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote, urlencode, urljoin, urlsplit

import tornado.iostream
import tornado.web

from .. import (ask, capacity, config, courses, courseunits, cull, disks, events, lifecycle, lti, ltinames,
               mappings, nofollow, paths, render, shares, staff, tokens, workspace)
from ..names import (STAFF_PREFIX, BadName, Instance, check_course, check_notebook, check_workspace, escape,
                     staff_workspace)
from ..systemd import RUNNING_STATES, AccessDenied, SystemdError
from .base import BaseHandler, FilePieces

log = logging.getLogger("nbh-web")
COOKIE = "nbh_staff"
LOGIN = "/staff/login"
TEMPLATES = Path(__file__).parent / "templates"
_INVOCATION = re.compile(r"[0-9a-f]{32}")
# An event stream says it is alive this often (nginx and browsers drop silent ones).
KEEPALIVE = 15


def cookie_secret(secret: bytes) -> str:
    """The session cookies' key, derived from the host secret."""
    return tokens.derive(secret, "staff-cookies").hex()


class StaffSite:
    """What the staff handlers share: accounts, sessions, login attempts."""

    def __init__(self, settings: config.Staff):
        self.settings = settings
        self.accounts = staff.AccountsFile()
        self.sessions = staff.Sessions(settings.session_lifetime)
        self.names = ltinames.CourseNames()
        self.limiter = staff.LoginLimiter(settings)
        self.verifier = staff.Verifier()


class StaffHandler(BaseHandler):
    """A /staff/ page: a session or the login page, CSRF on POST, never framed."""

    login_required = True

    @property
    def site(self) -> StaffSite:
        return self.application.settings["staff"]

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.nonce = secrets.token_urlsafe(16)
        # form-action: "Open" redirects to the notebook, on the students' origin
        # (the site's, or in the per-student mode, any pair's: "*.<domain>")
        web = self.frontend.settings.web
        students = " ".join(filter(None, (web.public_url, web.student_url("*"))))
        self.set_header("Content-Security-Policy", (
            f"default-src 'none'; style-src 'nonce-{self.nonce}'; script-src 'nonce-{self.nonce}'; "
            f"connect-src 'self'; img-src 'self'; form-action 'self' {students}; base-uri 'none'; "
            "frame-ancestors 'none'"))
        self.set_header("X-Frame-Options", "DENY")

    def get_current_user(self) -> staff.Account | None:
        days = self.site.settings.session_lifetime / 86400
        return self.site.sessions.account(self.get_signed_cookie(COOKIE, max_age_days=days), self.site.accounts)

    @property
    def account(self) -> staff.Account:
        return self.current_user

    def prepare(self) -> None:
        if self.request.method not in ("GET", "POST"):
            raise tornado.web.HTTPError(405, "%s %s", self.request.method, self.request.path)
        self.check_origin()
        if self.login_required and not self.current_user:
            # Nothing done, whatever was asked: to the login page, and back after.
            target = self.request.path if self.request.method == "GET" else "/staff/"
            self.redirect(f"{LOGIN}?{urlencode({'next': target})}", status=303)
            return
        if self.request.method == "POST":
            self.check_xsrf_cookie()

    def check_origin(self) -> None:
        """The staff pages answer on their own origin only (web.staff_url, where
        nginx serves no student's server), and take a browser's POST from it
        only: a script of a student's server or of a course's notebook, on the
        students' origin (same-site or not), acts on nothing here."""
        staff_host = urlsplit(self.frontend.settings.web.staff_origin).hostname
        if self.request.host_name != staff_host:
            raise tornado.web.HTTPError(404, "staff page %s asked on %s, not on web.staff_url",
                                        self.request.path, self.request.host_name, reason="Not found")
        origin = self.request.headers.get("Origin")  # every browser sends it with a POST
        if self.request.method == "POST" and origin is not None and urlsplit(origin).hostname != staff_host:
            raise tornado.web.HTTPError(403, "POST %s from the origin %r", self.request.path, origin[:100],
                                        reason="Not from the staff pages")

    def write_error(self, status_code: int, **kwargs) -> None:
        if status_code == 405:
            self.set_header("Allow", "GET, POST")
        error = kwargs.get("exc_info", (None, None))[1]
        if isinstance(error, RetryLater):
            self.set_header("Retry-After", str(error.seconds))
        self.render("staff/error.html", title=f"{status_code} {self._reason}",
                    message=getattr(error, "explanation", None) or self._reason)

    def get_template_namespace(self) -> dict:
        namespace = super().get_template_namespace()
        namespace.update(account=self.current_user, nonce=self.nonce, when=when, size=size,
                         duration=config.duration_text, quote=quote, url_query=url_query, page_size=STUDENTS_PAGE)
        return namespace

    def event(self, event: str, message: str, course: str | None = None, **fields) -> None:
        events.staff(event, self.account.name, f"{self.account.name}: {message}", NBH_COURSE=course, **fields)

    def course(self, name: str) -> courses.Course:
        """The course, if this account may manage it; 403 for others' and for
        unknown ones alike (a course's existence is no one else's business)."""
        try:
            found = courses.load(check_course(name))
        except (BadName, courses.UnknownCourse, courses.CourseError) as error:
            found, why = None, str(error)
        if found is not None and self.account.may_manage(found):
            return found
        if found is None and self.account.admin:
            raise tornado.web.HTTPError(404, "%s", why, reason="No such course")
        self.refused(NBH_COURSE=name)
        raise tornado.web.HTTPError(403, "%s may not manage %r", self.account.name, name,
                                    reason="Not one of your courses")

    def course_of_run(self, name: str, action: str) -> courses.Course | SimpleNamespace:
        """The course whose run is shown; a deletion's or a rename's, to
        admins only, once the course is gone too (its name is all the page
        needs; a rename's is OLD:NEW, as its unit's instance)."""
        if action not in ("delete", "rename"):
            return self.course(name)
        self.require_admin()
        try:
            if action == "rename":
                lifecycle.parse_rename_instance(name)
                return SimpleNamespace(name=name)
            return self.course(name)
        except BadName as error:
            raise tornado.web.HTTPError(400, "%s", str(error), reason="Bad course name") from None
        except tornado.web.HTTPError:
            try:
                return SimpleNamespace(name=check_course(name))
            except BadName as error:
                raise tornado.web.HTTPError(400, "%s", str(error), reason="Bad course name") from None

    def refused(self, **fields) -> None:
        events.staff("staff-refused", self.account.name, f"{self.account.name}: refused {self.request.method} "
                     f"{self.request.path}", priority=syslog.LOG_NOTICE, NBH_STATUS="403", **fields)

    def require_admin(self) -> None:
        if not self.account.admin:
            self.refused()
            raise tornado.web.HTTPError(403, "%s is not an admin", self.account.name, reason="Admins only")


class RetryLater(tornado.web.HTTPError):
    def __init__(self, seconds: int):
        self.seconds = seconds
        self.explanation = f"Too many wrong passwords: try again in {seconds} s."
        super().__init__(429, "login attempts: retry in %d s", seconds, reason="Too many attempts")


# -- helpers of the templates ------------------------------------------------------

def when(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch)) if epoch else "-"


def size(value: int | None) -> str:
    return "" if value is None else config.size_text(value)


# -- logging in and out ------------------------------------------------------------

def safe_next(target: str | None) -> str:
    """Back to a staff page only: never another site (//host) or path."""
    if target and target.startswith("/staff/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/staff/"


class LoginHandler(StaffHandler):
    login_required = False

    def get(self) -> None:
        self.render("staff/login.html", next=safe_next(self.get_query_argument("next", None)), message=None)

    async def post(self) -> None:
        name = self.get_body_argument("name", "")[:64]
        password = self.get_body_argument("password", "")
        address = self.request.remote_ip
        wait = self.site.limiter.retry_after(address, name)
        if wait:
            events.staff("staff-login-failed", name, f"login of {name!r} refused: too many attempts",
                         priority=syslog.LOG_WARNING, NBH_ADDRESS=address, NBH_STATUS="429")
            raise RetryLater(wait)
        account = self.site.accounts.get(name)
        try:
            right = await self.site.verifier.verify(account, password)
        except staff.VerifierBusy as error:
            events.staff("staff-login-failed", name, f"login of {name!r} refused: {error}",
                         priority=syslog.LOG_WARNING, NBH_ADDRESS=address, NBH_STATUS="503")
            raise tornado.web.HTTPError(503, "%s", str(error), reason="Too many logins at once") from None
        if not right:
            self.site.limiter.failed(address, name)
            events.staff("staff-login-failed", name, f"login of {name!r} failed: wrong name or password",
                         priority=syslog.LOG_WARNING, NBH_ADDRESS=address, NBH_STATUS="403")
            self.set_status(403)
            self.render("staff/login.html", next=safe_next(self.get_body_argument("next", None)),
                        message="Wrong name or password.")
            return
        self.site.limiter.succeeded(address, name)
        self.set_signed_cookie(COOKIE, self.site.sessions.begin(account), expires_days=None,
                               max_age=self.site.settings.session_lifetime, path="/staff/", httponly=True,
                               samesite="Strict", secure=self.request.protocol == "https")
        events.staff("staff-login", name, f"{name} logged in", NBH_ADDRESS=address)
        self.redirect(safe_next(self.get_body_argument("next", None)), status=303)


class LogoutHandler(StaffHandler):
    def post(self) -> None:
        self.site.sessions.end(self.get_signed_cookie(COOKIE))
        self.clear_cookie(COOKIE, path="/staff/")
        self.event("staff-logout", "logged out")
        self.redirect(LOGIN, status=303)


# -- courses -------------------------------------------------------------------------

def _workspaces(course: str) -> list[os.DirEntry]:
    """The course's students' and staff's workspace folders: one scan."""
    try:
        with os.scandir(paths.WORKSPACES_DIR / course) as entries:
            return [entry for entry in entries if entry.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []


def enrolled(course: str) -> list[tuple[str, float]]:
    """Each workspace, and when it last changed (a copy, a save)."""
    return sorted((entry.name, entry.stat(follow_symlinks=False).st_mtime) for entry in _workspaces(course))


def students_enrolled(course: str) -> int:
    return sum(not entry.name.startswith(STAFF_PREFIX) for entry in _workspaces(course))


@dataclass
class CourseRow:
    course: courses.Course
    status: courses.CourseStatus
    notebooks: int
    enrolled: int
    running: int


class CourseListHandler(StaffHandler):
    async def get(self) -> None:
        systemd = await self.frontend.systemd()
        running: dict[str, int] = {}
        for unit in await systemd.running_instances():
            course = Instance.from_unit(unit).course
            running[course] = running.get(course, 0) + 1
        rows = []
        for course in courses.all_courses():
            if self.account.may_manage(course):
                rows.append(CourseRow(course, courses.status(course), len(courses.notebooks(course)),
                                      students_enrolled(course.name), running.get(course.name, 0)))
        self.render("staff/courses.html", rows=rows)


@dataclass
class StudentRow:
    name: str
    state: str
    changed: float | None  # the workspace folder's last change (a copy, a save)
    known_as: str = ""  # the name an LTI launch gave (ltinames.py)

    @property
    def running(self) -> bool:
        return self.state.split("/")[0] in RUNNING_STATES


async def students(handler: StaffHandler, course: str) -> list[StudentRow]:
    """Every workspace of the course with its server's state: one D-Bus call
    (ListUnitsByPatterns) for all of them, however many are enrolled."""
    loop = asyncio.get_running_loop()
    scan = loop.run_in_executor(None, enrolled, course)  # off the loop, meanwhile
    known_as = loop.run_in_executor(None, handler.site.names.of, course)
    systemd = await handler.frontend.systemd()
    pattern = f"nbh-jupyter@{escape(course)}-*.service"  # systemd matches with FNM_NOESCAPE
    # Only the servers that are not inactive: with thousands enrolled, their
    # loaded units are mostly inactive, and not worth a parse each.
    states = {Instance.from_unit(unit).student: f"{active}/{sub}"
              for unit, active, sub in await systemd.list_units([pattern], [*RUNNING_STATES, "failed"])}
    known = await known_as
    return [StudentRow(name, states.get(name, "inactive/dead"), changed, known.get(name, ""))
            for name, changed in await scan]


class IdleHandler(StaffHandler):
    """How idle each running server of the course is, as `nbh cull` asks it:
    server-sent events, one per server as it answers, so that the course
    page does not wait for them (its script fills them in)."""

    async def get(self, name: str) -> None:
        course = self.course(name)
        systemd = await self.frontend.systemd()
        pattern = f"nbh-jupyter@{escape(course.name)}-*.service"
        running = [Instance.from_unit(unit) for unit, _, sub in await systemd.list_units([pattern], ["active"])
                   if sub == "running"]
        self.start_events()
        limit = asyncio.Semaphore(cull.AT_ONCE)

        async def idle_of(instance: Instance) -> tuple[Instance, float | None]:
            async with limit:
                try:
                    return instance, (await cull.activity(instance, self.frontend.secret)).idle
                except (ask.AskError, OSError, ValueError):
                    return instance, None

        for answer in asyncio.as_completed([idle_of(instance) for instance in running]):
            instance, idle = await answer
            if not await self.send_event("idle", {"student": instance.student, "idle": config.duration_text(idle)}):
                return
        await self.send_event("done", {})
        self.finish()


def notebook_tree(names: list[str]) -> list[tuple[int, str, str | None]]:
    """The notebooks as a tree, in rows of (depth, name, notebook path or None for a folder)."""
    rows, shown = [], set()
    for name in names:  # sorted: a folder's notebooks come together
        parts = name.split("/")
        for depth in range(len(parts) - 1):
            folder = "/".join(parts[:depth + 1])
            if folder not in shown:
                shown.add(folder)
                rows.append((depth, parts[depth] + "/", None))
        rows.append((len(parts) - 1, parts[-1], name))
    return rows


# Students shown on a course's page at a time.
STUDENTS_PAGE = 100


@dataclass
class StudentPage:
    rows: list[StudentRow]  # this page's
    enrolled: int  # the course's students (staff workspaces left out)
    found: int  # the workspaces that match the search
    first: int  # index of rows[0] among them
    query: str


def url_query(q: str, from_: int) -> str:
    """A student list page's query: the search, and where the page begins."""
    return urlencode({key: value for key, value in (("q", q), ("from", max(0, from_))) if value})


def student_page(rows: list[StudentRow], query: str, first: int, lti_names: set[str]) -> StudentPage:
    """The rows whose name, or name as people know it (LTI), holds the
    query (any case), or that an LTI platform gives the student whose LMS
    id is the query (lti_names), a page of them from `first`."""
    needle = query.strip().lower()
    found = [row for row in rows if not needle or needle in row.name.lower() or row.name in lti_names
             or needle in row.known_as.lower()]
    first = max(0, min(first, (len(found) - 1) // STUDENTS_PAGE * STUDENTS_PAGE)) // STUDENTS_PAGE * STUDENTS_PAGE
    return StudentPage(found[first:first + STUDENTS_PAGE], sum(not row.name.startswith(STAFF_PREFIX) for row in rows),
                       len(found), first, query.strip())


def lti_names_of(query: str) -> set[str]:
    """The names that the registered platforms give the student the LMS calls `query`."""
    query = query.strip()
    if not query:
        return set()
    try:
        return {lti.student_name(platform, query) for platform in lti.all_platforms(removed=True)}
    except (OSError, ValueError):
        return set()


class CourseHandler(StaffHandler):
    async def get(self, name: str) -> None:
        await self.show(self.course(name))

    async def show(self, course: courses.Course, message: str | None = None, form: dict | None = None) -> None:
        query = self.get_query_argument("q", "")[:200]
        try:
            first = int(self.get_query_argument("from", "0"))
        except ValueError:
            raise tornado.web.HTTPError(400, "from: not a number", reason="Bad page") from None
        page = student_page(await students(self, course.name), query, first, lti_names_of(query))
        self.render("staff/course.html", course=course, status=courses.status(course),
                         tree=notebook_tree(courses.notebooks(course)), students=page,
                         settings=form or courses.setting_texts(course), message=message,
                         settings_keys=courses.SETTINGS, own=staff_workspace(self.account.name))


class SettingsHandler(CourseHandler):
    async def post(self, name: str) -> None:
        course = self.course(name)
        form = {key: self.get_body_argument(key, "") for key in courses.SETTINGS}
        if not self.account.admin:
            form["staff"] = courses.setting_texts(course)["staff"]  # grants are the admins'
        try:
            values = {key: courses.parse_setting(key, text) for key, text in form.items()}
            changed = {key: value for key, value in values.items() if value != getattr(course, key)}
            if not self.account.admin:
                site = self.frontend.settings
                courses.staff_may_set(changed, site.limits.images,
                                      courses.parse_setting("memory_max", site.limits.memory_max),
                                      courses.parse_setting("cpu_quota", site.limits.cpu_quota),
                                      site.cull.idle_timeout,
                                      site.limits.disk_max_bytes)
            if changed:
                course = courses.change(name, **changed)
        except courses.CourseError as error:
            self.set_status(400)
            log.warning("400 POST %s: %s", self.request.path, error)
            await self.show(course, message=str(error), form=form)
            return
        if changed:
            self.event("staff-settings", f"changed {', '.join(sorted(changed))} of {name}", name,
                       NBH_SETTINGS=json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in changed.items()}))
        self.redirect(f"/staff/courses/{name}#settings", status=303)


class NewCourseHandler(StaffHandler):
    def get(self) -> None:
        self.require_admin()
        self.render("staff/new.html", form={}, message=None)

    async def post(self) -> None:
        self.require_admin()
        form = {key: self.get_body_argument(key, "").strip() for key in ("name", "git_url", "branch")}
        try:
            course = courses.register(check_course(form["name"]), form["git_url"], form["branch"] or None)
        except (BadName, courses.CourseError) as error:
            self.set_status(400)
            log.warning("400 POST %s: %s", self.request.path, error)
            self.render("staff/new.html", form=form, message=str(error))
            return
        self.event("staff-create", f"created course {course.name} from {course.git_url}", course.name,
                   NBH_GIT_URL=course.git_url)
        await start_run(self, "update", course.name)


async def start_run(handler: StaffHandler, action: str, course: str, instance: str | None = None) -> None:
    """Start the course's unit (nbh-course-<action>@<instance or course>),
    and go to the page that follows its output."""
    instance = instance or course
    try:
        run = await courseunits.start(await handler.frontend.systemd(), action, instance)
    except AccessDenied as error:
        raise tornado.web.HTTPError(403, "%s", str(error), reason="Not allowed to start that unit") from None
    except SystemdError as error:
        raise tornado.web.HTTPError(503, "%s", str(error), reason=f"The {action} could not start") from None
    handler.event(f"staff-{action}", f"started {run.unit}", course, NBH_UNIT=run.unit,
                  NBH_INVOCATION=run.invocation)
    handler.redirect(f"/staff/courses/{instance}/{action}?{urlencode({'invocation': run.invocation})}", status=303)


class ActionHandler(StaffHandler):
    """update, build, delete, rename: POST starts the unit; GET shows a run's output (live or finished)."""

    async def post(self, name: str, action: str) -> None:
        course = self.course(name)
        instance = None
        if action == "delete":
            self.require_admin()
            if self.get_body_argument("confirm", "") != course.name:
                raise tornado.web.HTTPError(400, "confirm is not %r", course.name,
                                            reason="Type the course's name to delete it")
        elif action == "rename":
            self.require_admin()
            try:
                instance = lifecycle.rename_instance(course.name, self.get_body_argument("new_name", "").strip())
            except BadName as error:
                raise tornado.web.HTTPError(400, "%s", str(error), reason=f"Not a new name: {error}") from None
        if action in ("delete", "rename"):
            await self.stop_servers_if_asked(course)
        await start_run(self, action, course.name, instance)

    async def stop_servers_if_asked(self, course: courses.Course) -> None:
        """With "stop its servers first" (the units refuse while one runs)."""
        if self.get_body_argument("force", "") == "yes":
            stopped = await lifecycle.stop_servers(await self.frontend.systemd(), course.name)
            self.event("staff-stop", f"stopped the {len(stopped)} servers of {course.name} "
                       f"to {self.path_args[1]} it", course.name)

    def get(self, name: str, action: str) -> None:
        course = self.course_of_run(name, action)
        invocation = self.get_query_argument("invocation", "")
        query = f"?{urlencode({'invocation': invocation})}" if _INVOCATION.fullmatch(invocation) else ""
        self.render("staff/run.html", course=course, action=action, unit=courseunits.unit_name(action, name),
                         events_url=f"/staff/courses/{name}/{action}/events{query}",
                         log_url=f"/staff/courses/{name}/{action}/log{query}")


class RunOutputHandler(StaffHandler):
    """A run's output from its journal, live until it ends, then its outcome:
    server-sent events for the page, or plain text (which a browser shows as
    it comes, without JavaScript)."""

    async def get(self, name: str, action: str, form: str) -> None:
        self.course_of_run(name, action)
        invocation = self.get_query_argument("invocation", "")
        if invocation and not _INVOCATION.fullmatch(invocation):
            raise tornado.web.HTTPError(400, "bad invocation id", reason="Bad invocation id")
        if invocation:
            run = courseunits.Run(courseunits.unit_name(action, name), invocation)
        else:
            run = await asyncio.get_running_loop().run_in_executor(None, courseunits.last_run, action, name)
        if form == "events":
            self.start_events()
        else:
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.set_header("X-Accel-Buffering", "no")
        if run is None:
            await self.send("done", {"ok": False, "message": f"no {action} has run yet"})
            self.finish()
            return
        lines = courseunits.follow(run, await self.frontend.systemd()).__aiter__()
        try:
            while (line := await self.next_line(lines)) is not None:
                if not await self.send("line", line):
                    return
        except tornado.iostream.StreamClosedError:
            return  # the page went away
        finally:
            await lines.aclose()
        outcome = await courseunits.outcome(await self.frontend.systemd(), run)
        await self.send("done", {"ok": outcome.ok, "message": outcome.message})
        self.finish()

    async def next_line(self, lines) -> str | None:
        """The run's next line, None at its end; keep-alives meanwhile."""
        waiting = asyncio.ensure_future(anext(lines))
        try:
            while not (await asyncio.wait([waiting], timeout=KEEPALIVE))[0]:
                if not await self.send(None, None):
                    raise tornado.iostream.StreamClosedError()
        finally:
            if not waiting.done():
                waiting.cancel()
                await asyncio.wait([waiting])  # the generator is free again, to be closed
        try:
            return waiting.result()
        except StopAsyncIteration:
            return None

    async def send(self, event: str | None, data) -> bool:
        """One event (None: a keep-alive); False when the page went away."""
        form = self.path_args[2]
        if form == "events":
            return await self.send_event(event, data)
        if event == "line":
            self.write(data + "\n")
        elif event == "done":
            self.write(f"\n-- {'done' if data['ok'] else 'failed'}: {data['message']}\n")
        return await self.flushed()


class StudentWorkHandler(StaffHandler):
    """A student's notebooks as they saved them: listed, without starting
    their server nor changing anything of theirs."""

    def instance(self, course: courses.Course, student: str) -> Instance:
        try:
            return Instance(course.name, check_workspace(student))
        except BadName as error:
            raise tornado.web.HTTPError(400, "%s", str(error), reason="Bad student name") from None

    async def get(self, name: str, student: str) -> None:
        course = self.course(name)
        instance = self.instance(course, student)
        try:
            copies = await asyncio.get_running_loop().run_in_executor(None, workspace.notebooks_of, instance,
                                                                      course.path)
            unmounted = None
        except disks.DiskError as error:
            copies, unmounted = [], str(error)
        known_as = await asyncio.get_running_loop().run_in_executor(None, self.site.names.of, course.name)
        self.render("staff/student.html", course=course, student=instance.student, copies=copies,
                    unmounted=unmounted, known_as=known_as.get(instance.student, ""))


class NotebookDownloadHandler(StudentWorkHandler):
    """One of them, as a file to download (never a page of the staff
    origin): a staff-view event names who took it."""

    async def get(self, name: str, student: str) -> None:
        course = self.course(name)
        instance = self.instance(course, student)
        notebook = self.get_query_argument("path", "")
        loop = asyncio.get_running_loop()
        try:
            opened = await loop.run_in_executor(None, workspace.open_copy, instance, check_notebook(notebook))
        except (BadName, nofollow.NotAFile, OSError) as error:
            raise tornado.web.HTTPError(404, "%s", str(error), reason="No such notebook") from None
        self.event("staff-view", f"downloaded {notebook} of {instance.path}", course.name,
                   NBH_STUDENT=instance.student, NBH_NOTEBOOK=notebook)
        self.set_header("Content-Type", "application/x-ipynb+json")
        self.set_header("Content-Disposition", f"attachment; filename*=UTF-8''{quote(notebook.rsplit('/', 1)[-1])}")
        self.set_header("X-Content-Type-Options", "nosniff")
        await self.send_file(opened)


class NotebookViewHandler(StudentWorkHandler):
    """One of them as a page, read-only: rendered by nbh-render@ (render.py),
    served as a shared page is (nothing in it runs, no frame), a staff-view
    event naming who looked."""

    async def get(self, name: str, student: str) -> None:
        course = self.course(name)
        instance = self.instance(course, student)
        notebook = self.get_query_argument("path", "")
        try:
            fd, size = await asyncio.get_running_loop().run_in_executor(None, workspace.open_copy, instance,
                                                                        check_notebook(notebook))
        except (BadName, nofollow.NotAFile, OSError) as error:
            raise tornado.web.HTTPError(404, "%s", str(error), reason="No such notebook") from None
        pieces = FilePieces(fd, size)
        try:
            await self.send_page(instance, notebook, pieces)
        finally:
            pieces.close()

    async def send_page(self, instance: Instance, notebook: str, pieces: FilePieces) -> None:
        if pieces.left > render.INPUT_MAX:
            raise tornado.web.HTTPError(413, "%s is %d bytes, more than %d to render: download it", notebook,
                                        pieces.left, render.INPUT_MAX, reason="Too large to view, download it")
        page = render.page_of(pieces)
        try:
            first = await anext(page)
        except render.RenderBusy as error:
            raise tornado.web.HTTPError(503, "%s", str(error), reason="Busy, try again") from None
        except render.RenderError as error:
            raise tornado.web.HTTPError(422, "%s: %s", notebook, str(error),
                                        reason=f"Cannot show this notebook ({error}): download it") from None
        self.event("staff-view", f"viewed {notebook} of {instance.path}", instance.course,
                   NBH_STUDENT=instance.student, NBH_NOTEBOOK=notebook)
        self.set_header("Content-Security-Policy", shares.POLICY + "; frame-ancestors 'none'")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        try:
            self.write(first)
            await self.flush()
            async for piece in page:
                self.write(piece)
                await self.flush()
        except tornado.iostream.StreamClosedError:
            return  # the reader went away
        except render.RenderError as error:
            log.warning("%s: view of %s cut: %s", instance.path, notebook, error)
            self.request.connection.close()  # a cut page is not served as whole
            return
        finally:
            await page.aclose()
        self.finish()


class _Pieces(io.RawIOBase):
    """Where zipfile writes: kept until taken, so that each piece is sent
    before the next is read (zipfile needs no seek: data descriptors)."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.pieces.append(bytes(data))
        self.written += len(data)
        return len(data)

    def tell(self) -> int:
        return self.written

    def take(self) -> bytes:
        taken, self.pieces = b"".join(self.pieces), []
        return taken


def _zip_entry(copy: workspace.Copy) -> zipfile.ZipInfo:
    """The notebook's path in the zip, and when it was saved (zip's dates begin in 1980)."""
    return zipfile.ZipInfo(copy.notebook, date_time=time.localtime(max(copy.modified, 315532800))[:6])


class NotebooksZipHandler(StudentWorkHandler):
    """All of them in one zip, stored (notebooks are mostly base64 already;
    no deflate on the front end's loop), streamed a piece at a time: one
    staff-view event names the download, NBH_NOTEBOOK="*"."""

    async def get(self, name: str, student: str) -> None:
        course = self.course(name)
        instance = self.instance(course, student)
        loop = asyncio.get_running_loop()
        try:
            copies = await loop.run_in_executor(None, workspace.notebooks_of, instance, course.path)
        except disks.DiskError as error:
            raise tornado.web.HTTPError(409, "%s", str(error), reason="Not mounted now") from None
        self.event("staff-view", f"downloaded the {len(copies)} notebooks of {instance.path}", course.name,
                   NBH_STUDENT=instance.student, NBH_NOTEBOOK="*")
        self.set_header("Content-Type", "application/zip")
        self.set_header("Content-Disposition",
                        f"attachment; filename*=UTF-8''{quote(f'{course.name}-{instance.student}.zip')}")
        out = _Pieces()
        try:
            with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
                for copy in copies:
                    try:
                        fd, size = await loop.run_in_executor(None, workspace.open_copy, instance, copy.notebook)
                    except OSError:
                        continue  # gone or replaced by a link since it was listed
                    pieces = FilePieces(fd, size)
                    try:
                        with archive.open(_zip_entry(copy), "w", force_zip64=size > 1 << 31) as member:
                            while piece := await loop.run_in_executor(None, next, pieces, b""):
                                member.write(piece)
                                self.write(out.take())
                                await self.flush()
                    finally:
                        pieces.close()
            self.write(out.take())
        except tornado.iostream.StreamClosedError:
            return  # the reader went away
        self.finish()


class StopHandler(StaffHandler):
    async def post(self, name: str) -> None:
        course = self.course(name)
        try:
            instance = Instance(course.name, check_workspace(self.get_body_argument("student", "")))
        except BadName as error:
            raise tornado.web.HTTPError(400, "%s", str(error), reason="Bad student name") from None
        try:
            await (await self.frontend.systemd()).stop_instance(instance)
        except SystemdError as error:
            raise tornado.web.HTTPError(error.status, "%s", str(error), reason="Could not stop that server") from None
        self.event("staff-stop", f"stopped {instance.path}", course.name, NBH_STUDENT=instance.student)
        self.redirect(f"/staff/courses/{course.name}#students", status=303)


class OpenHandler(StaffHandler):
    """A notebook in the staff member's own workspace of the course, staff.<account>."""

    async def post(self, name: str) -> None:
        course = self.course(name)
        try:
            notebook = courses.find_notebook(course, self.get_body_argument("notebook", ""))
        except (BadName, courses.UnknownNotebook) as error:
            raise tornado.web.HTTPError(404, "%s", str(error), reason="No such notebook") from None
        instance = Instance(course.name, staff_workspace(self.account.name))
        try:
            await self.frontend.start(instance)
        except (capacity.HostFull, SystemdError, OSError) as error:
            raise tornado.web.HTTPError(503, "%s", str(error), reason="Your server could not start") from None
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, mappings.copy_with_neighbours, instance, course.path, notebook)
        except (nofollow.NotAFile, OSError) as error:
            raise tornado.web.HTTPError(500, "%s", str(error), reason="The notebook could not be copied") from None
        self.event("staff-open", f"opened {notebook} in {instance.path}", course.name,
                   NBH_STUDENT=instance.student, NBH_NOTEBOOK=notebook)
        # on the students' side: never a notebook on the staff pages' origin
        url = self.frontend.notebook_url(instance, notebook, course.interface)
        self.redirect(urljoin(self.frontend.settings.web.public_url, url), status=303)


class StaffNotFoundHandler(StaffHandler):
    def prepare(self) -> None:
        super().prepare()
        if not self._finished:
            raise tornado.web.HTTPError(404, "no such page %r", self.request.path, reason="Not found")


def routes() -> list[tuple]:
    """The staff pages' routes but the statistics' (web/stats.py) and the
    catch-all (StaffNotFoundHandler): web/__init__.make_app puts them together."""
    course = r"/staff/courses/([^/]+)"
    actions = "(" + "|".join(courseunits.ACTIONS) + ")"
    return [
        (r"/staff/?", CourseListHandler),
        (LOGIN, LoginHandler),
        (r"/staff/logout", LogoutHandler),
        (r"/staff/new", NewCourseHandler),
        (course, CourseHandler),
        (course + r"/settings", SettingsHandler),
        (course + r"/stop", StopHandler),
        (course + r"/idle", IdleHandler),
        (course + r"/open", OpenHandler),
        (course + r"/students/([^/]+)", StudentWorkHandler),
        (course + r"/students/([^/]+)/notebook", NotebookDownloadHandler),
        (course + r"/students/([^/]+)/view", NotebookViewHandler),
        (course + r"/students/([^/]+)/notebooks\.zip", NotebooksZipHandler),
        (course + f"/{actions}", ActionHandler),
        (course + f"/{actions}/(events|log)", RunOutputHandler),
    ]


def settings(frontend_settings: config.Config, secret: bytes) -> dict:
    """The application settings the staff pages need."""
    return {
        "staff": StaffSite(frontend_settings.staff),
        "cookie_secret": cookie_secret(secret),
        "template_path": str(TEMPLATES),
        # Tornado's CSRF cookie, for the staff pages only (StaffHandler checks it).
        "xsrf_cookie_kwargs": {"path": "/staff/", "httponly": True, "samesite": "Strict"},
    }
