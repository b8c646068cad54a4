"""The sandbox boots and goes away without a trace on the host."""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

import pytest

from nbhosting import sandbox as nbh_sandbox

from .conftest import COURSE

pytestmark = pytest.mark.sandbox


@pytest.fixture
def sandbox_session(sandbox):
    """The session's sandbox is taken down and brought back by these tests."""
    return sandbox


def namespaces_of(pid: int) -> set[str]:
    return {os.readlink(f"/proc/{pid}/ns/{kind}") for kind in ("mnt", "pid", "cgroup")}


def processes_in(namespaces: set[str]) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if namespaces_of(int(entry.name)) & namespaces:
                    found.append(int(entry.name))
            except OSError:
                pass  # gone meanwhile
    return found


def host_units() -> list[Path]:
    return [p for d in ("/etc/systemd/system", "/usr/lib/systemd/system", "/run/systemd/system")
            for p in Path(d).glob("nbh-*")]


def tmp_listing() -> dict[str, set[str]]:
    return {d: set(os.listdir(d)) for d in ("/tmp", "/var/tmp")}


def test_up_down_three_times_leaves_the_host_as_it_was(sandbox_session):
    nbh_sandbox.down()
    mounts = Path("/proc/self/mountinfo").read_text()
    markers = [tempfile.NamedTemporaryFile(dir=d, prefix="nbh-marker-", delete=False).name
               for d in ("/tmp", "/var/tmp")]
    before = tmp_listing()
    try:
        for _ in range(3):
            pid = nbh_sandbox.up()
            namespaces = namespaces_of(pid)
            assert nbh_sandbox.run(["systemctl", "is-system-running"], check=False).stdout.strip() == "running"
            # something runs in there: a student's server
            sandbox_session.make_course(COURSE)
            nbh_sandbox.run(["nbh", "start", COURSE, "up-down"])
            nbh_sandbox.down()
            assert processes_in(namespaces) == []
            assert not nbh_sandbox.cgroup().exists()
            assert nbh_sandbox.pid() is None
            assert Path("/proc/self/mountinfo").read_text() == mounts
            assert host_units() == []
            for marker in markers:
                assert Path(marker).exists(), marker
            after = tmp_listing()
            for folder in after:
                assert before[folder] <= after[folder], f"{folder} lost files"
                new = after[folder] - before[folder]
                assert not [n for n in new if re.match(r"systemd-private-|crun\.|podman|run-", n)], new
        nbh_sandbox.down()  # idempotent
    finally:
        for marker in markers:
            Path(marker).unlink(missing_ok=True)
        nbh_sandbox.up()  # as the session's other tests expect it


def test_up_cleans_what_a_crashed_run_left(sandbox_session):
    pid = nbh_sandbox.up()
    namespaces = namespaces_of(pid)
    # a crash of the sandbox: systemd killed, its state file left behind
    os.kill(pid, 9)
    deadline = time.monotonic() + 10
    while nbh_sandbox.pid() == pid:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert processes_in(namespaces) == []  # the kernel ends a PID namespace with its init
    assert nbh_sandbox.cgroup().exists()  # left over
    new_pid = nbh_sandbox.up()
    assert new_pid != pid
    assert nbh_sandbox.run(["systemctl", "is-system-running"], check=False).stdout.strip() == "running"


