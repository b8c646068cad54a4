"""The File menu's entries in a real browser (the image's @nbhosting/menus and
nbh_menus): reset to the course's version, share a static version, show the
student id; an iframe reloaded alone; JupyterLab as a course's interface.

As tests/test_browser.py: headless Chromium, the notebook in an LMS page's
cross-site iframe, third-party cookies blocked. Screenshots of the menu and
of each dialog are kept in tests/artifacts/menus-*.png.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.expected_conditions import staleness_of

from nbhosting.names import Instance

from .browser_helpers import (ARTIFACTS, NOTEBOOK_SITE, Browser, chromium, enter_iframe, entry_url, first_cell_source,
                              leak_probes, lms_page, save, server_log, wait_for_kernel_idle)


pytestmark = pytest.mark.sandbox

COURSE = "menus"
LAB_COURSE = "menus-lab"
INTRO = "w1/intro.ipynb"
FIGURE = "w1/figure.ipynb"
# What a script in an output would do if it ran on the shared page: a
# global, and a request the test looks for in nginx's log. It runs in the
# student's own notebook (trusted: the student ran it), where it asks for
# /nbh-leak-probe/nb; on the shared page it would ask for /nbh-leak-probe/shared.
SCRIPT = ("from IPython.display import HTML, display\n"
          "display(HTML(\"<script>window.nbhScriptRan = 1; "
          "fetch('/nbh-leak-probe/' + location.pathname.split('/')[1]);</script>"
          "<img src='/nbh-leak-probe/img'><b>html output</b>\"))")
PLOT = ("import matplotlib.pyplot as plt\n"
        "plt.plot([1, 4, 2, 3])\n"
        "plt.title('nbh figure')\n"
        "plt.show()")
TIMEOUT = 60
# What the JupyterLab course hides: File > Rename, and the toolbar's save button.
LAB_HIDDEN = ("docmanager:rename", "save")


def notebook(*sources: str, outputs: list | None = None) -> dict:
    return {
        "cells": [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {},
                   "outputs": outputs if (outputs and i == 0) else [], "source": [source]}
                  for i, source in enumerate(sources)],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5,
    }


HTML_OUTPUT = [{"output_type": "display_data", "metadata": {},
                "data": {"text/html": ["<b>from the course</b>"], "text/plain": ["<b>"]}}]
NOTEBOOKS = {
    INTRO: notebook("print(6 * 7)"),
    FIGURE: notebook(PLOT, SCRIPT),
    "w1/with-output.ipynb": notebook("print('course')", outputs=HTML_OUTPUT),
}


def make_courses(sandbox) -> None:
    from devtools import sandbox as sandbox_module
    sandbox_module.make_course(COURSE, NOTEBOOKS)
    sandbox_module.make_course(LAB_COURSE, NOTEBOOKS)
    sandbox.run("nbh", "course", "set", LAB_COURSE, "interface=lab", f"hide={','.join(LAB_HIDDEN)}")


def a_pair(course: str):
    """A fixture: a new student of this course, whose server is stopped afterwards."""
    @pytest.fixture
    def fixture(sandbox, systemd, student):
        make_courses(sandbox)
        instance = Instance(course, student)
        yield instance
        systemd.stop_instance(instance)
    return fixture


pair = a_pair(COURSE)
lab_pair = a_pair(LAB_COURSE)


# -- driving Notebook's menus and dialogs -----------------------------------------

def shot(browser: Browser, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    browser.driver.save_screenshot(str(ARTIFACTS / f"menus-{name}.png"))


def menu_entry(browser: Browser, menu: str, command: str, screenshot: str | None = None) -> None:
    """Open a menu of the menu bar and click the entry of this command."""
    def title():
        for item in browser.driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item"):
            if item.text.strip() == menu:
                return item
        return None
    browser.wait(f"the {menu} menu", title).click()
    entry = browser.wait(f"the menu entry {command}", lambda: browser.driver.find_elements(
        By.CSS_SELECTOR, f'.lm-Menu-item[data-command="{command}"]'))[0]
    if screenshot:
        shot(browser, screenshot)
    entry.click()


def dialog_text(browser: Browser, what: str) -> str:
    return browser.wait(f"the dialog {what!r}", lambda: next(
        (d.text for d in browser.driver.find_elements(By.CSS_SELECTOR, ".jp-Dialog-content") if what in d.text),
        None))


def dialog_button(browser: Browser, label: str) -> None:
    """Click the button, and wait for its dialog to go (another may follow)."""
    buttons = browser.wait(f"the dialog's button {label!r}", lambda: [
        b for b in browser.driver.find_elements(By.CSS_SELECTOR, ".jp-Dialog-footer button") if b.text == label])
    buttons[0].click()
    browser.wait("the dialog to close", lambda: staleness_of(buttons[0])(browser.driver))


def type_into_cell(browser: Browser, index: int, text: str) -> None:
    editors = browser.driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .jp-InputArea-editor")
    editors[index].click()
    editor = editors[index].find_element(By.CSS_SELECTOR, ".cm-content")
    ActionChains(browser.driver).key_down(Keys.CONTROL).send_keys("a").key_up(Keys.CONTROL).perform()
    editor.send_keys(Keys.DELETE)
    editor.send_keys(text)


def run_cell(browser: Browser, index: int) -> None:
    editors = browser.driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .jp-InputArea-editor")
    editors[index].click()
    ActionChains(browser.driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()


def open_in_iframe(browser: Browser, sandbox, instance: Instance, notebook: str, source: str):
    """The LMS page with the notebook in its iframe; the browser inside the iframe."""
    browser.diagnostics.append(("the student's server's log", lambda: server_log(sandbox, instance)))
    lms = lms_page(sandbox, entry_url(sandbox, instance, notebook))
    browser.driver.get(lms.__enter__())
    enter_iframe(browser)
    browser.wait(f"the notebook with {source!r}", lambda: source in first_cell_source(browser))
    return lms


def workspace(sandbox, instance: Instance) -> Path:
    return sandbox.path(f"/var/lib/nbhosting/workspaces/{instance.path}")


def journal_events(sandbox, event: str, instance: Instance) -> list[dict]:
    """The events of the student's unit, as journald recorded them (its _SYSTEMD_UNIT)."""
    return sandbox.journal(f"NBH_EVENT={event}", f"_SYSTEMD_UNIT={instance.service}")


