"""The data behind a course's statistics: one function per plot.

Each takes the store (a read-only connection, store.open_reader), a course
and a time range (seconds since the epoch; None is unbounded) and returns a
Table: the rows the plot draws, and their CSV (Table.csv) for the link
behind it. Days are UTC days. Sessions, latencies and samples come from
the events' own fields (close: duration_seconds; ready: start_seconds;
sample: servers, kernels, ...).

Staff members' own workspaces (staff.<account>, "Open as myself") are not
students: by default no plot counts them (their opens are staff-open
events, their sessions, starts and incidents are left out); with
staff=True, every function counts them as students.
"""

from __future__ import annotations

import csv
import io
import math
import sqlite3
import statistics
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from . import courses, store
from .names import STAFF_PREFIX

FAR = 1e18  # an unbounded end of a range
DAY = 86400


@dataclass
class Table:
    columns: tuple[str, ...]
    rows: list[tuple]

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows(self.rows)
        return out.getvalue()


def _range(since: float | None, until: float | None) -> tuple[float, float]:
    return (-FAR if since is None else since), (FAR if until is None else until)


def _days_between(first: str, last: str) -> list[str]:
    day, end, found = datetime.fromisoformat(first), datetime.fromisoformat(last), []
    while day <= end:
        found.append(day.date().isoformat())
        day += timedelta(days=1)
    return found


def notebook_order(course: str) -> list[str]:
    """The course's notebooks in its own order, or none if it is not on this host."""
    try:
        return courses.notebooks(courses.load(course))
    except (courses.UnknownCourse, courses.CourseError, OSError):
        return []


def _ordered(found: set[str], order: list[str] | None) -> list[str]:
    """The course's order first, then notebooks no longer in it, sorted."""
    order = order or []
    known = set(order)
    return [n for n in order if n in found] + sorted(found - known)


# -- who reads what ---------------------------------------------------------

def _opened(staff: bool) -> str:
    """Which events are opens: a student's entry, and with staff, "Open as myself"."""
    return "event IN ('open', 'staff-open')" if staff else "event = 'open'"


def _students(staff: bool) -> str:
    """Whose events count: everyone's with staff, else no staff workspace's
    (an event of no student, a refusal, counts)."""
    return "1" if staff else f"(student IS NULL OR student NOT LIKE '{STAFF_PREFIX}%')"


def _opens(db: sqlite3.Connection, course: str, since: float | None, until: float | None,
           staff: bool = False) -> list[tuple]:
    """(student, notebook, opens) of the course in the range."""
    start, end = _range(since, until)
    return db.execute(
        f"SELECT student, notebook, count(*) FROM events WHERE course = ? AND {_opened(staff)} "
        "AND time >= ? AND time < ? AND notebook IS NOT NULL AND student IS NOT NULL "
        "GROUP BY student, notebook", (course, start, end)).fetchall()


def students_per_notebook(db, course: str, since=None, until=None, notebooks: list[str] | None = None,
                          staff: bool = False) -> Table:
    """Distinct students who opened each notebook, in the course's notebook order."""
    readers, opens = {}, {}
    for _, notebook, n in _opens(db, course, since, until, staff):
        readers[notebook] = readers.get(notebook, 0) + 1
        opens[notebook] = opens.get(notebook, 0) + n
    order = notebook_order(course) if notebooks is None else notebooks
    return Table(("notebook", "students", "opens"),
                 [(n, readers.get(n, 0), opens.get(n, 0)) for n in _ordered(set(readers) | set(order), order)])


def notebooks_per_student(db, course: str, since=None, until=None, staff: bool = False) -> Table:
    """Histogram: how many students read 1, 2, ... notebooks."""
    read = {}
    for student, _, _ in _opens(db, course, since, until, staff):
        read[student] = read.get(student, 0) + 1
    histogram = {}
    for count in read.values():
        histogram[count] = histogram.get(count, 0) + 1
    return Table(("notebooks_read", "students"), sorted(histogram.items()))


