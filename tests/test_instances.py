"""Student servers against the sandbox's real systemd, podman and Jupyter."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from nbhosting import podman
from devtools import sandbox as nbh_sandbox
from nbhosting.names import Instance
from nbhosting.systemd import UnitFailed

from .conftest import assert_refused_to_front_end, nbh
from .sandbox_helpers import run_code, wait_for
from .web_helpers import entry

pytestmark = pytest.mark.sandbox


def assert_nothing_left(sandbox, instance: Instance) -> None:
    assert instance.container not in sandbox.containers()
    for unit in (instance.service, instance.proxy):
        assert sandbox.unit_pids(unit) == []
    assert not sandbox.path(instance.upstream_socket).exists()
    assert not sandbox.path(f"/run/nbh-jupyter/{instance.path}").exists()


def test_start_serves_through_the_socket_unit_then_stop_leaves_nothing(sandbox, systemd, course, student):
    instance = Instance(course, student)
    systemd.start_instance(instance)
    assert systemd.state(instance.service).ActiveState == "active"
    # "running": the socket's service (the proxy) holds it
    assert systemd.state(instance.socket).SubState == "running"
    status = sandbox.api(instance, "api/status")
    assert "started" in status
    assert instance.container in sandbox.containers()
    # The server's token is its own: none, or another pair's, is refused.
    assert sandbox.request(instance, "GET", "api/status", token="0" * 64)[0] == 403

    systemd.stop_instance(instance)
    assert systemd.state(instance.service).ActiveState == "inactive"
    assert systemd.state(instance.proxy).ActiveState == "inactive"
    assert_nothing_left(sandbox, instance)
    # The socket stays: an idle student costs one listening socket.
    assert systemd.state(instance.socket).SubState == "listening"


def test_first_connection_starts_a_stopped_server(sandbox, systemd, course, student):
    instance = Instance(course, student)
    systemd.start(instance.socket)
    assert systemd.state(instance.service).ActiveState == "inactive"
    status = sandbox.api(instance, "api/status")  # socket activation
    assert "started" in status
    assert systemd.state(instance.service).ActiveState == "active"
    systemd.stop_instance(instance)
    assert_nothing_left(sandbox, instance)
    # and again, after a stop
    assert "started" in sandbox.api(instance, "api/status")
    systemd.stop_instance(instance)


def test_two_students_see_only_their_own_workspace(sandbox, systemd, course, student):
    alice, bob = Instance(course, student + "a"), Instance(course, student + "b")
    for instance in (alice, bob):
        systemd.start_instance(instance)
        sandbox.api(instance, f"api/contents/mine-{instance.student}.txt", method="PUT",
                    body={"type": "file", "format": "text", "content": instance.student})
    for instance, other in ((alice, bob), (bob, alice)):
        listing = sandbox.api(instance, "api/contents")
        names = {item["name"] for item in listing["content"]}
        assert f"mine-{instance.student}.txt" in names
        assert f"mine-{other.student}.txt" not in names
        # each one's token opens its own server only
        assert sandbox.request(other, "GET", "api/status", token=sandbox.token(instance))[0] == 403
        on_disk = sandbox.path(f"/var/lib/nbhosting/workspaces/{instance.path}/mine-{instance.student}.txt")
        assert on_disk.read_text() == instance.student
        # the course is there, read-only
        assert sandbox.request(instance, "PUT", "api/contents/../course/x.txt",
                               body={"type": "file", "format": "text", "content": "x"})[0] >= 400
    for instance in (alice, bob):
        systemd.stop_instance(instance)
        assert_nothing_left(sandbox, instance)


def test_twenty_at_once(sandbox, systemd, course, student):
    instances = [Instance(course, f"{student}-{i}") for i in range(20)]
    results = systemd.gather(*(systemd.client.start_instance(i) for i in instances))
    assert [r for r in results if r is not None] == []
    for instance in instances:
        assert "started" in sandbox.api(instance, "api/status")
    results = systemd.gather(*(systemd.client.stop_instance(i) for i in instances))
    assert [r for r in results if r is not None] == []
    left = set(sandbox.containers())
    assert not left & {i.container for i in instances}


def test_a_leftover_container_does_not_block_the_start(sandbox, systemd, course, student):
    instance = Instance(course, student)
    sandbox.run(*podman.argv(["create", "--name", instance.container, nbh_sandbox.IMAGE, "true"]))
    assert instance.container in sandbox.containers()
    systemd.start_instance(instance)
    assert "started" in sandbox.api(instance, "api/status")
    systemd.stop_instance(instance)
    assert_nothing_left(sandbox, instance)


def killed(sandbox, systemd, instance: Instance, *how: str) -> None:
    sandbox.run("systemctl", "kill", "--signal=SIGKILL", *how, instance.service)
    deadline = time.monotonic() + 30
    while systemd.state(instance.service).ActiveState not in ("failed", "inactive"):
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_killed_server_leaves_no_container(sandbox, systemd, course, student):
    """Its main process (conmon) killed, as the OOM killer would: the stop's
    step removes the container. Podman 5 refuses the first removal of a
    container whose conmon died; the second succeeds (podman.remove)."""
    instance = Instance(course, student)
    systemd.start_instance(instance)
    killed(sandbox, systemd, instance, "--kill-whom=main")
    assert_nothing_left(sandbox, instance)


def test_a_server_killed_whole_leaves_nothing_and_starts_again(sandbox, systemd, course, student):
    """`systemctl kill` of the whole unit: systemd 257 kills the stop's step
    too (252 lets it run), and the container would be left, failing the
    next start. The unit's failure starts nbh-jupyter-leftover.service, one
    unit for all servers, which removes it; a start meanwhile waits for it."""
    instance = Instance(course, student)
    leftover = "nbh-jupyter-leftover.service"
    for _ in range(2):
        systemd.start_instance(instance)
        assert "started" in sandbox.api(instance, "api/status")
        killed(sandbox, systemd, instance)
    wait_for(lambda: systemd.state(leftover).ActiveState == "inactive" and
             instance.container not in sandbox.containers(), what="the leftover container to go")
    assert_nothing_left(sandbox, instance)
    assert sandbox.run("journalctl", "--no-pager", "-o", "cat", "-u", leftover).stdout.count("Finished") >= 1


def test_servers_killed_at_once_leave_nothing_and_the_others_run_on(sandbox, systemd, course, student):
    """Two failures at once: the second's start of the one leftover unit may
    merge into the first's run, whose sweep removes both containers; a
    running server's is left alone. One leftover unit is loaded, whatever
    the number of students (a template's instance was one per student)."""
    failing = [Instance(course, f"{student}-{n}") for n in range(2)]
    running = Instance(course, f"{student}-r")
    try:
        for instance in (*failing, running):
            systemd.start_instance(instance)
        for instance in failing:
            sandbox.run("systemctl", "kill", "--signal=SIGKILL", instance.service)
        wait_for(lambda: systemd.state("nbh-jupyter-leftover.service").ActiveState == "inactive" and
                 not {i.container for i in failing} & set(sandbox.containers()), what="both containers to go")
        assert "started" in sandbox.api(running, "api/status")
        loaded = sandbox.run("systemctl", "list-units", "--all", "--plain", "--no-legend",
                             "nbh-jupyter-leftover*").stdout.splitlines()
        assert [line.split()[0] for line in loaded] == ["nbh-jupyter-leftover.service"]
        for instance in failing:
            systemd.start_instance(instance)
            assert "started" in sandbox.api(instance, "api/status")
    finally:
        for instance in (*failing, running):
            systemd.stop_instance(instance)


def test_unknown_course_fails_with_its_reason(sandbox, systemd, student):
    instance = Instance("no-such-course", student)
    with pytest.raises(UnitFailed, match="exit-code"):
        systemd.start_instance(instance)
    assert instance.container not in sandbox.containers()
    logs = sandbox.run("journalctl", "--no-pager", "-u", instance.service).stdout
    assert "unknown course 'no-such-course'" in logs


def test_a_server_never_pulls_its_image(sandbox, systemd, student):
    """An image that is not in the servers' storage fails the start at once:
    nothing is fetched from anywhere (".invalid" never resolves)."""
    course = f"nopull{os.getpid()}"
    sandbox.make_course(course)
    assert nbh(sandbox, "course", "set", course, "image=registry.invalid/nbh/absent:1").returncode == 0
    instance = Instance(course, student)
    with pytest.raises(UnitFailed, match="exit-code"):
        systemd.start_instance(instance)
    logs = sandbox.run("journalctl", "--no-pager", "-u", instance.service).stdout
    assert "registry.invalid/nbh/absent:1: image not known" in logs, logs[-2000:]
    assert "Trying to pull" not in logs
    assert instance.container not in sandbox.containers()


def test_events_in_the_journal(sandbox, systemd, course, student):
    instance = Instance(course, student)
    systemd.start_instance(instance)
    began = int(sandbox.run("systemctl", "show", "--value", "--property=InactiveExitTimestampMonotonic",
                            instance.service).stdout) / 1e6
    systemd.stop_instance(instance)
    events = [e["NBH_EVENT"] for e in sandbox.journal(f"NBH_STUDENT={student}", f"NBH_COURSE={course}")]
    assert events == ["start", "ready", "stop"]
    start = sandbox.journal("NBH_EVENT=start", f"NBH_STUDENT={student}")[0]
    assert start["NBH_INSTANCE"] == instance.name
    assert start["_SYSTEMD_UNIT"] == instance.service
    # "ready" comes from the server itself (nbh_ready), nothing spawned for
    # it, with the seconds since the unit left "inactive", as systemd has them
    ready = sandbox.journal("NBH_EVENT=ready", f"NBH_STUDENT={student}")[0]
    assert ready["_SYSTEMD_UNIT"] == instance.service and ready["_COMM"] != "nbh-event", ready
    assert ready["MESSAGE"].startswith(f"{instance.path} is ready after "), ready["MESSAGE"]
    since = int(ready["__MONOTONIC_TIMESTAMP"]) / 1e6 - began
    assert abs(float(ready["NBH_START_SECONDS"]) - since) < 0.5, (ready["NBH_START_SECONDS"], since)
    assert sandbox.run("systemctl", "show", "--value", "--property=ExecStartPost", instance.service).stdout.strip() == ""
    # Jupyter took SIGTERM on its loop (nbh_ready), where a log line being
    # written cannot make it miss the stop
    said = [e["MESSAGE"] for e in sandbox.journal(f"CONTAINER_NAME={instance.container}")]
    assert any("nbh_ready: SIGTERM, stopping" in m for m in said), said[-5:]


def test_limits_and_hardening_are_set(sandbox, course):
    unit = Instance(course, "props").service
    shown = sandbox.run("systemctl", "show", unit, "-p", "MemoryMax,CPUQuotaPerSecUSec,TasksMax,"
                        "OOMPolicy,NoNewPrivileges,User,Type,ProtectSystem").stdout
    props = dict(line.split("=", 1) for line in shown.splitlines())
    assert props["MemoryMax"] == str(2 * 2**30)
    assert props["CPUQuotaPerSecUSec"] == "1s"
    assert props["TasksMax"] == "512"
    assert props["OOMPolicy"] == "continue"
    assert props["NoNewPrivileges"] == "yes"
    assert props["User"] == "nbh-jupyter"
    assert props["Type"] == "notify"


def test_limits_follow_the_configuration(sandbox, course):
    unit = Instance(course, "conf").service
    config = "/etc/nbhosting/nbhosting.toml"
    sandbox.run("sh", "-c", f"printf '[limits]\\nmemory_max = \"512M\"\\ntasks_max = 64\\n' > {config}")
    try:
        sandbox.run("nbh", "setup")
        shown = sandbox.run("systemctl", "show", unit, "-p", "MemoryMax,TasksMax").stdout
        assert "MemoryMax=536870912" in shown and "TasksMax=64" in shown
        sandbox.run("sh", "-c", f"printf '[limits]\\nmemory = 1\\n' > {config}")
        bad = nbh(sandbox, "setup")
        assert bad.returncode == 1
        assert bad.stderr.strip() == "nbh: limits.memory: unknown key"
    finally:  # the sandbox's own configuration back, as later tests expect it
        sandbox.path(config).write_text(nbh_sandbox.CONFIG)
        sandbox.run("nbh", "setup")


def test_units_verify(sandbox, course):
    instance = Instance(course, "verify")
    result = sandbox.run("systemd-analyze", "verify", "--man=no", *instance.units, "nbh-podman.service",
                         "nbh-sockets.slice", "nbh-course-update@a.service", "nbh-course-build@a.service",
                         "nbh-autopull.service", "nbh-autopull.timer", check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_sockets_are_kept_apart_from_servers(sandbox, course):
    """A slice of their own: systemd 252 recomputes a slice's cgroup masks
    over all of its units at every start of a server (bench: PID 1 CPU per visit)."""
    instance = Instance(course, "slices")

    def slice_of(unit: str) -> str:
        return sandbox.run("systemctl", "show", "-P", "Slice", unit).stdout.strip()
    assert slice_of(instance.socket) == "nbh-sockets.slice"
    assert slice_of(instance.service) != "nbh-sockets.slice"
    assert slice_of(instance.proxy) != "nbh-sockets.slice"


def test_cli(sandbox, course, student):
    started = nbh(sandbox, "start", course, student)
    assert started.returncode == 0, started.stderr
    status = nbh(sandbox, "status", course)
    line = next(line for line in status.stdout.splitlines() if student in line)
    assert "active/running" in line
    logs = nbh(sandbox, "logs", course, student)
    assert f"{course}/{student} is ready" in logs.stdout
    assert nbh(sandbox, "stop", course, student).returncode == 0
    line = next(line for line in nbh(sandbox, "status", course, student).stdout.splitlines() if student in line)
    assert "inactive/dead" in line


@pytest.mark.parametrize("args, message", [
    (["start", "bad/course", "x"], "nbh: bad course name 'bad/course'"),
    (["start", "c", "../x"], "nbh: bad student name '../x'"),
    (["stop", "c", "a;reboot"], "nbh: bad student name 'a;reboot'"),
    (["status", "", "x"], "nbh: a student needs a course"),
    (["logs", "c", "$(id)"], "nbh: bad student name '$(id)'"),
    (["start", "no-such-course", "x"], "nbh: unknown course 'no-such-course'"),
])
def test_cli_errors_are_one_line(sandbox, args, message):
    result = nbh(sandbox, *args)
    assert result.returncode != 0
    assert result.stderr.strip().startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_policy_lets_the_front_end_manage_student_units_only(sandbox, course, student):
    started = nbh(sandbox, "start", course, student, user="nbh")
    assert started.returncode == 0, started.stderr
    assert nbh(sandbox, "stop", course, student, user="nbh").returncode == 0
    instance = Instance(course, student)
    ok = sandbox.run("systemctl", "--no-ask-password", "restart", instance.socket, user="nbh", check=False)
    assert ok.returncode == 0, ok.stderr
    ok = sandbox.run("systemctl", "--no-ask-password", "reset-failed", instance.service, user="nbh", check=False)
    assert ok.returncode == 0, ok.stderr
    refused = [
        ["systemctl", "stop", "nginx.service"],
        ["systemctl", "start", "nbh-sandbox.target"],
        ["systemctl", "restart", "nbh-podman.service"],
        ["systemctl", "restart", "dbus.service"],
        ["systemctl", "start", "nbh-jupyterx@a-b.service"],
        ["systemctl", "start", "nbh-web.service"],
        ["systemctl", "kill", instance.service],
        ["systemctl", "enable", instance.socket],
        ["systemctl", "set-property", instance.socket, "MemoryMax=1T"],
        ["systemctl", "set-property", instance.proxy, "MemoryMax=1T"],
        ["systemd-run", "--unit", f"nbh-jupyter@{instance.name}", "true"],
        # it removes the pair's container: only the server's failure starts it
        ["systemctl", "start", "nbh-jupyter-leftover.service"],
        ["systemd-run", "true"],
    ]
    # Names that are not names.py's, straight to systemd (no systemctl mangling):
    # a socket over /run/docker.sock, escapes of '.' and '/', a course too long.
    hostile = ["nbh-jupyter@..-..-run-docker.socket", "nbh-jupyter@a-\\x2e\\x2e.socket",
               "nbh-jupyter@a\\x2fb-c.service", "nbh-upstream@..-x.socket", "nbh-proxy@.a-b.service",
               f"nbh-jupyter@{'a' * 33}-b.service", f"nbh-jupyter@a-{'b' * 41}.socket",
               "nbh-jupyter@" + "a" * 31 + "-" + "\\x2d" * 40 + ".socket"]
    assert_refused_to_front_end(sandbox, refused, hostile)
    for name in hostile[:5]:  # and nothing was made of them
        assert sandbox.run("systemctl", "is-active", name, check=False).stdout.strip() == "inactive", name
    assert not sandbox.path("/run/docker.sock").exists()
    # and the containers' account is not the front end: it may do nothing
    other = sandbox.run("systemctl", "--no-ask-password", "start", instance.socket, user="nbh-jupyter",
                        check=False)
    assert other.returncode != 0
    sandbox.run("systemctl", "stop", instance.socket)


def test_status_reads_memory_and_mainpid(sandbox, systemd, course, student):
    instance = Instance(course, student)
    systemd.start_instance(instance)
    state = systemd.state(instance.service)
    assert state.MainPID > 0
    assert json.loads(sandbox.request(instance, "GET", "api/status")[1])
    systemd.restart(instance.service)
    assert systemd.state(instance.service).MainPID not in (0, state.MainPID)
    assert json.loads(sandbox.request(instance, "GET", "api/status")[1])
    systemd.stop_instance(instance)


def test_a_killed_kernel_does_not_take_the_server_down(sandbox, systemd, course, student):
    """What the OOM killer does to a greedy kernel (OOMPolicy=continue)."""
    instance = Instance(course, student)
    systemd.start_instance(instance)
    kernel = sandbox.api(instance, "api/kernels", method="POST", body={"name": "python3"})
    deadline = time.monotonic() + 30
    while not (pids := [p for p in sandbox.unit_pids(instance.service)
                        if b"ipykernel" in Path(f"/proc/{p}/cmdline").read_bytes()]):
        assert time.monotonic() < deadline, "no kernel process"
        time.sleep(0.1)
    os.kill(pids[0], signal.SIGKILL)
    time.sleep(1)
    assert systemd.state(instance.service).ActiveState == "active"
    assert sandbox.api(instance, f"api/kernels/{kernel['id']}")["id"] == kernel["id"]
    systemd.stop_instance(instance)
    assert_nothing_left(sandbox, instance)


def test_a_container_has_no_capability_and_a_read_only_root(sandbox, systemd, course, student):
    instance = Instance(course, student)
    systemd.start_instance(instance)
    out = run_code(sandbox, systemd, instance, """
import os
status = dict(line.split(":\\t") for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
print("caps", status["CapEff"].strip(), status["CapPrm"].strip(), status["CapBnd"].strip(), status["NoNewPrivs"])
for path in ("/etc/x", "/opt/x", "/run/nbh/x", "/home/jovyan/course/x"):
    try:
        open(path, "w")
        print("wrote", path)
    except OSError as error:
        print("refused", path, error.errno)
for path in ("/tmp/x", "/home/jovyan/x", "/home/jovyan/work/x"):
    open(path, "w").close()
    print("wrote", path)
""")
    assert "caps 0000000000000000 0000000000000000 0000000000000000 1" in out, out
    for path in ("/etc/x", "/opt/x", "/run/nbh/x", "/home/jovyan/course/x"):
        assert f"refused {path}" in out, out
    for path in ("/tmp/x", "/home/jovyan/x", "/home/jovyan/work/x"):
        assert f"wrote {path}" in out, out
    inspect = sandbox.run(*podman.argv(["inspect", "--format", "{{.HostConfig.PidsLimit}} {{.HostConfig.ReadonlyRootfs}}",
                                        instance.container])).stdout.split()
    assert inspect == ["256", "true"], inspect
    systemd.stop_instance(instance)


def test_a_student_cannot_make_the_host_remove_another_students_container(sandbox, systemd, course, student):
    """No cidfile, nor anything the container writes, names the container that
    ExecStopPost= removes: it is the unit's own instance."""
    mallory, alice = Instance(course, student + "m"), Instance(course, student + "a")
    for instance in (mallory, alice):
        systemd.start_instance(instance)
    out = run_code(sandbox, systemd, mallory, f"""
import os
for folder in ("/run/nbh", "/home/jovyan/work", "/tmp"):
    try:
        open(folder + "/cid", "w").write({alice.container!r})
        print("wrote", folder)
    except OSError as error:
        print("refused", folder, error.errno)
""")
    assert "refused /run/nbh" in out, out
    # the host side of the container's account writes where it can, as a
    # container that escaped to it could
    sandbox.run("sh", "-c", f"echo {alice.container} > /run/nbh-jupyter/{mallory.path}/cid", user="nbh-jupyter")
    systemd.stop_instance(mallory)
    assert systemd.state(alice.service).ActiveState == "active"
    assert alice.container in sandbox.containers()
    assert "started" in sandbox.api(alice, "api/status")
    systemd.stop_instance(alice)


def test_the_proxy_reaches_only_the_socket_systemd_made(sandbox, systemd, course, student):
    """Jupyter listens on nbh-upstream@'s socket, passed in: what the container's
    account can write holds no socket, and a link there leads nowhere."""
    instance = Instance(course, student)
    systemd.start_instance(instance)
    upstream = sandbox.run("stat", "-c", "%U %F", instance.upstream_socket).stdout.strip()
    assert upstream == "root socket", upstream
    assert sandbox.run("stat", "-c", "%U:%G %a", "/run/nbhosting/upstream").stdout.strip() == "root:nbh-jupyter 710"
    runtime = f"/run/nbh-jupyter/{instance.path}"
    assert sandbox.run("ls", "-A", runtime).stdout.split() == ["notary-secret", "share-id", "token"]
    # the old attack: the server's socket swapped for a link to the front end's
    sandbox.run("ln", "-s", "/run/nbhosting/web.sock", f"{runtime}/jupyter.sock", user="nbh-jupyter")
    out = run_code(sandbox, systemd, instance, """
import os
try:
    os.symlink("/run/nbhosting/web.sock", "/run/nbh/jupyter.sock")
    print("linked")
except OSError as error:
    print("refused", error.errno)
""")
    assert "refused" in out, out
    sandbox.run("systemctl", "restart", instance.proxy)  # a fresh connection upstream
    status, body = sandbox.request(instance, "GET", "api/status")
    assert status == 200 and b"last_activity" in body, (status, body[:200])
    assert sandbox.request(instance, "GET", "api/status", token="not-the-token")[0] == 403
    systemd.stop_instance(instance)


def test_the_containers_account_never_holds_the_host_secret(sandbox, systemd, course, student):
    """A container that escapes to its account (or a build run as it) finds
    the derived values of the servers that run, not the secret that every
    token, shared pages id and staff session comes from."""
    instance = Instance(course, student)
    systemd.start_instance(instance)
    assert "started" in sandbox.api(instance, "api/status")  # its own token, derived by root
    secret = sandbox.path("/etc/nbhosting/secret").read_text().strip()
    assert len(secret) >= 32
    assert not sandbox.path(f"/run/credentials/{instance.service}").exists()
    # -D skip: sockets and FIFOs are not read; the image storage is not searched
    def found(text: str) -> str:
        # the runtime folder by name: /run/nbh-jupyter (0710) cannot be listed
        folders = ("/etc/nbhosting", "/run/credentials", f"/run/nbh-jupyter/{instance.path}", "/run/nbh-podman",
                   "/var/lib/nbhosting")
        search = sandbox.run("grep", "-rlsF", "-D", "skip", "--exclude-dir=storage", "-e", text, *folders,
                             user="nbh-jupyter", check=False)
        assert search.returncode in (0, 1, 2), search  # 2: some folder it may not read
        return search.stdout
    assert found(secret) == ""
    assert found(sandbox.token(instance)).split() == [f"/run/nbh-jupyter/{instance.path}/token"]  # it did search
    readable = sandbox.run("cat", "/etc/nbhosting/secret", user="nbh-jupyter", check=False)
    assert readable.returncode != 0 and "Permission denied" in readable.stderr
    # what it holds instead: this pair's token, which opens this server only
    runtime = f"/run/nbh-jupyter/{instance.path}"
    token = sandbox.run("cat", f"{runtime}/token", user="nbh-jupyter").stdout
    assert token == sandbox.token(instance)
    other = Instance(course, student + "o")
    systemd.start_instance(other)
    assert sandbox.request(other, "GET", "api/status", token=token)[0] == 403
    for each in (instance, other):
        systemd.stop_instance(each)


def test_local_accounts_see_no_student_and_start_no_server(sandbox, systemd, course, student):
    instance = Instance(course, student)
    systemd.start_instance(instance)
    sandbox.run("useradd", "--no-create-home", "eve", check=False)
    for folder in ("/run/nbhosting/nb", "/run/nbhosting/upstream", "/run/nbh-jupyter",
                   "/var/lib/nbhosting/workspaces", "/var/lib/nbhosting/tokens"):
        listing = sandbox.run("ls", folder, user="eve", check=False)
        assert listing.returncode != 0 and "Permission denied" in listing.stderr, (folder, listing)
    gates = {"/run/nbhosting/nb": "root:nginx 710", "/run/nbhosting/upstream": "root:nbh-jupyter 710",
             "/run/nbh-jupyter": "root:nbh-jupyter 710", "/var/lib/nbhosting/workspaces": "root:nbh-jupyter 710"}
    for folder, owner_mode in gates.items():
        assert sandbox.run("stat", "-c", "%U:%G %a", folder).stdout.strip() == owner_mode, folder
    assert sandbox.run("stat", "-c", "%U:%G %a", "/run/nbhosting/web.sock").stdout.strip() == "root:nginx 660"
    for sock in (instance.listen_socket, instance.upstream_socket, "/run/nbhosting/web.sock"):
        connect = sandbox.run("python3", "-c", f"import socket; socket.socket(socket.AF_UNIX).connect({sock!r})",
                              user="eve", check=False)
        assert connect.returncode != 0 and "PermissionError" in connect.stderr, (sock, connect.stderr[-300:])
    systemd.stop_instance(instance)


@pytest.mark.parametrize("unit, most", [
    ("nbh-web.service", 1.5), ("nbh-cull.service", 3), ("nbh-gc.service", 4), ("nbh-proxy@a-b.service", 2),
    ("nbh-course-update@a.service", 2), ("nbh-autopull.service", 1),
    # what a student wrote is parsed there: as little as systemd allows
    ("nbh-render@1-2-3.service", 0.5),
    # podman builds in there (user and mount namespaces, set-user-id files):
    # 7.9 as the containers' account, 5.9 on its own account and namespace
    ("nbh-course-build@a.service", 6),
])
def test_units_are_hardened(sandbox, unit, most):
    """The exposure level systemd-analyze gives the installed units."""
    result = sandbox.run("systemd-analyze", "security", "--no-pager", unit)
    score = float(result.stdout.rsplit(f"Overall exposure level for {unit}: ", 1)[1].split()[0])
    print(f"{unit}: {score}")
    assert score <= most, result.stdout


def test_an_archived_courses_students_read_and_run_their_work_and_save_nothing(sandbox, systemd, student):
    """archived=yes: the workspace is read-only in the container from the
    next start; archived=no gives it back."""

    name = f"archived-{os.getpid()}"
    sandbox.make_course(name)
    instance = Instance(name, student)
    try:
        entry(name, "w1/w1-s1-c1-intro", student)
        systemd.stop_instance(instance)
        assert nbh(sandbox, "course", "set", name, "archived=yes").returncode == 0
        entry(name, "w1/w1-s1-c1-intro", student)
        model = sandbox.api(instance, "api/contents/w1/w1-s1-c1-intro.ipynb")
        assert model["writable"] is False, model["writable"]
        out = run_code(sandbox, systemd, instance, """
print(open("/home/jovyan/work/w1/w1-s1-c1-intro.ipynb").read()[:1])
try:
    open("/home/jovyan/work/mine.txt", "w")
except OSError as error:
    print("refused", error.strerror)
""")
        assert out == "{\nrefused Read-only file system\n", out
        status, _ = sandbox.request(instance, "PUT", "api/contents/w1/w1-s1-c1-intro.ipynb",
                                    body={"type": "notebook", "format": "json", "content": model["content"]})
        assert status >= 400
        systemd.stop_instance(instance)
        assert nbh(sandbox, "course", "set", name, "archived=no").returncode == 0
        entry(name, "w1/w1-s1-c1-intro", student)
        assert run_code(sandbox, systemd, instance, 'open("/home/jovyan/work/mine.txt", "w").write("x"); print("saved")'
                        ) == "saved\n"
    finally:
        systemd.stop_instance(instance)
