"""Benchmarks of idle students: ``make bench`` runs them after bench/__main__.py.

- revival: the first request after a cull, until 200; and the same with a
  tab connected at the cull, whose kernel starts again before Jupyter says
  it is ready;
- `nbh cull` with 100 running servers;
- PID 1's memory and StartUnit latency with 10, 1,000 and 5,000 students
  enrolled (a listening socket each, no server running): of a new student's
  socket (an enrolment, which loads a unit) and of that student's server (a
  visit); and PID 1's CPU time per visit.
"""

from __future__ import annotations

import asyncio
import json
import time

from tornado.websocket import websocket_connect

from devtools import sandbox
from nbhosting.names import Instance
from nbhosting.systemd import Systemd

from .common import COURSE, COLD_RUNS, RUN, get_status, percentiles

ENROLLED = (10, 1000, 5000)


def pid1_memory_kib() -> int:
    """PSS of the sandbox's PID 1: what systemd holds for every unit."""
    rollup = (sandbox.root() / "proc/1/smaps_rollup").read_text()
    return int(next(line.split()[1] for line in rollup.splitlines() if line.startswith("Pss:")))


async def revival(systemd: Systemd) -> list[float]:
    instance = Instance(COURSE, f"revived-{RUN}")
    token, samples = sandbox.server_token(instance), []
    await systemd.start_instance(instance)
    for _ in range(COLD_RUNS):
        await systemd.stop_instance(instance)  # what nbh cull does
        await asyncio.sleep(1)
        start = time.perf_counter()
        connection = sandbox.UnixHTTPConnection(str(sandbox.path(instance.listen_socket)))
        get_status(connection, instance.base_url + "api/status", token)
        samples.append(time.perf_counter() - start)
        connection.close()
    await systemd.stop_instance(instance)
    return samples


async def revival_with_tab(systemd: Systemd) -> list[float]:
    """The same with a websocket on a session's kernel at the cull, as an open
    tab has: the server restores that kernel before it says it is ready."""
    instance = Instance(COURSE, f"revived-tab-{RUN}")
    token, samples = sandbox.server_token(instance), []
    await systemd.start_instance(instance)
    status, body = sandbox.request(instance, "POST", "api/sessions", {
        "path": "tab.ipynb", "type": "notebook", "name": "", "kernel": {"name": "python3"}})
    if status != 201:
        raise RuntimeError(f"api/sessions: {status} {body[:200]!r}")
    kernel = json.loads(body)["kernel"]["id"]
    tab_url = (f"ws://127.0.0.1:{sandbox.HTTP_PORT}{instance.base_url}api/kernels/{kernel}/channels"
               f"?token={token}")
    for _ in range(COLD_RUNS):
        tab = await websocket_connect(tab_url)
        await tab.read_message()  # connected: the kernel talks
        await systemd.stop_instance(instance)  # what nbh cull does
        tab.close()
        await asyncio.sleep(1)
        start = time.perf_counter()
        connection = sandbox.UnixHTTPConnection(str(sandbox.path(instance.listen_socket)))
        get_status(connection, instance.base_url + f"api/kernels/{kernel}", token)
        samples.append(time.perf_counter() - start)
        connection.close()
    await systemd.stop_instance(instance)
    return samples


async def cull_hundred(systemd: Systemd) -> dict:
    instances = [Instance(COURSE, f"many-{RUN}-{i}") for i in range(100)]
    for chunk in range(0, 100, 20):
        await asyncio.gather(*(systemd.start_instance(i) for i in instances[chunk:chunk + 20]))
    timings = []
    for _ in range(3):  # nothing idle yet: the cost of looking at 100 servers
        start = time.perf_counter()
        sandbox.run(["nbh", "cull", "--dry-run"], timeout=300)
        timings.append(time.perf_counter() - start)
    await asyncio.gather(*(systemd.stop_instance(i) for i in instances))
    return {"servers": 100, "dry_run_s": percentiles(timings)}


def pid1_cpu_s() -> float:
    """CPU time of the sandbox's PID 1, to the nanosecond (schedstat)."""
    return int((sandbox.root() / "proc/1/schedstat").read_text().split()[0]) / 1e9


async def enrolments(systemd: Systemd, count: int, runs: int = 30) -> tuple[list[float], list[Instance]]:
    """StartUnit of new students' sockets (an enrolment): each loads a unit."""
    samples, students = [], [Instance(COURSE, f"new-{RUN}-{count}-{i}") for i in range(runs)]
    for instance in students:
        start = time.perf_counter()
        await systemd.start(instance.socket)
        samples.append(time.perf_counter() - start)
    return samples, students


