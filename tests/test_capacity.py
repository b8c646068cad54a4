"""The front end's capacity limits, without systemd (the sandbox tests them for real)."""

import asyncio
import re

import pytest

from nbhosting import capacity, config, paths
from nbhosting.names import Instance

from .web_helpers import NOTEBOOK, assert_nothing_started_or_written, entry, entry_path, get, sse


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


# In the sandbox: the limits as a student meets them, through nginx.

@pytest.fixture
def limits_config(sandbox_config):
    """nbh-web restarted with these [limits] (and [web] extra), then as the sandbox has it."""
    return lambda limits, web="": sandbox_config(web + "[limits]\n" + limits)


def assert_refused_and_not_started(sandbox, systemd, instance: Instance, response, reason: str) -> None:
    assert response.status == 503, response.body[:300]
    assert response.getheader("Retry-After") == "120"
    assert b"try again in a few minutes" in response.body
    events = sandbox.journal("NBH_EVENT=full", f"NBH_STUDENT={instance.student}")
    assert [(e["NBH_REASON"], e["NBH_STATUS"]) for e in events] == [(reason, "503")]
    assert_nothing_started_or_written(sandbox, systemd, instance.course, instance.student)


@pytest.mark.sandbox
def test_the_cap_on_running_servers(sandbox, systemd, course, student, limits_config):
    first, second, late = (Instance(course, f"{student}-{n}") for n in ("a", "b", "c"))
    limits_config(f"max_running = {len(systemd.running_instances()) + 2}\n")
    try:
        for instance in (first, second):
            assert entry(course, NOTEBOOK, instance.student).startswith(instance.base_url)
        response = get(entry_path(course, NOTEBOOK, late.student))
        assert b"The host is full" in response.body
        assert_refused_and_not_started(sandbox, systemd, late, response, "max_running")
        # A student whose server runs still gets in.
        assert entry(course, NOTEBOOK, first.student).startswith(first.base_url)
        # One stops: the next new student gets in.
        systemd.stop_instance(second)
        assert entry(course, NOTEBOOK, late.student).startswith(late.base_url)
    finally:
        for instance in (first, second, late):
            systemd.stop_instance(instance)


@pytest.mark.sandbox
def test_the_rate_of_new_workspaces(sandbox, systemd, course, student, limits_config):
    """One a minute: a second new student waits; a known one, even stopped, does not."""
    known, new = Instance(course, f"{student}-a"), Instance(course, f"{student}-b")
    limits_config("new_workspaces_per_minute = 1\n", web="start_page_after = 0\n")
    try:
        assert entry(course, NOTEBOOK, known.student).startswith(known.base_url)
        systemd.stop_instance(known)
        # With the "starting" page (start_page_after = 0), its stream says so.
        response = get(entry_path(course, NOTEBOOK, new.student))
        assert response.status == 200 and b"Starting your notebook" in response.body
        wait = re.search(rb'new EventSource\("([^"]+)"\)', response.body).group(1).decode()
        kind, data = sse(get(wait, referer=None, timeout=120).body)[-1]
        assert kind == "failed" and "try again in a few minutes" in data["message"]
        events = sandbox.journal("NBH_EVENT=full", f"NBH_STUDENT={new.student}")
        assert [e["NBH_REASON"] for e in events] == ["new_workspaces_per_minute"]
        assert_nothing_started_or_written(sandbox, systemd, course, new.student)
        # Its workspace exists: not a new one.
        assert entry(course, NOTEBOOK, known.student).startswith(known.base_url)
    finally:
        for instance in (known, new):
            systemd.stop_instance(instance)


@pytest.mark.sandbox
def test_the_rate_of_new_workspaces_page(sandbox, systemd, course, student, limits_config):
    first, second = Instance(course, f"{student}-a"), Instance(course, f"{student}-b")
    limits_config("new_workspaces_per_minute = 1\n")
    try:
        assert entry(course, NOTEBOOK, first.student).startswith(first.base_url)
        response = get(entry_path(course, NOTEBOOK, second.student))
        assert b"The host is busy" in response.body
        assert_refused_and_not_started(sandbox, systemd, second, response, "new_workspaces_per_minute")
    finally:
        for instance in (first, second):
            systemd.stop_instance(instance)


def test_no_new_workspace_on_a_full_disk(workspaces, monkeypatch):
    admission = capacity.Admission(config.Limits(disk_full=0.95))
    monkeypatch.setattr(capacity, "disk_used", lambda path: 0.96)
    (workspaces / "c" / "known").mkdir(parents=True)

    async def enter(student: str) -> None:
        async with admission.admit(Running(), Instance("c", student)):
            pass

    with pytest.raises(capacity.HostFull) as error:
        asyncio.run(enter("new"))
    assert error.value.reason == "disk" and "96.0% full" in str(error.value)
    asyncio.run(enter("known"))  # a student who has a workspace still starts
    assert 0 < capacity.disk_used(workspaces) < 1


@pytest.mark.sandbox
def test_a_full_disk_turns_new_students_away_and_the_others_save(sandbox, systemd, course, student, limits_config):
    """disk_full just below what the sandbox's disk has in use: as full as it gets."""
    known, new = Instance(course, f"{student}-a"), Instance(course, f"{student}-b")
    try:
        assert entry(course, NOTEBOOK, known.student).startswith(known.base_url)
        used = capacity.disk_used(sandbox.path(str(paths.WORKSPACES_DIR)))
        limits_config(f"disk_full = {used * 0.99:.6f}\n")
        response = get(entry_path(course, NOTEBOOK, new.student))
        assert b"The host is full" in response.body
        assert_refused_and_not_started(sandbox, systemd, new, response, "disk")
        # the student who has a workspace enters, and saves
        assert entry(course, NOTEBOOK, known.student).startswith(known.base_url)
        saved = sandbox.api(known, "api/contents/saved.txt", method="PUT",
                            body={"type": "file", "format": "text", "content": "kept"})
        assert saved["name"] == "saved.txt"
        assert sandbox.path(f"/var/lib/nbhosting/workspaces/{known.path}/saved.txt").read_text() == "kept"
    finally:
        for instance in (known, new):
            systemd.stop_instance(instance)
