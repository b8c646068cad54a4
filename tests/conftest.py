"""Fixtures: the private systemd sandbox, ways to reach into it, and the
fixtures several test modules share (their helpers: tests/*_helpers.py)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from devtools import sandbox as sandbox_module
from devtools import systems
from nbhosting import paths, podman
from nbhosting.names import Instance
from nbhosting.systemd import Systemd

from .browser_helpers import chromium
from .staff_helpers import OTHER_COURSE, add_account, fresh_name

COURSE = "python-mooc"


class Sandbox:
    """The sandbox as the tests use it, from the host."""

    def run(self, *argv: str, user: str | None = None, check: bool = True, timeout: float = 120):
        return sandbox_module.run(list(argv), user=user, check=check, timeout=timeout)

    def path(self, inside: str) -> Path:
        return sandbox_module.path(inside)

    @property
    def bus_address(self) -> str:
        return f"unix:path={self.path('/run/dbus/system_bus_socket')}"

    async def systemd(self) -> Systemd:
        return await Systemd.connect(self.bus_address)

    def token(self, instance: Instance) -> str:
        return sandbox_module.server_token(instance)

    def request(self, instance: Instance, method: str, url: str, body: dict | None = None,
                token: str | None = None, timeout: float = 60) -> tuple[int, bytes]:
        return sandbox_module.request(instance, method, url, body, token, timeout)

    def api(self, instance: Instance, url: str, **kwargs) -> dict:
        status, body = self.request(instance, kwargs.pop("method", "GET"), url, **kwargs)
        assert status in (200, 201), (status, body[:500])
        return json.loads(body)

    def in_image(self, script: str):
        """A Python script run in the test image, as the containers' account,
        with no network and nothing of a student's: the completed process."""
        return self.run(*podman.argv(["run", "--rm", "--network=none", sandbox_module.IMAGE,
                                      "python3", "-c", script]), check=False)

    def containers(self) -> list[str]:
        """Names of every container of the containers' account, running or not."""
        result = self.run(*podman.argv(["ps", "--all", "--format", "{{.Names}}"]))
        return sorted(result.stdout.split())

    def unit_pids(self, unit: str) -> list[int]:
        return sandbox_module.unit_pids(unit)

    def journal(self, *matches: str) -> list[dict]:
        result = self.run("journalctl", "--no-pager", "-o", "json", *matches)
        return [json.loads(line) for line in result.stdout.splitlines()]

    def make_course(self, course: str = COURSE, *options: str) -> None:
        """A course made as an operator does: `nbh course create` from a git repository."""
        sandbox_module.make_course(course, {path: notebook(source) for path, source in COURSE_NOTEBOOKS.items()},
                                   *options)


def notebook(source: str) -> dict:
    return {
        "cells": [{"cell_type": "code", "execution_count": None, "id": "c1", "metadata": {},
                   "outputs": [], "source": [source]}],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5,
    }


# Notebooks in w* folders as on FUN, and under notebooks/ as in
# PythonDataScienceHandbook.
COURSE_NOTEBOOKS = {
    "w1/w1-s1-c1-intro.ipynb": "print(6 * 7)",
    "w2/with space.ipynb": "print('space')",
    "notebooks/01.00-IPython-Beyond-Normal-Python.ipynb": "print('pdsh')",
}


def in_sandbox_allowed() -> str | None:
    """Why the sandbox cannot run here, or None."""
    if os.geteuid() != 0:
        return "the sandbox needs root"
    if not systems.IMAGE_TAR.exists():
        return f"no test image at {systems.IMAGE_TAR} (make image)"
    return None


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    """A fresh install: whatever sandbox is up (`make demo`, `make bench`, an
    operator's hand) is powered off first, so no test sees state it did not
    make. NBH_SANDBOX_REUSE=1 keeps a running one, for quick iterations only."""
    reason = in_sandbox_allowed()
    if reason:
        # `make test` builds everything first: a missing piece there is a failure.
        pytest.fail(f"cannot boot the sandbox: {reason}")
    if not os.environ.get("NBH_SANDBOX_REUSE"):
        sandbox_module.down()
    sandbox_module.up()
    yield Sandbox()
    if not os.environ.get("NBH_SANDBOX_KEEP"):
        sandbox_module.down()


@pytest.fixture
def systemd(sandbox):
    """A client of the sandbox's systemd, on a loop of the test's own."""
    loop = asyncio.new_event_loop()
    client = loop.run_until_complete(sandbox.systemd())
    yield SyncSystemd(client, loop)
    loop.run_until_complete(client.close())
    loop.close()


class SyncSystemd:
    """The async client driven from plain test functions."""

    def __init__(self, client: Systemd, loop: asyncio.AbstractEventLoop):
        self.client, self.loop = client, loop

    def __getattr__(self, name):
        method = getattr(self.client, name)
        return lambda *args: self.loop.run_until_complete(method(*args))

    def gather(self, *coroutines):
        async def all_of():
            return await asyncio.gather(*coroutines, return_exceptions=True)
        return self.loop.run_until_complete(all_of())


@pytest.fixture
def course(sandbox) -> str:
    sandbox.make_course(COURSE)
    return COURSE


_counter = iter(range(10**6))


@pytest.fixture
def student(request) -> str:
    """A student name no other test (or earlier run's leftovers) uses, of 17
    to 28 characters: as long as the shortest id referer mode accepts
    (web.min_student_id), with room for a suffix of up to 12."""
    name = re.sub(r"[^A-Za-z0-9]", "", request.node.name.removeprefix("test_"))[:12]
    return f"{name}-s{os.getpid():08d}-{next(_counter):05d}"


