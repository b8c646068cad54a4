"""The staff's actions as units: nbh-course-update@, nbh-course-build@ and
nbh-autopull, started as installed in the sandbox, and their effects."""

from __future__ import annotations

import json
import time

import pytest

from nbhosting import podman
from devtools import sandbox as nbh_sandbox
from nbhosting.names import Instance

from .conftest import assert_refused_to_front_end, nbh
from .course_helpers import CONTAINERFILE, EMPTY_NOTEBOOK, commit, make_repo, show

pytestmark = pytest.mark.sandbox


def test_create_update_and_build_through_their_units(sandbox, systemd, course_name, student):
    repo = make_repo(sandbox, course_name, {"a.ipynb": EMPTY_NOTEBOOK, "extra.py": "ANSWER = 42\n",
                                            ".nbhosting/Containerfile": CONTAINERFILE})
    created = nbh(sandbox, "course", "create", course_name, repo)
    assert created.returncode == 0, created.stderr
    # The run's output, live from its journal: git's result and PID 1's end.
    assert f"nbh-course-update@{course_name}.service" in created.stdout
    assert f"{course_name}: at " in created.stdout and "Finished nbh-course-update@" in created.stdout
    tree = sandbox.path(f"/var/lib/nbhosting/courses/{course_name}/a.ipynb")
    owner = int(sandbox.run("id", "-u", "nbh-courses").stdout)
    assert tree.is_file() and tree.stat().st_uid == owner

    built = nbh(sandbox, "course", "build", course_name)
    assert built.returncode == 0, built.stderr
    first = show(sandbox, course_name)["commit"]
    image = f"localhost/nbhosting/course-{course_name}:{first}"
    assert f"Successfully tagged {image}" in built.stdout
    record = json.loads(sandbox.path(f"/var/lib/nbhosting/builds/{course_name}.json").read_text())
    assert record["image"] == image and record["commit"] == first

    assert nbh(sandbox, "course", "set", course_name, "image=course").returncode == 0
    assert show(sandbox, course_name)["image"] == f"course ({image})"
    instance = Instance(course_name, student)
    systemd.start_instance(instance)
    try:
        used = sandbox.run(*podman.argv(["inspect", "--format", "{{.ImageName}}", instance.container]))
        assert used.stdout.strip() == image
        answer = sandbox.run(*podman.argv(["exec", instance.container, "python3", "-c",
                                           "import nbh_extra; print(nbh_extra.ANSWER)"]))
        assert answer.stdout.strip() == "42"
        # A new build reaches the next start; the running server keeps its image.
        second = commit(sandbox, repo, {"extra.py": "ANSWER = 43\n"})
        assert nbh(sandbox, "course", "update", course_name).returncode == 0
        assert nbh(sandbox, "course", "build", course_name).returncode == 0
        again = sandbox.run(*podman.argv(["inspect", "--format", "{{.ImageName}}", instance.container]))
        assert again.stdout.strip() == image
    finally:
        systemd.stop_instance(instance)
    systemd.start_instance(instance)
    try:
        answer = sandbox.run(*podman.argv(["exec", instance.container, "python3", "-c",
                                           "import nbh_extra; print(nbh_extra.ANSWER)"]))
        assert answer.stdout.strip() == "43"
    finally:
        systemd.stop_instance(instance)
    # `nbh gc` removes the first build, which no setting and no container uses.
    gc = nbh(sandbox, "gc")
    assert gc.returncode == 0, gc.stderr
    images = sandbox.run(*podman.argv(["images", "--format", "{{.Repository}}:{{.Tag}}"])).stdout.split()
    assert image not in images and f"localhost/nbhosting/course-{course_name}:{second}" in images


