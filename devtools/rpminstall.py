"""The RPM that `make rpm` builds, installed as dnf would, scriptlets and all.

``python -m devtools.rpminstall scratch DIR [RPM]`` installs it into a
scratch root, DIR/root, in a mount namespace of its own: an overlay of this
host's / whose upper layer, DIR/upper, keeps exactly what the install made.
The sandbox (``python -m devtools.sandbox up --from-rpm``) installs it with
`install` in its own namespace.

This host stands for what a Fedora host gets from the package's Requires:
systemd, podman, nginx; the group nginx, which Fedora's nginx package makes,
is added; and the Python libraries, which Debian has too old or not at all,
are copied from the project's venv (the versions the tests use) to where
Debian's python3 finds them. rpm runs with --nodeps: its database
there knows no other package.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RPM_DIR = REPO / "build" / "rpm" / "RPMS" / "noarch"
# Fedora's place; Debian's rpm would put it under $HOME, outside the root.
DBPATH = "/var/lib/rpm"
# Where Debian's python3 looks first, as the Requires' python3-* packages' place.
PYTHON_REQUIRES_DIR = sysconfig.get_path("purelib", "posix_local", vars={"base": "/usr"})


class InstallError(RuntimeError):
    pass


def built_rpm(directory: Path = RPM_DIR) -> Path:
    """The binary RPM `make rpm` left."""
    found = sorted(directory.glob("nbhosting-*.noarch.rpm"))
    if len(found) != 1:
        raise InstallError(f"{len(found)} nbhosting RPMs in {directory}: run `make rpm`")
    return found[0]


def python_requires(name: str = "nbhosting") -> list[importlib.metadata.Distribution]:
    """The distributions that `name` requires, transitively, as installed here:
    one that is not installed is one that pip found no need for (a marker
    such as python_version < "3.11"); an extra's are not required."""
    found: dict[str, importlib.metadata.Distribution] = {}
    pending = list(importlib.metadata.distribution(name).requires or ())
    while pending:
        requirement = pending.pop()
        key = re.match(r"[A-Za-z0-9._-]+", requirement).group().lower().replace("_", "-")
        if key in found or re.search(r"\bextra\s*==", requirement):
            continue
        try:
            found[key] = importlib.metadata.distribution(key)
        except importlib.metadata.PackageNotFoundError:
            continue
        pending += found[key].requires or ()
    return list(found.values())


def install_python_requires(root: Path) -> None:
    """Copy the Python libraries the package requires into the root."""
    target = root / PYTHON_REQUIRES_DIR.lstrip("/")
    for distribution in python_requires():
        for file in distribution.files or ():
            if file.parts[0] == ".." or "__pycache__" in file.parts:
                continue  # scripts of the venv's bin/; bytecode is made again
            destination = target / file
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(distribution.locate_file(file), destination)


def add_nginx_group(root: Path) -> None:
    """The group Fedora's nginx package makes, which the units give the
    students' sockets; Debian's nginx runs as www-data, made a member."""
    chroot = ["--root", str(root)] if root != Path("/") else []
    subprocess.run(["groupadd", *chroot, "--system", "nginx"], check=True)
    subprocess.run(["usermod", *chroot, "--append", "--groups", "nginx", "www-data"], check=True)


def install(rpm: Path, root: Path = Path("/"), python_requires: bool = True) -> str:
    """`rpm -i` into the root, scriptlets run there; returns what rpm said.
    Without python_requires, the root has the libraries already (a Debian
    release's own packages, devtools/releases.py)."""
    if python_requires:
        install_python_requires(root)
    # Debian's rpm refuses to install packages unless told it is meant.
    debian = ["--force-debian"] if "--force-debian" in rpm_help() else []
    # No plugin: they act on the machine (logind, syslog, audit), not on the
    # root, and rpm 4.20's unshare plugin warns that it cannot in a chroot.
    result = subprocess.run(
        ["rpm", "--root", str(root), "--dbpath", DBPATH, "--nodeps", "--noplugins", *debian, "-i", str(rpm)],
        capture_output=True, text=True,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise InstallError(f"rpm -i {rpm.name} exited {result.returncode}: {output.strip()[-2000:]}")
    return output


def rpm_help() -> str:
    return subprocess.run(["rpm", "--help"], capture_output=True, text=True).stdout


def scratch(rpm: Path, directory: Path) -> str:
    """Install into DIR/root, an overlay of this host's / (run in a private
    mount namespace: nothing is mounted on the host)."""
    upper, work, root = directory / "upper", directory / "work", directory / "root"
    for folder in (upper, work, root):
        folder.mkdir(parents=True)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir=/,upperdir={upper},workdir={work}", str(root)], check=True)
    for api in ("/proc", "/dev"):  # what the scriptlets' tools need
        subprocess.run(["mount", "--rbind", api, str(root / api.lstrip("/"))], check=True)
    add_nginx_group(root)
    return install(rpm, root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.rpminstall", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    scratch_parser = commands.add_parser("scratch", help="install into DIR/root, a new overlay of /")
    scratch_parser.add_argument("directory", type=Path, help="an empty or absent folder")
    scratch_parser.add_argument("rpm", type=Path, nargs="?", help="the binary RPM (default: make rpm's)")
    commands.add_parser("_scratch").add_argument("args", nargs=2)
    args = parser.parse_args(argv)
    try:
        if args.command == "scratch":
            rpm = (args.rpm or built_rpm()).resolve()
            # a mount namespace of its own, which ends with this command
            return subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-m",
                                   "devtools.rpminstall", "_scratch", str(rpm),
                                   str(args.directory.resolve())], cwd=REPO).returncode
        print(scratch(Path(args.args[0]), Path(args.args[1])), end="")
    except (InstallError, OSError, subprocess.CalledProcessError) as error:
        print(f"nbh-rpminstall: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
