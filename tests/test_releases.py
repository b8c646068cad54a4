"""The release that is not the host's (devtools/releases.py): Debian 13,
systemd 257, on a Debian 12 host; Debian 12, systemd 252, on a Debian 13
one. Booted with systemd-nspawn, the project installed as its package
installs it: its units verify under that systemd, that polkitd applies the
rule, that nginx loads the site, and the front end answers through it; a
student's notebook opens and runs in its podman. A setting only 257 knows
shows which systemd each side really is, and `nbh setup` uses it on the
side that knows it (PrivatePIDs=), the sandbox's and the tree's."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from nbhosting import cli, podman
from devtools import releases
from nbhosting.names import Instance

from .conftest import COURSE
from .release_helpers import student_visit

pytestmark = pytest.mark.sandbox

SYSTEMD = {"bookworm": 252, "trixie": 257}
UNITS = Path(__file__).resolve().parent.parent / "units"


@pytest.fixture(scope="module")
def booted():
    tree = releases.up()
    try:
        yield tree
    finally:
        releases.down(tree)


def systemd_version(text: str) -> int:
    return int(re.match(r"systemd (\d+)", text)[1])


def unit_names() -> list[str]:
    """Every unit the package installs, a template by one of its instances."""
    return sorted(path.name.replace("@.", "@x.") for path in UNITS.iterdir()
                  if path.suffix in (".service", ".socket", ".timer", ".slice"))


def test_it_is_the_other_release_with_its_systemd(booted):
    assert booted.release != releases.under_test() or os.environ.get("NBH_RELEASE") == booted.release
    os_release = booted.run("cat", "/etc/os-release").stdout
    assert f"VERSION_CODENAME={booted.release}" in os_release
    assert f'VERSION_ID="{releases.RELEASES[booted.release]}"' in os_release
    assert systemd_version(booted.run("systemctl", "--version").stdout) == SYSTEMD[booted.release]
    # the tree's own cgroup v2 hierarchy, whatever the host mounts
    assert booted.run("stat", "-f", "-c", "%T", "/sys/fs/cgroup").stdout.strip() == "cgroup2fs"


def test_the_tree_has_a_whole_proc_and_the_kernels_boot_id(booted):
    """As a machine has: nothing mounted over /proc's files and folders but
    nspawn's /proc/kmsg (systemd 257 copies such covers onto a unit's own
    /proc, where rootless podman then mounts no container's /proc), and the
    kernel's boot id, which a unit's own /proc shows (podman 5 refuses to
    run across two). A unit like nbh-podman.service, as an account, makes a
    user namespace that mounts a /proc of its own."""
    mounts = booted.run("cat", "/proc/self/mountinfo").stdout.splitlines()
    assert [line.split()[4] for line in mounts if line.split()[4].startswith("/proc/")] in ([], ["/proc/kmsg"])
    kernels = Path("/proc/sys/kernel/random/boot_id").read_text()
    assert booted.run("cat", "/proc/sys/kernel/random/boot_id").stdout == kernels
    as_a_unit = ("systemd-run", "--wait", "--pipe", "--quiet", "-p", "ProtectProc=invisible", "-p", "User=nobody")
    assert booted.run(*as_a_unit, "cat", "/proc/sys/kernel/random/boot_id").stdout == kernels
    nested = booted.run(*as_a_unit, "unshare", "--map-root-user", "--pid", "--fork", "--mount", "--mount-proc",
                        "true", check=False)
    assert nested.returncode == 0, nested.stderr


def test_the_units_verify_under_its_systemd(booted):
    verified = booted.run("systemd-analyze", "verify", "--man=no", *unit_names(), check=False)
    assert verified.returncode == 0 and verified.stderr == "", verified.stderr
    # and the accounts and folders they name, made at boot by its sysusers and tmpfiles
    for account in ("nbh", "nbh-jupyter", "nbh-courses", "nbh-events"):
        assert booted.run("id", account, check=False).returncode == 0, account
    for folder in ("/var/lib/nbhosting/workspaces", "/run/nbhosting/nb", "/var/lib/nbhosting/archives"):
        assert booted.run("test", "-d", folder, check=False).returncode == 0, folder


def test_its_polkitd_applies_the_rule(booted):
    def as_front_end(*argv: str) -> subprocess.CompletedProcess:
        return booted.run("systemctl", "--no-ask-password", *argv, user="nbh", check=False)

    def refused(done: subprocess.CompletedProcess) -> bool:
        return "Access denied" in done.stderr or "authentication required" in done.stderr.lower()

    # what the rule allows: the units start (and fail on their own: no course, no platform)
    for unit in ("nbh-lti-keys.service", "nbh-course-update@nope.service", "nbh-course-rename@nope:other.service"):
        done = as_front_end("start", unit)
        assert not refused(done), (unit, done.stderr)
    # and what it does not
    for argv in (("start", "nbh-autopull.service"), ("restart", "nbh-course-update@nope.service"),
                 ("start", "nbh-course-clean@x.service"), ("stop", "nginx.service")):
        done = as_front_end(*argv)
        assert done.returncode != 0 and refused(done), (argv, done.stderr)


@pytest.fixture(scope="module")
def site(booted):
    """The tree set up as an operator does: `nbh setup`, a certificate, its nginx."""
    releases.open_site(booted)
    return booted


def test_the_front_end_answers_through_its_nginx(site):
    booted = site
    # https (the site sends http there), its certificate the one just made;
    # the staff pages on their own host name
    fetch = ("import ssl, sys, urllib.request, urllib.error\n"
             "request = urllib.request.Request(sys.argv[1], headers={'Host': sys.argv[2]})\n"
             "try:\n"
             "    r = urllib.request.urlopen(request, timeout=60, context=ssl._create_unverified_context())\n"
             "except urllib.error.HTTPError as e:\n"
             "    r = e\n"
             "print(r.status); print(r.read().decode()[:20000])\n")
    page = booted.run("python3", "-c", fetch, "https://127.0.0.1/staff/login", "staff.localhost",
                      timeout=90).stdout
    journal = booted.run("journalctl", "--no-pager", "-n", "40", "-u", "nbh-web.service", check=False).stdout
    assert page.startswith("200\n") and 'name="password"' in page, (page[:2000], journal[-4000:])
    refused = booted.run("python3", "-c", fetch, "https://127.0.0.1/python-mooc/w1/x/nobody",
                         "127.0.0.1").stdout
    assert refused.split("\n", 1)[0] in ("400", "403", "404"), refused[:500]
    assert booted.run("systemctl", "is-active", "nbh-web.service").stdout.strip() == "active"
    # the front end runs as its account, on the release's own python3 and its Debian modules
    main_pid = booted.run("systemctl", "show", "-P", "MainPID", "nbh-web.service").stdout.strip()
    assert booted.run("stat", "-c", "%U", f"/proc/{main_pid}").stdout.strip() == "nbh"
    command = booted.run("cat", f"/proc/{main_pid}/cmdline").stdout.split("\0")
    assert command[:2] == ["/usr/bin/python3", "/usr/bin/nbh-web"], command


PODMAN = {"bookworm": "4.3.", "trixie": "5.4."}
def test_a_student_runs_a_cell_in_its_podman(site):
    """The test image in the release's podman (Debian 13: podman 5, crun,
    sqlite), a course, a student's entry through its nginx: the notebook's
    page with nbhosting's menus, a kernel, a cell."""
    booted = site
    assert booted.run("podman", "--version").stdout.startswith(f"podman version {PODMAN[booted.release]}")
    student = f"release-student-{os.getpid()}"
    instance = Instance(COURSE, student)
    student_visit(booted, student)
    # the student's own copy, with the file beside it, written by the front
    # end into the set-group-id workspace; the container in the unit's
    # cgroup, as the containers' account
    workspace = f"/var/lib/nbhosting/workspaces/{COURSE}/{student}"
    assert booted.run("stat", "-c", "%U:%G", f"{workspace}/w1/intro.ipynb", f"{workspace}/w1/data.csv"
                      ).stdout.split() == ["nbh:nbh-jupyter"] * 2
    group = booted.run("systemctl", "show", "-P", "ControlGroup", instance.service).stdout.strip()
    pids = booted.run("cat", f"/sys/fs/cgroup{group}/cgroup.procs").stdout.split()  # the tree's PIDs
    owners = set(booted.run("stat", "-c", "%U", *(f"/proc/{pid}" for pid in pids)).stdout.split())
    commands = set(booted.run("cat", *(f"/proc/{pid}/comm" for pid in pids)).stdout.split())
    assert owners == {"nbh-jupyter"} and {"conmon", "jupyter-server"} <= commands, (owners, commands)
    # stopped: no container left behind
    booted.run("nbh", "stop", COURSE, student)
    assert booted.run(*podman.argv(["ps", "--all", "--format", "{{.Names}}"])).stdout.split() == []


