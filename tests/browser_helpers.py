"""A real browser for the sandbox tests: headless Chromium driven by selenium
(tests/test_browser.py says why), the LMS page that frames a notebook from
another site, what a student does in the notebook, and a staff member's
log-in. The `browser` fixture is in conftest.py."""

from __future__ import annotations

import contextlib
import html
import http.server
import json
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from nbhosting import access, config
from devtools import sandbox as nbh_sandbox
from nbhosting.names import Instance

from .chromium_setup import CHROMEDRIVER, CHROMIUM, CHROMIUM_ARGS
from .staff_helpers import PASSWORD

# nginx in the sandbox: the notebooks' site. The LMS page is on localhost,
# another site (not only another origin), so its iframe is third-party.
NOTEBOOK_SITE = nbh_sandbox.SITE_URL
NOTEBOOK_HOST = urlsplit(NOTEBOOK_SITE).hostname
# A notebook of the course that the `course` fixture creates.
NOTEBOOK = "w1/w1-s1-c1-intro.ipynb"
SOURCE = "print(6 * 7)"
TIMEOUT = 60  # seconds, for every wait
ARTIFACTS = Path(__file__).parent / "artifacts"


def entry_url(sandbox, instance: Instance, notebook: str) -> str:
    """The URL that the LMS puts in its iframe: the front end's entry, as on FUN (no .ipynb),
    signed with the key the sandbox shares with the LMS."""
    notebook = notebook.removesuffix(".ipynb")
    key = access.read_key(sandbox.path(str(access.LMS_KEY_PATH)))
    query = access.signed_query(key, instance.course, notebook, instance.student, ttl=600)
    return f"{NOTEBOOK_SITE}/ipythonExercice/{instance.course}/{quote(notebook)}/{instance.student}?{query}"


# -- the LMS ------------------------------------------------------------------

# Besides the notebook, the LMS page frames a probe from the notebooks' site
# that sets a cookie as a third party may (SameSite=None; Secure): kept when
# the browser allows third-party cookies, and not kept when it blocks them.
PROBE_PATH, PROBE_COOKIE = "/third-party-cookie", "nbh-third-party-probe"
LMS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>LMS</title><link rel="icon" href="data:,"></head>
<body><h1>Week 1, sequence 1</h1>
<iframe id="notebook" name="notebook" src="{src}" width=1200 height=800 allow="clipboard-read; clipboard-write"></iframe>
<iframe id="probe" src="{probe}" onload="this.dataset.loaded = 'yes'" hidden></iframe>
{extra}</body></html>
"""


class LMSHandler(http.server.BaseHTTPRequestHandler):
    # The page of the last lms_page(): a connection the browser opened ahead
    # to an earlier one (a preconnect), handled by its server's thread after
    # it closed, serves it too.
    page = b""

    def do_GET(self):
        if self.path == "/":
            self.reply(self.page, "text/html; charset=utf-8")
        elif self.path == PROBE_PATH:
            self.reply(b"", "text/plain", ("Set-Cookie", f"{PROBE_COOKIE}=1; SameSite=None; Secure; Path=/"))
        else:
            self.send_error(404)

    def reply(self, body: bytes, content_type: str, *headers: tuple[str, str]) -> None:
        self.send_response(200)
        for name, value in (("Content-Type", content_type), ("Content-Length", str(len(body))), *headers):
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def lms_page(sandbox, iframe_src: str, extra: str = ""):
    """Serve the LMS's page, on an origin that the sandbox lets frame notebooks; yield its URL.
    `extra`: more of the page, after the iframes.

    The origin is one of the configuration's web.lms_origins (the notebooks'
    Content-Security-Policy frame-ancestors) on localhost, whose port is free.
    """
    path = str(config.DEFAULT_PATH)
    origins = config.load(sandbox.path(path)).web.lms_origins
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme != "http" or parts.hostname != "localhost" or not parts.port:
            continue
        try:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", parts.port), LMSHandler)
        except OSError:  # taken, by the sandbox's own LMS page for one
            continue
        break
    else:
        pytest.fail(f"the sandbox's {path} lets no free http://localhost:<port> frame notebooks "
                    f"(web.lms_origins = {list(origins)}): the LMS page has nowhere to be")
    probe = f"http://{NOTEBOOK_HOST}:{parts.port}{PROBE_PATH}"
    LMSHandler.page = LMS_PAGE.format(src=html.escape(iframe_src, quote=True), probe=probe, extra=extra).encode()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{origin}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def assert_third_party_cookies_blocked(browser: Browser) -> None:
    """Once the LMS page's probe frame has loaded, its cookie is not in the browser."""
    loaded = "return document.getElementById('probe').dataset.loaded"
    browser.wait("the LMS page's probe frame", lambda: browser.js(loaded) == "yes")
    if probe := [c for c in browser.cookies() if c["name"] == PROBE_COOKIE]:
        browser.fail(f"the browser kept a third-party cookie, it should block them: {probe}")


