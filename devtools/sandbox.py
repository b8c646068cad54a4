"""A private systemd with nbhosting installed, on a machine without one.

``python -m devtools.sandbox up|status|exec -- CMD|down``

systemd boots as PID 1 of new PID, mount and cgroup namespaces, in a cgroup
of its own on the host's cgroup2 hierarchy. Inside, /usr, /etc and /var are
overlays whose upper layers live in the namespace's /run, and /tmp is a
tmpfs: the project installs itself there as its package would (``make
install``, sysusers, tmpfiles, ``nbh setup``), or from the package itself
(``up --from-rpm``: the RPM that ``make rpm`` built, scriptlets and all), at
every boot, so every ``up`` is a fresh install, and nothing reaches the host
but the sandbox's state folder, which keeps only the containers' image
storage from one run to the next (importing the image takes a while).
``down`` powers systemd off, kills what is left through the cgroup
(cgroup.kill) and removes the cgroup: no process, mount or unit stays behind. The tests, the demo and the
benchmarks all use this module.

With NBH_OS naming the Debian release that is not the host's (``make test
OS=trixie`` on Debian 12), the sandbox is a fresh tree of that release
instead (devtools/releases.py), with the same settings, booted by
systemd-nspawn in the same cgroup and on the host's network; the tests
reach it the same way.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from nbhosting import paths, tokens
from nbhosting import podman as nbh_podman
from nbhosting.names import Instance

from . import releases, rpminstall
from .systems import IMAGE, image_tar, import_image, nsenter_argv

REPO = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("NBH_SANDBOX_STATE", "/var/lib/nbh-sandbox"))
PIDFILE = STATE / "systemd.pid"
# What the running sandbox was installed from: "checkout", or an RPM's path.
INSTALLED = STATE / "installed"
# The Debian release of a sandbox booted from a tree of it (`make test
# OS=trixie` on a Debian 12 host): absent when the sandbox is the host's own.
TREE_RELEASE = STATE / "tree-release"
BOOT_LOG = STATE / "boot.log"
NAME = "nbh-sandbox"
# Host units that would touch the host, or that a container has no use for:
# systemd-tmpfiles-setup alone would empty the host's /tmp; those that would
# change the host's kernel settings, as in a tree (releases.KERNEL_UNITS).
MASKED = (
    "systemd-tmpfiles-setup.service", "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-clean.timer", "systemd-remount-fs.service", "systemd-sysusers.service",
    "systemd-update-utmp.service", "systemd-journal-flush.service", "systemd-random-seed.service",
    "ldconfig.service", "kmod-static-nodes.service", "systemd-firstboot.service",
    "systemd-machine-id-commit.service", "systemd-repart.service", "systemd-pstore.service",
    "systemd-timesyncd.service", "getty.target", "console-getty.service", "dev-mqueue.mount",
    *releases.KERNEL_UNITS,
)
TARGET = """\
[Unit]
Description=nbhosting sandbox
Requires=basic.target dbus.socket
Wants=polkit.service nginx.service nbh-web.socket nbh-cull.timer nbh-gc.timer
Wants=nbh-events.service nbh-sample.timer nbh-metrics.socket
After=basic.target
AllowIsolate=yes
"""
BOOT_TIMEOUT = 60
# nginx in the sandbox: the site on loopback ports instead of 80 and 443, and
# a page standing for the LMS, on another site (localhost, not 127.0.0.1), so
# that the notebook is in a cross-site iframe as on a real LMS.
HTTP_PORT, HTTPS_PORT, LMS_PORT = 8780, 8743, 8790
SITE_URL = f"http://127.0.0.1:{HTTP_PORT}"
# The staff pages' own origin (Chromium resolves *.localhost to loopback; a
# client that does not sends "Host: staff.localhost" to 127.0.0.1).
STAFF_URL = f"http://staff.localhost:{HTTP_PORT}"
LMS_ORIGINS = (f"http://localhost:{LMS_PORT}", f"http://localhost:{LMS_PORT + 1}")
LMS_ROOT = "/var/lib/nbhosting/sandbox-lms"
CONFIG = f"""\
# The sandbox's configuration (devtools.sandbox); see nbhosting.toml.example.
[web]
lms_origins = {json.dumps(LMS_ORIGINS)}
public_url = "{SITE_URL}"
staff_url = "{STAFF_URL}"
"""


class SandboxError(RuntimeError):
    pass


# -- on the host ------------------------------------------------------------

def cgroup_root() -> Path:
    """Where the host mounts its cgroup2 hierarchy."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] == "cgroup2":
            return Path(left.split()[4])
    raise SandboxError("no cgroup2 hierarchy is mounted on this host")


