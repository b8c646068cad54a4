"""Nothing waits for the machine to have been up a while: each use of the
monotonic clock, run with its origin near zero (a machine just booted, as
CI's may be), a few seconds in, and months in. The retention that waited
for monotonic() > 3600 failed on a machine up for 15 minutes."""

from __future__ import annotations

import time

import pytest

from nbhosting import capacity, config, follower, staff, store
from nbhosting.store import Event

ORIGINS = [0.0, 5.0, 1e7]


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Stop(Exception):
    pass


class QuietJournal:
    """A journal with nothing new, whose first wait ends the follower's loop."""

    def get_next(self) -> dict:
        return {}

    def wait(self, timeout: float) -> None:
        raise Stop


@pytest.mark.parametrize("origin", ORIGINS)
def test_the_follower_forgets_old_events_as_soon_as_it_starts(origin, tmp_path, monkeypatch, open_store):
    path = tmp_path / "events.db"
    db = open_store(path)
    now = time.time()
    store.append(db, [Event(now - 10 * 86400, "open", "c", "old"), Event(now - 60, "open", "c", "new")], "c1", now)
    monkeypatch.setattr(follower.time, "monotonic", Clock(origin))
    monkeypatch.setattr(follower, "open_journal", lambda cursor: QuietJournal())
    settings = config.Config(events=config.Events(keep_days=7))
    with pytest.raises(Stop):
        follower.follow(path, settings)
    assert [s for (s,) in db.execute("SELECT student FROM events")] == ["new"]


@pytest.mark.parametrize("origin", ORIGINS)
def test_new_workspaces_are_admitted_from_the_first_second(origin):
    clock = Clock(origin)
    bucket = capacity.TokenBucket(2, clock=clock)
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    clock.now += 30
    assert bucket.take() is True


@pytest.mark.parametrize("origin", ORIGINS)
def test_login_limits_start_empty_and_end_with_their_window(origin):
    clock = Clock(origin)
    limiter = staff.LoginLimiter(config.Staff(login_attempts=2, login_window=60), clock=clock)
    assert limiter.retry_after("10.0.0.1", "alice") == 0
    limiter.failed("10.0.0.1", "alice")
    limiter.failed("10.0.0.1", "alice")
    assert limiter.retry_after("10.0.0.1", "alice") == 60
    clock.now += 61
    assert limiter.retry_after("10.0.0.1", "alice") == 0
