"""nbh-events.service: the journal's events, appended to the store.

It reads the journal (python-systemd's ``journal.Reader``) from the cursor
saved in the store, as ``journalctl --cursor-file`` does, and appends each
batch of events with the cursor of its last entry in one transaction. A
crash, a SIGKILL or a restart anywhere loses nothing and stores nothing
twice: the rows and the cursor are committed together, or neither is.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import time
from pathlib import Path

from systemd import daemon, journal

from . import config, events, store
from .names import BadName, Instance

log = logging.getLogger("nbh-events")
# Entries per transaction: fewer commits when the journal is far ahead.
BATCH = 2000
# How long one wait for the journal lasts, and how often retention runs.
WAIT = 5.0
FORGET_EVERY = 3600
# Fields kept in the columns of their own, not in `fields`.
COLUMNS = {"NBH_EVENT": "event", "NBH_COURSE": "course", "NBH_STUDENT": "student", "NBH_NOTEBOOK": "notebook"}
# Said by every event, and derived from its course and student.
DROPPED = {"NBH_INSTANCE"}
# A student's unit runs the student's code, which can write to the journal
# (the image's nbh_menus does, through the socket the host mounts in): its
# entries name the course and student of the unit (journald's _SYSTEMD_UNIT,
# from the sender's cgroup), whatever fields they carry, and only these
# events, about that pair, are believed from it.
STUDENT_UNIT_EVENTS = frozenset({"start", "ready", "stop", "failure", "reset", "share"})


def as_event(entry: dict) -> store.Event | None:
    """The store's form of a journal entry; None for one that is no event."""
    if "NBH_EVENT" not in entry:
        return None
    unit = entry.get("_SYSTEMD_UNIT", "")
    student_unit = None
    if isinstance(unit, str) and unit.startswith("nbh-jupyter@"):
        try:
            student_unit = Instance.from_unit(unit)
        except (ValueError, BadName):
            return None
        if entry["NBH_EVENT"] not in STUDENT_UNIT_EVENTS:
            return None
    found = store.Event(time=entry["__REALTIME_TIMESTAMP"].timestamp(), event="")
    for key, value in entry.items():
        if not key.startswith("NBH_") or key in DROPPED:
            continue
        if isinstance(value, bytes):  # not UTF-8: kept, readable
            value = value.decode("utf-8", "replace")
        elif isinstance(value, list):  # a field given twice: the last one
            value = str(value[-1])
        if key in COLUMNS:
            setattr(found, COLUMNS[key], value)
        else:
            found.fields[key[4:].lower()] = value
    if student_unit is not None:
        found.course, found.student = student_unit.course, student_unit.student
    return found


def open_journal(cursor: str | None) -> journal.Reader:
    """nbhosting's entries, from just after `cursor` (or from the start)."""
    reader = journal.Reader()
    reader.add_match(SYSLOG_IDENTIFIER=events.IDENTIFIER)
    if cursor is None:
        reader.seek_head()
        return reader
    reader.seek_cursor(cursor)
    # seek_cursor puts us *at* the cursor's entry, which is stored already;
    # if the journal has rotated it away, we are at the next one, which is not.
    entry = reader.get_next()
    if entry and not reader.test_cursor(cursor):
        reader.get_previous()
    return reader


def read_batch(reader: journal.Reader, limit: int = BATCH) -> tuple[list[store.Event], dict | None]:
    """Up to `limit` events, and the last journal entry read (for its cursor)."""
    found, last = [], None
    for _ in range(limit):
        entry = reader.get_next()
        if not entry:
            break
        last = entry
        event = as_event(entry)
        if event is not None:
            found.append(event)
    return found, last


def catch_up(db, reader: journal.Reader, limit: int = BATCH) -> int:
    """Append what the journal has; the number of entries read."""
    read = 0
    while True:
        found, last = read_batch(reader, limit)
        if last is None:
            return read
        store.append(db, found, last["__CURSOR"], last["__REALTIME_TIMESTAMP"].timestamp())
        read += len(found)


def follow(path: Path, settings: config.Config) -> None:
    db = store.open_writer(path)
    reader = open_journal(store.saved_cursor(db))
    log.info("following the journal into %s (schema %d)", path, store.VERSION)
    daemon.notify("READY=1")
    forgot: float | None = None  # at start, then every FORGET_EVERY: whatever the machine's uptime
    while True:
        read = catch_up(db, reader)
        if read:
            log.debug("stored %d events", read)
        if settings.events.keep_days and (forgot is None or time.monotonic() - forgot > FORGET_EVERY):
            removed = store.forget_before(db, time.time() - settings.events.keep_days * 86400)
            if removed:
                log.info("removed %d events older than %d days (events.keep_days)", removed,
                         settings.events.keep_days)
            forgot = time.monotonic()
        reader.wait(WAIT)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        settings = config.load()
        follow(Path(sys.argv[1]) if len(sys.argv) > 1 else store.DEFAULT_PATH, settings)
    except (OSError, ValueError, store.StoreError, sqlite3.Error) as error:
        print(f"nbh-events: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
