"""What the sandbox and the release trees share: entering a booted system
from the host, and the test image that its podman runs."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from nbhosting import podman as nbh_podman

IMAGE_TAR = Path(os.environ.get("NBH_IMAGE_TAR", "/var/cache/nbhosting/jupyter-test.tar"))
IMAGE = "localhost/nbhosting/jupyter:test"


def primary_group(user: str, root_dir: Path) -> str:
    """The account's own group, by its number (nobody's is nogroup), as
    root_dir's /etc/passwd says."""
    for line in (root_dir / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user and len(fields) > 3:
            return fields[3]
    raise LookupError(f"no account {user!r} in {root_dir}")


def nsenter_argv(target: int, argv: list[str], user: str | None = None,
                 namespaces: tuple[str, ...] = ("--mount", "--pid")) -> list[str]:
    """argv in the namespaces of the process `target` (a booted system's
    PID 1), with a clean environment, as root or as `user`."""
    prefix = ["nsenter", "--target", str(target), *namespaces, "--"]
    if user:
        group = primary_group(user, Path(f"/proc/{target}/root"))
        prefix += ["setpriv", f"--reuid={user}", f"--regid={group}", "--init-groups", "--"]
    return prefix + ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", *argv]


def image_tar() -> Path:
    """The test image's file (jupyter-test.tar links to the last checkout's)."""
    if not IMAGE_TAR.exists():
        raise FileNotFoundError(f"no test image at {IMAGE_TAR}: run images/build-test-image")
    return IMAGE_TAR.resolve()


def import_image(run_inside: Callable[..., subprocess.CompletedProcess]) -> None:
    """`podman import` of the test image as the containers' account, by
    run_inside (run's arguments), in a system that sees image_tar() at its path."""
    tar = image_tar()
    args_file = tar.with_suffix(".import-args")
    changes = args_file.read_text().splitlines() if args_file.exists() else []
    argv = ["import", *[c for c in changes if c.strip()], "/run/nbh-image.tar", IMAGE]
    # The tar is bind-mounted read-only by systemd-run for the import only.
    run_inside(nbh_podman.argv(argv, f"BindReadOnlyPaths={tar}:/run/nbh-image.tar"), timeout=600)
