"""Per-student origins beside the single origin (web.student_origin):
`python -m bench --origins`, into bench/results.json (key origins).

A mode is a configuration (`nbh setup`, nbh-web started again), so the
modes alternate by blocks, not request by request:

- cold: the entry URL of a stopped server to the notebook page (200), as
  bench.common.open_notebook measures it (the page on the pair's origin
  in the per-student mode: nginx takes the host from the absolute URL);
- warm: the same with the server running, in blocks of 50;
- the front end's CPU per warm entry (the key's HMAC and link added).

What it does not measure: a browser's first connection to each new host
name (DNS, TLS), which a real site adds once per student and session.
"""

from __future__ import annotations

import asyncio
import os

from devtools import sandbox
from nbhosting.names import Instance
from nbhosting.systemd import Systemd

from . import common

RUN = os.getpid()
ROUNDS = int(os.environ.get("NBH_BENCH_ORIGINS_ROUNDS", "6"))
BLOCK = 50
MODES = {"single": "", "per_student": f'student_origin = "http://{{key}}.localhost:{sandbox.HTTP_PORT}"\n'}


def set_mode(extra: str) -> None:
    sandbox.path("/etc/nbhosting/nbhosting.toml").write_text(sandbox.CONFIG + extra)
    sandbox.run(["nbh", "setup"])
    sandbox.run(["systemctl", "stop", "nbh-web.service"])
    sandbox.run(["systemctl", "reset-failed", "nbh-web.service"])


async def run() -> dict:
    sandbox.up()
    common.make_course()
    systemd = await Systemd.connect(f"unix:path={sandbox.path('/run/dbus/system_bus_socket')}")
    loop = asyncio.get_running_loop()
    samples = {mode: {"cold": [], "warm": [], "cpu_ms": []} for mode in MODES}
    instance = Instance(common.COURSE, f"origins-{RUN:07d}")
    try:
        for n in range(ROUNDS):
            for mode, extra in (MODES.items() if n % 2 else reversed(MODES.items())):
                set_mode(extra)
                await systemd.stop_instance(instance)
                await asyncio.sleep(1)
                samples[mode]["cold"].append(await loop.run_in_executor(None, common.open_notebook, instance.student))
                for _ in range(BLOCK):
                    samples[mode]["warm"].append(
                        await loop.run_in_executor(None, common.open_notebook, instance.student))
                samples[mode]["cpu_ms"].append(
                    await loop.run_in_executor(None, common.entry_rate_cpu, instance.student, 200))
    finally:
        set_mode("")
        await systemd.stop_instance(instance)
        await systemd.close()
    figures = {mode: {"cold_s": common.percentiles(s["cold"]),
                      "warm_ms": {k: v * 1000 if k != "n" else v for k, v in common.percentiles(s["warm"]).items()},
                      "front_end_cpu_ms_per_entry": common.percentiles(s["cpu_ms"])}
               for mode, s in samples.items()}
    figures["per_student_over_single"] = {
        "cold_p50": figures["per_student"]["cold_s"]["p50"] / figures["single"]["cold_s"]["p50"],
        "warm_p50": figures["per_student"]["warm_ms"]["p50"] / figures["single"]["warm_ms"]["p50"],
    }
    return figures


def table(figures: dict) -> list[str]:
    lines = ["per-student origins beside the single origin (p50, p95):"]
    for mode in MODES:
        f = figures[mode]
        lines.append(f"  {mode:12} cold {f['cold_s']['p50']:.3f} / {f['cold_s']['p95']:.3f} s, "
                     f"warm {f['warm_ms']['p50']:.1f} / {f['warm_ms']['p95']:.1f} ms, "
                     f"front end {f['front_end_cpu_ms_per_entry']['p50']:.2f} ms CPU per entry")
    ratio = figures["per_student_over_single"]
    lines.append(f"  per-student / single: cold {ratio['cold_p50']:.2f}, warm {ratio['warm_p50']:.2f}")
    return lines
