"""JupyterHub beside nbhosting, in one run on the sandbox: ``make bench-peer``.

bench/peer/install puts JupyterHub, SystemdSpawner and configurable-http-proxy
from PyPI and npm (pinned here) under /var/cache/nbhosting, with the Jupyter
of our image; twice: as a user installs it, and without rfc3987-syntax, as
our image has it. Each runs as a hub of its own, a transient unit of the
sandbox's systemd (bench/peer/jupyterhub_config.py), whose servers are
transient units with dynamic users. The same measures as ``make bench``, on
the three side by side, interleaved run by run:

- cold start: the request that starts a server (nbhosting: a connection to
  its socket; JupyterHub: its REST API) until /api/status answers 200;
- host CPU per cold start: the sandbox cgroup's CPU time over it;
- 20 students at once: each one's cold start, p95;
- a warm /api/status through the proxy (nginx; configurable-http-proxy);
- one idle server's PSS (its units' processes; the hub's apart);
- open -> first cell result of a new student in Chromium (bench/firstresult.py).

Writes bench/peer.json and prints one table: medians, and the ratios
nbhosting / JupyterHub.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import platform
import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from devtools import sandbox
from nbhosting.names import Instance
from nbhosting.systemd import Systemd

from .. import common
from ..firstresult import first_result

HERE = Path(__file__).parent
RESULTS = HERE.parent / "peer.json"
CONFIG = HERE / "jupyterhub_config.py"
# The two installs, and the first of the three loopback ports of each hub
# (the proxy's public one; the hub's; the proxy's API).
VARIANTS = {"asis": 8850, "norfc": 8860}
LABELS = {"asis": "JupyterHub", "norfc": "JupyterHub, rfc3987-syntax removed", "nbhosting": "nbhosting"}
HOME = "/var/lib/nbh-peer"  # in the sandbox
RUN = os.getpid() % 100000
CROWD = int(os.environ.get("NBH_BENCH_CROWD", "20"))


def pss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        total += int(next(line.split()[1] for line in rollup.splitlines() if line.startswith("Pss:")))
    return total


class Hub:
    """One JupyterHub in the sandbox, and its REST API."""

    def __init__(self, variant: str, install: str):
        self.variant, self.port = variant, VARIANTS[variant]
        self.prefix = f"{install}/{variant}"
        self.proxy = f"{install}/proxy/node_modules/.bin/configurable-http-proxy"
        self.unit = f"nbh-peer-{variant}.service"
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(32)
        self.tag = variant[0]  # in its users' names: each hub's units and homes are apart

    def start(self) -> None:
        home = f"{HOME}/{self.variant}"
        sandbox.run(["mkdir", "-p", home])
        token_file = sandbox.path(f"{home}/token")
        token_file.write_text(self.token)
        token_file.chmod(0o400)
        env = {"NBH_PEER_PREFIX": self.prefix, "NBH_PEER_PORT": self.port, "NBH_PEER_PROXY": self.proxy,
               "NBH_PEER_TOKEN_FILE": f"{home}/token", "NBH_PEER_COURSE": f"{HOME}/course",
               "NBH_PEER_NOTEBOOK": f"{common.FIRST_NOTEBOOK}.ipynb"}
        sandbox.run(["systemctl", "reset-failed", self.unit], check=False)
        sandbox.run(["systemd-run", f"--unit={self.unit}", f"--working-directory={home}",
                     *(f"--setenv={k}={v}" for k, v in env.items()),
                     f"{self.prefix}/bin/jupyterhub", "-f", str(CONFIG)])
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.api("GET", "")[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.unit} did not answer in 60 s:\n{self.journal()}")
            time.sleep(0.2)

    def journal(self, lines: int = 40) -> str:
        return sandbox.run(["journalctl", "--unit", self.unit, "--lines", str(lines), "--no-pager", "--output=cat"],
                           check=False).stdout

    def stop(self) -> None:
        sandbox.run(["systemctl", "stop", self.unit], check=False)

    def api(self, method: str, path: str, timeout: float = 120) -> tuple[int, dict]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, f"/hub/api/{path}", headers={"Authorization": f"token {self.token}"})
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        try:
            return response.status, json.loads(body) if body.strip() else {}
        except ValueError:  # the proxy's error page, before the hub is up
            return response.status, {"body": body[:200].decode(errors="replace")}

    def user(self, kind: str, i: int) -> str:
        """A new user of this hub (created), its name short enough for a unit's dynamic user."""
        name = f"{self.tag}{kind}{i}-{RUN}"
        status, body = self.api("POST", f"users/{name}")
        if status not in (201, 409):
            raise RuntimeError(f"creating {name}: {status} {body}")
        return name

    def status_url(self, name: str) -> str:
        return f"/user/{name}/api/status"

    def cold_start(self, name: str) -> float:
        """The REST API's start until /api/status answers 200 through the proxy."""
        start = time.perf_counter()
        status, body = self.api("POST", f"users/{name}/server")
        if status not in (201, 202):
            raise RuntimeError(f"starting {name}: {status} {body}\n{self.journal()}")
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        while True:
            connection.request("GET", self.status_url(name), headers={"Authorization": f"token {self.token}"})
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                break
            if time.perf_counter() - start > 120:
                raise RuntimeError(f"{name}: no /api/status in 120 s ({response.status})")
            time.sleep(0.01)
        connection.close()
        return time.perf_counter() - start

    def stop_server(self, name: str) -> None:
        status, body = self.api("DELETE", f"users/{name}/server")
        if status not in (202, 204, 400):  # 400: not running
            raise RuntimeError(f"stopping {name}: {status} {body}")
        deadline = time.monotonic() + 60
        while self.api("GET", f"users/{name}")[1].get("servers"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: still running 60 s after its stop")
            time.sleep(0.1)

    def server_pids(self, name: str) -> list[int]:
        return sandbox.unit_pids(f"jh-{name}.service")


def cold_with_cpu(measure) -> tuple[float, float]:
    cpu = common.sandbox_cpu_usec()
    wall = measure()
    return wall, (common.sandbox_cpu_usec() - cpu) / 1e6


def crowd(hub: Hub) -> dict:
    names = [hub.user("m", i) for i in range(CROWD)]
    cpu, start = common.sandbox_cpu_usec(), time.perf_counter()
    with ThreadPoolExecutor(CROWD) as pool:
        each = list(pool.map(hub.cold_start, names))
    all_up, cpu = time.perf_counter() - start, (common.sandbox_cpu_usec() - cpu) / 1e6
    with ThreadPoolExecutor(CROWD) as pool:
        list(pool.map(hub.stop_server, names))
    return {"count": CROWD, "all_up_s": all_up, "cpu_s": cpu, "start_s": common.percentiles(each)}


def put_course_notebook() -> None:
    """The first result's notebook, where the hubs' servers copy it from."""
    notebook = sandbox.path(f"{HOME}/course/{common.FIRST_NOTEBOOK}.ipynb")
    sandbox.run(["mkdir", "-p", "-m", "0755", f"{HOME}/course/{Path(common.FIRST_NOTEBOOK).parent}"])
    notebook.write_text(json.dumps(common.first_notebook(), indent=1))
    notebook.chmod(0o644)


async def main(install: str) -> dict:
    sandbox.up()
    common.make_course()
    put_course_notebook()
    hubs = [Hub(variant, install) for variant in VARIANTS]
    systemd = await Systemd.connect(f"unix:path={sandbox.path('/run/dbus/system_bus_socket')}")
    loop = asyncio.get_running_loop()
    samples = {key: {"cold_s": [], "cold_cpu_s": []} for key in (*VARIANTS, "nbhosting")}
    results = {key: {} for key in samples}
    try:
        for hub in hubs:
            hub.start()
        # Cold starts, interleaved: nbhosting, then each hub.
        instance = Instance(common.COURSE, f"peer-solo-{RUN}")
        await systemd.start(instance.socket)
        solo = {hub.variant: hub.user("s", 0) for hub in hubs}
        for _ in range(common.COLD_RUNS):
            wall, cpu = await common.cold_start(systemd, instance)
            samples["nbhosting"]["cold_s"].append(wall)
            samples["nbhosting"]["cold_cpu_s"].append(cpu)
            for hub in hubs:
                await loop.run_in_executor(None, hub.stop_server, solo[hub.variant])
                await asyncio.sleep(1)  # as common.cold_start: the stop's work out of the CPU figure
                wall, cpu = await loop.run_in_executor(
                    None, cold_with_cpu, lambda hub=hub: hub.cold_start(solo[hub.variant]))
                samples[hub.variant]["cold_s"].append(wall)
                samples[hub.variant]["cold_cpu_s"].append(cpu)

        # Warm /api/status through the proxy, then one idle server's PSS.
        token = sandbox.server_token(instance)
        warm = await loop.run_in_executor(None, common.warm, instance.base_url + "api/status",
                                          http.client.HTTPConnection("127.0.0.1", sandbox.HTTP_PORT, timeout=30),
                                          token)
        results["nbhosting"]["warm_proxy_ms"] = common.percentiles([s * 1000 for s in warm])
        for hub in hubs:
            warm = await loop.run_in_executor(None, common.warm, hub.status_url(solo[hub.variant]),
                                              http.client.HTTPConnection("127.0.0.1", hub.port, timeout=30),
                                              hub.token)
            results[hub.variant]["warm_proxy_ms"] = common.percentiles([s * 1000 for s in warm])
        await asyncio.sleep(2)  # idle, as most servers are
        mem = common.memory(instance)
        results["nbhosting"]["server_pss_kib"] = mem["units_pss_kib"]
        results["nbhosting"]["server_processes"] = mem["processes"]
        for hub in hubs:
            results[hub.variant]["server_pss_kib"] = pss_kib(hub.server_pids(solo[hub.variant]))
            results[hub.variant]["hub_and_proxy_pss_kib"] = pss_kib(sandbox.unit_pids(hub.unit))
        await systemd.stop_instance(instance)
        for hub in hubs:
            await loop.run_in_executor(None, hub.stop_server, solo[hub.variant])

        # 20 at once, each system in turn.
        results["nbhosting"]["twenty_at_once"] = await common.at_once(systemd, CROWD)
        for hub in hubs:
            results[hub.variant]["twenty_at_once"] = await loop.run_in_executor(None, crowd, hub)

        # Open -> first cell result, a new student each time, interleaved.
        # One browser for all (bench/firstresult.py); run -1: each site's first open, not counted.
        firsts = {key: [] for key in samples}
        for i in range(-1, common.FIRST_RUNS):
            student, phases = f"peer-first-{RUN}-{i}", {}
            await loop.run_in_executor(None, first_result, common.first_result_url(student), phases)
            if i >= 0:
                firsts["nbhosting"].append(phases)
            await systemd.stop_instance(Instance(common.COURSE, student))
            for hub in hubs:
                name, phases = f"{hub.tag}f{i + 1}-{RUN}", {}
                await loop.run_in_executor(None, first_result, f"{hub.url}/hub/login?student={name}", phases)
                if i >= 0:
                    firsts[hub.variant].append(phases)
                await loop.run_in_executor(None, hub.stop_server, name)
        for key, runs in firsts.items():
            results[key]["first_result_s"] = common.first_result_summary(runs)
    finally:
        await systemd.close()
        for hub in hubs:
            hub.stop()
    for key, measures in samples.items():
        for measure, values in measures.items():
            results[key][measure] = common.percentiles(values)
    versions = sandbox.run([f"{install}/asis/bin/python", "-m", "pip", "list", "--format=json"]).stdout
    wanted = ("jupyterhub", "jupyterhub-systemdspawner", "jupyter_server", "notebook", "ipykernel",
              "rfc3987-syntax")
    return {
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "when": time.strftime("%Y-%m-%d %H:%M")},
        "peer_versions": {p["name"]: p["version"] for p in json.loads(versions) if p["name"] in wanted},
        "proxy_version": json.loads((HERE / "package.json").read_text())["dependencies"],
        **results,
    }


