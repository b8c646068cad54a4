"""The staff pages through nginx and nbh-web, and `nbh staff`, against the sandbox."""

from __future__ import annotations

import io
import json
import re
import time
import uuid
import zipfile

import pytest

from devtools import sandbox as nbh_sandbox
from nbhosting.names import Instance

from .conftest import nbh
from .course_helpers import CONTAINERFILE, EMPTY_NOTEBOOK, commit, make_repo
from .staff_helpers import (PASSWORD, SITE, Staff, add_account, close_clients, fresh_name, logged_in, settings_text,
                            staff_events)
from .web_helpers import entry_path, follow_start, get

pytestmark = pytest.mark.sandbox

TLS_SITE = f"https://127.0.0.1:{nbh_sandbox.HTTPS_PORT}"
NOTEBOOK = "w1/w1-s1-c1-intro.ipynb"


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    close_clients()


def course_posts(course: str, student: str = "nobody") -> list[tuple[str, dict]]:
    return [
        (f"/staff/courses/{course}/settings", {"idle_timeout": "600"}),
        (f"/staff/courses/{course}/update", {}),
        (f"/staff/courses/{course}/build", {}),
        (f"/staff/courses/{course}/stop", {"student": student}),
        (f"/staff/courses/{course}/open", {"notebook": NOTEBOOK}),
        (f"/staff/courses/{course}/delete", {"confirm": course, "force": "yes"}),
        (f"/staff/courses/{course}/rename", {"new_name": "renamed-by-mistake", "force": "yes"}),
    ]


def course_gets(course: str) -> list[str]:
    return [f"/staff/courses/{course}{page}" for page in ("", "/update", "/build", "/update/events", "/build/log",
                                                           "/delete", "/delete/log", "/rename", "/rename/log",
                                                           "/idle", "/students/nobody",
                                                           "/students/nobody/notebook?path=w1/x.ipynb",
                                                           "/students/nobody/view?path=w1/x.ipynb",
                                                           "/students/nobody/notebooks.zip")]


def test_without_a_session_every_page_leads_to_the_login_page_and_changes_nothing(sandbox, systemd, courses):
    course = courses[0]
    before = settings_text(sandbox, course)
    anonymous = Staff()
    assert anonymous.get("/staff").headers["Location"].endswith("/staff/")  # nginx's own redirect
    for path in ["/staff/", "/staff/new", "/staff/nowhere", *course_gets(course)]:
        response = anonymous.get(path)
        assert response.status_code == 303, (path, response.status_code)
        assert response.headers["Location"].startswith("/staff/login?next="), path
    posts = [*course_posts(course), ("/staff/new", {"name": "made", "git_url": "/nowhere"}), ("/staff/logout", {})]
    for path, data in posts:
        for xsrf in (True, False):  # with a CSRF token of its own, or without
            response = anonymous.post(path, data, xsrf=xsrf)
            assert response.status_code == 303, (path, response.status_code)
            assert response.headers["Location"].startswith("/staff/login"), path
    assert settings_text(sandbox, course) == before
    assert not sandbox.path("/etc/nbhosting/courses/made.toml").exists()
    assert systemd.state(f"nbh-course-update@{course}.service").ActiveState == "inactive"
    page = anonymous.get("/staff/login")
    assert page.status_code == 200 and 'name="password"' in page.text
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


def test_every_post_without_a_csrf_token_gets_403(sandbox, systemd, admin, courses):
    course = courses[0]
    client = logged_in(admin)
    before = settings_text(sandbox, course)
    for path, data in [*course_posts(course), ("/staff/new", {"name": "made2", "git_url": "/nowhere"}),
                       ("/staff/logout", {})]:
        response = client.post(path, data, xsrf=False)
        assert response.status_code == 403, (path, response.status_code)
        response = client.http.post(path, data={**data, "_xsrf": "2|00|forged|1"})
        assert response.status_code == 403, (path, response.status_code)
    assert settings_text(sandbox, course) == before
    assert not sandbox.path("/etc/nbhosting/courses/made2.toml").exists()
    assert client.get("/staff/").status_code == 200  # the logout was refused too
    # A login without one, with the right password: refused as well.
    assert Staff().post("/staff/login", {"name": admin, "password": PASSWORD}, xsrf=False).status_code == 403


