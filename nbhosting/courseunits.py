"""The staff's actions on a course, as systemd units: update, build, delete, rename.

``nbh-course-update@<course>.service`` and ``nbh-course-build@<course>.service``
are oneshot units: the front end, the ``nbh`` command and nbh-autopull all
start them (over D-Bus; polkit lets the front end's account start exactly
these names), and follow their output in the journal, where an operator
finds it too (``journalctl -u nbh-course-update@<course>``). A run is one
invocation of the unit: its lines are the journal entries of that
InvocationID, and PID 1's own entry that ends its job says how it ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from systemd import journal

from . import lifecycle
from .names import check_course
from .systemd import (
    MANAGER,
    MANAGER_PATH,
    PROPERTIES,
    SERVICE,
    UNIT,
    Systemd,
    SystemdError,
)

ACTIONS = ("update", "build", "delete", "rename")
# How long a started unit may take to become a run of its own (a queued
# job waits for what it needs, such as the podman service for a build).
START_TIMEOUT = 60
# Seconds without a line after which follow() asks the journal again
# whether the run has ended (its end may have been rotated away).
IDLE_CHECK = 2.0


@dataclass(frozen=True)
class Run:
    unit: str
    invocation: str  # systemd's InvocationID, 32 hex digits


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str  # one line: what the run said last, or why it failed


def unit_name(action: str, course: str) -> str:
    """Checked names only: the course as names.py allows it (a rename's:
    OLD:NEW, both), the action one of ours."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    if action == "rename":
        return f"nbh-course-rename@{lifecycle.rename_instance(*lifecycle.parse_rename_instance(course))}.service"
    return f"nbh-course-{action}@{check_course(course)}.service"


async def _invocation(systemd: Systemd, unit: str) -> str:
    path = await systemd.unit_path(unit)
    (value,) = await systemd._call(path, PROPERTIES, "Get", "ss", [UNIT, "InvocationID"])
    return bytes(value.value).hex()


async def start(systemd: Systemd, action: str, course: str) -> Run:
    """Start a run (or join the one under way) and return it once systemd gave it an id.

    The job is not waited for: a oneshot's start job ends with the run,
    which follow() and outcome() wait for.
    """
    unit = unit_name(action, course)
    if await systemd.active_state(unit) == "failed":
        await systemd.reset_failed(unit)
    before = await _invocation(systemd, unit)
    state = await systemd.active_state(unit)
    if state in ("activating", "active") and before.strip("0"):
        return Run(unit, before)  # a run under way: follow that one
    (job,) = await systemd._call(MANAGER_PATH, MANAGER, "StartUnit", "ss", [unit, "replace"])
    done = systemd._job(job)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT
    # InvocationID is set when the unit begins to activate; there is no
    # signal for it on the manager's interface, so look until it changes.
    while loop.time() < deadline:
        now = await _invocation(systemd, unit)
        if now != before and now.strip("0"):
            return Run(unit, now)
        if done.done():
            result = done.result()
            raise SystemdError(f"{unit}: job {result} before the run began")
        await asyncio.sleep(0.02)
    raise SystemdError(f"{unit}: did not begin in {START_TIMEOUT} s")


def _reader(run: Run) -> journal.Reader:
    # Not this_boot(): it reads /proc/sys, which units with ProcSubset=pid do
    # not see; an invocation id is unique anyway.
    reader = journal.Reader()
    # The run's own output, and what PID 1 says of it (Starting, Finished, Failed).
    reader.add_match(_SYSTEMD_INVOCATION_ID=run.invocation)
    reader.add_disjunction()
    reader.add_match(INVOCATION_ID=run.invocation, _PID="1")
    reader.seek_head()
    return reader


def _is_end(entry: dict) -> bool:
    """PID 1's entry that ends the run's job: done, failed, canceled, ..."""
    return entry.get("_PID") == 1 and "JOB_RESULT" in entry and entry.get("JOB_TYPE") in ("start", "stop")


def _line(entry: dict) -> str:
    message = entry.get("MESSAGE", "")
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    return message


async def follow(run: Run, systemd: Systemd | None = None) -> AsyncIterator[str]:
    """The run's lines from its start, as they are written, until it ends.

    With `systemd`, a run whose end is not in the journal (rotated away)
    ends too, once systemd says it is over.
    """
    reader = _reader(run)
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    loop.add_reader(reader.fileno(), changed.set)
    try:
        while True:
            for entry in reader:
                if _is_end(entry):
                    yield _line(entry)
                    return
                yield _line(entry)
            try:
                await asyncio.wait_for(changed.wait(), IDLE_CHECK)
            except TimeoutError:
                if systemd is not None and await _over(systemd, run):
                    return
            changed.clear()
            reader.process()
    finally:
        loop.remove_reader(reader.fileno())
        reader.close()


async def _over(systemd: Systemd, run: Run) -> bool:
    if await _invocation(systemd, run.unit) != run.invocation:
        return True
    return await systemd.active_state(run.unit) not in ("activating", "active", "deactivating")


async def outcome(systemd: Systemd, run: Run) -> Outcome:
    """After follow() ended: did the run succeed, and its last word."""
    path = await systemd.unit_path(run.unit)
    (props,) = await systemd._call(path, PROPERTIES, "GetAll", "s", [SERVICE])
    values = {key: variant.value for key, variant in props.items()}
    current = await _invocation(systemd, run.unit)
    lines = await asyncio.to_thread(_output, run)
    last = lines[-1] if lines else ""
    if current != run.invocation:
        # A later run: this one's result is only in the journal.
        failed = any("Failed with result" in line for line in lines)
        return Outcome(not failed, last)
    result, status = values["Result"], values["ExecMainStatus"]
    if result == "success":
        return Outcome(True, last)
    reason = f"exit status {status}" if result == "exit-code" else result
    return Outcome(False, f"{reason}: {last}" if last else reason)


def _output(run: Run) -> list[str]:
    """The run's own output (not PID 1's), already written."""
    reader = journal.Reader()
    reader.add_match(_SYSTEMD_INVOCATION_ID=run.invocation)
    reader.seek_head()
    return [_line(entry) for entry in reader if entry.get("_PID") != 1]


def last_run(action: str, course: str) -> Run | None:
    """The unit's most recent run in the journal, to show a finished one."""
    unit = unit_name(action, course)
    reader = journal.Reader()
    reader.add_match(_SYSTEMD_UNIT=unit)
    reader.add_disjunction()
    reader.add_match(UNIT=unit, _PID="1")
    reader.seek_tail()
    entry = reader.get_previous()
    while entry:
        invocation = entry.get("_SYSTEMD_INVOCATION_ID") or entry.get("INVOCATION_ID")
        if invocation:
            return Run(unit, invocation)
        entry = reader.get_previous()
    return None