# -- the browser --------------------------------------------------------------

class Browser:
    """The selenium driver, with waits that fail with a screenshot, the console and more."""

    def __init__(self, driver: webdriver.Chrome, screenshot: Path):
        self.driver = driver
        self.screenshot_path = screenshot
        self.taken = False
        screenshot.unlink(missing_ok=True)  # an earlier run's
        # Console messages and uncaught errors of every frame, the iframe's
        # too, from WebDriver BiDi; the classic log adds what the browser
        # itself says (network, security: a refused frame), of the top frame.
        self.console: list[str] = []
        driver.script.add_console_message_handler(
            lambda entry: self.console.append(f"console.{entry.level}: {entry.text}"))
        driver.script.add_javascript_error_handler(
            lambda entry: self.console.append(f"uncaught: {entry.text}"))
        # More to say on a failure, e.g. the server's log: (title, function) pairs.
        self.diagnostics: list[tuple[str, Callable[[], str]]] = []

    def console_lines(self) -> list[str]:
        with contextlib.suppress(WebDriverException):
            self.console += [f"{e['source']}: {e['message'].strip()}" for e in self.driver.get_log("browser")
                             if e["source"] != "console-api"]
        return self.console or ["(empty)"]

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def screenshot(self) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        with contextlib.suppress(WebDriverException):
            self.taken = self.driver.save_screenshot(str(self.screenshot_path))

    def fail(self, message: str):
        self.screenshot()
        parts = [message, f"screenshot: {self.screenshot_path}",
                 "browser console:", *(f"  {line}" for line in self.console_lines())]
        for title, diagnostic in self.diagnostics:
            try:
                text = diagnostic()
            except Exception as error:  # a diagnostic must not hide the failure
                text = f"({error!r})"
            parts += [f"{title}:", *(f"  {line}" for line in text.splitlines())]
        pytest.fail("\n".join(parts), pytrace=False)

    def wait(self, what: str, condition, timeout: float = TIMEOUT):
        """Poll `condition()` until it is true, and return what it returned."""
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(lambda _: condition())
        except TimeoutException:
            pass
        self.fail(f"waited {timeout} s for {what}")

    def cookies(self) -> list[dict]:
        """Every cookie the browser holds, for any site (DevTools' Storage.getCookies)."""
        return self.driver.execute_cdp_cmd("Storage.getCookies", {})["cookies"]


@contextlib.contextmanager
def chromium(screenshot: str):
    """A headless Chromium of its own (profile, cookies), blocking third-party cookies."""
    for program in (CHROMIUM, CHROMEDRIVER):
        if not program.exists():
            pytest.fail(f"no {program} (Debian's chromium and chromium-driver; `make deps` installs them)")
    profile = tempfile.mkdtemp(prefix="nbh-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (*CHROMIUM_ARGS, f"--user-data-dir={profile}"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {
        "profile.block_third_party_cookies": True,
        "profile.cookie_controls_mode": 1,  # block third-party cookies
    })
    options.enable_bidi = True
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(TIMEOUT)
    try:
        yield Browser(driver, ARTIFACTS / f"{screenshot}.png")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# -- the notebook, as a student uses it -----------------------------------------