def http_get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


# -- the tests ---------------------------------------------------------------------------

def test_reset_to_original_keeps_a_backup_and_reloads_the_course_version(sandbox, pair, browser):
    lms = open_in_iframe(browser, sandbox, pair, INTRO, "print(6 * 7)")
    try:
        wait_for_kernel_idle(browser, sandbox, pair)
        type_into_cell(browser, 0, 'print("my edit")')
        save(browser)
        on_disk = workspace(sandbox, pair) / INTRO
        browser.wait("the edit saved", lambda: "my edit" in on_disk.read_text())

        menu_entry(browser, "File", "nbhosting:reset", screenshot="file-menu")
        text = dialog_text(browser, "Replace intro.ipynb")
        assert "backup" in text
        shot(browser, "reset-confirm")
        dialog_button(browser, "Reset")
        done = dialog_text(browser, "is now the course's version")
        shot(browser, "reset-done")
        backup = browser.driver.find_element(By.CSS_SELECTOR, ".jp-Dialog .nbh-backup").text
        dialog_button(browser, "Ok")

        browser.wait("the course's version in the page", lambda: first_cell_source(browser) == "print(6 * 7)")
        assert json.loads(on_disk.read_text())["cells"][0]["source"] == ["print(6 * 7)"]
        assert re.fullmatch(r"w1/intro-backup-\d{4}-\d\d-\d\d-\d{6}\.ipynb", backup), (backup, done)
        kept = workspace(sandbox, pair) / backup
        assert "my edit" in kept.read_text()
        # the page is not dirty, and saving does not undo the reset
        save(browser)
        time.sleep(1)
        assert "my edit" not in on_disk.read_text()
        (event,) = journal_events(sandbox, "reset", pair)
        assert (event["NBH_NOTEBOOK"], event["NBH_BACKUP"]) == (INTRO, backup)
    finally:
        lms.__exit__(None, None, None)


