"""The event store: an embedded SQLite database of every NBH_EVENT, kept.

The journal is the live log, but it is rotated (and volatile in the
sandbox); a course's history lasts months. nbh-events.service (follower.py)
appends the journal's events here, with the journal cursor it has reached
saved in the same transaction: after a crash it starts again from that
cursor, so nothing is lost and nothing is stored twice. Readers (`nbh
events`, the statistics, /metrics) open the database read-only.

The schema's version is SQLite's ``user_version``; MIGRATIONS take a
database from one version to the next, each in one transaction.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from . import paths

DEFAULT_PATH = paths.DATA_DIR / "events" / "events.db"
# Start-to-ready buckets, in seconds, for /metrics (a Prometheus histogram).
LATENCY_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, float("inf"))

MIGRATIONS = [
    # 1: the events, and how far in the journal they come from.
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        time REAL NOT NULL,              -- the journal's realtime, in seconds
        event TEXT NOT NULL,
        course TEXT,
        student TEXT,
        notebook TEXT,
        fields TEXT NOT NULL DEFAULT '{}' -- the other NBH_ fields, as JSON
    );
    CREATE INDEX events_by_time ON events (time);
    CREATE INDEX events_by_course ON events (course, time);
    CREATE TABLE followed (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        cursor TEXT NOT NULL,
        time REAL NOT NULL               -- of the entry at the cursor
    );
    """,
    # 2: what the statistics and /metrics read often, kept as events come:
    # a covering index by course and event, each student's first open, and
    # counters.
    """
    CREATE INDEX events_by_course_event ON events (course, event, time, student, notebook);
    CREATE TABLE students (
        course TEXT NOT NULL,
        student TEXT NOT NULL,
        first_time REAL NOT NULL,
        PRIMARY KEY (course, student)
    ) WITHOUT ROWID;
    INSERT INTO students
        SELECT course, student, min(time) FROM events
        WHERE event = 'open' AND course IS NOT NULL AND student IS NOT NULL
        GROUP BY course, student;
    CREATE TABLE counts (
        event TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT '',
        n INTEGER NOT NULL,
        PRIMARY KEY (event, status)
    ) WITHOUT ROWID;
    INSERT INTO counts
        SELECT event, coalesce(json_extract(fields, '$.status'), ''), count(*) FROM events
        GROUP BY 1, 2;
    CREATE TABLE start_latency (
        le REAL PRIMARY KEY,             -- bucket's upper bound, seconds; 1e999 is +Inf
        n INTEGER NOT NULL
    );
    CREATE TABLE start_latency_sum (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seconds REAL NOT NULL
    );
    """,
]
# 3: the samples' numbers in columns of their own, for plots over months.
_SAMPLE_COLUMNS_3 = {"servers": "INTEGER", "kernels": "INTEGER", "busy_kernels": "INTEGER",
                     "memory_bytes": "INTEGER", "load1": "REAL", "mem_available_bytes": "INTEGER",
                     "mem_total_bytes": "INTEGER", "workspaces_free_bytes": "INTEGER",
                     "containers_free_bytes": "INTEGER"}
MIGRATIONS.append(f"""
    CREATE TABLE samples (
        time REAL NOT NULL,
        course TEXT,                     -- NULL: the host's sample
        {", ".join(f"{name} {kind}" for name, kind in _SAMPLE_COLUMNS_3.items())}
    );
    CREATE INDEX samples_by_course ON samples (course, time);
    INSERT INTO samples
        SELECT time, course, {", ".join(f"CAST(json_extract(fields, '$.{name}') AS {kind})"
                                        for name, kind in _SAMPLE_COLUMNS_3.items())}
        FROM events WHERE event = 'sample';
""")
# 4: the seconds the statistics read of each start (ready: start_seconds) and
# session (close: duration_seconds) in a column of their own, with a partial
# covering index: the stats page reads months of them without parsing JSON.
SECONDS_FIELDS = {"ready": "start_seconds", "close": "duration_seconds"}
MIGRATIONS.append(f"""
    ALTER TABLE events ADD COLUMN seconds REAL;
    {"".join(f"UPDATE events SET seconds = CAST(json_extract(fields, '$.{name}') AS REAL) WHERE event = '{event}';"
             for event, name in SECONDS_FIELDS.items())}
    CREATE INDEX events_seconds ON events (course, event, time, notebook, seconds) WHERE seconds IS NOT NULL;
""")
# 5: what a course's workspaces on disks of their own take (disks.py); no
# sample before had it.
MIGRATIONS.append("""
    ALTER TABLE samples ADD COLUMN disk_bytes INTEGER;
""")
# In the table's order (ALTER TABLE adds at the end).
SAMPLE_COLUMNS = {**_SAMPLE_COLUMNS_3, "disk_bytes": "INTEGER"}
VERSION = len(MIGRATIONS)


