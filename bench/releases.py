"""PID 1 and a student's server on each Debian release, side by side in one
run: ``python -m bench --releases``.

The host's release runs in the sandbox (devtools/sandbox.py), the other is
booted with systemd-nspawn (devtools/releases.py), the project installed
in it as its package installs it: systemd 252 and podman 4.3 beside systemd
257 and podman 5.4. Both are up at once, each with the same course, and
every figure is sampled on one, then on the other, in turn, so that the
machine's noise falls on both alike:

- cold start: a stopped server's socket to /api/status answering; its wall
  time, the CPU of the whole system (its cgroup) and of its PID 1;
- 20 servers started at once: until all are ready, and the same CPU;
- PID 1's CPU per visit (the entry URL through nginx to the notebook's page,
  with a client run inside the system, then the stop, as the cull does
  later), with 10 students enrolled, and with 50,000 enrolled of whom 1,000
  were seen this week. The latter is the state nbh-gc.service leaves
  (bench/dormant.py measures how it gets there, on the host's release),
  made directly: the 1,000's sockets listening, and a stamp for each of the
  50,000, the 49,000 others dated 8 to 30 days ago and loaded nowhere. And
  a dormant student's comeback, whose entry loads their units again.

Medians; written to bench/results.json under "releases", by release name.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nbhosting import access, dormant, paths, tokens
from devtools import releases, sandbox, systems
from nbhosting.names import Instance
from nbhosting.systemd import Systemd

from . import dormant as dormant_bench
from .common import COURSE, ENTRY_NOTEBOOK, RUN, make_course, percentiles

COLD_RUNS = int(os.environ.get("NBH_BENCH_COLD", "7"))
VISITS = int(os.environ.get("NBH_BENCH_VISITS", "15"))
CROWD = 20
# NBH_BENCH_ENROLLED=10,5000 NBH_BENCH_SEEN=500 for a quick look
FEWEST, MOST = (int(n) for n in os.environ.get("NBH_BENCH_ENROLLED", "10,50000").split(","))
SEEN_THIS_WEEK = int(os.environ.get("NBH_BENCH_SEEN", "1000"))
VISIT = Path(__file__).resolve().parent.parent / "tests" / "release_visit.py"
DAY = 86400


@dataclass
class System:
    """One booted system, reached from the host as the tests reach it."""

    release: str
    run: Callable[..., subprocess.CompletedProcess]  # (*argv, user=, check=, timeout=)
    path: Callable[[str], Path]
    cgroup: Path  # on the host: the whole system's cgroup
    site: str  # its nginx, as a client inside it reaches it
    referer: str  # an LMS origin of its configuration

    @property
    def bus(self) -> str:
        return f"unix:path={self.path('/run/dbus/system_bus_socket')}"

    def pid1_cpu_s(self) -> float:
        return int(self.path("/proc/1/schedstat").read_text().split()[0]) / 1e9

    def cpu_s(self) -> float:
        stat = (self.cgroup / "cpu.stat").read_text()
        return int(next(line.split()[1] for line in stat.splitlines() if line.startswith("usage_usec"))) / 1e6

    def token(self, instance: Instance) -> str:
        secret = tokens.read_secret(self.path(str(tokens.SECRET_PATH)))
        return tokens.server_token(secret, instance.path, tokens.generation(instance, self.path(str(paths.TOKENS_DIR))))

    def open_notebook(self, student: str) -> float:
        """The entry URL to the notebook's page (200), from a client inside the system."""
        key = access.read_key(self.path(str(access.LMS_KEY_PATH)))
        entry = (f"/ipythonExercice/{COURSE}/{ENTRY_NOTEBOOK}/{student}?"
                 f"{access.signed_query(key, COURSE, ENTRY_NOTEBOOK, student, ttl=3600)}")
        done = self.run("env", f"NBH_SITE={self.site}", "python3", "/run/nbh-bench-visit.py", entry, self.referer,
                        "--page", timeout=180)
        return json.loads(done.stdout)["s"]


def in_sandbox() -> System:
    def run(*argv: str, **kwargs) -> subprocess.CompletedProcess:
        return sandbox.run(list(argv), **kwargs)

    return System(releases.under_test(), run, sandbox.path, sandbox.cgroup(), sandbox.SITE_URL,
                  sandbox.LMS_ORIGINS[0] + "/")


def in_tree(booted: releases.Booted) -> System:
    # the tree's PID 1 moves itself into init.scope, under the tree's own cgroup
    relative = next(line.split("::", 1)[1] for line in Path(f"/proc/{booted.leader}/cgroup").read_text().splitlines()
                    if line.startswith("0::"))
    cgroup = sandbox.cgroup_root() / relative.strip().lstrip("/")
    if cgroup.name == "init.scope":
        cgroup = cgroup.parent
    return System(booted.release, booted.run, booted.path, cgroup, "https://127.0.0.1",
                  "https://lms.example.org/courses/x")


