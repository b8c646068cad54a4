"""A course laid out as jakevdp/PythonDataScienceHandbook is: notebooks in
notebooks/, their data in notebooks/data/, their figures in
notebooks/figures/, a module beside them. What a notebook reads by a
relative path is there for the student, as in a checkout of the course, and
follows the course's updates (nbhosting/mappings.py)."""

from __future__ import annotations

import base64
import json
import os
import uuid
from urllib.parse import urlsplit

import pytest

from devtools import sandbox as nbh_sandbox
from nbhosting.names import Instance

from .conftest import nbh
from .course_helpers import MYST, PERCENT, commit, make_repo
from .web_helpers import execute, follow_start, get, signed

pytestmark = pytest.mark.sandbox

NOTEBOOK = "notebooks/02.04-Aggregation.ipynb"
# A 2x2 PNG, red.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEUlEQVR4nGP4z8DAwMDAxAAAHQMCAJ4xEpsAAAAASUVORK5CYII=")
CODE = 'print(open("data/heights.csv").readlines()[1].strip()); import helper; print(helper.WHO)'


def notebook() -> str:
    return json.dumps({
        "cells": [
            {"cell_type": "markdown", "id": "m1", "metadata": {}, "source": ["![an array](figures/array.png)"]},
            {"cell_type": "code", "execution_count": None, "id": "c1", "metadata": {}, "outputs": [],
             "source": [CODE]},
        ],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5})


@pytest.fixture
def pdsh(sandbox):
    name = f"pdsh-{os.getpid()}-{uuid.uuid4().hex[:4]}"
    repo = make_repo(sandbox, name, {
        NOTEBOOK: notebook(), "notebooks/02.01-Types.ipynb": notebook(),
        "notebooks/data/heights.csv": "order,name,height\n1,George Washington,189\n",
        "notebooks/figures/array.png": PNG, "notebooks/helper.py": 'WHO = "the course\'s helper"\n',
        "notebooks/exercises/ex1.ipynb": notebook(), "README.md": "# The handbook\n"})
    assert nbh(sandbox, "course", "create", name, repo).returncode == 0
    return name, repo


def enter(course: str, student: str) -> str:
    return follow_start(get(signed(f"/ipythonExercice/{course}/{NOTEBOOK.removesuffix('.ipynb')}/{student}"),
                            referer=None, timeout=120))


def run_in_notebook(sandbox, systemd, instance: Instance, code: str) -> str:
    """The code, in a new kernel of the notebook (its folder as the working directory)."""
    session = sandbox.api(instance, "api/sessions", method="POST",
                          body={"path": NOTEBOOK, "type": "notebook", "kernel": {"name": "python3"}})
    try:
        return systemd.loop.run_until_complete(execute(sandbox, instance, session["kernel"]["id"], code))
    finally:
        sandbox.request(instance, "DELETE", f"api/sessions/{session['id']}")


def test_a_notebooks_data_figures_and_module_are_there_and_follow_the_course(
        sandbox, systemd, pdsh, student, browser):
    course, repo = pdsh
    instance = Instance(course, student)
    folder = sandbox.path(f"/var/lib/nbhosting/workspaces/{course}/{student}/notebooks")
    try:
        url = enter(course, student)
        # beside the copy: links into the container's read-only course, none to a folder of notebooks
        assert {p.name: os.readlink(p) for p in folder.iterdir() if p.is_symlink()} == {
            name: f"/home/jovyan/course/notebooks/{name}" for name in ("data", "figures", "helper.py")}
        assert not (folder / "02.01-Types.ipynb").exists() and not (folder / "exercises").exists()
        out = run_in_notebook(sandbox, systemd, instance, CODE)
        assert out == "1,George Washington,189\nthe course's helper\n", out
        # the markdown's figure, in Chromium
        browser.driver.get(nbh_sandbox.SITE_URL + url)
        image = ("const i = document.querySelector('.jp-RenderedMarkdown img');"
                 "return i && i.complete ? i.naturalWidth : null")
        assert browser.wait("the notebook's figure", lambda: browser.js(image)) == 2
        # and on the notebook's shared page, inline (the page fetches nothing)
        shared = sandbox.api(instance, "nbh/share", method="POST", body={"path": NOTEBOOK})
        page = get(urlsplit(shared["url"]).path, referer=None)
        assert page.status == 200 and b'<img alt="an array" src="data:image/png;base64,' in page.body
        # an update of the course reaches a new kernel, the workspace untouched
        commit(sandbox, repo, {"notebooks/data/heights.csv": "order,name,height\n1,John Adams,170\n"})
        assert nbh(sandbox, "course", "update", course).returncode == 0
        assert run_in_notebook(sandbox, systemd, instance, CODE).startswith("1,John Adams,170\n")
        # the student's own file of a name wins, and stays at the next entry
        assert run_in_notebook(sandbox, systemd, instance, "import os; os.unlink('helper.py');"
                               "open('helper.py', 'w').write('WHO = \"mine\"\\n')") == ""
        assert enter(course, student) == url
        assert not (folder / "helper.py").is_symlink() and (folder / "helper.py").read_text() == 'WHO = "mine"\n'
        assert run_in_notebook(sandbox, systemd, instance, CODE).endswith("\nmine\n")
    finally:
        systemd.stop_instance(instance)


