"""The statistics' data, from a store seeded with a known history: each
function's rows, and its CSV, against answers worked out by hand."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone

import pytest

from nbhosting import stats, store
from nbhosting.store import Event


def at(day: str, seconds: float = 0) -> float:
    return datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp() + seconds


ORDER = ["w1/intro.ipynb", "w1/b.ipynb", "w2/c.ipynb"]  # the course's order, not alphabetical
SINCE, UNTIL = at("2026-09-01"), at("2026-09-05")

HISTORY = [
    # before the range: eve is a student already
    Event(at("2026-08-31", 100), "open", "c", "eve", "w1/intro.ipynb"),
    Event(at("2026-08-31", 200), "close", "c", "eve", "w1/intro.ipynb", {"duration_seconds": "9999"}),
    # 09-01
    Event(at("2026-09-01", 10), "open", "c", "alice", "w1/intro.ipynb", {"copied": "yes"}),
    Event(at("2026-09-01", 20), "open", "c", "alice", "w1/intro.ipynb", {"copied": "no"}),
    Event(at("2026-09-01", 30), "open", "c", "alice", "w1/b.ipynb"),
    Event(at("2026-09-01", 40), "open", "c", "bob", "w1/intro.ipynb"),
    Event(at("2026-09-01", 50), "cull", "c", "alice", None, {"idle_seconds": "1800"}),
    Event(at("2026-09-01", 60), "cull", "c", "bob", None, {"idle_seconds": "1900"}),
    Event(at("2026-09-01", 70), "refused", "c", "mallory", None, {"status": "403"}),
    Event(at("2026-09-01", 80), "close", "c", "alice", "w1/intro.ipynb", {"duration_seconds": "60"}),
    Event(at("2026-09-01", 90), "close", "c", "bob", "w1/intro.ipynb", {"duration_seconds": "600"}),
    Event(at("2026-09-01", 95), "close", "c", "alice", "w1/b.ipynb", {"duration_seconds": "30"}),
    Event(at("2026-09-01", 1), "ready", "c", "alice", None, {"start_seconds": "0.4"}),
    Event(at("2026-09-01", 2), "ready", "c", "bob", None, {"start_seconds": "1.2"}),
    Event(at("2026-09-01", 3), "ready", "c", "alice", None, {"start_seconds": "1.9"}),
    Event(at("2026-09-01", 0), "sample", "c", None, None, {"servers": "1", "kernels": "2", "busy_kernels": "0"}),
    Event(at("2026-09-01", 60), "sample", "c", None, None, {"servers": "2", "kernels": "2", "busy_kernels": "1"}),
    Event(at("2026-09-01", 120), "sample", "c", None, None, {"servers": "3", "kernels": "2", "busy_kernels": "1"}),
    *[Event(at("2026-09-01", t), "sample", None, None, None,
            {"scope": "host", "servers": str(s), "kernels": "9", "busy_kernels": "0", "load1": str(load),
             "mem_available_bytes": "1000", "mem_total_bytes": "4000", "workspaces_free_bytes": "50",
             "containers_free_bytes": "70"})
      for t, s, load in ((0, 5, 0.5), (60, 5, 1.5), (120, 8, 1.0))],
    # 09-02
    Event(at("2026-09-02", 10), "open", "c", "bob", "w1/b.ipynb"),
    Event(at("2026-09-02", 20), "open", "c", "bob", "old.ipynb"),  # no longer in the course
    Event(at("2026-09-02", 30), "open", "c", "carol", "w1/intro.ipynb"),
    Event(at("2026-09-02", 40), "close", "c", "carol", "w1/intro.ipynb", {"duration_seconds": "120"}),
    Event(at("2026-09-02", 50), "ready", "c", "carol", None, {"start_seconds": "4"}),
    # 09-03: nobody opens anything
    Event(at("2026-09-03", 10), "failure", "c", "carol", None, {"result": "signal"}),
    Event(at("2026-09-03", 20), "full", "c", "zoe", "w1/intro.ipynb", {"status": "503"}),
    Event(at("2026-09-03", 30), "ready", "c", "carol", None, {"start_seconds": "75"}),
    # 09-04
    Event(at("2026-09-04", 10), "open", "c", "alice", "w2/c.ipynb"),
    Event(at("2026-09-04", 20), "open", "c", "dave", "w1/intro.ipynb"),
    # after the range, and another course: never counted
    Event(at("2026-09-05", 10), "open", "c", "frank", "w1/intro.ipynb"),
    Event(at("2026-09-02", 10), "open", "other", "alice", "w1/intro.ipynb"),
    Event(at("2026-09-02", 11), "close", "other", "alice", "w1/intro.ipynb", {"duration_seconds": "5"}),
    Event(at("2026-09-02", 12), "ready", "other", "alice", None, {"start_seconds": "0.1"}),
    Event(at("2026-09-02", 13), "cull", "other", "alice", None, {}),
    Event(at("2026-09-01", 0), "sample", "other", None, None, {"servers": "40", "kernels": "0", "busy_kernels": "0"}),
]


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("stats") / "events.db"
    writer = store.open_writer(path)
    store.append(writer, sorted(HISTORY, key=lambda e: e.time), "cursor", 0)
    reader = store.open_reader(path)
    yield reader
    reader.close()
    writer.close()


def rows_of_csv(table: stats.Table) -> list[list[str]]:
    found = list(csv.reader(io.StringIO(table.csv())))
    assert found[0] == list(table.columns)
    assert found[1:] == [[str(v) for v in row] for row in table.rows]  # the CSV says what the plot draws
    return found[1:]


def test_students_per_notebook_in_the_courses_order(db):
    table = stats.students_per_notebook(db, "c", SINCE, UNTIL, notebooks=ORDER)
    assert table.rows == [("w1/intro.ipynb", 4, 5), ("w1/b.ipynb", 2, 2), ("w2/c.ipynb", 1, 1), ("old.ipynb", 1, 1)]
    rows_of_csv(table)


def test_a_notebook_nobody_opened_is_shown_with_zero(db):
    table = stats.students_per_notebook(db, "c", at("2026-09-04"), UNTIL, notebooks=ORDER)
    assert table.rows == [("w1/intro.ipynb", 1, 1), ("w1/b.ipynb", 0, 0), ("w2/c.ipynb", 1, 1)]


def test_students_per_day_active_new_cumulative(db):
    table = stats.students_per_day(db, "c", SINCE, UNTIL)
    assert table.rows == [("2026-09-01", 2, 2, 3), ("2026-09-02", 2, 1, 4), ("2026-09-03", 0, 0, 4),
                          ("2026-09-04", 2, 1, 5)]
    rows_of_csv(table)
    # new means new to the course, not to the range
    assert stats.students_per_day(db, "c", at("2026-09-02"), at("2026-09-03")).rows == [("2026-09-02", 2, 1, 4)]


def test_notebooks_per_student(db):
    table = stats.notebooks_per_student(db, "c", SINCE, UNTIL)
    assert table.rows == [(1, 2), (3, 2)]  # carol and dave read 1; alice and bob 3
    rows_of_csv(table)


def test_heatmap_sorts_and_bins_the_students(db):
    table = stats.heatmap(db, "c", SINCE, UNTIL, notebooks=ORDER, columns=2)
    # ranked: alice (3 notebooks, 4 opens), bob (3, 3), carol (1, 1), dave (1, 1)
    assert table.rows == [
        ("w1/intro.ipynb", 1, 2, 2, 2, 3, 1.5), ("w1/intro.ipynb", 3, 4, 2, 2, 2, 1.0),
        ("w1/b.ipynb", 1, 2, 2, 2, 2, 1.0), ("w1/b.ipynb", 3, 4, 2, 0, 0, 0.0),
        ("w2/c.ipynb", 1, 2, 2, 1, 1, 0.5), ("w2/c.ipynb", 3, 4, 2, 0, 0, 0.0),
        ("old.ipynb", 1, 2, 2, 1, 1, 0.5), ("old.ipynb", 3, 4, 2, 0, 0, 0.0),
    ]
    rows_of_csv(table)
    # one column a student when there is room
    assert len(stats.heatmap(db, "c", SINCE, UNTIL, notebooks=ORDER).rows) == 4 * 4


def test_heatmap_of_5000_students_has_at_most_the_columns_asked(tmp_path, open_store):
    writer = open_store(tmp_path / "big.db")
    store.append(writer, [Event(SINCE + i, "open", "c", f"s{i:04d}", f"n{i % 7}.ipynb") for i in range(5000)],
                 "k", 0)
    table = stats.heatmap(writer, "c", None, None, columns=100)
    assert len(table.rows) == 7 * 100
    assert {row[3] for row in table.rows} == {50}
    assert sum(row[5] for row in table.rows) == 5000


def test_sessions_per_notebook(db):
    table = stats.sessions_per_notebook(db, "c", SINCE, UNTIL, notebooks=ORDER)
    assert table.rows == [("w1/intro.ipynb", 3, 120.0, 600.0), ("w1/b.ipynb", 1, 30.0, 30.0)]
    rows_of_csv(table)


def test_start_latency(db):
    table = stats.start_latency(db, "c", SINCE, UNTIL)
    assert table.rows == [(0.5, 1), (1.0, 0), (2.0, 2), (3.0, 0), (5.0, 1), (10.0, 0), (20.0, 0), (30.0, 0),
                          (60.0, 0), ("+Inf", 1)]
    rows_of_csv(table)


def test_incidents_per_day(db):
    table = stats.incidents_per_day(db, "c", SINCE, UNTIL)
    assert table.rows == [("2026-09-01", 2, 0, 1, 0), ("2026-09-02", 0, 0, 0, 0), ("2026-09-03", 0, 1, 0, 1)]
    rows_of_csv(table)


def test_servers_over_time_for_the_course_and_the_host(db):
    table = stats.servers_over_time(db, "c", SINCE, UNTIL)
    t = ["2026-09-01T00:00:00+00:00", "2026-09-01T00:01:00+00:00", "2026-09-01T00:02:00+00:00"]
    assert table.rows == [(t[0], "course", 1, 2, 0), (t[1], "course", 2, 2, 1), (t[2], "course", 3, 2, 1),
                          (t[0], "host", 5, 9, 0), (t[1], "host", 5, 9, 0), (t[2], "host", 8, 9, 0)]
    rows_of_csv(table)
    # at most `points` points: averages of equal spans
    assert stats.servers_over_time(db, "c", SINCE, UNTIL, points=2).rows == [
        (t[0], "course", 1.5, 2, 0.5), (t[2], "course", 3, 2, 1), (t[0], "host", 5, 9, 0), (t[2], "host", 8, 9, 0)]


def test_host_over_time(db):
    table = stats.host_over_time(db, "c", SINCE, UNTIL)
    assert [row[:2] for row in table.rows] == [("2026-09-01T00:00:00+00:00", 0.5), ("2026-09-01T00:01:00+00:00", 1.5),
                                               ("2026-09-01T00:02:00+00:00", 1.0)]
    assert table.rows[0][2:] == (1000, 4000, 50, 70)
    rows_of_csv(table)


def test_an_empty_range_gives_empty_tables(db):
    for name, plot in stats.PLOTS.items():
        table = plot(db, "c", at("2027-01-01"), at("2027-02-01"))
        if name == "start_latency":
            assert all(n == 0 for _, n in table.rows)
        elif name in ("students_per_notebook", "heatmap"):
            assert table.rows == [] or all(row[1] == 0 for row in table.rows), name
        else:
            assert table.rows == [], name
        assert table.csv().splitlines() == [",".join(table.columns)] + [",".join(map(str, r)) for r in table.rows]


def test_the_pages_range_is_whole_utc_days():
    today = datetime(2026, 11, 29, tzinfo=timezone.utc).date()
    default = stats.days(None, None, today=today)
    assert (default.first.isoformat(), default.last.isoformat()) == ("2026-10-31", "2026-11-29")  # 30 days
    chosen = stats.days("2026-09-01", "2026-09-04", today=today)
    assert (chosen.since, chosen.until) == (SINCE, UNTIL)  # "to" is included
    assert stats.days(None, "2026-09-30", today=today).first.isoformat() == "2026-09-01"
    for first, last in (("2026-09-05", "2026-09-04"), ("yesterday", None), (None, "2026-13-01")):
        with pytest.raises(ValueError):
            stats.days(first, last, today=today)


def test_table_by_name_and_nbh_stats_print_the_same_csv(db, tmp_path, capsys):
    from nbhosting import cli

    path = tmp_path / "events.db"
    writer = store.open_writer(path)
    store.append(writer, sorted(HISTORY, key=lambda e: e.time), "cursor", 0)
    writer.close()
    for plot in stats.PLOTS:
        expected = stats.table(db, "c", plot, SINCE, UNTIL).csv()
        assert expected == getattr(stats, plot)(db, "c", SINCE, UNTIL).csv()
        assert cli.main(["stats", "c", plot, "--since", "2026-09-01T00:00+00:00", "--until",
                         "2026-09-05T00:00+00:00", "--format", "csv", "--store", str(path)]) == 0
        assert capsys.readouterr().out == expected, plot
    with pytest.raises(stats.UnknownPlot):
        stats.table(db, "c", "nope")


STAFF_HISTORY = [
    Event(at("2026-09-01", 10), "open", "c", "alice", "w1/intro.ipynb"),
    Event(at("2026-09-01", 11), "ready", "c", "alice", None, {"start_seconds": "0.4"}),
    Event(at("2026-09-01", 12), "close", "c", "alice", "w1/intro.ipynb", {"duration_seconds": "60"}),
    # a teacher's "Open as myself", in their own workspace
    Event(at("2026-09-01", 20), "staff-open", "c", "staff.ann", "w1/intro.ipynb", {"staff": "ann"}),
    Event(at("2026-09-01", 21), "ready", "c", "staff.ann", None, {"start_seconds": "25"}),
    Event(at("2026-09-01", 22), "close", "c", "staff.ann", "w1/intro.ipynb", {"duration_seconds": "7200"}),
    Event(at("2026-09-01", 23), "cull", "c", "staff.ann", None, {}),
    Event(at("2026-09-01", 24), "refused", "c", None, None, {"status": "403"}),
]


@pytest.fixture(scope="module")
def staff_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("stats-staff") / "events.db"
    writer = store.open_writer(path)
    store.append(writer, STAFF_HISTORY, "cursor", 0)
    reader = store.open_reader(path)
    yield reader
    reader.close()
    writer.close()


def test_the_staffs_own_workspaces_are_not_students_unless_asked(staff_db):
    def rows(plot, staff=False):
        return stats.table(staff_db, "c", plot, at("2026-09-01"), at("2026-09-02"), staff=staff).rows

    assert rows("students_per_notebook")[:1] == [("w1/intro.ipynb", 1, 1)]
    assert rows("students_per_notebook", staff=True)[:1] == [("w1/intro.ipynb", 2, 2)]
    assert rows("students_per_day") == [("2026-09-01", 1, 1, 1)]
    assert rows("students_per_day", staff=True) == [("2026-09-01", 2, 1, 1)]  # new: first entries of students
    assert rows("sessions_per_notebook") == [("w1/intro.ipynb", 1, 60.0, 60.0)]
    assert rows("sessions_per_notebook", staff=True) == [("w1/intro.ipynb", 2, 3630.0, 7200.0)]
    assert sum(n for _, n in rows("start_latency")) == 1
    assert sum(n for _, n in rows("start_latency", staff=True)) == 2
    assert rows("incidents_per_day") == [("2026-09-01", 0, 0, 1, 0)]  # a refusal names no one: counted
    assert rows("incidents_per_day", staff=True) == [("2026-09-01", 1, 0, 1, 0)]