async def cold_start(system: System, systemd: Systemd, instance: Instance) -> dict:
    token = system.token(instance)
    await systemd.stop_instance(instance)
    await asyncio.sleep(1)  # the stop's own work out of the figure
    cpu, pid1, began = system.cpu_s(), system.pid1_cpu_s(), time.perf_counter()
    connection = sandbox.UnixHTTPConnection(str(system.path(instance.listen_socket)), 60)
    connection.request("GET", instance.base_url + "api/status", headers={"Authorization": f"token {token}"})
    response = connection.getresponse()
    response.read()
    connection.close()
    if response.status != 200:
        raise RuntimeError(f"{system.release}: /api/status {response.status}")
    return {"s": time.perf_counter() - began, "cpu_s": system.cpu_s() - cpu, "pid1_cpu_s": system.pid1_cpu_s() - pid1}


async def crowd(system: System, systemd: Systemd, round_: int) -> dict:
    instances = [Instance(COURSE, f"crowd-{RUN}-{round_}-{i}") for i in range(CROWD)]
    cpu, pid1, began = system.cpu_s(), system.pid1_cpu_s(), time.perf_counter()
    await asyncio.gather(*(systemd.start_instance(i) for i in instances))
    figures = {"all_up_s": time.perf_counter() - began, "cpu_s": system.cpu_s() - cpu,
               "pid1_cpu_s": system.pid1_cpu_s() - pid1}
    await asyncio.gather(*(systemd.stop_instance(i) for i in instances))
    return figures


async def quiet(system: System) -> float:
    return await dormant_bench.quiet_pid1(pid1_cpu=system.pid1_cpu_s)


async def visit(system: System, systemd: Systemd, instance: Instance) -> float:
    return await dormant_bench.visit(systemd, instance, system.open_notebook, system.pid1_cpu_s)


def write_stamps(system: System, students: list[Instance], seen: list[float]) -> None:
    for instance, when in zip(students, seen, strict=True):
        dormant_bench.stamp(instance, when, system.path)
    system.run("chown", "-R", "nbh:nbh", str(dormant.SEEN_DIR), timeout=600)


async def enrol(systemd: Systemd, students: list[Instance]) -> None:
    await dormant_bench.in_hundreds(systemd.start, [i.socket for i in students])


def units_loaded(system: System) -> int:
    return len(system.run("systemctl", "list-units", "--all", "--no-legend", "--plain", timeout=600
                          ).stdout.splitlines())


async def side_by_side(pairs: list[tuple[System, Systemd]], runs: int, measure) -> list[list]:
    """`measure(system, systemd, i)` for i in range(runs), on each system in turn."""
    samples: list[list] = [[] for _ in pairs]
    for i in range(runs):
        for side, (system, systemd) in enumerate(pairs):
            samples[side].append(await measure(system, systemd, i))
    return samples


async def measure(pairs: list[tuple[System, Systemd]]) -> dict:
    figures: dict[str, dict] = {system.release: {} for system, _ in pairs}

    def put(name: str, samples: list[list], summary) -> None:
        for (system, _), values in zip(pairs, samples, strict=True):
            figures[system.release][name] = summary(values)
            print(f"bench --releases: {system.release} {name}: {figures[system.release][name]}", file=sys.stderr,
                  flush=True)

    def medians(runs: list[dict]) -> dict:
        return {key: percentiles([run[key] for run in runs]) for key in runs[0]}

    for system, systemd in pairs:
        await systemd.start(Instance(COURSE, f"cold-{RUN}").socket)
    put("cold_start", await side_by_side(pairs, COLD_RUNS, lambda s, d, _: cold_start(s, d, Instance(
        COURSE, f"cold-{RUN}"))), medians)
    put("twenty_at_once", await side_by_side(pairs, 2, crowd), medians)

    # enrolled: FEWEST, all seen this week, and no one else's units loaded
    # (the cold start's and the crowd's sockets are still listening)
    for system, systemd in pairs:
        await dormant_bench.stop_sockets(systemd)
        system.run("systemctl", "reset-failed")
    now, rng = time.time(), random.Random(RUN)
    students = [Instance(COURSE, f"v{RUN}-{i}") for i in range(MOST)]
    seen = [now - rng.uniform(0, 6) * DAY if i < SEEN_THIS_WEEK else now - rng.uniform(8, 30) * DAY
            for i in range(MOST)]
    for system, systemd in pairs:
        await enrol(systemd, students[:FEWEST])
        write_stamps(system, students[:FEWEST], seen[:FEWEST])
        figures[system.release][f"{FEWEST}_state"] = {"pid1_settled_s": await quiet(system),
                                                      "units_loaded": units_loaded(system)}

    def visits(pool: list[Instance]):
        async def one(system: System, systemd: Systemd, i: int) -> float:
            return await visit(system, systemd, pool[i % len(pool)])
        return one

    def per_visit(samples: list[float]) -> dict:
        return {"pid1_cpu_ms_per_visit": statistics.median(samples) * 1000,
                "samples_ms": [round(s * 1000, 2) for s in samples]}

    put(f"{FEWEST}_enrolled", await side_by_side(pairs, VISITS, visits(students[:FEWEST])), per_visit)
    # MOST enrolled, SEEN_THIS_WEEK of them seen this week (listening), the others dormant
    for system, systemd in pairs:
        began = time.perf_counter()
        await enrol(systemd, students[FEWEST:SEEN_THIS_WEEK])
        write_stamps(system, students[FEWEST:], seen[FEWEST:])
        settled = await quiet(system)
        figures[system.release][f"{MOST}_state"] = {"made_s": time.perf_counter() - began, "pid1_settled_s": settled,
                                                    "units_loaded": units_loaded(system)}
    put(f"{MOST}_enrolled_{SEEN_THIS_WEEK}_seen", await side_by_side(
        pairs, VISITS, visits(students[SEEN_THIS_WEEK - VISITS:SEEN_THIS_WEEK])), per_visit)
    put("dormant_comeback", await side_by_side(pairs, VISITS, visits(students[SEEN_THIS_WEEK:])), per_visit)
    for system, systemd in pairs:
        await dormant_bench.stop_sockets(systemd)  # the 1,000 and the few that came back
        mine = figures[system.release]
        mine["ratio_most_vs_fewest"] = (mine[f"{MOST}_enrolled_{SEEN_THIS_WEEK}_seen"]["pid1_cpu_ms_per_visit"]
                                        / mine[f"{FEWEST}_enrolled"]["pid1_cpu_ms_per_visit"])
        mine["systemd"] = system.run("systemctl", "--version").stdout.split()[1]
        mine["podman"] = system.run("podman", "--version").stdout.split()[-1]
    return figures


