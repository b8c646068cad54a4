"""Idle servers stop by themselves: ``nbh cull``, run by nbh-cull.timer.

Each running server is asked, on the socket Jupyter listens on inside its
runtime directory (never the listening socket, which would start a stopped
server), for its kernels and their latest activity, as the old system did.
A server is idle when no kernel is busy and none has done anything for the
idle timeout (the course's, or the configuration's), or when it has had no
kernel at all for the grace period. Stopping it leaves its socket listening:
the student's next request starts it again.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import datetime

from . import config, courses, events, tokens
from .names import Instance
from .systemd import Systemd, SystemdError

ASK_TIMEOUT = 10
AT_ONCE = 20


class AskError(Exception):
    pass


async def get_json(instance: Instance, url: str, token: str) -> object:
    """GET on the server's own socket; HTTP/1.0, so the answer ends with the connection."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(instance.jupyter_socket), ASK_TIMEOUT)
    except (OSError, TimeoutError) as error:
        raise AskError(f"cannot reach {instance.path}: {error}") from None
    try:
        writer.write(f"GET {instance.base_url}{url} HTTP/1.0\r\nHost: localhost\r\n"
                     f"Authorization: token {token}\r\n\r\n".encode())
        answer = await asyncio.wait_for(reader.read(), ASK_TIMEOUT)
    except (OSError, TimeoutError) as error:
        raise AskError(f"no answer from {instance.path}: {error}") from None
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1:2]
    if status != [b"200"]:
        raise AskError(f"{instance.path} answered {head[:60]!r} to {url}")
    return json.loads(body)


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
    token = tokens.server_token(secret, instance.path)
    status = await get_json(instance, "api/status", token)
    # no_track_activity: asking must not count as the student's activity
    kernels = await get_json(instance, "api/kernels?no_track_activity=1", token)
    now = time.time() if now is None else now
    busy = any(kernel["execution_state"] == "busy" for kernel in kernels)
    if kernels:
        last = max(_time(kernel["last_activity"]) for kernel in kernels)
    else:  # since the start, or the latest use of the server's API
        last = _time(status["last_activity"])
    return Activity(instance, len(kernels), busy, max(0.0, now - last))


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
    except AskError as error:
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