def test_wrong_passwords_get_403_then_429(sandbox):
    name = fresh_name("victim")
    add_account(name)
    client = Staff()
    for _ in range(5):  # staff.login_attempts
        response = client.login(name, "not the password")
        assert response.status_code == 403
        assert "Wrong name or password" in response.text
        assert "nbh_staff" not in response.cookies
    response = client.login(name)  # even the right one now
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert len(staff_events(sandbox, "staff-login-failed", name)) == 6
    assert client.login(fresh_name("unknown"), "whatever it is").status_code == 403


def test_the_session_cookie_and_logout(sandbox, admin):
    client = logged_in(admin)
    cookie = next(c for c in client.http.cookies.jar if c.name == "nbh_staff")
    assert cookie.path == "/staff/" and not cookie.secure
    assert cookie.has_nonstandard_attr("HttpOnly")
    assert cookie.get_nonstandard_attr("SameSite") == "Strict"
    assert cookie.expires and cookie.expires <= time.time() + 8 * 3600 + 60
    assert client.get("/staff/").status_code == 200
    assert staff_events(sandbox, "staff-login", admin)
    stolen = client.http.cookies.get("nbh_staff", path="/staff/")
    assert client.post("/staff/logout").status_code == 303
    assert client.get("/staff/").headers["Location"].startswith("/staff/login")
    # The cookie of that session, kept by someone, is no longer a session.
    replay = Staff()
    replay.http.cookies.set("nbh_staff", stolen, path="/staff/")
    assert replay.get("/staff/").status_code == 303
    # Over TLS, the cookie is Secure too.
    secure = logged_in(admin, TLS_SITE)
    assert next(c for c in secure.http.cookies.jar if c.name == "nbh_staff").secure


def test_a_course_staff_member_sees_and_changes_only_their_courses(sandbox, systemd, teacher, courses):
    mine, other = courses
    client = logged_in(teacher)
    listing = client.get("/staff/")
    assert listing.status_code == 200
    assert f'href="/staff/courses/{mine}"' in listing.text
    assert f'href="/staff/courses/{other}"' not in listing.text
    assert client.get(f"/staff/courses/{mine}").status_code == 200
    before = settings_text(sandbox, other)
    for path in [*course_gets(other), "/staff/courses/no-such-course", "/staff/new"]:
        assert client.get(path).status_code == 403, path
    for path, data in [*course_posts(other), ("/staff/new", {"name": "made3", "git_url": "/nowhere"})]:
        assert client.post(path, data).status_code == 403, path
    assert settings_text(sandbox, other) == before
    assert not sandbox.path("/etc/nbhosting/courses/made3.toml").exists()
    assert staff_events(sandbox, "staff-refused", teacher)
    # Their own course's settings, yes; its staff list, no (admins grant).
    response = client.post(f"/staff/courses/{mine}/settings", {"idle_timeout": "900", "staff": "intruder"})
    assert response.status_code == 303, response.text[:500]
    text = settings_text(sandbox, mine)
    assert "idle_timeout = 900" in text and "intruder" not in text and teacher in text
    (event,) = staff_events(sandbox, "staff-settings", teacher)[-1:]
    assert event["NBH_COURSE"] == mine


