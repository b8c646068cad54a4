"""A real browser on the staff pages: an admin's whole round, and a course
staff member's view. Screenshots of the list and course pages are kept in
tests/artifacts/ (staff-*.png), failures' too (as in test_browser.py)."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from selenium.webdriver.common.by import By

from devtools import sandbox as nbh_sandbox
from nbhosting.names import Instance

from .browser_helpers import (ARTIFACTS, STAFF_SITE, Browser, click, fill, first_cell_output, first_cell_source,
                              leak_probes, log_in, run_first_cell, wait_for_kernel_idle)
from .conftest import notebook
from .course_helpers import make_repo
from .staff_helpers import add_account, fresh_name, settings_text
from .web_helpers import entry_path, get

pytestmark = pytest.mark.sandbox

SITE = nbh_sandbox.SITE_URL
ANSWER = "4242"
# A course whose image adds a module, shipped in its repository, to the
# site's base image; its build says something, waits, then says more, so
# that the page shows the first part while the build still runs.
CONTAINERFILE = """ARG NBH_BASE_IMAGE
FROM $NBH_BASE_IMAGE
COPY extra.py /opt/jupyter/lib/python3.11/site-packages/nbh_extra.py
RUN echo nbh-build-step-one && sleep 4 && echo nbh-build-step-two
"""
IMPORTS = "w1/imports.ipynb"


def course_repository(sandbox, name: str) -> str:
    """A git repository in the sandbox, as a teacher pushes it: a notebook,
    the Containerfile and the module it adds."""
    return make_repo(sandbox, name, {IMPORTS: json.dumps(notebook("import nbh_extra; print(nbh_extra.ANSWER)")),
                                     ".nbhosting/Containerfile": CONTAINERFILE, "extra.py": f"ANSWER = {ANSWER}\n"})


def screenshot(browser: Browser, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.driver.save_screenshot(str(ARTIFACTS / f"staff-{name}.png"))


def run_log(browser: Browser) -> list[str]:
    return browser.js("return document.getElementById('log').textContent").splitlines()


def run_outcome(browser: Browser) -> str | None:
    return browser.js("return document.getElementById('outcome').dataset.done || null")


def journal(sandbox, unit: str) -> str:
    return sandbox.run("journalctl", "--no-pager", "-o", "cat", "-n", "40", "--unit", unit, check=False).stdout


def test_an_admin_creates_updates_builds_and_opens_a_course(sandbox, systemd, browser):
    add_account("admin", "--admin")
    name = f"made-{uuid.uuid4().hex[:6]}"
    repo = course_repository(sandbox, name)
    own = Instance(name, "staff.admin")
    browser.diagnostics += [("the update unit", lambda: journal(sandbox, f"nbh-course-update@{name}.service")),
                            ("the build unit", lambda: journal(sandbox, f"nbh-course-build@{name}.service")),
                            ("nbh-web", lambda: journal(sandbox, "nbh-web.service"))]
    try:
        log_in(browser, "admin")

        # A new course: its clone runs in its update unit, its output comes into the page.
        click(browser, "new-course")
        fill(browser, "name", name)
        fill(browser, "git_url", repo)
        fill(browser, "branch", "main")
        click(browser, "create")
        browser.wait("the clone's page", lambda: f"/staff/courses/{name}/update?invocation=" in browser.driver.current_url)
        browser.wait("the clone's outcome", lambda: run_outcome(browser) is not None)
        if run_outcome(browser) != "ok":
            browser.fail(f"the clone failed: {browser.driver.find_element(By.ID, 'outcome').text}")
        assert run_log(browser), "no output of the clone in the page"

        # The idle timeout, and the course's own image, in the settings form.
        browser.driver.get(f"{STAFF_SITE}/staff/courses/{name}")
        fill(browser, "idle_timeout", "900")
        fill(browser, "image", "course")
        click(browser, "save")
        browser.wait("the saved settings", lambda: "#settings" in browser.driver.current_url)
        text = settings_text(sandbox, name)
        assert "idle_timeout = 900" in text and 'image = "course"' in text, text

        # The build: its first step is in the page while the build still runs.
        click(browser, "build")
        browser.wait("the build's page", lambda: f"/staff/courses/{name}/build?invocation=" in browser.driver.current_url)
        browser.wait("the build's first step, live", lambda: "nbh-build-step-one" in run_log(browser))
        if run_outcome(browser) is not None or "nbh-build-step-two" in run_log(browser):
            browser.fail("the build's log came only once the build had ended")
        browser.wait("the build's outcome", lambda: run_outcome(browser) is not None, timeout=300)
        if run_outcome(browser) != "ok":
            browser.fail(f"the build failed: {browser.driver.find_element(By.ID, 'outcome').text}")
        assert "nbh-build-step-two" in run_log(browser)

        # The list and the course page, kept.
        browser.driver.get(f"{STAFF_SITE}/staff/")
        browser.wait("the course in the list", lambda: browser.driver.find_elements(By.LINK_TEXT, name))
        screenshot(browser, "admin-courses")
        browser.driver.get(f"{STAFF_SITE}/staff/courses/{name}")
        screenshot(browser, "admin-course")

        # A notebook as myself: the course's own image, which has the module.
        browser.driver.find_element(By.CSS_SELECTOR, f'button[name="notebook"][value="{IMPORTS}"]').click()
        browser.wait("the notebook", lambda: "nbh_extra" in first_cell_source(browser))
        # on the students' origin, never on the staff pages'
        assert browser.driver.current_url.startswith(f"{SITE}/nb/{name}/staff.admin/notebooks/{IMPORTS}")
        wait_for_kernel_idle(browser, sandbox, own)
        run_first_cell(browser)
        browser.wait(f"the cell's output {ANSWER}", lambda: first_cell_output(browser) == ANSWER)

        # Logged out, /staff/ is the login page again.
        browser.driver.get(f"{STAFF_SITE}/staff/")
        click(browser, "logout")
        browser.wait("the login page", lambda: "/staff/login" in browser.driver.current_url)
        browser.driver.get(f"{STAFF_SITE}/staff/courses/{name}")
        browser.wait("the login page, again", lambda: "/staff/login" in browser.driver.current_url)
        assert not browser.driver.find_elements(By.ID, "who")
    finally:
        systemd.stop_instance(own)


def test_a_course_staff_member_sees_their_course_only(sandbox, browser):
    mine, other = f"mine-{uuid.uuid4().hex[:6]}", f"theirs-{uuid.uuid4().hex[:6]}"
    for course in (mine, other):
        sandbox.make_course(course)
    name = fresh_name("teacher")
    add_account(name)
    assert sandbox.run("nbh", "staff", "grant", name, mine, check=False).returncode == 0
    log_in(browser, name)
    assert browser.driver.find_elements(By.LINK_TEXT, mine)
    assert not browser.driver.find_elements(By.LINK_TEXT, other)
    screenshot(browser, "teacher-courses")
    browser.driver.get(f"{STAFF_SITE}/staff/courses/{mine}")
    assert browser.driver.find_element(By.ID, "staff").get_attribute("readonly") is not None
    screenshot(browser, "teacher-course")
    browser.driver.get(f"{STAFF_SITE}/staff/courses/{other}")
    assert "403" in browser.driver.title


# What a student's notebook may hold: output that would run a script, fetch
# and load an image on the staff origin, where the teacher's session is.
HOSTILE_OUTPUT = ("<script>window.nbhScriptRan = 1; fetch('/nbh-leak-probe/staffview');</script>"
                  "<img src='/nbh-leak-probe/staffimg'><b>html output</b>")


def test_a_teacher_views_a_students_notebook_in_which_nothing_runs(sandbox, systemd, browser, teacher, courses,
                                                                    student):
    course = courses[0]
    instance = Instance(course, student)
    answers = notebook("print('my answer')")
    answers["cells"][0]["outputs"] = [
        {"output_type": "stream", "name": "stdout", "text": "my answer\n"},
        {"output_type": "display_data", "metadata": {}, "data": {"text/html": HOSTILE_OUTPUT}}]
    try:
        assert get(entry_path(course, "w1/w1-s1-c1-intro", student)).status in (200, 302)
        sandbox.api(instance, "api/contents/answers.ipynb", method="PUT",
                    body={"type": "notebook", "format": "json", "content": answers})
        systemd.stop_instance(instance)
        probes = leak_probes(sandbox)
        log_in(browser, teacher)
        browser.driver.get(f"{STAFF_SITE}/staff/courses/{course}/students/{student}")
        browser.driver.find_element(By.XPATH, "//tr[td='answers.ipynb']//a[@class='view']").click()
        browser.wait("the student's notebook", lambda: "html output" in browser.js("return document.body.innerText"))
        assert "my answer" in browser.js("return document.body.innerText")
        screenshot(browser, "student-notebook-view")
        time.sleep(1)  # what a script would have done, it would have done by now
        assert browser.js("return window.nbhScriptRan") is None
        assert leak_probes(sandbox) == probes  # neither the fetch nor the <img>
        assert systemd.state(instance.service).ActiveState == "inactive"  # no server started to look
    finally:
        systemd.stop_instance(instance)


def run_to_its_end(browser: Browser, button: str, page: str, shot: str) -> None:
    """Click the button, follow its run's page to an outcome that is "ok"."""
    click(browser, button)
    browser.wait(f"the page {page}", lambda: page in browser.driver.current_url)
    browser.wait("the run's outcome", lambda: run_outcome(browser) is not None)
    screenshot(browser, shot)
    if run_outcome(browser) != "ok":
        browser.fail(f"{button} failed: {browser.driver.find_element(By.ID, 'outcome').text}")


