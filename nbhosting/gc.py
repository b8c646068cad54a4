"""``nbh gc`` (nbh-gc.timer, daily): what belongs to no running unit.

Units clean up after themselves (ExecStopPost=, RuntimeDirectory=,
RemoveOnStop=); this catches what a crash of the host, of podman or of
systemd itself may still leave: containers, listening sockets and runtime
folders of servers that are not running, per-student origins' links to
sockets that are gone; the courses' images that no setting and no
container uses any more, and the static files of images that are gone. It also puts the students not seen
for cull.dormant_after to sleep (dormant.py): nothing of theirs stays loaded
in systemd.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

from . import course_images, dormant, events, jupyter_static, origins, podman
from .names import BadName, Instance
from .systemd import Systemd

SOCKETS = Path("/run/nbhosting/nb")
UPSTREAM = Path("/run/nbhosting/upstream")
RUNTIME = Path("/run/nbh-jupyter")


def _pairs(root: Path, suffix: str = "") -> list[tuple[Path, Instance]]:
    found = []
    for path in root.glob(f"*/*{suffix}"):
        try:
            found.append((path, Instance(path.parent.name, path.name.removesuffix(suffix))))
        except BadName:
            continue  # not ours
    return found


def _dangling(folder: Path) -> list[Path]:
    """The links of the folder that lead nowhere now."""
    try:
        return [path for path in folder.iterdir() if path.is_symlink() and not path.exists()]
    except FileNotFoundError:
        return []


# Things named in the gc's journal event, at most (all are counted).
EVENT_NAMES = 100
# Students put to sleep at once: their sockets' stops, in parallel.
AT_ONCE = 32


async def collect(systemd: Systemd, dry_run: bool = False, dormant_after: int | None = None) -> list[str]:
    """Remove (or, dry, list) what no active unit owns, and (with
    dormant_after) unload the students not seen for that long; what was
    done, in words."""
    removed = []

    # One listing of the active units first, so that thousands of enrolled
    # students' sockets cost one call; what it does not list is asked again,
    # unit by unit, in case it started since.
    states = ["active", "activating", "deactivating"]
    listed = {unit for unit, _, _ in await systemd.list_units(dormant.UNIT_PATTERNS, states)}

    async def active(unit: str) -> bool:
        return unit in listed or await systemd.active_state(unit) in states

    listing = podman.run(["ps", "--all", "--format", "{{.Names}}"])
    if listing.returncode != 0:
        raise OSError(f"podman ps failed: {listing.stderr.strip()[-300:]}")
    for name in listing.stdout.split():
        try:
            instance = Instance.from_container(name)
        except BadName:
            continue
        if not await active(instance.service):
            if not dry_run:
                podman.remove(name)
            removed.append(f"container {name}")
    for folder, unit in ((SOCKETS, "socket"), (UPSTREAM, "upstream")):
        for path, instance in _pairs(folder, ".sock"):
            if not await active(getattr(instance, unit)):
                if not dry_run:
                    path.unlink(missing_ok=True)
                removed.append(f"socket {path}")
    for path, instance in _pairs(RUNTIME):
        if not await active(instance.service):
            if not dry_run:
                shutil.rmtree(path, ignore_errors=True)
            removed.append(f"runtime folder {path}")
    removed += course_images.collect(dry_run)
    removed += jupyter_static.collect(dry_run)
    asleep = 0
    if dormant_after is not None:
        now = time.time()
        sleepers = await dormant.sleepers(systemd, dormant_after, now)
        limit = asyncio.Semaphore(AT_ONCE)

        async def one(sleeper: dormant.Sleeper) -> bool:
            async with limit:
                return dry_run or await dormant.put_to_sleep(systemd, sleeper)

        for sleeper, done in zip(sleepers, await asyncio.gather(*map(one, sleepers))):
            if done:
                removed.append(sleeper.words(now))
                asleep += 1
    # Per-student origins: a key's link to a socket that is gone (its pair
    # put to sleep, or stopped by hand) leads to 503 until the next entry
    # makes it again; last, so that the sleepers' go today.
    for path in _dangling(origins.KEYS_DIR):
        if not dry_run:
            path.unlink(missing_ok=True)
        removed.append(f"key link {path.name}")
    if removed and not dry_run:
        named = "; ".join(removed[:EVENT_NAMES]) + (f"; and {len(removed) - EVENT_NAMES} more"
                                                    if len(removed) > EVENT_NAMES else "")
        events.journal_only("gc", f"nbh gc removed {len(removed)}: {named}",
                            NBH_REMOVED=str(len(removed)), NBH_DORMANT=str(asleep))
    return removed
