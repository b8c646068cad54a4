"""PID 1's cost of enrolment: ``python -m bench --dormant``.

A student enrolled today is a started listening socket, which keeps its units
loaded in systemd; systemd goes over the loaded units at every server start.
This measures PID 1's CPU time per visit (the entry URL to the notebook page,
then the stop, as the cull does later) with 10, 5,000 and 50,000 students
enrolled; the 50,000 with 1,000 seen this week and 49,000 not seen for 8 to
30 days: first all loaded, as before dormancy, then after nbh-gc.service has
put the 49,000 to sleep (nbhosting/dormant.py), for a student seen this week
and for a dormant one coming back. Medians of each visit's own figure.

Enrolment is made cheaply: the sockets started over D-Bus, 100 at a time,
and the stamps the front end would have left written with their times.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time

from nbhosting import dormant, sandbox
from nbhosting.names import Instance
from nbhosting.systemd import Systemd

from .__main__ import COURSE, RUN, make_course, open_notebook
from .idle import pid1_cpu_s, pid1_memory_kib

# NBH_BENCH_ENROLLED=10,100,1000 NBH_BENCH_SEEN=50 for a quick look
ENROLLED = tuple(int(n) for n in os.environ.get("NBH_BENCH_ENROLLED", "10,5000,50000").split(","))
SEEN_THIS_WEEK = int(os.environ.get("NBH_BENCH_SEEN", "1000"))
VISITS = int(os.environ.get("NBH_BENCH_VISITS", "15"))
DAY = 86400


def stamp(instance: Instance, seen: float) -> None:
    path = sandbox.path(str(dormant.stamp(instance)))
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.touch()
    os.utime(path, (seen, seen))


def units_loaded() -> dict:
    """`systemctl list-units --all`: every loaded unit, and the students'."""
    everything = sandbox.run(["systemctl", "list-units", "--all", "--no-legend", "--plain"], timeout=600).stdout
    lines = everything.splitlines()
    return {"all": len(lines), "students": sum(1 for line in lines if line.split(None, 1)[0].split("@")[0]
                                             in ("nbh-jupyter", "nbh-proxy", "nbh-upstream"))}


async def enrol(systemd: Systemd, students: list[Instance], seen: list[float]) -> float:
    """Sockets started and stamps written; seconds it took."""
    began = time.perf_counter()
    for chunk in range(0, len(students), 100):
        await asyncio.gather(*(systemd.start(i.socket) for i in students[chunk:chunk + 100]))
    for instance, when in zip(students, seen):
        stamp(instance, when)
    sandbox.run(["chown", "-R", "nbh:nbh", str(dormant.SEEN_DIR)])
    return time.perf_counter() - began


async def visit(systemd: Systemd, instance: Instance) -> float:
    """PID 1's CPU seconds for one visit: entry URL to notebook page, then the stop."""
    loop = asyncio.get_running_loop()
    before = pid1_cpu_s()
    await loop.run_in_executor(None, open_notebook, instance.student)
    await systemd.stop_instance(instance)
    await asyncio.sleep(0.5)  # the stop's last jobs and garbage collection
    return pid1_cpu_s() - before


async def visits(systemd: Systemd, students: list[Instance]) -> dict:
    samples = [await visit(systemd, students[i % len(students)]) for i in range(VISITS)]
    return {"pid1_cpu_ms_per_visit": statistics.median(samples) * 1000,
            "samples_ms": [round(s * 1000, 2) for s in samples]}


def state(count: int, seen: int) -> dict:
    return {"enrolled": count, "seen_this_week": seen, "units": units_loaded(), "pid1_pss_kib": pid1_memory_kib()}


