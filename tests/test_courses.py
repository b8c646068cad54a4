"""Courses: clone, update, settings and notebooks, from git repositories made here."""

from __future__ import annotations

import os
import stat
import subprocess
import tomllib
from contextlib import contextmanager
from pathlib import Path

import pytest

from nbhosting import cli, courses, paths
from nbhosting.courses import CourseError, UnknownCourse, UnknownNotebook
from nbhosting.names import BadName

from .course_helpers import commit_all, git, write

# the data and configuration folders in tmp_path, for every test (conftest.py)
pytestmark = pytest.mark.usefixtures("dirs")

NOTEBOOKS = [
    "notebooks/01.00-IPython-Beyond-Normal-Python.ipynb",
    "w1/folder.ipynb/inside.ipynb",  # a folder named like a notebook is looked into
    "w1/w1-s1-c1-intro.ipynb",
    "w1/w1-s2-c1-accents.ipynb",
]


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def upstream(tmp_path) -> Path:
    """A course repository laid out like the MOOC's (w1/) and PythonDataScienceHandbook (notebooks/)."""
    repo = tmp_path / "upstream"
    repo.mkdir()
    git(repo, "init", "--quiet", "-b", "main")
    for notebook in ["w1/w1-s1-c1-intro.ipynb", "w1/w1-s2-c1-accents.ipynb",
                     "notebooks/01.00-IPython-Beyond-Normal-Python.ipynb",
                     "w1/.ipynb_checkpoints/w1-s1-c1-intro-checkpoint.ipynb", ".hidden/x.ipynb",
                     "w1/bad#name.ipynb", "w1/folder.ipynb/inside.ipynb"]:
        write(repo, notebook)
    write(repo, "w1/data.csv", "a,b\n")
    write(repo, "run.sh", "#!/bin/sh\n")
    (repo / "run.sh").chmod(0o755)
    (repo / "w1/evil.ipynb").symlink_to("/etc/passwd")
    # From w1/ of the clone up to the data folder, where a real notebook waits.
    (repo / "w1/outside.ipynb").symlink_to("../../../outside.ipynb")
    # A link is never a notebook, not even to one of the course (the copy follows no link).
    (repo / "w1/inner-link.ipynb").symlink_to("w1-s1-c1-intro.ipynb")
    (repo / "w1-link").symlink_to("w1")
    (repo / "w1/hidden-link.ipynb").symlink_to("../.hidden/x.ipynb")
    (repo / "w1/loop.ipynb").symlink_to("loop.ipynb")
    # Making the tree world-readable must not touch what symlinks point to.
    (tmp_path / "private-dir").mkdir(mode=0o700)
    write(tmp_path, "private-file", "secret")
    (tmp_path / "private-file").chmod(0o600)
    (repo / "w1/private-dir").symlink_to(tmp_path / "private-dir")
    (repo / "w1/private-file").symlink_to(tmp_path / "private-file")
    commit_all(repo, "first")
    write(paths.DATA_DIR, "outside.ipynb")
    return repo


@pytest.fixture
def course(upstream) -> courses.Course:
    return courses.create("python-mooc", str(upstream))


def test_create_and_load(course, upstream):
    assert course == courses.Course("python-mooc", str(upstream), None, None)
    assert course.path == paths.COURSES_DIR / "python-mooc"
    assert courses.load("python-mooc") == course
    assert courses.all_courses() == [course]
    assert (course.path / "w1/w1-s1-c1-intro.ipynb").is_file()
    assert courses.commit(course) and git(upstream, "rev-parse", "HEAD").startswith(courses.commit(course))


def test_settings_round_trip_awkward_url(tmp_path):
    repo = tmp_path / 'we"ird\\repo-é'
    repo.mkdir()
    git(repo, "init", "--quiet", "-b", "main")
    write(repo, "a.ipynb")
    commit_all(repo)
    course = courses.create("weird", str(repo), image="localhost/nbh-jupyter:latest")
    settings = tomllib.loads((paths.COURSE_SETTINGS_DIR / "weird.toml").read_text())
    assert settings == {"git_url": str(repo), "image": "localhost/nbh-jupyter:latest"}
    assert courses.load("weird") == course