MEASURES = (
    ("cold start, request to /api/status 200, p50", lambda r: r["cold_s"]["p50"], "{:.2f} s"),
    ("host CPU per cold start, p50", lambda r: r["cold_cpu_s"]["p50"], "{:.2f} s"),
    ("20 students at once, each start, p95", lambda r: r["twenty_at_once"]["start_s"]["p95"], "{:.1f} s"),
    ("warm request through the proxy, p50", lambda r: r["warm_proxy_ms"]["p50"], "{:.2f} ms"),
    ("one idle server, PSS", lambda r: r["server_pss_kib"] / 1024, "{:.0f} MiB"),
    ("open -> first cell result (new student), p50", lambda r: r["first_result_s"]["p50"], "{:.2f} s"),
)


def table(results: dict) -> str:
    lines = [
        "| measure | JupyterHub | nbhosting | ratio | JupyterHub, rfc3987-syntax removed | ratio |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, value, form in MEASURES:
        ours, asis, norfc = (value(results[k]) for k in ("nbhosting", "asis", "norfc"))
        name = name.replace("20", str(results["asis"]["twenty_at_once"]["count"]), 1) if "at once" in name else name
        lines.append(f"| {name} | {form.format(asis)} | {form.format(ours)} | {ours / asis:.2f} "
                     f"| {form.format(norfc)} | {ours / norfc:.2f} |")
    versions = ", ".join(f"{k} {v}" for k, v in results["peer_versions"].items())
    runs = ", ".join(f"{what} {results['nbhosting'][key]['n']}" for what, key in (
        ("cold starts", "cold_s"), ("warm requests", "warm_proxy_ms"), ("first results", "first_result_s")))
    lines += ["", f"runs of each: {runs}; ratio: nbhosting / JupyterHub. JupyterHub: {versions}; configurable-http-proxy "
              f"{results['proxy_version']['configurable-http-proxy']}. Hub and proxy PSS apart: "
              f"{results['asis']['hub_and_proxy_pss_kib'] / 1024:.0f} MiB"]
    for key in ("nbhosting", "asis", "norfc"):
        steps = results[key]["first_result_s"].get("phases_p50", {})
        lines.append(f"{LABELS[key]}, open -> first result, p50 of each step: "
                     + ", ".join(f"{step} {seconds:.2f} s" for step, seconds in steps.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench-peer: run as root (make bench-peer)")
    if sys.argv[1:] == ["--table"]:
        print(table(json.loads(RESULTS.read_text())))
        sys.exit(0)
    if len(sys.argv) != 2:
        sys.exit("usage: python -m bench.peer INSTALL (the folder bench/peer/install printed)")
    results = asyncio.run(main(sys.argv[1]))
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\nwritten to {RESULTS}")