def test_a_course_staff_member_stays_within_the_sites_limits(sandbox, teacher, courses, admin):
    """Not another course's build (its Containerfile is another staff's), nor
    more memory, CPU or idle time than the site gives a server: an admin may."""
    mine, other = courses
    client = logged_in(teacher)
    before = settings_text(sandbox, mine)
    for field, value, words in (("image", f"localhost/nbhosting/course-{other}:abc1234", "is not allowed"),
                                ("image", "registry.invalid/any:1", "is not allowed"),
                                ("memory_max", "4G", "over the site"), ("cpu_quota", "200%", "over the site"),
                                ("idle_timeout", "86400", "over the site")):
        response = client.post(f"/staff/courses/{mine}/settings", {field: value})
        assert response.status_code == 400, (field, value, response.status_code)
        assert words in response.text, (field, response.text[:2000])
    assert settings_text(sandbox, mine) == before
    response = client.post(f"/staff/courses/{mine}/settings", {"image": "course", "memory_max": "1G"})
    assert response.status_code == 303
    assert 'image = "course"' in settings_text(sandbox, mine)
    response = logged_in(admin).post(f"/staff/courses/{mine}/settings", {"memory_max": "4G", "cpu_quota": "200%"})
    assert response.status_code == 303
    assert "memory_max = 4294967296" in settings_text(sandbox, mine)
    assert nbh(sandbox, "course", "set", mine, "image=", "memory_max=", "cpu_quota=").returncode == 0


def test_a_bad_setting_gets_the_form_back_with_the_message(sandbox, admin, course):
    client = logged_in(admin)
    before = settings_text(sandbox, course)
    for field, value, words in (("idle_timeout", "ten", "bad idle_timeout"), ("memory_max", "lots", "bad memory_max"),
                                ("idle_timeout", "5", "bad idle_timeout"), ("staff", "Not An Account", "bad staff"),
                                ("image", "-rm -rf", "bad image"), ("cpu_quota", "fast", "bad cpu_quota")):
        response = client.post(f"/staff/courses/{course}/settings", {field: value})
        assert response.status_code == 400, (field, response.status_code)
        assert words in response.text, (field, response.text[:2000])
        assert f'value="{value}"' in response.text  # what was typed is kept in the form
    assert settings_text(sandbox, course) == before
    response = client.post(f"/staff/courses/{course}/settings", {"idle_timeout": "1200", "memory_max": "1G",
                                                                 "cpu_quota": "50%", "autopull": "yes"})
    assert response.status_code == 303
    shown = nbh(sandbox, "course", "show", course).stdout
    assert "1200" in shown, shown
    text = settings_text(sandbox, course)
    assert "memory_max = 1073741824" in text and "cpu_quota = 50" in text and "autopull = true" in text
    client.post(f"/staff/courses/{course}/settings", {})  # back to the defaults
    assert "idle_timeout" not in settings_text(sandbox, course)


def test_nbh_staff_is_the_whole_interface(sandbox, courses):
    name = fresh_name("cli")
    assert nbh(sandbox, "staff", "add", name, "--password-stdin", user="nbh").returncode != 0  # root only
    add_account(name)
    result = nbh(sandbox, "staff", "grant", name, *courses)
    assert result.returncode == 0, result.stderr
    assert name in settings_text(sandbox, courses[0]) and name in settings_text(sandbox, courses[1])
    listing = nbh(sandbox, "staff", "list").stdout
    assert re.search(rf"^{name}\s+staff\s+{', '.join(sorted(courses))}$", listing, re.M), listing
    assert nbh(sandbox, "staff", "revoke", name, courses[1]).returncode == 0
    assert name not in settings_text(sandbox, courses[1])
    assert nbh(sandbox, "staff", "grant", name, "--admin").returncode == 0
    assert re.search(rf"^{name}\s+admin\s+all$", nbh(sandbox, "staff", "list").stdout, re.M)
    client = logged_in(name)
    assert nbh_sandbox.run(["nbh", "staff", "passwd", name, "--password-stdin"], input="another password\n",
                           check=False).returncode == 0
    assert client.get("/staff/").status_code == 303  # a new password ends the sessions
    for bad in (["staff", "grant", "nobody-here", courses[0]], ["staff", "grant", name, "no-such-course"],
                ["staff", "add", "Bad Name", "--password-stdin"], ["staff", "remove", "nobody-here"],
                ["staff", "revoke", name, courses[1]]):
        result = nbh(sandbox, *bad)
        assert result.returncode == 1 and result.stderr.count("\n") == 1 and result.stderr.startswith("nbh: "), \
            (bad, result.stderr)
    assert nbh(sandbox, "staff", "remove", name).returncode == 0
    assert name not in settings_text(sandbox, courses[0])  # its grants go with it
    assert name not in nbh(sandbox, "staff", "list").stdout
    accounts = sandbox.path("/etc/nbhosting/staff.json")
    assert oct(accounts.stat().st_mode & 0o777) == "0o640"
    assert nbh_sandbox.run(["cat", "/etc/nbhosting/staff.json"], user="nobody", check=False).returncode != 0
    assert staff_events(sandbox, "staff-account", name)


