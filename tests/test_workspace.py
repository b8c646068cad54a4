"""Copies into workspaces: once, never over the student's work, never through a link."""

import os
import threading

import pytest

from nbhosting import paths, workspace
from nbhosting.names import Instance

INSTANCE = Instance("c", "s")


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "WORKSPACES_DIR", tmp_path / "workspaces")
    home = tmp_path / "workspaces" / "c" / "s"
    home.mkdir(parents=True)
    source = tmp_path / "course.ipynb"
    source.write_text("course")
    return home, source


def test_copy_once(dirs):
    home, source = dirs
    assert workspace.copy_notebook(INSTANCE, source, "w1/x.ipynb") is True
    assert (home / "w1/x.ipynb").read_text() == "course"
    assert oct((home / "w1/x.ipynb").stat().st_mode & 0o777) == "0o660"
    (home / "w1/x.ipynb").write_text("mine")
    assert workspace.copy_notebook(INSTANCE, source, "w1/x.ipynb") is False
    assert (home / "w1/x.ipynb").read_text() == "mine"
    assert [p.name for p in (home / "w1").iterdir()] == ["x.ipynb"]  # no temporary left


def test_never_through_a_link(dirs, tmp_path):
    home, source = dirs
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (home / "w1").symlink_to(elsewhere)
    with pytest.raises(workspace.WorkspaceError):
        workspace.copy_notebook(INSTANCE, source, "w1/x.ipynb")
    assert list(elsewhere.iterdir()) == []
    (home / "w2").mkdir()
    (home / "w2/x.ipynb").symlink_to(elsewhere / "target")
    assert workspace.copy_notebook(INSTANCE, source, "w2/x.ipynb") is False
    assert list(elsewhere.iterdir()) == []


def test_concurrent_copies_make_one(dirs):
    home, source = dirs
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        workspace.copy_notebook(INSTANCE, source, "x.ipynb"))) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 1
    assert sorted(os.listdir(home)) == ["x.ipynb"]
