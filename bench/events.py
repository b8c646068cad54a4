"""Benchmarks of the event store: ``make bench`` runs them after the others;
``python -m bench.events`` runs them alone.

- a store seeded with 1 million events (5,000 students, 100 notebooks, 3
  months, one course, samples every minute), then `nbh events --course C
  --since 7d` (the command, start to end, output to /dev/null) and the
  statistics of that course over the 3 months (every stats.py function, in
  this process); and the stats page as a browser loads it, through nbh-web's
  own handlers (in this process, on loopback; the session taken as given):
  the page, then its 9 CSVs at once, to the last byte, for the page's
  default range (the last 30 days) and for the 3 months;
- the follower's throughput, on one core (CPUAffinity=), in the sandbox:
  20,000 events waiting in the journal, read into a fresh store;
- its lag behind the journal (nbh-events.service as installed) while 500
  events a second are logged for 30 seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

from nbhosting import config, stats, store
from devtools import sandbox
from nbhosting.store import Event

from .common import percentiles

COURSE = "bench-events"
STUDENTS, NOTEBOOKS, DAYS, TOTAL = 5000, 100, 91, 1_000_000
RUNS = int(os.environ.get("NBH_BENCH_EVENTS_RUNS", "7"))
REPO = Path(__file__).resolve().parent.parent


def history(now: float, seed: int = 11) -> list[Event]:
    """A course's 3 months: a sample of it and of the host every minute, and
    students' visits (start, ready, opens, close, stop, sometimes a cull),
    reading the notebooks in order, each at their own pace."""
    rng = random.Random(seed)
    begin = now - DAYS * 86400
    found = []
    for minute in range(DAYS * 1440):
        at = begin + minute * 60
        found.append(Event(at, "sample", COURSE, None, None, {"scope": "course", "servers": str(rng.randint(0, 80)),
                                                              "kernels": str(rng.randint(0, 120)), "busy_kernels": "3",
                                                              "memory_bytes": str(rng.randint(0, 8 << 30))}))
        found.append(Event(at, "sample", None, None, None, {
            "scope": "host", "servers": "90", "kernels": "130", "busy_kernels": "4", "load1": f"{rng.random() * 4:.2f}",
            "mem_total_bytes": str(64 << 30), "mem_available_bytes": str(rng.randint(8, 60) << 30),
            "workspaces_free_bytes": str(500 << 30), "containers_free_bytes": str(200 << 30)}))
    notebooks = [f"w{n // 10 + 1}/nb{n:03d}.ipynb" for n in range(NOTEBOOKS)]
    joined = {s: begin + rng.random() * DAYS * 86400 * 0.8 for s in range(STUDENTS)}
    progress = dict.fromkeys(range(STUDENTS), 0)
    while len(found) < TOTAL:
        student = rng.randrange(STUDENTS)
        name = f"student{student:05d}"
        at = joined[student] + rng.random() * (now - joined[student])
        latency = rng.lognormvariate(0.3, 0.4)
        notebook = notebooks[min(progress[student], NOTEBOOKS - 1)]
        progress[student] += rng.random() < 0.6
        found += [Event(at, "start", COURSE, name, None, {"image": "img"}),
                  Event(at + latency, "ready", COURSE, name, None, {"start_seconds": f"{latency:.3f}"}),
                  Event(at + latency + 0.1, "open", COURSE, name, notebook, {"copied": "no"}),
                  Event(at + 900, "close", COURSE, name, notebook, {"duration_seconds": str(rng.randint(60, 3600))}),
                  Event(at + 2700, "cull" if rng.random() < 0.5 else "stop", COURSE, name, None, {"idle_seconds": "1800"})]
        if rng.random() < 0.02:
            found.append(Event(at + 1, "refused", COURSE, name, notebook, {"status": "403"}))
    found = found[:TOTAL]
    found.sort(key=lambda e: e.time)
    return found


def seed(path: Path) -> float:
    """The seeded store; returns the seconds it took (as the follower appends, in batches)."""
    events = history(time.time())
    start = time.perf_counter()
    db = store.open_writer(path)
    for i in range(0, len(events), 10000):
        store.append(db, events[i:i + 10000], f"seed-{i}", events[i].time)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return time.perf_counter() - start


def nbh_events(path: Path) -> tuple[list[float], int]:
    """`nbh events --course C --since 7d`, the whole command, output discarded."""
    argv = [str(REPO / ".venv/bin/nbh"), "events", "--store", str(path), "--course", COURSE, "--since", "7d"]
    walls = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
        walls.append(time.perf_counter() - start)
    lines = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.count("\n")
    return walls, lines


def stats_page(path: Path) -> tuple[list[float], dict]:
    """Every plot's data for the course over the 3 months, as the page asks for it."""
    walls, each = [], {name: [] for name in stats.PLOTS}
    for _ in range(RUNS):
        db = store.open_reader(path)
        start = time.perf_counter()
        for name, plot in stats.PLOTS.items():
            began = time.perf_counter()
            plot(db, COURSE, None, None).csv()
            each[name].append(time.perf_counter() - began)
        walls.append(time.perf_counter() - start)
        db.close()
    return walls, {name: percentiles(s)["p50"] for name, s in each.items()}


