"""A student's visit, as a browser makes it, run inside a booted release
(tests/test_releases.py) with that release's python3 and Tornado: the entry
URL through nginx, the notebook's page and its extension, the student's
copy, a kernel, its first cell.

    python3 release_visit.py ENTRY_PATH REFERER [--page]

prints one JSON object: what each step got. With --page, only the entry to
the notebook's page, and how long that took (bench/releases.py). The site
is NBH_SITE's, https://127.0.0.1 by default.
"""

import asyncio
import json
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.request
import uuid

SITE = os.environ.get("NBH_SITE", "https://127.0.0.1")
UNVERIFIED = ssl._create_unverified_context()  # the tree's own certificate, made by the test


def fetch(path: str, headers: dict | None = None, data: bytes | None = None,
          method: str | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(SITE + path, data, headers or {}, method=method)
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=UNVERIFIED), NoRedirect)
    try:
        response = opener.open(request, timeout=120)
    except urllib.error.HTTPError as error:
        response = error
    return response.status, dict(response.headers), response.read()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None


def notebook_url(entry: str, referer: str) -> str:
    """Where the entry leads: its redirect, or the "ready" event of its starting page."""
    status, headers, body = fetch(entry, {"Referer": referer})
    if status == 302:
        return headers["Location"]
    assert status == 200, (status, body[:500])
    wait = re.search(rb'new EventSource\("([^"]+)"\)', body)[1].decode()
    _, _, events = fetch(wait)
    last = events.decode().strip().split("\n\n")[-1]
    fields = dict(line.split(": ", 1) for line in last.splitlines())
    assert fields["event"] == "ready", events[-500:]
    return json.loads(fields["data"])["url"]


async def run_cell(socket, code: str) -> str:
    """Run code over a kernel's websocket (Tornado's), as the notebook page
    does: its stdout and error names, "<closed>" if the server went away.
    Also tests/test_web.py's."""
    msg_id = uuid.uuid4().hex
    socket.write_message(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "", "session": "s",
                   "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }))
    out = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            text = await asyncio.wait_for(socket.read_message(), 60)
            if text is None:
                out.append("<closed>")
                break
            message = json.loads(text)
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "stream":
                out.append(message["content"]["text"])
            elif message["msg_type"] == "error":
                out.append(message["content"]["ename"])
            elif message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                break
    finally:
        socket.close()
    return "".join(out)


async def execute(base: str, kernel_id: str, token: str, code: str) -> str:
    from tornado.httpclient import HTTPRequest  # the release's; --page needs only the standard library
    from tornado.websocket import websocket_connect
    request = HTTPRequest(f"{SITE.replace('http', 'ws', 1)}{base}api/kernels/{kernel_id}/channels?token={token}",
                          validate_cert=False)
    return await run_cell(await websocket_connect(request), code)


def main(entry: str, referer: str) -> dict:
    seen = {}
    url = notebook_url(entry, referer)
    seen["url"] = url
    base, notebook, token = re.match(r"(/nb/[^/]+/[^/]+/)notebooks/(.*)\?token=(\w+)", url).groups()
    seen["page"], _, page = fetch(url)
    # the page's configuration names the federated extensions it loads
    config = json.loads(re.search(rb'id="jupyter-config-data" type="application/json">(.*?)</script>',
                                  page, re.DOTALL)[1])
    extensions = {e["name"]: e for e in config.get("federated_extensions", [])}
    seen["extensions"] = sorted(extensions)
    if "@nbhosting/menus" in extensions:
        menus = extensions["@nbhosting/menus"]
        seen["menus_entry"], _, _ = fetch(f"{base}lab/extensions/@nbhosting/menus/{menus['load']}")
    auth = {"Authorization": f"token {token}", "Content-Type": "application/json"}
    # the student's copy, as the page reads it; its first cell run in a new kernel
    status, _, body = fetch(f"{base}api/contents/{notebook}", auth)
    assert status == 200, (status, body[:500])
    cell = json.loads(body)["content"]["cells"][0]["source"]
    status, _, body = fetch(f"{base}api/kernels", auth, b"{}", "POST")
    assert status == 201, (status, body[:500])
    seen["output"] = asyncio.run(execute(base, json.loads(body)["id"], token, cell))
    return seen


def page(entry: str, referer: str) -> dict:
    began = time.perf_counter()
    status, _, _ = fetch(notebook_url(entry, referer))
    assert status == 200, status
    return {"s": time.perf_counter() - began}


if __name__ == "__main__":
    print(json.dumps((page if "--page" in sys.argv else main)(*sys.argv[1:3])))
