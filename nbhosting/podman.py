"""podman commands as the containers' account, with the units' environment.

The same user, storage and runtime directory as nbh-jupyter@.service, so
the operator (or `nbh gc`) sees exactly the containers the units made.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

ENVIRONMENT_FILE = "/usr/lib/nbhosting/podman.env"


def argv(args: list[str], *properties: str) -> list[str]:
    props = [f"--property={p}" for p in ("User=nbh-jupyter", "Group=nbh-jupyter",
             f"EnvironmentFile={ENVIRONMENT_FILE}", *properties)]
    return ["systemd-run", "--quiet", "--wait", "--pipe", "--collect", *props, "/usr/bin/podman", *args]


def run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(argv(args), capture_output=True, text=True, timeout=timeout, check=False)


def remove(container: str, run: Callable[[list[str]], subprocess.CompletedProcess] = run) -> subprocess.CompletedProcess:
    """`podman rm --force`, again if it fails: when the container's conmon
    was killed, podman 5 fails the first ("conmon exited prematurely"),
    having only marked the container stopped, and the second removes it."""
    args = ["rm", "--force", "--ignore", "--time", "0", container]
    done = run(args)
    return run(args) if done.returncode != 0 else done