async def measure(systemd: Systemd) -> dict:
    now = time.time()
    rng = random.Random(RUN)
    students: list[Instance] = []
    results = {}
    for count in ENROLLED:
        new = [Instance(COURSE, f"d{RUN}-{i}") for i in range(len(students), count)]
        if count == ENROLLED[-1]:  # the first SEEN_THIS_WEEK of all were seen this week, the others not
            seen = [now - rng.uniform(0, 6) * DAY if len(students) + i < SEEN_THIS_WEEK
                    else now - rng.uniform(8, 30) * DAY for i in range(len(new))]
            for instance in students[SEEN_THIS_WEEK:]:  # enrolled before, not seen since
                stamp(instance, now - rng.uniform(8, 30) * DAY)
        else:
            seen = [now - rng.uniform(0, 6) * DAY for _ in new]
        took = await enrol(systemd, new, seen)
        students += new
        await asyncio.sleep(2)
        this_week = students[:min(count, SEEN_THIS_WEEK)]
        label = str(count) if count != ENROLLED[-1] else f"{count}_all_loaded"
        results[label] = {**state(count, len(this_week) if count == ENROLLED[-1] else count), "enrol_s": took,
                          **await visits(systemd, this_week[-VISITS:])}
    # dormancy, as the timer runs it
    cpu, began = pid1_cpu_s(), time.perf_counter()
    sandbox.run(["systemctl", "start", "nbh-gc.service"], timeout=3600)
    gc_s, gc_cpu = time.perf_counter() - began, pid1_cpu_s() - cpu
    await asyncio.sleep(2)
    count = ENROLLED[-1]
    asleep = students[SEEN_THIS_WEEK:]
    results[f"{count}_dormant"] = {**state(count, SEEN_THIS_WEEK), "gc_s": gc_s, "gc_pid1_cpu_s": gc_cpu,
                                   **await visits(systemd, students[:SEEN_THIS_WEEK][-VISITS:])}
    comeback = await visits(systemd, asleep[:VISITS])
    results[f"{count}_dormant"]["dormant_comeback"] = comeback
    # the 1,000 and the few that came back: stopped, then the next test starts from a clean PID 1
    loaded = students[:SEEN_THIS_WEEK] + asleep[:VISITS]
    for chunk in range(0, len(loaded), 100):
        await asyncio.gather(*(systemd.stop(i.socket) for i in loaded[chunk:chunk + 100]))
    low = results[str(ENROLLED[0])]["pid1_cpu_ms_per_visit"]
    return {
        "by_enrolled": results,
        "ratio_middle_vs_fewest": results[str(ENROLLED[1])]["pid1_cpu_ms_per_visit"] / low,
        "ratio_most_all_loaded_vs_fewest": results[f"{count}_all_loaded"]["pid1_cpu_ms_per_visit"] / low,
        "ratio_most_dormant_vs_fewest": results[f"{count}_dormant"]["pid1_cpu_ms_per_visit"] / low,
        "ratio_dormant_comeback_vs_fewest": comeback["pid1_cpu_ms_per_visit"] / low,
    }


async def run() -> dict:
    sandbox.up()
    make_course()
    systemd = await Systemd.connect(f"unix:path={sandbox.path('/run/dbus/system_bus_socket')}")
    try:
        return await measure(systemd)
    finally:
        await systemd.close()


def table(results: dict) -> list[str]:
    rows = ["", "| enrolled (seen this week) | units loaded (students') | PID 1 PSS | PID 1 CPU per visit, p50 |",
            "| --- | --- | --- | --- |"]
    for label, r in results["by_enrolled"].items():
        rows.append(f"| {label.replace('_', ' ')} ({r['seen_this_week']}) | {r['units']['all']} "
                    f"({r['units']['students']}) | {r['pid1_pss_kib'] / 1024:.0f} MiB | "
                    f"{r['pid1_cpu_ms_per_visit']:.1f} ms |")
        if "dormant_comeback" in r:
            rows.append(f"| a dormant student's comeback | | | {r['dormant_comeback']['pid1_cpu_ms_per_visit']:.1f} ms |")
            rows.append(f"| nbh-gc.service putting them to sleep | {r['gc_s']:.0f} s | | "
                        f"{r['gc_pid1_cpu_s']:.1f} CPU s |")
    fewest, middle, most = (f"{n:,}" for n in ENROLLED)
    rows.append(f"| PID 1 CPU per visit, {middle} / {fewest} enrolled | {results['ratio_middle_vs_fewest']:.2f} | | |")
    rows.append(f"| the same, {most} all loaded / {fewest} | {results['ratio_most_all_loaded_vs_fewest']:.2f} | | |")
    rows.append(f"| the same, {most} ({SEEN_THIS_WEEK:,} seen this week, the others dormant) / {fewest} | "
                f"{results['ratio_most_dormant_vs_fewest']:.2f} | | <= 1.5 |")
    rows.append(f"| a dormant student's comeback / a visit at {fewest} | "
                f"{results['ratio_dormant_comeback_vs_fewest']:.2f} | | |")
    return rows