def test_the_students_list_and_the_stop_button(sandbox, systemd, admin, course, student):
    instance = Instance(course, student)
    assert nbh(sandbox, "start", course, student).returncode == 0
    try:
        client = logged_in(admin)
        page = client.get(f"/staff/courses/{course}", params={"q": student})  # one of many in the session
        assert page.status_code == 200
        row = re.search(rf'<tr><td><a href="/staff/courses/{course}/students/{re.escape(student)}">'
                        rf"{re.escape(student)}</a></td><td>([^<]*)</td>", page.text)
        assert row and row.group(1) == "active/running", page.text[-3000:]
        # How idle it is, asked as `nbh cull` does, comes as an event for the page's script.
        events = client.get(f"/staff/courses/{course}/idle").text
        idle = re.search(rf'data: {{"student": "{re.escape(student)}", "idle": "([^"]+)"}}', events)
        assert idle and re.fullmatch(r"[0-9]+m[0-9]{2}s|[0-9]+h[0-9]{2}m", idle.group(1)), events
        assert events.endswith("event: done\ndata: {}\n\n")
        response = client.post(f"/staff/courses/{course}/stop", {"student": student})
        assert response.status_code == 303
        assert systemd.state(instance.service).ActiveState in ("inactive", "failed")
        assert systemd.state(instance.socket).ActiveState == "active"  # still listening for the student
        assert staff_events(sandbox, "staff-stop", admin)[-1]["NBH_STUDENT"] == student
        assert client.post(f"/staff/courses/{course}/stop", {"student": "../x"}).status_code == 400
    finally:
        systemd.stop_instance(instance)


def test_a_staff_workspace_is_nobodys_entry(sandbox, systemd, course):
    """An entry URL cannot name a staff member's own workspace, signed or not."""
    response = get(entry_path(course, "w1/w1-s1-c1-intro", "staff.admin"))
    assert response.status == 400, response.body[:300]
    assert systemd.state(Instance(course, "staff.admin").service).ActiveState == "inactive"