def test_notebooks(course):
    assert courses.notebooks(course) == NOTEBOOKS


@pytest.mark.parametrize("asked, found", [
    ("w1/w1-s2-c1-accents", "w1/w1-s2-c1-accents.ipynb"),
    ("w1/w1-s2-c1-accents.ipynb", "w1/w1-s2-c1-accents.ipynb"),
    ("notebooks/01.00-IPython-Beyond-Normal-Python.ipynb", "notebooks/01.00-IPython-Beyond-Normal-Python.ipynb"),
    ("notebooks/01.00-IPython-Beyond-Normal-Python", "notebooks/01.00-IPython-Beyond-Normal-Python.ipynb"),
])
def test_find_notebook(course, asked, found):
    assert courses.find_notebook(course, asked) == found


@pytest.mark.parametrize("asked", [
    "w1/nope", "w1/data.csv", "w1/data", "w1", "w1/folder", "w1/folder.ipynb",
    "w1/evil", "w1/evil.ipynb", "w1/outside", "w1/hidden-link", "w1/loop", "w1/w1-s1-c1-intro.IPYNB",
    "w1/inner-link", "w1-link/w1-s1-c1-intro", "w1/private-file",
])
def test_unknown_notebooks(course, asked):
    with pytest.raises(UnknownNotebook, match=r"^unknown notebook '.*' in course 'python-mooc'$"):
        courses.find_notebook(course, asked)


@pytest.mark.parametrize("asked", [
    "../x", "../upstream/w1/w1-s1-c1-intro", "w1/../../outside", "/etc/passwd",
    str(Path(__file__)), "w1/.ipynb_checkpoints/w1-s1-c1-intro-checkpoint", ".git/config", "",
])
def test_find_notebook_refuses_bad_paths(course, asked):
    with pytest.raises(BadName):
        courses.find_notebook(course, asked)


def test_world_readable_whatever_the_umask(upstream, tmp_path):
    with umask(0o077):
        course = courses.create("python-mooc", str(upstream))

    def mode(relative: str) -> int:
        return stat.S_IMODE(os.lstat(course.path / relative).st_mode)

    assert mode(".") == mode("w1") == mode("notebooks") == 0o755
    assert mode("w1/w1-s1-c1-intro.ipynb") == mode("w1/data.csv") == 0o644
    assert mode("run.sh") == 0o755
    assert mode(".git") == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "private-dir").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "private-file").st_mode) == 0o600


def test_create_twice(course, upstream):
    with pytest.raises(CourseError, match="^course 'python-mooc' already exists$"):
        courses.create("python-mooc", str(upstream))


@pytest.mark.parametrize("url, error", [
    ("/nonexistent/repo", r"^git clone failed: fatal: repository '/nonexistent/repo' does not exist$"),
    ("ext::/bin/true", r"^git clone failed: fatal: transport 'ext' not allowed$"),
    ("-uevil", r"^bad git URL"),
    ("a b", r"^bad git URL"),
    ("x\ny", r"^bad git URL"),
    ("", r"^bad git URL"),
])
def test_failed_clone_leaves_nothing(url, error):
    with pytest.raises(CourseError, match=error):
        courses.create("python-mooc", url)
    assert not paths.COURSE_SETTINGS_DIR.exists() or not list(paths.COURSE_SETTINGS_DIR.iterdir())
    assert not paths.COURSES_DIR.exists() or not list(paths.COURSES_DIR.iterdir())
    with pytest.raises(UnknownCourse):
        courses.load("python-mooc")