def test_an_admin_renames_then_deletes_a_course_from_its_page(sandbox, systemd, browser, student):
    add_account("admin", "--admin")
    old, new = f"ren-{uuid.uuid4().hex[:6]}", f"renamed-{uuid.uuid4().hex[:6]}"
    sandbox.make_course(old)
    browser.diagnostics += [("the rename unit", lambda: journal(sandbox, f"nbh-course-rename@{old}:{new}.service")),
                            ("the delete unit", lambda: journal(sandbox, f"nbh-course-delete@{new}.service"))]
    try:
        assert get(entry_path(old, "w1/w1-s1-c1-intro", student)).status in (200, 302)  # a server runs
        log_in(browser, "admin")
        browser.driver.get(f"{STAFF_SITE}/staff/courses/{old}")
        fill(browser, "new_name", new)
        click(browser, "rename-force")
        run_to_its_end(browser, "rename-course", f"/staff/courses/{old}:{new}/rename?invocation=", "course-renamed")
        assert any(f"is {new}" in line for line in run_log(browser)), run_log(browser)
        # the run's page leads to the course under its new name (a rename's run is OLD:NEW's)
        course_link = browser.driver.find_element(By.ID, "course").get_attribute("href")
        assert course_link == f"{STAFF_SITE}/staff/courses/{new}", course_link
        assert sandbox.path(f"/var/lib/nbhosting/workspaces/{new}/{student}").is_dir()

        browser.driver.get(f"{STAFF_SITE}/staff/courses/{new}")
        fill(browser, "confirm", new)
        run_to_its_end(browser, "delete-course", f"/staff/courses/{new}/delete?invocation=", "course-deleted")
        assert any("students' work kept in /var/lib/nbhosting/archives/" in line for line in run_log(browser))
        browser.driver.get(f"{STAFF_SITE}/staff/")
        assert not browser.driver.find_elements(By.LINK_TEXT, new)
        assert not browser.driver.find_elements(By.LINK_TEXT, old)
    finally:
        for course in (old, new):
            systemd.stop_instance(Instance(course, student))
