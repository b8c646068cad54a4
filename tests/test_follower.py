"""The event store's follower (nbh-events) against hostile entries and
forged senders: pure logic, with a real SQLite store and a journal reader
stand-in (tests/test_events.py has the sandbox's, from inside a container)."""

from __future__ import annotations

import datetime
import logging
import os

import pytest

from nbhosting import follower, store
from nbhosting.names import Instance

T0 = datetime.datetime(2026, 12, 6, tzinfo=datetime.timezone.utc)
ALICE = Instance("python-mooc", "alice")
# uids journald would say: the front end's account, root, a local account
NBH_UID, NOBODY_UID = 990, 65534


@pytest.fixture(autouse=True)
def accounts(monkeypatch):
    follower.trusted_uids.cache_clear()
    monkeypatch.setattr(follower, "trusted_uids", lambda: frozenset({0, NBH_UID}))


def entry(n: int = 0, **fields) -> dict:
    return {"__REALTIME_TIMESTAMP": T0 + datetime.timedelta(seconds=n), "__CURSOR": f"c{n}", **fields}


def test_the_store_believes_senders_by_what_journald_says_of_them():
    believed = {
        "the front end": entry(_SYSTEMD_UNIT="nbh-web.service", _UID=NBH_UID, NBH_EVENT="open",
                               NBH_COURSE="c", NBH_STUDENT="bob"),
        "root's nbh": entry(_SYSTEMD_UNIT="session-1.scope", _UID=0, NBH_EVENT="staff-account", NBH_STAFF="a"),
        "a short-lived nbh cull": entry(_UID=NBH_UID, NBH_EVENT="cull", NBH_COURSE="c", NBH_STUDENT="bob"),
    }
    for who, forged in believed.items():
        assert follower.as_event(forged) is not None, who
    refused = {
        "a local account's logger --journald": entry(_SYSTEMD_UNIT="session-2.scope", _UID=1000,
                                                     NBH_EVENT="staff-settings", NBH_STAFF="admin"),
        "nobody, as the front end": entry(_UID=NOBODY_UID, NBH_EVENT="open", NBH_COURSE="c", NBH_STUDENT="bob",
                                          _COMM="nbh-web"),
        "a container's child that exited at once (no unit)": entry(_UID=100999, NBH_EVENT="open"),
        "no credentials at all": entry(NBH_EVENT="open"),
        "a student's unit, as the front end": entry(_SYSTEMD_UNIT=ALICE.service, _UID=NBH_UID, NBH_EVENT="open"),
        "a student's unit, as the staff": entry(_SYSTEMD_UNIT=ALICE.service, NBH_EVENT="staff-settings"),
        "a course's build, as the front end": entry(_SYSTEMD_UNIT="nbh-course-build@c.service", NBH_EVENT="open"),
        "a course unit of a bad name": entry(_SYSTEMD_UNIT="nbh-course-build@../x.service", NBH_EVENT="failure"),
        "a uid that is no number": entry(_UID="zero", NBH_EVENT="open"),
    }
    for who, forged in refused.items():
        assert follower.as_event(forged) is None, who
    # a course's unit speaks for its course alone, a student's for its pair
    build = follower.as_event(entry(_SYSTEMD_UNIT="nbh-course-build@python-mooc.service", _UID=0,
                                    NBH_EVENT="course-build", NBH_COURSE="other"))
    assert (build.event, build.course) == ("course-build", "python-mooc")
    reset = follower.as_event(entry(_SYSTEMD_UNIT=ALICE.service, NBH_EVENT=["open", "reset"],
                                    NBH_COURSE="other", NBH_STUDENT="bob"))
    assert (reset.event, reset.course, reset.student) == ("reset", "python-mooc", "alice")


class Journal:
    """journal.Reader's get_next() over a list."""

    def __init__(self, entries: list[dict]):
        self.entries = iter(entries)

    def get_next(self) -> dict:
        return next(self.entries, {})


def from_web(n: int, event: str, **fields) -> dict:
    return entry(n, _SYSTEMD_UNIT="nbh-web.service", _UID=NBH_UID, NBH_EVENT=event, **fields)


