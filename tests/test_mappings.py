"""A notebook's neighbours (nbhosting/mappings.py): which, and how they are
placed, on a course laid out as jakevdp/PythonDataScienceHandbook is; the
sandbox's tests (a course's data, figures and module in a real server and
Chromium) are in test_real_courses.py."""

from __future__ import annotations

import os

import pytest

from nbhosting import mappings, paths
from nbhosting.courses import CourseError
from nbhosting.names import Instance

ALICE = Instance("pdsh", "alice")


@pytest.fixture
def course(tmp_path):
    """notebooks/ with data/, figures/, a module and a folder of notebooks; a README at the top."""
    root = tmp_path / "course"
    for path in ("notebooks/02.01-Types.ipynb", "notebooks/02.04-Aggregation.ipynb", "notebooks/data/heights.csv",
                 "notebooks/figures/array.png", "notebooks/helper.py", "notebooks/extra/more.ipynb",
                 "notebooks/.hidden", "README.md", "notebooks/deep/a/b/c.ipynb", "notebooks/deep/a/x.txt"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(path)
    (root / "notebooks" / "secrets").symlink_to("/etc")
    return root


@pytest.fixture
def workspaces(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "WORKSPACES_DIR", tmp_path / "workspaces")
    (tmp_path / "workspaces" / "pdsh" / "alice").mkdir(parents=True)
    return tmp_path / "workspaces" / "pdsh" / "alice"


def test_by_default_every_neighbour_but_notebooks_their_folders_hidden_files_and_links(course):
    assert mappings.neighbours(course, "notebooks/02.01-Types.ipynb") == ("data", "figures", "helper.py")
    assert mappings.neighbours(course, "notebooks/extra/more.ipynb") == ()
    assert mappings.neighbours(course, "top.ipynb") == ("README.md",)


def test_a_course_names_its_mappings(course):
    (course / ".nbhosting").mkdir()
    (course / ".nbhosting" / "nbhosting.toml").write_text('mappings = ["data", "*.py", "secrets"]\n')
    # never a link of the course's, even named
    assert mappings.neighbours(course, "notebooks/02.01-Types.ipynb") == ("data", "helper.py")
    for bad in ('mappings = ["../etc"]', 'mappings = ["data/x"]', 'mappings = "data"', 'mappings = [".git"]',
                "mappings = [", 'mappings = ["x"] \n other = 1\n mappings = []'):
        (course / ".nbhosting" / "nbhosting.toml").write_text(bad)
        with pytest.raises(CourseError, match=".nbhosting/nbhosting.toml"):
            mappings.neighbours(course, "notebooks/02.01-Types.ipynb")
    (course / ".nbhosting" / "nbhosting.toml").unlink()
    (course / ".nbhosting" / "nbhosting.toml").symlink_to("/etc/passwd")
    with pytest.raises(CourseError):
        mappings.neighbours(course, "notebooks/02.01-Types.ipynb")


def test_links_lead_into_the_containers_course_mount_and_never_over_the_students_files(course, workspaces):
    (workspaces / "notebooks").mkdir()
    (workspaces / "notebooks" / "helper.py").write_text("the student's own")
    copied, unplaced = mappings.copy_with_neighbours(ALICE, course, "notebooks/02.01-Types.ipynb")
    assert copied and unplaced is None
    folder = workspaces / "notebooks"
    assert os.readlink(folder / "data") == "/home/jovyan/course/notebooks/data"
    assert os.readlink(folder / "figures") == "/home/jovyan/course/notebooks/figures"
    assert (folder / "helper.py").read_text() == "the student's own"
    assert not (folder / "helper.py").is_symlink()
    # the student removed a link, put a file in another's place: a new entry places the missing one only
    (folder / "data").unlink()
    (folder / "figures").unlink()
    (folder / "figures").mkdir()
    assert mappings.place(ALICE, course, "notebooks/02.04-Aggregation.ipynb") == ["data"]
    assert (folder / "figures").is_dir() and not (folder / "figures").is_symlink()


def test_a_link_in_the_workspace_is_not_followed_to_place_neighbours(course, workspaces, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (workspaces / "notebooks").symlink_to(elsewhere)
    with pytest.raises(OSError):
        mappings.place(ALICE, course, "notebooks/02.01-Types.ipynb")
    assert list(elsewhere.iterdir()) == []


def test_the_neighbours_follow_the_courses_updates(course):
    mappings._neighbours.cache_clear()
    assert mappings.neighbours(course, "notebooks/02.01-Types.ipynb") == ("data", "figures", "helper.py")
    (course / "notebooks" / "data" / "lesson.ipynb").write_text("{}")
    (course / ".git").mkdir(exist_ok=True)
    (course / ".git" / "index").write_text("an update")  # what the cache follows
    assert mappings.neighbours(course, "notebooks/02.01-Types.ipynb") == ("figures", "helper.py")


def test_a_placed_folder_that_an_update_filled_with_notebooks_becomes_the_students(course, workspaces):
    mappings.copy_with_neighbours(ALICE, course, "notebooks/02.01-Types.ipynb")
    assert (workspaces / "notebooks" / "data").is_symlink()
    (course / "notebooks" / "data" / "lesson.ipynb").write_text("{}")  # the update
    copied, _ = mappings.copy_with_neighbours(ALICE, course, "notebooks/data/lesson.ipynb")
    assert copied and not (workspaces / "notebooks" / "data").is_symlink()
    assert (workspaces / "notebooks" / "data" / "lesson.ipynb").read_text() == "{}"
    # a link of the student's own, elsewhere, is left as it is (and not followed)
    (workspaces / "notebooks" / "extra").symlink_to("/tmp")
    with pytest.raises(OSError):
        mappings.copy_with_neighbours(ALICE, course, "notebooks/extra/more.ipynb")
    assert (workspaces / "notebooks" / "extra").is_symlink()
