"""The cost of a workspace on a disk of its own (limits.disk_max,
nbhosting/disks.py): `python -m bench --disks`, into bench/results.json
(key disks).

Two courses alike but for `disk_max`: `bench` (workspaces are folders) and
`bench-disk` (1G each). Side by side in one run, the courses alternating,
a new student each time:

- first open: the entry URL of a student never seen, to the notebook page
  (in bench-disk, the image made and mounted before the server starts);
- stop: the server's stop, as the cull does it (and the disk's unmount);
- open again: the same student, stopped, to the notebook page (the disk
  mounted again);
- warm entry: the server running.
"""

from __future__ import annotations

import asyncio
import os
import time

from devtools import sandbox
from nbhosting.names import Instance
from nbhosting.systemd import Systemd

from . import common

RUN = os.getpid()
ROUNDS = int(os.environ.get("NBH_BENCH_DISKS_ROUNDS", "7"))
WARM = 20
BOUNDED = "bench-disk"


async def run() -> dict:
    sandbox.up()
    common.make_course()
    sandbox.make_course(BOUNDED, {f"{common.ENTRY_NOTEBOOK}.ipynb":
                                  {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}})
    sandbox.run(["nbh", "course", "set", BOUNDED, "disk_max=1G"])
    systemd = await Systemd.connect(f"unix:path={sandbox.path('/run/dbus/system_bus_socket')}")
    loop = asyncio.get_running_loop()
    courses = {"folder": common.COURSE, "disk": BOUNDED}
    samples = {kind: {"first": [], "stop": [], "again": [], "warm": []} for kind in courses}
    try:
        for n in range(ROUNDS):
            for kind, course in (courses.items() if n % 2 else reversed(courses.items())):
                instance = Instance(course, f"disk-{RUN}-{n}")
                path = common.entry_path(instance.student, course=course)
                await asyncio.sleep(1)  # the previous stop settled
                samples[kind]["first"].append(await loop.run_in_executor(None, common.open_notebook, "", path))
                await asyncio.sleep(1)
                start = time.perf_counter()
                await systemd.stop_instance(instance)
                samples[kind]["stop"].append(time.perf_counter() - start)
                await asyncio.sleep(1)
                samples[kind]["again"].append(await loop.run_in_executor(None, common.open_notebook, "", path))
                for _ in range(WARM):
                    samples[kind]["warm"].append(await loop.run_in_executor(None, common.open_notebook, "", path))
                await systemd.stop_instance(instance)
    finally:
        await systemd.close()
    figures = {kind: {name: common.percentiles(values) for name, values in s.items()} for kind, s in samples.items()}
    figures["disk_over_folder"] = {name: figures["disk"][name]["p50"] / figures["folder"][name]["p50"]
                                   for name in ("first", "stop", "again", "warm")}
    return figures


def table(figures: dict) -> list[str]:
    lines = ["a workspace on a disk of its own (1G) beside a folder (p50 / p95):"]
    for kind in ("folder", "disk"):
        f = figures[kind]
        lines.append(f"  {kind:6} first open {f['first']['p50']:.3f} / {f['first']['p95']:.3f} s, "
                     f"stop {f['stop']['p50']:.3f} / {f['stop']['p95']:.3f} s, "
                     f"open again {f['again']['p50']:.3f} / {f['again']['p95']:.3f} s, "
                     f"warm {f['warm']['p50'] * 1000:.1f} / {f['warm']['p95'] * 1000:.1f} ms")
    ratio = figures["disk_over_folder"]
    lines.append("  disk / folder: " + ", ".join(f"{name} {value:.2f}" for name, value in ratio.items()))
    return lines