def cgroup() -> Path:
    return cgroup_root() / NAME


def pid() -> int | None:
    """systemd's PID on the host when the sandbox is up."""
    try:
        value = int(PIDFILE.read_text())
    except (FileNotFoundError, ValueError):
        return None
    try:
        line = Path(f"/proc/{value}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone before or while it is read
        return None
    # "PID (comm) state ...": systemd, and not a zombie
    comm, state = line[line.index("(") + 1:line.rindex(")")], line[line.rindex(")") + 2]
    return value if comm == "systemd" and state != "Z" else None


def require_pid() -> int:
    value = pid()
    if value is None:
        raise SandboxError("the sandbox is not up (python -m devtools.sandbox up)")
    return value


def root() -> Path:
    """The sandbox's file system, as seen from the host."""
    return Path(f"/proc/{require_pid()}/root")


def path(inside: str) -> Path:
    """A path inside the sandbox, for the host: unix sockets, files."""
    return root() / inside.lstrip("/")


def exec_argv(argv: list[str], user: str | None = None) -> list[str]:
    # a tree's also has its own host name and IPC (nspawn's); the network is the host's
    namespaces = ("--mount", "--pid", "--uts", "--ipc") if TREE_RELEASE.exists() else ("--mount", "--pid")
    return nsenter_argv(require_pid(), argv, user, namespaces)


def python() -> str:
    """The python that runs the project's modules inside: the checkout's
    virtualenv, or a tree's python3 (which has them in dist-packages)."""
    return "/usr/bin/python3" if TREE_RELEASE.exists() else str(REPO / ".venv/bin/python")


def run(argv: list[str], user: str | None = None, check: bool = True, timeout: float = 120,
        **kwargs) -> subprocess.CompletedProcess:
    """Run a command inside the sandbox, as root or as `user`."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    result = subprocess.run(exec_argv(argv, user), timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise SandboxError(
            f"{' '.join(argv)} exited {result.returncode} in the sandbox: "
            f"{(result.stderr or '').strip()[-2000:]}"
        )
    return result


# -- reaching in from the host: the tests, the demo and the benchmarks ------

class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float = 60):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def front_end(method: str, url: str, body: str | None = None, headers: dict | None = None,
              host: str = "staff.localhost") -> http.client.HTTPResponse:
    """A request straight to nbh-web's socket, as nginx makes it, but for
    the client's address, which X-Real-IP says (as from a botnet's many)."""
    connection = UnixHTTPConnection(str(path("/run/nbhosting/web.sock")), timeout=120)
    connection.request(method, url, body, headers={"Host": host, **(headers or {})})
    response = connection.getresponse()
    response.body = response.read()
    connection.close()
    return response


def server_token(instance: Instance) -> str:
    secret = tokens.read_secret(path(str(tokens.SECRET_PATH)))
    return tokens.server_token(secret, instance.path, tokens.generation(instance, path(str(paths.TOKENS_DIR))))


def request(instance: Instance, method: str, url: str, body: dict | None = None,
            token: str | None = None, timeout: float = 60) -> tuple[int, bytes]:
    """An HTTP request to the student's socket unit, as nginx makes it."""
    connection = UnixHTTPConnection(str(path(instance.listen_socket)), timeout)
    headers = {"Authorization": f"token {token or server_token(instance)}"}
    payload = None
    if body is not None:
        payload = json.dumps(body)
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, instance.base_url + url.lstrip("/"), payload, headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def unit_pids(unit: str) -> list[int]:
    """Host PIDs: cgroup.procs lists them in the reader's PID namespace."""
    control_group = run(["systemctl", "show", "-P", "ControlGroup", unit]).stdout.strip()
    if not control_group:
        return []
    procs = path(f"/sys/fs/cgroup{control_group}/cgroup.procs")
    return [int(p) for p in procs.read_text().split()] if procs.exists() else []


