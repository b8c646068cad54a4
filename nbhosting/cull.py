"""Idle servers stop by themselves: ``nbh cull``, run by nbh-cull.timer.

Each running server is asked, on the socket Jupyter listens on
(nbh-upstream@.socket, there only while the server runs; never the student's
listening socket, which would start a stopped server), for its kernels and
their latest activity, as the old system did. A server runs a student's code:
its answers are read with bounds, and a bad one costs that server alone its
verdict.
A server is idle when no kernel is busy and none has done anything for the
idle timeout (the course's, or the configuration's), or when it has had no
kernel at all for the grace period. Stopping it leaves its socket listening:
the student's next request starts it again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime

from . import config, courses, events, tokens
from .ask import AskError, get_json
from .names import Instance
from .systemd import Systemd, SystemdError

AT_ONCE = 20


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class Activity:
    instance: Instance
    kernels: int
    busy: bool
    idle: float  # seconds since the latest activity that counts

    def verdict(self, idle_timeout: int, grace: int) -> tuple[bool, str]:
        """Whether to stop it, and why, in words for the journal and --dry-run."""
        if self.busy:
            return False, "a kernel is busy"
        if self.kernels:
            return self.idle >= idle_timeout, f"{self.kernels} kernel(s), idle {self.idle:.0f} s of {idle_timeout} s"
        return self.idle >= grace, f"no kernel for {self.idle:.0f} s of {grace} s"


async def activity(instance: Instance, secret: bytes, now: float | None = None) -> Activity:
    token = tokens.instance_token(secret, instance)
    status = await get_json(instance, "api/status", token)
    # no_track_activity: asking must not count as the student's activity
    kernels = await get_json(instance, "api/kernels?no_track_activity=1", token)
    now = time.time() if now is None else now
    try:
        busy = any(kernel["execution_state"] == "busy" for kernel in kernels)
        if kernels:
            last = max(_time(kernel["last_activity"]) for kernel in kernels)
        else:  # since the start, or the latest use of the server's API
            last = _time(status["last_activity"])
        count = len(kernels)
    except (TypeError, KeyError, ValueError, AttributeError) as error:
        raise AskError(f"{instance.path} answered JSON that is not Jupyter's: {error!r:.100}") from None
    return Activity(instance, count, busy, max(0.0, now - last))


def idle_timeout(instance: Instance, settings: config.Config) -> int:
    try:
        return courses.load(instance.course).idle_timeout or settings.cull.idle_timeout
    except (courses.UnknownCourse, courses.CourseError):
        return settings.cull.idle_timeout


async def running(systemd: Systemd) -> list[Instance]:
    found = []
    for unit in await systemd.list_instances():
        if await systemd.active_state(unit) == "active":
            found.append(Instance.from_unit(unit))
    return found


@dataclass
class Decision:
    instance: Instance
    cull: bool
    reason: str
    idle: float | None = None


async def decide(instance: Instance, settings: config.Config, secret: bytes) -> Decision:
    try:
        found = await activity(instance, secret)
    except (AskError, tokens.TokenError) as error:
        return Decision(instance, False, str(error))
    cull, reason = found.verdict(idle_timeout(instance, settings), settings.cull.grace)
    return Decision(instance, cull, reason, found.idle)


async def cull(systemd: Systemd, settings: config.Config, dry_run: bool = False) -> list[Decision]:
    secret = tokens.read_secret()
    limit = asyncio.Semaphore(AT_ONCE)

    async def one(instance: Instance) -> Decision:
        async with limit:
            decision = await decide(instance, settings, secret)
            if decision.cull and not dry_run:
                try:
                    await systemd.stop_instance(instance)
                except SystemdError as error:
                    decision.cull, decision.reason = False, f"could not stop: {error}"
                    return decision
                events.send("cull", instance, f"{instance.path} culled: {decision.reason}",
                            NBH_IDLE_SECONDS=f"{decision.idle:.0f}", NBH_REASON=decision.reason)
            return decision

    return list(await asyncio.gather(*(one(instance) for instance in await running(systemd))))
