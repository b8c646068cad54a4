"""The Debian release that is not the host's, booted: Debian 13 (systemd 257)
on a Debian 12 host, Debian 12 (systemd 252) on a Debian 13 one.

``python -m devtools.releases up [RELEASE] [--from-rpm RPM]`` makes a
fresh tree of the release under /var/lib/nbh-releases/<release>, from a
tarball debootstrapped once from the Debian archive the host's apt uses
(cached in /var/cache/nbhosting, as the test image is); installs the project
into it as its package does (``make install DESTDIR=``: units, polkit rule,
nginx site, sysusers and tmpfiles; the Python package beside the release's
own python3 modules, which give it its dependencies, and its commands), or
the package itself, by rpm, its scriptlets run in the tree; and
boots it with systemd-nspawn: its own PID 1, a cgroup v2 hierarchy of its
own (nspawn's unified mode, whatever the host mounts), a private network.
Commands run in it through nsenter, as in the sandbox. ``down`` stops it
and removes the tree.

What the tests check there (tests/test_releases.py): that it is the
release, that the project's units verify under its systemd, that its
polkitd applies the rule, that its nginx loads the site and that the front
end answers through it, and that a student's server runs there: the test
image imported into its podman, a course made, a notebook opened through
its nginx and a cell run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from . import rpminstall, systems

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("NBH_CACHE_DIR", "/var/cache/nbhosting"))
TREES = Path("/var/lib/nbh-releases")
RELEASES = {"bookworm": "12", "trixie": "13"}
# The release's own packages: its systemd, polkitd, nginx, podman, and the
# front end's dependencies as Debian packages them (what the RPM Requires=).
# debootstrap does not resolve virtual packages: python3-cffi-backend is
# named for python3-cryptography's and python3-zmq's sake.
PACKAGES = ("systemd", "systemd-sysv", "dbus", "libpam-systemd", "polkitd", "nginx", "podman", "e2fsprogs",
            "util-linux", "git", "openssl", "python3", "python3-tornado", "python3-dbus-fast", "python3-pystemd",
            "python3-systemd", "python3-httpx", "python3-jwt", "python3-cryptography", "python3-cffi-backend",
            "python3-prometheus-client", "python3-argon2", "python3-nbconvert", "python3-brotli",
            "libnginx-mod-http-brotli-static")
# Debian 12's podman needs a container-network-stack, named here (netavark,
# as Debian 13's podman has).
RELEASE_PACKAGES = {"bookworm": ("netavark",), "trixie": ("python3-jupytext",)}
# The test tools the package's %check runs with (check()), the release's own.
CHECK_PACKAGES = ("python3-pytest", "python3-pytest-timeout", "python3-hypothesis", "python3-jsonschema",
                  "python3-selenium")
# What the release's archive has older than pyproject.toml asks (Debian 12:
# Tornado 6.2, PyJWT 2.6, nbconvert 6.5) or lacks (Debian 12: jupytext), from
# PyPI's wheels into /usr/local with what they need, as an operator of that
# release would have to (its python3 looks there first).
RELEASE_PIP = {"bookworm": ("tornado>=6.3", "pyjwt>=2.8", "nbconvert>=7", "jupytext>=1.16"), "trixie": ()}
BOOT_TIMEOUT = 120
# What a booted system would change in the host's kernel, its /proc/sys and
# /sys being writable: masked in a tree (NSPAWN_ENV) and in the host-mode
# sandbox (sandbox.MASKED, which has these and more). The trees have no udev.
KERNEL_UNITS = ("systemd-sysctl.service", "systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount",
                "systemd-modules-load.service", "systemd-journald-audit.socket", "sys-kernel-debug.mount",
                "sys-kernel-tracing.mount", "sys-kernel-config.mount", "sys-fs-fuse-connections.mount",
                "dev-hugepages.mount")
# Trees kept in the cache per release (tarball()).
KEPT_TREES = 2
# The tree's own: nspawn gives it all of these (its network is private).
NAMESPACES = ("--mount", "--uts", "--ipc", "--net", "--pid")


class ReleaseError(RuntimeError):
    pass


def host_release() -> str:
    text = Path("/etc/os-release").read_text()
    found = re.search(r"^VERSION_CODENAME=(\w+)", text, re.MULTILINE)
    if not found or found[1] not in RELEASES:
        raise ReleaseError(f"the host is not one of {', '.join(RELEASES)}")
    return found[1]


def under_test() -> str:
    """The release the sandbox runs: the host's, or NBH_OS's (`make test OS=`)."""
    wanted = os.environ.get("NBH_OS") or host_release()
    if wanted not in RELEASES:
        raise ReleaseError(f"OS={wanted}: not one of {', '.join(RELEASES)}")
    return wanted


def other_release() -> str:
    """The release to boot beside the sandbox: not the one under test, or NBH_RELEASE's."""
    if wanted := os.environ.get("NBH_RELEASE"):
        return wanted
    return next(release for release in RELEASES if release != under_test())


