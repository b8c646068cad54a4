"""Students not seen for ``cull.dormant_after`` become dormant: PID 1 forgets them.

A student's started listening socket keeps four units loaded in systemd (the
socket, the proxy and the server it triggers, the server's upstream socket),
and systemd goes over the loaded units at every server start: each visit cost
PID 1 in proportion to the students enrolled. ``nbh gc`` (nbh-gc.timer)
stops the sockets of the students not seen for that long and whose server
is not running; systemd then unloads their units. Their workspaces are not
touched. Their next entry starts the socket again, as for a new student
(web/base.py, Frontend._start).

"Seen" is the mtime of a stamp that the front end sets at every entry, in a
folder that is nbh's alone (/var/lib/nbhosting/seen/<course>/<student>): no
container reaches it, a request to a student's socket does not change it,
and it outlives restarts. A socket with no stamp (started by `nbh start`)
counts as seen when it began to listen.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .names import BadName, Instance
from .systemd import RUNNING_STATES, NoSuchUnit, Systemd, SystemdError

SEEN_DIR = paths.DATA_DIR / "seen"
UNIT_PATTERNS = ["nbh-jupyter@*.socket", "nbh-proxy@*.service", "nbh-jupyter@*.service", "nbh-upstream@*.socket"]


def stamp(instance: Instance) -> Path:
    return SEEN_DIR / instance.course / instance.student


def mark_seen(instance: Instance) -> None:
    """At every entry, before the start: a utime, or the stamp's first making.
    Small enough for the event loop (one system call when the stamp exists)."""
    path = stamp(instance)
    try:
        os.utime(path, follow_symlinks=False)
        return
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    os.utime(path, follow_symlinks=False)


def last_seen(instance: Instance) -> float | None:
    """The latest entry's time (seconds since the epoch), or None if none is known."""
    try:
        return os.stat(stamp(instance), follow_symlinks=False).st_mtime
    except FileNotFoundError:
        return None


@dataclass
class Sleeper:
    instance: Instance
    seen: float  # seconds since the epoch
    failed: list[str]  # its failed units, which stay loaded until reset

    def words(self, now: float) -> str:
        return f"units of {self.instance.path}, not seen for {(now - self.seen) / 86400:.1f} days (dormant)"


async def sleepers(systemd: Systemd, dormant_after: int, now: float | None = None) -> list[Sleeper]:
    """Students with units loaded, no server running, not seen for dormant_after seconds."""
    now = time.time() if now is None else now
    loaded: dict[Instance, list[tuple[str, str]]] = {}
    for unit, active, _sub in await systemd.list_units(UNIT_PATTERNS):
        try:
            loaded.setdefault(Instance.from_unit(unit), []).append((unit, active))
        except (ValueError, BadName):
            continue  # not ours
    found = []
    for instance, units in loaded.items():
        if any(active in RUNNING_STATES for unit, active in units if unit != instance.socket):
            continue  # its server runs (or starts, or stops): the cull's, not ours
        seen = last_seen(instance)
        if seen is None:
            try:
                seen = await systemd.active_enter_usec(instance.socket) / 1e6
            except NoSuchUnit:
                continue
            if not seen:
                seen = now - dormant_after  # loaded, never started: nothing to keep
        if now - seen >= dormant_after:
            found.append(Sleeper(instance, seen, [unit for unit, active in units if active == "failed"]))
    return sorted(found, key=lambda s: s.instance.path)


async def put_to_sleep(systemd: Systemd, sleeper: Sleeper) -> bool:
    """Stop the socket, forget failed units; False if the student came back meanwhile.

    An entry marks the student seen before it starts anything: a stamp newer
    than the verdict means a comeback under way, whose socket is started
    again if the stop went first.
    """
    instance = sleeper.instance
    if (last_seen(instance) or 0) > sleeper.seen:
        return False
    try:
        await systemd.stop(instance.socket)
        for unit in sleeper.failed:
            try:
                await systemd.reset_failed(unit)
            except NoSuchUnit:
                pass
        if (last_seen(instance) or 0) > sleeper.seen:
            await systemd.start(instance.socket)
            return False
    except SystemdError as error:  # this student's alone: the next run tries again
        print(f"nbh gc: {instance.path} not put to sleep: {error}", file=sys.stderr)
        return False
    return True
