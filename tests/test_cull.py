"""Idle servers stop by themselves and come back by themselves."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from tornado.websocket import websocket_connect

from nbhosting import podman
from devtools import sandbox as nbh_sandbox
from nbhosting.names import Instance

from .conftest import nbh
from .sandbox_helpers import active, run_unit, wait_for
from .web_helpers import HOST, NOTEBOOK, PORT, entry, execute, get

pytestmark = pytest.mark.sandbox


def only_running_containers(sandbox, systemd) -> None:
    running = {Instance.from_unit(u).container for u in systemd.list_instances()
               if systemd.state(u).ActiveState in ("active", "activating", "deactivating")}
    assert set(sandbox.containers()) <= running


def new_kernel(sandbox, systemd, instance: Instance) -> str:
    return sandbox.api(instance, "api/kernels", method="POST", body={"name": "python3"})["id"]


def test_idle_servers_are_culled_busy_and_recent_ones_are_not(sandbox, systemd, course, student, cull_config):
    idle, busy, recent, kernelless = (Instance(course, f"{student}-{n}") for n in ("idle", "busy", "recent", "none"))
    kernels = {}
    for instance in (idle, busy, recent, kernelless):
        systemd.start_instance(instance)
        if instance is not kernelless:
            kernels[instance] = new_kernel(sandbox, systemd, instance)
            systemd.loop.run_until_complete(execute(sandbox, instance, kernels[instance], "x = 1"))
    cull_config("idle_timeout = 4\ngrace = 4\n")
    # a computation that outlasts the timeout, silent all along
    computing = systemd.loop.create_task(execute(sandbox, busy, kernels[busy], "import time; time.sleep(30)"))
    systemd.loop.run_until_complete(asyncio.sleep(5))
    systemd.loop.run_until_complete(execute(sandbox, recent, kernels[recent], "x = 2"))

    dry = nbh(sandbox, "cull", "--dry-run", user="nbh")
    assert dry.returncode == 0, dry.stderr
    lines = {line.split()[1]: line for line in dry.stdout.splitlines()[1:]}
    assert "would stop" in lines[idle.student] and "idle" in lines[idle.student]
    assert "would stop" in lines[kernelless.student] and "no kernel" in lines[kernelless.student]
    assert "keeps" in lines[busy.student] and "busy" in lines[busy.student]
    assert "keeps" in lines[recent.student]
    assert all(active(systemd, i) for i in (idle, busy, recent, kernelless))

    run_unit(sandbox, "nbh-cull.service")  # as the timer does
    assert not active(systemd, idle) and not active(systemd, kernelless)
    assert active(systemd, busy) and active(systemd, recent)
    assert systemd.state(idle.socket).SubState == "listening"  # comes back on the next request
    culls = sandbox.journal("NBH_EVENT=cull", f"NBH_STUDENT={idle.student}")
    assert len(culls) == 1 and int(culls[0]["NBH_IDLE_SECONDS"]) >= 4
    only_running_containers(sandbox, systemd)
    for instance in (busy, recent):
        systemd.stop_instance(instance)
    systemd.loop.run_until_complete(asyncio.wait([computing], timeout=10))


def test_a_culled_server_comes_back_with_the_work_and_reconnects(sandbox, systemd, course, student, cull_config):
    instance = Instance(course, student)
    url = entry(course, NOTEBOOK, student)
    kernel = new_kernel(sandbox, systemd, instance)
    assert systemd.loop.run_until_complete(execute(sandbox, instance, kernel, "print(6 * 7)")) == "42\n"
    saved = sandbox.api(instance, f"api/contents/{NOTEBOOK}.ipynb")["content"]
    saved["cells"][0]["source"] = "print('saved before the cull')"
    sandbox.api(instance, f"api/contents/{NOTEBOOK}.ipynb", method="PUT",
                body={"type": "notebook", "format": "json", "content": saved})
    cull_config("idle_timeout = 1\ngrace = 1\n")
    time.sleep(2)
    sandbox.run("nbh", "cull")
    assert not active(systemd, instance)
    only_running_containers(sandbox, systemd)

    # The open tab's next request, through nginx: the server starts again, no 502.
    page = get(url, referer=None)
    assert page.status == 200
    assert active(systemd, instance)
    assert "saved before the cull" in sandbox.api(instance, f"api/contents/{NOTEBOOK}.ipynb")["content"]["cells"][0]["source"]
    # the old kernel is gone with the old server: the client starts a new one
    assert get(f"{instance.base_url}api/kernels/{kernel}?token={sandbox.token(instance)}", referer=None).status == 404
    kernel = new_kernel(sandbox, systemd, instance)
    assert systemd.loop.run_until_complete(execute(sandbox, instance, kernel, "print(6 * 7)")) == "42\n"
    systemd.stop_instance(instance)


def test_a_server_stopped_and_started_again_quickly_is_not_locked_out(sandbox, systemd, course, student):
    """Each start of the server starts its upstream socket again: seven in a
    few seconds, as a cull and a tab's next request each time, all answer."""
    instance = Instance(course, student)
    systemd.start_instance(instance)
    for _ in range(7):
        systemd.stop_instance(instance)
        status, _ = sandbox.request(instance, "GET", "api/status")
        assert status == 200
    systemd.stop_instance(instance)
    failed = sandbox.run("systemctl", "list-units", "--failed", "--no-legend", "--plain").stdout
    assert instance.name not in failed, failed