class StoreError(Exception):
    """The store cannot be opened or read: one line for the operator."""


@dataclass
class Event:
    time: float
    event: str
    course: str | None = None
    student: str | None = None
    notebook: str | None = None
    fields: dict = field(default_factory=dict)


# -- the schema -------------------------------------------------------------

def version(db: sqlite3.Connection) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]


def migrate(db: sqlite3.Connection) -> int:
    """Bring the schema to VERSION, one transaction per step; the version reached."""
    current = version(db)
    if current > VERSION:
        raise StoreError(f"the event store's schema is version {current}, newer than this nbhosting's "
                         f"({VERSION}): upgrade nbhosting")
    for number in range(current, VERSION):
        with db:  # executescript would commit by itself: BEGIN here, so the step is atomic
            db.execute("BEGIN IMMEDIATE")
            for statement in _statements(MIGRATIONS[number]):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {number + 1}")
    return VERSION


def _statements(script: str) -> list[str]:
    """The statements of a migration, for execute() one at a time (inside our BEGIN)."""
    text = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    found, pending = [], ""
    for piece in text.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            found.append(pending.strip())
            pending = ""
    if pending.strip(" \n;"):
        raise ValueError(f"incomplete statement in a migration: {pending.strip()[:80]}")
    return found


# -- the writer (nbh-events.service) ---------------------------------------