def mirror() -> str:
    """The Debian archive the host's apt uses (never a host name of ours)."""
    uris = subprocess.run(["apt-get", "indextargets", "--format", "$(REPO_URI)", "Identifier: Packages",
                           "Label: Debian"], check=True, capture_output=True, text=True).stdout.split()
    if not uris:
        raise ReleaseError("apt on this host uses no Debian archive")
    return uris[0]


def tarball(release: str) -> Path:
    """The debootstrapped tree of the release, made once (for this list of packages)."""
    packages = (*PACKAGES, *RELEASE_PACKAGES[release], *CHECK_PACKAGES)
    key = hashlib.sha256(" ".join(sorted(packages)).encode()).hexdigest()[:12]
    cached = CACHE / f"{release}-tree-{key}.tar"
    if cached.exists():
        return cached
    work = TREES / f".debootstrap-{release}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    print(f"debootstrap {release} (once, cached in {cached})", file=sys.stderr, flush=True)
    done = subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", release,
                           str(work), mirror()], capture_output=True, text=True)
    if done.returncode:
        log = work / "debootstrap" / "debootstrap.log"
        tail = log.read_text()[-3000:] if log.exists() else done.stdout[-3000:]
        raise ReleaseError(f"debootstrap {release} failed:\n{tail}")
    for deb in (work / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "--numeric-owner", "-C", str(work), "-cf", f"{cached}.tmp", "."], check=True)
    os.replace(f"{cached}.tmp", cached)
    shutil.rmtree(work)
    prune(release)
    return cached


def prune(release: str) -> None:
    """Each list of packages leaves its tree (over 500 MB): the newest few
    stay, for checkouts that differ, as the test image's do (build-test-image)."""
    for old in sorted(CACHE.glob(f"{release}-tree-*.tar"), key=lambda path: path.stat().st_mtime)[:-KEPT_TREES]:
        old.unlink()


def _scripts() -> dict[str, str]:
    with open(REPO / "pyproject.toml", "rb") as opened:
        return tomllib.load(opened)["project"]["scripts"]


def install(tree: Path, release: str, rpm: Path | None = None) -> None:
    """What the package installs, into the tree: the checkout as the package
    would, or the package itself (`make rpm`'s), its scriptlets run there."""
    rpminstall.add_nginx_group(tree)
    for site in (tree / "etc/nginx/sites-enabled").glob("*"):
        site.unlink()  # Debian's default site would take port 80 too
    if wanted := RELEASE_PIP[release]:
        python = os.readlink(tree / "usr/bin/python3").removeprefix("python")  # the release's: 3.11
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--only-binary=:all:",
                        f"--python-version={python}", "--implementation=cp",
                        f"--platform=manylinux2014_{platform.machine()}",
                        "--target", str(tree / f"usr/local/lib/python{python}/dist-packages"), *wanted],
                       check=True, capture_output=True, text=True)
    if rpm is None:
        install_checkout(tree)
    else:
        print(install_rpm(tree, rpm), end="", file=sys.stderr, flush=True)
    # The site needs a certificate; the sandbox's configuration without its ports.
    (tree / "etc/nbhosting/tls").mkdir(parents=True, exist_ok=True)
    (tree / "etc/nbhosting/nbhosting.toml").write_text(
        '[web]\nlms_origins = ["https://lms.example.org"]\npublic_url = "https://127.0.0.1"\n'
        'staff_url = "https://staff.localhost"\n')