def test_missing_branch_and_empty_repo_leave_nothing(upstream, tmp_path):
    with pytest.raises(CourseError, match="^git clone failed: .*nope"):
        courses.create("python-mooc", str(upstream), branch="nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "--quiet")
    with pytest.raises(CourseError, match="^git clone failed: .* has no commit to check out$"):
        courses.create("python-mooc", str(empty))
    assert list(paths.COURSES_DIR.iterdir()) == []
    assert courses.all_courses() == []


@pytest.mark.parametrize("kwargs", [
    {"image": "Bad Image"}, {"image": "-x"}, {"image": "a" * 256}, {"branch": "-b"}, {"branch": "a b"},
])
def test_bad_settings(upstream, kwargs):
    with pytest.raises(CourseError, match="^bad "):
        courses.create("python-mooc", str(upstream), **kwargs)
    assert not paths.COURSES_DIR.exists()


@pytest.mark.parametrize("name", ["../x", ".x", "a b", "a.b", ""])
def test_bad_course_names(upstream, name):
    with pytest.raises(BadName):
        courses.create(name, str(upstream))
    with pytest.raises(BadName):
        courses.load(name)


def test_unknown_course():
    with pytest.raises(UnknownCourse, match="^unknown course 'nope'$"):
        courses.load("nope")
    with pytest.raises(UnknownCourse):
        courses.update("nope")
    assert courses.all_courses() == []


def test_bad_settings_file():
    paths.COURSE_SETTINGS_DIR.mkdir(parents=True)
    (paths.COURSE_SETTINGS_DIR / "c.toml").write_text('git_url = "/x"\nimage = "Bad Image"\n')
    (paths.COURSE_SETTINGS_DIR / "d.toml").write_text('git_url = "/x"\ncolour = "red"\n')
    with pytest.raises(CourseError, match=r"c\.toml: bad image 'Bad Image'"):
        courses.load("c")
    with pytest.raises(CourseError, match=r"d\.toml: unknown key 'colour'"):
        courses.load("d")


def test_update(course, upstream):
    (upstream / "w1/w1-s2-c1-accents.ipynb").unlink()
    write(upstream, "w2/w2-s1-c1-new.ipynb")
    head = commit_all(upstream, "second")
    write(course.path, "w1/stray.ipynb")  # nothing of the students' lives here
    write(course.path, "w1/w1-s1-c1-intro.ipynb", "edited")

    with umask(0o077):
        short = courses.update("python-mooc")
    assert head.startswith(short) and short == courses.commit(course)
    found = courses.notebooks(course)
    assert "w2/w2-s1-c1-new.ipynb" in found
    assert "w1/w1-s2-c1-accents.ipynb" not in found and "w1/stray.ipynb" not in found
    assert courses.find_notebook(course, "w2/w2-s1-c1-new") == "w2/w2-s1-c1-new.ipynb"
    with pytest.raises(UnknownNotebook):
        courses.find_notebook(course, "w1/w1-s2-c1-accents")
    assert (course.path / "w1/w1-s1-c1-intro.ipynb").read_text() == '{"cells": []}'
    assert stat.S_IMODE(os.stat(course.path / "w2").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(course.path / "w2/w2-s1-c1-new.ipynb").st_mode) == 0o644


def test_update_follows_a_force_push(course, upstream):
    write(upstream, "w1/w1-s1-c1-intro.ipynb", "rewritten")
    git(upstream, "add", "--all")
    git(upstream, "commit", "--quiet", "--amend", "-m", "rewritten")
    assert git(upstream, "rev-parse", "HEAD").startswith(courses.update("python-mooc"))
    assert (course.path / "w1/w1-s1-c1-intro.ipynb").read_text() == "rewritten"


def test_branch(upstream):
    git(upstream, "checkout", "--quiet", "-b", "next")
    write(upstream, "w3/next.ipynb")
    commit_all(upstream, "next")
    git(upstream, "checkout", "--quiet", "main")

    course = courses.create("on-next", str(upstream), branch="next")
    default = courses.create("on-default", str(upstream))
    assert courses.load("on-next").branch == "next"
    assert "w3/next.ipynb" in courses.notebooks(course)
    assert "w3/next.ipynb" not in courses.notebooks(default)

    git(upstream, "checkout", "--quiet", "next")
    write(upstream, "w3/later.ipynb")
    head = commit_all(upstream, "later")
    git(upstream, "checkout", "--quiet", "main")
    assert head.startswith(courses.update("on-next"))
    assert "w3/later.ipynb" in courses.notebooks(course)
    courses.update("on-default")
    assert "w3/later.ipynb" not in courses.notebooks(default)

    # Without a branch, a course follows the remote's default branch, even when it changes.
    git(upstream, "checkout", "--quiet", "next")
    assert head.startswith(courses.update("on-default"))
    assert "w3/later.ipynb" in courses.notebooks(default)


def test_update_without_a_work_tree(course):
    """A work tree that is gone is cloned again; a folder that is not one is left alone."""
    subprocess.run(["rm", "-rf", str(course.path)], check=True)
    assert courses.update("python-mooc") == courses.commit(course)
    assert (course.path / "w1/w1-s1-c1-intro.ipynb").is_file()
    subprocess.run(["rm", "-rf", str(course.path / ".git")], check=True)
    with pytest.raises(CourseError, match="^course 'python-mooc' has no git work tree at "):
        courses.update("python-mooc")
    assert (course.path / "w1/w1-s1-c1-intro.ipynb").is_file()


def test_register_then_first_update_clones(upstream):
    course = courses.register("later", str(upstream), branch="main")
    assert courses.load("later") == course and not course.path.exists()
    assert courses.status(course) == courses.CourseStatus(None, None, None)
    short = courses.update("later")
    status = courses.status(course)
    assert status.commit == short and status.updated and status.image is None


def test_failed_first_update_keeps_nothing_and_a_failed_update_keeps_the_checkout(upstream, tmp_path):
    courses.register("broken", str(tmp_path / "nowhere"))
    with pytest.raises(CourseError, match="git clone failed"):
        courses.update("broken")
    assert courses.unregister_if_never_cloned("broken")
    with pytest.raises(UnknownCourse):
        courses.load("broken")
    course = courses.create("fine", str(upstream))
    before = courses.commit(course)
    for change in ({"branch": "no-such-branch"}, ):
        courses.change("fine", **change)
        with pytest.raises(CourseError):
            courses.update("fine")
        assert courses.commit(course) == before and (course.path / "w1/w1-s1-c1-intro.ipynb").is_file()
    courses.change("fine", branch=None)
    (upstream / "w1/w1-s1-c1-intro.ipynb").unlink()
    commit_all(upstream)
    moved = tmp_path / "moved"
    upstream.rename(moved)
    with pytest.raises(CourseError, match="fetch failed"):
        courses.update("fine")
    assert (course.path / "w1/w1-s1-c1-intro.ipynb").is_file()
    assert not courses.unregister_if_never_cloned("fine")


@pytest.mark.parametrize("key, text, value", [
    ("idle_timeout", "600", 600), ("idle_timeout", "", None), ("memory_max", "512M", 512 << 20),
    ("memory_max", "2G", 2 << 30), ("memory_max", "default", None), ("cpu_quota", "150%", 150),
    ("cpu_quota", "50", 50), ("disk_max", "1G", 1 << 30), ("disk_max", "64M", 64 << 20), ("disk_max", "", None),
    ("staff", "alice, bob", ("alice", "bob")), ("staff", "", ()),
    ("autopull", "yes", True), ("autobuild", "no", False), ("archived", "on", True),
    ("image", "course", "course"), ("branch", "w2", "w2"),
])
def test_parse_and_change_settings(course, key, text, value):
    assert courses.parse_setting(key, text) == value
    changed = courses.change("python-mooc", **{key: value})
    assert getattr(changed, key) == value
    assert courses.load("python-mooc") == changed


def test_setting_texts_read_back_as_the_same_course(course):
    """What the staff form and `nbh course show` print is what `set` takes."""
    assert set(courses.setting_texts(courses.load("python-mooc")).values()) == {""}  # all defaults
    changed = courses.change("python-mooc", branch="w2", image="course", idle_timeout=900, memory_max=3 << 29,
                             cpu_quota=150, disk_max=1 << 30, staff=("alice", "bob"), autopull=True,
                             archived=True, interface="lab", hide=("notebook:trust", "save"), text_notebooks=True)
    texts = courses.setting_texts(changed)
    assert texts["memory_max"] == "1536M" and texts["cpu_quota"] == "150%" and texts["autobuild"] == ""
    assert {key: courses.parse_setting(key, text) for key, text in texts.items()} == \
        {key: getattr(changed, key) for key in courses.SETTINGS}


@pytest.mark.parametrize("key, text, message", [
    ("idle_timeout", "10", "bad idle_timeout"), ("idle_timeout", "ten", "bad idle_timeout"),
    ("memory_max", "lots", "bad memory_max"), ("memory_max", "1K", "bad memory_max"),
    ("cpu_quota", "0%", "bad cpu_quota"), ("cpu_quota", "x", "bad cpu_quota"),
    ("disk_max", "16M", "bad disk_max 16777216: bytes, from 32M to 1T"), ("disk_max", "2T", "bad disk_max"),
    ("disk_max", "lots", "bad disk_max 'lots': a size like"),
    ("staff", "Alice", "bad staff"), ("staff", "../x", "bad staff"), ("autopull", "maybe", "bad autopull"),
    ("image", "-evil", "bad image"), ("branch", "-x", "bad branch"), ("git_url", "x", "unknown setting"),
])
def test_bad_settings_change_nothing(course, key, text, message):
    before = courses._settings_path("python-mooc").read_text()
    with pytest.raises(CourseError, match=message):
        courses.change("python-mooc", **{key: courses.parse_setting(key, text)})
    assert courses._settings_path("python-mooc").read_text() == before


def test_all_courses_sorted(upstream):
    for name in ("zz", "aa", "mm"):
        courses.create(name, str(upstream))
    for stray in ("not a course.toml", ".aa.toml", "zz.toml~"):
        (paths.COURSE_SETTINGS_DIR / stray).write_text("")
    assert [course.name for course in courses.all_courses()] == ["aa", "mm", "zz"]


# The command.

def nbh(capsys, *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_create_update(capsys, upstream):
    status, out, err = nbh(capsys, "course", "create", "--here", "python-mooc", str(upstream))
    short = courses.commit(courses.load("python-mooc"))
    assert (status, out, err) == (0, f"python-mooc: cloned {upstream} (commit {short})\n", "")

    write(upstream, "w2/new.ipynb")
    head = commit_all(upstream)
    status, out, err = nbh(capsys, "course", "update", "--here", "python-mooc")
    assert status == 0 and err == ""
    assert out.startswith("python-mooc: at ") and head.startswith(out.split()[-1])


def test_cli_list_and_show(capsys, upstream):
    nbh(capsys, "course", "create", "--here", "python-mooc", str(upstream))
    nbh(capsys, "course", "create", "--here", "handbook", str(upstream), "--branch", "main",
        "--image", "quay.io/jupyter/scipy-notebook:2024-05-27")
    courses.change("handbook", autopull=True)
    status, out, err = nbh(capsys, "course", "list")
    assert (status, err) == (0, "")
    short = courses.commit(courses.load("python-mooc"))
    assert out.splitlines() == [
        "NAME         IMAGE                                      BRANCH   NOTEBOOKS  COMMIT",
        f"handbook     quay.io/jupyter/scipy-notebook:2024-05-27  main     4          {short}  autopull",
        f"python-mooc  default                                    default  4          {short}",
    ]
    status, out, err = nbh(capsys, "course", "set", "python-mooc", "memory_max=512M", "cpu_quota=50%",
                           "disk_max=1G", "staff=bob,alice", "autopull=yes", "interface=lab",
                           "hide=notebook:trust, save")
    assert (status, err) == (0, "")
    status, out, err = nbh(capsys, "course", "show", "python-mooc")
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[:16] == [
        "name:        python-mooc",
        f"git-url:     {upstream}",
        "branch:      default",  # each setting by its name and as `set` takes it
        "image:       default",
        "idle_timeout: default",
        "memory_max:  512M",
        "cpu_quota:   50%",
        "disk_max:    1G",
        "staff:       alice, bob",
        "autopull:    yes",
        "autobuild:   no",
        "archived:    no",
        "interface:   lab",
        "hide:        notebook:trust, save",
        "text_notebooks: no",
        f"path:        {paths.COURSES_DIR / 'python-mooc'}",
    ]
    assert lines[16] == f"commit:      {short}" and lines[17].startswith("updated:     20")
    assert lines[18:] == ["notebooks:   4"] + [f"  {notebook}" for notebook in NOTEBOOKS]
    for bad, message in (("interface=classic", "bad interface 'classic': notebook or lab"),
                         ("hide=a;b", "bad hide ('a;b',): at most 50 command ids or toolbar item names "
                                      "(letters, digits, '_', '.', ':', '@', '/', '-')")):
        assert nbh(capsys, "course", "set", "python-mooc", bad) == (1, "", f"nbh: {message}\n")
    assert nbh(capsys, "course", "set", "python-mooc", "interface=notebook")[0] == 0
    assert courses.load("python-mooc").interface is None
    assert nbh(capsys, "course", "set", "python-mooc", "memory_max=lots") == (
        1, "", "nbh: bad memory_max 'lots': a size like 512M or 2G\n")
    assert nbh(capsys, "course", "set", "python-mooc", "autopull") == (
        1, "", "nbh: 'autopull': expected KEY=VALUE, KEY one of " + ", ".join(courses.SETTINGS) + "\n")


def test_cli_list_empty(capsys):
    assert nbh(capsys, "course", "list") == (0, "NAME  IMAGE  BRANCH  NOTEBOOKS  COMMIT\n", "")


@pytest.mark.parametrize("argv, error", [
    (["course", "show", "nope"], "nbh: unknown course 'nope'\n"),
    (["course", "update", "nope"], "nbh: unknown course 'nope'\n"),
    (["course", "build", "nope"], "nbh: unknown course 'nope'\n"),
    (["course", "set", "nope", "autopull=yes"], "nbh: unknown course 'nope'\n"),
    (["course", "show", "../x"], "nbh: bad course name '../x': 1 to 32 letters, digits, '_' or '-', "
                                 "starting with a letter or digit\n"),
    (["course", "create", "--here", "python-mooc", "/nonexistent/repo"],
     "nbh: git clone failed: fatal: repository '/nonexistent/repo' does not exist\n"),
    (["course", "create", "python-mooc", "--", "-uevil"],
     "nbh: bad git URL '-uevil': empty, too long, leading '-', or a space or control character\n"),
])
def test_cli_errors(capsys, argv, error):
    assert nbh(capsys, *argv) == (1, "", error)


def test_cli_create_twice(capsys, upstream):
    nbh(capsys, "course", "create", "--here", "python-mooc", str(upstream))
    assert nbh(capsys, "course", "create", "python-mooc", str(upstream)) == (
        1, "", "nbh: course 'python-mooc' already exists\n")


@pytest.mark.parametrize("changed, words", [
    ({"image": "localhost/nbhosting/course-other:abc1234"}, "is not allowed to a course's staff"),
    ({"image": "registry.invalid/x:1"}, "is not allowed"),
    ({"memory_max": 2 * 2**30 + 1}, "memory_max 2147483649 is over the site's 2147483648"),
    ({"cpu_quota": 101}, "cpu_quota 101 is over"),
    ({"idle_timeout": 1801}, "idle_timeout 1801 is over"),
    ({"disk_max": 2**30 + 1}, "disk_max 1073741825 is over the site's 1073741824"),
])
def test_staff_may_not_set_past_the_sites_limits(changed, words):
    with pytest.raises(CourseError, match=words):
        courses.staff_may_set(changed, ("allowed/image:1",), 2 * 2**30, 100, 1800, 2**30)


def test_staff_may_set_within_the_sites_limits():
    for changed in ({"image": None}, {"image": courses.OWN_IMAGE}, {"image": "allowed/image:1"},
                    {"memory_max": 2**30, "cpu_quota": 100, "idle_timeout": 1800}, {"memory_max": None},
                    {"disk_max": 2**30}, {"disk_max": None}):
        courses.staff_may_set(changed, ("allowed/image:1",), 2 * 2**30, 100, 1800, 2**30)
    # a site that bounds no workspace lets a course bound its own, to any size
    courses.staff_may_set({"disk_max": 2**40}, (), 2 * 2**30, 100, 1800, 0)
