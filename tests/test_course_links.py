"""A course author cannot read the host's secrets: a notebook that a course
update turned into a link to /etc/nbhosting/secret is never copied."""

from __future__ import annotations

import http.client
import json
import os
import re

import pytest

from devtools import sandbox as nbh_sandbox
from nbhosting.names import Instance

from .conftest import configure, nbh
from .web_helpers import HOST, NOTEBOOK, PORT, assert_nothing_started_or_written, entry_path, get

pytestmark = pytest.mark.sandbox

SECRET = "/etc/nbhosting/secret"


_counter = iter(range(10**6))


@pytest.fixture
def linked_course(sandbox) -> str:
    """A course of each test's own, as its notebooks change under it."""
    name = f"links{next(_counter)}-{os.getpid()}"
    sandbox.make_course(name)
    assert f"{NOTEBOOK}.ipynb" in nbh(sandbox, "course", "show", name).stdout
    return name


def assert_no_secret_in_workspaces(sandbox, course: str) -> None:
    secret = sandbox.path(SECRET).read_bytes().strip()
    assert len(secret) >= 32
    folder = sandbox.path(f"/var/lib/nbhosting/workspaces/{course}")
    files = [path for path in folder.rglob("*") if path.is_file()] if folder.exists() else []
    assert not [path for path in files if secret in path.read_bytes()]


def test_a_notebook_made_a_link_by_a_course_update(sandbox, systemd, linked_course, student):
    repo = f"/var/lib/nbhosting/sandbox-repos/{linked_course}"
    git = ["git", "-C", repo, "-c", "user.name=Teacher", "-c", "user.email=teacher@example.org"]
    # As the repository's owner (sandbox.make_course), for git's safe.directory.
    sandbox.run("ln", "-sfn", SECRET, f"{repo}/{NOTEBOOK}.ipynb", user="nbh-courses")
    sandbox.run(*git, "add", "--all", user="nbh-courses")
    sandbox.run(*git, "commit", "--quiet", "--message", "a notebook becomes a link to the secret", user="nbh-courses")
    update = nbh(sandbox, "course", "update", linked_course)
    assert update.returncode == 0, update.stderr
    tree = sandbox.path(f"/var/lib/nbhosting/courses/{linked_course}/{NOTEBOOK}.ipynb")
    assert tree.is_symlink() and os.readlink(tree) == SECRET
    assert f"{NOTEBOOK}.ipynb" not in nbh(sandbox, "course", "show", linked_course).stdout

    response = get(entry_path(linked_course, NOTEBOOK, student))
    assert response.status == 404, response.body[:300]
    assert b"Unknown notebook" in response.body
    refused = sandbox.journal("NBH_EVENT=refused", "NBH_STATUS=404", f"NBH_COURSE={linked_course}",
                              "--since=-60s")
    assert any(e.get("NBH_NOTEBOOK") == NOTEBOOK for e in refused), refused
    assert_nothing_started_or_written(sandbox, systemd, linked_course, student)
    assert_no_secret_in_workspaces(sandbox, linked_course)


def test_a_notebook_made_a_link_while_its_server_starts(sandbox, systemd, linked_course, student):
    """Listed when the entry came, a link by the time of the copy: the copy
    itself refuses it (the "starting" page's stream says so)."""
    other = "w2/with space.ipynb"
    instance = Instance(linked_course, student)
    configure(sandbox, nbh_sandbox.CONFIG + "start_page_after = 0\n")
    try:
        response = get(entry_path(linked_course, other.replace(' ', '%20'), student))
        assert response.status == 200 and b"Starting your notebook" in response.body
        wait = re.search(rb'new EventSource\("([^"]+)"\)', response.body).group(1).decode()
        connection = http.client.HTTPConnection(HOST, PORT, timeout=120)
        connection.request("GET", wait)
        stream = connection.getresponse()
        first = stream.readline()  # the first progress: the stream found the notebook, the start goes on
        assert first.startswith(b"event: progress"), first
        # What `git reset` does at an update, at the worst moment.
        notebook = sandbox.path(f"/var/lib/nbhosting/courses/{linked_course}/{other}")
        os.symlink(SECRET, notebook.with_name(".link"))
        os.replace(notebook.with_name(".link"), notebook)
        events = [block for block in stream.read().decode().split("\n\n") if block.strip()]
        connection.close()
        kind, data = re.match(r"event: (\w+)\ndata: (.*)", events[-1]).groups()
        assert kind == "failed" and json.loads(data)["message"] == "Unknown notebook"
    finally:
        systemd.stop_instance(instance)
        configure(sandbox, nbh_sandbox.CONFIG)
    refused = sandbox.journal("NBH_EVENT=refused", f"NBH_STUDENT={student}")
    assert [e["NBH_STATUS"] for e in refused] == ["404"] and "symbolic link" in refused[0]["MESSAGE"]
    assert not sandbox.path(f"/var/lib/nbhosting/workspaces/{linked_course}/{student}/{other}").exists()
    assert_no_secret_in_workspaces(sandbox, linked_course)