RENDER = ("import json, socket\n"
          "nb = {'nbformat': 4, 'nbformat_minor': 5, 'metadata': {}, 'cells': [{'cell_type': 'markdown',"
          " 'id': 'm', 'metadata': {}, 'source': '# Week 1'}]}\n"
          "s = socket.socket(socket.AF_UNIX); s.connect('/run/nbhosting/render.sock')\n"
          "s.sendall(json.dumps(nb).encode()); s.shutdown(socket.SHUT_WR)\n"
          "out = b''\n"
          "while chunk := s.recv(65536):\n"
          "    out += chunk\n"
          "print(out.decode())\n")


def check_private_pids(system) -> None:
    """`nbh setup` gives the units that read another party's input a PID
    namespace of their own where the installed systemd knows PrivatePIDs=,
    and writes nothing that one would not know elsewhere. The sandbox's (the
    host's release) and the tree's (the other) are checked: each path runs."""
    version = systemd_version(system.run("systemctl", "--version").stdout)
    instances = [unit.replace("@.", "@x.") for unit in cli.PRIVATE_PIDS_UNITS]
    for unit, instance in zip(cli.PRIVATE_PIDS_UNITS, instances, strict=True):
        dropin = f"/etc/systemd/system/{unit}.d/60-private-pids.conf"
        assert (system.run("test", "-e", dropin, check=False).returncode == 0) == (version >= 257), (dropin, version)
        shown = system.run("systemctl", "show", "-P", "PrivatePIDs", instance, check=False).stdout.strip()
        assert shown == ("yes" if version >= 257 else ""), (instance, version, shown)
    verified = system.run("systemd-analyze", "verify", "--man=no", *instances, check=False)
    assert verified.returncode == 0 and verified.stderr == "", verified.stderr
    # and the render still answers the front end's account
    system.run("systemctl", "start", "nbh-render.socket")
    page = system.run("python3", "-c", RENDER, user="nbh").stdout
    assert page.startswith("ok\n") and "Week 1" in page, page[:500]


