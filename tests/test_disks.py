"""A workspace on a disk of its own (limits.disk_max, nbhosting/disks.py):
a student who fills it gets ENOSPC, and nobody else notices."""

from __future__ import annotations

import json
import os
import re
import uuid

import pytest

from nbhosting.names import Instance

from .conftest import nbh
from .course_helpers import CONTAINERFILE, EMPTY_NOTEBOOK, commit, make_repo, show
from .sandbox_helpers import mounted, run_code, run_unit, settled, stored, wait_for
from .staff_helpers import logged_in
from .web_helpers import entry, entry_path, get

pytestmark = pytest.mark.sandbox

NOTEBOOK, OTHER = "w1/w1-s1-c1-intro.ipynb", "notebooks/01.00-IPython-Beyond-Normal-Python.ipynb"
FILL = """
import errno, os
written = 0
try:
    with open("/home/jovyan/work/fill", "wb") as out:
        while written < 200 << 20:
            out.write(b"x" * (1 << 20))
            written += 1 << 20
            out.flush()
            os.fsync(out.fileno())
except OSError as error:
    print("refused", errno.errorcode[error.errno], written >> 20)
else:
    print("wrote", written >> 20)
"""
MORE = """
import errno
try:
    open("/home/jovyan/work/more", "wb").write(b"x" * (8 << 20))
except OSError as error:
    print("refused", errno.errorcode[error.errno])
"""
SAVE = 'open("/home/jovyan/work/answer.txt", "w").write("42"); print(open("/home/jovyan/work/answer.txt").read())'


@pytest.fixture
def bounded(sandbox) -> str:
    """A course whose new workspaces have 64 MiB each."""
    name = f"disk-{uuid.uuid4().hex[:6]}"
    sandbox.make_course(name)
    assert nbh(sandbox, "course", "set", name, "disk_max=64M").returncode == 0
    return name


def test_a_student_who_fills_their_disk_gets_enospc_and_nobody_else_notices(sandbox, systemd, bounded, student):
    mallory, alice = Instance(bounded, student + "m"), Instance(bounded, student + "a")
    image = sandbox.path(f"/var/lib/nbhosting/disks/{bounded}/{mallory.student}.ext4")
    free_before = os.statvfs(sandbox.path("/var/lib/nbhosting/workspaces")).f_bavail
    try:
        for instance in (mallory, alice):
            entry(bounded, NOTEBOOK.removesuffix(".ipynb"), instance.student)
        # the notebook was copied onto the student's own disk, mounted over the workspace
        source = mounted(sandbox, bounded, mallory.student)
        assert re.match(r"/dev/loop\d+\s+ext4\s+rw,nosuid,nodev,.*discard", source), source
        assert json.loads(sandbox.path(f"/var/lib/nbhosting/workspaces/{bounded}/{mallory.student}/{NOTEBOOK}")
                          .read_text())["cells"]
        assert not sandbox.path(f"/var/lib/nbhosting/workspaces/{bounded}/{mallory.student}/lost+found").exists()
        out = run_code(sandbox, systemd, mallory, FILL)
        refused = re.fullmatch(r"refused ENOSPC (\d+)\n", out)
        assert refused and 40 <= int(refused[1]) <= 64, out
        # the image holds what was written (sparse, at most its size); the host did not pay for it
        assert image.stat().st_blocks * 512 <= 64 << 20
        # what the course's disks take: `nbh status`, and the sampler (unit as installed) into the store
        status = nbh(sandbox, "status", bounded).stdout
        assert re.search(rf"{mallory.student} +active/running .* (4\d|5\d|6[0-4])\.\dM\n", status), status
        assert re.search(rf"\n{bounded} +(4\d|5\d|6[0-4])\.\dM\n", status), status
        run_unit(sandbox, "nbh-sample.service")
        settled(sandbox)
        (sample,) = stored(sandbox, "--event", "sample", "--course", bounded, "--since", "1m")[-1:]
        assert 40 << 20 <= int(sample["disk_bytes"]) <= 66 << 20, sample
        assert os.statvfs(sandbox.path("/var/lib/nbhosting/workspaces")).f_bavail > free_before - (100 << 20) // 4096
        # the other student of the course saves, and so does nbh-web for them
        assert run_code(sandbox, systemd, alice, SAVE) == "42\n"
        assert entry(bounded, OTHER.removesuffix(".ipynb"), alice.student)
        assert sandbox.path(f"/var/lib/nbhosting/workspaces/{bounded}/{alice.student}/{OTHER}").is_file()
        # Mallory's own writes fail until she deletes, and deleting gives the host its blocks back
        assert run_code(sandbox, systemd, mallory, MORE) == "refused ENOSPC\n"
        assert run_code(sandbox, systemd, mallory, 'import os; os.remove("/home/jovyan/work/fill"); os.sync()\n'
                        + SAVE) == "42\n"
        # the loop device punches the freed blocks out of the image in its own time
        # (at once on the tmpfs under the host's sandbox, a moment later on a disk)
        wait_for(lambda: image.stat().st_blocks * 512 < 16 << 20, timeout=15, what="the freed blocks to go")
        # stopped: unmounted, the disk and its files kept; started again: there
        systemd.stop_instance(mallory)
        assert mounted(sandbox, bounded, mallory.student) == ""
        assert not any(sandbox.path(f"/var/lib/nbhosting/workspaces/{bounded}/{mallory.student}").iterdir())
        systemd.start_instance(mallory)
        assert run_code(sandbox, systemd, mallory, 'print(open("/home/jovyan/work/answer.txt").read())') == "42\n"
    finally:
        for instance in (mallory, alice):
            systemd.stop_instance(instance)
    assert mounted(sandbox, bounded, alice.student) == ""


