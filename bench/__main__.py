"""Benchmarks of a student's server in the sandbox: ``make bench``.

Writes bench/results.json and prints a table. Figures are medians (p50) and
95th percentiles of repeated runs, measured side by side in one run; the
machine is small (2 cores) and shared, so compare ratios, not absolutes.

- cold start: connect to the socket of a stopped server until /api/status
  answers (socket unit -> proxy -> podman -> Jupyter);
- the CPU one cold start costs the host: the sandbox cgroup's CPU time over
  the cold start (systemd, D-Bus, journald, podman, conmon, crun, Jupyter);
- warm latency of /api/status through the socket chain, directly on the
  container's socket, and through nginx;
- memory: PSS of every process of the server's units, against Jupyter alone;
- 20 servers started at once.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path

from nbhosting import sandbox, tokens
from nbhosting.names import Instance
from nbhosting.systemd import Systemd

RESULTS = Path(__file__).parent / "results.json"
COURSE = "bench"
COLD_RUNS = int(os.environ.get("NBH_BENCH_COLD", "7"))
WARM_RUNS = int(os.environ.get("NBH_BENCH_WARM", "300"))


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=60)
        self.path_ = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path_)


def percentiles(samples: list[float]) -> dict:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": statistics.median(ordered), "p95": p95, "n": len(ordered)}


def sandbox_cpu_usec() -> int:
    stat = (sandbox.cgroup() / "cpu.stat").read_text()
    return int(next(line.split()[1] for line in stat.splitlines() if line.startswith("usage_usec")))


def get_status(connection: http.client.HTTPConnection, url: str, token: str) -> None:
    connection.request("GET", url, headers={"Authorization": f"token {token}"})
    response = connection.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"{url}: {response.status} {body[:200]!r}")


def token_of(instance: Instance) -> str:
    return tokens.server_token(tokens.read_secret(sandbox.path(str(tokens.SECRET_PATH))), instance.path)


async def cold_starts(systemd: Systemd, instance: Instance) -> tuple[list[float], list[float]]:
    token, walls, cpus = token_of(instance), [], []
    socket_path = str(sandbox.path(instance.listen_socket))
    await systemd.start(instance.socket)
    for _ in range(COLD_RUNS):
        await systemd.stop_instance(instance)
        await asyncio.sleep(1)  # let the stop's own work settle out of the CPU figure
        cpu, start = sandbox_cpu_usec(), time.perf_counter()
        connection = UnixConnection(socket_path)
        get_status(connection, instance.base_url + "api/status", token)
        walls.append(time.perf_counter() - start)
        cpus.append((sandbox_cpu_usec() - cpu) / 1e6)
        connection.close()
    return walls, cpus


def warm(url: str, connection: http.client.HTTPConnection, token: str) -> list[float]:
    for _ in range(20):  # warm up
        get_status(connection, url, token)
    samples = []
    for _ in range(WARM_RUNS):
        start = time.perf_counter()
        get_status(connection, url, token)
        samples.append(time.perf_counter() - start)
    return samples


def unit_pids(unit: str) -> list[int]:
    """Host PIDs: cgroup.procs lists them in the reader's PID namespace."""
    group = sandbox.run(["systemctl", "show", "-P", "ControlGroup", unit]).stdout.strip()
    procs = sandbox.path(f"/sys/fs/cgroup{group}/cgroup.procs")
    return [int(p) for p in procs.read_text().split()]


def memory(instance: Instance) -> dict:
    pids = unit_pids(instance.service) + unit_pids(instance.proxy)
    proc = Path("/proc")
    by_name = {}
    for pid in pids:
        name = (proc / str(pid) / "comm").read_text().strip()
        rollup = (proc / str(pid) / "smaps_rollup").read_text()
        pss = int(next(line.split()[1] for line in rollup.splitlines() if line.startswith("Pss:")))
        by_name[f"{name}[{pid}]"] = pss
    jupyter = sum(v for k, v in by_name.items() if k.startswith("jupyter-server"))
    total = sum(by_name.values())
    return {"units_pss_kib": total, "jupyter_pss_kib": jupyter, "ratio": total / jupyter,
            "processes": by_name}