def test_a_teacher_sees_a_students_work_without_touching_it(sandbox, systemd, teacher, courses, student):
    course = courses[0]
    instance = Instance(course, student)
    workspace = sandbox.path(f"/var/lib/nbhosting/workspaces/{course}/{student}")
    try:
        follow_start(get(entry_path(course, NOTEBOOK.removesuffix(".ipynb"), student)))  # until it is ready
        mine = json.loads((workspace / NOTEBOOK).read_text())
        mine["cells"].append({"cell_type": "markdown", "id": "m9", "metadata": {}, "source": ["my answer"]})
        sandbox.api(instance, f"api/contents/{NOTEBOOK}", method="PUT",
                    body={"type": "notebook", "format": "json", "content": mine})
        # what a student's code can leave in their workspace: a link to a file of the host's
        sandbox.run("ln", "-s", "/etc/nbhosting/secret", f"/var/lib/nbhosting/workspaces/{course}/{student}/leak.ipynb",
                    user="nbh-jupyter")
        systemd.stop_instance(instance)
        saved = (workspace / NOTEBOOK).read_bytes()
        client = logged_in(teacher)
        page = client.get(f"/staff/courses/{course}/students/{student}")
        assert page.status_code == 200, page.text[:300]
        assert re.search(rf"<td>{re.escape(NOTEBOOK)}</td>.*?<td>changed</td>", page.text, re.S), page.text
        assert "leak.ipynb" not in page.text  # a link of the student's: neither listed nor followed
        download = client.get(f"/staff/courses/{course}/students/{student}/notebook", params={"path": NOTEBOOK})
        assert download.status_code == 200 and download.content == saved
        assert download.headers["Content-Disposition"].startswith("attachment;")
        assert download.headers["Content-Type"] == "application/x-ipynb+json"
        (event,) = staff_events(sandbox, "staff-view", teacher)
        assert (event["NBH_STUDENT"], event["NBH_NOTEBOOK"], event["NBH_COURSE"]) == (student, NOTEBOOK, course)
        for path in ("leak.ipynb", "../../../../etc/nbhosting/secret", "w1"):
            for form in ("notebook", "view"):
                refused = client.get(f"/staff/courses/{course}/students/{student}/{form}", params={"path": path})
                assert refused.status_code == 404, (form, path)
        # viewed as a page: rendered by nbh-render@ (not the student's server), nothing in it runs
        view = client.get(f"/staff/courses/{course}/students/{student}/view", params={"path": NOTEBOOK})
        assert view.status_code == 200, view.text[:300]
        assert view.headers["Content-Type"] == "text/html; charset=utf-8"
        assert view.headers["Content-Security-Policy"].startswith("sandbox;")
        assert "allow-same-origin" not in view.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in view.headers["Content-Security-Policy"]
        assert "my answer" in view.text and "<html" in view.text
        event = staff_events(sandbox, "staff-view", teacher)[-1]
        assert (event["NBH_STUDENT"], event["NBH_NOTEBOOK"], event["MESSAGE"]) == (
            student, NOTEBOOK, f"{teacher}: viewed {NOTEBOOK} of {course}/{student}")
        assert client.get(f"/staff/courses/{course}/students/..%2Fx").status_code in (400, 404)
        # all of them in one zip: the saved bytes, no link followed, one more staff-view event
        archive = client.get(f"/staff/courses/{course}/students/{student}/notebooks.zip")
        assert archive.status_code == 200 and archive.headers["Content-Type"] == "application/zip"
        assert archive.headers["Content-Disposition"] == f"attachment; filename*=UTF-8''{course}-{student}.zip"
        with zipfile.ZipFile(io.BytesIO(archive.content)) as opened:
            assert opened.testzip() is None
            assert [info.filename for info in opened.infolist()] == [NOTEBOOK]
            assert opened.read(NOTEBOOK) == saved
        assert staff_events(sandbox, "staff-view", teacher)[-1]["NBH_NOTEBOOK"] == "*"
        # nothing of the student's changed, and no server was started to look
        assert (workspace / NOTEBOOK).read_bytes() == saved
        assert systemd.state(instance.service).ActiveState == "inactive"
    finally:
        systemd.stop_instance(instance)


