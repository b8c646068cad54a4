"""A course's own image, built from the Containerfile its repository ships.

``nbh-course-build@<course>.service`` runs ``build`` as the containers'
account, with the unit's memory, CPU and time limits: ``podman build`` of
``.nbhosting/Containerfile`` (or ``Dockerfile``) with the course's work tree
as its context, no network and no pull, ``FROM`` the site's base image
(the build argument ``NBH_BASE_IMAGE``). The image is tagged with the
commit it was built from, and recorded in ``builds/<course>.json``: a
course whose image setting is "course" starts its next servers from it.
Running servers keep the image they started with.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

from . import courses, paths, podman
from .jupyter_run import DEFAULT_IMAGE, PODMAN

REPOSITORY = "localhost/nbhosting/course-"


def base_image() -> str:
    return os.environ.get("NBH_IMAGE") or DEFAULT_IMAGE


def containerfile_digest(course: courses.Course) -> str | None:
    """What autopull compares with the last build, to know whether to build again."""
    relative = courses.containerfile(course)
    if relative is None:
        return None
    return hashlib.sha256((course.path / relative).read_bytes()).hexdigest()


def build(name: str) -> str:
    """Build and record the course's image (in its unit); the image's name."""
    course = courses.load(name)
    relative = courses.containerfile(course)
    if relative is None:
        raise courses.CourseError(f"course {name!r} ships no {' or '.join(courses.CONTAINERFILES)}")
    commit = courses.status(course).commit
    if commit is None:
        raise courses.CourseError(f"course {name!r} was never updated (nbh course update {name})")
    digest = containerfile_digest(course)
    image = f"{REPOSITORY}{name}:{commit}"
    print(f"building {image} from {relative} at {commit}, FROM {base_image()}", flush=True)
    argv = [PODMAN, "build", "--pull=never", "--network=none", "--layers=false",
            "--build-arg", f"NBH_BASE_IMAGE={base_image()}", "--file", str(course.path / relative),
            "--tag", image, "--", str(course.path)]
    # Its output goes to the unit's journal, where the staff pages follow it.
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=sys.stdout, stderr=subprocess.STDOUT,
                            check=False)
    if result.returncode != 0:
        raise courses.CourseError(f"podman build failed (exit status {result.returncode}); "
                                  "the previous image stays in use")
    record = {"image": image, "commit": commit, "containerfile": digest, "time": time.time()}
    paths.BUILDS_DIR.mkdir(parents=True, exist_ok=True)
    courses._write_atomically(paths.BUILDS_DIR / f"{name}.json", json.dumps(record))
    return image


def in_use_by_settings() -> set[str]:
    """The built images that a course's image setting names."""
    used = set()
    for course in courses.all_courses():
        record = courses.build_record(course.name)
        if course.image == courses.OWN_IMAGE and record:
            used.add(record["image"])
    return used


def collect(dry_run: bool = False) -> list[str]:
    """Remove course images that no setting and no container (running or not) uses."""
    listing = podman.run(["images", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
                          f"reference={REPOSITORY}*"])
    if listing.returncode != 0:
        raise OSError(f"podman images failed: {listing.stderr.strip()[-300:]}")
    containers = podman.run(["ps", "--all", "--format", "{{.Image}}"])
    if containers.returncode != 0:
        raise OSError(f"podman ps failed: {containers.stderr.strip()[-300:]}")
    keep = in_use_by_settings() | set(containers.stdout.split())
    removed = []
    for image in listing.stdout.split():
        if image.startswith(REPOSITORY) and image not in keep:
            if not dry_run:
                podman.run(["rmi", "--ignore", image])
            removed.append(f"image {image}")
    if removed and not dry_run:
        # Their layers, and those of a build that tagged the same name again.
        podman.run(["image", "prune", "--force"])
    return removed
