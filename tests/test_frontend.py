"""The front end's memory of the kernels it asked for, without systemd
(tests/test_prestart.py tests the pre-start itself, in the sandbox)."""

import asyncio

from nbhosting import config, prestart
from nbhosting.names import Instance
from nbhosting.web.base import Frontend


def test_each_notebook_is_asked_once_within_the_timeout_and_only_those_are_remembered(monkeypatch):
    asked, now = [], [1000.0]

    async def ask(instance, secret, notebook, timeout):
        asked.append((instance.student, notebook))
        return True

    monkeypatch.setattr(prestart, "prestart", ask)
    monkeypatch.setattr("nbhosting.web.base.time.monotonic", lambda: now[0])

    async def entries():
        frontend = Frontend(config.Config(web=config.Web(prestart_timeout=60)), b"k" * 32, None)
        ada, bob = Instance("python", "ada"), Instance("python", "bob")
        frontend.prestart(ada, "a.ipynb")
        frontend.prestart(ada, "a.ipynb")  # within the timeout: not asked
        frontend.prestart(ada, "b.ipynb")
        now[0] += 30
        frontend.prestart(bob, "a.ipynb")
        now[0] += 31  # ada's past the timeout, bob's not
        frontend.prestart(ada, "a.ipynb")
        frontend.prestart(bob, "a.ipynb")
        await asyncio.sleep(0)
        # Forgotten once past the timeout: thousands of students' entries never pile up.
        assert list(frontend._prestarted) == [(bob, "a.ipynb"), (ada, "a.ipynb")]

    asyncio.run(entries())
    assert asked == [("ada", "a.ipynb"), ("ada", "b.ipynb"), ("bob", "a.ipynb"), ("ada", "a.ipynb")]


def test_nothing_is_asked_when_the_pre_start_is_off(monkeypatch):
    asked = []

    async def ask(*args):
        asked.append(args)

    monkeypatch.setattr(prestart, "prestart", ask)

    async def entries():
        frontend = Frontend(config.Config(web=config.Web(prestart_timeout=0)), b"k" * 32, None)
        frontend.prestart(Instance("python", "ada"), "a.ipynb")
        await asyncio.sleep(0)
        assert frontend._prestarted == {}

    asyncio.run(entries())
    assert asked == []