def open_writer(path: Path = DEFAULT_PATH) -> sqlite3.Connection:
    """The follower's connection: WAL, so readers never wait for it."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        # In WAL mode, NORMAL syncs at checkpoints: a power cut may lose the last
        # transactions, rows and cursor together, which the journal has again.
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA busy_timeout = 10000")
        migrate(db)
    except BaseException:
        db.close()  # a store refused (newer, or a failed migration) leaves no connection open
        raise
    return db


def saved_cursor(db: sqlite3.Connection) -> str | None:
    row = db.execute("SELECT cursor FROM followed WHERE id = 1").fetchone()
    return row[0] if row else None


def append(db: sqlite3.Connection, events: list[Event], cursor: str, cursor_time: float) -> None:
    """The events and the cursor of the last one, in one transaction: all or nothing."""
    with db:
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO events (time, event, course, student, notebook, fields, seconds) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(e.time, e.event, e.course, e.student, e.notebook, json.dumps(e.fields, separators=(",", ":")),
              _number(e.fields.get(SECONDS_FIELDS[e.event])) if e.event in SECONDS_FIELDS else None)
             for e in events])
        db.executemany(
            "INSERT INTO students VALUES (?, ?, ?) ON CONFLICT DO UPDATE "
            "SET first_time = min(first_time, excluded.first_time)",
            [(e.course, e.student, e.time) for e in events if e.event == "open" and e.course and e.student])
        counted = Counter((e.event, str(e.fields.get("status", ""))) for e in events)
        db.executemany("INSERT INTO counts VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n",
                       [(event, status, n) for (event, status), n in counted.items()])
        latencies = [_seconds(e.fields.get("start_seconds")) for e in events if e.event == "ready"]
        latencies = [s for s in latencies if s is not None]
        if latencies:
            buckets = Counter(next(le for le in LATENCY_BUCKETS if s <= le) for s in latencies)
            db.executemany("INSERT INTO start_latency VALUES (?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n",
                           [(le if le != float("inf") else 1e999, n) for le, n in buckets.items()])
            db.execute("INSERT INTO start_latency_sum VALUES (1, ?) ON CONFLICT DO UPDATE "
                       "SET seconds = seconds + excluded.seconds", (sum(latencies),))
        db.executemany(f"INSERT INTO samples VALUES (?, ?, {', '.join('?' * len(SAMPLE_COLUMNS))})",
                       [(e.time, e.course, *(_number(e.fields.get(name)) for name in SAMPLE_COLUMNS))
                        for e in events if e.event == "sample"])
        db.execute("INSERT INTO followed VALUES (1, ?, ?) ON CONFLICT DO UPDATE "
                   "SET cursor = excluded.cursor, time = excluded.time", (cursor, cursor_time))


# What SQLite stores as an INTEGER (a larger Python int overflows it).
_INTEGER = range(-2**63, 2**63)
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?")


def _number(value: object) -> float | int | None:
    """A field's number, or None: one that SQLite stores, finite, as its
    senders write it ("12", "0.25"): no "1_000", "inf" or "nan"."""
    if not isinstance(value, str) or len(value) > 40 or not _NUMBER.fullmatch(value):
        return None
    if value.lstrip("-").isdigit():
        number = int(value)
        return number if number in _INTEGER else None
    number = float(value)
    return number if math.isfinite(number) else None


def unparsed(event: Event) -> list[str]:
    """The fields of the event that should be numbers and are not (stored
    as text in `fields`, NULL in their column)."""
    names = [SECONDS_FIELDS[event.event]] if event.event in SECONDS_FIELDS else []
    if event.event == "sample":
        names += SAMPLE_COLUMNS
    return [name for name in names if name in event.fields and _number(event.fields[name]) is None]


def _seconds(value: object) -> float | None:
    seconds = _number(value)
    return float(seconds) if seconds is not None and 0 <= seconds < 1e9 else None


def forget_before(db: sqlite3.Connection, before: float, batch: int = 10000) -> int:
    """Retention: remove events older than `before`, a batch per transaction
    so the follower never holds the database for long. Counters stay."""
    removed = 0
    while True:
        with db:
            count = db.execute("DELETE FROM events WHERE id IN "
                               "(SELECT id FROM events WHERE time < ? ORDER BY time LIMIT ?)",
                               (before, batch)).rowcount
        removed += count
        if count < batch:
            return removed


# -- readers ----------------------------------------------------------------

def open_reader(path: Path = DEFAULT_PATH) -> sqlite3.Connection:
    """Read-only. While the follower runs, its WAL and shared-memory files are
    there and readers share them (read-only); when it has stopped cleanly,
    everything is in the database file, which is then read as immutable."""
    if not path.exists():
        raise StoreError(f"no event store at {path} (nbh-events.service makes it)")
    wal = Path(f"{path}-wal")
    uri = f"file:{path}?mode=ro" if wal.exists() else f"file:{path}?immutable=1"
    try:
        db = sqlite3.connect(uri, uri=True, isolation_level=None)
    except sqlite3.Error as error:
        raise StoreError(f"cannot read the event store {path}: {error}") from None
    try:
        db.execute("PRAGMA busy_timeout = 10000")
        found = version(db)
    except sqlite3.Error as error:
        db.close()
        raise StoreError(f"cannot read the event store {path}: {error}") from None
    if found != VERSION:
        db.close()
        raise StoreError(f"the event store {path} has schema version {found}, this nbhosting reads {VERSION}"
                         + (" (nbh-events.service migrates it when it starts)" if found < VERSION else ""))
    return db


@dataclass
class Query:
    """What `nbh events` filters on; None is any."""

    course: str | None = None
    student: str | None = None
    notebook: str | None = None
    event: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int | None = None

    def sql(self) -> tuple[str, list]:
        where, args = [], []
        for column in ("course", "student", "notebook", "event"):
            value = getattr(self, column)
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if self.since is not None:
            where.append("time >= ?")
            args.append(self.since)
        if self.until is not None:
            where.append("time < ?")
            args.append(self.until)
        text = "SELECT time, event, course, student, notebook, fields FROM events"
        if where:
            text += " WHERE " + " AND ".join(where)
        text += " ORDER BY time, id"
        if self.limit is not None:
            text += f" LIMIT {int(self.limit)}"
        return text, args


def events(db: sqlite3.Connection, query: Query):
    """The events that match, oldest first, as a generator."""
    text, args = query.sql()
    for when, event, course, student, notebook, fields in db.execute(text, args):
        yield Event(when, event, course, student, notebook, json.loads(fields))


def rows(db: sqlite3.Connection, query: Query):
    """The same as text, as fast as SQLite makes it (`nbh events` prints a
    week of a course, 100,000 events or more): the time in ISO 8601, UTC, to
    the millisecond; the other fields as their JSON object."""
    text, args = query.sql()
    text = text.replace("SELECT time,", "SELECT strftime('%Y-%m-%dT%H:%M:%fZ', time, 'unixepoch'),", 1)
    return db.execute(text, args)


def followed(db: sqlite3.Connection) -> tuple[str, float] | None:
    """The journal cursor reached and its entry's time, or None before the first event."""
    return db.execute("SELECT cursor, time FROM followed WHERE id = 1").fetchone()


# -- times as operators write them ------------------------------------------

_RELATIVE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(s|m|min|h|d|w)")
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, now: float | None = None) -> float:
    """'7d', '12h', '30m' ago (as journalctl's -7d); 'now', 'today'; or an ISO
    date or date and time, in local time unless it says its zone."""
    now = time.time() if now is None else now
    text = text.strip()
    match = _RELATIVE.fullmatch(text.lstrip("-"))
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    if text == "now":
        return now
    if text == "today":
        return datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(f"{text!r} is not a time: use 7d, 12h, 30m, now, today, or 2026-11-01[T10:00]") from None