def make_course(name: str, notebooks: dict[str, dict | str | bytes], *options: str,
                run: Callable[..., subprocess.CompletedProcess] = run, path: Callable[[str], Path] = path) -> None:
    """A course made as an operator does (`nbh course create`), from a git
    repository of these notebooks (path: its JSON) and other files (path:
    their text or bytes). Kept once made, but only if it is exactly that: a
    course of that name made otherwise (by hand, by the demo) is made anew.
    In the sandbox, or in another system that run and path reach."""
    wanted = {relative: content if isinstance(content, bytes) else
              (content if isinstance(content, str) else json.dumps(content, indent=1)).encode()
              for relative, content in notebooks.items()}
    course = path(f"/var/lib/nbhosting/courses/{name}")
    if run(["nbh", "course", "show", name], check=False).returncode == 0:
        found = {str(p.relative_to(course)): p.read_bytes() for p in course.rglob("*")
                 if p.is_file() and ".git" not in p.parts}
        if found == wanted and not options:
            return
    repo = f"/var/lib/nbhosting/sandbox-repos/{name}"
    run(["rm", "-rf", repo, f"/var/lib/nbhosting/courses/{name}", f"/etc/nbhosting/courses/{name}.toml"])
    for relative, content in wanted.items():
        file = path(f"{repo}/{relative}")
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(content)
    git = ["git", "-C", repo, "-c", "user.name=Teacher", "-c", "user.email=teacher@example.org"]
    run(["git", "init", "--quiet", "--initial-branch=main", repo])
    run([*git, "add", "--all"])
    run([*git, "commit", "--quiet", "--message", f"The course {name}"])
    # git reads a local repository only as its owner (safe.directory):
    # the checkouts' account, which clones it in nbh-course-update@.
    run(["chown", "-R", "nbh-courses:nbh-courses", repo])
    run(["nbh", "course", "create", name, repo, *options])


def kill_cgroup() -> None:
    """End every process of the sandbox and remove its cgroups."""
    group = cgroup()
    if not group.exists():
        return
    (group / "cgroup.kill").write_text("1")
    deadline = time.monotonic() + 20
    while "populated 1" in (group / "cgroup.events").read_text():
        if time.monotonic() > deadline:
            raise SandboxError(f"processes are left in {group} after cgroup.kill")
        time.sleep(0.05)
    for folder in sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        folder.rmdir()
    group.rmdir()


def down(timeout: float = 30) -> None:
    """Power the sandbox off; idempotent, and cleans what a crashed run left."""
    value = pid()
    if value is not None:
        # SIGRTMIN+4 is systemd's "poweroff": units stop in order, so podman
        # removes its containers and the storage stays consistent.
        os.kill(value, signal.SIGRTMIN + 4)
        deadline = time.monotonic() + timeout
        while pid() == value and time.monotonic() < deadline:
            time.sleep(0.1)
    kill_cgroup()
    PIDFILE.unlink(missing_ok=True)
    if TREE_RELEASE.exists():
        releases.remove(tree_path(TREE_RELEASE.read_text()))
        TREE_RELEASE.unlink()


def tree_path(release: str) -> Path:
    return releases.TREES / f"sandbox-{release}"


