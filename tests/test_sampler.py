"""The sampler's verdict on sessions (close): the logic alone. The real
thing, with Jupyter and a browser, is in test_events.py."""

from __future__ import annotations

import pytest

from nbhosting import sampler, store
from nbhosting.names import Instance
from nbhosting.ask import AskError
from nbhosting.sampler import Server

A = Instance("c", "alice")
PERIOD = 60


def server(*connected: str, answered: bool = True) -> Server:
    return Server(A, connected=set(connected), answered=answered)


def closes(found) -> list[tuple]:
    return [(c.instance.path, c.notebook, c.duration, c.reason) for c in found]


def test_a_notebook_closes_when_its_last_tab_goes():
    state, closed = sampler.sessions({}, [server("n.ipynb", "m.ipynb")], 1000, PERIOD)
    assert closed == [] and state == {"c/alice": {"open": {"n.ipynb": 1000, "m.ipynb": 1000}, "gone": None}}
    state, closed = sampler.sessions(state, [server("m.ipynb")], 1060, PERIOD)
    assert closes(closed) == [("c/alice", "n.ipynb", 60, "last tab closed")]
    state, closed = sampler.sessions(state, [server()], 1120, PERIOD)
    assert closes(closed) == [("c/alice", "m.ipynb", 120, "last tab closed")]
    assert state == {}


def test_a_culled_server_whose_tab_brings_it_back_goes_on():
    state, _ = sampler.sessions({}, [server("n.ipynb")], 1000, PERIOD)
    state, closed = sampler.sessions(state, [], 1060, PERIOD)  # stopped: wait a sample
    assert closed == [] and state["c/alice"]["gone"] == 1060
    state, closed = sampler.sessions(state, [server("n.ipynb")], 1120, PERIOD)
    assert closed == [] and state["c/alice"] == {"open": {"n.ipynb": 1000}, "gone": None}


def test_a_stopped_server_closes_its_notebooks_at_the_next_sample():
    state, _ = sampler.sessions({}, [server("n.ipynb")], 1000, PERIOD)
    state, _ = sampler.sessions(state, [], 1060, PERIOD)
    state, closed = sampler.sessions(state, [], 1120, PERIOD)
    assert closes(closed) == [("c/alice", "n.ipynb", 60, "server stopped")]
    assert state == {}
    # back, without the tab
    state, _ = sampler.sessions({}, [server("n.ipynb")], 1000, PERIOD)
    state, _ = sampler.sessions(state, [], 1060, PERIOD)
    state, closed = sampler.sessions(state, [server()], 1120, PERIOD)
    assert closes(closed) == [("c/alice", "n.ipynb", 60, "server stopped")]


def test_a_server_that_did_not_answer_keeps_its_sessions():
    state, _ = sampler.sessions({}, [server("n.ipynb")], 1000, PERIOD)
    again, closed = sampler.sessions(state, [server(answered=False)], 1060, PERIOD)
    assert closed == [] and again == state


def test_a_session_runs_from_its_open(tmp_path, open_store):
    db = open_store(tmp_path / "events.db")
    store.append(db, [store.Event(900, "open", "c", "alice", "n.ipynb"),
                      store.Event(100, "open", "c", "alice", "m.ipynb")], "k", 900)
    state, _ = sampler.sessions({}, [server("n.ipynb", "m.ipynb")], 1000, PERIOD, db)
    # m's open is too old to be this session's: from the sample
    assert state["c/alice"]["open"] == {"n.ipynb": 900, "m.ipynb": 1000}


@pytest.mark.parametrize("answer", [
    None, {}, [{"path": "x"}], [{"kernel": {"connections": 1}}], "garbage", [1],
])
def test_sessions_that_are_not_jupyters_are_an_error(answer):
    with pytest.raises(AskError):
        sampler._connected_notebooks(answer)


def test_connected_notebooks():
    assert sampler._connected_notebooks([
        {"path": "a.ipynb", "kernel": {"connections": 2}}, {"path": "b.ipynb", "kernel": {"connections": 0}},
        {"path": "c.ipynb", "kernel": {"connections": "1"}}]) == {"a.ipynb"}
