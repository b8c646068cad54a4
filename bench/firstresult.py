"""Open -> first cell result, as a new student sees it, in a real browser.

``first_result(entry_url)``: seconds from navigating headless Chromium to an
entry URL until the first cell of the notebook it leads to shows "42". The
notebook's first cell must be ``print(6 * 7)``. Used by ``make bench``
(nbhosting's entry URL) and ``make bench-peer`` (JupyterHub's), so both
figures are the same code path.

Two kinds of browser, as issue 26 asks:

- a returning one (the default): one Chromium serves every call, as one
  student's browser that has been to the site before: each call starts with
  no cookies and no site data (local storage, IndexedDB) for the entry's
  site, so it is a new student to the server, but the HTTP cache and the
  compiled-code cache are kept. Callers make one open first, not counted,
  so that the browser's caches are warm as in every later run;
- a first-ever one (``fresh=True``): a new Chromium with an empty profile
  for that call alone; the returning one is left as it was.

Each call opens a tab of its own, so that what the page's timeline and
Chromium's counters say (``breakdown``) is that page's alone.

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


def new_browser() -> tuple[webdriver.Chrome, str]:
    """A Chromium with an empty profile of its own, and the profile's folder."""
    profile = tempfile.mkdtemp(prefix="nbh-first-result-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (*CHROMIUM_ARGS, f"--user-data-dir={profile}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(TIMEOUT)
    return driver, profile


def browser() -> webdriver.Chrome:
    """The returning browser, started at the first call."""
    global _browser
    if _browser is None:
        _browser = new_browser()
        atexit.register(close)
    return _browser[0]


def close(which: tuple[webdriver.Chrome, str] | None = None) -> None:
    """Quit a browser: `which`, or the returning one (at exit if not before)."""
    global _browser
    if which is None:
        which, _browser = _browser, None
    if which is not None:
        driver, profile = which
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def as_a_new_student(driver: webdriver.Chrome, entry_url: str) -> None:
    """No cookie, nothing the entry's site stored; the HTTP cache kept."""
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(entry_url))
    driver.execute_cdp_cmd("Storage.clearDataForOrigin", {
        "origin": origin, "storageTypes": "local_storage,indexeddb,service_workers,cache_storage,websql"})


# The page's own timeline (Navigation and Resource Timing), in epoch
# milliseconds: the entry's redirect and a "starting" page, if any, are
# before the notebook page's navigation.
TIMELINE = """
const at = t => performance.timeOrigin + t;
const page = performance.getEntriesByType('navigation')[0];
const resources = performance.getEntriesByType('resource');
const scripts = resources.filter(r => r.initiatorType === 'script' || /\\.m?js(\\?|$)/.test(r.name));
const api = resources.filter(r => new URL(r.name).pathname.includes('/api/'));
const last = list => at(Math.max(...list.map(r => r.responseEnd)));
return {page_fetch: at(page.fetchStart), html: at(page.responseEnd), load: at(page.loadEventEnd),
        scripts_count: scripts.length, scripts_from_network: scripts.filter(r => r.transferSize > 0).length,
        scripts_after_load: scripts.filter(r => r.startTime > page.loadEventEnd).length,
        scripts_kib: scripts.reduce((n, r) => n + r.transferSize, 0) / 1024,
        api_count: api.length, api_first: api.length ? at(Math.min(...api.map(r => r.startTime))) : null,
        api_last: api.length ? last(api) : null};
"""
# Chromium's counters of the tab's main thread (CDP Performance.getMetrics), in seconds.
MAIN_THREAD = {"ScriptDuration": "script_s", "V8CompileDuration": "compile_s", "TaskDuration": "tasks_s",
               "LayoutDuration": "layout_s", "RecalcStyleDuration": "style_s"}


def breakdown_of(driver: webdriver.Chrome, start_epoch: float, phases: dict) -> dict:
    """Where the seconds went, from the same start as `phases`: the entry (the
    server's start included: the entry waits for it), the notebook page's
    HTML, its scripts fetched and run (to the load event), the app's plugins
    up to the cell shown (with the scripts they load later), the kernel, the
    result; what the main thread spent; what was fetched."""
    line = driver.execute_script(TIMELINE)
    since = {key: (line[key] / 1000 - start_epoch) for key in ("page_fetch", "html", "load")}
    metrics = {m["name"]: m["value"] for m in driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]}
    steps = {"entry": since["page_fetch"], "html": since["html"] - since["page_fetch"],
             "scripts": since["load"] - since["html"], "plugins": phases["cell"] - since["load"],
             "kernel": phases["kernel"] - phases["cell"],
             "result": phases["result"] - phases["kernel"]}
    api = (line["api_last"] - line["api_first"]) / 1000 if line["api_count"] else 0.0
    return {"steps_s": steps, "api_calls": line["api_count"], "api_span_s": api,
            "scripts": line["scripts_count"], "scripts_from_network": line["scripts_from_network"],
            "scripts_after_load": line["scripts_after_load"],
            "scripts_kib": round(line["scripts_kib"], 1),
            "main_thread": {name: metrics[key] for key, name in MAIN_THREAD.items() if key in metrics}}


def first_result(entry_url: str, phases: dict | None = None, breakdown: dict | None = None,
                 fresh: bool = False) -> float:
    """Seconds from navigating to `entry_url` until the first cell's output "42" appears.
    `phases`, if given, gets the seconds from the same start to each step:
    "loaded" (the page's load event), "cell" (the cell shown), "kernel" (the
    page's kernel idle), "result" (42); `breakdown`, where they went
    (breakdown_of). `fresh`: a first-ever browser, an empty profile."""
    phases = {} if phases is None else phases
    first_ever = new_browser() if fresh else None  # the returning one stays as it was
    driver = first_ever[0] if first_ever else browser()
    as_a_new_student(driver, entry_url)
    home = driver.current_window_handle
    driver.switch_to.new_window("tab")
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_STATUS})
    driver.execute_cdp_cmd("Performance.enable", {"timeDomain": "threadTicks"})
    try:
        wait = WebDriverWait(driver, TIMEOUT, poll_frequency=0.02)
        step = "the notebook page"
        try:
            start, start_epoch = time.perf_counter(), time.time()
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
            if breakdown is not None:
                breakdown.update(breakdown_of(driver, start_epoch, phases))
            return phases["result"]
        except TimeoutException:
            raise FirstResultError(f"{entry_url}: no {step} after {TIMEOUT} s, at {driver.current_url}; "
                                   f"indicator states {driver.execute_script('return window.__nbhStatus')}"
                                   ) from None
    finally:
        driver.close()  # the tab, its kernel connection with it
        driver.switch_to.window(home)
        if first_ever:
            close(first_ever)