def test_what_the_student_ran_stays_trusted_after_a_restart(sandbox, systemd, course, student):
    """Jupyter signs a notebook saved with the outputs the student's own runs
    made, so that its HTML and scripts show when it opens again. Culled and
    started again, the server still knows that signature: it is kept in the
    workspace, not in memory."""
    instance = Instance(course, student)
    html = {"output_type": "display_data", "metadata": {},
            "data": {"text/html": "<b>mine</b>", "text/plain": "<IPython.core.display.HTML object>"}}
    notebook = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "code", "id": "mine", "execution_count": 1, "metadata": {"trusted": True},
         "source": "HTML('<b>mine</b>')", "outputs": [html]}]}

    def trusted() -> bool:
        cell = sandbox.api(instance, "api/contents/mine.ipynb")["content"]["cells"][0]
        return cell["metadata"].get("trusted")

    systemd.start_instance(instance)
    sandbox.api(instance, "api/contents/mine.ipynb", method="PUT",
                body={"type": "notebook", "format": "json", "content": notebook})
    assert trusted() is True
    systemd.stop_instance(instance)
    systemd.start_instance(instance)
    assert trusted() is True
    log = sandbox.run("journalctl", "--no-pager", "-u", instance.service).stdout
    assert "signatures database" not in log
    systemd.stop_instance(instance)


