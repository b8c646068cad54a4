"""``nbh sample``, run by nbh-sample.timer once a minute: the host and each
course as they are now, and the notebooks whose last tab went away.

Every running server is asked, as ``nbh cull`` asks it (nbhosting/ask.py: its
own upstream socket, bounded answers), for its kernels and its sessions. A
course's sample counts its running servers, kernels, busy kernels and the
servers' memory; the host's adds load, memory and the free space of the
workspaces' and the containers' file systems; a course's, what its
workspaces on disks of their own take (disks.py). Each sample is a journal
entry (NBH_EVENT=sample), which nbh-events.service keeps in the store.

``close``: a notebook whose kernel had a websocket connected at the last
sample and has none now lost its last tab, within a sample period. A server
that stopped closes its notebooks at the sample after the one that found it
stopped, unless it came back with them connected: an open tab brings a
culled server back by itself, and its session goes on. The session's
duration runs from the notebook's ``open`` (from the store), or else from
the first sample that saw it connected, until the sample that saw it gone.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import config, courses, cull, disks, events, store, tokens
from .ask import AskError, get_json
from .names import BadName, Instance
from .systemd import Systemd, SystemdError

STATE_PATH = Path(os.environ.get("STATE_DIRECTORY", "/var/lib/nbhosting/sampler")) / "sessions.json"
DISKS = {"workspaces": "/var/lib/nbhosting/workspaces", "containers": "/var/lib/nbhosting/containers"}


@dataclass
class Server:
    instance: Instance
    memory: int | None = None
    kernels: int = 0
    busy: int = 0
    connected: set[str] = field(default_factory=set)  # notebooks with a tab
    answered: bool = True


def _connected_notebooks(sessions: object) -> set[str]:
    """Notebooks whose kernel has a websocket open, from /api/sessions."""
    if not isinstance(sessions, list):
        raise AskError("answered sessions that are not a list")
    found = set()
    for session in sessions:
        try:
            path, connections = session["path"], session["kernel"]["connections"]
        except (TypeError, KeyError):
            raise AskError("answered sessions that are not Jupyter's") from None
        if isinstance(path, str) and isinstance(connections, int) and connections > 0:
            found.add(path[:400])
    return found


async def ask(systemd: Systemd, instance: Instance, secret: bytes) -> Server:
    server = Server(instance)
    try:
        server.memory = (await systemd.state(instance.service)).MemoryCurrent
    except SystemdError:
        pass
    token = tokens.instance_token(secret, instance)
    try:
        kernels = await get_json(instance, "api/kernels?no_track_activity=1", token)
        sessions = await get_json(instance, "api/sessions?no_track_activity=1", token)
        server.kernels = len(kernels)
        server.busy = sum(kernel["execution_state"] == "busy" for kernel in kernels)
        server.connected = _connected_notebooks(sessions)
    except (AskError, TypeError, KeyError) as error:
        server.answered = False
        server.kernels = server.busy = 0
        server.connected = set()
        print(f"nbh sample: {error}")
    return server


def host() -> dict[str, float]:
    """Load, memory and free disk of the host, as journal fields."""
    load1, load5, load15 = os.getloadavg()
    meminfo = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, value = line.partition(":")
        meminfo[name] = int(value.split()[0]) * 1024
    fields = {"NBH_LOAD1": f"{load1:.2f}", "NBH_LOAD5": f"{load5:.2f}", "NBH_LOAD15": f"{load15:.2f}",
              "NBH_MEM_TOTAL_BYTES": meminfo["MemTotal"], "NBH_MEM_AVAILABLE_BYTES": meminfo["MemAvailable"]}
    for name, folder in DISKS.items():
        try:
            disk = os.statvfs(folder)
        except OSError:
            continue
        fields[f"NBH_{name.upper()}_FREE_BYTES"] = disk.f_bavail * disk.f_frsize
        fields[f"NBH_{name.upper()}_SIZE_BYTES"] = disk.f_blocks * disk.f_frsize
    return fields


def totals(servers: list[Server]) -> dict[str, int]:
    memory = [s.memory for s in servers if s.memory is not None]
    return {"NBH_SERVERS": len(servers), "NBH_KERNELS": sum(s.kernels for s in servers),
            "NBH_BUSY_KERNELS": sum(s.busy for s in servers), "NBH_MEMORY_BYTES": sum(memory),
            "NBH_UNANSWERED": sum(not s.answered for s in servers)}


# -- close ------------------------------------------------------------------

def load_state(path: Path) -> dict:
    """{course/student: {"open": {notebook: since}, "gone": time or None}}"""
    try:
        state = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def save_state(path: Path, state: dict) -> None:
    aside = path.with_suffix(".new")
    aside.write_text(json.dumps(state))
    aside.replace(path)


def opened_at(db: sqlite3.Connection | None, instance: Instance, notebook: str, after: float) -> float | None:
    """The latest `open` of that notebook by that student after `after`, from the store."""
    if db is None:
        return None
    row = db.execute("SELECT max(time) FROM events WHERE course = ? AND event = 'open' AND time >= ? "
                     "AND student = ? AND notebook = ?", (instance.course, after, instance.student, notebook))
    return row.fetchone()[0]


@dataclass
class Close:
    instance: Instance
    notebook: str
    duration: float
    reason: str


def sessions(previous: dict, servers: list[Server], now: float, period: float,
             db: sqlite3.Connection | None = None) -> tuple[dict, list[Close]]:
    """The new state, and the notebooks closed since the previous sample."""
    state, closed = {}, []
    by_path = {server.instance.path: server for server in servers}
    for path, server in by_path.items():
        before = previous.get(path, {})
        was_open = before.get("open", {})
        if not server.answered:  # no verdict: as it was
            if before:
                state[path] = before
            continue
        now_open = {}
        for notebook in server.connected:
            since = was_open.get(notebook)
            if since is None:  # a new session: since its open, if there is one this recent
                since = opened_at(db, server.instance, notebook, now - 2 * period - 60) or now
            now_open[notebook] = since
        gone_at = before.get("gone")
        for notebook, since in was_open.items():
            if notebook not in now_open:
                end = gone_at or now
                reason = "server stopped" if gone_at else "last tab closed"
                closed.append(Close(server.instance, notebook, max(0.0, end - since), reason))
        if now_open:
            state[path] = {"open": now_open, "gone": None}
    for path, before in previous.items():
        if path in by_path or not before.get("open"):
            continue
        if before.get("gone"):  # stopped at the last sample too, and not back
            instance = _instance(path)
            for notebook, since in before["open"].items():
                if instance:
                    closed.append(Close(instance, notebook, max(0.0, before["gone"] - since), "server stopped"))
        else:
            state[path] = {"open": before["open"], "gone": now}
    return state, closed


def _instance(path: str) -> Instance | None:
    try:
        return Instance.from_path(path)
    except BadName:
        return None


# -- the whole sample -------------------------------------------------------

async def sample(systemd: Systemd, settings: config.Config, state_path: Path = STATE_PATH,
                 store_path: Path = store.DEFAULT_PATH) -> tuple[dict[str, dict], list[Close]]:
    """Sample, log, and return the samples by course ("" is the host) and the closes."""
    secret = tokens.read_secret()
    limit = asyncio.Semaphore(cull.AT_ONCE)

    async def one(instance: Instance) -> Server:
        async with limit:
            return await ask(systemd, instance, secret)

    servers = list(await asyncio.gather(*(one(i) for i in await cull.running(systemd))))
    now = time.time()
    names = {course.name for course in _courses()} | {s.instance.course for s in servers}
    samples = {name: {**totals([s for s in servers if s.instance.course == name]),
                      "NBH_DISK_BYTES": disks.used(name)} for name in sorted(names)}
    samples[""] = {**totals(servers), **host()}
    for name, fields in samples.items():
        where = {"NBH_COURSE": name, "NBH_SCOPE": "course"} if name else {"NBH_SCOPE": "host"}
        events.journal_only("sample", f"sample of {name or 'the host'}: {fields['NBH_SERVERS']} servers, "
                            f"{fields['NBH_KERNELS']} kernels", **where, **{k: str(v) for k, v in fields.items()})
    try:
        db = store.open_reader(store_path)
    except store.StoreError:
        db = None
    try:
        state, closed = sessions(load_state(state_path), servers, now, settings.events.sample_period, db)
    finally:
        if db is not None:
            db.close()
    for close in closed:
        events.send("close", close.instance,
                    f"{close.instance.path} closed {close.notebook} after {close.duration:.0f} s ({close.reason})",
                    NBH_NOTEBOOK=close.notebook, NBH_DURATION_SECONDS=f"{close.duration:.0f}",
                    NBH_REASON=close.reason)
    save_state(state_path, state)
    return samples, closed


def _courses() -> list[courses.Course]:
    try:
        return courses.all_courses()
    except (OSError, courses.CourseError):
        return []