def test_a_courses_link_is_never_a_neighbour(sandbox, systemd, pdsh, student):
    course, repo = pdsh
    checkout = f"/var/lib/nbhosting/sandbox-repos/{course}"
    sandbox.run("ln", "-s", "/etc", f"{checkout}/notebooks/etc", user="nbh-courses")
    sandbox.run("ln", "-s", "../../other-course", f"{checkout}/notebooks/other", user="nbh-courses")
    commit(sandbox, repo, {})
    assert nbh(sandbox, "course", "update", course).returncode == 0
    instance = Instance(course, student)
    try:
        enter(course, student)
        folder = sandbox.path(f"/var/lib/nbhosting/workspaces/{course}/{student}/notebooks")
        assert sorted(p.name for p in folder.iterdir() if p.is_symlink()) == ["data", "figures", "helper.py"]
    finally:
        systemd.stop_instance(instance)


def test_a_course_of_text_notebooks_opens_resets_and_shares(sandbox, systemd, student):
    """Notebooks written as MyST Markdown and percent-format Python
    (jupytext), with a module and a README that stay files."""

    name = f"text-{os.getpid()}-{uuid.uuid4().hex[:4]}"
    repo = make_repo(sandbox, name, {"w1/lists.md": MYST, "w2/loops.py": PERCENT,
                                     "w2/helper.py": "WHO = 'me'\n", "README.md": "# The course\n"})
    assert nbh(sandbox, "course", "create", name, repo).returncode == 0
    assert nbh(sandbox, "course", "set", name, "text_notebooks=yes").returncode == 0
    updated = nbh(sandbox, "course", "update", name)
    assert updated.returncode == 0 and "text notebooks: 2 made into .ipynb" in updated.stdout, updated.stdout
    instance = Instance(name, student)
    try:
        url = follow_start(get(signed(f"/ipythonExercice/{name}/w1/lists.md/{student}"), referer=None, timeout=120))
        assert urlsplit(url).path.endswith(f"/nb/{name}/{student}/notebooks/w1/lists.ipynb"), url
        assert follow_start(get(signed(f"/ipythonExercice/{name}/w2/loops/{student}"), referer=None)).split("?")[0] \
            .endswith("/notebooks/w2/loops.ipynb")
        copy = sandbox.path(f"/var/lib/nbhosting/workspaces/{name}/{student}/w1/lists.ipynb")
        # the module beside the notebook is there, the notebook's own text is not
        folder = copy.parent.parent / "w2"
        assert os.readlink(folder / "helper.py") == "/home/jovyan/course/w2/helper.py"
        assert not os.path.lexists(folder / "loops.py")
        source = json.loads(copy.read_text())["cells"][1]["source"]
        code = "".join(source)  # nbformat writes a list of lines
        session = sandbox.api(instance, "api/sessions", method="POST",
                              body={"path": "w1/lists.ipynb", "type": "notebook", "kernel": {"name": "python3"}})
        out = systemd.loop.run_until_complete(execute(sandbox, instance, session["kernel"]["id"], code))
        assert out == "42\n", out
        # the student's edit, then reset to the course's version: a backup, and the course's cells
        mine = json.loads(copy.read_text())
        mine["cells"][1]["source"] = "print('mine')"
        sandbox.api(instance, "api/contents/w1/lists.ipynb", method="PUT",
                    body={"type": "notebook", "format": "json", "content": mine})
        reset = sandbox.api(instance, "nbh/reset", method="POST", body={"path": "w1/lists.ipynb"})
        assert reset["backup"].startswith("w1/lists-backup-"), reset
        assert json.loads(copy.read_text())["cells"][1]["source"] == source
        # and shared: the page shows the notebook's text
        shared = sandbox.api(instance, "nbh/share", method="POST", body={"path": "w1/lists.ipynb"})["url"]
        page = get(urlsplit(shared).path, referer=None)
        assert page.status == 200 and b"Some prose, then code." in page.body
    finally:
        systemd.stop_instance(instance)
