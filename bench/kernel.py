"""The kernel ready when the page is (issue 13, item 1): `python -m bench --kernel`.

Side by side in one run, with the pre-start off (web.prestart_timeout = 0)
and on (the default), interleaved run by run, each run a new student:

- open -> first cell result: bench/firstresult.py's first_result(), as
  `make bench` and `make bench-peer` measure it, with its steps (the cell
  shown, the page's kernel idle);
- the CPU of that open: the student's server units' cgroups (Jupyter, its
  kernel, conmon, the proxy) once the 42 shows, and the whole sandbox's over
  the open (with nbh-web, nginx, systemd, podman);
- 20 new students at once through the entry URL, to the notebook page
  (bench.common.open_notebook), p95;
- PSS of one server with one idle kernel, and the kernel's part.
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from devtools import sandbox
from nbhosting.names import Instance
from nbhosting.systemd import Systemd

from . import common

COURSE = "bench-kernel"
NOTEBOOK = "w1/first.ipynb"
RUN = os.getpid()
RUNS = int(os.environ.get("NBH_BENCH_KERNEL_RUNS", "7"))
CROWD = 20


def make_course() -> None:
    from tests.conftest import notebook  # noqa: PLC0415 -- the tests' notebook, with its kernelspec
    sandbox.make_course(COURSE, {NOTEBOOK: notebook("print(6 * 7)")})


def set_prestart(timeout: int) -> None:
    """nbh-web with web.prestart_timeout = timeout (0: off); it reads it when it starts."""
    sandbox.path("/etc/nbhosting/nbhosting.toml").write_text(sandbox.CONFIG + f"prestart_timeout = {timeout}\n")
    sandbox.run(["systemctl", "stop", "nbh-web.service"])
    sandbox.run(["systemctl", "reset-failed", "nbh-web.service"])


def entry_path(student: str) -> str:
    return common.entry_path(student, NOTEBOOK.removesuffix(".ipynb"), COURSE)


def entry_url(student: str) -> str:
    return sandbox.SITE_URL + entry_path(student)


def unit_cpu_s(instance: Instance) -> float:
    """CPU seconds of the student's server units so far (their cgroups)."""
    total = 0
    for unit in (instance.service, instance.proxy):
        group = sandbox.run(["systemctl", "show", "-P", "ControlGroup", unit]).stdout.strip()
        stat = sandbox.path(f"/sys/fs/cgroup{group}/cpu.stat") if group else None
        if stat and stat.exists():
            total += int(next(line.split()[1] for line in stat.read_text().splitlines()
                              if line.startswith("usage_usec")))
    return total / 1e6


def kernel_memory(instance: Instance) -> dict:
    """PSS of the server's processes, and of its kernel (the ipykernel process)."""
    by_name, kernel = {}, 0
    for pid in sandbox.unit_pids(instance.service) + sandbox.unit_pids(instance.proxy):
        proc = Path(f"/proc/{pid}")
        try:
            rollup = (proc / "smaps_rollup").read_text()
            cmdline = (proc / "cmdline").read_bytes()
            name = (proc / "comm").read_text().strip()
        except OSError:
            continue
        pss = int(next(line.split()[1] for line in rollup.splitlines() if line.startswith("Pss:")))
        by_name[f"{name}[{pid}]"] = pss
        if b"ipykernel" in cmdline:
            kernel += pss
    return {"total_pss_kib": sum(by_name.values()), "kernel_pss_kib": kernel, "processes": by_name}


async def crowd(systemd: Systemd, tag: str) -> dict:
    """20 new students at once through the entry URL, to the notebook page
    (their pre-started kernels, if any, starting meanwhile)."""
    students = [f"crowd{tag}-{RUN}-{i}" for i in range(CROWD)]
    paths = [entry_path(student) for student in students]
    cpu = common.sandbox_cpu_usec()
    with ThreadPoolExecutor(CROWD) as pool:
        began = time.perf_counter()
        each = list(pool.map(common.open_notebook, students, paths))
        all_in = time.perf_counter() - began
    cpu = (common.sandbox_cpu_usec() - cpu) / 1e6
    await asyncio.gather(*(systemd.stop_instance(Instance(COURSE, s)) for s in students))
    return {"all_in_s": all_in, "each_s": common.percentiles(each), "sandbox_cpu_s": cpu}


