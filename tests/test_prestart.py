"""The kernel is ready when the page is: an entry starts the notebook's kernel
while the browser loads the page, the page adopts it; one that no page takes
goes after web.prestart_timeout, and leaves the server to be culled as any
idle one (nbhosting/prestart.py, images/jupyter/nbh_prestart.py)."""

from __future__ import annotations

import re

import pytest

from nbhosting.names import Instance

from .browser_helpers import (NOTEBOOK, SOURCE, enter_iframe, entry_url, first_cell_output, first_cell_source,
                              lms_page, run_first_cell, server_log, wait_for_kernel_idle)
from .sandbox_helpers import active, run_unit, server_journal, wait_for
from .web_helpers import entry

pytestmark = pytest.mark.sandbox

OTHER = "notebooks/01.00-IPython-Beyond-Normal-Python"


def prestarted(sandbox, instance: Instance) -> dict[str, str]:
    """The kernels nbh_prestart started, by id: their notebook's path."""
    return dict(re.findall(r"nbh_prestart: kernel (\S+) started for (.+)", server_journal(sandbox, instance)))


def started(sandbox, instance: Instance) -> list[str]:
    """Every kernel the server started, by whomever: Jupyter logs each."""
    return re.findall(r"Kernel started: (\S+)", server_journal(sandbox, instance))


def test_the_page_adopts_the_kernel_started_for_it(sandbox, server, browser):
    """A cold open in a real browser: the page's session has the pre-started
    kernel, the only one the server ever started, and a cell runs in it."""
    browser.diagnostics.append(("the student's server's log", lambda: server_log(sandbox, server)))
    with lms_page(sandbox, entry_url(sandbox, server, NOTEBOOK)) as lms_url:
        browser.driver.get(lms_url)
        enter_iframe(browser)
        browser.wait(f"the notebook with its cell {SOURCE!r}", lambda: SOURCE in first_cell_source(browser))
        wait_for_kernel_idle(browser, sandbox, server)
        run_first_cell(browser)
        browser.wait("the cell's output 42", lambda: first_cell_output(browser) == "42")
        # Nor did the page ask for anything its server refuses (the language
        # server's plugin asked for lsp/status, a 404: images/jupyter/page_config.json).
        refused = browser.driver.execute_script(
            "return performance.getEntriesByType('resource')"
            ".filter(e => e.responseStatus >= 400).map(e => `${e.responseStatus} ${e.name}`)")
        assert refused == []
    (session,) = sandbox.api(server, "api/sessions")
    kernels = [k["id"] for k in sandbox.api(server, "api/kernels")]
    assert prestarted(sandbox, server) == {session["kernel"]["id"]: NOTEBOOK}
    assert kernels == [session["kernel"]["id"]]
    assert started(sandbox, server) == kernels  # the page started none of its own
    assert f"nbh_prestart: kernel {kernels[0]} adopted" in server_journal(sandbox, server)


def test_one_kernel_per_notebook_however_often_it_is_opened(sandbox, systemd, course, student, stop):
    instance = Instance(course, student)
    stop(instance)
    entry(course, NOTEBOOK.removesuffix(".ipynb"), student)
    wait_for(lambda: prestarted(sandbox, instance), what="the first notebook's kernel")
    entry(course, NOTEBOOK.removesuffix(".ipynb"), student)  # again: nbh-web does not ask again
    entry(course, OTHER, student)  # another notebook: a kernel of its own
    wait_for(lambda: len(prestarted(sandbox, instance)) == 2, what="the second notebook's kernel")
    assert "has a session already" not in server_journal(sandbox, instance)
    # Asked again, as nbh-web does once web.prestart_timeout has passed: nothing more.
    again = sandbox.api(instance, "nbh/prestart", method="POST", body={"path": NOTEBOOK, "timeout": 60})
    assert again["started"] is False
    wait_for(lambda: f"nbh_prestart: {NOTEBOOK} has a session already" in server_journal(sandbox, instance),
             what="the server's answer to a second ask")
    sessions = {s["path"]: s["kernel"]["id"] for s in sandbox.api(instance, "api/sessions")}
    assert sessions == {path: kernel for kernel, path in prestarted(sandbox, instance).items()}
    assert set(sessions) == {NOTEBOOK, f"{OTHER}.ipynb"}
    assert sorted(k["id"] for k in sandbox.api(instance, "api/kernels")) == sorted(sessions.values())
    assert sorted(started(sandbox, instance)) == sorted(sessions.values())


