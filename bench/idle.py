"""Benchmarks of idle students: ``make bench`` runs them after bench/__main__.py.

- revival: the first request after a cull, until 200;
- `nbh cull` with 100 running servers;
- PID 1's memory and StartUnit latency with 10, 1,000 and 5,000 students
  enrolled (a listening socket each, no server running).
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import time

from nbhosting import sandbox
from nbhosting.names import Instance
from nbhosting.systemd import Systemd

from .__main__ import COURSE, COLD_RUNS, RUN, UnixConnection, get_status, percentiles, token_of

ENROLLED = (10, 1000, 5000)


def pid1_memory_kib() -> int:
    """PSS of the sandbox's PID 1: what systemd holds for every unit."""
    rollup = (sandbox.root() / "proc/1/smaps_rollup").read_text()
    return int(next(line.split()[1] for line in rollup.splitlines() if line.startswith("Pss:")))


async def revival(systemd: Systemd) -> list[float]:
    instance = Instance(COURSE, f"revived-{RUN}")
    token, samples = token_of(instance), []
    await systemd.start_instance(instance)
    for _ in range(COLD_RUNS):
        await systemd.stop_instance(instance)  # what nbh cull does
        await asyncio.sleep(1)
        start = time.perf_counter()
        connection = UnixConnection(str(sandbox.path(instance.listen_socket)))
        get_status(connection, instance.base_url + "api/status", token)
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


async def start_latency(systemd: Systemd, probe: Instance, runs: int = 30) -> list[float]:
    """StartUnit of a listening socket (a job that is done at once), as the front end makes it."""
    samples = []
    for _ in range(runs):
        await systemd.stop(probe.socket)
        start = time.perf_counter()
        await systemd.start(probe.socket)
        samples.append(time.perf_counter() - start)
    return samples


async def enrolled(systemd: Systemd) -> dict:
    results, started = {}, 0
    probe = Instance(COURSE, f"probe-{RUN}")
    baseline = pid1_memory_kib()
    for count in ENROLLED:
        students = [Instance(COURSE, f"enrolled-{RUN}-{i}") for i in range(started, count)]
        for chunk in range(0, len(students), 200):
            await asyncio.gather(*(systemd.start(i.socket) for i in students[chunk:chunk + 200]))
        started = count
        await asyncio.sleep(1)
        latency = await start_latency(systemd, probe)
        results[count] = {"pid1_pss_kib": pid1_memory_kib(), "start_unit_ms": {
            k: v * 1000 if k != "n" else v for k, v in percentiles(latency).items()}}
    processes = int(sandbox.run(["sh", "-c", "ps -e --no-headers | wc -l"]).stdout)
    sandbox.run(["sh", "-c", "systemctl stop 'nbh-jupyter@*.socket'"], timeout=600)
    low, high = results[ENROLLED[0]], results[ENROLLED[-1]]
    return {
        "by_enrolled": results,
        "pid1_kib_per_enrolled": (high["pid1_pss_kib"] - low["pid1_pss_kib"]) / (ENROLLED[-1] - ENROLLED[0]),
        "start_unit_ratio": high["start_unit_ms"]["p50"] / low["start_unit_ms"]["p50"],
        "processes_in_sandbox_with_5000_enrolled": processes,
        "pid1_pss_before_kib": baseline,
    }


async def run(systemd: Systemd) -> dict:
    return {
        "revival_s": percentiles(await revival(systemd)),
        "cull": await cull_hundred(systemd),
        "enrolled": await enrolled(systemd),
    }


def table(results: dict) -> list[str]:
    revival, cull, enrolled = results["revival_s"], results["cull"], results["enrolled"]
    rows = [f"| revival, first request after a cull | {revival['p50']:.2f} s ({revival['p95']:.2f} s) | |",
            f"| `nbh cull` looking at 100 servers | {cull['dry_run_s']['p50']:.2f} s | |"]
    for count, figures in enrolled["by_enrolled"].items():
        latency = figures["start_unit_ms"]
        rows.append(f"| {count} enrolled: PID 1 PSS, StartUnit | {figures['pid1_pss_kib'] / 1024:.1f} MiB, "
                    f"{latency['p50']:.2f} ms ({latency['p95']:.2f} ms) | |")
    rows.append(f"| PID 1 memory per enrolled student | {enrolled['pid1_kib_per_enrolled']:.1f} KiB | < 50 KiB |")
    rows.append(f"| StartUnit at {ENROLLED[-1]} / at {ENROLLED[0]} | {enrolled['start_unit_ratio']:.2f} | <= 2 |")
    rows.append(f"| processes in the sandbox, {ENROLLED[-1]} enrolled | "
                f"{enrolled['processes_in_sandbox_with_5000_enrolled']} | no process per student |")
    return rows