def namespace_init(group: Path) -> int | None:
    """The host PID of the process that is PID 1 in the sandbox's namespace."""
    for value in (v for procs in group.rglob("cgroup.procs") for v in procs.read_text().split()):
        try:
            status = Path(f"/proc/{value}/status").read_text()
        except FileNotFoundError:
            continue
        nspid = next(line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:"))
        if nspid[-1] == "1" and len(nspid) > 1:
            return int(value)
    return None


def up(timeout: float = BOOT_TIMEOUT, from_rpm: Path | None = None) -> int:
    """Boot the sandbox unless it is up; returns systemd's PID on the host.
    With `from_rpm`, the project is that RPM, not this checkout."""
    if from_rpm is not None and not from_rpm.is_file():
        raise SandboxError(f"no RPM at {from_rpm} (make rpm builds one)")
    release = releases.under_test()
    in_tree = release != releases.host_release()
    wanted = (str(from_rpm.resolve()) if from_rpm else "checkout") + (f" on {release}" if in_tree else "")
    value = pid()
    if value is not None:
        installed = INSTALLED.read_text() if INSTALLED.exists() else "checkout"
        if installed != wanted:
            raise SandboxError(f"the sandbox is up, installed from {installed}: `down` it first")
        return value
    down()  # whatever a crashed run left
    STATE.mkdir(parents=True, exist_ok=True)
    (STATE / "data" / "storage").mkdir(parents=True, exist_ok=True)
    for left in ("workspaces", "courses", "etc", "sandbox-repos", "sandbox-lms"):
        # what an older sandbox kept here, now made fresh at every boot
        shutil.rmtree(STATE / "data" / left, ignore_errors=True)
    INSTALLED.write_text(wanted)
    group = cgroup()
    group.mkdir()

    def enter_cgroup() -> None:
        (group / "cgroup.procs").write_text(str(os.getpid()))

    if in_tree:
        argv, env = tree_argv(release, from_rpm), {**os.environ, **releases.NSPAWN_ENV}
        TREE_RELEASE.write_text(release)
    else:
        argv = ["unshare", "--pid", "--fork", "--mount", "--mount-proc", "--cgroup", "--propagation", "private",
                sys.executable, "-m", "devtools.sandbox", "_boot",
                *(["--from-rpm", str(from_rpm.resolve())] if from_rpm else [])]
        env = None
    with open(BOOT_LOG, "w") as log:
        # setsid --fork: the sandbox is nobody's child, so it outlives this
        # command and leaves no zombie when it ends.
        subprocess.run(["setsid", "--fork", *argv], cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                       stderr=subprocess.STDOUT, preexec_fn=enter_cgroup, check=True)
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        if "populated 0" in (group / "cgroup.events").read_text():
            raise SandboxError(f"the sandbox stopped while booting; see {BOOT_LOG}")
        if not PIDFILE.exists() and (value := namespace_init(group)) is not None:
            PIDFILE.write_text(str(value))
        if pid() is None:  # still installing, before the exec of systemd
            time.sleep(0.05)
            continue
        state = subprocess.run(
            exec_argv(["systemctl", "is-system-running"]), capture_output=True, text=True
        ).stdout.strip()
        if state in ("running", "degraded"):
            break
        time.sleep(0.1)
    else:
        raise SandboxError(f"the sandbox did not finish booting in {timeout} s; see {BOOT_LOG}")
    if state == "degraded":
        failed = run(["systemctl", "--failed", "--plain", "--no-legend"], check=False).stdout
        print(f"nbh-sandbox: booted degraded:\n{failed}", file=sys.stderr)
    if in_tree:
        add_loop_devices(value)
        releases.kernels_boot_id(value)
    load_image()
    return value


def tree_argv(release: str, from_rpm: Path | None) -> list[str]:
    """A fresh tree of the release with the project and the sandbox's
    settings installed, and the command that boots it: nspawn, on the
    host's network (the sandbox's loopback ports, for the tests' clients and
    Chromium), to the sandbox's target."""
    tree = releases.prepare(release, from_rpm, name=tree_path(release).name)
    settings(tree)
    with releases.lent_api(tree):
        sh("chroot", str(tree), "/usr/bin/nbh", "setup")
    # CAP_NET_ADMIN, which nspawn keeps from a tree on the host's network:
    # crun needs it in a build's own network namespace, to bring up its loopback.
    return releases.nspawn_argv(tree, "--bind=/dev/loop-control", "--capability=CAP_NET_ADMIN",
                                init_args=(f"--unit={NAME}.target",))


# As many as the host may have taken before the tree asks for one.
LOOP_DEVICES = 256


def add_loop_devices(leader: int) -> None:
    """Loop devices in a tree's /dev, which nspawn made without them: the
    bounded workspaces' disks (nbhosting/disks.py) are mounted from them.
    /dev/loop-control is the host's (nspawn binds it): the kernel hands out
    a free device, whose node is here."""
    for number in range(LOOP_DEVICES):
        node = Path(f"/proc/{leader}/root/dev/loop{number}")
        if not node.exists():
            os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(7, number))  # root's: mount(8) opens them


