"""The statistics pages in the sandbox: a course seeded with a known data set
in the event store, its stats page in a real browser (every plot drawn, its
marks counted in the SVG, a screenshot kept in tests/artifacts/stats-*.png),
and the numbers of each plot's CSV worked out again here from the store's
events (`nbh events`), without stats.py. Who may not see them gets 403, 404
or the login page, and no data."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import re
import statistics
import uuid
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone

import httpx
import pytest
from selenium.webdriver.common.by import By

from devtools import sandbox as nbh_sandbox
from nbhosting import stats

from .browser_helpers import ARTIFACTS, log_in
from .conftest import COURSE_NOTEBOOKS, nbh
from .staff_helpers import Staff, add_account, fresh_name, logged_in

pytestmark = pytest.mark.sandbox

SITE = nbh_sandbox.SITE_URL
STAFF_SITE = nbh_sandbox.STAFF_URL  # the staff pages' own origin
DB = "/var/lib/nbhosting/events/events.db"
# Days long past, where nothing but this data set is (the sampler's own
# samples of the host are all of today).
FIRST, LAST = date(2026, 3, 2), date(2026, 3, 8)
RANGE = f"from={FIRST}&to={LAST}"
STUDENTS = 260  # past 100: the heatmap bins them, 3 to a column
GONE = "gone/removed.ipynb"  # opened, then no longer in the course
ORDER = sorted(COURSE_NOTEBOOKS)


def at(day: date, seconds: float) -> float:
    return datetime.combine(day, datetime.min.time(), timezone.utc).timestamp() + seconds


def data_set(course: str, seed: int = 11) -> list[dict]:
    """Opens, closes, starts, culls, failures, refusals and samples over the
    range, some just outside it (never counted), as the follower stores them."""
    rng = random.Random(seed)
    notebooks = [*ORDER, GONE]
    found = []

    def event(when, kind, student=None, notebook=None, fields=None, of=course):
        found.append({"time": when, "event": kind, "course": of, "student": student, "notebook": notebook,
                      "fields": fields or {}})

    for number in range(STUDENTS):
        student = f"stud{number:04d}"
        for _ in range(rng.randint(1, 4)):
            day = FIRST + timedelta(days=rng.randrange(7))
            moment = at(day, rng.randrange(3600, 80000))
            latency = round(rng.lognormvariate(0.5, 0.8), 3)
            event(moment, "start", student, fields={"image": "img"})
            event(moment + 2, "ready", student, fields={"start_seconds": str(latency)})
            notebook = rng.choice(notebooks)
            for repeat in range(rng.randint(1, 3)):
                event(moment + 3 + repeat, "open", student, notebook, {"copied": "no"})
            if rng.random() < 0.8:
                event(moment + 100, "close", student, notebook, {"duration_seconds": str(rng.randint(30, 5000))})
            if rng.random() < 0.3:
                event(moment + 200, "cull", student, fields={"idle_seconds": "1800"})
        if rng.random() < 0.05:
            event(at(FIRST + timedelta(days=rng.randrange(7)), 50), "refused", student, fields={"status": "403"})
    event(at(FIRST + timedelta(days=3), 60), "failure", "stud0001", fields={"result": "signal"})
    event(at(FIRST + timedelta(days=5), 70), "full", "stud0002", ORDER[0], {"status": "503"})
    for minute in range(0, 3 * 1440, 10):  # 3 days of samples, every 10 minutes
        when = at(FIRST + timedelta(days=2), minute * 60)
        event(when, "sample", fields={"scope": "course", "servers": str(rng.randint(0, 30)),
                                      "kernels": str(rng.randint(0, 40)), "busy_kernels": str(rng.randint(0, 5))})
        event(when, "sample", fields={
            "scope": "host", "servers": str(rng.randint(30, 60)), "kernels": str(rng.randint(40, 90)),
            "busy_kernels": str(rng.randint(0, 9)), "load1": f"{rng.random() * 4:.2f}",
            "mem_available_bytes": str(rng.randint(2, 30) << 30), "mem_total_bytes": str(32 << 30),
            "workspaces_free_bytes": str(rng.randint(100, 200) << 30),
            "containers_free_bytes": str(rng.randint(50, 60) << 30)}, of=None)
    # outside the range: never counted
    event(at(FIRST, -10), "open", "early", ORDER[0])
    event(at(LAST + timedelta(days=1), 10), "open", "late", ORDER[0])
    return sorted(found, key=lambda e: e["time"])


SEED = """import json, sys
from pathlib import Path
from nbhosting import store
from nbhosting.store import Event
db = store.open_writer(Path(sys.argv[1]))
cursor, cursor_time = store.followed(db) or ("seed", 0)
events = [Event(e["time"], e["event"], e["course"], e["student"], e["notebook"], e["fields"]) for e in json.load(sys.stdin)]
store.append(db, events, cursor, cursor_time)  # the follower's cursor as it was
db.close()
"""


FORGET = """import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
course, since, until = sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
with db:
    for table in ("events", "samples"):
        db.execute(f"DELETE FROM {table} WHERE course = ? OR (course IS NULL AND time >= ? AND time < ?)",
                   (course, since, until))
    db.execute("DELETE FROM students WHERE course = ?", (course,))
