"""Events kept: the journal followed into the store by nbh-events.service, the
sampler (nbh-sample.service), close, `nbh events` and /metrics, against the
sandbox's real journald, systemd, Jupyter and Chromium."""

from __future__ import annotations

import http.client
import os
import time
from datetime import datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools import sandbox as nbh_sandbox
from nbhosting import store
from nbhosting.names import Instance

from .browser_helpers import (NOTEBOOK, SOURCE, enter_iframe, entry_url, first_cell_source, lms_page,
                              wait_for_kernel_idle)
from .conftest import nbh
from .sandbox_helpers import DB, read_store, run_code, run_unit, settled, stored, wait_for
from .web_helpers import NOTEBOOK as ENTRY, entry, get, signed

pytestmark = pytest.mark.sandbox

METRICS = ("127.0.0.1", 9184)
NEW_UNITS = ("nbh-events.service", "nbh-sample.service", "nbh-sample.timer", "nbh-metrics.socket",
             "nbh-metrics.service")


def test_units_verify_and_are_hardened(sandbox):
    result = sandbox.run("systemd-analyze", "verify", "--man=no", *NEW_UNITS, check=False)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    for unit, most in (("nbh-events.service", 1.5), ("nbh-metrics.service", 1.5), ("nbh-sample.service", 3)):
        shown = sandbox.run("systemd-analyze", "security", "--no-pager", unit).stdout
        score = float(shown.rsplit(f"Overall exposure level for {unit}: ", 1)[1].split()[0])
        print(f"{unit}: {score}")
        assert score <= most, shown


def test_the_store_is_the_front_ends_to_read_and_nobody_elses_to_write(sandbox):
    assert sandbox.run("systemctl", "is-active", "nbh-events.service").stdout.strip() == "active"
    settled(sandbox)
    assert sandbox.run("stat", "-c", "%U:%G %a", "/var/lib/nbhosting/events", DB).stdout.split("\n")[:2] == \
        ["nbh-events:nbh 2750", "nbh-events:nbh 640"]
    readable = nbh(sandbox, "events", "--limit", "1", user="nbh")
    assert readable.returncode == 0, readable.stderr
    write = sandbox.run("python3", "-c", f"import sqlite3; sqlite3.connect({DB!r}).execute('DELETE FROM events')",
                        user="nbh", check=False)
    assert write.returncode != 0 and "readonly" in write.stderr, write.stderr[-300:]
    sandbox.run("useradd", "--no-create-home", "eve", check=False)
    other = nbh(sandbox, "events", user="eve")
    assert other.returncode == 1 and other.stderr.startswith("nbh: ") and len(other.stderr.splitlines()) == 1, \
        other.stderr
    version = read_store(sandbox, "PRAGMA user_version")
    assert version == [(store.VERSION,)]


def events_of(sandbox, student: str) -> list[dict]:
    return [e for e in stored(sandbox, "--student", student) if e["event"] != "sample"]


def test_a_known_sequence_is_stored_exactly_in_order(sandbox, systemd, course, student, cull_config):
    alice, bob = Instance(course, f"{student}a"), Instance(course, f"{student}b")
    url = entry(course, ENTRY, alice.student)            # start, ready, open (copied)
    entry(course, ENTRY, alice.student)                  # open (not copied)
    entry(course, ENTRY, bob.student)                    # start, ready, open (copied)
    forged = signed(f"/ipythonExercice/{course}/{ENTRY}/{alice.student}").replace("signature=", "signature=0")
    assert get(forged).status == 403                     # refused
    cull_config("idle_timeout = 1\ngrace = 1\n")
    time.sleep(2)
    run_unit(sandbox, "nbh-cull.service")                # stop, cull (each)
    assert get(url, referer=None).status == 200          # revival of alice's open tab: start, ready
    systemd.stop_instance(alice)                         # stop
    settled(sandbox)

    notebook = f"{ENTRY}.ipynb"
    expected = {
        alice.student: ["start", "ready", "open", "open", "refused", "stop", "cull", "start", "ready", "stop"],
        bob.student: ["start", "ready", "open", "stop", "cull"],
    }
    for name, kinds in expected.items():
        found = events_of(sandbox, name)
        assert [e["event"] for e in found] == kinds, (name, found)
        journal = [e for e in sandbox.journal(f"NBH_STUDENT={name}") if e["NBH_EVENT"] != "sample"]
        assert [e["NBH_EVENT"] for e in journal] == kinds  # the journal said the same, in the same order
        times = [datetime.fromisoformat(e["time"]).timestamp() for e in found]
        assert times == sorted(times)
        # the journal's own times, to the millisecond that `nbh events` shows (rounded)
        assert all(abs(round(t * 1000) - int(e["__REALTIME_TIMESTAMP"]) / 1000) <= 1 for t, e in zip(times, journal))
        assert all(e["course"] == course for e in found)
        opens = [e for e in found if e["event"] == "open"]
        assert all(e["notebook"] == notebook for e in opens)
        assert opens[0]["copied"] == "yes" and opens[-1]["copied"] == ("no" if name == alice.student else "yes")
        for ready in (e for e in found if e["event"] == "ready"):
            assert 0 < float(ready["start_seconds"]) < 60, ready
        (cull,) = (e for e in found if e["event"] == "cull")
        assert int(cull["idle_seconds"]) >= 1 and "kernel" in cull["reason"]
    (refused,) = (e for e in events_of(sandbox, alice.student) if e["event"] == "refused")
    assert refused["status"] == "403" and refused["notebook"] == ENTRY and "url" in refused
    # the filters agree
    assert [e["event"] for e in stored(sandbox, "--student", alice.student, "--event", "open")] == ["open", "open"]
    assert stored(sandbox, "--student", bob.student, "--since", "1h", "--event", "cull")[0]["student"] == bob.student
    assert stored(sandbox, "--student", bob.student, "--until", "2000-01-01") == []
    table = nbh(sandbox, "events", "--student", bob.student, "--event", "open", user="nbh").stdout.splitlines()
    assert len(table) == 1 and table[0].endswith(f'open    {course} {bob.student} {notebook} {{"copied":"yes"}}')