def test_a_tab_left_open_keeps_its_session_and_kernel_ids(sandbox, systemd, course, student, cull_config):
    """What Notebook 7 needs to carry on: after a cull, the sessions that had
    a tab connected are back under the same ids, with a new kernel; the
    others (no tab ever connected to "closed.ipynb") are not."""
    instance = Instance(course, student)
    entry(course, NOTEBOOK, student)
    sessions = [sandbox.api(instance, "api/sessions", method="POST",
                            body={"path": path, "type": "notebook", "name": "", "kernel": {"name": "python3"}})
                for path in (f"{NOTEBOOK}.ipynb", "closed.ipynb")]
    tab, closed = sessions
    assert systemd.loop.run_until_complete(execute(sandbox, instance, tab["kernel"]["id"], "x = 1")) == ""
    # the open tab: a websocket held on its kernel
    url = (f"ws://{HOST}:{PORT}{instance.base_url}api/kernels/{tab['kernel']['id']}/channels"
           f"?session_id=tab&token={sandbox.token(instance)}")

    async def connect():
        return await websocket_connect(url)

    async def lost(socket) -> bool:
        while await asyncio.wait_for(socket.read_message(), 30) is not None:
            pass  # what the kernel said before the cull
        return True

    socket = systemd.loop.run_until_complete(connect())
    wait_for(lambda: sandbox.api(instance, f"api/kernels/{tab['kernel']['id']}")["connections"] == 1,
             what="the tab's connection")
    cull_config("idle_timeout = 1\ngrace = 1\n")
    time.sleep(2)
    sandbox.run("nbh", "cull")
    assert not active(systemd, instance)
    assert systemd.loop.run_until_complete(lost(socket))  # the tab lost its server
    socket.close()
    only_running_containers(sandbox, systemd)

    back = {s["id"]: s for s in sandbox.api(instance, "api/sessions")}  # revives the server
    assert active(systemd, instance)
    assert list(back) == [tab["id"]], back
    assert back[tab["id"]]["kernel"]["id"] == tab["kernel"]["id"]
    assert back[tab["id"]]["path"] == tab["path"]
    assert closed["kernel"]["id"] not in {k["id"] for k in sandbox.api(instance, "api/kernels")}
    # a new kernel: what the old one held is gone, and it runs code
    assert systemd.loop.run_until_complete(execute(sandbox, instance, tab["kernel"]["id"], "print(x)")) == "NameError"
    assert systemd.loop.run_until_complete(execute(sandbox, instance, tab["kernel"]["id"], "print(6 * 7)")) == "42\n"
    # the record is read once, and never shows in the student's files
    workspace = f"/var/lib/nbhosting/workspaces/{instance.path}"
    assert ".nbh-sessions.json" not in sandbox.run("ls", "-A", workspace).stdout.split()
    assert ".nbh-sessions.json" not in {f["name"] for f in sandbox.api(instance, "api/contents")["content"]}
    systemd.stop_instance(instance)


@pytest.mark.parametrize("content", ["not json", '{"a": "dict"}',
                                     '[{"session_id": "../x", "kernel_id": "1", "kernel_name": "python3", '
                                     '"path": "p", "name": "", "type": "notebook"}, 42]'])
def test_a_bad_sessions_file_is_ignored_and_removed(sandbox, systemd, course, student, content):
    """The file is in the student's workspace, so the student may have written it."""
    instance = Instance(course, student)
    workspace = f"/var/lib/nbhosting/workspaces/{instance.path}"
    systemd.start_instance(instance)
    systemd.stop_instance(instance)
    sandbox.run("sh", "-c", 'printf %s "$1" > "$2"', "-", content, f"{workspace}/.nbh-sessions.json",
                user="nbh-jupyter")
    systemd.start_instance(instance)
    assert sandbox.api(instance, "api/sessions") == []
    assert ".nbh-sessions.json" not in sandbox.run("ls", "-A", workspace).stdout.split()
    assert "nbh_sessions: ignoring" in sandbox.run("journalctl", "--no-pager", "-u", instance.service).stdout
    systemd.stop_instance(instance)


def test_max_age_stops_even_a_busy_server(sandbox, systemd, course, student, cull_config):
    cull_config("max_age = 6\n")
    shown = sandbox.run("systemctl", "show", "-P", "RuntimeMaxUSec", Instance(course, student).service).stdout
    assert shown.strip() == "6s"
    instance = Instance(course, student)
    systemd.start_instance(instance)
    kernel = new_kernel(sandbox, systemd, instance)
    computing = systemd.loop.create_task(execute(sandbox, instance, kernel, "import time; time.sleep(60)"))
    systemd.loop.run_until_complete(asyncio.sleep(1))
    wait_for(lambda: not active(systemd, instance), timeout=30, what="the maximum age")
    systemd.loop.run_until_complete(asyncio.wait([computing], timeout=10))
    assert "runtime time limit" in sandbox.run("journalctl", "--no-pager", "-u", instance.service).stdout
    wait_for(lambda: instance.container not in sandbox.containers(), what="the container to go")
    only_running_containers(sandbox, systemd)
    assert "started" in sandbox.api(instance, "api/status")  # and it comes back
    systemd.stop_instance(instance)


