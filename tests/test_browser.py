"""A real browser: a student's notebook in an LMS page's iframe.

Headless Chromium (Debian's chromium and chromium-driver, driven by
selenium) opens a page standing for the LMS on one site (localhost) that
embeds the notebook from another site (127.0.0.1, nginx in the sandbox), with
third-party cookies blocked as browsers do more and more: the notebook must
work without any cookie of its own, on the token alone.

On a failure, the browser's screenshot is in tests/artifacts/<test>.png and
its console is in the message.
"""

from __future__ import annotations

import html
from urllib.parse import urlsplit

import pytest

from nbhosting.names import Instance

from .browser_helpers import (NOTEBOOK, NOTEBOOK_HOST, NOTEBOOK_SITE, SOURCE, TIMEOUT,
                              assert_third_party_cookies_blocked, enter_iframe, entry_url, first_cell_output,
                              first_cell_source, lms_page, run_first_cell, save, saved_output, server_log,
                              wait_for_kernel_idle)

pytestmark = pytest.mark.sandbox


# -- the test -----------------------------------------------------------------------

def test_notebook_in_a_third_party_iframe_runs_and_saves_without_cookies(sandbox, server, browser):
    browser.diagnostics.append(("the student's server's log", lambda: server_log(sandbox, server)))
    on_disk = sandbox.path(f"/var/lib/nbhosting/workspaces/{server.path}/{NOTEBOOK}")
    assert not on_disk.exists()
    with lms_page(sandbox, entry_url(sandbox, server, NOTEBOOK)) as lms_url:
        assert urlsplit(lms_url).hostname != NOTEBOOK_HOST  # another site: a third-party iframe
        browser.driver.get(lms_url)
        assert_third_party_cookies_blocked(browser)

        enter_iframe(browser)
        browser.wait(f"the notebook with its cell {SOURCE!r}", lambda: SOURCE in first_cell_source(browser))
        wait_for_kernel_idle(browser, sandbox, server)
        run_first_cell(browser)
        browser.wait("the cell's output 42", lambda: first_cell_output(browser) == "42")
        save(browser)
        browser.wait(f"the output 42 in {on_disk}", lambda: saved_output(on_disk) == "42")

        # All of it without a cookie: the browser has none for the notebook's site.
        if cookies := browser.js("return document.cookie"):
            browser.fail(f"the notebook's frame has cookies: {cookies!r}")
        if cookies := [c["name"] for c in browser.cookies() if c["domain"] == NOTEBOOK_HOST]:
            browser.fail(f"the browser kept cookies of {NOTEBOOK_HOST}: {cookies}")

    # Jupyter does set cookies (tests/test_edge.py sees them on its socket),
    # but nginx drops them: even a first party keeps none.
    browser.driver.switch_to.default_content()
    browser.driver.get(f"{NOTEBOOK_SITE}{server.base_url}api/status?token={sandbox.token(server)}")
    assert "started" in browser.driver.page_source
    assert not [c for c in browser.cookies() if c["domain"] == NOTEBOOK_HOST], browser.cookies()


def test_an_open_tab_carries_on_after_its_server_was_culled(sandbox, systemd, server, browser):
    """Revival: the tab's next request starts the server again; a new kernel runs the cell, no reload."""
    browser.diagnostics.append(("the student's server's log", lambda: server_log(sandbox, server)))
    with lms_page(sandbox, entry_url(sandbox, server, NOTEBOOK)) as lms_url:
        browser.driver.get(lms_url)
        enter_iframe(browser)
        browser.wait("the notebook", lambda: SOURCE in first_cell_source(browser))
        wait_for_kernel_idle(browser, sandbox, server)
        run_first_cell(browser)
        browser.wait("the cell's output 42", lambda: first_cell_output(browser) == "42")
        before = systemd.state(server.service).MainPID
        (session,) = sandbox.api(server, "api/sessions")

        # What `nbh cull` does to an idle server; the tab's websocket reconnects
        # at once, and starts it again once it has stopped.
        systemd.stop_instance(server)
        assert systemd.state(server.service).ActiveState != "active" or \
            systemd.state(server.service).MainPID != before
        browser.js("document.querySelector('.jp-Notebook .jp-Cell .jp-OutputArea').textContent = ''")
        browser.wait("the server to come back by itself",
                     lambda: systemd.state(server.service).ActiveState == "active", timeout=TIMEOUT)
        assert systemd.state(server.service).MainPID != before
        wait_for_kernel_idle(browser, sandbox, server)
        run_first_cell(browser)
        browser.wait("the cell's output 42 again, from a new kernel", lambda: first_cell_output(browser) == "42")
        # the same session and kernel ids, and no dialog (kernel died, pick a kernel) in the way
        assert [(s["id"], s["kernel"]["id"]) for s in sandbox.api(server, "api/sessions")] == \
            [(session["id"], session["kernel"]["id"])]
        assert browser.js("return document.querySelectorAll('.jp-Dialog').length") == 0


# -- an LTI launch -------------------------------------------------------------------

def lti_launch_form(platform, sub: str, link: str) -> str:
    """What an LMS page does for an LTI 1.3 tool: POST the login initiation
    into its iframe, at once; the rest (the platform's authorization, its form
    POST of the id_token) happens in the iframe."""
    fields = "".join(f'<input type="hidden" name="{name}" value="{html.escape(value, quote=True)}">'
                     for name, value in platform.login_query(sub, link).items())
    return (f'<form id="launch" method="post" target="notebook" action="{NOTEBOOK_SITE}/lti/login">{fields}</form>'
            '<script>document.getElementById("launch").submit()</script>\n')


def test_an_lti_launch_in_a_third_party_iframe_opens_the_notebook_without_cookies(
        sandbox, systemd, course, student, lti_platform, browser):
    sub = f"browser-{student}"
    instance = Instance(course, lti_platform.student(sub))
    browser.diagnostics.append(("the student's server's log", lambda: server_log(sandbox, instance)))
    lti_platform.links["browser-link"] = {"course": course, "notebook": NOTEBOOK.removesuffix(".ipynb")}
    try:
        with lms_page(sandbox, "about:blank", lti_launch_form(lti_platform, sub, "browser-link")) as lms_url:
            browser.driver.get(lms_url)
            assert_third_party_cookies_blocked(browser)
            enter_iframe(browser)
            browser.wait(f"the notebook with its cell {SOURCE!r}", lambda: SOURCE in first_cell_source(browser))
            assert browser.js("return location.pathname") == f"{instance.base_url}notebooks/{NOTEBOOK}"
            wait_for_kernel_idle(browser, sandbox, instance)
            run_first_cell(browser)
            browser.wait("the cell's output 42", lambda: first_cell_output(browser) == "42")
            if cookies := [c["name"] for c in browser.cookies() if c["domain"] == NOTEBOOK_HOST]:
                browser.fail(f"the browser kept cookies of {NOTEBOOK_HOST}: {cookies}")
        assert lti_platform.auth_requests[-1]["login_hint"] == sub  # through the platform, in the iframe
    finally:
        systemd.stop_instance(instance)