def stored_burst(sandbox, tag: str) -> tuple[int, int]:
    return read_store(sandbox, "SELECT count(*), count(DISTINCT json_extract(fields, '$.seq')) FROM events "
                      "WHERE event = 'gc' AND json_extract(fields, '$.burst') = ?", tag)[0]


def test_a_follower_killed_in_a_burst_loses_nothing_and_doubles_nothing(sandbox):
    tag = f"b{os.getpid()}-{time.monotonic_ns()}"
    # 10,000 events, in ten bursts of 1,000: the sender's own unit is not
    # rate-limited by journald (LogRateLimitIntervalSec=0), as nbh-web's is not.
    script = (f"import time\nfrom nbhosting import events\nfor n in range(10000):\n"
              f"    events.journal_only('gc', 'burst', NBH_BURST={tag!r}, NBH_SEQ=str(n))\n"
              f"    if n % 1000 == 999: time.sleep(0.3)\n")
    python = nbh_sandbox.python()
    sandbox.run("systemd-run", "--unit", f"nbh-burst-{os.getpid()}", "--collect", "-p", "LogRateLimitIntervalSec=0",
                python, "-c", script)
    wait_for(lambda: stored_burst(sandbox, tag)[0] >= 1500, timeout=60, every=0.02, what="the burst to be stored")
    sandbox.run("systemctl", "kill", "--signal=SIGKILL", "nbh-events.service")
    at_kill = stored_burst(sandbox, tag)[0]
    assert 0 < at_kill < 10000, at_kill
    wait_for(lambda: sandbox.run("systemctl", "is-active", f"nbh-burst-{os.getpid()}", check=False).stdout.strip()
             != "active", timeout=60, what="the burst to end")
    sandbox.run("systemctl", "start", "nbh-events.service")
    assert len(sandbox.journal(f"NBH_BURST={tag}")) == 10000  # journald kept them all
    settled(sandbox, timeout=60)
    assert stored_burst(sandbox, tag) == (10000, 10000)
    restarts = sandbox.run("systemctl", "show", "-P", "NRestarts", "nbh-events.service").stdout.strip()
    print(f"stored at the kill: {at_kill}; restarts: {restarts}")


# Entries in journald's native protocol, every field length-prefixed (binary
# values too), to the journal's socket: what a student's code can send from
# its container, and a local account from the host.
SEND = r"""
import os, socket, struct, sys

def send(fields):
    data = b"".join(k.encode() + b"\n" + struct.pack("<Q", len(v)) + v + b"\n" for k, v in fields)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as journal:
        journal.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        journal.sendto(data, "/run/systemd/journal/socket")

def event(name, tag, *more, message=True):
    fields = [("SYSLOG_IDENTIFIER", b"nbhosting"), ("NBH_EVENT", name.encode()), ("NBH_TAG", tag.encode()), *more]
    send(fields + ([("MESSAGE", b"forged " + name.encode())] if message else []))
"""
HOSTILE = SEND + r"""
tag = @TAG@
event("ready", tag, ("NBH_START_SECONDS", b"99999999999999999999"))  # the verified one
event("ready", tag, ("NBH_START_SECONDS", b"1e999"))
event("share", tag, ("NBH_NOTEBOOK", b"x" * 150_000))  # huge
event("reset", tag, ("NBH_NOTEBOOK", bytes(range(256))))  # binary
event("stop", tag, *[(f"NBH_F{i}", str(i).encode()) for i in range(10000)])  # 10,000 fields
event("share", tag, message=False)  # no MESSAGE
event("staff-settings", tag, ("NBH_STAFF", b"admin"), ("NBH_COURSE", b"any"))
event("open", tag, ("NBH_COURSE", b"any"), ("NBH_STUDENT", b"victim"))
if os.fork() == 0:  # a child that sends, and exits at once: journald may tie it to no unit
    event("open", tag, ("NBH_COURSE", b"any"), ("NBH_STUDENT", b"victim"))
    os._exit(0)
os.wait()
print("sent")
"""