def test_failures_keep_what_was_in_use(sandbox, course_name):
    repo = make_repo(sandbox, course_name, {"a.ipynb": EMPTY_NOTEBOOK, "extra.py": "ANSWER = 42\n",
                                            ".nbhosting/Containerfile": CONTAINERFILE})
    assert nbh(sandbox, "course", "create", course_name, repo).returncode == 0
    assert nbh(sandbox, "course", "build", course_name).returncode == 0
    before = show(sandbox, course_name)
    record = sandbox.path(f"/var/lib/nbhosting/builds/{course_name}.json").read_text()

    assert nbh(sandbox, "course", "set", course_name, "branch=no-such-branch").returncode == 0
    failed = nbh(sandbox, "course", "update", course_name)
    assert failed.returncode == 1
    assert failed.stderr.strip().startswith(f"nbh: {course_name}: update failed: exit status 1")
    assert "no-such-branch" in failed.stderr and len(failed.stderr.splitlines()) == 1
    assert nbh(sandbox, "course", "set", course_name, "branch=").returncode == 0

    commit(sandbox, repo, {".nbhosting/Containerfile": CONTAINERFILE + "RUN exit 3\n"})
    assert nbh(sandbox, "course", "update", course_name).returncode == 0
    failed = nbh(sandbox, "course", "build", course_name)
    assert failed.returncode == 1 and "podman build failed" in failed.stderr, failed.stderr
    assert sandbox.path(f"/var/lib/nbhosting/builds/{course_name}.json").read_text() == record
    assert show(sandbox, course_name)["image"] == before["image"]

    failures = sandbox.journal("NBH_EVENT=failure", f"NBH_COURSE={course_name}")
    assert [event["NBH_ACTION"] for event in failures] == ["update", "build"]
    # A bad URL at creation leaves no course behind.
    created = nbh(sandbox, "course", "create", f"{course_name}x", "/var/lib/nbhosting/nowhere")
    assert created.returncode == 1 and "does not exist" in created.stderr
    assert nbh(sandbox, "course", "show", f"{course_name}x").returncode == 1


# A course's Containerfile that read the host secret on the landed code
# (CVE-2024-1753: the bind mount's source, a link to / in an earlier stage,
# was resolved on the host), and a cache mount that climbs out.
ESCAPES = {
    "line 6: a bind mount from another stage": (
        "ARG NBH_BASE_IMAGE\nFROM $NBH_BASE_IMAGE AS b\nUSER root\nRUN ln -s / /r\nFROM $NBH_BASE_IMAGE\n"
        "RUN --mount=type=bind,from=b,source=/r,target=/h sh -c "
        "'ls /h/run/credentials; cat /h/run/credentials/nbh-jupyter*/nbh-secret'\n"),
    "line 3: a cache mount whose source leaves the build's context": (
        "ARG NBH_BASE_IMAGE\nFROM $NBH_BASE_IMAGE\n"
        "RUN --mount=type=cache,source=../../..,target=/h sh -c 'ls /h/etc/nbhosting; cat /h/etc/nbhosting/secret'\n"),
}


def test_a_containerfile_that_climbs_out_is_refused_before_it_builds(sandbox, course_name):
    repo = make_repo(sandbox, course_name, {"a.ipynb": EMPTY_NOTEBOOK, "extra.py": "ANSWER = 42\n",
                                            ".nbhosting/Containerfile": CONTAINERFILE})
    assert nbh(sandbox, "course", "create", course_name, repo).returncode == 0
    secret = sandbox.path("/etc/nbhosting/secret").read_text().strip()
    for reason, text in ESCAPES.items():
        commit(sandbox, repo, {".nbhosting/Containerfile": text})
        assert nbh(sandbox, "course", "update", course_name).returncode == 0
        built = nbh(sandbox, "course", "build", course_name)
        assert built.returncode == 1 and "nothing was built" in built.stderr, built.stderr
        assert f"refused: .nbhosting/Containerfile, {reason}" in built.stdout, built.stdout
        assert "STEP" not in built.stdout  # podman build never ran
        assert secret not in built.stdout + built.stderr
    assert not sandbox.path(f"/var/lib/nbhosting/builds/{course_name}.json").exists()
    failures = sandbox.journal("NBH_EVENT=failure", f"NBH_COURSE={course_name}")
    assert [event["NBH_ACTION"] for event in failures] == ["build", "build"]


