"""PID 1's cost of enrolment: ``python -m bench --dormant``.

A student enrolled today is a started listening socket, which keeps its units
loaded in systemd; systemd goes over the loaded units at every server start.
This measures PID 1's CPU time per visit (the entry URL to the notebook page,
then the stop, as the cull does later) with 10 and 5,000 students enrolled
and loaded, all seen this week; and with 50,000 enrolled, 1,000 of them seen
this week and 49,000 not seen for 8 to 30 days, put to sleep by
nbh-gc.service (nbhosting/dormant.py): a visit of a student seen this week,
and a dormant student's comeback. 50,000 loaded at once are out of reach
here (each listening socket is a file of PID 1's, whose limit is the
sandbox's, 20,000 on this machine), and putting thousands to sleep at once
is slow with that many loaded: they are enrolled in batches, each put to
sleep before the next, and the first batch is measured loaded too; the
50,000 once more after `systemctl daemon-reexec`, which leaves PID 1 with
only what is loaded. Medians of each visit's own figure.

Enrolment is made cheaply: the sockets started over D-Bus, 100 at a time,
and the stamps the front end would have left written with their times.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import sys
import time

from nbhosting import dormant
from devtools import sandbox
from nbhosting.names import Instance
from nbhosting.systemd import Systemd

from .common import COURSE, RUN, in_sandbox, make_course, open_notebook
from .idle import pid1_cpu_s, pid1_memory_kib

# NBH_BENCH_ENROLLED=10,100,1000 NBH_BENCH_SEEN=50 for a quick look
ENROLLED = tuple(int(n) for n in os.environ.get("NBH_BENCH_ENROLLED", "10,5000,50000").split(","))
SEEN_THIS_WEEK = int(os.environ.get("NBH_BENCH_SEEN", "1000"))
VISITS = int(os.environ.get("NBH_BENCH_VISITS", "15"))
# Students enrolled, then put to sleep, at a time: stopping a socket costs
# PID 1 more the more sockets are loaded (0.3 s each with 18,000 loaded).
BATCH = int(os.environ.get("NBH_BENCH_BATCH", "2000"))
DAY = 86400


def stamp(instance: Instance, seen: float, inside=sandbox.path) -> None:
    """The stamp the front end would have left, dated `seen`, in the system `inside` reaches."""
    path = inside(str(dormant.stamp(instance)))
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.touch()
    os.utime(path, (seen, seen))


def units_loaded() -> dict:
    """`systemctl list-units --all`: every loaded unit, and the students'."""
    everything = sandbox.run(["systemctl", "list-units", "--all", "--no-legend", "--plain"], timeout=600).stdout
    lines = everything.splitlines()
    return {"all": len(lines), "students": sum(1 for line in lines if line.split(None, 1)[0].split("@")[0]
                                             in ("nbh-jupyter", "nbh-proxy", "nbh-upstream"))}


async def in_hundreds(act, units: list[str]) -> None:
    """act(unit) for each, 100 at a time: D-Bus calls PID 1 answers in turn."""
    for chunk in range(0, len(units), 100):
        await asyncio.gather(*(act(unit) for unit in units[chunk:chunk + 100]))


async def stop_sockets(systemd: Systemd) -> int:
    """Every student's listening socket stopped: how many there were."""
    sockets = [unit for unit, _, _ in await systemd.list_units(["nbh-jupyter@*.socket"])]
    await in_hundreds(systemd.stop, sockets)
    return len(sockets)


async def enrol(systemd: Systemd, students: list[Instance], seen: list[float]) -> float:
    """Sockets started and stamps written; seconds it took."""
    began = time.perf_counter()
    await in_hundreds(systemd.start, [i.socket for i in students])
    for instance, when in zip(students, seen):
        stamp(instance, when)
    sandbox.run(["chown", "-R", "nbh:nbh", str(dormant.SEEN_DIR)])
    return time.perf_counter() - began


async def visit(systemd: Systemd, instance: Instance, opener=open_notebook, pid1_cpu=pid1_cpu_s) -> float:
    """PID 1's CPU seconds for one visit: entry URL to notebook page (opener),
    then the stop."""
    loop = asyncio.get_running_loop()
    before = pid1_cpu()
    await loop.run_in_executor(None, opener, instance.student)
    await systemd.stop_instance(instance)
    await asyncio.sleep(0.5)  # the stop's last jobs and garbage collection
    return pid1_cpu() - before