def test_a_students_notebook_that_cannot_be_rendered_gets_a_clear_page(sandbox, systemd, teacher, courses,
                                                                           student):
    """What a student's code may leave behind: not JSON, or too large to
    render. Each gets a 4xx page that says so; the render's reason is in its
    unit's journal; nothing is left running."""
    course = courses[0]
    instance = Instance(course, student)
    folder = f"/var/lib/nbhosting/workspaces/{course}/{student}"
    try:
        follow_start(get(entry_path(course, NOTEBOOK.removesuffix(".ipynb"), student)))  # until it is ready
        sandbox.run("sh", "-c", f"echo 'not a notebook' > {folder}/garbage.ipynb && "
                    f"truncate -s 33M {folder}/huge.ipynb", user="nbh-jupyter")
        systemd.stop_instance(instance)
        client = logged_in(teacher)
        view = client.get(f"/staff/courses/{course}/students/{student}/view", params={"path": "garbage.ipynb"})
        assert view.status_code == 422, view.text[:300]
        assert "not a notebook" in view.text
        logged = sandbox.run("journalctl", "--no-pager", "-o", "cat", "--since=-60s", "--unit", "nbh-render@*").stdout
        assert "nbh-render: not a notebook" in logged, logged
        view = client.get(f"/staff/courses/{course}/students/{student}/view", params={"path": "huge.ipynb"})
        assert view.status_code == 413 and "download it" in view.text, view.text[:300]
        assert systemd.state(instance.service).ActiveState == "inactive"
        for _ in range(50):  # the render answered; then it exits
            units = sandbox.run("systemctl", "list-units", "--all", "--no-legend", "nbh-render@*").stdout
            if not units.strip():
                break
            time.sleep(0.2)
        assert units.strip() == "", units  # CollectMode=: not even the failed one
    finally:
        systemd.stop_instance(instance)


RENDER_PROBE = """
import os, socket
print("uid", os.getuid())
for path in ("/etc/nbhosting/secret", "/var/lib/nbhosting/workspaces", "/var/lib/nbhosting/disks",
             "/etc/nbhosting/courses"):
    try:
        os.listdir(path) if os.path.isdir(path) else open(path).close()
        print("READ", path)
    except OSError as error:
        print("refused", path, error.strerror)
for address in (("127.0.0.1", sandbox.HTTP_PORT), "/run/nbhosting/web.sock"):
    try:
        socket.create_connection(address, timeout=3) if isinstance(address, tuple) else \\
            socket.socket(socket.AF_UNIX).connect(address)
        print("CONNECTED", address)
    except OSError as error:
        print("refused", address, error.strerror)
print("probe-done")
"""


def test_the_render_reads_no_secret_and_no_workspace(sandbox, systemd, course):
    """nbh-render@.service as installed, with its command replaced by a
    probe: what a flaw in nbconvert would get is no file of nbhosting's, no
    network, no socket of the front end's, and no account."""
    folder = "/run/systemd/system/nbh-render@probe.service.d"
    dropin = sandbox.path(folder)
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "probe.py").write_text(RENDER_PROBE.replace("sandbox.HTTP_PORT", str(nbh_sandbox.HTTP_PORT)))
    (dropin / "probe.conf").write_text("[Service]\nStandardInput=null\nStandardOutput=journal\nExecStart=\n"
                                       f"ExecStart=/usr/bin/python3 {folder}/probe.py\n")
    try:
        sandbox.run("systemctl", "daemon-reload")
        sandbox.run("systemctl", "start", "--wait", "nbh-render@probe.service", check=False)
        logged = sandbox.run("journalctl", "--no-pager", "-o", "cat", "--since=-60s",
                             "--unit", "nbh-render@probe.service").stdout
        assert "probe-done" in logged, logged
        assert "READ" not in logged and "CONNECTED" not in logged, logged
        assert "uid 0" not in logged, logged
        # and the render's socket is the front end's alone: a local account, a container's, cannot ask
        connect = 'import socket; socket.socket(socket.AF_UNIX).connect("/run/nbhosting/render.sock")'
        for account in ("nobody", "nbh-jupyter"):
            refused = sandbox.run("python3", "-c", connect, user=account, check=False)
            assert "PermissionError" in refused.stderr, (account, refused.stderr)
    finally:
        sandbox.run("rm", "-r", folder)
        sandbox.run("systemctl", "daemon-reload")


