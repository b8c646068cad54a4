"""The event store: schema and migrations, appends with their cursor, queries, retention."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import datetime, timezone

import pytest

from nbhosting import cli, store
from nbhosting.store import Event

T0 = datetime(2026, 9, 1, 12, 0).timestamp()


@pytest.fixture
def db(tmp_path):
    connection = store.open_writer(tmp_path / "events.db")
    yield connection
    connection.close()


def test_a_new_store_is_at_the_current_version_in_wal_mode(db):
    assert store.version(db) == store.VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.saved_cursor(db) is None


def test_version_1_is_migrated_and_its_events_counted(tmp_path):
    """A store written by the first schema gets the later ones' tables, filled
    from the events it already has."""
    path = tmp_path / "old.db"
    old = sqlite3.connect(path, isolation_level=None)
    for statement in store._statements(store.MIGRATIONS[0]):
        old.execute(statement)
    old.execute("PRAGMA user_version = 1")
    old.executemany("INSERT INTO events (time, event, course, student, notebook, fields) VALUES (?, ?, ?, ?, ?, ?)",
                    [(T0 + 5, "open", "c", "bob", "a.ipynb", "{}"), (T0, "open", "c", "bob", "b.ipynb", "{}"),
                     (T0 + 1, "refused", "c", None, None, '{"status":"403"}'),
                     (T0 + 2, "refused", None, None, None, '{"status":"400"}'),
                     (T0 + 3, "sample", None, None, None, '{"servers":"3","load1":"0.25","scope":"host"}')])
    old.close()
    with closing(store.open_writer(path)) as db:
        assert store.version(db) == store.VERSION
        assert db.execute("SELECT course, student, first_time FROM students").fetchall() == [("c", "bob", T0)]
        assert sorted(db.execute("SELECT event, status, n FROM counts")) == [
            ("open", "", 2), ("refused", "400", 1), ("refused", "403", 1), ("sample", "", 1)]
        assert db.execute("SELECT time, course, servers, load1, kernels FROM samples").fetchall() == [
            (T0 + 3, None, 3, 0.25, None)]


def test_version_3_is_migrated_and_its_seconds_kept_in_a_column(tmp_path):
    """Schema 4: ready's start_seconds and close's duration_seconds in the
    column the statistics read, from the events already kept and from new ones."""
    path = tmp_path / "v3.db"
    old = sqlite3.connect(path, isolation_level=None)
    for migration in store.MIGRATIONS[:3]:
        for statement in store._statements(migration):
            old.execute(statement)
    old.execute("PRAGMA user_version = 3")
    old.executemany("INSERT INTO events (time, event, course, student, notebook, fields) VALUES (?, ?, ?, ?, ?, ?)",
                    [(T0, "ready", "c", "bob", None, '{"start_seconds":"1.5"}'),
                     (T0 + 1, "close", "c", "bob", "a.ipynb", '{"duration_seconds":"600"}'),
                     (T0 + 2, "ready", "c", "eve", None, "{}"),
                     (T0 + 3, "cull", "c", "bob", None, '{"idle_seconds":"1800"}')])
    old.close()
    with closing(store.open_writer(path)) as db:
        assert store.version(db) == store.VERSION
        store.append(db, [Event(T0 + 4, "close", "c", "eve", "b.ipynb", {"duration_seconds": "30"}),
                          Event(T0 + 5, "ready", "c", "eve", None, {"start_seconds": "0.25"})], "k", 0)
        assert db.execute("SELECT event, seconds FROM events ORDER BY time").fetchall() == [
            ("ready", 1.5), ("close", 600.0), ("ready", None), ("cull", None), ("close", 30.0), ("ready", 0.25)]


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.db"
    with closing(sqlite3.connect(path)) as newer:
        newer.execute(f"PRAGMA user_version = {store.VERSION + 1}")
    with pytest.raises(store.StoreError, match="newer than this nbhosting"):
        store.open_writer(path)


def test_a_failed_migration_leaves_the_store_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "events.db"
    store.open_writer(path).close()
    monkeypatch.setattr(store, "MIGRATIONS", [*store.MIGRATIONS, "CREATE TABLE x (a); INSERT INTO nowhere VALUES (1);"])
    monkeypatch.setattr(store, "VERSION", len(store.MIGRATIONS))
    with pytest.raises(sqlite3.OperationalError):
        store.open_writer(path)
    with closing(sqlite3.connect(path)) as db:
        assert store.version(db) == store.VERSION - 1
        assert not db.execute("SELECT name FROM sqlite_master WHERE name = 'x'").fetchall()


def test_rows_and_cursor_are_committed_together(db):
    store.append(db, [Event(T0, "open", "c", "s", "n.ipynb", {"copied": "yes"})], "cursor-1", T0)
    assert store.saved_cursor(db) == "cursor-1"
    # a batch that fails halfway stores none of its rows, and keeps the old cursor
    with pytest.raises(sqlite3.Error):
        store.append(db, [Event(T0 + 1, "open", "c", "s", "n.ipynb"), Event(T0 + 2, None)], "cursor-2", T0 + 2)
    assert store.saved_cursor(db) == "cursor-1"
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 1


def test_derived_tables_follow_the_appends(db):
    store.append(db, [Event(T0 + 10, "open", "c", "s"), Event(T0, "open", "c", "s"),
                      Event(T0, "ready", "c", "s", fields={"start_seconds": "1.5"}),
                      Event(T0, "ready", "c", "t", fields={"start_seconds": "120"}),
                      Event(T0, "ready", "c", "u", fields={"start_seconds": "garbage"})], "k", T0)
    assert db.execute("SELECT first_time FROM students").fetchall() == [(T0,)]
    assert sorted(db.execute("SELECT le, n FROM start_latency")) == [(2.0, 1), (float("inf"), 1)]
    assert db.execute("SELECT seconds FROM start_latency_sum").fetchone() == (121.5,)
    store.append(db, [Event(T0, "sample", "c", fields={"servers": "2", "load1": "x", "kernels": "1.5"})], "l", T0)
    assert db.execute("SELECT course, servers, load1, kernels FROM samples").fetchall() == [("c", 2, None, 1.5)]


def seeded(db):
    rows = [Event(T0 + i, e, c, s, n, f) for i, (e, c, s, n, f) in enumerate([
        ("open", "c1", "alice", "w1/a.ipynb", {"copied": "yes"}),
        ("start", "c1", "alice", None, {"image": "img"}),
        ("open", "c2", "bob", "x.ipynb", {"copied": "no"}),
        ("cull", "c1", "alice", None, {"idle_seconds": "1800"}),
        ("refused", "c1", None, None, {"status": "403"}),
    ])]
    store.append(db, rows, "c", T0 + 4)


@pytest.mark.parametrize("query, expected", [
    (store.Query(), [0, 1, 2, 3, 4]),
    (store.Query(course="c1"), [0, 1, 3, 4]),
    (store.Query(course="c1", student="alice"), [0, 1, 3]),
    (store.Query(event="open"), [0, 2]),
    (store.Query(notebook="x.ipynb"), [2]),
    (store.Query(since=T0 + 2), [2, 3, 4]),
    (store.Query(since=T0 + 1, until=T0 + 3), [1, 2]),
    (store.Query(limit=2), [0, 1]),
])
def test_queries(db, query, expected):
    seeded(db)
    assert [e.time - T0 for e in store.events(db, query)] == expected


def test_retention_removes_old_events_only(db):
    store.append(db, [Event(T0 + i, "start", "c", "s") for i in range(25)], "c", T0 + 24)
    assert store.forget_before(db, T0 + 20, batch=7) == 20
    assert [e.time - T0 for e in store.events(db, store.Query())] == [20, 21, 22, 23, 24]
    assert db.execute("SELECT n FROM counts WHERE event = 'start'").fetchone() == (25,)  # counters stay


@pytest.mark.parametrize("text, expected", [
    ("7d", T0 - 7 * 86400), ("-7d", T0 - 7 * 86400), ("12h", T0 - 12 * 3600), ("30m", T0 - 1800),
    ("90s", T0 - 90), ("2w", T0 - 14 * 86400), ("now", T0),
    ("2026-09-01T12:00", T0), ("2026-09-01", T0 - 12 * 3600), ("today", T0 - 12 * 3600),
])
def test_times(text, expected):
    assert store.parse_time(text, now=T0) == expected


@pytest.mark.parametrize("text", ["yesterday-ish", "7x", "", "2026-13-01"])
def test_bad_times(text):
    with pytest.raises(ValueError, match="is not a time"):
        store.parse_time(text)


def test_readers_are_read_only_and_see_the_writers_rows(db, tmp_path):
    seeded(db)
    with closing(store.open_reader(tmp_path / "events.db")) as reader:
        assert len(list(store.events(reader, store.Query()))) == 5
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.execute("DELETE FROM events")


def test_a_store_left_cleanly_is_read_as_immutable(tmp_path):
    db = store.open_writer(tmp_path / "events.db")
    seeded(db)
    db.close()  # the WAL is checkpointed and removed
    assert not (tmp_path / "events.db-wal").exists()
    with closing(store.open_reader(tmp_path / "events.db")) as reader:
        assert len(list(store.events(reader, store.Query()))) == 5


def test_a_missing_store_is_one_clear_error(tmp_path):
    with pytest.raises(store.StoreError, match="no event store at"):
        store.open_reader(tmp_path / "nothing.db")


def test_nbh_events_formats_and_errors(db, tmp_path, capsys):
    seeded(db)
    path = str(tmp_path / "events.db")
    assert cli.main(["events", "--store", path, "--course", "c1", "--format", "json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [(e["event"], e["student"]) for e in found] == [("open", "alice"), ("start", "alice"),
                                                           ("cull", "alice"), ("refused", None)]
    assert found[0]["copied"] == "yes" and found[2]["idle_seconds"] == "1800"
    assert datetime.fromisoformat(found[0]["time"]).timestamp() == T0
    assert cli.main(["events", "--store", path, "--event", "open", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "time,event,course,student,notebook,fields"
    assert len(lines) == 3 and lines[2].endswith(',open,c2,bob,x.ipynb,"{""copied"":""no""}"')
    assert cli.main(["events", "--store", path, "--student", "bob"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    when = datetime.fromtimestamp(T0 + 2, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert line == f'{when} open    c2 bob x.ipynb {{"copied":"no"}}'
    assert cli.main(["events", "--store", path, "--since", "last tuesday"]) == 1
    assert capsys.readouterr().err.strip() == ("nbh: 'last tuesday' is not a time: use 7d, 12h, 30m, now, today, "
                                               "or 2026-11-01[T10:00]")
    assert cli.main(["events", "--store", str(tmp_path / "none.db")]) == 1
    assert capsys.readouterr().err.startswith("nbh: no event store at ")
