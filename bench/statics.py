"""Notebook's files from nginx's shared copy beside each server's own
(issue 26, step 2): `python -m bench --statics`.

Side by side in one run, interleaved run by run, each run a new student:

- "own": the images' record (nbhosting/jupyter_static.py) moved aside, so a
  start gives its container no NBH_STATIC_URL and the page loads Notebook's
  files from the student's server, under /nb/<course>/<student>/, as before;
- "shared": as installed: from /_jupyter/<image id>/, which nginx serves.

Each for a returning browser (one Chromium, its caches kept) and a
first-ever one (an empty profile each run): open -> first cell result with
where its seconds went (bench/firstresult.py), and the CPU of the student's
server units and of the whole sandbox (nginx's included) over the open.
"""

from __future__ import annotations

import asyncio
import functools
import os

from devtools import sandbox
from nbhosting.names import Instance
from nbhosting.systemd import Systemd

from . import common
from .kernel import unit_cpu_s

RUNS = int(os.environ.get("NBH_BENCH_STATICS_RUNS", "5"))
RECORD = "/var/lib/nbhosting/static/images.json"
MODES = ("own", "shared")
KINDS = {"returning": False, "first_ever": True}


def use(mode: str) -> None:
    """The record in place ("shared") or aside ("own"): read by each start."""
    record, aside = sandbox.path(RECORD), sandbox.path(RECORD + ".aside")
    if mode == "own" and record.exists():
        record.rename(aside)
    elif mode == "shared" and aside.exists():
        aside.rename(record)


async def run() -> dict:
    sandbox.up()
    common.make_course()
    if not sandbox.path(RECORD).exists() and not sandbox.path(RECORD + ".aside").exists():
        raise SystemExit(f"bench: no {RECORD} in the sandbox (nbh jupyter-static)")
    from .firstresult import close, first_result  # noqa: PLC0415 -- selenium, only when measured
    systemd = await Systemd.connect(f"unix:path={sandbox.path('/run/dbus/system_bus_socket')}")
    loop = asyncio.get_running_loop()
    runs = {kind: {mode: [] for mode in MODES} for kind in KINDS}

    async def one(student: str, fresh: bool) -> dict:
        instance = Instance(common.COURSE, student)
        await asyncio.sleep(1)  # the previous run's stop settled
        phases: dict = {}
        breakdown: dict = {}
        cpu = common.sandbox_cpu_usec()
        await loop.run_in_executor(None, functools.partial(
            first_result, common.first_result_url(student), phases, breakdown, fresh=fresh))
        measured = {"phases": phases, "breakdown": breakdown, "server_cpu_s": unit_cpu_s(instance),
                    "sandbox_cpu_s": (common.sandbox_cpu_usec() - cpu) / 1e6}
        await systemd.stop_instance(instance)
        return measured

    try:
        for mode in MODES:  # a first open of each, not counted: the browser's and the host's caches
            use(mode)
            await one(f"statics-{common.RUN}-warm-{mode}", False)
        for n in range(RUNS):
            for mode in (MODES if n % 2 else reversed(MODES)):
                use(mode)
                for kind, fresh in KINDS.items():
                    runs[kind][mode].append(await one(f"statics-{common.RUN}-{mode[0]}{kind[0]}{n}", fresh))
    finally:
        use("shared")
        await loop.run_in_executor(None, close)
        await systemd.close()
    return {kind: {mode: summary(measured) for mode, measured in modes.items()} for kind, modes in runs.items()}


def summary(runs: list[dict]) -> dict:
    return {**common.first_result_summary([run["phases"] for run in runs]),
            "breakdown_p50": common.breakdown_summary([run["breakdown"] for run in runs]),
            "server_cpu_s": common.percentiles([run["server_cpu_s"] for run in runs]),
            "sandbox_cpu_s": common.percentiles([run["sandbox_cpu_s"] for run in runs])}


def table(results: dict) -> list[str]:
    lines = ["", "Notebook's files: each server's own vs nginx's shared copy, side by side "
             "(medians; each run a new student)", "",
             "| measure | own, returning | shared, returning | own, first-ever | shared, first-ever |",
             "| --- | --- | --- | --- | --- |"]
    cells = [results[kind][mode] for kind in KINDS for mode in MODES]

    def row(name: str, figure) -> str:
        return f"| {name} | " + " | ".join(figure(cell) for cell in cells) + " |"
    lines.append(row("open -> first cell result", lambda c: f"{c['p50']:.2f} s"))
    for step in cells[0]["breakdown_p50"]["steps_s"]:
        lines.append(row(f"  {step}", lambda c, s=step: f"{c['breakdown_p50']['steps_s'][s]:.2f}"))
    lines.append(row("scripts from the network / all", lambda c: (
        f"{c['breakdown_p50']['scripts_from_network']:.0f} / {c['breakdown_p50']['scripts']:.0f}, "
        f"{c['breakdown_p50']['scripts_kib'] / 1024:.2f} MiB")))
    lines.append(row("main thread: script / all tasks", lambda c: (
        f"{c['breakdown_p50']['main_thread'].get('script_s', 0):.2f} / "
        f"{c['breakdown_p50']['main_thread'].get('tasks_s', 0):.2f} s")))
    lines.append(row("CPU of the server's units per open", lambda c: f"{c['server_cpu_s']['p50']:.2f} s"))
    lines.append(row("CPU of the whole sandbox per open", lambda c: f"{c['sandbox_cpu_s']['p50']:.2f} s"))
    return lines