def test_private_pids_where_the_trees_systemd_knows_it(site):
    check_private_pids(site)


def test_private_pids_where_the_sandboxs_systemd_knows_it(sandbox):
    check_private_pids(sandbox)


PROBE = "[Service]\nExecStart=/bin/true\nPrivatePIDs=yes\n"


def test_a_setting_only_257_knows_tells_each_systemd_apart(booted):
    """PrivatePIDs= came with systemd 257: the tree's and the host's systemd
    each say whether they know it, as their version says they should."""
    booted.run("sh", "-c", f"printf '{PROBE}' > /run/nbh-release-probe.service")
    inside = booted.run("systemd-analyze", "verify", "--man=no", "/run/nbh-release-probe.service", check=False)
    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder, "nbh-release-probe.service")
        probe.write_text(PROBE)
        host = subprocess.run(["systemd-analyze", "verify", "--man=no", str(probe)], capture_output=True, text=True)
        host_version = systemd_version(subprocess.run(["systemctl", "--version"], capture_output=True,
                                                      text=True).stdout)
    for version, done in ((SYSTEMD[booted.release], inside), (host_version, host)):
        unknown = re.search(r"Unknown key.*PrivatePIDs", done.stderr) is not None
        assert unknown == (version < 257), (version, done.stderr)