def test_open_a_notebook_as_myself(sandbox, systemd, admin, course):
    client = logged_in(admin)
    instance = Instance(course, "staff.admin")
    try:
        response = client.post(f"/staff/courses/{course}/open", {"notebook": NOTEBOOK})
        assert response.status_code == 303, response.text[:500]
        location = response.headers["Location"]
        # on the students' origin: never a notebook on the staff pages'
        assert location.startswith(f"{SITE}/nb/{course}/staff.admin/notebooks/{NOTEBOOK}?token="), location
        assert get(location.removeprefix(SITE), referer=None).status == 200  # Jupyter, on its token
        assert client.get(location.removeprefix(SITE)).status_code == 404  # nothing of it on the staff origin
        assert sandbox.path(f"/var/lib/nbhosting/workspaces/{course}/staff.admin/{NOTEBOOK}").is_file()
        assert systemd.state(instance.service).ActiveState == "active"
        page = client.get(f"/staff/courses/{course}", params={"q": "staff.admin"}).text
        assert (f'<tr><td><a href="/staff/courses/{course}/students/staff.admin">staff.admin</a></td>'
                "<td>active/running</td>") in page
        assert client.post(f"/staff/courses/{course}/open", {"notebook": "../../etc/passwd"}).status_code == 404
    finally:
        systemd.stop_instance(instance)


def test_the_course_list(sandbox, admin, courses):
    client = logged_in(admin)
    page = client.get("/staff/").text
    for course in courses:
        row = re.search(rf'<td><a href="/staff/courses/{course}">{course}</a></td>\s*<td>(\d+)</td>', page)
        assert row and row.group(1) == "3", page[:3000]
    assert "frame-ancestors 'none'" in client.get("/staff/").headers["Content-Security-Policy"]
    assert client.http.put("/staff/").status_code in (403, 405)


def run_events(client: Staff, location: str) -> list[tuple[str, object]]:
    """The event stream of the run a POST led to, to its end."""
    path, _, query = location.partition("?")
    body = client.get(f"{path}/events?{query}", timeout=600).text
    events = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


def start(client: Staff, course: str, action: str) -> str:
    response = client.post(f"/staff/courses/{course}/{action}")
    assert response.status_code == 303, response.text[:1000]
    location = response.headers["Location"]
    assert location.startswith(f"/staff/courses/{course}/{action}?invocation="), location
    return location


def test_an_update_shows_its_output_and_result_and_a_failing_one_keeps_the_checkout(sandbox, admin):
    course = fresh_name("upd")
    sandbox.make_course(course)
    client = logged_in(admin)
    head = ["git", "-C", f"/var/lib/nbhosting/courses/{course}", "rev-parse", "HEAD"]
    before = nbh_sandbox.run(head, user="nbh-courses").stdout
    events = run_events(client, start(client, course, "update"))
    assert events[-1][0] == "done" and events[-1][1]["ok"], events
    assert staff_events(sandbox, "staff-update", admin)[-1]["NBH_COURSE"] == course
    # The finished run, again: its whole log and its result, as text too.
    text = client.get(f"/staff/courses/{course}/update/log").text
    assert text.rstrip().splitlines()[-1].startswith("-- done: "), text

    assert client.post(f"/staff/courses/{course}/settings", {"branch": "no-such-branch"}).status_code == 303
    events = run_events(client, start(client, course, "update"))
    kind, outcome = events[-1]
    assert kind == "done" and not outcome["ok"], events
    assert "no-such-branch" in outcome["message"] or "exit" in outcome["message"], outcome
    after = nbh_sandbox.run(head, user="nbh-courses").stdout
    assert after == before
    assert sandbox.path(f"/var/lib/nbhosting/courses/{course}/w1/w1-s1-c1-intro.ipynb").is_file()
    assert sandbox.journal("NBH_EVENT=failure", f"NBH_COURSE={course}", "--since=-300s")


def test_a_bad_invocation_id_is_400(sandbox, admin, course):
    client = logged_in(admin)
    assert client.get(f"/staff/courses/{course}/update/events?invocation=../../x").status_code == 400