def load_image() -> None:
    """Import the test image into the containers' storage, once per build,
    and extract its static files for nginx, once per image (nbh does)."""
    stamp = STATE / "data" / "image.loaded"
    tar = image_tar()
    built = f"{tar.name} {tar.stat().st_mtime_ns}"
    have = run(nbh_podman.argv(["image", "exists", IMAGE]), check=False).returncode == 0
    if not (have and stamp.exists() and stamp.read_text() == built):
        import_image(run)
        stamp.write_text(built)
    # what an operator does after the site's image changes (docs/install.md)
    run(["/usr/bin/nbh", "jupyter-static"], timeout=600)


def status() -> dict:
    value = pid()
    info = {"up": value is not None, "pid": value, "state": STATE.as_posix()}
    if value is not None:
        info["system"] = run(["systemctl", "is-system-running"], check=False).stdout.strip()
        info["installed"] = INSTALLED.read_text() if INSTALLED.exists() else "checkout"
        if TREE_RELEASE.exists():
            info["tree"] = str(tree_path(TREE_RELEASE.read_text()))
    return info


# -- inside the namespaces, before systemd ----------------------------------

def sh(*argv: str) -> None:
    subprocess.run(argv, check=True)


TMPS = ("/tmp", "/var/tmp")


def in_a_tmp(path: Path) -> bool:
    """Under a folder that the sandbox covers with a tmpfs of its own."""
    return any(path.is_relative_to(tmp) for tmp in TMPS)