async def at_once(systemd: Systemd, count: int) -> dict:
    instances = [Instance(COURSE, f"crowd-{i}") for i in range(count)]

    async def one(instance: Instance) -> float:
        start = time.perf_counter()
        await systemd.start_instance(instance)
        return time.perf_counter() - start

    cpu, start = sandbox_cpu_usec(), time.perf_counter()
    latencies = await asyncio.gather(*(one(i) for i in instances))
    wall = time.perf_counter() - start
    cpu = (sandbox_cpu_usec() - cpu) / 1e6
    await asyncio.gather(*(systemd.stop_instance(i) for i in instances))
    return {"count": count, "all_up_s": wall, "cpu_s": cpu, "start_s": percentiles(list(latencies))}


async def main() -> dict:
    sandbox.up()
    sandbox.run(["mkdir", "-p", f"/var/lib/nbhosting/courses/{COURSE}"])
    bus = f"unix:path={sandbox.path('/run/dbus/system_bus_socket')}"
    systemd = await Systemd.connect(bus)
    try:
        instance = Instance(COURSE, "solo")
        walls, cpus = await cold_starts(systemd, instance)
        token = token_of(instance)
        url = instance.base_url + "api/status"
        chain = warm(url, UnixConnection(str(sandbox.path(instance.listen_socket))), token)
        direct = warm(url, UnixConnection(str(sandbox.path(f"/run/nbh-jupyter/{instance.path}/jupyter.sock"))),
                      token)
        nginx = warm(url, http.client.HTTPConnection("127.0.0.1", 8780, timeout=30), token)
        await asyncio.sleep(2)  # idle, as most servers are
        mem = memory(instance)
        await systemd.stop_instance(instance)
        crowd = await at_once(systemd, 20)
    finally:
        await systemd.close()
    driver = sandbox.run(sandbox.podman(["info", "--format", "{{.Store.GraphDriverName}}"])).stdout.strip()
    return {
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "when": time.strftime("%Y-%m-%d %H:%M")},
        "storage_driver": driver,
        "cold_start_s": percentiles(walls),
        "cold_start_cpu_s": percentiles(cpus),
        "warm_socket_chain_ms": {k: v * 1000 if k != "n" else v for k, v in percentiles(chain).items()},
        "warm_direct_ms": {k: v * 1000 if k != "n" else v for k, v in percentiles(direct).items()},
        "warm_nginx_ms": {k: v * 1000 if k != "n" else v for k, v in percentiles(nginx).items()},
        "memory": mem,
        "twenty_at_once": crowd,
    }


def table(results: dict) -> str:
    def row(name, value, target=""):
        return f"| {name} | {value} | {target} |"
    cold, cpu = results["cold_start_s"], results["cold_start_cpu_s"]
    chain, direct, nginx = results["warm_socket_chain_ms"], results["warm_direct_ms"], results["warm_nginx_ms"]
    mem, crowd = results["memory"], results["twenty_at_once"]
    lines = [
        f"storage driver: {results['storage_driver']}, {results['machine']['cpus']} CPUs",
        "",
        "| measure | p50 (p95) | target |",
        "| --- | --- | --- |",
        row("cold start, socket to /api/status", f"{cold['p50']:.2f} s ({cold['p95']:.2f} s)", "< 1.4 s"),
        row("host CPU per cold start", f"{cpu['p50']:.2f} s ({cpu['p95']:.2f} s)", "< 1 s"),
        row("warm /api/status, socket chain", f"{chain['p50']:.2f} ms ({chain['p95']:.2f} ms)", "< 2 ms"),
        row("warm /api/status, container socket", f"{direct['p50']:.2f} ms ({direct['p95']:.2f} ms)", ""),
        row("warm /api/status, through nginx", f"{nginx['p50']:.2f} ms ({nginx['p95']:.2f} ms)", ""),
        row("server's units PSS / Jupyter alone",
            f"{mem['units_pss_kib'] / 1024:.1f} MiB / {mem['jupyter_pss_kib'] / 1024:.1f} MiB = {mem['ratio']:.3f}",
            "<= 1.10"),
        row("20 started at once: all up", f"{crowd['all_up_s']:.1f} s, {crowd['cpu_s']:.1f} CPU s", ""),
        row("20 at once: each start", f"{crowd['start_s']['p50']:.1f} s ({crowd['start_s']['p95']:.1f} s)", ""),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench: run as root (make bench)")
    results = asyncio.run(main())
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\nwritten to {RESULTS}")
