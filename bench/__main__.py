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
- 20 servers started at once;
- the LMS entry through nginx and nbh-web, with signed URLs (the default
  mode), and the warm entry of each authorization mode side by side
  (``--entry`` alone, written with the last run's first result);
- open -> first cell result: a new student's Chromium from the entry URL
  to the output of print(6 * 7) (bench/firstresult.py; ``--first`` alone);
- how long a push to a course's repository takes to be checked out with
  nbh-autopull.timer at its shortest period (bench/courses.py);
- a warm LTI 1.3 launch (login, then the id_token's POST) beside a warm
  signed entry, from a fake platform on loopback (tests/lti_platform.py);
- the event store (bench/events.py);
- the File menu's share, and the cold open beside an earlier image
  (bench/menus.py, `python -m bench --menus [BASELINE_TAR]`);
- PID 1's CPU per visit with 10, 5,000 and 50,000 students enrolled, the
  50,000 before and after the dormant ones are unloaded (bench/dormant.py);
- per-student origins beside the single origin (bench/origins.py,
  ``--origins`` alone);
- a warm entry during a login flood and with 100 slow readers of a shared
  page (bench/bounded.py, ``--bounded`` alone);
- a notebook with neighbours (data, figures, a module) beside one without,
  cold and warm (bench/mappings.py, ``--mappings`` alone);
- a workspace on a disk of its own beside a folder: first open, stop, open
  again, warm entry (bench/disks.py, ``--disks`` alone);
- the other Debian release beside the host's: cold start, 20 at once, PID
  1's CPU per visit with 10 and 50,000 enrolled (bench/releases.py,
  ``--releases`` alone).
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import importlib
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlencode, urlsplit

from nbhosting import config, podman
from devtools import sandbox
from nbhosting.names import Instance
from nbhosting.systemd import Systemd

from .common import (COLD_RUNS, COURSE, ENTRY_NOTEBOOK, FIRST_RUNS, PER_CLIENT, RESULTS, RUN, WARM_RUNS, at_once,
                     breakdown_summary, cold_start, entry_path, entry_rate_cpu, fetch, first_result_summary,
                     first_result_url, in_sandbox, lms_client, make_course, memory, open_notebook, percentiles, warm,
                     write_key)


async def cold_starts(systemd: Systemd, instance: Instance) -> tuple[list[float], list[float]]:
    await systemd.start(instance.socket)
    runs = [await cold_start(systemd, instance) for _ in range(COLD_RUNS)]
    return [wall for wall, _ in runs], [cpu for _, cpu in runs]


# -- the LMS entry, through nginx and nbh-web (its client in bench/common.py) --

async def first_results(systemd: Systemd) -> dict:
    """Open -> first cell result (bench/firstresult.py), each time a new
    student: from a returning browser (its caches warm), then from first-ever
    browsers (an empty profile each), with where the seconds went (issue 26).
    The returning browser's figures are the key's own, as before."""
    from .firstresult import first_result  # noqa: PLC0415 -- selenium, only when measured
    loop = asyncio.get_running_loop()
    measured = {}
    for kind, fresh in (("returning", False), ("first_ever", True)):
        runs, breakdowns = [], []
        for i in range(0 if fresh else -1, FIRST_RUNS):  # -1: the browser's first open, not counted
            student, phases, breakdown = f"first-{RUN}-{kind[0]}{i}", {}, {}
            await loop.run_in_executor(None, functools.partial(
                first_result, first_result_url(student), phases, breakdown, fresh=fresh))
            if i >= 0:
                runs.append(phases)
                breakdowns.append(breakdown)
            await systemd.stop_instance(Instance(COURSE, student))
        measured[kind] = {**first_result_summary(runs), "breakdown_p50": breakdown_summary(breakdowns)}
    return {**measured["returning"], "first_ever": measured["first_ever"]}


def breakdown_rows(row, label: str, figures: dict) -> list[str]:
    """Where a first result's seconds went, as table rows."""
    if "breakdown_p50" not in figures:
        return []
    seen = figures["breakdown_p50"]
    steps = ", ".join(f"{step} {seconds:.2f}" for step, seconds in seen["steps_s"].items())
    work = ", ".join(f"{name.removesuffix('_s')} {seconds:.2f}" for name, seconds in seen["main_thread"].items())
    return [row(f"  {label}: where the seconds went (s)", steps, ""),
            row(f"  {label}: the page's main thread (s)", work, ""),
            row(f"  {label}: scripts from the network / all (after the load event)",
                f"{seen['scripts_from_network']:.0f} / {seen['scripts']:.0f} ({seen['scripts_after_load']:.0f}), "
                f"{seen['scripts_kib'] / 1024:.1f} MiB; {seen['api_calls']:.0f} API calls over "
                f"{seen['api_span_s']:.2f} s", "")]


async def entries(systemd: Systemd) -> dict:
    make_course()
    instance = Instance(COURSE, f"entry-{RUN:07d}-warm")  # long enough for referer mode
    loop = asyncio.get_running_loop()
    cold = []
    for _ in range(COLD_RUNS):
        await systemd.stop_instance(instance)
        await asyncio.sleep(1)
        cold.append(await loop.run_in_executor(None, open_notebook, instance.student))
    warm = [await loop.run_in_executor(None, open_notebook, instance.student) for _ in range(100)]
    await systemd.stop_instance(instance)

    students = [f"arriving-{RUN}-{i}" for i in range(20)]
    for student in students:
        await systemd.stop_instance(Instance(COURSE, student))
    with ThreadPoolExecutor(len(students)) as pool:
        began = time.perf_counter()
        crowd = list(pool.map(open_notebook, students))
        all_in = time.perf_counter() - began
    await asyncio.gather(*(systemd.stop_instance(Instance(COURSE, s)) for s in students))

    # throughput: warm entries (the redirect only), 4 clients, 5 seconds
    await systemd.start_instance(instance)
    await loop.run_in_executor(None, open_notebook, instance.student)
    rate = await loop.run_in_executor(None, entry_rate, instance.student, 4, 5.0)
    cpu = await loop.run_in_executor(None, entry_rate_cpu, instance.student)
    modes = await loop.run_in_executor(None, entry_by_mode, instance.student)
    lti_launch = await loop.run_in_executor(None, lti_beside_signed, instance.student)
    await systemd.stop_instance(instance)
    await systemd.stop_instance(Instance(COURSE, lti_launch.pop("student")))
    return {
        "cold_s": percentiles(cold),
        "warm_ms": {k: v * 1000 if k != "n" else v for k, v in percentiles(warm).items()},
        "twenty_arriving": {"all_in_s": all_in, "each_s": percentiles(crowd)},
        "warm_entries_per_s": rate,
        "front_end_cpu_ms_per_entry": cpu,
        "warm_ms_by_mode": modes,
        "warm_ms_lti": lti_launch,
    }


def entry_rate(student: str, clients: int, seconds: float) -> float:
    path = entry_path(student)
    deadline = time.perf_counter() + seconds

    def client(_) -> int:
        connection = lms_client()
        count = 0
        while time.perf_counter() < deadline:
            if count and count % PER_CLIENT == 0:
                connection.close()
                connection = lms_client()
            status, _, _ = fetch(connection, path, sandbox.LMS_ORIGINS[0] + "/")
            assert status == 302, status
            count += 1
        connection.close()
        return count

    with ThreadPoolExecutor(clients) as pool:
        return sum(pool.map(client, range(clients))) / seconds


def set_auth(mode: str) -> None:
    """nbh-web reads its configuration when it starts; the socket starts it again."""
    text = sandbox.CONFIG + (f'auth = "{mode}"\n' if mode != config.Web().auth else "")
    sandbox.path(str(config.DEFAULT_PATH)).write_text(text)
    sandbox.run(["systemctl", "stop", "nbh-web.service"])
    sandbox.run(["systemctl", "reset-failed", "nbh-web.service"])


def entry_by_mode(student: str, runs: int = WARM_RUNS) -> dict:
    """Warm entries (the redirect only), referer and signed, interleaved in one
    run of nbh-web in referer mode, which takes both: a signed URL is judged
    by its signature alone, the same code as in signed mode."""
    assert len(student) >= config.Web().min_student_id, student
    signed, plain = entry_path(student), f"/ipythonExercice/{COURSE}/{ENTRY_NOTEBOOK}/{student}"
    referer = sandbox.LMS_ORIGINS[0] + "/"
    set_auth("referer")
    try:
        connection = lms_client()
        samples = {"referer": [], "signed": []}
        for i in range(runs + 20):
            if i and i % (PER_CLIENT // 2) == 0:
                connection.close()
                connection = lms_client()
            for mode, path in (("referer", plain), ("signed", signed)):
                start = time.perf_counter()
                status, _, _ = fetch(connection, path, referer if mode == "referer" else None)
                if status != 302:
                    raise RuntimeError(f"entry, {mode}: {status}")
                if i >= 20:  # after the warm-up
                    samples[mode].append(time.perf_counter() - start)
        connection.close()
    finally:
        set_auth(config.Web().auth)
    return {mode: {k: v * 1000 if k != "n" else v for k, v in percentiles(s).items()} for mode, s in samples.items()}


def lti_launch(connection: http.client.HTTPConnection, platform, sub: str) -> tuple[float, float, str]:
    """One LTI launch: nbh-web's time for the login and for the launch's POST,
    without the platform's own (its authorization, its signature); and where it leads."""
    start = time.perf_counter()
    status, location, _ = fetch(connection, "/lti/login?" + urlencode(platform.login_query(sub, "bench")))
    login = time.perf_counter() - start
    if status != 302:
        raise RuntimeError(f"LTI login: {status}")
    query = parse_qs(urlsplit(location).query)
    id_token = platform.id_token(query["nonce"][0], sub, {"course": COURSE, "notebook": ENTRY_NOTEBOOK})
    start = time.perf_counter()
    connection.request("POST", "/lti/launch", urlencode({"id_token": id_token, "state": query["state"][0]}),
                       {"Content-Type": "application/x-www-form-urlencoded"})
    response = connection.getresponse()
    response.read()
    if response.status not in (200, 302):
        raise RuntimeError(f"LTI launch: {response.status}")
    return login, time.perf_counter() - start, response.getheader("Location") or ""


def lti_beside_signed(signed_student: str, runs: int = WARM_RUNS) -> dict:
    """Warm LTI launches (login, then launch, to the redirect) and warm signed
    entries, interleaved in one run of nbh-web, from a fake platform on loopback."""
    from tests.lti_platform import CLIENT_ID, DEPLOYMENT_ID, FakePlatform  # noqa: PLC0415

    platform = FakePlatform().start()
    name = f"b{RUN % 10**9}"  # a name per issuer, and the platform's port is new
    sandbox.run(["nbh", "lti", "add", name, "--issuer", platform.url, "--client-id", CLIENT_ID,
                 "--deployment-id", DEPLOYMENT_ID, "--auth-url", platform.url + "/auth",
                 "--jwks-url", platform.url + "/jwks", "--courses", "*"])
    sub = f"bench-{RUN}"
    try:
        connection = lms_client(timeout=120)
        _, _, location = lti_launch(connection, platform, sub)  # cold: the keys, the start
        if not location:  # the "starting" page: the server is started on its own
            time.sleep(5)
        samples = {"signed": [], "lti": [], "lti_login": [], "lti_launch": []}
        for i in range(runs + 20):
            if i and i % (PER_CLIENT // 3) == 0:
                connection.close()
                connection = lms_client()
            start = time.perf_counter()
            status, _, _ = fetch(connection, entry_path(signed_student))
            signed = time.perf_counter() - start
            login, launch, location = lti_launch(connection, platform, sub)
            if status != 302 or not location:
                raise RuntimeError(f"warm entries: signed {status}, LTI to {location!r}")
            if i >= 20:  # after the warm-up
                for key, value in (("signed", signed), ("lti", login + launch), ("lti_login", login),
                                   ("lti_launch", launch)):
                    samples[key].append(value)
        connection.close()
    finally:
        sandbox.run(["nbh", "lti", "remove", name])
        platform.stop()
    results = {key: {k: v * 1000 if k != "n" else v for k, v in percentiles(s).items()}
               for key, s in samples.items()}
    return {**results, "student": platform.student(sub, name)}


async def main() -> dict:
    sandbox.up()
    make_course()
    bus = f"unix:path={sandbox.path('/run/dbus/system_bus_socket')}"
    systemd = await Systemd.connect(bus)
    try:
        instance = Instance(COURSE, f"solo-{RUN}")
        walls, cpus = await cold_starts(systemd, instance)
        token = sandbox.server_token(instance)
        url = instance.base_url + "api/status"
        chain = warm(url, sandbox.UnixHTTPConnection(str(sandbox.path(instance.listen_socket))), token)
        direct = warm(url, sandbox.UnixHTTPConnection(str(sandbox.path(instance.upstream_socket))),
                      token)
        nginx = warm(url, http.client.HTTPConnection("127.0.0.1", 8780, timeout=30), token)
        await asyncio.sleep(2)  # idle, as most servers are
        mem = memory(instance)
        await systemd.stop_instance(instance)
        crowd = await at_once(systemd, 20)
        entry = await entries(systemd)
        entry["first_result_s"] = await first_results(systemd)
        from . import idle  # noqa: PLC0415 -- it imports this module's helpers
        idle_results = await idle.run(systemd)
        from . import courses  # noqa: PLC0415 -- it imports this module's helpers
        course_results = await asyncio.get_running_loop().run_in_executor(None, courses.run)
        from . import events as event_store  # noqa: PLC0415 -- it imports this module's helpers
        event_results = event_store.run()
        from . import staff as staff_pages  # noqa: PLC0415 -- the same
        staff_results = await staff_pages.run(systemd)
        from . import dormant  # noqa: PLC0415 -- the same
        dormant_results = await dormant.measure(systemd)
    finally:
        await systemd.close()
    driver = sandbox.run(podman.argv(["info", "--format", "{{.Store.GraphDriverName}}"])).stdout.strip()
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
        "entry": entry,
        "idle": idle_results,
        "courses": course_results,
        "events": event_results,
        "staff_pages": staff_results,
        "dormant": dormant_results,
    }


def table(results: dict) -> str:
    def row(name, value, target=""):
        return f"| {name} | {value} | {target} |"
    cold, cpu = results["cold_start_s"], results["cold_start_cpu_s"]
    chain, direct, nginx = results["warm_socket_chain_ms"], results["warm_direct_ms"], results["warm_nginx_ms"]
    mem, crowd, entry = results["memory"], results["twenty_at_once"], results["entry"]
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
        row("entry URL to notebook page, cold", f"{entry['cold_s']['p50']:.2f} s ({entry['cold_s']['p95']:.2f} s)",
            "< 2 s"),
        row("entry URL to notebook page, warm",
            f"{entry['warm_ms']['p50']:.1f} ms ({entry['warm_ms']['p95']:.1f} ms)", "< 10 ms"),
        row("20 students arriving at once", f"all in {entry['twenty_arriving']['all_in_s']:.1f} s, each "
            f"{entry['twenty_arriving']['each_s']['p50']:.1f} s ({entry['twenty_arriving']['each_s']['p95']:.1f} s)",
            "p95 < 10 s"),
        *([row("open -> first cell result (42), new student",
                f"{entry['first_result_s']['p50']:.2f} s ({entry['first_result_s']['p95']:.2f} s)", "")]
          if "first_result_s" in entry else []),
        *breakdown_rows(row, "returning browser", entry.get("first_result_s", {})),
        *([row("open -> first cell result (42), new student, first-ever browser",
               f"{first['p50']:.2f} s ({first['p95']:.2f} s)", "")]
          if (first := entry.get("first_result_s", {}).get("first_ever")) else []),
        *breakdown_rows(row, "first-ever browser", entry.get("first_result_s", {}).get("first_ever", {})),
        row("warm entries (redirect), 4 clients", f"{entry['warm_entries_per_s']:.0f} /s", ""),
        row("front end CPU per warm entry", f"{entry['front_end_cpu_ms_per_entry']:.2f} ms "
            f"(= {1000 / entry['front_end_cpu_ms_per_entry']:.0f} /s on one core)", ""),
    ]
    if "warm_ms_by_mode" in entry:
        lines += [row(f"warm entry (redirect), {mode} mode", f"{s['p50']:.2f} ms ({s['p95']:.2f} ms)", "")
                  for mode, s in entry["warm_ms_by_mode"].items()]
    if "warm_ms_lti" in entry:
        lti = entry["warm_ms_lti"]
        lines += [row(what, f"{s['p50']:.2f} ms ({s['p95']:.2f} ms)", "")
                  for what, s in (("warm signed entry (redirect), interleaved with LTI", lti["signed"]),
                                  ("warm LTI launch: login, then launch POST (redirect)", lti["lti"]),
                                  ("warm LTI launch: the login alone", lti["lti_login"]),
                                  ("warm LTI launch: the launch POST alone", lti["lti_launch"]))]
    # the parts measured by a module of their own: key in the results -> module
    for key, part in (("idle", "idle"), ("courses", "courses"), ("events", "events"),
                      ("staff_pages", "staff"), ("dormant", "dormant"), ("kernel", "kernel"),
                      ("origins", "origins"), ("bounded", "bounded"), ("mappings", "mappings")):
        if key in results:
            lines += importlib.import_module(f".{part}", __package__).table(results[key])
    return "\n".join(lines)


async def lti_only() -> dict:
    """`python -m bench --lti`: the LTI launch beside the signed entry alone, not written."""
    sandbox.up()
    make_course()
    systemd = await Systemd.connect(f"unix:path={sandbox.path('/run/dbus/system_bus_socket')}")
    try:
        instance = Instance(COURSE, f"entry-{RUN:07d}-warm")
        await systemd.start_instance(instance)
        results = await asyncio.get_running_loop().run_in_executor(None, lti_beside_signed, instance.student)
        await systemd.stop_instance(instance)
        await systemd.stop_instance(Instance(COURSE, results.pop("student")))
    finally:
        await systemd.close()
    return results


async def first_only() -> dict:
    """`python -m bench --first`: open -> first cell result alone."""
    return await in_sandbox(first_results)


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench: run as root (make bench)")
    if sys.argv[1:] == ["--lti"]:
        print(json.dumps(asyncio.run(lti_only()), indent=2))
        sys.exit(0)
    if sys.argv[1:2] == ["--menus"]:
        from . import menus  # noqa: PLC0415
        print(json.dumps(menus.main(sys.argv[2:]), indent=2))
        sys.exit(0)
    if sys.argv[1:] == ["--courses"]:
        from . import courses  # noqa: PLC0415
        sandbox.up()
        print("\n".join(courses.table(courses.run())))
        sys.exit(0)
    if sys.argv[1:] == ["--dormant"]:  # written under its own key, the others' kept
        from . import dormant  # noqa: PLC0415
        figures = asyncio.run(dormant.run())
        write_key("dormant", figures)
        print("\n".join(dormant.table(figures)))
        print(f"\nwritten to {RESULTS} (key dormant)")
        sys.exit(0)
    if sys.argv[1:] == ["--kernel"]:  # the kernel pre-start, off vs on (bench/kernel.py), into the results
        from . import kernel  # noqa: PLC0415
        figures = asyncio.run(kernel.run())
        write_key("kernel", figures)
        print("\n".join(kernel.table(figures)))
        sys.exit(0)
    if sys.argv[1:] == ["--statics"]:  # Notebook's files, each server's own vs nginx's shared copy
        from . import statics  # noqa: PLC0415
        figures = asyncio.run(statics.run())
        write_key("statics", figures)
        print("\n".join(statics.table(figures)))
        sys.exit(0)
    if sys.argv[1:] == ["--mappings"]:  # a notebook with neighbours beside one without (bench/mappings.py)
        from . import mappings  # noqa: PLC0415
        figures = asyncio.run(mappings.run())
        write_key("mappings", figures)
        print("\n".join(mappings.table(figures)))
        sys.exit(0)
    if sys.argv[1:] == ["--disks"]:  # a workspace on a disk of its own beside a folder (bench/disks.py)
        from . import disks  # noqa: PLC0415
        figures = asyncio.run(disks.run())
        write_key("disks", figures)
        print("\n".join(disks.table(figures)))
        sys.exit(0)
    if sys.argv[1:] == ["--releases"]:  # each Debian release, side by side (bench/releases.py)
        from . import releases  # noqa: PLC0415
        figures = asyncio.run(releases.run())
        write_key("releases", figures)
        print("\n".join(releases.table(figures)))
        sys.exit(0)
    if sys.argv[1:] == ["--bounded"]:  # a warm entry under a login flood, slow readers (bench/bounded.py)
        from . import bounded  # noqa: PLC0415
        figures = asyncio.run(bounded.run())
        write_key("bounded", figures)
        print("\n".join(bounded.table(figures)))
        sys.exit(0)
    if sys.argv[1:] == ["--origins"]:  # per-student origins beside the single one (bench/origins.py)
        from . import origins  # noqa: PLC0415
        figures = asyncio.run(origins.run())
        write_key("origins", figures)
        print("\n".join(origins.table(figures)))
        sys.exit(0)
    if sys.argv[1:] == ["--entry"]:  # the entry's figures alone, into the results (the first result's kept)
        figures = asyncio.run(in_sandbox(entries))
        kept = json.loads(RESULTS.read_text()).get("entry", {}) if RESULTS.exists() else {}
        if "first_result_s" in kept:
            figures["first_result_s"] = kept["first_result_s"]
        write_key("entry", figures)
        print(json.dumps(figures, indent=2))
        sys.exit(0)
    if sys.argv[1:] == ["--first"]:  # open -> first cell result alone, into the entry's key
        figures = asyncio.run(first_only())
        write_key("entry", figures, part="first_result_s")  # the entry's other figures kept
        print(json.dumps(figures, indent=2))
        sys.exit(0)
    if sys.argv[1:] == ["--table"]:  # the table of the last run again
        print(table(json.loads(RESULTS.read_text())))
        sys.exit(0)
    if sys.argv[1:]:  # a typo (or --help) must not start the whole run
        sys.exit(f"bench: unknown {' '.join(sys.argv[1:])!r}: no argument for the whole run (make bench), "
                 "or one part's, as docs/development.md lists them")
    results = asyncio.run(main())
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\nwritten to {RESULTS}")
