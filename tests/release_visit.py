"""A student's visit, as a browser makes it, run inside a booted release
(tests/test_releases.py) with that release's python3 and Tornado: the entry
URL through nginx, the notebook's page and its extension, the student's copy, a kernel, its
first cell.

    python3 release_visit.py ENTRY_PATH REFERER

prints one JSON object: what each step got.
"""

import asyncio
import json
import re
import ssl
import sys
import urllib.error
import urllib.request
import uuid

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

SITE = "https://127.0.0.1"
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


async def execute(base: str, kernel_id: str, token: str, code: str) -> str:
    request = HTTPRequest(f"wss://127.0.0.1{base}api/kernels/{kernel_id}/channels?token={token}",
                          validate_cert=False)
    socket = await websocket_connect(request)
    msg_id = uuid.uuid4().hex
    socket.write_message(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "", "session": "s",
                   "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }))
    out = []
    try:
        while True:
            text = await asyncio.wait_for(socket.read_message(), 60)
            if text is None:
                return "".join(out) + "<closed>"
            message = json.loads(text)
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "stream":
                out.append(message["content"]["text"])
            elif message["msg_type"] == "error":
                out.append(message["content"]["ename"])
            elif message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                return "".join(out)
    finally:
        socket.close()


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


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:3])))