def boot(from_rpm: Path | None) -> None:
    """PID 1 of the new namespaces: lay out the file system, install, exec systemd."""
    run_dir = Path("/run")
    sh("mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,nodev", "tmpfs", "/run")
    layers = run_dir / NAME
    # The image storage, the one thing kept: held here before /var is covered.
    (layers / "storage").mkdir(parents=True)
    sh("mount", "--bind", str(STATE / "data" / "storage"), str(layers / "storage"))
    # The course builds' image storage on the host's disk too (rootless
    # overlay mounts on no overlay), but emptied at every boot.
    builds = STATE / "data" / "builds"
    if builds.exists():
        sh("rm", "-rf", "--one-file-system", str(builds))
    builds.mkdir(mode=0o755, parents=True)
    (layers / "builds").mkdir()
    sh("mount", "--bind", str(builds), str(layers / "builds"))
    for top in ("usr", "etc", "var"):
        upper, work = layers / top / "upper", layers / top / "work"
        upper.mkdir(parents=True)
        work.mkdir()
        sh("mount", "-t", "overlay", "overlay", "-o",
           f"lowerdir=/{top},upperdir={upper},workdir={work}", f"/{top}")
    # A checkout under /tmp or /var/tmp stays reachable at its own path.
    in_tmp = in_a_tmp(REPO)
    if in_tmp:
        (layers / "repo").mkdir()
        sh("mount", "--bind", str(REPO), str(layers / "repo"))
    for tmp in TMPS:
        sh("mount", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", tmp)
    if in_tmp:
        REPO.mkdir(parents=True)
        sh("mount", "--bind", str(layers / "repo"), str(REPO))
    open_checkout()
    # What systemd's own tmpfiles.d does at boot (masked here): the journal's
    # folder, whose files the group systemd-journal reads (nbh-events).
    journal = run_dir / "log" / "journal"
    journal.mkdir(parents=True)
    shutil.chown(journal, "root", "systemd-journal")
    journal.chmod(0o2755)
    sh("mount", "-t", "cgroup2", "cgroup2", "/sys/fs/cgroup")
    # rootless podman needs shared mount propagation
    sh("mount", "--make-rshared", "/")
    # before the install, whose tmpfiles.d lays it out
    Path("/var/lib/nbh-build").mkdir(parents=True, exist_ok=True)
    sh("mount", "--bind", str(layers / "builds"), "/var/lib/nbh-build")
    install(from_rpm)
    keep_image_storage(layers / "storage")
    os.execve("/lib/systemd/systemd", ["/lib/systemd/systemd", f"--unit={NAME}.target"],
              {"container": NAME, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def keep_image_storage(kept: Path) -> None:
    """Put the kept image storage where the fresh install's podman looks.

    Everything else under /var/lib/nbhosting is as the package made it. The
    storage belongs to the containers' account: should sysusers give that
    account another id than last time, the storage is dropped, not chowned.
    """
    account = pwd.getpwnam("nbh-jupyter")
    if kept.stat().st_uid != account.pw_uid:
        for child in kept.iterdir():
            sh("rm", "-rf", "--one-file-system", str(child))
        os.chown(kept, account.pw_uid, account.pw_gid)
    kept.chmod(0o700)
    storage = Path("/var/lib/nbhosting/containers/storage")
    storage.mkdir(mode=0o700)
    os.chown(storage, account.pw_uid, account.pw_gid)
    sh("mount", "--bind", str(kept), str(storage))


def open_checkout() -> None:
    """Units run the project from this checkout as unprivileged accounts: a
    checkout under /root (mode 0700) is made traversable here, in an overlay."""
    closed = [p for p in reversed(REPO.parents) if p != Path("/") and not os.stat(p).st_mode & 0o001]
    if not closed:
        return
    top = closed[0]
    upper, work = Path(f"/run/{NAME}/open{top}/upper"), Path(f"/run/{NAME}/open{top}/work")
    upper.mkdir(parents=True)
    work.mkdir()
    sh("mount", "-t", "overlay", "overlay", "-o", f"lowerdir={top},upperdir={upper},workdir={work}", str(top))
    for folder in closed:
        folder.chmod(os.stat(folder).st_mode | 0o011)


def install(from_rpm: Path | None) -> None:
    """Install the project, from the checkout as its package would or from
    the package itself, and the sandbox's own settings."""
    system = Path("/etc/systemd/system")
    shutil.rmtree(system)  # the host's enabled units and aliases: not ours
    system.mkdir()
    for unit in MASKED:
        (system / unit).symlink_to("/dev/null")
    Path("/etc/fstab").write_text("")
    rpminstall.add_nginx_group(Path("/"))
    if from_rpm:
        print(rpminstall.install(from_rpm), end="", flush=True)
    else:
        install_checkout()
    settings(Path("/"))
    # as an operator runs it after editing the configuration (the RPM's %post ran it once)
    sh("/usr/bin/nbh", "setup")


def settings(root: Path) -> None:
    """The sandbox's own, in the system at root, once the project is
    installed there: its target, its nginx and its configuration."""
    (root / f"usr/lib/systemd/system/{NAME}.target").write_text(TARGET)
    for site in (root / "etc/nginx/sites-enabled").glob("*"):
        site.unlink()  # Debian's default site would take the host's port 80
    journald = root / "etc/systemd/journald.conf.d"
    journald.mkdir(parents=True, exist_ok=True)
    (journald / "sandbox.conf").write_text("[Journal]\nStorage=volatile\n")
    configure_nginx(root)
    (root / "etc/nbhosting/nbhosting.toml").write_text(CONFIG)


def install_checkout() -> None:
    """What the RPM and its scriptlets install, from this checkout."""
    sh("make", "--no-print-directory", "-C", str(REPO), "install", "DESTDIR=/", "PREFIX=/usr")
    for script in ("nbh", "nbh-jupyter-run", "nbh-web", "nbh-events", "nbh-metrics", "nbh-render"):
        Path("/usr/bin", script).symlink_to(REPO / ".venv/bin" / script)
    sh("systemd-sysusers", "/usr/lib/sysusers.d/nbhosting.conf")
    sh("systemd-tmpfiles", "--create", "/usr/lib/tmpfiles.d/nbhosting.conf")
    # The units that run the project's Python must see this checkout, which
    # the RPM would have put under /usr.
    seen = ""
    if REPO.is_relative_to("/root") or REPO.is_relative_to("/home"):
        seen = "ProtectHome=read-only\n"
    elif in_a_tmp(REPO):
        seen = "PrivateTmp=no\n"
    for unit in ("nbh-web.service", "nbh-cull.service", "nbh-gc.service", "nbh-autopull.service",
                 "nbh-course-update@.service", "nbh-course-build@.service", "nbh-lti-keys.service",
                 "nbh-events.service", "nbh-sample.service", "nbh-metrics.service",
                 "nbh-render@.service") if seen else ():
        dropin = Path(f"/etc/systemd/system/{unit}.d")
        dropin.mkdir(parents=True)
        (dropin / "sandbox.conf").write_text(f"[Service]\n# the checkout the sandbox runs\n{seen}")


def configure_nginx(root: Path) -> None:
    """The project's site on loopback ports, a self-signed certificate, the LMS page."""
    site = root / "etc/nginx/conf.d/nbhosting.conf"
    text = site.read_text()
    for production, sandbox in (
        ("    listen 80;\n    listen [::]:80;\n", f"    listen 127.0.0.1:{HTTP_PORT + 1};\n"),
        ("    listen 443 ssl;\n    listen [::]:443 ssl;\n",
         f"    listen 127.0.0.1:{HTTPS_PORT} ssl;\n    listen 127.0.0.1:{HTTP_PORT};\n"),
    ):
        if production not in text:
            raise SandboxError(f"{site}: no {production.strip()!r} to move to a loopback port")
        text = text.replace(production, sandbox)
    site.write_text(text + f"""
# sandbox only: the page standing for the LMS
server {{
    listen 127.0.0.1:{LMS_PORT};
    root {LMS_ROOT};
}}
""")
    tls = root / "etc/nbhosting/tls"
    if (tls / "cert.pem").exists():
        return
    tls.mkdir(parents=True, exist_ok=True)
    sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
       "-days", "30", "-subj", "/CN=127.0.0.1", "-keyout", str(tls / "key.pem"), "-out", str(tls / "cert.pem"))


# -- command line -----------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.sandbox", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up", help="boot the sandbox (no-op when it is up)")
    up_parser.add_argument("--from-rpm", nargs="?", const="", metavar="RPM", type=str,
                           help="install this RPM (default: the one `make rpm` built), not the checkout")
    commands.add_parser("status", help="is it up, and systemd's state")
    exec_parser = commands.add_parser("exec", help="run a command in the sandbox")
    exec_parser.add_argument("--user", help="run as this account")
    exec_parser.add_argument("cmd", nargs=argparse.REMAINDER)
    commands.add_parser("down", help="power it off and clean up (idempotent)")
    commands.add_parser("_boot", help=argparse.SUPPRESS).add_argument("--from-rpm", type=Path)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("nbh-sandbox: must run as root", file=sys.stderr)
        return 2
    try:
        if args.command == "_boot":
            boot(args.from_rpm)
        elif args.command == "up":
            from_rpm = None if args.from_rpm is None else Path(args.from_rpm or rpminstall.built_rpm())
            print(f"nbh-sandbox: up, systemd is PID {up(from_rpm=from_rpm)} on the host")
        elif args.command == "status":
            print(json.dumps(status(), indent=2))
        elif args.command == "down":
            down()
            print("nbh-sandbox: down")
        elif args.command == "exec":
            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            return subprocess.run(exec_argv(cmd or ["bash"], args.user)).returncode
    except (SandboxError, rpminstall.InstallError, subprocess.TimeoutExpired, OSError) as error:
        print(f"nbh-sandbox: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
