"""Names: what a URL may carry, and the instance's round trip through systemd."""

import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbhosting.names import (
    STAFF_PREFIX, BadName, Instance, check_course, check_notebook, check_student, escape, staff_workspace,
    unescape,
)

courses = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}", fullmatch=True)
students = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}", fullmatch=True)


def valid_instance(course: str, student: str) -> Instance | None:
    try:
        return Instance(course, student)
    except BadName:
        return None  # too long once escaped: refused, checked below


@given(courses, students)
def test_instance_round_trip(course, student):
    instance = valid_instance(course, student)
    if instance is None:
        return
    assert Instance.from_name(instance.name) == instance
    assert Instance.from_path(instance.path) == instance
    for unit in instance.units:
        assert Instance.from_unit(unit) == instance
    assert unescape(instance.name) == f"{course}/{student}"
    assert len(instance.service) <= 255


@given(courses, students, courses, students)
def test_distinct_pairs_have_distinct_names(c1, s1, c2, s2):
    a, b = valid_instance(c1, s1), valid_instance(c2, s2)
    if a and b and (c1, s1) != (c2, s2):
        assert a.name != b.name
        assert a.container != b.container
        assert a.listen_socket != b.listen_socket


@pytest.mark.skipif(not shutil.which("systemd-escape"), reason="no systemd-escape")
@settings(max_examples=40, deadline=None)
@given(courses, students)
def test_escape_is_systemds(course, student):
    path = f"{course}/{student}"
    real = subprocess.run(["systemd-escape", "--path", path], capture_output=True, text=True, check=True)
    assert escape(path) == real.stdout.strip()
    back = subprocess.run(["systemd-escape", "--unescape", "--path", real.stdout.strip()],
                          capture_output=True, text=True, check=True)
    assert back.stdout.strip().lstrip("/") == path


def test_known_instance():
    instance = Instance("python-mooc", "alice")
    assert instance.name == "python\\x2dmooc-alice"
    assert instance.service == "nbh-jupyter@python\\x2dmooc-alice.service"
    assert instance.container == "nbh.python-mooc.alice"
    assert instance.listen_socket == "/run/nbhosting/nb/python-mooc/alice.sock"
    assert instance.upstream_socket == "/run/nbhosting/upstream/python-mooc/alice.sock"
    assert instance.base_url == "/nb/python-mooc/alice/"
    assert Instance.from_container(instance.container) == instance
    assert Instance.from_unit("nbh-jupyter@python\\x2dmooc-alice.service") == instance


@pytest.mark.parametrize("name", ["nbh.python-mooc", "other.python-mooc.alice", "nbh..alice",
                                  "nbh-build-x", "nbh.python-mooc.alice/x", ""])
def test_not_a_servers_container(name):
    with pytest.raises(BadName):
        Instance.from_container(name)


@pytest.mark.parametrize("course", [
    "", "-x", ".x", "a/b", "a.b", "a b", "a\x00", "a\n", "é", "x" * 33, "../etc", "a;rm", "$(x)", None,
])
def test_bad_courses(course):
    with pytest.raises(BadName):
        check_course(course)


@pytest.mark.parametrize("student", [
    "", ".hidden", "a/b", "a\\b", "a b", "a\x00", "x" * 41, "..", "a@b", "`id`", "a\tb",
])
def test_bad_students(student):
    with pytest.raises(BadName):
        check_student(student)


@pytest.mark.parametrize("notebook", [
    "w1/intro.ipynb", "notebooks/01.00-IPython-Beyond-Normal-Python.ipynb", "w1/w1-s2-c1-ok",
    "a b/c,d+e=f@g.ipynb",
])
def test_good_notebooks(notebook):
    assert check_notebook(notebook) == notebook


@pytest.mark.parametrize("notebook", [
    "", "/etc/passwd", "../x.ipynb", "w1/../../x", "w1//x", "w1/", "./x", ".git/config",
    "w1/\x00x", "w1/x\ny", "a\\b", "x" * 129, "/".join(["a"] * 17), "a/ ", None,
])
def test_bad_notebooks(notebook):
    with pytest.raises(BadName):
        check_notebook(notebook)


@given(st.text(max_size=60))
def test_notebook_check_never_lets_traversal_through(text):
    try:
        path = check_notebook(text)
    except BadName:
        return
    parts = path.split("/")
    assert ".." not in parts and "" not in parts and not path.startswith("/")
    assert all(ord(c) >= 32 for c in path)


def test_too_long_once_escaped():
    with pytest.raises(BadName):
        Instance("a" + "-" * 31, "b" + "-" * 39)


@pytest.mark.parametrize("unit", [
    "nginx.service", "nbh-jupyter@.service", "nbh-jupyter@a.b.service", "nbh-jupyter@a.mount",
    "nbh-jupyter@a-b-c.service", "nbh-jupyter@a\\x2fb-c.service",
])
def test_not_instance_units(unit):
    with pytest.raises(BadName):
        Instance.from_unit(unit)


def test_a_staff_workspace_is_an_instance_but_never_a_student():
    """"Open a notebook as myself": staff.<account> runs like a student's
    server, and no entry URL can name it."""
    name = staff_workspace("alice")
    assert name == f"{STAFF_PREFIX}alice"
    instance = Instance("python-mooc", name)
    assert instance.is_staff and not Instance("python-mooc", "alice").is_staff
    assert Instance.from_unit(instance.service) == instance
    assert Instance.from_path(instance.path) == instance
    with pytest.raises(BadName, match="staff members' workspaces"):
        check_student(name)
    for bad in ("staff.", "staff.Alice", "staff.-x", "staff." + "a" * 33):
        with pytest.raises(BadName):
            Instance("python-mooc", bad)
    for bad in ("Alice", "", "-x", "a" * 33, "al ice"):
        with pytest.raises(BadName):
            staff_workspace(bad)


@given(students)
def test_no_student_name_is_a_staff_workspace(student):
    try:
        check_student(student)
    except BadName:
        assert student.startswith(STAFF_PREFIX)
    else:
        assert not Instance("c", student).is_staff