db.close()
"""


def with_the_follower_stopped(sandbox, argv: list[str], **kwargs) -> None:
    """Write the store as the follower would, the follower stopped meanwhile
    (the cursor it saved stays)."""
    sandbox.run("systemctl", "stop", "nbh-events.service")
    try:
        nbh_sandbox.run(argv, **kwargs)
    finally:
        sandbox.run("systemctl", "start", "nbh-events.service")


@pytest.fixture(scope="module")
def seeded(sandbox):
    """The course and its data set; afterwards, the data set forgotten (its
    days are long past: a retention of a few days would find them)."""
    course = f"stats-{uuid.uuid4().hex[:6]}"
    sandbox.make_course(course)
    python = nbh_sandbox.python()
    with_the_follower_stopped(sandbox, [python, "-c", SEED, DB], input=json.dumps(data_set(course)))
    yield course
    with_the_follower_stopped(sandbox, [python, "-c", FORGET, DB, course, str(at(FIRST, -86400)),
                                        str(at(LAST, 2 * 86400))])


# -- the same numbers, worked out from the store's events --------------------------

def stored(sandbox, *args: str, since: date | None = FIRST, until: date = LAST + timedelta(days=1)) -> list[dict]:
    """The store's events of the range (the page's days), as `nbh events` prints them."""
    result = nbh(sandbox, "events", "--format", "json", *(("--since", f"{since}T00:00+00:00") if since else ()),
                 "--until", f"{until}T00:00+00:00", *args, user="nbh")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def days_between(first: str, last: str) -> list[str]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [(start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]


def in_order(found: set[str]) -> list[str]:
    return [n for n in ORDER if n in found] + sorted(found - set(ORDER))


def expected_tables(events: list[dict], host: list[dict], before: list[dict]) -> dict[str, list[list]]:
    """Each plot's rows from the range's events, the host's samples, and the
    course's opens before the range (its students so far)."""
    opens = [e for e in events if e["event"] == "open"]
    per_pair = Counter((e["student"], e["notebook"]) for e in opens)
    tables = {}

    readers = Counter(notebook for _, notebook in per_pair)
    opened = Counter(e["notebook"] for e in opens)
    tables["students_per_notebook"] = [[n, readers[n], opened[n]] for n in in_order(set(readers) | set(ORDER))]

    active = defaultdict(set)
    for e in opens:
        active[e["time"][:10]].add(e["student"])
    first_day = {}
    for e in [*before, *opens]:
        first_day.setdefault(e["student"], e["time"][:10])
    new = Counter(first_day.values())
    rows, total = [], sum(1 for day in first_day.values() if day < FIRST.isoformat())
    for day in days_between(min(active), max(active)):
        total += new[day]
        rows.append([day, len(active[day]), new[day], total])
    tables["students_per_day"] = rows

    read = Counter(student for student, _ in per_pair)
    opens_of = Counter(e["student"] for e in opens)
    ranked = sorted(read, key=lambda s: (-read[s], -opens_of[s], s))
    size = math.ceil(len(ranked) / 100)
    rows = []
    for notebook in in_order(set(readers) | set(ORDER)):
        for start in range(0, len(ranked), size):
            group = ranked[start:start + size]
            counts = [per_pair[s, notebook] for s in group]
            rows.append([notebook, start + 1, start + len(group), len(group), sum(1 for c in counts if c),
                         sum(counts), round(sum(counts) / len(group), 3)])
    tables["heatmap"] = rows

    tables["notebooks_per_student"] = [[k, v] for k, v in sorted(Counter(read.values()).items())]

    durations = defaultdict(list)
    for e in events:
        if e["event"] == "close":
            durations[e["notebook"]].append(float(e["duration_seconds"]))
    tables["sessions_per_notebook"] = [[n, len(durations[n]), statistics.median(durations[n]), max(durations[n])]
                                       for n in in_order(set(durations))]

    def averaged(samples: list[dict], names: tuple[str, ...]) -> list[list]:
        times = [epoch(s["time"]) for s in samples]
        span = max(1.0, (max(times) - min(times)) / 499)
        buckets = defaultdict(list)
        for when, sample in zip(times, samples):
            buckets[int((when - min(times)) / span)].append(sample)
        return [[datetime.fromtimestamp(min(times) + b * span, timezone.utc).isoformat(timespec="seconds"),
                 *(statistics.fmean(float(s[name]) for s in buckets[b]) for name in names)] for b in sorted(buckets)]

    course_samples = [e for e in events if e["event"] == "sample"]
    names = ("servers", "kernels", "busy_kernels")
    tables["servers_over_time"] = ([[t, "course", *v] for t, *v in averaged(course_samples, names)]
                                   + [[t, "host", *v] for t, *v in averaged(host, names)])
    tables["host_over_time"] = averaged(host, ("load1", "mem_available_bytes", "mem_total_bytes",
                                               "workspaces_free_bytes", "containers_free_bytes"))

    bounds = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, math.inf)
    starts = Counter(next(b for b in bounds if float(e["start_seconds"]) <= b) for e in events if e["event"] == "ready")
    tables["start_latency"] = [["+Inf" if b == math.inf else b, starts[b]] for b in bounds]

    kinds = ("cull", "failure", "refused", "full")
    incidents = Counter((e["time"][:10], e["event"]) for e in events if e["event"] in kinds)
    found_days = sorted({day for day, _ in incidents})
    tables["incidents_per_day"] = [[day, *(incidents[day, kind] for kind in kinds)]
                                   for day in days_between(found_days[0], found_days[-1])]
    return tables