async def run() -> dict:
    sandbox.up()
    make_course()
    from .firstresult import close, first_result  # noqa: PLC0415 -- selenium, only when measured
    systemd = await Systemd.connect(f"unix:path={sandbox.path('/run/dbus/system_bus_socket')}")
    loop = asyncio.get_running_loop()
    modes = {"off": 0, "on": 60}
    # first_result's steps, by the names these results have had since the first run
    steps = {"result": "open_to_42_s", "cell": "cell_shown_s", "kernel": "kernel_connected_s"}
    keys = (*steps.values(), "server_cpu_s", "sandbox_cpu_s")
    results = {mode: {key: [] for key in keys} for mode in modes}
    memory = None
    try:
        # a first open, not counted: the browser's and the host's caches
        set_prestart(60)
        warmup = Instance(COURSE, f"warmup-{RUN}")
        await loop.run_in_executor(None, first_result, entry_url(warmup.student))
        await systemd.stop_instance(warmup)
        for n in range(RUNS):
            for mode, timeout in (modes.items() if n % 2 else reversed(modes.items())):
                set_prestart(timeout)
                instance = Instance(COURSE, f"k{mode}-{RUN}-{n}")
                await asyncio.sleep(1)  # the previous run's stop settled
                cpu = common.sandbox_cpu_usec()
                phases: dict = {}
                await loop.run_in_executor(None, first_result, entry_url(instance.student), phases)
                results[mode]["sandbox_cpu_s"].append((common.sandbox_cpu_usec() - cpu) / 1e6)
                for step, key in steps.items():
                    results[mode][key].append(phases[step])
                results[mode]["server_cpu_s"].append(unit_cpu_s(instance))
                if memory is None and mode == "on":
                    await asyncio.sleep(3)  # idle, the tab closed (first_result leaves about:blank)
                    memory = kernel_memory(instance)
                await systemd.stop_instance(instance)
        for mode, timeout in modes.items():
            set_prestart(timeout)
            results[mode]["twenty_at_once"] = await crowd(systemd, mode)
    finally:
        await loop.run_in_executor(None, close)
        set_prestart(60)
        await systemd.close()
    for mode in results.values():
        for key in keys:
            mode[key] = {**common.percentiles(mode[key]), "all": sorted(mode[key])}
    return {"prestart": results, "memory_one_idle_kernel": memory}


def table(results: dict) -> list[str]:
    off, on = results["prestart"]["off"], results["prestart"]["on"]

    def row(name, key, unit="s", target=""):
        a, b = off[key], on[key]
        return f"| {name} | {a['p50']:.2f} {unit} | {b['p50']:.2f} {unit} | {target} |"
    lines = ["", "Kernel pre-start, off vs on, side by side (medians; each run a new student)", "",
             "| measure | off | on | target |", "| --- | --- | --- | --- |",
             row("open -> first cell result (Chromium)", "open_to_42_s", target="<= 1.0 s"),
             row("  of which: open -> the cell shown", "cell_shown_s"),
             row("  of which: open -> the page's kernel idle", "kernel_connected_s"),
             row("CPU of the server's units per open (Jupyter, kernel, conmon, proxy)", "server_cpu_s",
                 target="<= 0.9 s"),
             row("CPU of the whole sandbox per open", "sandbox_cpu_s")]
    a, b = off["twenty_at_once"], on["twenty_at_once"]
    lines.append(f"| 20 new students at once, entry to page, p95 | {a['each_s']['p95']:.1f} s "
                 f"({a['sandbox_cpu_s']:.1f} CPU s) | {b['each_s']['p95']:.1f} s ({b['sandbox_cpu_s']:.1f} CPU s) "
                 f"| <= 6 s |")
    if memory := results.get("memory_one_idle_kernel"):
        lines.append(f"| PSS, one server with one idle kernel / the kernel | | "
                     f"{memory['total_pss_kib'] / 1024:.1f} MiB / {memory['kernel_pss_kib'] / 1024:.1f} MiB | |")
    return lines