async def visits(systemd: Systemd, students: list[Instance]) -> dict:
    samples = [await visit(systemd, students[i % len(students)]) for i in range(VISITS)]
    median = statistics.median(samples) * 1000
    print(f"bench --dormant: PID 1 CPU per visit {median:.1f} ms (median of {VISITS})", file=sys.stderr, flush=True)
    return {"pid1_cpu_ms_per_visit": median, "samples_ms": [round(s * 1000, 2) for s in samples]}


def state(count: int, seen: int) -> dict:
    figures = {"enrolled": count, "seen_this_week": seen, "units": units_loaded(), "pid1_pss_kib": pid1_memory_kib()}
    print(f"bench --dormant: {figures}", file=sys.stderr, flush=True)
    return figures


def pid1_open_files_max() -> int:
    limits = (sandbox.root() / "proc/1/limits").read_text()
    return int(next(line.split()[3] for line in limits.splitlines() if line.startswith("Max open files")))


async def quiet_pid1(limit: float = 600, pid1_cpu=pid1_cpu_s) -> float:
    """Seconds until PID 1 uses under 2% of a CPU over 2 s. After thousands of
    sockets started or stopped it goes on for minutes (unloading, collecting
    units), and visits measured meanwhile would pay for that backlog."""
    began = time.perf_counter()
    while time.perf_counter() - began < limit:
        before = pid1_cpu()
        await asyncio.sleep(2)
        if pid1_cpu() - before < 0.04:
            break
    return time.perf_counter() - began


async def gc() -> dict:
    """nbh-gc.service, as its timer starts it: how long, PID 1's CPU for it,
    and how long PID 1 was busy after it."""
    cpu, began = pid1_cpu_s(), time.perf_counter()
    sandbox.run(["systemctl", "start", "nbh-gc.service"], timeout=3600)
    figures = {"s": time.perf_counter() - began}
    figures["pid1_settled_s"] = await quiet_pid1()
    figures["pid1_cpu_s"] = pid1_cpu_s() - cpu
    print(f"bench --dormant: nbh-gc.service in {figures['s']:.0f} s, PID 1 quiet "
          f"{figures['pid1_settled_s']:.0f} s later", file=sys.stderr, flush=True)
    return figures


async def clean_slate(systemd: Systemd) -> dict:
    """No student loaded, and PID 1 quiet: in `make bench` the parts before
    leave sockets listening and units to collect, which PID 1 pays for
    during the first visits (317 ms a visit "with 10 enrolled" in one run)."""
    stopped = await stop_sockets(systemd)
    sandbox.run(["systemctl", "reset-failed"])
    return {"sockets_stopped": stopped, "settled_s": await quiet_pid1(120)}