def serve_stats_pages(path: Path) -> tuple[str, callable]:
    """nbh-web's stats handlers on a loopback port, reading `path`, a session
    taken as given (an admin's); the base URL, and what stops it."""
    import tornado.httpserver  # noqa: PLC0415 -- only this measure needs them
    import tornado.web  # noqa: PLC0415

    from nbhosting import staff  # noqa: PLC0415
    from nbhosting.web import stats as stats_pages  # noqa: PLC0415
    from nbhosting.web.staff import TEMPLATES  # noqa: PLC0415

    store.DEFAULT_PATH = path  # what the handlers open
    admin = staff.Account("bench", "", True, 0)
    handlers = []
    for url, handler in stats_pages.routes():
        given = type(handler.__name__, (handler,), {"get_current_user": lambda self: admin,
                                                    "course": lambda self, name: SimpleNamespace(name=name)})
        handlers.append((url, given))
    app = tornado.web.Application(handlers, frontend=SimpleNamespace(settings=config.Config()), staff=None,
                                  template_path=str(TEMPLATES), cookie_secret="bench")
    started, box = threading.Event(), {}

    def run():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        server = tornado.httpserver.HTTPServer(app)
        server.listen(0, "127.0.0.1")
        box["port"] = next(iter(server._sockets.values())).getsockname()[1]
        box["loop"] = loop
        started.set()
        loop.run_forever()
        server.stop()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait()

    def stop():
        box["loop"].call_soon_threadsafe(box["loop"].stop)
        thread.join()
    return f"http://127.0.0.1:{box['port']}", stop


def stats_page_http(path: Path, query: str) -> list[float]:
    """The page, then its CSVs 6 at a time (a browser's connections to a
    host), as its script asks for them; the wall time to the last byte."""
    base, stop = serve_stats_pages(path)
    page = f"{base}/staff/courses/{COURSE}/stats?{query}"
    csvs = [f"{base}/staff/courses/{COURSE}/stats/{plot}.csv?{query}" for plot in stats.PLOTS]

    def get(url: str) -> int:
        # the staff pages answer on their own origin only (web.staff_url)
        request = urllib.request.Request(url, headers={"Host": urlsplit(config.Web().staff_origin).netloc})
        with urllib.request.urlopen(request, timeout=120) as response:
            assert response.status == 200, url
            return len(response.read())
    walls = []
    try:
        with ThreadPoolExecutor(6) as pool:
            for _ in range(RUNS):
                start = time.perf_counter()
                get(page)
                list(pool.map(get, csvs))
                walls.append(time.perf_counter() - start)
    finally:
        stop()
    return walls


def day(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).date().isoformat()


# -- in the sandbox: the follower -------------------------------------------

SEND = """import sys, time
from nbhosting import events
tag, count, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
start = time.monotonic()
for n in range(count):
    if rate:
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    events.journal_only("gc", "bench", NBH_BENCH=tag, NBH_SEQ=str(n))
"""

THROUGHPUT = """import sys, time
from pathlib import Path
from nbhosting import follower, store
db = store.open_writer(Path(sys.argv[1]))
reader = follower.open_journal(None)
wall, cpu = time.perf_counter(), time.process_time()
read = follower.catch_up(db, reader)
print(read, time.perf_counter() - wall, time.process_time() - cpu)
"""

LAG = """import json, sqlite3, sys, time
db = sqlite3.connect("file:/var/lib/nbhosting/events/events.db?mode=ro", uri=True)
tag, seconds = sys.argv[1], float(sys.argv[2])
lags, end = [], time.time() + seconds
while time.time() < end:
    row = db.execute("SELECT time FROM followed").fetchone()
    lags.append(time.time() - row[0])
    time.sleep(0.1)
print(json.dumps(lags))
"""


def python_in_sandbox(script: str, *args: str, properties: tuple[str, ...] = (), timeout: float = 300) -> str:
    argv = ["systemd-run", "--wait", "--pipe", "--quiet", "--collect", "-p", "LogRateLimitIntervalSec=0",
            *[p for prop in properties for p in ("-p", prop)], str(REPO / ".venv/bin/python"), "-c", script, *args]
    return sandbox.run(argv, timeout=timeout).stdout


