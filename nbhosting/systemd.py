"""All of nbhosting's talk with systemd, over D-Bus (dbus-fast, asyncio).

Small async functions that know nothing of the web or the command line.
Names are systemd's own (StartUnit, JobRemoved, ActiveState, ...), so they
can be looked up in org.freedesktop.systemd1(5).

Jobs are waited for as systemctl does (src/shared/bus-wait-for-jobs.c):
Subscribe and the JobRemoved handler come first, once per connection, and
results of jobs that finish before anyone awaits them are kept.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from .names import Instance

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
UNIT = "org.freedesktop.systemd1.Unit"
SERVICE = "org.freedesktop.systemd1.Service"
PROPERTIES = "org.freedesktop.DBus.Properties"
INSTANCE_PATTERNS = ["nbh-jupyter@*.service"]
# The states of a server that holds processes (and memory): what the
# host-wide cap counts.
RUNNING_STATES = ["active", "activating", "deactivating", "reloading"]
JOB_TIMEOUT = 120
# dbus-daemon refuses more pending calls per connection (system bus: 128).
PENDING_CALLS = 64


class SystemdError(Exception):
    """A systemd call that failed; `status` is the HTTP status it maps to."""

    status = 500


class AccessDenied(SystemdError):
    status = 403


class NoSuchUnit(SystemdError):
    status = 404


class UnitFailed(SystemdError):
    """A job that did not end in "done": the message has the unit's Result."""

    status = 503


_ERRORS = {
    "org.freedesktop.DBus.Error.AccessDenied": AccessDenied,
    "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired": AccessDenied,
    "org.freedesktop.systemd1.NoSuchUnit": NoSuchUnit,
    "org.freedesktop.systemd1.LoadFailed": NoSuchUnit,
}


@dataclass
class UnitState:
    unit: str
    ActiveState: str
    SubState: str
    LoadState: str
    since_usec: int
    active_since_usec: int = 0
    MainPID: int = 0
    MemoryCurrent: int | None = None
    Result: str = ""