def test_a_failing_build_says_why_in_the_page_and_keeps_the_image(sandbox, admin):
    course = fresh_name("bld")
    repo = make_repo(sandbox, course, {"a.ipynb": EMPTY_NOTEBOOK, "extra.py": "ANSWER = 1\n",
                                       ".nbhosting/Containerfile": CONTAINERFILE})
    assert nbh(sandbox, "course", "create", course, repo).returncode == 0
    client = logged_in(admin)
    events = run_events(client, start(client, course, "build"))
    assert events[-1] == ("done", {"ok": True, "message": events[-1][1]["message"]}), events
    built = nbh(sandbox, "course", "show", course).stdout
    commit(sandbox, repo, {".nbhosting/Containerfile": CONTAINERFILE + "RUN echo about to fail && exit 3\n"})
    events = run_events(client, start(client, course, "update"))
    assert events[-1][1]["ok"], events
    events = run_events(client, start(client, course, "build"))
    kind, outcome = events[-1]
    assert kind == "done" and not outcome["ok"] and "exit" in outcome["message"], events
    assert ("line", "about to fail") in events
    # The image in use is the one built before.
    image = [line for line in built.splitlines() if line.startswith("image")]
    assert image and [line for line in nbh(sandbox, "course", "show", course).stdout.splitlines()
                      if line.startswith("image")] == image
    assert sandbox.journal("NBH_EVENT=failure", f"NBH_COURSE={course}", "--since=-300s")


def test_the_student_list_is_paged_and_found_by_id_or_lti_id(sandbox, admin):
    """Thousands enrolled: a page of them at a time, and a search by the id the
    LMS sent (an LTI student's too, whose workspace bears a derived name)."""
    from nbhosting import lti

    name = fresh_name("paged")
    sandbox.make_course(name)
    issuer, platform_name = f"https://{name}.lms.example.org", f"p{uuid.uuid4().hex[:6]}"
    added = nbh(sandbox, "lti", "add", platform_name, "--issuer", issuer, "--client-id", "c", "--deployment-id", "d",
                "--auth-url", issuer + "/auth", "--jwks-url", issuer + "/jwks", "--courses", name)
    assert added.returncode == 0, added.stderr
    platform = lti.load(platform_name, sandbox.path(str(lti.PLATFORMS_DIR)))
    lti_student = lti.student_name(platform, "moodle-user-4242")
    folder = f"/var/lib/nbhosting/workspaces/{name}"
    # as many workspaces as 250 students' first entries leave (made by hand: no server is needed)
    sandbox.run("sh", "-c", f"mkdir -p {folder} && cd {folder} && "
                f"for n in $(seq -w 1 250); do mkdir s$n; done && mkdir {lti_student} staff.admin")
    client = logged_in(admin)
    page = client.get(f"/staff/courses/{name}").text
    assert "Students (251)" in page and "1&ndash;100 of 252" in page, page[:3000]
    assert page.count(f'<tr><td><a href="/staff/courses/{name}/students/') == 100
    following = re.search(r'<a id="students-next" href="([^"]+)"', page).group(1)
    page = client.get(following.replace("&amp;", "&")).text
    assert "101&ndash;200 of 252" in page and 'id="students-previous"' in page
    # sorted by name: the LTI student and s001 to s099 came first
    assert '/students/s100">s100<' in page and '/students/s199">' in page and '/students/s099">' not in page
    found = client.get(f"/staff/courses/{name}", params={"q": "S24"}).text
    assert "1&ndash;10 of 10 matching &ldquo;S24&rdquo;" in found
    found = client.get(f"/staff/courses/{name}", params={"q": "moodle-user-4242"}).text
    assert re.findall(rf'/staff/courses/{name}/students/([^"]+)"', found) == [lti_student], found[-3000:]
    nothing = client.get(f"/staff/courses/{name}", params={"q": "<script>"}).text
    assert "none matching &ldquo;&lt;script&gt;&rdquo;" in nothing
    assert client.get(f"/staff/courses/{name}", params={"from": "x"}).status_code == 400
