"""Text notebooks (nbhosting/textnotebooks.py): the .ipynb that an update
writes beside each jupytext notebook of a course, and the entry's names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbhosting import courses, textnotebooks

from .course_helpers import MYST, PERCENT, commit_all, git, write

# the data and configuration folders in tmp_path, for every test (conftest.py)
pytestmark = pytest.mark.usefixtures("dirs")


def cells(path: Path) -> list[tuple[str, str]]:
    return [(cell["cell_type"], "".join(cell["source"])) for cell in json.loads(path.read_text())["cells"]]


def test_text_notebooks_become_notebooks_and_other_text_stays(tmp_path):
    root = tmp_path / "course"
    write(root, "w1/lists.md", MYST)
    write(root, "w2/loops.py", PERCENT)
    write(root, "README.md", "# The course\n")  # no header: a file, not a notebook
    write(root, "w1/helper.py", "WHO = 'me'\n")
    write(root, "w1/both.md", MYST)  # the repository's own .ipynb wins
    write(root, "w1/both.ipynb", '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    write(root, "w1/front.md", "---\ntitle: a page with front matter\n---\n# Not a notebook\n")
    write(root, ".hidden/h.md", MYST)
    (root / "w1/link.md").symlink_to(root / "w1/lists.md")
    written, failed = textnotebooks.generate(root)
    assert sorted(written) == ["w1/lists.ipynb", "w2/loops.ipynb"] and failed == []
    assert cells(root / "w1/lists.ipynb") == [("markdown", "# Lists\n\nSome prose, then code."),
                                             ("code", "print(sum([6, 7, 29]))")]
    assert cells(root / "w2/loops.ipynb") == [("markdown", "# Loops"), ("code", "for n in range(3):\n    print(n)")]
    assert json.loads((root / "w1/both.ipynb").read_text())["cells"] == []
    assert not (root / "README.ipynb").exists() and not (root / "w1/helper.ipynb").exists()
    assert not (root / "w1/front.ipynb").exists() and not (root / "w1/link.ipynb").exists()
    # a second run writes nothing over the first's
    assert textnotebooks.generate(root) == ([], [])


def test_a_text_notebook_that_jupytext_cannot_read_is_said_and_skipped(tmp_path):
    root = tmp_path / "course"
    write(root, "bad.md", "---\njupytext: [unclosed\n---\n# x\n")
    written, failed = textnotebooks.generate(root)
    assert written == [] and len(failed) == 1 and failed[0].startswith("bad.md: "), failed


@pytest.fixture
def text_course(tmp_path) -> tuple[Path, str]:
    repo = tmp_path / "text-upstream"
    repo.mkdir()
    git(repo, "init", "--quiet", "-b", "main")
    write(repo, "w1/lists.md", MYST)
    write(repo, "w2/loops.py", PERCENT)
    write(repo, "w2/helper.py", "WHO = 'me'\n")
    commit_all(repo, "text notebooks")
    courses.create("text", str(repo))
    courses.change("text", text_notebooks=True)
    courses.update("text")
    return repo, "text"


def test_an_update_makes_them_and_the_entry_names_them_either_way(text_course):
    repo, name = text_course
    course = courses.load(name)
    assert courses.notebooks(course) == ["w1/lists.ipynb", "w2/loops.ipynb"]
    for url in ("w1/lists", "w1/lists.md", "w1/lists.ipynb"):
        assert courses.find_notebook(course, url) == "w1/lists.ipynb"
    assert courses.find_notebook(course, "w2/loops.py") == "w2/loops.ipynb"
    with pytest.raises(courses.UnknownNotebook):
        courses.find_notebook(course, "w2/helper.py")
    # the next update writes them from the new text, and forgets a text notebook that went
    write(repo, "w1/lists.md", MYST.replace("# Lists", "# Lists, again"))
    (repo / "w2/loops.py").unlink()
    commit_all(repo)
    courses.update(name)
    assert cells(course.path / "w1/lists.ipynb")[0] == ("markdown", "# Lists, again\n\nSome prose, then code.")
    assert not (course.path / "w2/loops.ipynb").exists()
    assert git(course.path, "status", "--porcelain", "--untracked-files=no") == ""


def test_without_the_setting_text_files_are_files(text_course):
    _, name = text_course
    courses.change(name, text_notebooks=False)
    courses.update(name)
    course = courses.load(name)
    assert courses.notebooks(course) == []
    with pytest.raises(courses.UnknownNotebook):
        courses.find_notebook(course, "w1/lists.md")


def test_a_text_notebook_is_no_neighbour_of_its_notebook(text_course):
    from nbhosting import mappings

    _, name = text_course
    course = courses.load(name)
    assert mappings.neighbours(course.path, "w2/loops.ipynb") == ("helper.py",)  # not loops.py