def students_per_day(db, course: str, since=None, until=None, staff: bool = False) -> Table:
    """Active students (who opened a notebook), new ones (their first open
    ever), and all students so far, for every day of the range with any."""
    start, end = _range(since, until)
    active = dict(db.execute(
        "SELECT date(time, 'unixepoch'), count(DISTINCT student) FROM events "
        f"WHERE course = ? AND {_opened(staff)} AND time >= ? AND time < ? GROUP BY 1", (course, start, end)))
    new = dict(db.execute(
        "SELECT date(first_time, 'unixepoch'), count(*) FROM students "
        "WHERE course = ? AND first_time >= ? AND first_time < ? GROUP BY 1", (course, start, end)))
    (before,) = db.execute("SELECT count(*) FROM students WHERE course = ? AND first_time < ?",
                           (course, start)).fetchone()
    days = sorted(set(active) | set(new))
    rows, total = [], before
    for day in _days_between(days[0], days[-1]) if days else []:
        total += new.get(day, 0)
        rows.append((day, active.get(day, 0), new.get(day, 0), total))
    return Table(("day", "active", "new", "cumulative"), rows)


def heatmap(db, course: str, since=None, until=None, notebooks: list[str] | None = None,
            columns: int = 100, staff: bool = False) -> Table:
    """Notebooks x students, coloured by opens. Students are sorted by how
    many notebooks they read (then opens, then name) and binned into at most
    `columns` groups of consecutive ranks, so 5,000 students stay readable:
    a cell is a notebook and a group, with how many of the group opened it
    and their opens per student."""
    per_student, cells = {}, {}
    for student, notebook, n in _opens(db, course, since, until, staff):
        read, opened = per_student.get(student, (0, 0))
        per_student[student] = (read + 1, opened + n)
        cells[student, notebook] = n
    ranked = sorted(per_student, key=lambda s: (-per_student[s][0], -per_student[s][1], s))
    size = max(1, math.ceil(len(ranked) / columns))
    groups = [ranked[i:i + size] for i in range(0, len(ranked), size)]
    order = notebook_order(course) if notebooks is None else notebooks
    rows = []
    for notebook in _ordered({n for _, n in cells} | set(order), order):
        for number, group in enumerate(groups):
            opens = [cells.get((student, notebook), 0) for student in group]
            rows.append((notebook, number * size + 1, number * size + len(group), len(group),
                         sum(1 for n in opens if n), sum(opens), round(sum(opens) / len(group), 3)))
    return Table(("notebook", "first_rank", "last_rank", "students", "readers", "opens", "opens_per_student"),
                 rows)


# -- sessions, starts, incidents --------------------------------------------

def sessions_per_notebook(db, course: str, since=None, until=None, notebooks: list[str] | None = None,
                          staff: bool = False) -> Table:
    """Sessions (open to close) per notebook: how many, median and longest, in seconds."""
    start, end = _range(since, until)
    durations = {}
    for notebook, seconds in db.execute(
            "SELECT notebook, seconds FROM events WHERE course = ? AND event = 'close' AND time >= ? AND time < ? "
            f"AND seconds IS NOT NULL AND notebook IS NOT NULL AND {_students(staff)}", (course, start, end)):
        durations.setdefault(notebook, []).append(float(seconds))
    order = notebook_order(course) if notebooks is None else notebooks
    return Table(("notebook", "sessions", "median_s", "longest_s"),
                 [(n, len(durations[n]), statistics.median(durations[n]), max(durations[n]))
                  for n in _ordered(set(durations), order)])


def start_latency(db, course: str, since=None, until=None, staff: bool = False) -> Table:
    """Distribution of start to ready: starts per bucket (upper bound, seconds)."""
    start, end = _range(since, until)
    counts = dict.fromkeys(store.LATENCY_BUCKETS, 0)
    bucket = " ".join(f"WHEN seconds <= {le!r} THEN {number}" for number, le in enumerate(store.LATENCY_BUCKETS[:-1]))
    for number, n in db.execute(
            f"SELECT CASE {bucket} ELSE {len(store.LATENCY_BUCKETS) - 1} END, count(*) FROM events "
            "WHERE course = ? AND event = 'ready' AND time >= ? AND time < ? AND seconds IS NOT NULL "
            f"AND {_students(staff)} GROUP BY 1",
            (course, start, end)):
        counts[store.LATENCY_BUCKETS[number]] = n
    return Table(("le_seconds", "starts"), [("+Inf" if le == math.inf else le, n) for le, n in counts.items()])


INCIDENTS = ("cull", "failure", "refused", "full")


