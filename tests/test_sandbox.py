"""The sandbox boots and goes away without a trace on the host."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from devtools import sandbox as nbh_sandbox
from devtools import systems

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




# Settings that name a path the unit needs at start (or the folder that it
# makes its own in), and where a specifier (%I, %t, ...) starts in a value.
PATH_SETTINGS = ("ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "WorkingDirectory", "EnvironmentFile",
                 "LoadCredential", "ListenStream", "ExecStartPre", "ExecStart", "ExecStartPost",
                 "ExecStopPost", "BindPaths", "BindReadOnlyPaths", "TemporaryFileSystem")
STATE_ROOTS = {"StateDirectory": "/var/lib", "RuntimeDirectory": "/run", "CacheDirectory": "/var/cache",
               "LogsDirectory": "/var/log", "ConfigurationDirectory": "/etc"}


def named_paths(unit_text: str) -> set[str]:
    """The existing folders or files a unit's settings need: for a template's
    value, the folder above the first specifier."""
    found = set()
    for line in unit_text.splitlines():
        key, sep, value = line.partition("=")
        if not sep or line.startswith(("#", ";")):
            continue
        for word in value.split():
            if word.startswith("-") and not key.startswith("Exec"):
                continue  # a path the unit may do without
            word = word.lstrip("-+!@:")
            if key == "LoadCredential":
                word = word.partition(":")[2]
            elif key in ("BindPaths", "BindReadOnlyPaths", "TemporaryFileSystem"):
                word = word.partition(":")[0]  # the source (or the path), not its options
            if key in STATE_ROOTS:
                word = f"{STATE_ROOTS[key]}/{word}"
            elif key not in PATH_SETTINGS or not word.startswith("/"):
                continue
            if "%" in word or key in STATE_ROOTS or key == "ListenStream":
                word = word.split("%")[0].rsplit("/", 1)[0]  # the folder it is made in
            if word:
                found.add(word)
            if key in ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecStopPost", "LoadCredential"):
                break  # the program (or the credential's file), not its arguments
    return found


def test_a_fresh_install_has_every_folder_its_units_name_and_serves_its_first_entry(sandbox_session):
    from .web_helpers import entry, get  # `entry` is a loop variable's name in this module

    # state that an earlier run, the demo or an operator left must not outlive `down`
    sandbox_session.make_course(COURSE)
    nbh_sandbox.run(["touch", "/var/lib/nbhosting/workspaces/left-over", "/etc/nbhosting/left-over"])
    nbh_sandbox.down()
    nbh_sandbox.up()
    for leftover in ("/var/lib/nbhosting/workspaces/left-over", "/etc/nbhosting/left-over",
                     f"/var/lib/nbhosting/courses/{COURSE}", f"/etc/nbhosting/courses/{COURSE}.toml"):
        assert not sandbox_session.path(leftover).exists(), leftover
    units = sorted(sandbox_session.path("/usr/lib/systemd/system").glob("nbh-*"))
    assert len(units) >= 12, units
    missing = {(unit.name, named) for unit in units for named in named_paths(unit.read_text())
               if not sandbox_session.path(named).exists()}
    assert not missing, missing
    # and nothing failed at boot, the front end included
    failed = nbh_sandbox.run(["systemctl", "--failed", "--plain", "--no-legend"]).stdout
    assert failed.strip() == "", failed
    sandbox_session.make_course(COURSE)
    student = f"fresh-install-{os.getpid():08d}"
    url = entry(COURSE, "w1/w1-s1-c1-intro", student)
    assert url.startswith(f"/nb/{COURSE}/{student}/notebooks/w1/w1-s1-c1-intro.ipynb?token=")
    assert get(url, referer=None).status == 200
    assert sandbox_session.path(f"/var/lib/nbhosting/workspaces/{COURSE}/{student}/w1/w1-s1-c1-intro.ipynb").exists()
    nbh_sandbox.run(["nbh", "stop", COURSE, student])


def test_the_named_paths_of_a_unit():
    text = """[Service]
ExecStart=/usr/bin/nbh-jupyter-run %I
ExecStopPost=-/usr/bin/podman rm --cidfile %t/x
ReadWritePaths=/var/lib/nbhosting/workspaces
LoadCredential=nbh-secret:/etc/nbhosting/secret
InaccessiblePaths=/etc/nbhosting -/run/credentials
TemporaryFileSystem=/var/lib/nbhosting:ro
BindReadOnlyPaths=/var/lib/nbhosting/courses/%i -/var/lib/nbhosting/courses/.%i.update
StateDirectory=nbhosting/workspaces/%I
RuntimeDirectory=nbh-jupyter/%I
ListenStream=/run/nbhosting/upstream/%I.sock
# ReadWritePaths=/not/this
"""
    assert named_paths(text) == {"/usr/bin/nbh-jupyter-run", "/usr/bin/podman", "/var/lib/nbhosting/workspaces",
                                 "/etc/nbhosting/secret", "/etc/nbhosting", "/var/lib/nbhosting",
                                 "/var/lib/nbhosting/courses", "/var/lib/nbhosting/workspaces", "/run/nbh-jupyter",
                                 "/run/nbhosting/upstream"}


def test_the_default_image_is_this_checkouts_even_when_cached():
    """`sandbox up` without NBH_IMAGE_TAR takes jupyter-test.tar: after another
    checkout's build (a comparison's), asking again for this checkout's image,
    cached, must point the link back to it (it stayed on the last one built)."""
    cache = systems.IMAGE_TAR.parent
    link, args = cache / "jupyter-test.tar", cache / "jupyter-test.import-args"
    for name, target in ((link, "jupyter-test-another.tar"), (args, "jupyter-test-another.import-args")):
        name.unlink(missing_ok=True)
        name.symlink_to(target)
    script = Path(__file__).parent.parent / "images" / "build-test-image"
    out = subprocess.run([script], capture_output=True, text=True, check=True, timeout=1800).stdout
    image = Path(out.splitlines()[-1])
    assert link.resolve() == image
    assert args.resolve() == image.with_suffix(".import-args")
