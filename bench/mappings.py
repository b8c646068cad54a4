"""The cost of a notebook's neighbours (nbhosting/mappings.py): `python -m
bench --mappings`, into bench/results.json (key mappings).

Two courses alike but for the neighbours: `bench` (w1/ holds notebooks
only) and `bench-mapped` (w1/ also holds data/ with 20 CSVs, figures/ with
50 PNGs and a module, as PythonDataScienceHandbook's notebooks/ does).
Side by side in one run, the courses alternating, a new student each time:

- cold open: the entry URL of a student never seen, to the notebook page
  (the server's start, the copy, and in bench-mapped the links placed);
- warm entry: the same student again, the server running (the links
  looked for again at each entry).
"""

from __future__ import annotations

import asyncio
import base64
import os

from devtools import sandbox
from nbhosting.names import Instance
from nbhosting.systemd import Systemd

from . import common

RUN = os.getpid()
ROUNDS = int(os.environ.get("NBH_BENCH_MAPPINGS_ROUNDS", "7"))
WARM = 50
MAPPED = "bench-mapped"
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEUlEQVR4nGP4z8DAwMDAxAAAHQMCAJ4xEpsAAAAASUVORK5CYII=")


def make_mapped_course() -> None:
    empty = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    files: dict = {f"{common.ENTRY_NOTEBOOK}.ipynb": empty, "w1/helper.py": "WHO = 'the course'\n"}
    files.update({f"w1/data/table{n}.csv": "a,b\n1,2\n" for n in range(20)})
    files.update({f"w1/figures/figure{n}.png": PNG for n in range(50)})
    sandbox.make_course(MAPPED, files)


async def run() -> dict:
    sandbox.up()
    common.make_course()
    make_mapped_course()
    systemd = await Systemd.connect(f"unix:path={sandbox.path('/run/dbus/system_bus_socket')}")
    loop = asyncio.get_running_loop()
    courses = {"without": common.COURSE, "with": MAPPED}
    samples: dict[str, dict[str, list[float]]] = {kind: {"cold": [], "warm": []} for kind in courses}
    try:
        for n in range(ROUNDS):
            for kind, course in (courses.items() if n % 2 else reversed(courses.items())):
                instance = Instance(course, f"mapped-{RUN}-{n}")
                path = common.entry_path(instance.student, course=course)
                await asyncio.sleep(1)  # the previous stop settled
                samples[kind]["cold"].append(await loop.run_in_executor(None, common.open_notebook, "", path))
                for _ in range(WARM):
                    samples[kind]["warm"].append(await loop.run_in_executor(None, common.open_notebook, "", path))
                await systemd.stop_instance(instance)
    finally:
        await systemd.close()
    figures = {kind: {"cold_s": common.percentiles(s["cold"]),
                      "warm_ms": {k: v * 1000 if k != "n" else v for k, v in common.percentiles(s["warm"]).items()}}
               for kind, s in samples.items()}
    with_, without = figures["with"], figures["without"]
    figures["with_over_without"] = {"cold_p50": with_["cold_s"]["p50"] / without["cold_s"]["p50"],
                                    "warm_p50": with_["warm_ms"]["p50"] / without["warm_ms"]["p50"]}
    return figures


def table(figures: dict) -> list[str]:
    lines = ["a notebook with neighbours (data/, figures/, a module) beside one without (p50, p95):"]
    for kind in ("without", "with"):
        f = figures[kind]
        lines.append(f"  {kind:8} cold open {f['cold_s']['p50']:.3f} / {f['cold_s']['p95']:.3f} s, "
                     f"warm entry {f['warm_ms']['p50']:.1f} / {f['warm_ms']['p95']:.1f} ms")
    ratio = figures["with_over_without"]
    lines.append(f"  with / without: cold {ratio['cold_p50']:.2f}, warm {ratio['warm_p50']:.2f}")
    return lines