def install_checkout(tree: Path) -> None:
    subprocess.run(["make", "--no-print-directory", "-C", str(REPO), "install", f"DESTDIR={tree}", "PREFIX=/usr"],
                   check=True, capture_output=True, text=True)
    # Debian's python3 finds /usr/lib/python3/dist-packages, as it finds its own modules there
    shutil.copytree(REPO / "nbhosting", tree / "usr/lib/python3/dist-packages/nbhosting",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for script, target in _scripts().items():
        module, function = target.split(":")
        path = tree / "usr/bin" / script
        path.write_text(f"#!/usr/bin/python3\nimport sys\nfrom {module} import {function}\nsys.exit({function}())\n")
        path.chmod(0o755)
    # what the package's scriptlets do, with the tree's own tools
    with lent_api(tree):
        for argv in (["systemd-sysusers", "/usr/lib/sysusers.d/nbhosting.conf"],
                     ["systemd-tmpfiles", "--create", "/usr/lib/tmpfiles.d/nbhosting.conf"]):
            subprocess.run(["chroot", str(tree), *argv], check=True, capture_output=True, text=True)


def install_rpm(tree: Path, rpm: Path) -> str:
    """`rpm -i` with the host's rpm, which runs the scriptlets chrooted into
    the tree: its systemd-sysusers, systemd-tmpfiles, systemctl preset and
    `nbh setup` (with its python3 and its libraries)."""
    with lent_api(tree):
        return rpminstall.install(rpm, tree, python_requires=False)


def check(tree: Path) -> subprocess.CompletedProcess:
    """The package's %check (packaging/rpm/nbhosting.spec) in a tree it is
    installed in: the fast tests, of the installed package (--import-mode=append
    and python3 -P: the copy's own nbhosting/ comes after it), with the
    release's python3 and libraries. The sources are HEAD's, as `make rpm`
    archives them for rpmbuild; the output starts with where nbhosting came from."""
    copy = tree / "var/tmp/nbh-check"
    shutil.rmtree(copy, ignore_errors=True)
    copy.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(copy)], input=archive, check=True)
    script = ("cd /var/tmp/nbh-check && python3 -P -c 'import nbhosting; print(\"nbhosting from\", nbhosting.__file__)'"
              " && exec python3 -P -m pytest -q -p no:cacheprovider --import-mode=append"
              " --tb=short -m 'not sandbox and not rpm' tests")
    try:
        with lent_api(tree):
            return subprocess.run(["chroot", str(tree), "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                                   "HOME=/root", "LANG=C.UTF-8", "sh", "-c", script],
                                  capture_output=True, text=True, timeout=900)
    finally:
        shutil.rmtree(copy, ignore_errors=True)


@contextlib.contextmanager
def lent_api(tree: Path):
    """The host's /proc and /dev in the tree, for a chrooted command that
    needs them (as a scriptlet does), while it runs."""
    lent = [tree / "proc", tree / "dev"]
    try:
        for api in lent:
            subprocess.run(["mount", "--rbind", f"/{api.name}", str(api)], check=True)
            subprocess.run(["mount", "--make-rslave", str(api)], check=True)
        yield
    finally:
        for api in lent:
            subprocess.run(["umount", "--recursive", "--lazy", str(api)], check=False)


@dataclass
class Booted:
    release: str
    tree: Path
    nspawn: subprocess.Popen
    leader: int  # the tree's PID 1, as the host sees it
    log: io.TextIOWrapper  # nspawn's output: the tree's console

    def run(self, *argv: str, user: str | None = None, check: bool = True, timeout: float = 120,
            **kwargs) -> subprocess.CompletedProcess:
        done = subprocess.run(systems.nsenter_argv(self.leader, list(argv), user, NAMESPACES), capture_output=True,
                              text=True, timeout=timeout, **kwargs)
        if check and done.returncode:
            raise ReleaseError(f"{' '.join(argv)} in {self.release}: exit {done.returncode}\n"
                               f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
        return done

    def path(self, inside: str) -> Path:
        """A path inside the tree, for the host, its /run included."""
        return Path(f"/proc/{self.leader}/root") / inside.lstrip("/")


def _leader(nspawn: subprocess.Popen) -> int | None:
    """nspawn's child that is the tree's systemd."""
    try:
        children = Path(f"/proc/{nspawn.pid}/task/{nspawn.pid}/children").read_text().split()
    except FileNotFoundError:
        return None
    for child in children:
        try:
            if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                return int(child)
        except FileNotFoundError:
            continue
    return None


def prepare(release: str, from_rpm: Path | None = None, name: str | None = None) -> Path:
    """A fresh tree of the release, the project installed (from the checkout,
    or from_rpm, the RPM `make rpm` built), not booted, at TREES/name."""
    if release not in RELEASES:
        raise ReleaseError(f"not one of {', '.join(RELEASES)}: {release}")
    source = tarball(release)
    tree = TREES / (name or release)
    _stop_left_behind(tree)
    remove(tree)
    tree.mkdir(parents=True)
    subprocess.run(["tar", "--numeric-owner", "-C", str(tree), "-xf", str(source)], check=True)
    install(tree, release, from_rpm)
    for unit in KERNEL_UNITS:
        (tree / "etc/systemd/system" / unit).symlink_to("/dev/null")
    return tree


def nspawn_argv(tree: Path, *options: str, init_args: tuple[str, ...] = ()) -> list[str]:
    """systemd-nspawn booting the tree; run with NSPAWN_ENV in the environment."""
    # the test image, read-only at its host path, for systems.import_image()
    image = [f"--bind-ro={systems.image_tar()}"] if systems.IMAGE_TAR.exists() else []
    return ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--boot", f"--machine=nbh-{tree.name}",
            f"--directory={tree}", *image, *options, *(("--", *init_args) if init_args else ())]


# How nspawn boots a tree:
# - systemd >= 256 refuses cgroup v1: nspawn gives the tree a cgroup2
#   hierarchy of its own, whatever the host mounts;
# - a whole /proc, as a machine has: nspawn 257 covers /proc/kallsyms,
#   /proc/keys, /proc/timer_list, and both bind /proc/sys and others
#   read-only. systemd 257 copies those covers onto the new /proc of a unit
#   with ProtectProc= (252 does not), and the kernel then refuses rootless
#   podman a container's /proc (it needs one whole /proc where it runs).
#   The tree may then write the host kernel's settings, as the host-mode
#   sandbox may: the units that would are masked in it (KERNEL_UNITS).
NSPAWN_ENV = {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1", "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "1"}


def kernels_boot_id(leader: int) -> None:
    """The kernel's boot id in the booted tree, not the one nspawn binds over
    /proc/sys/kernel/random/boot_id: a unit's own /proc (ProtectProc=) shows
    the kernel's, and podman 5 refuses to run where it sees another boot id
    than the one its state was made with ("an unhandled reboot has occurred")."""
    # in its PID namespace too: umount reads /proc/self, which is the tree's /proc
    subprocess.run(systems.nsenter_argv(leader, ["umount", "/proc/sys/kernel/random/boot_id"]),
                   capture_output=True, check=False)  # none to remove: nothing to do


def up(release: str | None = None, from_rpm: Path | None = None) -> Booted:
    """A fresh tree of the release, the project installed, booted on a
    private network."""
    release = release or other_release()
    tree = prepare(release, from_rpm)
    log = open(TREES / f"{release}.log", "w")  # noqa: SIM115 -- nspawn's output, kept while it runs
    nspawn = subprocess.Popen(nspawn_argv(tree, "--private-network"), env={**os.environ, **NSPAWN_ENV},
                              stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + BOOT_TIMEOUT
    while (leader := _leader(nspawn)) is None:
        if nspawn.poll() is not None or time.monotonic() > deadline:
            nspawn.kill()
            nspawn.wait()
            log.close()
            raise ReleaseError(f"{release} did not boot: {(TREES / f'{release}.log').read_text()[-3000:]}")
        time.sleep(0.1)
    booted = Booted(release, tree, nspawn, leader, log)
    # until its systemd answers (its bus is not there at once), then until it has booted
    while (state := booted.run("systemctl", "is-system-running", "--wait", check=False,
                               timeout=BOOT_TIMEOUT).stdout.strip()) not in ("running", "degraded"):
        if nspawn.poll() is not None or time.monotonic() > deadline:
            down(booted)
            raise ReleaseError(f"{release} did not boot ({state or 'no answer'}): "
                               f"{(TREES / f'{release}.log').read_text()[-3000:]}")
        time.sleep(0.2)
    kernels_boot_id(leader)
    return booted


def open_site(booted: Booted) -> None:
    """The tree set up as an operator does: `nbh setup`, a certificate for
    its nginx (checked with nginx -t), the front end listening."""
    booted.run("nbh", "setup")
    booted.run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
               "-days", "2", "-subj", "/CN=127.0.0.1", "-keyout", "/etc/nbhosting/tls/key.pem",
               "-out", "/etc/nbhosting/tls/cert.pem")
    booted.run("nginx", "-t")
    booted.run("systemctl", "restart", "nginx.service")
    booted.run("systemctl", "start", "nbh-web.socket")


def down(booted: Booted) -> None:
    """An orderly shutdown (nspawn passes SIGTERM on to the tree's systemd), then the tree removed."""
    if booted.nspawn.poll() is None:
        booted.nspawn.send_signal(signal.SIGTERM)
        try:
            booted.nspawn.wait(60)
        except subprocess.TimeoutExpired:
            booted.nspawn.kill()
            booted.nspawn.wait()
    booted.log.close()
    remove(booted.tree)


def _stop_left_behind(tree: Path) -> None:
    """A tree an earlier run left booted (killed before its down())."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if command[:1] == [b"systemd-nspawn"] and f"--directory={tree}".encode() in command:
            os.kill(int(proc.name), signal.SIGTERM)
            for _ in range(600):
                if not proc.exists():
                    break
                time.sleep(0.1)


def remove(tree: Path) -> None:
    if tree.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(tree)], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.releases", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("tarball", "up", "other"),
                        help="make the tarball; boot a tree; print the release that is not the host's")
    parser.add_argument("release", nargs="?", help=f"one of {', '.join(RELEASES)} (default: not the host's)")
    parser.add_argument("--from-rpm", type=Path, metavar="RPM", help="install this RPM, not the checkout")
    args = parser.parse_args(argv)
    if args.command == "other":
        print(next(release for release in RELEASES if release != host_release()))
        return 0
    release = args.release or other_release()
    if args.command == "tarball":
        print(tarball(release))
        return 0
    booted = up(release, args.from_rpm)
    print(f"{release} booted: nsenter --target {booted.leader} --all; Ctrl-C shuts it down", flush=True)
    try:
        booted.nspawn.wait()
    except KeyboardInterrupt:
        down(booted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
