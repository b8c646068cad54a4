"""Reaching into the sandbox: oneshot units started as their timers do,
waits, a server's journal, a student's code in their kernel, a workspace's
mount, and the event store as nbh-events keeps it."""

from __future__ import annotations

import json
import time

from nbhosting import store
from devtools import sandbox as nbh_sandbox
from nbhosting.names import Instance

from .conftest import nbh
from .web_helpers import execute


def wait_for(predicate, timeout: float = 30, every: float = 0.2, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        time.sleep(every)


def active(systemd, instance: Instance) -> bool:
    return systemd.state(instance.service).ActiveState == "active"


def run_unit(sandbox, unit: str) -> str:
    """Start a oneshot unit as its timer does; what it logged."""
    cursor = sandbox.run("journalctl", "--show-cursor", "-n", "0", "--quiet").stdout.strip().removeprefix("-- cursor: ")
    result = sandbox.run("systemctl", "start", unit, check=False)
    log = sandbox.run("journalctl", "--no-pager", "-o", "cat", "-u", unit, f"--after-cursor={cursor}").stdout
    assert result.returncode == 0, log
    return log


def server_journal(sandbox, instance: Instance) -> str:
    return sandbox.run("journalctl", "--no-pager", "--output=cat", "--unit", instance.service, check=False).stdout


def instance_units(sandbox) -> dict[str, str]:
    """Every loaded student unit and its state."""
    listing = sandbox.run("systemctl", "list-units", "--all", "--plain", "--no-legend", "--no-pager",
                          "nbh-jupyter@*", "nbh-proxy@*").stdout
    return {line.split()[0]: line.split()[2] for line in listing.splitlines() if line.strip()}


def run_code(sandbox, systemd, instance: Instance, code: str) -> str:
    """A student's code, run in their kernel as a notebook runs it; its output."""
    kernel = sandbox.api(instance, "api/kernels", method="POST", body={"name": "python3"})["id"]
    return systemd.loop.run_until_complete(execute(sandbox, instance, kernel, code))


def mounted(sandbox, course: str, student: str) -> str:
    """What is mounted on the workspace ('' for nothing)."""
    return sandbox.run("findmnt", "--noheadings", "--output", "SOURCE,FSTYPE,OPTIONS",
                       f"/var/lib/nbhosting/workspaces/{course}/{student}", check=False).stdout.strip()


# -- the event store (nbh-events) -------------------------------------------------

DB = str(store.DEFAULT_PATH)
READ = """import json, sys
from pathlib import Path
from nbhosting import store
db = store.open_reader(Path(sys.argv[1]))
print(json.dumps(db.execute(sys.argv[2], sys.argv[3:]).fetchall()))"""


def read_store(sandbox, sql: str, *args: str) -> list[tuple]:
    """The store as the front end's account reads it (store.open_reader).
    Inside the sandbox: SQLite resolves the host's /proc/<pid>/root link to
    the host's own /."""
    python = nbh_sandbox.python()
    out = sandbox.run(python, "-c", READ, DB, sql, *args, user="nbh").stdout
    return [tuple(row) for row in json.loads(out)]


def journal_tail(sandbox) -> str | None:
    out = sandbox.run("journalctl", "--no-pager", "-o", "json", "-n", "1", "SYSLOG_IDENTIFIER=nbhosting").stdout
    return json.loads(out)["__CURSOR"] if out.strip() else None


def settled(sandbox, timeout: float = 30) -> None:
    """The store has caught up with the journal's latest nbhosting entry."""
    wait_for(lambda: sandbox.path(DB).exists(), what="the store")
    tail = journal_tail(sandbox)
    if tail is not None:
        wait_for(lambda: read_store(sandbox, "SELECT cursor FROM followed") == [(tail,)], timeout=timeout,
                 what="the store to catch up with the journal")


def stored(sandbox, *args: str) -> list[dict]:
    result = nbh(sandbox, "events", "--format", "json", *args, user="nbh")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