def test_no_account_but_root_reads_or_lists_the_disks(sandbox, systemd, bounded, student):
    instance = Instance(bounded, student)
    try:
        entry(bounded, NOTEBOOK.removesuffix(".ipynb"), student)
        run_code(sandbox, systemd, instance, 'open("/home/jovyan/work/secret.txt", "w").write("mine")')
    finally:
        systemd.stop_instance(instance)
    image = f"/var/lib/nbhosting/disks/{bounded}/{student}.ext4"
    # a container that escaped to the containers' account, the front end, a local account
    for user in ("nbh-jupyter", "nbh", "nobody"):
        for argv in (["cat", image], ["ls", "/var/lib/nbhosting/disks"], ["ls", f"/var/lib/nbhosting/disks/{bounded}"],
                     ["losetup", "--find", "--show", image]):
            result = sandbox.run(*argv, user=user, check=False)
            assert result.returncode != 0 and "mine" not in result.stdout, (user, argv, result.stdout)
    # the front end finds out whether a workspace has a disk by its name only; no one else does
    assert sandbox.run("test", "-e", image, user="nbh", check=False).returncode == 0
    for user in ("nbh-jupyter", "nobody"):
        assert sandbox.run("test", "-e", image, user=user, check=False).returncode == 1


def test_a_workspace_made_before_the_bound_stays_a_folder(sandbox, systemd, course, student):
    instance = Instance(course, student)
    try:
        entry(course, NOTEBOOK.removesuffix(".ipynb"), student)
        systemd.stop_instance(instance)
        assert nbh(sandbox, "course", "set", course, "disk_max=64M").returncode == 0
        entry(course, NOTEBOOK.removesuffix(".ipynb"), student)
        assert mounted(sandbox, course, student) == ""
        assert not sandbox.path(f"/var/lib/nbhosting/disks/{course}/{student}.ext4").exists()
        assert sandbox.path(f"/var/lib/nbhosting/workspaces/{course}/{student}/{NOTEBOOK}").is_file()
    finally:
        nbh(sandbox, "course", "set", course, "disk_max=")
        systemd.stop_instance(instance)


def test_files_put_under_an_unmounted_disk_are_never_hidden(sandbox, systemd, bounded, student, admin):
    """The front end refuses to write there; a file put there anyway (by
    root's hand) fails the start rather than vanish under the mount."""
    instance = Instance(bounded, student)
    folder = f"/var/lib/nbhosting/workspaces/{bounded}/{student}"
    try:
        entry(bounded, NOTEBOOK.removesuffix(".ipynb"), student)
        systemd.stop_instance(instance)
        # the front end, asked for the stopped student's work: no write, no read under the mount point
        client = logged_in(admin)
        page = client.get(f"/staff/courses/{bounded}/students/{student}")
        assert page.status_code == 200 and 'id="unmounted"' in page.text, page.text[:500]
        assert client.get(f"/staff/courses/{bounded}/students/{student}/notebooks.zip").status_code == 409
        assert not any(sandbox.path(folder).iterdir())
        sandbox.run("sh", "-c", f"echo stray > {folder}/stray.txt")
        response = get(entry_path(bounded, NOTEBOOK.removesuffix(".ipynb"), student), timeout=120)
        assert response.status in (200, 503), response.status
        assert systemd.state(instance.service).ActiveState != "active"
        log = sandbox.run("journalctl", "--no-pager", "-u", f"{instance.service}", "-o", "cat").stdout
        assert "files in the folder of a disk of its own" in log, log[-2000:]
        assert sandbox.path(f"{folder}/stray.txt").read_text() == "stray\n"
        assert mounted(sandbox, bounded, student) == ""
    finally:
        sandbox.run("rm", "-f", f"{folder}/stray.txt")
        systemd.stop_instance(instance)


