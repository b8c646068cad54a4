"""The front end's capacity limits, without systemd (the sandbox tests them for real)."""

import asyncio

import pytest

from nbhosting import capacity, config, paths
from nbhosting.names import Instance


def test_token_bucket_bursts_then_refills():
    now = [0.0]
    bucket = capacity.TokenBucket(3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] += 19  # a token every 20 s
    assert not bucket.take()
    now[0] += 1
    assert bucket.take() and not bucket.take()
    now[0] += 3600  # never more than the burst
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


class Running:
    """What systemd lists as running: only running_instances is called."""

    def __init__(self, *units: str):
        self.units = set(units)

    async def running_instances(self) -> set[str]:
        await asyncio.sleep(0)
        return set(self.units)


@pytest.fixture
def workspaces(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "WORKSPACES_DIR", tmp_path)
    return tmp_path


def test_starts_under_way_count_against_the_cap(workspaces):
    """Two new students at once, room for one: systemd lists neither yet."""
    admission = capacity.Admission(config.Limits(max_running=2))
    systemd = Running(Instance("c", "running").service)
    started, refused = [], []

    async def enter(student: str) -> None:
        try:
            async with admission.admit(systemd, Instance("c", student)):
                await asyncio.sleep(0.05)  # the start, under way
                started.append(student)
        except capacity.HostFull as error:
            refused.append((student, error.reason))

    async def both():
        await asyncio.gather(enter("a"), enter("b"))

    asyncio.run(both())
    assert started == ["a"] and refused == [("b", "max_running")]
    # A student already running is not counted against itself.
    asyncio.run(enter("running"))
    assert started == ["a", "running"]


def test_new_workspaces_only_are_rate_limited(workspaces):
    admission = capacity.Admission(config.Limits(new_workspaces_per_minute=1))
    systemd = Running()

    async def enter(student: str) -> None:
        async with admission.admit(systemd, Instance("c", student)):
            pass

    asyncio.run(enter("new1"))
    with pytest.raises(capacity.HostFull) as error:
        asyncio.run(enter("new2"))
    assert error.value.reason == "new_workspaces_per_minute"
    (workspaces / "c" / "known").mkdir(parents=True)
    asyncio.run(enter("known"))