def test_a_build_that_escapes_finds_nothing_to_steal(sandbox, course_name, student):
    """What a build that escaped its container would have: the host as the
    builds' account, in the unit's mount namespace. Entered here while a
    build runs, as such an escape would be."""
    other = f"{course_name}o"
    sandbox.make_course(other)
    repo = make_repo(sandbox, course_name, {"a.ipynb": EMPTY_NOTEBOOK, ".nbhosting/Containerfile": (
        "ARG NBH_BASE_IMAGE\nFROM $NBH_BASE_IMAGE\nRUN echo build-started; sleep 120\n")})
    assert nbh(sandbox, "course", "create", course_name, repo).returncode == 0
    unit = f"nbh-course-build@{course_name}.service"
    sandbox.run("systemctl", "start", "--no-block", unit)
    try:
        deadline = time.monotonic() + 180
        while "build-started" not in sandbox.run("journalctl", "--no-pager", "-u", unit).stdout:
            assert time.monotonic() < deadline, sandbox.run("journalctl", "--no-pager", "-u", unit).stdout
            assert sandbox.run("systemctl", "is-failed", unit, check=False).stdout.strip() != "failed"
            time.sleep(0.5)
        pid = sandbox.run("systemctl", "show", "--value", "-p", "MainPID", unit).stdout.strip()
        assert pid != "0"

        def inside(*argv: str):
            return sandbox.run("nsenter", "-t", pid, "-m", "-n", "-i", "--", "setpriv", "--reuid=nbh-build",
                               "--regid=nbh-build", "--init-groups", *argv, check=False)
        assert inside("id", "-un").stdout.strip() == "nbh-build"
        assert inside("ls", "-A", "/var/lib/nbhosting").stdout.split() == ["builds", "courses", "static"]
        courses_seen = inside("ls", "-A", "/var/lib/nbhosting/courses").stdout.split()
        assert sorted(courses_seen) == sorted([course_name, f".{course_name}.update"])
        assert inside("touch", "/var/lib/nbhosting/builds/x.json").returncode != 0  # root's records
        # the images' static files that nginx serves to every student: root's
        assert inside("touch", "/var/lib/nbhosting/static/x.js").returncode != 0
        assert inside("sh", "-c", "echo '{}' > /var/lib/nbhosting/static/images.json").returncode != 0
        plan = f"/run/nbh-build/{course_name}.plan.json"  # what root's install step acts on
        assert f'"course": "{course_name}"' in inside("cat", plan).stdout
        assert inside("sh", "-c", f"echo '{{}}' > {plan}").returncode != 0
        assert inside("mv", plan, f"/run/nbh-build/{course_name}/moved").returncode != 0
        assert inside("ls", "/var/lib/nbhosting/courses/{}".format(course_name)).stdout.split() == ["a.ipynb"]
        assert inside("touch", f"/var/lib/nbhosting/courses/{course_name}/x").returncode != 0  # read-only
        for hidden in ("/etc/nbhosting/secret", "/etc/nbhosting/lms-key", "/run/nbhosting/web.sock",
                       "/run/nbh-podman", "/var/lib/nbhosting/workspaces"):
            assert inside("ls", hidden).returncode != 0, hidden
        # the kernel's log: /dev/kmsg is readable by any account on the host
        assert inside("test", "-r", "/dev/kmsg").returncode != 0
        secret = sandbox.path("/etc/nbhosting/secret").read_text().strip()
        search = inside("grep", "-rlsF", "-D", "skip", "--exclude-dir=storage", "-e", secret,
                        "/etc", "/run", "/var/lib", "/home", "/root", "/tmp")
        assert search.stdout == "", search.stdout
        assert inside("python3", "-c", "import socket; socket.create_connection(('127.0.0.1', 8780), 2)"
                      ).returncode != 0  # no network: not even the site's nginx
    finally:
        sandbox.run("systemctl", "stop", unit)
    assert not sandbox.path(f"/var/lib/nbhosting/builds/{course_name}.json").exists()