def configure(sandbox, text: str) -> None:
    """Another configuration for nbh-web, which reads it when it starts."""
    sandbox.path("/etc/nbhosting/nbhosting.toml").write_text(text)
    sandbox.run("systemctl", "stop", "nbh-web.service")
    # tests switch often: not a crash loop for systemd's start limit
    sandbox.run("systemctl", "reset-failed", "nbh-web.service")


@pytest.fixture
def sandbox_config(sandbox):
    """nbh-web restarted with the sandbox's configuration plus these lines
    (the [web] table's, or whole tables after it); the sandbox's again after."""
    yield lambda extra: configure(sandbox, sandbox_module.CONFIG + extra)
    configure(sandbox, sandbox_module.CONFIG)


@pytest.fixture
def stop(systemd):
    """Servers a test started, stopped after it."""
    started = []
    yield started.append
    for instance in started:
        systemd.stop_instance(instance)


@pytest.fixture
def setup_config(sandbox):
    """The sandbox's configuration plus these lines, applied by `nbh setup`;
    the sandbox's again after."""
    def set_config(text: str) -> None:
        sandbox.path("/etc/nbhosting/nbhosting.toml").write_text(sandbox_module.CONFIG + text)
        sandbox.run("nbh", "setup")
    yield set_config
    set_config("")


def nbh(sandbox: Sandbox, *args: str, user: str | None = None) -> subprocess.CompletedProcess:
    return sandbox.run("nbh", *args, user=user, check=False)


def assert_refused_to_front_end(sandbox: Sandbox, commands: list[list[str]], units: list[str]) -> None:
    """polkit says no to nbh: each systemctl command, and StartUnit of each
    unit name straight over the bus (no systemctl mangling)."""
    commands = commands + [["busctl", "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                            "org.freedesktop.systemd1.Manager", "StartUnit", "ss", name, "replace"]
                           for name in units]
    for argv in commands:
        result = sandbox.run(argv[0], "--no-ask-password" if argv[0] != "busctl" else "--quiet", *argv[1:],
                             user="nbh", check=False)
        assert result.returncode != 0, argv
        # systemd 257 refuses a transient unit over a unit file (a template's
        # instance) before it asks polkit; 252 asks polkit first.
        assert any(reason in result.stderr.lower() for reason in REFUSALS), (argv, result.stderr)


REFUSALS = ("access denied", "authentication required", "was already loaded or has a fragment file")


@pytest.fixture
def lti_platform(registered_platform, sandbox_config):
    """The fake LTI platform, and nbh-web with the sandbox's configuration, whose
    public_url is in the launches' redirect_uri (another test may have left
    nbh-web with another)."""
    sandbox_config("")
    return registered_platform


@pytest.fixture(scope="session")
def registered_platform(sandbox):
    """A fake LTI platform on loopback, registered in the sandbox as "fake" (one
    per session: a platform's name stays its issuer's)."""
    from .lti_platform import CLIENT_ID, DEPLOYMENT_ID, FakePlatform

    platform = FakePlatform().start()
    sandbox.run("nbh", "lti", "add", "fake", "--issuer", platform.url, "--client-id", CLIENT_ID,
                "--deployment-id", DEPLOYMENT_ID, "--auth-url", platform.url + "/auth",
                "--jwks-url", platform.url + "/jwks", "--courses", "*")
    yield platform
    platform.stop()


# -- shared by several test modules (each was defined in one of them, which the
# others imported: issue 27). All per test, as they were.

@pytest.fixture
def cull_config(setup_config):
    """Timeouts of seconds; `nbh setup` writes those that are unit settings."""
    return lambda text: setup_config("[cull]\n" + text)


_course_names = iter(range(10**6))


@pytest.fixture
def course_name() -> str:
    return f"units{next(_course_names)}-{os.getpid()}"


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """The data and configuration folders in tmp_path; git without the host's configuration.
    Not autouse: the modules that need it say so (pytestmark usefixtures)."""
    monkeypatch.setattr(paths, "DATA_DIR", tmp_path / "data")
    monkeypatch.setattr(paths, "CONF_DIR", tmp_path / "conf")
    monkeypatch.setattr(paths, "COURSES_DIR", tmp_path / "data" / "courses")
    monkeypatch.setattr(paths, "COURSE_SETTINGS_DIR", tmp_path / "conf" / "courses")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "Test")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "test@example.org")


@pytest.fixture
def admin(sandbox) -> str:
    add_account("admin", "--admin")
    return "admin"


@pytest.fixture
def courses(sandbox, course) -> tuple[str, str]:
    sandbox.make_course(OTHER_COURSE)
    return course, OTHER_COURSE


@pytest.fixture
def teacher(sandbox, courses) -> str:
    """An account that is staff of the first course only."""
    name = fresh_name("teacher")
    add_account(name)
    result = nbh(sandbox, "staff", "grant", name, courses[0])
    assert result.returncode == 0, result.stderr
    return name


@pytest.fixture
def browser(request):
    """A headless Chromium of its own, per test; a screenshot of a failure that was not a wait's."""
    failed_before = request.session.testsfailed
    with chromium(request.node.name) as browser:
        try:
            yield browser
        finally:
            if request.session.testsfailed > failed_before and not browser.taken:
                browser.screenshot()  # a failure that was not a wait's


@pytest.fixture
def server(sandbox, systemd, course, student):
    """A student who has never opened the notebook: no server, no copy yet."""
    instance = Instance(course, student)
    yield instance
    systemd.stop_instance(instance)


@pytest.fixture
def open_store():
    """store.open_writer, each connection closed at the test's end (Python 3.13
    warns of a connection left to the garbage collector)."""
    from nbhosting import store

    opened = []

    def open_writer(path):
        opened.append(store.open_writer(path))
        return opened[-1]

    yield open_writer
    for db in opened:
        db.close()