def incidents_per_day(db, course: str, since=None, until=None, staff: bool = False) -> Table:
    """Culls, failures, refusals and 'host full' per day."""
    start, end = _range(since, until)
    found = {}
    for day, event, n in db.execute(
            f"SELECT date(time, 'unixepoch'), event, count(*) FROM events WHERE course = ? "
            f"AND event IN ({', '.join('?' * len(INCIDENTS))}) AND time >= ? AND time < ? AND {_students(staff)} "
            "GROUP BY 1, 2",
            (course, *INCIDENTS, start, end)):
        found.setdefault(day, dict.fromkeys(INCIDENTS, 0))[event] = n
    days = sorted(found)
    empty = dict.fromkeys(INCIDENTS, 0)
    return Table(("day", "culls", "failures", "refusals", "full"),
                 [(day, *found.get(day, empty).values()) for day in (_days_between(days[0], days[-1]) if days else [])])


# -- samples over time ------------------------------------------------------

def _samples(db, course: str | None, names: tuple[str, ...], since, until, points: int) -> list[tuple]:
    """Samples averaged over at most `points` equal spans of the range."""
    start, end = _range(since, until)
    if not set(names) <= set(store.SAMPLE_COLUMNS):
        raise ValueError(f"not sampled: {sorted(set(names) - set(store.SAMPLE_COLUMNS))}")
    where = "course = ?" if course is not None else "course IS NULL"
    args = (course,) if course is not None else ()
    first, last = db.execute(f"SELECT min(time), max(time) FROM samples WHERE {where} AND time >= ? AND time < ?",
                             (*args, start, end)).fetchone()
    if first is None:
        return []
    span = max(1.0, (last - first) / max(1, points - 1))
    averages = ", ".join(f"avg({name})" for name in names)
    return [(first + b * span, *values) for b, *values in db.execute(
        f"SELECT CAST((time - ?) / ? AS INTEGER) AS b, {averages} FROM samples "
        f"WHERE {where} AND time >= ? AND time < ? GROUP BY b ORDER BY b", (first, span, *args, start, end))]


def servers_over_time(db, course: str, since=None, until=None, points: int = 500, staff: bool = False) -> Table:
    """Running servers, kernels and busy kernels, of the course and of the host
    (staff members' servers among them either way: a sample counts servers)."""
    names = ("servers", "kernels", "busy_kernels")
    rows = [(_iso(t), "course", *v) for t, *v in _samples(db, course, names, since, until, points)]
    rows += [(_iso(t), "host", *v) for t, *v in _samples(db, None, names, since, until, points)]
    return Table(("time", "scope", *names), rows)


def host_over_time(db, course: str, since=None, until=None, points: int = 500, staff: bool = False) -> Table:
    """The host's load, available memory and free disk (the course is not
    needed: one host serves every course; taken for the pages' sake)."""
    names = ("load1", "mem_available_bytes", "mem_total_bytes", "workspaces_free_bytes", "containers_free_bytes")
    return Table(("time", *names), [(_iso(t), *v) for t, *v in _samples(db, None, names, since, until, points)])


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


PLOTS = {f.__name__: f for f in (students_per_notebook, students_per_day, heatmap, notebooks_per_student,
                                 sessions_per_notebook, servers_over_time, host_over_time, start_latency,
                                 incidents_per_day)}


class UnknownPlot(KeyError):
    pass


def table(db, course: str, plot: str, since: float | None = None, until: float | None = None,
          staff: bool = False) -> Table:
    """One plot's data by its name: what the stats page's CSV links and `nbh stats` ask for."""
    try:
        function = PLOTS[plot]
    except KeyError:
        raise UnknownPlot(f"no plot {plot!r}: one of {', '.join(PLOTS)}") from None
    return function(db, course, since, until, staff=staff)


# -- the pages' time range ----------------------------------------------------

DEFAULT_DAYS = 30


@dataclass(frozen=True)
class Days:
    """A range of whole UTC days, both ends included, as the stats page's
    from/to fields say it."""

    first: date
    last: date

    @property
    def since(self) -> float:
        return datetime.combine(self.first, datetime.min.time(), timezone.utc).timestamp()

    @property
    def until(self) -> float:
        return datetime.combine(self.last + timedelta(days=1), datetime.min.time(), timezone.utc).timestamp()


def days(first: str | None, last: str | None, today: date | None = None) -> Days:
    """From and to as YYYY-MM-DD; either missing: the last DEFAULT_DAYS days
    up to today (UTC), or up to `last`. ValueError for anything else."""
    today = today or datetime.now(timezone.utc).date()
    try:
        end = date.fromisoformat(last) if last else today
        start = date.fromisoformat(first) if first else end - timedelta(days=DEFAULT_DAYS - 1)
    except ValueError:
        raise ValueError("from and to are dates: YYYY-MM-DD") from None
    if start > end:
        raise ValueError(f"from ({start}) is after to ({end})")
    return Days(start, end)
