"""Course updates: how long from a push to a course's repository until the
new commit is checked out, with nbh-autopull.timer at its shortest period;
and one `nbh course update` (its unit, started and followed) for scale.

``python -m bench --courses`` runs these alone; ``make bench`` runs them too.
"""

from __future__ import annotations

import json
import os
import random
import time

from devtools import sandbox

from .common import percentiles

COURSE = "bench-autopull"
REPO = f"/var/lib/nbhosting/sandbox-repos/{COURSE}"
PERIOD = 10  # seconds: config.Courses' least
RUNS = int(os.environ.get("NBH_BENCH_PUSHES", "7"))
NOTEBOOK = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def _git(*args: str) -> str:
    git = ["git", "-C", REPO, "-c", "user.name=Teacher", "-c", "user.email=teacher@example.org"]
    return sandbox.run([*git, *args], user="nbh-courses").stdout.strip()


def _push(number: int) -> str:
    sandbox.path(f"{REPO}/n{number}.ipynb").write_text(NOTEBOOK)
    sandbox.run(["chown", "-R", "nbh-courses:nbh-courses", REPO])
    _git("add", "--all")
    _git("commit", "--quiet", "--message", f"push {number}")
    return _git("rev-parse", "--short", "HEAD")


def _checked_out() -> str | None:
    record = sandbox.path(f"/var/lib/nbhosting/courses/.{COURSE}.update")
    try:
        return json.loads(record.read_text())["commit"]
    except (FileNotFoundError, ValueError, KeyError):
        return None


def run() -> dict:
    sandbox.run(["rm", "-rf", REPO, f"/var/lib/nbhosting/courses/{COURSE}", f"/etc/nbhosting/courses/{COURSE}.toml"])
    sandbox.run(["install", "-d", "-o", "nbh-courses", "-g", "nbh-courses", REPO])
    sandbox.run(["git", "init", "--quiet", "--initial-branch=main", REPO], user="nbh-courses")
    _push(0)
    sandbox.run(["nbh", "course", "create", COURSE, REPO])
    updates = []
    for number in range(RUNS):
        _push(1000 + number)
        began = time.monotonic()
        sandbox.run(["nbh", "course", "update", COURSE])
        updates.append(time.monotonic() - began)
    config = sandbox.path("/etc/nbhosting/nbhosting.toml")
    saved = config.read_text()
    config.write_text(saved + f"\n[courses]\nautopull_period = {PERIOD}\n")
    try:
        sandbox.run(["nbh", "setup"])
        sandbox.run(["nbh", "course", "set", COURSE, "autopull=yes"])
        sandbox.run(["systemctl", "restart", "nbh-autopull.timer"])
        delays = []
        for number in range(RUNS):
            # A push comes at any moment of the timer's period.
            time.sleep(random.uniform(0, PERIOD))
            commit = _push(number + 1)
            began = time.monotonic()
            while _checked_out() != commit:
                if time.monotonic() - began > 10 * PERIOD:
                    raise RuntimeError(f"autopull did not check out {commit} in {10 * PERIOD} s")
                time.sleep(0.05)
            delays.append(time.monotonic() - began)
    finally:
        sandbox.run(["systemctl", "stop", "nbh-autopull.timer"])
        config.write_text(saved)
        sandbox.run(["nbh", "setup"])
    return {"period_s": PERIOD, "push_to_checkout_s": percentiles(delays), "update_unit_s": percentiles(updates)}


def table(results: dict) -> list[str]:
    push, update = results["push_to_checkout_s"], results["update_unit_s"]
    return [
        f"| push to checkout, autopull every {results['period_s']} s | {push['p50']:.1f} s ({push['p95']:.1f} s) | "
        f"<= period + update |",
        f"| `nbh course update` (its unit, followed) | {update['p50']:.2f} s ({update['p95']:.2f} s) | |",
    ]
