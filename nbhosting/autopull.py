"""``nbh course autopull`` (nbh-autopull.timer): keep courses at their branch.

For each course with autopull on and not archived, start its update unit
and wait for it; when the update brought a Containerfile other than the one
the course's image was last built from, and autobuild is on, start its
build unit too. The same units, so the same journal, as the staff pages.
"""

from __future__ import annotations

from . import course_images, courses, courseunits
from .systemd import Systemd, SystemdError


async def _run(systemd: Systemd, action: str, name: str) -> courseunits.Outcome:
    run = await courseunits.start(systemd, action, name)
    async for _line in courseunits.follow(run, systemd):
        pass
    return await courseunits.outcome(systemd, run)


def needs_build(course: courses.Course) -> bool:
    digest = course_images.containerfile_digest(course)
    record = courses.build_record(course.name)
    return digest is not None and (record is None or record.get("containerfile") != digest)


async def pull_all(systemd: Systemd) -> list[tuple[bool, str]]:
    """What was done, (ok, line) per run; a failure of one course does not stop the others."""
    said = []
    for course in courses.all_courses():
        if not course.autopull or course.archived:
            continue
        try:
            outcome = await _run(systemd, "update", course.name)
            said.append((outcome.ok, f"{course.name}: update {'ok' if outcome.ok else 'failed'}: {outcome.message}"))
            if outcome.ok and course.autobuild and needs_build(course):
                outcome = await _run(systemd, "build", course.name)
                said.append((outcome.ok, f"{course.name}: build {'ok' if outcome.ok else 'failed'}: "
                                          f"{outcome.message}"))
        except (SystemdError, OSError) as error:
            said.append((False, f"{course.name}: {error}"))
    return said