def test_the_front_end_may_start_course_units_and_nothing_near(sandbox, course_name):
    repo = make_repo(sandbox, course_name, {"a.ipynb": EMPTY_NOTEBOOK})
    assert nbh(sandbox, "course", "create", course_name, repo).returncode == 0
    unit = f"nbh-course-update@{course_name}.service"

    def as_front_end(*argv: str):
        return sandbox.run("systemctl", "--no-ask-password", *argv, user="nbh", check=False)

    assert as_front_end("start", unit).returncode == 0
    assert nbh(sandbox, "course", "set", course_name, "branch=gone").returncode == 0
    failed = as_front_end("start", unit)
    assert failed.returncode != 0 and "failed" in failed.stderr and "Access denied" not in failed.stderr
    for verb in ("reset-failed", "stop"):
        done = as_front_end(verb, unit)
        assert done.returncode == 0, (verb, done.stderr)
    refused = [["systemctl", "restart", f"nbh-course-update@{course_name}.service"],
               ["systemctl", "set-property", f"nbh-course-build@{course_name}.service", "MemoryMax=1T"],
               ["systemctl", "start", "nbh-autopull.service"],
               ["systemctl", "set-property", "nbh-web.service", "MemoryMax=1T"]]
    hostile = ["nbh-course-update@..-x.service", "nbh-course-update@a\\x2fb.service",
               "nbh-course-clean@x.service", f"nbh-course-update@{'a' * 33}.service",
               "nbh-course-update@-x.service", "nbh-course-update@x.socket", "nbh-course-delete@..-x.service",
               "nbh-course-delete@x.socket"]
    assert_refused_to_front_end(sandbox, refused, hostile)


def test_a_finished_run_shows_its_whole_log(sandbox, course_name):
    """What the staff pages show of a run that ended: last_run(), then follow() to its end."""
    repo = make_repo(sandbox, course_name, {"a.ipynb": EMPTY_NOTEBOOK})
    assert nbh(sandbox, "course", "create", course_name, repo).returncode == 0
    code = f"""if True:
        import asyncio
        from nbhosting import courseunits
        from nbhosting.systemd import Systemd
        async def main():
            run = courseunits.last_run("update", {course_name!r})
            print("run", run.invocation)
            async for line in courseunits.follow(run):
                print("line", line)
            async with await Systemd.connect() as systemd:
                outcome = await courseunits.outcome(systemd, run)
            print("outcome", outcome.ok, outcome.message)
        asyncio.run(main())
    """
    shown = sandbox.run(nbh_sandbox.python(), "-c", code, timeout=60).stdout.splitlines()
    invocation = shown[0].split()[1]
    assert shown[1] == f"line Starting nbh-course-update@{course_name}.service - Update the course " \
        f"{course_name} from its git repository (nbhosting)..."
    assert any(line.startswith(f"line {course_name}: at ") for line in shown)
    assert shown[-2].startswith(f"line Finished nbh-course-update@{course_name}.service")
    assert shown[-1].startswith(f"outcome True {course_name}: at ")
    entries = sandbox.journal(f"_SYSTEMD_INVOCATION_ID={invocation}")
    assert any(entry["MESSAGE"].startswith(f"{course_name}: at ") for entry in entries)


