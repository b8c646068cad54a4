"""Copies into workspaces: once, never over the student's work, never through a link."""

import os
import threading

import pytest

from nbhosting import nofollow, paths, workspace
from nbhosting.names import Instance

INSTANCE = Instance("c", "s")


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """The student's workspace, and a course with x.ipynb at its top, in w1/ and in w2/."""
    monkeypatch.setattr(paths, "WORKSPACES_DIR", tmp_path / "workspaces")
    home = tmp_path / "workspaces" / "c" / "s"
    home.mkdir(parents=True)
    course = tmp_path / "course"
    for folder in ("", "w1", "w2"):
        (course / folder).mkdir(parents=True, exist_ok=True)
        (course / folder / "x.ipynb").write_text("course")
    return home, course


def test_copy_once(dirs):
    home, course = dirs
    assert workspace.copy_notebook(INSTANCE, course, "w1/x.ipynb") is True
    assert (home / "w1/x.ipynb").read_text() == "course"
    assert oct((home / "w1/x.ipynb").stat().st_mode & 0o777) == "0o660"
    (home / "w1/x.ipynb").write_text("mine")
    assert workspace.copy_notebook(INSTANCE, course, "w1/x.ipynb") is False
    assert (home / "w1/x.ipynb").read_text() == "mine"
    assert [p.name for p in (home / "w1").iterdir()] == ["x.ipynb"]  # no temporary left


def test_never_through_a_link(dirs, tmp_path):
    home, course = dirs
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (home / "w1").symlink_to(elsewhere)
    with pytest.raises(workspace.WorkspaceError):
        workspace.copy_notebook(INSTANCE, course, "w1/x.ipynb")
    assert list(elsewhere.iterdir()) == []
    (home / "w2").mkdir()
    (home / "w2/x.ipynb").symlink_to(elsewhere / "target")
    assert workspace.copy_notebook(INSTANCE, course, "w2/x.ipynb") is False
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("link", ["w1/x.ipynb", "w1"])
def test_a_course_file_through_a_link_is_not_copied(dirs, tmp_path, link):
    """A course update made the notebook, or its folder, a link to a secret."""
    home, course = dirs
    secret = tmp_path / "secret"
    (secret / "w1").mkdir(parents=True)
    (secret / "w1" / "x.ipynb").write_text("the host secret")
    target = course / link
    os.rename(target, tmp_path / "old")
    target.symlink_to(secret / link)
    with pytest.raises(nofollow.NotAFile):
        workspace.copy_notebook(INSTANCE, course, "w1/x.ipynb")
    assert list(home.iterdir()) == []  # not even the folder


def test_a_notebook_gone_from_the_course_is_not_copied(dirs):
    home, course = dirs
    (course / "w2" / "x.ipynb").unlink()
    with pytest.raises(FileNotFoundError):
        workspace.copy_notebook(INSTANCE, course, "w2/x.ipynb")
    assert list(home.iterdir()) == []


def test_concurrent_copies_make_one(dirs):
    home, course = dirs
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        workspace.copy_notebook(INSTANCE, course, "x.ipynb"))) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 1
    assert sorted(os.listdir(home)) == ["x.ipynb"]


def test_the_staff_list_a_students_notebooks_and_never_follow_their_links(dirs, tmp_path):
    home, course = dirs
    workspace.copy_notebook(INSTANCE, course, "w1/x.ipynb")
    workspace.copy_notebook(INSTANCE, course, "w2/x.ipynb")
    (home / "w2/x.ipynb").write_text("coursE")  # same size, changed
    (home / "mine.ipynb").write_text("the student's own")
    (home / ".ipynb_checkpoints").mkdir()
    (home / ".ipynb_checkpoints/x-checkpoint.ipynb").write_text("hidden")
    secret = tmp_path / "secret.ipynb"
    secret.write_text("the host's")
    (home / "leak.ipynb").symlink_to(secret)
    (home / "elsewhere").symlink_to(tmp_path)
    copies = {c.notebook: c for c in workspace.notebooks_of(INSTANCE, course)}
    assert sorted(copies) == ["mine.ipynb", "w1/x.ipynb", "w2/x.ipynb"]
    assert (copies["w1/x.ipynb"].differs, copies["w2/x.ipynb"].differs, copies["mine.ipynb"].differs) == \
        (False, True, None)
    assert copies["mine.ipynb"].size == len("the student's own")
    fd, size = workspace.open_copy(INSTANCE, "w2/x.ipynb")
    assert os.read(fd, 100) == b"coursE" and size == 6
    os.close(fd)
    for refused in ("leak.ipynb", "elsewhere/secret.ipynb", "w1", "../s/mine.ipynb"):
        with pytest.raises(OSError):
            workspace.open_copy(INSTANCE, refused)
