"""``nbh gc`` (nbh-gc.timer, daily): what belongs to no running unit.

Units clean up after themselves (ExecStopPost=, RuntimeDirectory=,
RemoveOnStop=); this catches what a crash of the host, of podman or of
systemd itself may still leave: containers, listening sockets and runtime
folders of servers that are not running; and the courses' images that no
setting and no container uses any more.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from . import course_images, events, podman
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


async def collect(systemd: Systemd, dry_run: bool = False) -> list[str]:
    """Remove (or, dry, list) what no active unit owns; what was removed, in words."""
    removed = []

    async def active(unit: str) -> bool:
        return await systemd.active_state(unit) in ("active", "activating", "deactivating")

    listing = podman.run(["ps", "--all", "--format", "{{.Names}}"])
    if listing.returncode != 0:
        raise OSError(f"podman ps failed: {listing.stderr.strip()[-300:]}")
    for name in listing.stdout.split():
        course, _, student = name.removeprefix("nbh.").partition(".")
        try:
            instance = Instance(course, student)
        except BadName:
            continue
        if name == instance.container and not await active(instance.service):
            if not dry_run:
                podman.run(["rm", "--force", "--ignore", "--time", "0", name])
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
    if removed and not dry_run:
        events.journal_only("gc", f"nbh gc removed {len(removed)}: " + "; ".join(removed),
                            NBH_REMOVED=str(len(removed)))
    return removed