def test_autopull_updates_and_builds_and_skips_archived(sandbox, course_name):
    followed, archived = course_name, f"{course_name}a"
    files = {"a.ipynb": EMPTY_NOTEBOOK, "extra.py": "ANSWER = 1\n", ".nbhosting/Containerfile": CONTAINERFILE}
    repos = {name: make_repo(sandbox, name, files) for name in (followed, archived)}
    for name in (followed, archived):
        assert nbh(sandbox, "course", "create", name, repos[name]).returncode == 0
    assert nbh(sandbox, "course", "set", followed, "autopull=yes", "autobuild=yes").returncode == 0
    assert nbh(sandbox, "course", "set", archived, "autopull=yes", "archived=yes").returncode == 0
    before = show(sandbox, archived)["commit"]
    new = {name: commit(sandbox, repos[name], {"b.ipynb": EMPTY_NOTEBOOK}) for name in (followed, archived)}
    # As installed: the timer's service, as the front end's account.
    sandbox.run("systemctl", "start", "nbh-autopull.service", timeout=300)
    assert show(sandbox, followed)["commit"] == new[followed]
    assert show(sandbox, archived)["commit"] == before
    # It had never been built: built now, from the new commit.
    record = json.loads(sandbox.path(f"/var/lib/nbhosting/builds/{followed}.json").read_text())
    assert record["commit"] == new[followed]
    # Nothing changed in the Containerfile since: no build the next time.
    newer = commit(sandbox, repos[followed], {"c.ipynb": EMPTY_NOTEBOOK})
    sandbox.run("systemctl", "start", "nbh-autopull.service", timeout=300)
    assert show(sandbox, followed)["commit"] == newer
    assert json.loads(sandbox.path(f"/var/lib/nbhosting/builds/{followed}.json").read_text()) == record
    assert sandbox.run("systemctl", "show", "--value", "-p", "Result", "nbh-autopull.service").stdout.strip() \
        == "success"


def test_a_courses_limits_reach_its_servers(sandbox, course, student):
    instance = Instance(course, student)

    def limits() -> tuple[str, str]:
        shown = dict(line.split("=", 1) for line in sandbox.run(
            "systemctl", "show", "-p", "MemoryMax", "-p", "CPUQuotaPerSecUSec", instance.service).stdout.split())
        return shown["MemoryMax"], shown["CPUQuotaPerSecUSec"]

    assert nbh(sandbox, "course", "set", course, "memory_max=700M", "cpu_quota=50%").returncode == 0
    try:
        assert nbh(sandbox, "start", course, student, user="nbh").returncode == 0
        assert limits() == (str(700 << 20), "500ms")
        assert nbh(sandbox, "stop", course, student, user="nbh").returncode == 0
    finally:
        nbh(sandbox, "course", "set", course, "memory_max=", "cpu_quota=")
    assert nbh(sandbox, "start", course, student, user="nbh").returncode == 0
    assert limits() == (str(2 << 30), "1s")
    assert nbh(sandbox, "stop", course, student, user="nbh").returncode == 0


def test_timers_keep_a_first_run_and_a_period_after_setup(sandbox, sandbox_config):
    """The periods `nbh setup` writes replace the units' own, and each timer
    still has a next run once started (an empty OnActiveSec= resets them all)."""
    sandbox_config("\n[courses]\nautopull_period = 10\n\n[cull]\nperiod = 30\n")
    try:
        sandbox.run("nbh", "setup")
        sandbox.run("systemctl", "restart", "nbh-autopull.timer", "nbh-cull.timer")
        for timer, period in (("nbh-autopull.timer", "10s"), ("nbh-cull.timer", "30s")):
            shown = sandbox.run("systemctl", "show", "-p", "NextElapseUSecMonotonic", "-p", "TimersMonotonic",
                                timer).stdout
            assert "NextElapseUSecMonotonic=infinity" not in shown and "NextElapseUSecMonotonic=0\n" not in shown, \
                shown
            assert f"OnUnitActiveUSec={period}" in shown, shown
        assert "OnActiveUSec=10s" in sandbox.run("systemctl", "show", "-p", "TimersMonotonic",
                                                 "nbh-autopull.timer").stdout
    finally:
        sandbox.path("/etc/nbhosting/nbhosting.toml").write_text(nbh_sandbox.CONFIG)
        sandbox.run("nbh", "setup")
        sandbox.run("systemctl", "stop", "nbh-autopull.timer")  # as the sandbox boots: autopull off,
        sandbox.run("systemctl", "restart", "nbh-cull.timer")  # the cull on, with its own period