def test_share_shows_the_figure_runs_no_script_updates_in_place_and_withdraws(sandbox, pair, browser):
    lms = open_in_iframe(browser, sandbox, pair, FIGURE, "import matplotlib")
    try:
        wait_for_kernel_idle(browser, sandbox, pair)
        run_cell(browser, 0)
        browser.wait("the figure in the notebook", lambda: browser.js(
            "return document.querySelectorAll('.jp-OutputArea-output img').length") >= 1)
        run_cell(browser, 1)
        browser.wait("the script to run in the student's own notebook", lambda: "/nbh-leak-probe/nb" in leak_probes(sandbox))
        assert browser.js("return window.nbhScriptRan") == 1
        save(browser)

        menu_entry(browser, "File", "nbhosting:share")
        dialog_text(browser, "Anyone with this link")
        shot(browser, "share-dialog")
        url = browser.driver.find_element(By.CSS_SELECTOR, ".jp-Dialog .nbh-share-link").get_attribute("value")
        assert browser.driver.find_element(By.CSS_SELECTOR, ".jp-Dialog .nbh-share-open").get_attribute("href") == url
        dialog_button(browser, "Close")
        assert re.fullmatch(rf"{NOTEBOOK_SITE}/shared/{COURSE}/[a-z2-7]{{26}}/[a-z2-7]{{26}}", url), url
        assert pair.student not in url

        status, headers, page = http_get(url)
        assert status == 200
        assert headers["Content-Security-Policy"].startswith("sandbox;")
        assert "allow-same-origin" not in headers["Content-Security-Policy"]
        assert b"html output" in page

        # A reader: another browser, no cookie, no token.
        probes = leak_probes(sandbox)
        with chromium("menus-shared-reader") as reader:
            reader.driver.get(url)
            reader.wait("the figure on the shared page", lambda: reader.js(
                "return [...document.images].filter(i => i.src.startsWith('data:image/png') "
                "&& i.complete && i.naturalWidth > 100).length") >= 1)
            assert "html output" in reader.js("return document.body.innerText")
            reader.driver.save_screenshot(str(ARTIFACTS / "menus-shared-page.png"))
            time.sleep(1)  # what a script would have done, it would have done by now
            assert reader.js("return window.nbhScriptRan") is None
            assert leak_probes(sandbox) == probes  # nothing asked for: neither the fetch nor the <img>

            # An edit, shared again: the same address shows it.
            type_into_cell(browser, 1, 'print("second version")')
            run_cell(browser, 1)
            save(browser)
            browser.wait("the edit saved", lambda: "second version" in
                         (workspace(sandbox, pair) / FIGURE).read_text())
            menu_entry(browser, "File", "nbhosting:share")
            dialog_text(browser, "Anyone with this link")
            again = browser.driver.find_element(By.CSS_SELECTOR, ".jp-Dialog .nbh-share-link").get_attribute("value")
            assert again == url
            reader.driver.refresh()
            reader.wait("the edit on the shared page", lambda: "second version" in reader.js(
                "return document.body.innerText"))

            # Withdrawn: the address is gone.
            dialog_button(browser, "Withdraw")
            dialog_text(browser, "no longer works")
            shot(browser, "share-withdrawn")
            dialog_button(browser, "Ok")
            assert http_get(url)[0] == 404
        actions = [e["NBH_ACTION"] for e in journal_events(sandbox, "share", pair)]
        assert actions == ["share", "share", "withdraw"]
    finally:
        lms.__exit__(None, None, None)


def test_show_my_student_id(sandbox, pair, browser):
    lms = open_in_iframe(browser, sandbox, pair, INTRO, "print(6 * 7)")
    try:
        menu_entry(browser, "File", "nbhosting:whoami")
        dialog_text(browser, "Student id")
        shot(browser, "student-id")
        assert browser.driver.find_element(By.CSS_SELECTOR, ".jp-Dialog .nbh-student").text == pair.student
        assert browser.driver.find_element(By.CSS_SELECTOR, ".jp-Dialog .nbh-course").text == COURSE
    finally:
        lms.__exit__(None, None, None)


BROKEN_IMAGES = "return [...document.images].filter(i => i.complete && i.naturalWidth === 0).map(i => i.src)"


