"""What the benchmarks share: the course, the runs' sizes, percentiles, a
server's cold start, warm latency and memory, the LMS entry as a student's
browser makes it, and bench/results.json. bench/__main__.py, the parts
measured by a module of their own and bench/peer import it; it imports none
of them (the modules imported bench/__main__.py, which imported them back)."""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import os
import statistics
import time
from pathlib import Path
from urllib.parse import quote

from nbhosting import access
from devtools import sandbox
from nbhosting.names import Instance
from nbhosting.systemd import Systemd

RESULTS = Path(__file__).parent / "results.json"
COURSE = "bench"
# Fresh students at every run: systemd limits the starts of one unit (StartLimitBurst=).
RUN = os.getpid()
COLD_RUNS = int(os.environ.get("NBH_BENCH_COLD", "7"))
WARM_RUNS = int(os.environ.get("NBH_BENCH_WARM", "300"))


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


async def cold_start(systemd: Systemd, instance: Instance) -> tuple[float, float]:
    """One cold start of a stopped server whose socket is up: (seconds, host CPU seconds)."""
    token = sandbox.server_token(instance)
    await systemd.stop_instance(instance)
    await asyncio.sleep(1)  # let the stop's own work settle out of the CPU figure
    cpu, start = sandbox_cpu_usec(), time.perf_counter()
    connection = sandbox.UnixHTTPConnection(str(sandbox.path(instance.listen_socket)))
    get_status(connection, instance.base_url + "api/status", token)
    wall, cpu = time.perf_counter() - start, (sandbox_cpu_usec() - cpu) / 1e6
    connection.close()
    return wall, cpu


def warm(url: str, connection: http.client.HTTPConnection, token: str) -> list[float]:
    for _ in range(20):  # warm up
        get_status(connection, url, token)
    samples = []
    for _ in range(WARM_RUNS):
        start = time.perf_counter()
        get_status(connection, url, token)
        samples.append(time.perf_counter() - start)
    return samples


def memory(instance: Instance) -> dict:
    pids = sandbox.unit_pids(instance.service) + sandbox.unit_pids(instance.proxy)
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
    instances = [Instance(COURSE, f"crowd-{RUN}-{i}") for i in range(count)]

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


# -- the LMS entry, through nginx and nbh-web --------------------------------

ENTRY_NOTEBOOK = "w1/intro"
# The notebook of the first result (bench/firstresult.py): one cell, print(6 * 7).
FIRST_NOTEBOOK = "w1/first"
FIRST_RUNS = int(os.environ.get("NBH_BENCH_FIRST", "5"))