async def measure(systemd: Systemd) -> dict:
    """10 and 5,000 enrolled, all seen this week and loaded; then the others
    up to 50,000, not seen for 8 to 30 days, enrolled in batches that PID 1
    can hold (each listening socket is a file of PID 1's, and its limit here
    is the sandbox's), each batch put to sleep by nbh-gc.service before the
    next; the largest batch is measured all loaded too."""
    now = time.time()
    rng = random.Random(RUN)
    students: list[Instance] = []
    results = {}
    fewest, middle, most = ENROLLED
    before = await clean_slate(systemd)
    batch = min(most - middle, BATCH, (pid1_open_files_max() - 2000) // 1000 * 1000 - SEEN_THIS_WEEK)

    def recent() -> float:
        return now - rng.uniform(0, 6) * DAY

    def long_ago() -> float:
        return now - rng.uniform(8, 30) * DAY

    async def enrol_more(count: int, seen) -> list[Instance]:
        new = [Instance(COURSE, f"d{RUN}-{i}") for i in range(len(students), count)]
        took = await enrol(systemd, new, [seen() for _ in new])
        settled = await quiet_pid1()
        print(f"bench --dormant: {count} enrolled in {took:.0f} s, PID 1 quiet {settled:.0f} s later",
              file=sys.stderr, flush=True)
        students.extend(new)
        return new

    for count in (fewest, middle):
        await enrol_more(count, recent)
        results[str(count)] = {**state(count, count), **await visits(systemd, students[-VISITS:])}
    # A week later: only the first SEEN_THIS_WEEK were seen since.
    for instance in students[SEEN_THIS_WEEK:]:
        stamp(instance, long_ago())
    sleeps = [await gc()]
    while len(students) < most:
        await enrol_more(min(most, len(students) + batch), long_ago)
        if f"{batch + SEEN_THIS_WEEK}_loaded" not in results:
            loaded = batch + SEEN_THIS_WEEK
            results[f"{loaded}_loaded"] = {**state(loaded, SEEN_THIS_WEEK),
                                           **await visits(systemd, students[:SEEN_THIS_WEEK][-VISITS:])}
        sleeps.append(await gc())
    results[f"{most}_dormant"] = {**state(most, SEEN_THIS_WEEK), "gc": sleeps,
                                  **await visits(systemd, students[:SEEN_THIS_WEEK][-VISITS:])}
    asleep = students[SEEN_THIS_WEEK:]
    comeback = await visits(systemd, asleep[:VISITS])
    results[f"{most}_dormant"]["dormant_comeback"] = comeback
    # What PID 1 keeps of its peak: the same state, once it has re-executed
    # itself (as a package upgrade makes it), with only what is loaded now.
    began = time.perf_counter()
    sandbox.run(["systemctl", "daemon-reexec"], timeout=600)
    reexec = {"reexec_s": time.perf_counter() - began, "pid1_settled_s": await quiet_pid1()}
    results[f"{most}_dormant_reexec"] = {**state(most, SEEN_THIS_WEEK), **reexec,
                                         **await visits(systemd, students[:SEEN_THIS_WEEK][-VISITS:])}
    # the 1,000 and the few that came back: stopped, so that what runs next starts from a clean PID 1
    loaded = students[:SEEN_THIS_WEEK] + asleep[:VISITS]
    await in_hundreds(systemd.stop, [i.socket for i in loaded])
    low = results[str(fewest)]["pid1_cpu_ms_per_visit"]
    return {
        "by_enrolled": results,
        "before": before,
        "pid1_open_files_max": pid1_open_files_max(),
        "ratio_middle_vs_fewest": results[str(middle)]["pid1_cpu_ms_per_visit"] / low,
        "ratio_first_batch_loaded_vs_fewest": results[f"{batch + SEEN_THIS_WEEK}_loaded"]["pid1_cpu_ms_per_visit"] / low,
        "ratio_most_dormant_vs_fewest": results[f"{most}_dormant"]["pid1_cpu_ms_per_visit"] / low,
        "ratio_dormant_comeback_vs_fewest": comeback["pid1_cpu_ms_per_visit"] / low,
        "ratio_most_dormant_reexec_vs_fewest": results[f"{most}_dormant_reexec"]["pid1_cpu_ms_per_visit"] / low,
    }


async def run() -> dict:
    return await in_sandbox(measure, make_course)


def table(results: dict) -> list[str]:
    rows = ["", "| enrolled: loaded (seen this week) | units loaded (students') | PID 1 PSS | PID 1 CPU per visit, p50 |",
            "| --- | --- | --- | --- |"]
    for label, r in results["by_enrolled"].items():
        rows.append(f"| {label.replace('_', ' ')} ({r['seen_this_week']}) | {r['units']['all']} "
                    f"({r['units']['students']}) | {r['pid1_pss_kib'] / 1024:.0f} MiB | "
                    f"{r['pid1_cpu_ms_per_visit']:.1f} ms |")
        if "dormant_comeback" in r:
            rows.append(f"| a dormant student's comeback | | | {r['dormant_comeback']['pid1_cpu_ms_per_visit']:.1f} ms |")
            for run in r["gc"]:
                rows.append(f"| nbh-gc.service putting students to sleep | {run['s']:.0f} s, PID 1 "
                            f"busy {run['pid1_settled_s']:.0f} s more | | {run['pid1_cpu_s']:.1f} CPU s |")
    rows.append(f"| PID 1 CPU per visit, middle / fewest enrolled | {results['ratio_middle_vs_fewest']:.2f} | | |")
    rows.append(f"| the same, the first batch loaded / fewest | {results['ratio_first_batch_loaded_vs_fewest']:.2f} | | |")
    rows.append(f"| the same, most enrolled ({SEEN_THIS_WEEK:,} seen this week, the others dormant) / fewest | "
                f"{results['ratio_most_dormant_vs_fewest']:.2f} | | <= 1.5 |")
    if "ratio_most_dormant_reexec_vs_fewest" in results:
        rows.append(f"| the same, after `systemctl daemon-reexec` / fewest | "
                    f"{results['ratio_most_dormant_reexec_vs_fewest']:.2f} | | |")
    rows.append(f"| a dormant student's comeback / a visit at the fewest | "
                f"{results['ratio_dormant_comeback_vs_fewest']:.2f} | | |")
    return rows