def test_the_proxy_exits_when_idle_and_takes_the_server(sandbox, systemd, course, student, cull_config):
    cull_config("proxy_idle = 2\n")
    instance = Instance(course, student)
    systemd.start(instance.socket)
    assert "started" in sandbox.api(instance, "api/status")  # socket activation, then no connection
    wait_for(lambda: not active(systemd, instance), timeout=20, what="the proxy's idle exit")
    assert systemd.state(instance.proxy).ActiveState == "inactive"
    assert systemd.state(instance.socket).SubState == "listening"
    only_running_containers(sandbox, systemd)


def test_a_killed_container_comes_back_on_the_next_request(sandbox, systemd, course, student):
    instance = Instance(course, student)
    systemd.start_instance(instance)
    jupyter = [p for p in sandbox.unit_pids(instance.service)
               if Path(f"/proc/{p}/comm").read_text().strip() == "jupyter-server"]
    os.kill(jupyter[0], signal.SIGKILL)
    wait_for(lambda: not active(systemd, instance), what="the unit to notice")
    wait_for(lambda: instance.container not in sandbox.containers(), what="the container to go")
    only_running_containers(sandbox, systemd)
    assert "started" in sandbox.api(instance, "api/status")
    assert active(systemd, instance)
    systemd.stop_instance(instance)


def test_gc_removes_what_no_unit_owns(sandbox, systemd, course, student):
    ghost = Instance(course, student)
    sandbox.run(*podman.argv(["create", "--name", ghost.container, nbh_sandbox.IMAGE, "true"]))
    sandbox.run("mkdir", "-p", f"/run/nbh-jupyter/{ghost.path}")
    dry = nbh(sandbox, "gc", "--dry-run")
    assert f"would remove container {ghost.container}" in dry.stdout
    assert ghost.container in sandbox.containers()
    done = nbh(sandbox, "gc")
    assert done.returncode == 0, done.stderr
    assert f"removed container {ghost.container}" in done.stdout
    assert f"removed runtime folder /run/nbh-jupyter/{ghost.path}" in done.stdout
    assert ghost.container not in sandbox.containers()
    assert not sandbox.path(f"/run/nbh-jupyter/{ghost.path}").exists()
    assert sandbox.journal("NBH_EVENT=gc", "--since=-60s")
    assert sandbox.run("systemctl", "is-active", "nbh-gc.timer", "nbh-cull.timer").stdout.split() == ["active"] * 2


def test_status_shows_idle_time_and_age(sandbox, systemd, course, student):
    instance = Instance(course, student)
    systemd.start_instance(instance)
    time.sleep(1.5)
    line = next(line for line in nbh(sandbox, "status", course, student).stdout.splitlines()[1:])
    columns = line.split()
    assert columns[2] == "active/running"
    age, idle, disk = columns[-3:]
    assert age.startswith("0m0") and idle.startswith("0m0") and disk == "-", line  # a folder: no disk of its own
    systemd.stop_instance(instance)
    assert nbh(sandbox, "status", course, student).stdout.split()[-3:] == ["-", "-", "-"]


def test_notebooks_autosave_every_20_seconds(sandbox, systemd, course, student):
    """Servers can be stopped at any time: the notebook saves itself often."""
    instance = Instance(course, student)
    systemd.start_instance(instance)
    settings = sandbox.api(instance, "lab/api/settings/@jupyterlab/docmanager-extension:plugin")
    assert settings["schema"]["properties"]["autosaveInterval"]["default"] == 20
    systemd.stop_instance(instance)


def test_the_timers_start_the_cull_and_gc_services(sandbox):
    for timer in ("nbh-cull.timer", "nbh-gc.timer"):
        unit = sandbox.run("systemctl", "show", "-P", "Unit", timer).stdout.strip()
        assert unit == timer.replace(".timer", ".service")
    assert sandbox.run("systemctl", "is-active", "nbh-gc.timer", "nbh-cull.timer").stdout.split() == ["active"] * 2