def cells(text: str) -> tuple[list[str], list[list]]:
    """The CSV's header and rows, numbers as numbers."""
    header, *rows = list(csv.reader(io.StringIO(text)))

    def value(cell: str):
        try:
            number = float(cell)
        except ValueError:
            return cell
        return number if math.isfinite(number) else cell  # "+Inf", a bucket's bound
    return header, [[value(cell) for cell in row] for row in rows]


def same(found: list[list], expected: list[list]) -> bool:
    return len(found) == len(expected) and all(
        len(a) == len(b) and all(x == pytest.approx(y, rel=1e-9) if isinstance(y, (int, float)) and not
                                 isinstance(y, bool) else x == y for x, y in zip(a, b))
        for a, b in zip(found, expected))


# -- in a browser -------------------------------------------------------------------

# SVG marks of the plot itself (not of its legend or axes), per kind of mark.
MARKS = """return Object.fromEntries(["rect", "line", "symbol"].map(kind => [kind,
  arguments[0].querySelectorAll(`svg g.mark-${kind}.role-mark > path`).length]))"""
HEADERS = {
    "students_per_notebook": ["notebook", "students", "opens"],
    "students_per_day": ["day", "active", "new", "cumulative"],
    "heatmap": ["notebook", "first_rank", "last_rank", "students", "readers", "opens", "opens_per_student"],
    "notebooks_per_student": ["notebooks_read", "students"],
    "sessions_per_notebook": ["notebook", "sessions", "median_s", "longest_s"],
    "servers_over_time": ["time", "scope", "servers", "kernels", "busy_kernels"],
    "host_over_time": ["time", "load1", "mem_available_bytes", "mem_total_bytes", "workspaces_free_bytes",
                       "containers_free_bytes"],
    "start_latency": ["le_seconds", "starts"],
    "incidents_per_day": ["day", "culls", "failures", "refusals", "full"],
}
SERIES = {"students_per_day": 3, "servers_over_time": 6, "host_over_time": 5}  # lines drawn