def from_alice(n: int, event: str, **fields) -> dict:
    return entry(n, _SYSTEMD_UNIT=ALICE.service, _UID=100000, NBH_EVENT=event, **fields)


def test_no_entry_stops_the_follower_and_the_ones_after_are_stored(tmp_path, caplog, open_store):
    db = open_store(tmp_path / "events.db")
    hostile = [
        from_alice(1, "ready", NBH_START_SECONDS="99999999999999999999"),  # the verified one
        from_alice(2, "ready", NBH_START_SECONDS="1e999"),
        from_alice(3, "ready", NBH_START_SECONDS="nan"),
        from_alice(4, "ready", NBH_START_SECONDS="1_000"),
        from_alice(5, "stop", NBH_X=os.urandom(4096), MESSAGE=b"\xff\xfe"),  # binary
        from_alice(6, "share", **{f"NBH_F{i}": str(i) for i in range(10000)}),  # 10,000 fields
        from_alice(7, "reset", NBH_NOTEBOOK="x" * 1_000_000),  # huge
        from_alice(8, ["ready", b"\xff"]),  # given twice, the last not UTF-8: no event of a student's unit
        from_web(9, "sample", NBH_SERVERS=str(2**70), NBH_LOAD1="-inf"),  # no MESSAGE
        from_web(10, "close", NBH_DURATION_SECONDS="-" * 30),
    ]
    later = [from_web(11, "open", NBH_COURSE="python-mooc", NBH_STUDENT="bob", MESSAGE="bob opens")]
    with caplog.at_level(logging.WARNING, logger="nbh-events"):
        stored = follower.catch_up(db, Journal(hostile + later), limit=4)
    assert stored == 10  # all but the 8th
    assert store.saved_cursor(db) == "c11"
    rows = db.execute("SELECT event, student, seconds FROM events ORDER BY time").fetchall()
    assert rows[0] == ("ready", "alice", None)  # the number kept as text, not in its column
    assert rows[-1] == ("open", "bob", None)
    assert db.execute("SELECT count(*) FROM samples").fetchone() == (1,)
    warnings = [r.getMessage() for r in caplog.records]
    assert "entry c1: ready event: start_seconds not a number, kept as text" in warnings, warnings
    assert any(w.startswith("entry c9: sample event: servers, load1 not a number") for w in warnings), warnings


def test_a_value_the_database_refuses_costs_that_event_alone(tmp_path, caplog, monkeypatch, open_store):
    """Should a value get past the checks and make SQLite raise, the batch
    is stored event by event and that one left out, by its cursor."""
    db = open_store(tmp_path / "events.db")
    real = store.append

    def append(db, events, cursor, cursor_time):
        if any(e.fields.get("poison") for e in events):
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        real(db, events, cursor, cursor_time)

    monkeypatch.setattr(store, "append", append)
    entries = [from_web(1, "open", NBH_STUDENT="a"), from_web(2, "open", NBH_STUDENT="b", NBH_POISON="1"),
               from_web(3, "open", NBH_STUDENT="c"), entry(4, MESSAGE="not an event")]
    with caplog.at_level(logging.WARNING, logger="nbh-events"):
        assert follower.catch_up(db, Journal(entries)) == 2
    assert [s for (s,) in db.execute("SELECT student FROM events ORDER BY time")] == ["a", "c"]
    assert store.saved_cursor(db) == "c4"
    assert any(r.getMessage().startswith("entry c2: open event not stored: Python int") for r in caplog.records)


@pytest.mark.parametrize("value, number", [
    ("12", 12), ("-3", -3), ("0.25", 0.25), ("1.5e-05", 1.5e-05), (str(2**63 - 1), 2**63 - 1),
    (str(2**63), None), ("1e999", None), ("nan", None), ("inf", None), ("1_000", None), (" 1", None),
    ("", None), (None, None), ("9" * 41, None),
])
def test_numbers_are_what_sqlite_stores(value, number):
    assert store._number(value) == number
