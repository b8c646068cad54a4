"""How many servers the host runs, and how fast new students come in.

Two limits of the front end, checked only before it starts a server that is
not running (the warm path pays for neither): ``limits.max_running``, a cap
on the student servers running or starting on the host, and
``limits.new_workspaces_per_minute``, a token bucket on students who have no
workspace yet, so that a flood of made-up names cannot fill the disk with
workspaces and the host with units; and no new workspace at all once the
workspaces' disk is ``limits.disk_full`` used. A student past either gets a page saying
to come back in a few minutes, never a half-started server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable

from . import config, paths, workspace
from .names import Instance
from .systemd import Systemd


class HostFull(Exception):
    """A start refused for capacity; `reason` names the limit, for the journal."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def disk_used(path) -> float:
    """The share of path's file system in use, as df counts it (blocks
    reserved for root count as used: the students cannot have them)."""
    stat = os.statvfs(path)
    return 1 - stat.f_bavail / stat.f_blocks if stat.f_blocks else 1.0


class TokenBucket:
    """`per_minute` takes a minute, in bursts of as many."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.capacity = float(per_minute)
        self.tokens = self.capacity
        self.per_second = per_minute / 60
        self.clock = clock
        self.last = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.per_second)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Admission:
    """One per front end: admits starts one at a time, so that starts under
    way, which systemd may not list as activating yet, count too."""

    def __init__(self, limits: config.Limits):
        self.limits = limits
        self.new_workspaces = TokenBucket(limits.new_workspaces_per_minute)
        self._lock = asyncio.Lock()
        self._starting: set[str] = set()

    @contextlib.asynccontextmanager
    async def admit(self, systemd: Systemd, instance: Instance) -> AsyncIterator[None]:
        """Hold this while starting the server; HostFull when the host cannot take it."""
        async with self._lock:
            others = (await systemd.running_instances() | self._starting) - {instance.service}
            if len(others) >= self.limits.max_running:
                raise HostFull("max_running", f"{len(others)} servers run, the cap "
                                              f"(limits.max_running) is {self.limits.max_running}")
            if not os.path.lexists(workspace.workspace_dir(instance)):
                used = disk_used(paths.WORKSPACES_DIR)
                if used >= self.limits.disk_full:
                    raise HostFull("disk", f"the workspaces' disk is {used:.1%} full, past which "
                                           f"(limits.disk_full, {self.limits.disk_full:.0%}) no workspace is made")
                if not self.new_workspaces.take():
                    raise HostFull("new_workspaces_per_minute",
                                   f"more new workspaces than limits.new_workspaces_per_minute "
                                   f"({self.limits.new_workspaces_per_minute})")
            self._starting.add(instance.service)
        try:
            yield
        finally:
            self._starting.discard(instance.service)
