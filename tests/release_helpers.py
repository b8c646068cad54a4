"""A student's visit to a booted tree of the other Debian release
(devtools/releases.py): what test_releases and test_rpm's boot of the RPM
there both check."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from nbhosting import access
from devtools import releases
from devtools import sandbox as sandbox_module
from devtools import systems
from nbhosting.names import Instance

from .conftest import COURSE, notebook

VISIT = Path(__file__).resolve().parent / "release_visit.py"


def student_visit(booted: releases.Booted, student: str) -> dict:
    """The test image imported into the tree's podman, a course made, and a
    student's visit through its nginx (tests/release_visit.py), checked."""
    def run_inside(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        return booted.run(*argv, **kwargs)

    systems.import_image(run_inside)
    booted.run("/usr/bin/nbh", "jupyter-static", timeout=600)
    sandbox_module.make_course(COURSE, {"w1/intro.ipynb": notebook("print(6 * 7)"), "w1/data.csv": "x,y\n1,2\n"},
                               run=run_inside, path=booted.path)
    key = access.read_key(booted.path(str(access.LMS_KEY_PATH)))
    entry = (f"/ipythonExercice/{COURSE}/w1/intro.ipynb/{student}?"
             f"{access.signed_query(key, COURSE, 'w1/intro.ipynb', student, 600)}")
    shutil.copy(VISIT, booted.path("/var/tmp/release_visit.py"))
    done = booted.run("python3", "/var/tmp/release_visit.py", entry, "https://lms.example.org/courses/x",
                      check=False, timeout=300)
    instance = Instance(COURSE, student)
    journal = booted.run("journalctl", "--no-pager", "-n", "60", "-u", instance.service, "-u", "nbh-web.service",
                         check=False).stdout
    assert done.returncode == 0, (done.stderr[-3000:], journal[-4000:])
    seen = json.loads(done.stdout)
    assert seen["page"] == 200 and seen["url"].startswith(instance.base_url), seen
    assert "@nbhosting/menus" in seen["extensions"] and seen["menus_entry"] == 200, seen
    assert seen["output"] == "42\n", (seen, journal[-4000:])
    return seen