def first_notebook() -> dict:
    return {"cells": [{"cell_type": "code", "execution_count": None, "id": "first", "metadata": {},
                       "outputs": [], "source": ["print(6 * 7)"]}],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


def make_course() -> None:
    """A course of two notebooks, from a git repository, as an operator makes it."""
    sandbox.make_course(COURSE, {f"{ENTRY_NOTEBOOK}.ipynb": {"cells": [], "metadata": {}, "nbformat": 4,
                                                             "nbformat_minor": 5},
                                 f"{FIRST_NOTEBOOK}.ipynb": first_notebook()})


def entry_path(student: str, notebook: str = ENTRY_NOTEBOOK, course: str = COURSE) -> str:
    """The entry URL as the LMS signs it (web.auth = "signed", the default)."""
    key = access.read_key(sandbox.path(str(access.LMS_KEY_PATH)))
    query = access.signed_query(key, course, notebook, student, ttl=3600)
    return f"/ipythonExercice/{course}/{quote(notebook)}/{student}?{query}"


def first_result_url(student: str) -> str:
    """What a new student's browser opens: the entry URL of the first result's notebook."""
    return sandbox.SITE_URL + entry_path(student, FIRST_NOTEBOOK)


def first_result_summary(runs: list[dict]) -> dict:
    """Percentiles of the first results, and the median time to each of their steps."""
    return {**percentiles([run["result"] for run in runs]),
            "phases_p50": {step: statistics.median(run[step] for run in runs) for step in runs[0]}}


def breakdown_summary(breakdowns: list[dict]) -> dict:
    """The median of each figure of the runs' breakdowns, as they are nested."""
    first = breakdowns[0]
    return {key: breakdown_summary([run[key] for run in breakdowns]) if isinstance(value, dict)
            else statistics.median(run[key] for run in breakdowns) for key, value in first.items()}


_client_addresses = (f"127.1.{n // 250}.{1 + n % 250}" for n in itertools.count())
# Requests of one client address, at most: nginx limits entries per address
# (limit_req, bursts of 100); the benchmarks measure nbh-web, as many
# students' browsers reach it, each from an address of its own.
PER_CLIENT = 50


def lms_client(timeout: float = 30) -> http.client.HTTPConnection:
    """A connection to the site from a loopback address of its own."""
    return http.client.HTTPConnection("127.0.0.1", sandbox.HTTP_PORT, timeout=timeout,
                                      source_address=(next(_client_addresses), 0))


def fetch(connection: http.client.HTTPConnection, path: str, referer: str | None = None) -> tuple[int, str, bytes]:
    headers = {"Referer": referer} if referer else {}
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    return response.status, response.getheader("Location") or "", response.read()


def open_notebook(student: str, path: str | None = None) -> float:
    """Entry URL (this student's, or `path`) to the notebook page (200),
    following the "starting" page if any."""
    connection = lms_client(timeout=120)
    start = time.perf_counter()
    status, location, body = fetch(connection, path or entry_path(student), sandbox.LMS_ORIGINS[0] + "/")
    if status == 200:  # the "starting" page: its event stream ends with the URL
        wait = body.split(b'new EventSource("')[1].split(b'"')[0].decode()
        _, _, events = fetch(connection, wait)
        location = json.loads(events.strip().split(b"\n")[-1].split(b"data: ")[1])["url"]
    elif status != 302:
        raise RuntimeError(f"entry: {status} {body[:200]!r}")
    status, _, _ = fetch(connection, location)
    if status != 200:
        raise RuntimeError(f"notebook page: {status}")
    connection.close()
    return time.perf_counter() - start


def front_end_cpu_usec() -> int:
    group = sandbox.run(["systemctl", "show", "-P", "ControlGroup", "nbh-web.service"]).stdout.strip()
    stat = sandbox.path(f"/sys/fs/cgroup{group}/cpu.stat").read_text()
    return int(stat.split()[1])


def entry_rate_cpu(student: str, count: int = 500) -> float:
    """The front end's own CPU time per warm entry: what bounds its rate on one core."""
    connection = lms_client()
    path = entry_path(student)
    before = front_end_cpu_usec()
    for i in range(count):
        if i and i % PER_CLIENT == 0:
            connection.close()
            connection = lms_client()
        fetch(connection, path, sandbox.LMS_ORIGINS[0] + "/")
    connection.close()
    return (front_end_cpu_usec() - before) / count / 1000


async def in_sandbox(measure, make=make_course) -> dict:
    """One part of the benchmarks alone: the sandbox up, its course made,
    `measure(systemd)` with a client of the sandbox's systemd."""
    sandbox.up()
    make()
    systemd = await Systemd.connect(f"unix:path={sandbox.path('/run/dbus/system_bus_socket')}")
    try:
        return await measure(systemd)
    finally:
        await systemd.close()


def write_key(key: str, figures: dict, part: str | None = None) -> None:
    """One part's figures into bench/results.json (or into `part` of the
    key's, the key's others kept), the others' kept, with when they were
    measured (machine.when is the last full run's)."""
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    figures = {**figures, "when": time.strftime("%Y-%m-%d %H:%M")}
    if part is None:
        results[key] = figures
    else:
        results.setdefault(key, {})[part] = figures
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