class Systemd:
    """One connection to systemd's bus; use ``async with Systemd.connect()``."""

    def __init__(self, bus: MessageBus):
        self.bus = bus
        self._jobs: dict[str, asyncio.Future[str]] = {}
        self._pending = asyncio.Semaphore(PENDING_CALLS)

    @classmethod
    async def connect(cls, bus_address: str | None = None) -> Systemd:
        if bus_address:
            bus = await MessageBus(bus_address=bus_address).connect()
        else:
            bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        self = cls(bus)
        bus.add_message_handler(self._on_message)
        reply = await bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="AddMatch", signature="s",
            body=[f"type='signal',sender='{SYSTEMD}',interface='{MANAGER}',member='JobRemoved'"],
        ))
        if reply.message_type == MessageType.ERROR:
            raise SystemdError(f"AddMatch: {reply.body}")
        await self._call(MANAGER_PATH, MANAGER, "Subscribe")
        return self

    async def __aenter__(self) -> Systemd:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        self.bus.disconnect()
        await self.bus.wait_for_disconnect()

    def _on_message(self, message: Message) -> None:
        if (message.message_type == MessageType.SIGNAL and message.member == "JobRemoved"
                and message.interface == MANAGER):
            _id, job, _unit, result = message.body
            future = self._job(job)
            if not future.done():
                future.set_result(result)

    def _job(self, path: str) -> asyncio.Future[str]:
        if path not in self._jobs:
            self._jobs[path] = asyncio.get_running_loop().create_future()
        return self._jobs[path]

    async def _call(self, path: str, interface: str, member: str, signature: str = "", body=()) -> list:
        async with self._pending:
            reply = await self.bus.call(Message(
                destination=SYSTEMD, path=path, interface=interface, member=member,
                signature=signature, body=list(body),
            ))
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body else reply.error_name
            raise _ERRORS.get(reply.error_name, SystemdError)(f"{member}: {text}")
        return reply.body

    async def _job_call(self, method: str, unit: str, *args: str) -> None:
        (job,) = await self._call(MANAGER_PATH, MANAGER, method, "s" * (1 + len(args)), [unit, *args])
        try:
            result = await asyncio.wait_for(self._job(job), JOB_TIMEOUT)
        except TimeoutError:
            raise SystemdError(f"{method} {unit}: no answer from systemd in {JOB_TIMEOUT} s") from None
        finally:
            self._jobs.pop(job, None)
        if result not in ("done", "skipped"):
            raise UnitFailed(f"{method} {unit}: job {result}{await self._why(unit)}")

    async def _why(self, unit: str) -> str:
        """The failed unit's own Result, for a message an operator can act on."""
        for name in [unit, *self._dependencies(unit)]:
            try:
                state = await self.state(name)
            except SystemdError:
                continue
            # A server whose start failed may still be running its ExecStopPost=.
            if state.ActiveState == "failed" or state.Result not in ("", "success"):
                return f" ({name}: {state.Result or 'failed'})"
        return ""

    @staticmethod
    def _dependencies(unit: str) -> list[str]:
        try:
            instance = Instance.from_unit(unit)
        except ValueError:
            return []
        return [u for u in (instance.service, instance.proxy, instance.socket) if u != unit]

    async def start(self, unit: str) -> None:
        await self._job_call("StartUnit", unit, "replace")

    async def stop(self, unit: str, mode: str = "replace") -> None:
        await self._job_call("StopUnit", unit, mode)

    async def restart(self, unit: str) -> None:
        await self._job_call("RestartUnit", unit, "replace")

    async def reset_failed(self, unit: str) -> None:
        await self._call(MANAGER_PATH, MANAGER, "ResetFailedUnit", "s", [unit])

    async def unit_path(self, unit: str) -> str:
        """LoadUnit, not GetUnit: an instance that never ran is still known."""
        (path,) = await self._call(MANAGER_PATH, MANAGER, "LoadUnit", "s", [unit])
        return path

    async def active_state(self, unit: str) -> str:
        """ActiveState alone: two calls, for the hot paths (the entry, the cull)."""
        path = await self.unit_path(unit)
        (value,) = await self._call(path, PROPERTIES, "Get", "ss", [UNIT, "ActiveState"])
        return value.value

    async def active_enter_usec(self, unit: str) -> int:
        """ActiveEnterTimestamp (µs since the epoch; 0: never active)."""
        path = await self.unit_path(unit)
        (value,) = await self._call(path, PROPERTIES, "Get", "ss", [UNIT, "ActiveEnterTimestamp"])
        return value.value

    async def state(self, unit: str) -> UnitState:
        path = await self.unit_path(unit)
        (props,) = await self._call(path, PROPERTIES, "GetAll", "s", [UNIT])
        values = {key: variant.value for key, variant in props.items()}
        state = UnitState(
            unit=unit, ActiveState=values["ActiveState"], SubState=values["SubState"],
            LoadState=values["LoadState"], since_usec=values["StateChangeTimestamp"],
            active_since_usec=values["ActiveEnterTimestamp"],
        )
        if unit.endswith(".service") and state.LoadState == "loaded":
            (service,) = await self._call(path, PROPERTIES, "GetAll", "s", [SERVICE])
            svc = {key: variant.value for key, variant in service.items()}
            state.MainPID = svc["MainPID"]
            memory = svc["MemoryCurrent"]
            state.MemoryCurrent = None if memory == 2**64 - 1 else memory
            state.Result = svc["Result"]
        return state

    async def list_instances(self) -> list[str]:
        """Every nbh-jupyter@ service systemd has loaded, running or not."""
        (units,) = await self._call(
            MANAGER_PATH, MANAGER, "ListUnitsByPatterns", "asas", [[], INSTANCE_PATTERNS]
        )
        return sorted(unit[0] for unit in units)

    async def running_instances(self) -> set[str]:
        """The nbh-jupyter@ services running, starting or stopping: one call,
        systemd filtering, however many students are enrolled."""
        (units,) = await self._call(
            MANAGER_PATH, MANAGER, "ListUnitsByPatterns", "asas", [RUNNING_STATES, INSTANCE_PATTERNS]
        )
        return {unit[0] for unit in units}

    async def set_limits(self, unit: str, memory_max: int, cpu_quota: int) -> None:
        """MemoryMax= and CPUQuota= (percent) of one unit, at run time: kept
        until reboot, so later starts (socket activation included) get them."""
        properties = [["MemoryMax", Variant("t", memory_max)],
                      ["CPUQuotaPerSecUSec", Variant("t", cpu_quota * 10_000)]]
        await self._call(MANAGER_PATH, MANAGER, "SetUnitProperties", "sba(sv)", [unit, True, properties])

    async def has_runtime_properties(self, unit: str) -> bool:
        """Whether set_limits() (or `systemctl set-property --runtime`) left a drop-in."""
        path = await self.unit_path(unit)
        (value,) = await self._call(path, PROPERTIES, "Get", "ss", [UNIT, "DropInPaths"])
        return any("/system.control/" in dropin for dropin in value.value)

    async def list_units(self, patterns: list[str], states: list[str] = ()) -> list[tuple[str, str, str]]:
        """(unit, ActiveState, SubState) of the loaded units that match: one
        call, systemd filtering (fnmatch with FNM_NOESCAPE: a '\\' is itself)."""
        (units,) = await self._call(MANAGER_PATH, MANAGER, "ListUnitsByPatterns", "asas", [list(states), patterns])
        return [(unit[0], unit[3], unit[4]) for unit in units]

    # -- one student's server ---------------------------------------------

    async def start_instance(self, instance: Instance, limits: tuple[int, int] | None = None) -> None:
        """Listening socket, then proxy, which waits for Jupyter to be ready.

        `limits`, (MemoryMax bytes, CPUQuota percent), are the course's own,
        set on the server before it starts.
        """
        for unit in instance.units:
            if await self.active_state(unit) == "failed":
                await self.reset_failed(unit)
        if limits is not None:
            await self.set_limits(instance.service, *limits)
        await self.start(instance.socket)
        await self.start(instance.proxy)

    async def stop_instance(self, instance: Instance) -> None:
        """Stop the server; its socket stays listening for the next visit.

        Irreversibly: an open tab reconnects as soon as the proxy goes, and
        its start job would otherwise replace (cancel) the stop. The start it
        asked for is refused meanwhile, which may fail the socket: make it
        listen again, and that tab's next try starts the server.
        """
        await self.stop(instance.service, "replace-irreversibly")
        if await self.active_state(instance.socket) == "failed":
            await self.reset_failed(instance.socket)
            await self.start(instance.socket)