def test_a_server_started_again_has_its_kernel_started_again(sandbox, systemd, course, student, stop):
    """nbh-web asks once per notebook within web.prestart_timeout, but a new
    server has none of the kernels asked of the one before."""
    instance = Instance(course, student)
    stop(instance)
    entry(course, NOTEBOOK.removesuffix(".ipynb"), student)
    wait_for(lambda: prestarted(sandbox, instance), what="the kernel of the first server")
    systemd.stop_instance(instance)  # as the cull would, or a crash
    entry(course, NOTEBOOK.removesuffix(".ipynb"), student)
    wait_for(lambda: len(prestarted(sandbox, instance)) == 2, what="the kernel of the second server")
    (session,) = sandbox.api(instance, "api/sessions")
    assert session["path"] == NOTEBOOK


def test_a_kernel_no_page_takes_goes_and_the_server_is_culled_as_any_idle_one(
        sandbox, systemd, course, student, sandbox_config, stop):
    instance = Instance(course, student)
    stop(instance)
    # The cull's idle timeout is long: only the pre-start's own timeout ends the kernel.
    sandbox_config("prestart_timeout = 3\n[cull]\nidle_timeout = 3600\ngrace = 6\n")
    entry(course, NOTEBOOK.removesuffix(".ipynb"), student)  # and no page ever comes
    wait_for(lambda: prestarted(sandbox, instance), what="the pre-started kernel")
    (kernel,) = prestarted(sandbox, instance)
    wait_for(lambda: f"nbh_prestart: kernel {kernel} of {NOTEBOOK} shut down" in server_journal(sandbox, instance),
             timeout=30, what="the pre-started kernel's timeout")
    # Asked as `nbh cull` asks, which is not activity.
    assert sandbox.api(instance, "api/kernels?no_track_activity=1") == []
    assert sandbox.api(instance, "api/sessions?no_track_activity=1") == []
    assert active(systemd, instance)

    def culled() -> bool:
        run_unit(sandbox, "nbh-cull.service")  # as the timer does
        return not active(systemd, instance)
    wait_for(culled, timeout=30, every=1, what="the cull of the kernel-less server")
    (event,) = sandbox.journal("NBH_EVENT=cull", f"NBH_STUDENT={instance.student}")
    assert "no kernel" in event["NBH_REASON"], event
    assert systemd.state(instance.socket).SubState == "listening"  # comes back on the next request


# Asks for the kernels at every turn of the loop while one starts, as the
# page's first requests do while the pre-started kernel starts.
KERNELS_WHILE_ONE_STARTS = """
import asyncio
from nbh_sessions import KernelManager

async def main():
    manager = KernelManager()
    start = asyncio.ensure_future(manager.start_kernel(kernel_name="python3"))
    states = set()
    while not start.done():
        states.update(kernel["execution_state"] for kernel in manager.list_kernels())
        await asyncio.sleep(0)
    await manager.shutdown_kernel(await start, now=True)
    print(",".join(sorted(states)))

asyncio.run(main())
"""


def test_a_kernel_being_started_is_listed_as_starting(sandbox):
    """jupyter_client lists a new kernel a turn of the loop before
    jupyter_server sets its activity, and Jupyter's model of it raised then:
    /api/status and /api/kernels answered 500 to a page that asked while its
    pre-started kernel started (seen once in CI). The image's kernel manager
    lists it as starting."""
    result = sandbox.in_image(KERNELS_WHILE_ONE_STARTS)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "starting" in result.stdout.strip().split(","), result.stdout
