"""Students not seen for cull.dormant_after: nothing of theirs stays loaded in
systemd, and their next entry brings them back with their work."""

from __future__ import annotations

import json
import os
import time

import pytest

from nbhosting import dormant
from nbhosting.names import Instance

from .conftest import nbh
from .sandbox_helpers import run_unit
from .web_helpers import NOTEBOOK, entry, get, workspace_file

pytestmark = pytest.mark.sandbox

WEEK = 7 * 86400


def listed_units(sandbox) -> set[str]:
    """Every unit `systemctl list-units --all` lists."""
    out = sandbox.run("systemctl", "list-units", "--all", "--no-legend", "--plain").stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def seen_days_ago(sandbox, instance: Instance, days: float) -> None:
    """As if the student's latest entry was that long ago: the stamp the front end left, backdated."""
    path = sandbox.path(str(dormant.stamp(instance)))
    when = time.time() - days * 86400
    os.utime(path, (when, when))


def edit(sandbox, instance: Instance, text: str) -> None:
    """The student's edit, saved through their server as Notebook does."""
    saved = sandbox.api(instance, f"api/contents/{NOTEBOOK}.ipynb")["content"]
    saved["cells"][0]["source"] = text
    sandbox.api(instance, f"api/contents/{NOTEBOOK}.ipynb", method="PUT",
                body={"type": "notebook", "format": "json", "content": saved})


def test_a_dormant_student_is_unloaded_and_comes_back_with_their_work(sandbox, systemd, course, student):
    away, recent, running = (Instance(course, f"{student}-{n}") for n in ("away", "recent", "running"))
    for instance in (away, recent, running):
        entry(course, NOTEBOOK, instance.student)
    edit(sandbox, away, "print('before a week away')")
    # The stamp is the front end's, where no container reaches.
    stamp = sandbox.path(str(dormant.stamp(away)))
    assert stamp.stat().st_uid == sandbox.path("/var/lib/nbhosting/seen").stat().st_uid
    assert oct(sandbox.path("/var/lib/nbhosting/seen").stat().st_mode & 0o777) == "0o700"
    for instance in (away, recent):
        systemd.stop_instance(instance)  # as the cull does
    seen_days_ago(sandbox, away, 8)
    seen_days_ago(sandbox, recent, 6)
    seen_days_ago(sandbox, running, 8)  # a server still running is the cull's to stop first
    assert set(away.units) <= listed_units(sandbox)

    dry = nbh(sandbox, "gc", "--dry-run")
    assert f"would remove units of {away.path}, not seen for 8.0 days (dormant)" in dry.stdout, dry.stdout
    assert recent.path not in dry.stdout and running.path not in dry.stdout
    assert set(away.units) <= listed_units(sandbox)

    log = run_unit(sandbox, "nbh-gc.service")  # as nbh-gc.timer does
    assert not set(away.units) & listed_units(sandbox), log
    assert not sandbox.path(away.listen_socket).exists()
    assert systemd.state(recent.socket).SubState == "listening"
    assert systemd.state(running.service).ActiveState == "active"
    assert any(away.path in event["MESSAGE"] and event["NBH_DORMANT"] != "0"
               for event in sandbox.journal("NBH_EVENT=gc", "--since=-60s"))
    # their work is left as it was
    saved = json.loads(workspace_file(sandbox, course, away.student, f"{NOTEBOOK}.ipynb").read_text())
    assert "".join(saved["cells"][0]["source"]) == "print('before a week away')"

    # The next entry starts the socket again, as for a new student, and the
    # server serves the notebook with the edit.
    url = entry(course, NOTEBOOK, away.student)
    assert get(url, referer=None).status == 200
    assert systemd.state(away.socket).SubState in ("listening", "running")
    assert systemd.state(away.service).ActiveState == "active"
    token = sandbox.token(away)
    contents = get(f"{away.base_url}api/contents/{NOTEBOOK}.ipynb?token={token}", referer=None)
    assert contents.status == 200
    assert json.loads(contents.body)["content"]["cells"][0]["source"] == "print('before a week away')"
    assert time.time() - sandbox.path(str(dormant.stamp(away))).stat().st_mtime < WEEK  # seen again
    for instance in (away, recent, running):
        systemd.stop_instance(instance)


def test_a_socket_with_no_stamp_counts_from_when_it_began_to_listen(sandbox, systemd, course, student, stop,
                                                                    setup_config):
    """`nbh start` (no entry) leaves no stamp: the socket's start is its "seen"."""
    instance = Instance(course, student)
    stop(instance)
    assert nbh(sandbox, "start", course, student).returncode == 0
    systemd.stop_instance(instance)
    assert not sandbox.path(str(dormant.stamp(instance))).exists()
    assert instance.path not in nbh(sandbox, "gc", "--dry-run").stdout
    setup_config("[cull]\ndormant_after = 1\n")
    time.sleep(1.5)
    assert f"would remove units of {instance.path}" in nbh(sandbox, "gc", "--dry-run").stdout