def follower_throughput(count: int = 20000) -> dict:
    tag = f"throughput-{os.getpid()}"
    python_in_sandbox(SEND, tag, str(count), "0")
    path = f"/var/lib/nbhosting/events/bench-{os.getpid()}.db"
    # one core: the follower alone, pinned
    read, wall, cpu = python_in_sandbox(THROUGHPUT, path, properties=("CPUAffinity=0",)).split()
    sandbox.run(["rm", "-f", path, f"{path}-wal", f"{path}-shm"])
    read, wall, cpu = int(read), float(wall), float(cpu)
    return {"events": read, "wall_s": wall, "cpu_s": cpu, "events_per_s": read / wall,
            "events_per_cpu_s": read / cpu}


def follower_lag(rate: float = 500, seconds: float = 30) -> dict:
    tag = f"lag-{os.getpid()}"
    sender = f"nbh-bench-sender-{os.getpid()}"
    sandbox.run(["systemd-run", "--unit", sender, "--collect", "-p", "LogRateLimitIntervalSec=0",
                 str(REPO / ".venv/bin/python"), "-c", SEND, tag, str(int(rate * seconds)), str(rate)])
    time.sleep(1)
    lags = json.loads(python_in_sandbox(LAG, tag, str(seconds - 2)))
    while sandbox.run(["systemctl", "is-active", sender], check=False).stdout.strip() == "active":
        time.sleep(0.5)
    return {"rate": rate, "seconds": seconds, "lag_s": percentiles(lags), "max_s": max(lags)}


def run(with_sandbox: bool = True) -> dict:
    results = {}
    with tempfile.TemporaryDirectory(prefix="nbh-bench-events-") as folder:
        path = Path(folder) / "events.db"
        results["seed_s"] = seed(path)
        results["store_mib"] = path.stat().st_size / 2**20
        walls, lines = nbh_events(path)
        results["nbh_events_7d_s"] = {**percentiles(walls), "events": lines}
        walls, each = stats_page(path)
        results["stats_page_s"] = {**percentiles(walls), "each_p50_s": each}
        now = time.time()
        results["stats_page_http_30d_s"] = percentiles(stats_page_http(path, ""))
        results["stats_page_http_3_months_s"] = percentiles(
            stats_page_http(path, f"from={day(now - DAYS * 86400)}&to={day(now)}"))
    if with_sandbox:
        sandbox.up()
        results["follower"] = follower_throughput()
        results["lag"] = follower_lag()
    return results


def table(results: dict) -> list[str]:
    def row(name, value, target=""):
        return f"| {name} | {value} | {target} |"
    q, s = results["nbh_events_7d_s"], results["stats_page_s"]
    lines = [
        "",
        f"event store: {TOTAL:,} events, {STUDENTS:,} students, {NOTEBOOKS} notebooks, {DAYS} days "
        f"({results['store_mib']:.0f} MiB, seeded in {results['seed_s']:.0f} s)",
        "",
        "| measure | p50 (p95) | target |",
        "| --- | --- | --- |",
        row(f"nbh events --course C --since 7d ({q['events']:,} events)", f"{q['p50']:.2f} s ({q['p95']:.2f} s)",
            "< 1 s"),
        row("stats page data, server side (9 plots, 3 months, one after the other)",
            f"{s['p50']:.2f} s ({s['p95']:.2f} s)", "< 2 s"),
        *[row(f"  {name}", f"{seconds * 1000:.0f} ms", "") for name, seconds in s["each_p50_s"].items()],
    ]
    for key, what in (("stats_page_http_30d_s", "the last 30 days (the default)"),
                      ("stats_page_http_3_months_s", "3 months")):
        if key in results:
            h = results[key]
            lines.append(row(f"stats page through nbh-web's handlers, page and 9 CSVs, {what}",
                             f"{h['p50']:.2f} s ({h['p95']:.2f} s)", "< 2 s"))
    if "follower" in results:
        f, lag = results["follower"], results["lag"]
        lines += [
            row("follower, one core", f"{f['events_per_s']:,.0f} events/s ({f['events_per_cpu_s']:,.0f} per CPU s)",
                ">= 2,000 /s"),
            row(f"store lag behind the journal at {lag['rate']:.0f} events/s",
                f"{lag['lag_s']['p50']:.2f} s ({lag['lag_s']['p95']:.2f} s), max {lag['max_s']:.2f} s", "< 5 s"),
        ]
    return lines


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench: run as root (make bench)")
    found = run(with_sandbox="--no-sandbox" not in sys.argv)
    print(json.dumps(found, indent=2))
    print("\n".join(table(found)))