async def run() -> dict:
    sandbox.up()
    make_course()
    booted = releases.up()
    try:
        releases.open_site(booted)
        tree = in_tree(booted)
        systems.import_image(lambda argv, **kwargs: booted.run(*argv, **kwargs))
        sandbox.make_course(COURSE, {f"{ENTRY_NOTEBOOK}.ipynb": {"cells": [], "metadata": {}, "nbformat": 4,
                                                                 "nbformat_minor": 5}},
                            run=lambda argv, **kwargs: booted.run(*argv, **kwargs), path=booted.path)
        booted_systems = [in_sandbox(), tree]
        for system in booted_systems:
            system.path("/run/nbh-bench-visit.py").write_bytes(VISIT.read_bytes())
        buses = [await Systemd.connect(system.bus) for system in booted_systems]
        try:
            figures = await measure(list(zip(booted_systems, buses, strict=True)))
        finally:
            for bus in buses:
                await bus.close()
    finally:
        releases.down(booted)
    return {"host": releases.host_release(), "enrolled": [FEWEST, MOST], "seen_this_week": SEEN_THIS_WEEK,
            **figures}


def table(results: dict) -> list[str]:
    names = [name for name in results if name in releases.RELEASES]
    rows = ["", "| | " + " | ".join(f"{n} (systemd {results[n]['systemd']}, podman {results[n]['podman']})"
                                     for n in names) + " |", "| --- |" + " --- |" * len(names)]

    def row(label: str, value) -> None:
        rows.append(f"| {label} | " + " | ".join(value(results[n]) for n in names) + " |")

    row("cold start, p50", lambda r: f"{r['cold_start']['s']['p50']:.2f} s")
    row("CPU per cold start, whole system / PID 1, p50",
        lambda r: f"{r['cold_start']['cpu_s']['p50']:.2f} s / {r['cold_start']['pid1_cpu_s']['p50'] * 1000:.0f} ms")
    row(f"{CROWD} at once, all up, p50", lambda r: f"{r['twenty_at_once']['all_up_s']['p50']:.1f} s")
    row(f"{CROWD} at once, CPU whole system / PID 1",
        lambda r: f"{r['twenty_at_once']['cpu_s']['p50']:.1f} s / {r['twenty_at_once']['pid1_cpu_s']['p50']:.2f} s")
    fewest, most = results["enrolled"]
    seen = results["seen_this_week"]
    row(f"PID 1 CPU per visit, {fewest} enrolled",
        lambda r: f"{r[f'{fewest}_enrolled']['pid1_cpu_ms_per_visit']:.1f} ms")
    row(f"PID 1 CPU per visit, {most:,} enrolled, {seen:,} seen",
        lambda r: f"{r[f'{most}_enrolled_{seen}_seen']['pid1_cpu_ms_per_visit']:.1f} ms")
    row("the same / the fewest's (target <= 1.5)", lambda r: f"{r['ratio_most_vs_fewest']:.2f}")
    row("a dormant student's comeback", lambda r: f"{r['dormant_comeback']['pid1_cpu_ms_per_visit']:.1f} ms")
    return rows