def test_a_build_that_fills_its_disk_fails_alone_and_keeps_the_previous_image(sandbox, course_name, setup_config):
    """limits.build_disk_max: the course's build storage is a disk of its own
    (nbh-course-disk@, bound to nbh-course-build@ by the drop-in `nbh setup`
    writes), which a Containerfile fills without the host noticing."""
    setup_config('\n[limits]\nbuild_disk_max = "2G"\n')
    units = (f"nbh-course-disk@{course_name}.service", f"nbh-course-build@{course_name}.service")
    verified = sandbox.run("systemd-analyze", "verify", "--man=no", *units, check=False)
    assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr
    repo = make_repo(sandbox, course_name, {"a.ipynb": EMPTY_NOTEBOOK, "extra.py": "ANSWER = 42\n",
                                            ".nbhosting/Containerfile": CONTAINERFILE})
    assert nbh(sandbox, "course", "create", course_name, repo).returncode == 0
    built = nbh(sandbox, "course", "build", course_name)
    assert built.returncode == 0, built.stdout + built.stderr
    made = sandbox.run("journalctl", "--no-pager", "-o", "cat", "-u", f"nbh-course-disk@{course_name}.service").stdout
    assert "is a new disk of its own of 2147483648 bytes" in made, made
    image = sandbox.path(f"/var/lib/nbh-build/disks/{course_name}.ext4")
    assert image.stat().st_size == 2 << 30
    record = sandbox.path(f"/var/lib/nbhosting/builds/{course_name}.json").read_text()
    before = show(sandbox, course_name)["image"]
    # mounted while the build ran, not after
    assert sandbox.run("findmnt", f"/var/lib/nbh-build/courses/{course_name}", check=False).returncode == 1
    assert not any(sandbox.path(f"/var/lib/nbh-build/courses/{course_name}").iterdir())
    host = os.statvfs(sandbox.path("/var/lib/nbh-build"))
    assert host.f_bavail * host.f_frsize > 4 << 30  # room for the 3 GB below: ENOSPC can only be the bound's

    commit(sandbox, repo, {".nbhosting/Containerfile": CONTAINERFILE
                           + "RUN dd if=/dev/zero of=/fill bs=1M count=3000\n"})
    assert nbh(sandbox, "course", "update", course_name).returncode == 0
    failed = nbh(sandbox, "course", "build", course_name)
    assert failed.returncode == 1, failed.stdout
    assert "No space left on device" in failed.stdout + failed.stderr, failed.stdout[-3000:]
    assert sandbox.path(f"/var/lib/nbhosting/builds/{course_name}.json").read_text() == record
    assert show(sandbox, course_name)["image"] == before
    assert image.stat().st_blocks * 512 <= 2 << 30


def test_a_student_who_fills_the_courses_shared_disk_stops_its_sharing_only(sandbox, systemd, setup_config, student):
    """limits.shared_disk_max: a course's shared pages (which its students'
    code can write) are a disk of their own, mounted until shutdown, and
    mounted again by nbh-shared-disks.service after a reboot."""
    setup_config('\n[limits]\nshared_disk_max = "64M"\n')
    course = f"shared-{uuid.uuid4().hex[:6]}"
    sandbox.make_course(course)
    mallory, alice = Instance(course, student + "m"), Instance(course, student + "a")
    folder = f"/var/lib/nbhosting/shared/{course}"
    page = "a" * 26
    try:
        for instance in (mallory, alice):
            systemd.start_instance(instance)
        assert re.match(r"/dev/loop\d+\s+ext4\s+rw,nosuid,nodev,.*discard",
                        sandbox.run("findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", folder).stdout), folder
        # Alice's page, as the share menu writes it: in her own folder, under the course's
        assert run_code(sandbox, systemd, alice, f'open("/home/jovyan/shared/{page}.html", "w").write("<p>mine")'
                                                 '; print("shared")') == "shared\n"
        assert run_code(sandbox, systemd, mallory, FILL.replace("/home/jovyan/work/fill", "/home/jovyan/shared/fill")
                        ).startswith("refused ENOSPC"), "the course's shared disk holds 64M"
        assert run_code(sandbox, systemd, mallory, SAVE) == "42\n"  # her workspace is not that disk
        (alice_id,) = [p.name for p in sandbox.path(folder).iterdir()
                       if (p / f"{page}.html").exists()]
        assert get(f"/shared/{course}/{alice_id}/{page}", referer=None).status == 200
    finally:
        for instance in (mallory, alice):
            systemd.stop_instance(instance)
    # a reboot, as far as the disk knows: unmounted; the unit that nbh-web wants mounts it again
    sandbox.run("umount", folder)
    assert not any(sandbox.path(folder).iterdir())
    sandbox.run("systemctl", "restart", "nbh-shared-disks.service")
    assert sandbox.run("findmnt", folder, check=False).returncode == 0
    response = get(f"/shared/{course}/{alice_id}/{page}", referer=None)
    assert response.status == 200 and b"<p>mine" in response.body
    assert "nbh-shared-disks.service" in sandbox.run("systemctl", "show", "-P", "Wants", "nbh-web.service").stdout