async def visits(systemd: Systemd, students: list[Instance]) -> tuple[list[float], float]:
    """StartUnit of enrolled students' servers (a visit), until Jupyter is
    ready; and PID 1's CPU time per visit, its stop included."""
    samples, cpu = [], pid1_cpu_s()
    for instance in students:
        start = time.perf_counter()
        await systemd.start(instance.proxy)
        samples.append(time.perf_counter() - start)
        await systemd.stop_instance(instance)
    await asyncio.sleep(1)  # the stops' last jobs and garbage collection
    return samples, (pid1_cpu_s() - cpu) / len(students)


def ms(samples: list[float]) -> dict:
    return {k: v * 1000 if k != "n" else v for k, v in percentiles(samples).items()}


async def enrolled(systemd: Systemd) -> dict:
    results, students = {}, []
    for count in ENROLLED:
        new = [Instance(COURSE, f"enrolled-{RUN}-{i}") for i in range(len(students), count)]
        for chunk in range(0, len(new), 100):
            await asyncio.gather(*(systemd.start(i.socket) for i in new[chunk:chunk + 100]))
        students += new
        await asyncio.sleep(1)
        pss = pid1_memory_kib()
        enrolment, newcomers = await enrolments(systemd, count)
        visit, pid1_cpu = await visits(systemd, newcomers[:10])
        students += newcomers
        results[count] = {"pid1_pss_kib": pss, "socket_start_ms": ms(enrolment),
                          "server_start_ms": ms(visit), "pid1_cpu_ms_per_visit": pid1_cpu * 1000}
    processes = int(sandbox.run(["sh", "-c", "ps -e --no-headers | wc -l"]).stdout)
    # as they were started, 100 at a time: systemctl with a glob over 5000
    # units may overrun the bus's queue (ENOBUFS)
    for chunk in range(0, len(students), 100):
        await asyncio.gather(*(systemd.stop(i.socket) for i in students[chunk:chunk + 100]))
    low, high = results[ENROLLED[0]], results[ENROLLED[-1]]
    return {
        "by_enrolled": results,
        "pid1_kib_per_enrolled": (high["pid1_pss_kib"] - low["pid1_pss_kib"]) / (ENROLLED[-1] - ENROLLED[0]),
        "server_start_ratio": high["server_start_ms"]["p50"] / low["server_start_ms"]["p50"],
        "socket_start_ratio": high["socket_start_ms"]["p50"] / low["socket_start_ms"]["p50"],
        "pid1_cpu_per_visit_ratio": high["pid1_cpu_ms_per_visit"] / low["pid1_cpu_ms_per_visit"],
        "processes_in_sandbox_with_5000_enrolled": processes,
    }


async def run(systemd: Systemd) -> dict:
    return {
        "revival_s": percentiles(await revival(systemd)),
        "revival_with_tab_s": percentiles(await revival_with_tab(systemd)),
        "cull": await cull_hundred(systemd),
        "enrolled": await enrolled(systemd),
    }


def table(results: dict) -> list[str]:
    revival, cull, enrolled = results["revival_s"], results["cull"], results["enrolled"]
    tab = results["revival_with_tab_s"]
    rows = [f"| revival, first request after a cull | {revival['p50']:.2f} s ({revival['p95']:.2f} s) | |",
            f"| the same, a tab connected at the cull (its kernel back) | {tab['p50']:.2f} s ({tab['p95']:.2f} s) | |",
            f"| `nbh cull` looking at 100 servers | {cull['dry_run_s']['p50']:.2f} s | |"]
    for count, figures in enrolled["by_enrolled"].items():
        sock, server = figures["socket_start_ms"], figures["server_start_ms"]
        rows.append(f"| {count} enrolled: PID 1 PSS; StartUnit of a server; of a new socket; PID 1 CPU per visit | "
                    f"{figures['pid1_pss_kib'] / 1024:.1f} MiB; {server['p50']:.0f} ms ({server['p95']:.0f} ms); "
                    f"{sock['p50']:.1f} ms ({sock['p95']:.1f} ms); {figures['pid1_cpu_ms_per_visit']:.0f} ms | |")
    rows.append(f"| PID 1 memory per enrolled student | {enrolled['pid1_kib_per_enrolled']:.1f} KiB | < 50 KiB |")
    rows.append(f"| StartUnit of a server at {ENROLLED[-1]} / at {ENROLLED[0]} enrolled | "
                f"{enrolled['server_start_ratio']:.2f} | <= 2 |")
    rows.append(f"| StartUnit of a new socket at {ENROLLED[-1]} / at {ENROLLED[0]} enrolled | "
                f"{enrolled['socket_start_ratio']:.2f} | <= 2 |")
    rows.append(f"| PID 1 CPU per visit at {ENROLLED[-1]} / at {ENROLLED[0]} enrolled | "
                f"{enrolled['pid1_cpu_per_visit_ratio']:.2f} | |")
    rows.append(f"| processes in the sandbox, {ENROLLED[-1]} enrolled | "
                f"{enrolled['processes_in_sandbox_with_5000_enrolled']} | no process per student |")
    return rows