def test_reloading_only_the_iframe_and_the_jupyterlab_link_keep_working(sandbox, pair, browser):
    lms = open_in_iframe(browser, sandbox, pair, INTRO, "print(6 * 7)")
    try:
        wait_for_kernel_idle(browser, sandbox, pair)
        (kernel,) = sandbox.api(pair, "api/kernels")
        assert "token=" in browser.js("return location.search")
        assert browser.js(BROKEN_IMAGES) == []

        browser.js("location.reload()")
        browser.wait("the notebook again", lambda: first_cell_source(browser) == "print(6 * 7)")
        wait_for_kernel_idle(browser, sandbox, pair)
        assert [k["id"] for k in sandbox.api(pair, "api/kernels")] == [kernel["id"]]
        assert browser.js(BROKEN_IMAGES) == []

        # Notebook's link to JupyterLab opens a tab of its own, first-party.
        handles = set(browser.driver.window_handles)
        menu_entry(browser, "View", "application:open-lab")
        new = browser.wait("JupyterLab's tab", lambda: set(browser.driver.window_handles) - handles)
        browser.driver.switch_to.window(new.pop())
        browser.wait("JupyterLab", lambda: browser.js(
            "return document.querySelector('#jp-main-dock-panel') !== null"))
        assert browser.js(BROKEN_IMAGES) == []
        log = server_log(sandbox, pair)
        assert "Traceback" not in log, log
        assert not re.search(r"\b403 GET\b", log), log
    finally:
        lms.__exit__(None, None, None)


def test_a_course_in_jupyterlab_has_the_same_menu(sandbox, lab_pair, browser):
    lms = open_in_iframe(browser, sandbox, lab_pair, INTRO, "print(6 * 7)")
    try:
        assert browser.js("return location.pathname") == f"{lab_pair.base_url}lab/tree/{INTRO}"
        menu_entry(browser, "File", "nbhosting:whoami", screenshot="lab-file-menu")
        dialog_text(browser, "Student id")
        assert browser.driver.find_element(By.CSS_SELECTOR, ".jp-Dialog .nbh-student").text == lab_pair.student
        dialog_button(browser, "Ok")

        # What the course hides: the File menu's entry, the toolbar's button.
        assert browser.js("return document.querySelector("
                          "'.jp-NotebookPanel-toolbar .jp-Toolbar-item[data-jp-item-name=\"run\"]')?.offsetParent != null")
        assert browser.js("return document.querySelector("
                          "'.jp-NotebookPanel-toolbar .jp-Toolbar-item[data-jp-item-name=\"save\"]')?.offsetParent") is None
        file_menu = [i for i in browser.driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item") if i.text == "File"]
        file_menu[0].click()
        browser.wait("the File menu's Save As", lambda: browser.driver.find_elements(
            By.CSS_SELECTOR, '.lm-Menu-item[data-command="docmanager:save-as"]'))
        assert not browser.driver.find_elements(By.CSS_SELECTOR, '.lm-Menu-item[data-command="docmanager:rename"]')
        ActionChains(browser.driver).send_keys(Keys.ESCAPE).perform()

        menu_entry(browser, "File", "nbhosting:share")
        dialog_text(browser, "Anyone with this link")
        url = browser.driver.find_element(By.CSS_SELECTOR, ".jp-Dialog .nbh-share-link").get_attribute("value")
        dialog_button(browser, "Close")
        status, _, page = http_get(url)
        assert status == 200 and b"print" in page

        menu_entry(browser, "File", "nbhosting:reset")
        dialog_text(browser, "Replace intro.ipynb")
        dialog_button(browser, "Reset")
        dialog_text(browser, "is now the course's version")
        backup = browser.driver.find_element(By.CSS_SELECTOR, ".jp-Dialog .nbh-backup").text
        dialog_button(browser, "Ok")
        assert (workspace(sandbox, lab_pair) / backup).is_file()
    finally:
        lms.__exit__(None, None, None)


def test_a_notebook_fresh_from_the_course_is_trusted_and_a_changed_one_is_not(sandbox, pair, systemd):
    """Jupyter's trust, through its own API: the course's output is trusted,
    output that appeared in the file by other means is not."""
    from devtools import sandbox as sandbox_module
    systemd.start_instance(pair)
    path = "w1/with-output.ipynb"
    sandbox_module.run(["install", "-D", "-o", "nbh-jupyter", "-g", "nbh-jupyter", "-m", "0660",
                        f"/var/lib/nbhosting/courses/{COURSE}/{path}",
                        f"/var/lib/nbhosting/workspaces/{pair.path}/{path}"])

    def trusted() -> bool:
        content = sandbox.api(pair, f"api/contents/{path}")["content"]
        return content["cells"][0]["metadata"].get("trusted")

    assert trusted() is True
    changed = json.loads((workspace(sandbox, pair) / path).read_text())
    changed["cells"][0]["outputs"][0]["data"]["text/html"] = ["<b>not from the course</b>"]
    (workspace(sandbox, pair) / path).write_text(json.dumps(changed))
    assert trusted() is False
