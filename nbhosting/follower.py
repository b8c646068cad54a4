"""nbh-events.service: the journal's events, appended to the store.

It reads the journal (python-systemd's ``journal.Reader``) from the cursor
saved in the store, as ``journalctl --cursor-file`` does, and appends each
batch of events with the cursor of its last entry in one transaction. A
crash, a SIGKILL or a restart anywhere loses nothing and stores nothing
twice: the rows and the cursor are committed together, or neither is.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import pwd
import re
import sqlite3
import sys
import time
from pathlib import Path

from systemd import daemon, journal

from . import config, events, store
from .names import BadName, Instance, check_course

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
# Whom the store believes, by the fields journald adds itself (the sender's
# cgroup and credentials), never by those the sender wrote:
# - root, and the account nbh, which runs only nbhosting's own code (the
#   front end, the cull, the sampler, autopull): whatever they say;
# - the units below, which run only nbhosting's code too;
# - a course's units (their git, their build's containers): that course's
#   update and build events, about that course alone;
# - a student's unit, which runs the student's code and can write to the
#   journal (the image's nbh_menus does, through the socket the host mounts
#   in): its own events, about its own pair, whatever fields they carry.
# Anything else (a local account's `logger --journald`, a process of a
# container that exited before journald read its entry, which journald can
# then tie to no unit) is dropped.
TRUSTED_ACCOUNTS = ("root", "nbh")
OWN_UNITS = frozenset({"nbh-web.service", "nbh-cull.service", "nbh-gc.service", "nbh-sample.service",
                       "nbh-autopull.service", "nbh-lti-keys.service"})
STUDENT_UNIT_EVENTS = frozenset({"start", "ready", "stop", "failure", "reset", "share"})
COURSE_UNIT = re.compile(r"nbh-course-(update|build|disk)@(.+)\.service")
COURSE_UNIT_EVENTS = frozenset({"course-update", "course-build", "failure"})


@functools.cache
def trusted_uids() -> frozenset[int]:
    uids = set()
    for account in TRUSTED_ACCOUNTS:
        try:
            uids.add(pwd.getpwnam(account).pw_uid)
        except KeyError:
            continue  # not on this host (a unit test's)
    return frozenset(uids)


def text(value: object) -> str:
    """A field's value as text: a field given twice is its last value, one
    that is not UTF-8 is kept readable."""
    if isinstance(value, list):
        value = value[-1] if value else ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def speaker(entry: dict, event: str) -> tuple[str | None, str | None] | None:
    """Whether the entry is believed: None if not; else the course and
    student it is about when its sender can speak only for them (None:
    as the entry says)."""
    unit = text(entry.get("_SYSTEMD_UNIT", ""))
    if unit.startswith("nbh-jupyter@"):
        try:
            pair = Instance.from_unit(unit)
        except (ValueError, BadName):
            return None
        return (pair.course, pair.student) if event in STUDENT_UNIT_EVENTS else None
    if match := COURSE_UNIT.fullmatch(unit):
        try:
            course = check_course(match.group(2))
        except BadName:
            return None
        return (course, None) if event in COURSE_UNIT_EVENTS else None
    if unit in OWN_UNITS:
        return None, None
    try:
        uid = int(text(entry.get("_UID", "")))
    except ValueError:
        return None
    return (None, None) if uid in trusted_uids() else None


def as_event(entry: dict) -> store.Event | None:
    """The store's form of a journal entry; None for one that is no event,
    or that the store does not believe."""
    if "NBH_EVENT" not in entry:
        return None
    event = text(entry["NBH_EVENT"])
    about = speaker(entry, event)
    if about is None:
        return None
    found = store.Event(time=entry["__REALTIME_TIMESTAMP"].timestamp(), event=event)
    for key, value in entry.items():
        if not key.startswith("NBH_") or key in DROPPED or key == "NBH_EVENT":
            continue
        if key in COLUMNS:
            setattr(found, COLUMNS[key], text(value))
        else:
            found.fields[key[4:].lower()] = text(value)
    course, student = about
    if course is not None:
        found.course = course
    if student is not None:
        found.student = student
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


def read_batch(reader: journal.Reader, limit: int = BATCH) -> tuple[list[tuple[store.Event, str]], dict | None]:
    """Up to `limit` events with their entries' cursors, and the last journal
    entry read (for its cursor)."""
    found, last = [], None
    for _ in range(limit):
        entry = reader.get_next()
        if not entry:
            break
        last = entry
        event = as_event(entry)
        if event is None:
            continue
        if unparsed := store.unparsed(event):
            log.warning("entry %s: %s event: %s not a number, kept as text", entry["__CURSOR"], event.event,
                        ", ".join(unparsed))
        found.append((event, entry["__CURSOR"]))
    return found, last


# What a value in an entry may make SQLite or the store raise; a full disk,
# a locked or broken database (sqlite3.OperationalError...) is no entry's.
BAD_VALUE = (OverflowError, ValueError, TypeError, sqlite3.InterfaceError, sqlite3.DataError,
             sqlite3.IntegrityError)


def catch_up(db, reader: journal.Reader, limit: int = BATCH) -> int:
    """Append what the journal has; the number of events stored."""
    stored = 0
    while True:
        found, last = read_batch(reader, limit)
        if last is None:
            return stored
        try:
            store.append(db, [event for event, _ in found], last["__CURSOR"],
                         last["__REALTIME_TIMESTAMP"].timestamp())
            stored += len(found)
        except BAD_VALUE:
            # One of them: each alone then, the ones that fail left out.
            for event, cursor in found:
                try:
                    store.append(db, [event], cursor, event.time)
                    stored += 1
                except BAD_VALUE as error:
                    log.warning("entry %s: %s event not stored: %s", cursor, event.event, error)
            store.append(db, [], last["__CURSOR"], last["__REALTIME_TIMESTAMP"].timestamp())


def follow(path: Path, settings: config.Config) -> None:
    with contextlib.closing(store.open_writer(path)) as db:
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