def test_no_entry_stops_the_store_and_none_is_believed_beyond_its_sender(sandbox, systemd, course, student):
    instance = Instance(course, student)
    tag = f"h{os.getpid()}-{time.monotonic_ns()}"
    restarts = sandbox.run("systemctl", "show", "-P", "NRestarts", "nbh-events.service").stdout.strip()
    try:
        # from a student's code, in their kernel
        systemd.start_instance(instance)
        assert run_code(sandbox, systemd, instance, HOSTILE.replace("@TAG@", repr(tag))).strip() == "sent"
        # from a local account on the host, and a child of it that exits at once
        assert sandbox.run("python3", "-c", HOSTILE.replace("@TAG@", repr(tag)), user="nobody").stdout.strip() == "sent"
        # then a student opens a notebook: the store has it
        assert get(signed(f"/ipythonExercice/{course}/w1/w1-s1-c1-intro/{student}"), referer=None).status in (200, 302)
        settled(sandbox, timeout=60)
    finally:
        systemd.stop_instance(instance)
    assert sandbox.run("systemctl", "is-active", "nbh-events.service").stdout.strip() == "active"
    assert sandbox.run("systemctl", "show", "-P", "NRestarts", "nbh-events.service").stdout.strip() == restarts
    assert [e["event"] for e in stored(sandbox, "--student", student, "--event", "open")] == ["open"]
    kept = read_store(sandbox, "SELECT event, course, student, seconds FROM events "
                      "WHERE json_extract(fields, '$.tag') = ? ORDER BY id", tag)
    # the student's own events, about their own pair, the bad number not in its column
    assert {row[0] for row in kept} <= {"ready", "share", "reset", "stop"}, kept
    assert ("ready", course, student, None) in kept
    assert all(row[1:3] == (course, student) for row in kept), kept
    log = sandbox.run("journalctl", "--no-pager", "-o", "cat", "-u", "nbh-events.service").stdout
    assert "start_seconds not a number, kept as text" in log


