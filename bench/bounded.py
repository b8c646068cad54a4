"""A student's warm entry while the front end is pushed (issue 23):
`python -m bench --bounded`, into bench/results.json (key bounded).

Side by side in one run, in alternating blocks of 20 warm entries (entry
URL to the notebook page, bench.common.open_notebook):

- quiet: nothing else;
- a login flood: 8 clients sending wrong passwords for unknown accounts
  straight to nbh-web's socket (as from a botnet's addresses: no nginx
  limit), each argon2id (0.1 s, 64 MiB) or a 503 when 33 are pending;
- slow readers: 100 clients reading the start of a 32 MiB shared page
  through nginx, and no more.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time

from nbhosting import shares, tokens
from devtools import sandbox
from nbhosting.names import Instance
from nbhosting.systemd import Systemd

from . import common

RUN = os.getpid()
ROUNDS = int(os.environ.get("NBH_BENCH_BOUNDED_ROUNDS", "5"))
BLOCK = 20
FLOODERS = 8
READERS = 100


class Flood:
    """Wrong logins from FLOODERS threads until stopped; how many and their statuses."""

    def __init__(self):
        cookie = sandbox.front_end("GET", "/staff/login").getheader("Set-Cookie")
        self.xsrf = cookie.split("_xsrf=", 1)[1].split(";", 1)[0]
        self.stop, self.statuses = threading.Event(), []
        self.threads = [threading.Thread(target=self.run, args=(n,)) for n in range(FLOODERS)]

    def run(self, n: int) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            response = sandbox.front_end("POST", "/staff/login", f"name=flood{n}x{i}&password=x&_xsrf={self.xsrf}", {
                "Origin": sandbox.STAFF_URL, "X-Real-IP": f"10.8.{n}.{i % 250}", "Cookie": f"_xsrf={self.xsrf}",
                "Content-Type": "application/x-www-form-urlencoded"})
            self.statuses.append(response.status)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        time.sleep(1)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join()


class SlowReaders:
    def __init__(self, path: str):
        self.path, self.clients = path, []

    def __enter__(self):
        for n in range(READERS):
            client = socket.create_connection(("127.0.0.1", sandbox.HTTP_PORT), timeout=30,
                                              source_address=(f"127.4.{n // 250}.{1 + n % 250}", 0))
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.sendall(f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            client.recv(4096)
            self.clients.append(client)
        time.sleep(1)
        return self

    def __exit__(self, *exc):
        for client in self.clients:
            client.close()


def large_page(instance: Instance) -> str:
    """Written as a student's code would, in the folder their running server made."""
    secret = tokens.read_secret(sandbox.path(str(tokens.SECRET_PATH)))
    share_id = tokens.share_id(secret, instance)
    sandbox.run(["truncate", "--size", str(shares.PAGE_MAX),
                 f"/var/lib/nbhosting/shared/{instance.course}/{share_id}/{'c' * 26}.html"], user="nbh-jupyter")
    return f"/shared/{instance.course}/{share_id}/{'c' * 26}"


async def run() -> dict:
    sandbox.up()
    common.make_course()
    systemd = await Systemd.connect(f"unix:path={sandbox.path('/run/dbus/system_bus_socket')}")
    loop = asyncio.get_running_loop()
    instance = Instance(common.COURSE, f"bounded-{RUN:07d}")
    await loop.run_in_executor(None, common.open_notebook, instance.student)  # started, warm
    page = large_page(instance)
    samples: dict[str, list[float]] = {"quiet": [], "login_flood": [], "slow_readers": []}
    statuses: list[int] = []

    async def block(kind: str) -> None:
        samples[kind] += [await loop.run_in_executor(None, common.open_notebook, instance.student)
                          for _ in range(BLOCK)]

    try:
        for _ in range(ROUNDS):
            await block("quiet")
            with Flood() as flood:
                await block("login_flood")
            statuses += flood.statuses
            with SlowReaders(page):
                await block("slow_readers")
    finally:
        await systemd.stop_instance(instance)
        await systemd.close()
    figures = {kind: {k: v * 1000 if k != "n" else v for k, v in common.percentiles(s).items()}
               for kind, s in samples.items()}
    figures["logins"] = {str(status): statuses.count(status) for status in sorted(set(statuses))}
    for kind in ("login_flood", "slow_readers"):
        figures[f"{kind}_over_quiet_p50"] = figures[kind]["p50"] / figures["quiet"]["p50"]
    return figures


def table(figures: dict) -> list[str]:
    lines = ["a warm entry (to the notebook page) while the front end is pushed (p50, p95):"]
    for kind in ("quiet", "login_flood", "slow_readers"):
        lines.append(f"  {kind:13} {figures[kind]['p50']:.1f} / {figures[kind]['p95']:.1f} ms")
    lines.append(f"  login flood / quiet {figures['login_flood_over_quiet_p50']:.2f}, slow readers / quiet "
                 f"{figures['slow_readers_over_quiet_p50']:.2f}; the flood's answers {figures['logins']}")
    return lines
