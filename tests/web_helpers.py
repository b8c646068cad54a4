"""The LMS entry over plain HTTP, through nginx and nbh-web in the sandbox: a
signed entry URL, where it leads, and what a refused one must leave behind.
Shared by the sandbox tests (test_web.py and most of the others)."""

from __future__ import annotations

import http.client
import json
import re
from urllib.parse import unquote

from tornado.websocket import websocket_connect

from nbhosting import access
from devtools import sandbox as nbh_sandbox
from nbhosting.names import Instance

from .release_visit import run_cell

LMS = nbh_sandbox.LMS_ORIGINS[0]
HOST, PORT = "127.0.0.1", nbh_sandbox.HTTP_PORT
NOTEBOOK = "w1/w1-s1-c1-intro"


def get(path: str, referer: str | None = LMS + "/courses/x/unit/y", headers: dict | None = None,
        method: str = "GET", body: str | None = None, timeout: float = 60) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection(HOST, PORT, timeout=timeout)
    headers = dict(headers or {})
    if referer:
        headers["Referer"] = referer
    connection.request(method, path, body, headers)
    response = connection.getresponse()
    response.body = response.read()
    connection.close()
    return response


def follow_start(response: http.client.HTTPResponse) -> str:
    """Where an entry leads: its redirect, or the end of its "starting" page."""
    if response.status == 302:
        return response.getheader("Location")
    assert response.status == 200, (response.status, response.body[:300])
    wait = re.search(rb'new EventSource\("([^"]+)"\)', response.body).group(1).decode()
    events = sse(get(wait, referer=None, timeout=120).body)
    kind, data = events[-1]
    assert kind == "ready", events
    return data["url"]


def sse(body: bytes) -> list[tuple[str, dict]]:
    events = []
    for block in body.decode().strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def lms_key() -> bytes:
    return access.read_key(nbh_sandbox.path(str(access.LMS_KEY_PATH)))


def signed(path: str, ttl: int = 600) -> str:
    """An entry path with the query the LMS adds, signed with the sandbox's LMS
    key; the signature covers the names as the front end decodes them."""
    _, _, course, rest = path.split("/", 3)
    notebook, _, student = rest.rstrip("/").rpartition("/")
    return f"{path}?{access.signed_query(lms_key(), course, unquote(notebook), student, ttl)}"


def entry_path(course: str, notebook: str, student: str, kind: str = "ipythonExercice", sign: bool = True) -> str:
    path = f"/{kind}/{course}/{notebook}/{student}"
    return signed(path) if sign else path


def entry(course: str, notebook: str, student: str, kind: str = "ipythonExercice", sign: bool = True,
          **kwargs) -> str:
    return follow_start(get(entry_path(course, notebook, student, kind, sign), **kwargs))


def workspace_file(sandbox, course: str, student: str, notebook: str):
    return sandbox.path(f"/var/lib/nbhosting/workspaces/{course}/{student}/{notebook}")


def assert_nothing_started_or_written(sandbox, systemd, course: str, student: str) -> None:
    try:
        instance = Instance(course, student)
    except ValueError:
        return  # a name that cannot even make a unit
    assert systemd.state(instance.service).ActiveState == "inactive"
    assert not workspace_file(sandbox, course, student, "").exists()


async def execute(sandbox, instance: Instance, kernel_id: str, code: str) -> str:
    """Run code in a kernel over its websocket, as the notebook page does; its stdout."""
    url = (f"ws://{HOST}:{PORT}{instance.base_url}api/kernels/{kernel_id}/channels"
           f"?token={sandbox.token(instance)}")
    return await run_cell(await websocket_connect(url), code)
