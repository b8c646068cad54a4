"""The staff pages on an origin of their own: a script on the students'
origin (a course notebook's trusted output, or a student's) in an admin's
browser, logged in to the staff pages, acts on nothing there.

In the sandbox, the students' origin is http://127.0.0.1:8780 and the staff
pages' http://staff.localhost:8780 (web.staff_url). A site whose staff host
is a subdomain of the students' (staff.nb.example.org and nb.example.org) is
same-site, so the browser sends its SameSite cookies along: the front end's
own checks (the host, the Origin of a POST) are tested here without them.
"""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import urlsplit

import pytest

from devtools import sandbox as nbh_sandbox
from nbhosting.names import Instance

from .browser_helpers import entry_url, log_in
from .conftest import nbh
from .staff_helpers import STAFF_HOST, Staff, add_account, logged_in
from .web_helpers import get

pytestmark = pytest.mark.sandbox

STAFF_SITE = nbh_sandbox.STAFF_URL
SITE = nbh_sandbox.SITE_URL
NOTEBOOK = "attack.ipynb"
# What the notebook's trusted output runs, on the students' origin: read a
# staff page, then change a setting with the admin's session, from its own
# origin (nginx) and from the staff pages' (CORS; a no-cors POST).
ATTACK = """
<div id="nbh-attack"></div>
<script>
(async () => {
  const staff = %(staff)s, course = %(course)s, result = {origin: location.origin};
  const form = () => new URLSearchParams({idle_timeout: "61", _xsrf: "guessed"});
  try {
    const page = await fetch(staff + "/staff/", {credentials: "include"});
    result.read = "read " + page.status + " " + (await page.text()).slice(0, 100);
  } catch (error) { result.read = "refused: " + error.name; }
  try {
    const own = await fetch("/staff/courses/" + course + "/settings", {method: "POST", body: form()});
    result.own = own.status;
  } catch (error) { result.own = "refused: " + error.name; }
  try {
    await fetch(staff + "/staff/courses/" + course + "/settings",
                {method: "POST", mode: "no-cors", credentials: "include", body: form()});
    result.cross = "sent";
  } catch (error) { result.cross = "refused: " + error.name; }
  document.getElementById("nbh-attack").dataset.result = JSON.stringify(result);
})();
</script>
"""


def attack_notebook(course: str) -> dict:
    html = ATTACK % {"staff": json.dumps(STAFF_SITE), "course": json.dumps(course)}
    return {
        "cells": [{"cell_type": "code", "execution_count": 1, "id": "c1", "metadata": {}, "source": ["1"],
                   "outputs": [{"output_type": "display_data", "metadata": {}, "data": {"text/html": [html]}}]}],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5,
    }


def attack_result(browser) -> dict:
    found = browser.wait("the notebook's script to run on the students' origin", lambda: browser.js(
        "return document.getElementById('nbh-attack')?.dataset.result"), timeout=90)
    return json.loads(found)


def assert_nothing_done(sandbox, course: str, since: float, result: dict) -> None:
    assert result["origin"] == SITE, result
    assert result["read"].startswith("refused: TypeError"), result  # CORS: the page is not readable
    assert result["own"] == 404, result  # nginx: no staff page on the students' origin
    assert result["cross"] == "sent", result  # opaque: the browser sent it, the front end refused it
    settings = sandbox.path(f"/etc/nbhosting/courses/{course}.toml").read_text()
    assert "idle_timeout = 61" not in settings, settings
    staff_events = [event for event in sandbox.journal("--since", f"@{since:.0f}")
                    if event.get("NBH_EVENT", "").startswith("staff-") and event["NBH_EVENT"] != "staff-open"
                    and int(event["__REALTIME_TIMESTAMP"]) / 1e6 >= since]
    assert staff_events == [], staff_events


def test_a_script_on_the_students_origin_drives_no_staff_session(sandbox, systemd, browser, student):
    course = f"attack{uuid.uuid4().hex[:6]}"
    nbh_sandbox.make_course(course, {NOTEBOOK: attack_notebook(course)})
    add_account("admin", "--admin")
    own = Instance(course, "staff.admin")
    theirs = Instance(course, student)
    try:
        log_in(browser, "admin")
        since = time.time()  # the account's making and its login are before
        # (b) the course's notebook, opened from the course page ("Open as myself")
        browser.driver.get(f"{STAFF_SITE}/staff/courses/{course}")
        browser.driver.find_element("css selector", f'button[name="notebook"][value="{NOTEBOOK}"]').click()
        result = attack_result(browser)
        assert browser.driver.current_url.startswith(f"{SITE}/nb/{course}/staff.admin/")
        assert_nothing_done(sandbox, course, since, result)
        # (a) a student's notebook, from the link a student sent for help
        browser.driver.get(entry_url(sandbox, theirs, NOTEBOOK))
        result = attack_result(browser)
        assert browser.driver.current_url.startswith(f"{SITE}/nb/{course}/{student}/")
        assert_nothing_done(sandbox, course, since, result)
        # and the session was there all along: the staff pages still open
        browser.driver.get(f"{STAFF_SITE}/staff/courses/{course}")
        assert browser.driver.find_elements("id", "who")
    finally:
        for instance in (own, theirs):
            systemd.stop_instance(instance)


def test_the_front_end_takes_staff_requests_on_the_staff_origin_only(sandbox, course):
    """As a same-site script would send them, with the admin's cookies: a
    POST whose Origin is the students' is refused, the CSRF token notwithstanding."""
    add_account("admin", "--admin")
    admin = logged_in("admin")
    page = f"/staff/courses/{course}/settings"
    xsrf = admin.http.cookies.get("_xsrf")
    forged = admin.http.post(page, data={"idle_timeout": "62", "_xsrf": xsrf}, headers={"Origin": SITE})
    assert forged.status_code == 403, forged.text[:300]
    assert "idle_timeout = 62" not in sandbox.path(f"/etc/nbhosting/courses/{course}.toml").read_text()
    mine = admin.http.post(page, data={"idle_timeout": "63", "_xsrf": xsrf}, headers={"Origin": STAFF_SITE})
    assert mine.status_code == 303, mine.text[:300]
    assert "idle_timeout = 63" in sandbox.path(f"/etc/nbhosting/courses/{course}.toml").read_text()
    assert nbh(sandbox, "course", "set", course, "idle_timeout=").returncode == 0
    # the students' origin has no staff page, from nginx nor from nbh-web
    assert get("/staff/login", referer=None).status == 404
    direct = nbh_sandbox.UnixHTTPConnection(str(sandbox.path("/run/nbhosting/web.sock")))
    direct.request("GET", "/staff/login", headers={"Host": "127.0.0.1"})
    response = direct.getresponse()
    response.read()
    direct.close()
    assert response.status == 404
    staff_login = Staff().get("/staff/login")
    assert staff_login.status_code == 200 and "_xsrf" in staff_login.text
    assert urlsplit(Staff().get("/").headers["Location"]).path == "/staff/"  # nothing else on the staff origin
    assert Staff().get(f"/nb/{course}/x/api/status").status_code == 404
    assert Staff().get(f"/shared/{course}/x/y").status_code == 404
    assert STAFF_HOST == "staff.localhost"