def test_a_staff_member_sees_every_plot_drawn_from_its_csv(sandbox, seeded, browser):
    name = fresh_name("statsteacher")
    add_account(name)
    assert nbh(sandbox, "staff", "grant", name, seeded).returncode == 0
    browser.diagnostics.append(("nbh-web", lambda: sandbox.run(
        "journalctl", "--no-pager", "-o", "cat", "-n", "30", "--unit", "nbh-web.service", check=False).stdout))
    log_in(browser, name)
    browser.driver.get(f"{STAFF_SITE}/staff/courses/{seeded}")
    browser.driver.find_element(By.ID, "stats").click()
    browser.wait("the stats page", lambda: browser.driver.current_url.endswith(f"/staff/courses/{seeded}/stats"))
    browser.driver.get(f"{STAFF_SITE}/staff/courses/{seeded}/stats?{RANGE}")

    charts = {e.get_attribute("data-plot"): e for e in browser.driver.find_elements(By.CSS_SELECTOR, "div.chart")}
    assert list(charts) == list(stats.PLOTS)
    browser.wait("every plot drawn", lambda: all(e.get_attribute("data-rendered") for e in charts.values()))
    height = browser.js("return document.body.scrollHeight")
    browser.driver.set_window_size(1400, min(height + 100, 12000))
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.driver.save_screenshot(str(ARTIFACTS / "stats-page.png"))
    not_drawn = {plot: e.get_attribute("data-rendered") for plot, e in charts.items()
                 if e.get_attribute("data-rendered") != "yes"}
    if not_drawn:
        browser.fail(f"plots not drawn: {not_drawn}")
    assert not [line for line in browser.console_lines() if "Content Security Policy" in line]

    expected = expected_tables(stored(sandbox, "--course", seeded),
                               [e for e in stored(sandbox, "--event", "sample") if e["course"] is None],
                               stored(sandbox, "--course", seeded, "--event", "open", since=None, until=FIRST))
    for plot, chart in charts.items():
        link = browser.driver.find_element(By.ID, f"csv-{plot}").get_attribute("href")
        text = browser.js("return fetch(arguments[0]).then(r => r.text())", link)
        header, rows = cells(text)
        assert header == HEADERS[plot], plot
        assert rows, plot
        assert same(rows, expected[plot]), (plot, rows[:5], expected[plot][:5])
        assert int(chart.get_attribute("data-rows")) == len(rows), plot
        marks = browser.js(MARKS, chart)
        if plot in SERIES:
            assert marks["line"] == SERIES[plot], (plot, marks)
        elif plot == "sessions_per_notebook":
            assert marks["rect"] == 2 * len(rows), (plot, marks)  # median and longest
        elif plot == "incidents_per_day":
            assert marks["rect"] == 4 * len(rows), (plot, marks)  # culls, failures, refusals, full
        else:
            assert marks["rect"] == len(rows), (plot, marks)  # a bar or a cell a row
    # the heatmap: 260 students in columns of 3, every notebook a row
    assert len(expected["heatmap"]) == (len(ORDER) + 1) * math.ceil(STUDENTS / 3)


def test_who_may_not_see_a_courses_stats_gets_no_data(sandbox, seeded):
    other = f"other-{uuid.uuid4().hex[:6]}"
    sandbox.make_course(other)
    teacher = fresh_name("otherteacher")
    add_account(teacher)
    assert nbh(sandbox, "staff", "grant", teacher, other).returncode == 0
    pages = [f"/staff/courses/{seeded}/stats", *(f"/staff/courses/{seeded}/stats/{p}.csv?{RANGE}" for p in stats.PLOTS)]

    client = logged_in(teacher)  # staff of another course: 403, and nothing of the data
    for path in pages:
        response = client.get(path)
        assert response.status_code == 403, (path, response.status_code)
        assert "stud0" not in response.text and "text/csv" not in response.headers["Content-Type"]
    assert client.get(f"/staff/courses/{other}/stats").status_code == 200

    anonymous = Staff()  # a student: no session
    for path in pages:
        response = anonymous.get(path)
        assert response.status_code == 303 and response.headers["Location"].startswith("/staff/login?"), path

    add_account("admin", "--admin")
    admin = logged_in("admin")
    assert admin.get(f"/staff/courses/{seeded}/stats").status_code == 200
    assert admin.get("/staff/courses/no-such-course/stats").status_code == 404
    assert admin.get(f"/staff/courses/{seeded}/stats/no_such_plot.csv").status_code == 404
    assert admin.get(f"/staff/courses/{seeded}/stats?from=2026-03-09&to=2026-03-01").status_code == 400
    response = admin.get(f"/staff/courses/{seeded}/stats/heatmap.csv?{RANGE}")
    assert response.status_code == 200 and response.headers["Content-Type"] == "text/csv; charset=utf-8"
    # the toggle: the staff's own workspaces counted, in the page's form and every CSV link
    page = admin.get(f"/staff/courses/{seeded}/stats?{RANGE}&staff=1").text
    assert 'name="staff" value="1" checked' in page
    assert len(re.findall(r'href="[^"]*\.csv\?[^"]*staff=1"', page)) == len(stats.PLOTS), page
    assert 'value="1" checked' not in admin.get(f"/staff/courses/{seeded}/stats?{RANGE}").text


def test_the_plotting_libraries_come_from_the_host_cached_for_long(sandbox, seeded):
    add_account("admin", "--admin")
    page = logged_in("admin").get(f"/staff/courses/{seeded}/stats").text
    scripts = [line.split('src="', 1)[1].split('"', 1)[0] for line in page.splitlines() if "<script src=" in line]
    assert [s.split("?")[0] for s in scripts] == ["/_static/vega.min.js", "/_static/vega-lite.min.js",
                                                  "/_static/vega-embed.min.js"]
    for script in scripts:
        assert "?v=" in script  # the content's hash: a new version is a new URL
        response = httpx.get(SITE + script.replace("&amp;", "&"), timeout=60)
        assert response.status_code == 200 and len(response.content) > 10000, script
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert "javascript" in response.headers["Content-Type"]
        assert response.headers["Content-Encoding"] == "gzip"  # httpx asks for it, and unpacks it
