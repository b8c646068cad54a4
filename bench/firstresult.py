"""Open -> first cell result, as a new student sees it, in a real browser.

``first_result(entry_url)``: seconds from navigating headless Chromium to an
entry URL until the first cell of the notebook it leads to shows "42". The
notebook's first cell must be ``print(6 * 7)``. Used by ``make bench``
(nbhosting's entry URL) and ``make bench-peer`` (JupyterHub's), so both
figures are the same code path.

One Chromium serves every call, as one student's browser that has been to
the site before: each call starts with no cookies and no site data (local
storage, IndexedDB) for the entry's site, so it is a new student to the
server, but the HTTP cache is kept. Callers make one open first, not
counted, so that the browser's caches are warm as in every later run.

The cell is run as soon as the page has a kernel: when Notebook's execution
indicator has left "idle" (which it shows before any kernel exists) and come
back to it. The page records those changes itself, from its first script
on, so that no polling misses a short "busy".
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

# As the tests' browser runs it: as root, without a display, a GPU or /dev/shm room.
from tests.chromium_setup import CHROMEDRIVER, CHROMIUM, CHROMIUM_ARGS

TIMEOUT = 120  # seconds
SOURCE = "print(6 * 7)"
# The execution indicator's states, recorded by the page itself.
RECORD_STATUS = """
window.__nbhStatus = [];
new MutationObserver(() => {
  const status = document.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status;
  const seen = window.__nbhStatus;
  if (status && seen[seen.length - 1] !== status) seen.push(status);
}).observe(document, {subtree: true, childList: true, attributes: true, attributeFilter: ['data-status']});
"""
KERNEL_READY = """
const seen = window.__nbhStatus || [];
return seen.some(s => s !== 'idle') && seen[seen.length - 1] === 'idle';
"""
FIRST_CELL = ".jp-Notebook .jp-Cell .jp-InputArea-editor"
OUTPUT = ("return document.querySelector('.jp-Notebook .jp-Cell .jp-OutputArea')"
          "?.textContent.trim() ?? ''")


class FirstResultError(RuntimeError):
    pass


_browser: tuple[webdriver.Chrome, str] | None = None


def browser() -> webdriver.Chrome:
    """The one browser, started at the first call, with a profile of its own."""
    global _browser
    if _browser is None:
        profile = tempfile.mkdtemp(prefix="nbh-first-result-")
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for argument in (*CHROMIUM_ARGS, f"--user-data-dir={profile}"):
            options.add_argument(argument)
        driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        driver.set_page_load_timeout(TIMEOUT)
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_STATUS})
        _browser = driver, profile
        atexit.register(close)
    return _browser[0]


def close() -> None:
    """Quit the browser (at exit if not before)."""
    global _browser
    if _browser is not None:
        driver, profile = _browser
        _browser = None
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def as_a_new_student(driver: webdriver.Chrome, entry_url: str) -> None:
    """No page open, no cookie, nothing the entry's site stored; the HTTP cache kept."""
    driver.get("about:blank")
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(entry_url))
    driver.execute_cdp_cmd("Storage.clearDataForOrigin", {
        "origin": origin, "storageTypes": "local_storage,indexeddb,service_workers,cache_storage,websql"})


def first_result(entry_url: str, phases: dict | None = None) -> float:
    """Seconds from navigating to `entry_url` until the first cell's output "42" appears.
    `phases`, if given, gets the seconds from the same start to each step:
    "loaded" (the page's load event), "cell" (the cell shown), "kernel" (the
    page's kernel idle), "result" (42)."""
    phases = {} if phases is None else phases
    driver = browser()
    as_a_new_student(driver, entry_url)
    try:
        wait = WebDriverWait(driver, TIMEOUT, poll_frequency=0.02)
        step = "the notebook page"
        try:
            start = time.perf_counter()
            driver.get(entry_url)
            phases["loaded"] = time.perf_counter() - start
            step = f"the cell {SOURCE!r}"
            wait.until(lambda d: SOURCE in d.execute_script(
                f"return document.querySelector('{FIRST_CELL}')?.textContent ?? ''"))
            phases["cell"] = time.perf_counter() - start
            step = "a kernel"
            wait.until(lambda d: d.execute_script(KERNEL_READY))
            phases["kernel"] = time.perf_counter() - start
            driver.find_element(By.CSS_SELECTOR, FIRST_CELL).click()
            ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
            step = "the output 42"
            wait.until(lambda d: d.execute_script(OUTPUT) == "42")
            phases["result"] = time.perf_counter() - start
            return phases["result"]
        except TimeoutException:
            raise FirstResultError(f"{entry_url}: no {step} after {TIMEOUT} s, at {driver.current_url}; "
                                   f"indicator states {driver.execute_script('return window.__nbhStatus')}"
                                   ) from None
    finally:
        driver.get("about:blank")  # the page's kernel connection closed, as a tab closed
