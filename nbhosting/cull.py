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
import json
import time
from dataclasses import dataclass
from datetime import datetime

import httpx

from . import config, courses, events, tokens
from .names import Instance
from .systemd import Systemd, SystemdError

ASK_TIMEOUT = 10
AT_ONCE = 20
# A server's answers come from a student's container: read this much at most.
ANSWER_MAX = 1 << 20


class AskError(Exception):
    pass


async def get_json(instance: Instance, url: str, token: str, method: str = "GET",
                   body: dict | None = None) -> object:
    """GET (or `method`, with a JSON body) on the server's own socket
    (nbh-upstream@), its JSON answer bounded in size and time.

    The server runs a student's code and may answer anything: a refusal, a
    never-ending or compressed body, garbage. Each of those is an AskError
    for this server alone.
    """
    headers = {"Authorization": f"token {token}", "Accept-Encoding": "identity"}
    try:
        async with client(instance) as http:
            return await asyncio.wait_for(
                _read(http, method, f"http://localhost{instance.base_url}{url}", headers, body), ASK_TIMEOUT)
    except (httpx.HTTPError, OSError, TimeoutError) as error:
        raise AskError(f"cannot ask {instance.path}: {error or type(error).__name__}") from None


def client(instance: Instance) -> httpx.AsyncClient:
    # Plain HTTP on a unix socket: verify=False only spares loading a CA
    # bundle for every server asked (40 ms each), there is no TLS to verify.
    transport = httpx.AsyncHTTPTransport(uds=instance.upstream_socket, verify=False)
    return httpx.AsyncClient(transport=transport, timeout=ASK_TIMEOUT)


async def _read(client: httpx.AsyncClient, method: str, url: str, headers: dict, body: dict | None) -> object:
    async with client.stream(method, url, headers=headers, json=body) as response:
        if response.status_code != 200:
            raise AskError(f"answered {response.status_code} to {url}")
        if response.headers.get("Content-Encoding", "identity") != "identity":
            raise AskError(f"answered with Content-Encoding {response.headers['Content-Encoding'][:40]!r}")
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > ANSWER_MAX:
                raise AskError(f"answered more than {ANSWER_MAX} bytes to {url}")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise AskError(f"answered no JSON to {url}") from None


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