def enter_iframe(browser: Browser) -> None:
    iframe = browser.wait("the LMS page's iframe",
                          lambda: browser.driver.find_elements(By.CSS_SELECTOR, "iframe#notebook"))[0]
    browser.driver.switch_to.frame(iframe)


def first_cell_source(browser: Browser) -> str:
    if browser.js("return location.href").startswith("chrome-error:"):
        browser.fail("the iframe shows the browser's error page instead of the notebook")
    return browser.js("return document.querySelector('.jp-Notebook .jp-Cell .jp-InputArea-editor')"
                      "?.textContent ?? ''")


def wait_for_kernel_idle(browser: Browser, sandbox, instance: Instance) -> None:
    """Idle in the notebook's toolbar, with the page's websocket connected to the kernel.

    The toolbar's indicator says "idle" for a moment before it even tries
    to connect; the server's count of the kernel's connections does not lie.
    """
    indicator = "return document.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status"

    def idle_and_connected() -> bool:
        if browser.js(indicator) != "idle":
            return False
        kernels = sandbox.api(instance, "api/kernels")
        return any(k["execution_state"] == "idle" and k["connections"] > 0 for k in kernels)

    browser.wait("the kernel to be idle, with the page connected to it", idle_and_connected)


def run_first_cell(browser: Browser) -> None:
    """Click into the first cell, then Shift+Enter."""
    browser.driver.find_element(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .jp-InputArea-editor").click()
    ActionChains(browser.driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()


def first_cell_output(browser: Browser) -> str:
    return browser.js("return document.querySelector('.jp-Notebook .jp-Cell .jp-OutputArea')"
                      "?.textContent ?? ''").strip()


def save(browser: Browser) -> None:
    """The toolbar's save button (docmanager:save, as Ctrl+S)."""
    browser.driver.find_element(By.CSS_SELECTOR, 'jp-button[data-command="docmanager:save"]').click()


def saved_output(path: Path) -> str:
    """The text of the first cell's outputs in the notebook file, '' while there is none."""
    try:
        cell = json.loads(path.read_text())["cells"][0]
    except (OSError, ValueError, LookupError):
        return ""
    texts = [output.get("text", "") for output in cell.get("outputs", [])]
    return "".join("".join(text) if isinstance(text, list) else text for text in texts).strip()


# -- the student's server ---------------------------------------------------------

def server_log(sandbox, instance: Instance) -> str:
    log = sandbox.run("journalctl", "--no-pager", "--output=cat", "--lines=40", "--unit", instance.service,
                      check=False).stdout
    return "\n".join(line for line in log.splitlines() if line.strip())


# -- the staff pages and hostile outputs ---------------------------------------------

STAFF_SITE = nbh_sandbox.STAFF_URL  # the staff pages' own origin


def fill(browser: Browser, field: str, value: str) -> None:
    element = browser.driver.find_element(By.ID, field)
    element.clear()
    element.send_keys(value)


def click(browser: Browser, element_id: str) -> None:
    browser.driver.find_element(By.ID, element_id).click()


def log_in(browser: Browser, name: str) -> None:
    browser.driver.get(f"{STAFF_SITE}/staff/")
    browser.wait("the login page", lambda: "/staff/login" in browser.driver.current_url)
    fill(browser, "name", name)
    fill(browser, "password", PASSWORD)
    click(browser, "login")
    browser.wait("the course list", lambda: browser.driver.find_elements(By.ID, "who"))


def leak_probes(sandbox) -> list[str]:
    log = sandbox.path("/var/log/nginx/nbhosting.access.log")
    return re.findall(r"/nbh-leak-probe/\w+", log.read_text()) if log.exists() else []
