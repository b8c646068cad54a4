"""A course deleted (nbhosting/lifecycle.py, nbh-course-delete@.service):
refused while its servers run unless forced, its students' work kept in an
archive only root reaches, removed only when asked; from `nbh` and, for
admins only, from the staff pages."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from nbhosting.names import Instance

from .conftest import nbh
from .sandbox_helpers import mounted, run_code
from .staff_helpers import logged_in, staff_events
from .web_helpers import entry, entry_path, get

pytestmark = pytest.mark.sandbox

NOTEBOOK = "w1/w1-s1-c1-intro"
ARCHIVES = "/var/lib/nbhosting/archives"


def deleted_events(sandbox, course: str) -> list[dict]:
    return sandbox.journal("NBH_EVENT=course-delete", f"NBH_COURSE={course}")


def test_a_course_is_not_deleted_under_its_students_then_forced_its_work_is_archived(sandbox, systemd, student):
    course = f"gone-{uuid.uuid4().hex[:6]}"
    sandbox.make_course(course)
    assert nbh(sandbox, "course", "set", course, "disk_max=64M").returncode == 0
    alice = Instance(course, student)
    try:
        entry(course, NOTEBOOK, alice.student)
        assert run_code(sandbox, systemd, alice, 'open("/home/jovyan/work/answer.txt", "w").write("42")\n'
                                                 'print("saved")') == "saved\n"
        assert mounted(sandbox, course, alice.student)  # her own disk
        refused = nbh(sandbox, "course", "delete", course)
        assert refused.returncode == 1 and "1 servers of" in refused.stderr + refused.stdout, refused
        assert systemd.state(alice.service).ActiveState == "active"
        assert nbh(sandbox, "course", "show", course).returncode == 0

        done = nbh(sandbox, "course", "delete", course, "--force")
        assert done.returncode == 0, done.stdout + done.stderr
        archive = re.search(rf"deleted, its students' work kept in ({ARCHIVES}/{course}-\d{{8}}-\d{{6}})",
                            done.stdout)
        assert archive, done.stdout
        archive = archive[1]
        # gone for everyone: the settings, the checkout, the students' units, the entry
        assert nbh(sandbox, "course", "show", course).returncode == 1
        assert not sandbox.path(f"/var/lib/nbhosting/courses/{course}").exists()
        for unit in alice.units:
            assert systemd.state(unit).ActiveState == "inactive", unit
        assert get(entry_path(course, NOTEBOOK, alice.student)).status == 404
        # her work, as she left it: the image of her disk (unmounted) and the folder it was mounted on
        assert mounted(sandbox, course, alice.student) == ""
        image = f"{archive}/disks/{alice.student}.ext4"
        sandbox.run("mkdir", "-p", "/run/nbh-test-archive")
        sandbox.run("mount", "-o", "ro,loop", image, "/run/nbh-test-archive")
        try:
            assert sandbox.path("/run/nbh-test-archive/answer.txt").read_text() == "42"
            assert json.loads(sandbox.path(f"/run/nbh-test-archive/{NOTEBOOK}.ipynb").read_text())["cells"]
        finally:
            sandbox.run("umount", "/run/nbh-test-archive")
        assert sandbox.path(f"{archive}/settings.toml").is_file()
        assert sandbox.path(f"{archive}/workspaces/{alice.student}").is_dir()
        # root's alone: neither the front end's account nor the containers' sees into it
        for account in ("nbh", "nbh-jupyter", "nobody"):
            assert sandbox.run("ls", archive, user=account, check=False).returncode != 0, account
        (event,) = deleted_events(sandbox, course)
        assert event["NBH_ARCHIVE"] == archive and event["_SYSTEMD_UNIT"] == f"nbh-course-delete@{course}.service"
        # a course of the same name is a new one: none of the old students' work is in it
        sandbox.make_course(course)
        entry(course, NOTEBOOK, alice.student)
        assert not sandbox.path(f"/var/lib/nbhosting/workspaces/{course}/{alice.student}/answer.txt").exists()
    finally:
        systemd.stop_instance(alice)


def test_only_root_removes_the_work_and_only_when_asked(sandbox, student):
    course = f"purged-{uuid.uuid4().hex[:6]}"
    sandbox.make_course(course)
    entry(course, NOTEBOOK, student)
    sandbox.run("systemctl", "stop", Instance(course, student).service)
    # the front end's account may start the unit (polkit), not remove students' work
    refused = sandbox.run("nbh", "course", "delete", course, "--remove-work", user="nbh", check=False)
    assert refused.returncode == 1 and "only root" in refused.stderr, refused
    done = nbh(sandbox, "course", "delete", course, "--remove-work")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "removed, as --remove-work asked" in done.stdout
    assert not [p for p in sandbox.path(ARCHIVES).iterdir() if p.name.startswith(f"{course}-")]
    assert [e.get("NBH_REMOVED") for e in deleted_events(sandbox, course)] == [None, "yes"]
    assert nbh(sandbox, "course", "delete", course).returncode == 1  # no such course now: one line
    assert nbh(sandbox, "course", "delete", "../etc").returncode != 0


def test_from_the_staff_pages_admins_only_and_the_name_typed_again(sandbox, systemd, admin, teacher, courses,
                                                                  student):
    course = f"staffgone-{uuid.uuid4().hex[:6]}"
    sandbox.make_course(course)
    assert nbh(sandbox, "staff", "grant", teacher, course).returncode == 0
    alice = Instance(course, student)
    try:
        entry(course, NOTEBOOK, alice.student)
        # the course's own staff: no button, and the POST is refused
        mine = logged_in(teacher)
        assert 'id="delete-course"' not in mine.get(f"/staff/courses/{course}").text
        assert mine.post(f"/staff/courses/{course}/delete", {"confirm": course, "force": "yes"}).status_code == 403
        assert systemd.state(alice.service).ActiveState == "active"
        client = logged_in(admin)
        assert 'id="delete-course"' in client.get(f"/staff/courses/{course}").text
        assert client.post(f"/staff/courses/{course}/delete", {"confirm": "oops"}).status_code == 400
        # not forced: the unit refuses, and says why on the run's page
        response = client.post(f"/staff/courses/{course}/delete", {"confirm": course})
        assert response.status_code == 303, response.text[:300]
        log = client.get(response.headers["Location"].replace(f"/{course}/delete?", f"/{course}/delete/log?"))
        assert "1 servers of" in log.text and "-- failed" in log.text, log.text
        assert systemd.state(alice.service).ActiveState == "active"
        # forced: stopped, then deleted; the run's page still shows, the course is gone
        response = client.post(f"/staff/courses/{course}/delete", {"confirm": course, "force": "yes"})
        assert response.status_code == 303, response.text[:300]
        run_page = response.headers["Location"]
        log = client.get(run_page.replace(f"/{course}/delete?", f"/{course}/delete/log?"))
        assert "settings moved to" in log.text and "-- done" in log.text, log.text
        assert client.get(run_page).status_code == 200
        assert client.get(f"/staff/courses/{course}").status_code == 404
        assert mine.get(run_page).status_code == 403
        assert systemd.state(alice.service).ActiveState == "inactive"
        assert [e["NBH_COURSE"] for e in staff_events(sandbox, "staff-delete", admin)][-1:] == [course]
        assert len(deleted_events(sandbox, course)) == 1
    finally:
        systemd.stop_instance(alice)


def test_a_renamed_course_keeps_its_students_work_under_the_new_name(sandbox, systemd, student):
    old, new = f"before-{uuid.uuid4().hex[:6]}", f"after-{uuid.uuid4().hex[:6]}"
    sandbox.make_course(old)
    assert nbh(sandbox, "course", "set", old, "disk_max=64M").returncode == 0
    page = "b" * 26
    try:
        entry(old, NOTEBOOK, student)
        assert run_code(sandbox, systemd, Instance(old, student),
                        'open("/home/jovyan/work/answer.txt", "w").write("42")\n'
                        f'open("/home/jovyan/shared/{page}.html", "w").write("<p>my page")\nprint("saved")'
                        ) == "saved\n"
        (old_id,) = [p.name for p in sandbox.path(f"/var/lib/nbhosting/shared/{old}").iterdir()]
        assert get(f"/shared/{old}/{old_id}/{page}", referer=None).status == 200
        refused = nbh(sandbox, "course", "rename", old, new)
        assert refused.returncode == 1 and "1 servers of" in refused.stderr + refused.stdout, refused
        assert nbh(sandbox, "course", "rename", old, old).returncode != 0
        assert nbh(sandbox, "course", "rename", old, "../x").returncode != 0

        done = nbh(sandbox, "course", "rename", old, new, "--force")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"{old}: is {new} (1 students' shared pages under their new ids)" in done.stdout, done.stdout
        assert nbh(sandbox, "course", "show", old).returncode == 1
        assert nbh(sandbox, "course", "show", new).returncode == 0
        assert get(entry_path(old, NOTEBOOK, student)).status == 404
        for unit in Instance(old, student).units:
            assert systemd.state(unit).ActiveState == "inactive", unit
        # her work, on her disk, under the new name
        entry(new, NOTEBOOK, student)
        assert mounted(sandbox, new, student)
        assert run_code(sandbox, systemd, Instance(new, student),
                        'print(open("/home/jovyan/work/answer.txt").read())') == "42\n"
        # her shared page, at its new address only
        (new_id,) = [p.name for p in sandbox.path(f"/var/lib/nbhosting/shared/{new}").iterdir()]
        assert new_id != old_id
        response = get(f"/shared/{new}/{new_id}/{page}", referer=None)
        assert response.status == 200 and b"<p>my page" in response.body
        assert get(f"/shared/{old}/{old_id}/{page}", referer=None).status == 404
        (event,) = sandbox.journal("NBH_EVENT=course-rename", f"NBH_COURSE={new}")
        assert event["NBH_OLD_NAME"] == old
    finally:
        for course in (old, new):
            systemd.stop_instance(Instance(course, student))


def test_a_rename_onto_a_course_is_refused_and_changes_nothing(sandbox, systemd, admin, teacher, courses):
    taken, mine = courses
    before = sorted(p.name for p in sandbox.path("/etc/nbhosting/courses").iterdir())
    client = logged_in(admin)
    response = client.post(f"/staff/courses/{mine}/rename", {"new_name": taken})
    assert response.status_code == 303, response.text[:300]
    log = client.get(response.headers["Location"].replace("/rename?", "/rename/log?"))
    assert f"{taken} is taken" in log.text and "-- failed" in log.text, log.text
    assert sorted(p.name for p in sandbox.path("/etc/nbhosting/courses").iterdir()) == before
    for bad in ("", mine, "../x", "a:b"):
        assert client.post(f"/staff/courses/{mine}/rename", {"new_name": bad}).status_code == 400, bad
    # the course's own staff may not rename it, nor see a rename's run
    assert nbh(sandbox, "staff", "grant", teacher, mine).returncode == 0
    theirs = logged_in(teacher)
    assert 'id="rename-course"' not in theirs.get(f"/staff/courses/{mine}").text
    assert theirs.post(f"/staff/courses/{mine}/rename", {"new_name": "x1"}).status_code == 403
    assert theirs.get(response.headers["Location"]).status_code == 403
    assert nbh(sandbox, "course", "show", mine).returncode == 0