FAKE_SERVER = """\
import socket, sys
# A student's server gone hostile: it takes the socket systemd passes, as
# Jupyter does, and answers every request with {sys.argv[1]}.
listening = socket.socket(fileno=3)
while True:
    connection, _ = listening.accept()
    connection.recv(65536)
    try:
        if sys.argv[1] == "garbage":
            connection.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 9\\r\\n\\r\\nnot json!")
        elif sys.argv[1] == "huge":
            connection.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\n\\r\\n")
            chunk = b"[" * (1 << 20)
            for _ in range(1024):  # 1 GiB, unless the reader hangs up first
                connection.sendall(chunk)
        elif sys.argv[1] == "notjupyter":
            connection.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\n{}")
    except OSError:
        pass
    connection.close()
"""


@pytest.fixture
def fake_servers(sandbox):
    """Student servers whose containers answer garbage: a drop-in per instance
    replaces Jupyter with FAKE_SERVER, on the same passed socket."""
    script = "/usr/local/lib/nbh-test/fake_server.py"
    sandbox.path(script).parent.mkdir(parents=True, exist_ok=True)
    sandbox.path(script).write_text(FAKE_SERVER)
    dropins = []

    def make(instance: Instance, answer: str) -> None:
        folder = sandbox.path(f"/run/systemd/system/{instance.service}.d")
        folder.mkdir(parents=True)
        (folder / "fake.conf").write_text(
            f"[Service]\nType=simple\nExecStart=\nExecStart=/usr/bin/python3 {script} {answer}\n"
            "ExecStartPost=\nExecStopPost=\n")
        dropins.append(folder)
        sandbox.run("systemctl", "daemon-reload")
    yield make
    for folder in dropins:
        (folder / "fake.conf").unlink()
        folder.rmdir()
    sandbox.run("systemctl", "daemon-reload")


def test_the_cull_service_stops_idle_servers_beside_hostile_ones(sandbox, systemd, course, student, cull_config,
                                                               fake_servers):
    """nbh-cull.service as installed (not root): bad answers cost their server its verdict, nothing more."""
    idle = Instance(course, f"{student}-idle")
    hostile = {answer: Instance(course, f"{student}-{answer}") for answer in ("garbage", "huge", "notjupyter")}
    for answer, instance in hostile.items():
        fake_servers(instance, answer)
        systemd.start_instance(instance)
    systemd.start_instance(idle)
    cull_config("grace = 2\n")
    time.sleep(3)
    log = run_unit(sandbox, "nbh-cull.service")
    assert not active(systemd, idle), log
    assert sandbox.journal("NBH_EVENT=cull", f"NBH_STUDENT={idle.student}")
    for answer, instance in hostile.items():
        assert active(systemd, instance), (answer, log)
        assert instance.path in log, log
    assert "more than 1048576 bytes" in log and "no JSON" in log and "not Jupyter's" in log, log
    assert sandbox.run("systemctl", "show", "-P", "MemoryMax", "nbh-cull.service").stdout.strip() == str(256 << 20)
    for instance in hostile.values():
        systemd.stop_instance(instance)


def test_the_gc_service_removes_what_no_unit_owns(sandbox, systemd, course, student):
    ghost = Instance(course, student)
    sandbox.run(*podman.argv(["create", "--name", ghost.container, nbh_sandbox.IMAGE, "true"]))
    sandbox.run("mkdir", "-p", f"/run/nbh-jupyter/{ghost.path}")
    sandbox.run("install", "-d", "-m", "0711", f"/run/nbhosting/upstream/{ghost.course}")
    sandbox.run("touch", ghost.upstream_socket)
    log = run_unit(sandbox, "nbh-gc.service")
    assert ghost.container not in sandbox.containers(), log
    assert not sandbox.path(f"/run/nbh-jupyter/{ghost.path}").exists(), log
    assert not sandbox.path(ghost.upstream_socket).exists(), log
    gc_events = sandbox.journal("NBH_EVENT=gc", "--since=-60s")
    assert any(ghost.container in event["MESSAGE"] for event in gc_events), gc_events