def metrics() -> dict[tuple[str, tuple], float]:
    connection = http.client.HTTPConnection(*METRICS, timeout=30)
    connection.request("GET", "/metrics")
    response = connection.getresponse()
    assert response.status == 200
    found = {}
    for family in text_string_to_metric_families(response.read().decode()):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_metrics_parse_and_move_with_events(sandbox, systemd, course, student):
    settled(sandbox)
    before = metrics()
    for name in ("nbh_running_servers", "nbh_store_lag_seconds", "nbh_start_seconds_count",
                 "nbh_entries_total", "nbh_culls_total", "nbh_failures_total", "nbh_starts_total"):
        assert any(key[0] == name for key in before), name
    assert get(f"/ipythonExercice/{course}/{ENTRY}/a;b").status == 400
    entry(course, ENTRY, student)
    systemd.stop_instance(Instance(course, student))
    settled(sandbox)
    after = metrics()

    def moved(name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert moved("nbh_refusals_total", status="400") == 1
    assert moved("nbh_entries_total", outcome="refused", status="400") == 1
    assert moved("nbh_entries_total", outcome="opened", status="302") == 1
    assert moved("nbh_starts_total") == 1 and moved("nbh_events_total", event="stop") == 1
    assert moved("nbh_start_seconds_count") == 1 and moved("nbh_start_seconds_sum") > 0
    assert moved("nbh_enrolled_students", course=course) == 1
    # No lag once the store has caught up; an event written since (the
    # sampler's, every minute) is caught up with in turn.
    wait_for(lambda: metrics()["nbh_store_lag_seconds", ()] == 0, what="no lag behind the journal")
    # loopback only, and not on the public site
    listen = sandbox.run("systemctl", "show", "-P", "Listen", "nbh-metrics.socket").stdout.strip()
    assert listen == "127.0.0.1:9184 (Stream)"
    assert get("/metrics").status == 404


def test_the_sampler_records_courses_and_the_host(sandbox, systemd, course, student):
    instance = Instance(course, student)
    systemd.start_instance(instance)
    sandbox.api(instance, "api/kernels", method="POST", body={"name": "python3"})
    assert sandbox.run("systemctl", "show", "-P", "Unit", "nbh-sample.timer").stdout.strip() == "nbh-sample.service"
    run_unit(sandbox, "nbh-sample.service")
    settled(sandbox)
    (mine,) = stored(sandbox, "--event", "sample", "--course", course, "--since", "1m")[-1:]
    assert int(mine["servers"]) >= 1 and int(mine["kernels"]) >= 1 and mine["scope"] == "course"
    host = [e for e in stored(sandbox, "--event", "sample", "--since", "1m") if e["scope"] == "host"][-1]
    assert int(host["servers"]) >= int(mine["servers"])
    assert float(host["load1"]) >= 0 and 0 < int(host["mem_available_bytes"]) <= int(host["mem_total_bytes"])
    assert int(host["workspaces_free_bytes"]) > 0 and int(host["containers_free_bytes"]) > 0
    systemd.stop_instance(instance)


def test_closing_the_tab_gives_a_close_event_with_its_duration(sandbox, systemd, course, student, browser):
    instance = Instance(course, student)
    browser.driver.get("about:blank")
    first = browser.driver.current_window_handle
    with lms_page(sandbox, entry_url(sandbox, instance, NOTEBOOK)) as lms_url:
        browser.driver.switch_to.new_window("tab")
        browser.driver.get(lms_url)
        enter_iframe(browser)
        browser.wait("the notebook", lambda: SOURCE in first_cell_source(browser))
        wait_for_kernel_idle(browser, sandbox, instance)
        run_unit(sandbox, "nbh-sample.service")  # sees the tab
        time.sleep(3)
        browser.driver.close()  # the tab
        browser.driver.switch_to.window(first)
        wait_for(lambda: all(s["kernel"]["connections"] == 0 for s in sandbox.api(instance, "api/sessions")),
                 what="Jupyter to see the websocket closed")
        closed_at = time.time()
        log = run_unit(sandbox, "nbh-sample.service")
    assert f"closed {instance.path} {NOTEBOOK} after " in log, log
    settled(sandbox)
    (opened,) = stored(sandbox, "--student", student, "--event", "open")
    (close,) = stored(sandbox, "--student", student, "--event", "close")
    assert close["notebook"] == NOTEBOOK and close["reason"] == "last tab closed"
    since_open = closed_at - datetime.fromisoformat(opened["time"]).timestamp()
    # from the open to the sample that saw the tab gone
    assert since_open - 1 <= int(close["duration_seconds"]) <= since_open + 30, (close, since_open)
    systemd.stop_instance(instance)


@pytest.fixture
def events_config(sandbox, setup_config):
    yield lambda text: setup_config("[events]\n" + text)
    setup_config("")  # the defaults again, before the follower reads them
    sandbox.run("systemctl", "restart", "nbh-events.service")


def test_the_sample_period_and_the_retention_follow_the_configuration(sandbox, events_config):
    events_config("sample_period = 30\nkeep_days = 10\n")
    timers = sandbox.run("systemctl", "show", "-P", "TimersMonotonic", "nbh-sample.timer").stdout
    assert "OnUnitActiveUSec=30s" in timers, timers
    # an event of 11 days ago, as the store would have kept it; the follower
    # forgets it when it starts, and keeps the others
    sandbox.run("systemctl", "stop", "nbh-events.service")
    old = time.time() - 11 * 86400
    insert = ("import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); db.execute(\"INSERT INTO events "
              "(time, event, course, student) VALUES (?, 'open', 'old-course', 'old-student')\", (float(sys.argv[2]),));"
              " db.commit()")
    sandbox.run("python3", "-c", insert, DB, str(old))
    kept = read_store(sandbox, "SELECT count(*) FROM events WHERE time > ?", str(old + 1))[0][0]
    assert read_store(sandbox, "SELECT count(*) FROM events WHERE course = 'old-course'") == [(1,)]
    sandbox.run("systemctl", "start", "nbh-events.service")
    wait_for(lambda: read_store(sandbox, "SELECT count(*) FROM events WHERE course = 'old-course'") == [(0,)],
             what="the old event to be forgotten")
    assert read_store(sandbox, "SELECT count(*) FROM events WHERE time > ?", str(old + 1))[0][0] >= kept
    log = sandbox.run("journalctl", "--no-pager", "-o", "cat", "-u", "nbh-events.service").stdout
    assert "removed 1 events older than 10 days (events.keep_days)" in log
