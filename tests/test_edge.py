"""nginx's edge and the front end's door: logs without secrets, the shared
origin, the entry's rate, request bodies and methods; against the sandbox."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import re
import socketserver
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import pytest

from devtools import sandbox as nbh_sandbox
from nbhosting.names import Instance

from .conftest import nbh
from .web_helpers import NOTEBOOK, assert_nothing_started_or_written, entry, follow_start, get

pytestmark = pytest.mark.sandbox

ACCESS_LOG = "/var/log/nginx/nbhosting.access.log"


@pytest.fixture
def running(systemd, course, student):
    """A student's server, started by an entry; its notebook URL, token and all."""
    instance = Instance(course, student)
    url = entry(course, NOTEBOOK, student)
    yield instance, url
    systemd.stop_instance(instance)


def own_script(instance: Instance, page: bytes) -> str:
    """The page's main script, as the student's server serves it: the page
    takes nginx's shared copy (test_jupyter_static.py), but a server whose
    image has none serves its own, through these checks."""
    shared = re.search(rb'<script defer="defer" src="/_jupyter/[0-9a-f]{64}/static/([^"?]+)', page).group(1)
    return f"{instance.base_url}static/notebook/{shared.decode()}"


def test_the_access_log_has_no_query_string(sandbox, course, student, systemd):
    """Signed URLs, wait tickets and tokens never reach nginx's access log."""
    instance = Instance(course, student)
    signed = nbh(sandbox, "sign", course, NOTEBOOK, student)
    assert signed.returncode == 0, signed.stderr
    url = urlsplit(signed.stdout.strip())
    signature = parse_qs(url.query)["signature"][0]
    try:
        response = get(f"{url.path}?{url.query}")
        ticket = response.body.split(b"ticket=")[1].split(b'"')[0].decode() if response.status == 200 else None
        notebook = follow_start(response)
        token = parse_qs(urlsplit(notebook).query)["token"][0]
        assert token == sandbox.token(instance)
        # The page, and a request it makes, which carries the page's URL as its Referer.
        assert get(notebook, referer=None).status == 200
        assert get(f"{instance.base_url}api/status?token={token}",
                   referer=nbh_sandbox.SITE_URL + notebook).status == 200
    finally:
        systemd.stop_instance(instance)
    log = sandbox.path(ACCESS_LOG).read_text()
    assert f"GET {url.path} HTTP/1.1" in log  # the entry is logged, without its query
    assert f"GET {instance.base_url}api/status HTTP/1.1" in log
    assert f'"{nbh_sandbox.SITE_URL}{instance.base_url}notebooks/' in log  # the Referer, cut short
    for secret in (signature, token, ticket):
        assert secret is None or secret not in log
    for name in ("signature=", "token=", "ticket="):
        assert name not in log


def test_no_service_worker_from_a_students_server(running):
    instance, url = running
    assert get(url, referer=None).status == 200
    assert get(url, referer=None, headers={"Service-Worker": "script"}).status == 403


def test_only_static_scripts_and_styles_are_compressed(sandbox, running):
    """Notebook's scripts go compressed from a student's server too, and the
    checks on the way in hold for them; a page with a token never goes compressed, whatever nginx's
    distribution turns on: a secret compressed next to what a URL reflects
    shows through the size (BREACH)."""
    instance, url = running
    accept = {"Accept-Encoding": "gzip"}
    page = get(url, referer=None, headers=accept)
    assert page.status == 200 and page.getheader("Content-Encoding") is None
    assert sandbox.token(instance).encode() in page.body
    script = own_script(instance, page.body)
    plain, packed = get(script, referer=None), get(script, referer=None, headers=accept)
    assert plain.status == packed.status == 200
    assert packed.getheader("Content-Encoding") == "gzip" and gzip.decompress(packed.body) == plain.body
    assert len(packed.body) < len(plain.body) / 2
    assert get(script, referer=None, headers={"Service-Worker": "script"}).status == 403
    sandbox.run("touch", "/etc/nbhosting/maintenance")
    try:
        assert get(script, referer=None).status == 503
    finally:
        sandbox.run("rm", "/etc/nbhosting/maintenance")
    # The front end's pages: the staff login form carries its XSRF token.
    staff_host = {"Host": urlsplit(nbh_sandbox.STAFF_URL).netloc}
    login = get("/staff/login", referer=None, headers={**accept, **staff_host})
    assert login.status == 200 and b"_xsrf" in login.body and login.getheader("Content-Encoding") is None


def test_no_cookie_from_a_students_server(sandbox, running):
    """Jupyter sets cookies (its login and _xsrf); nginx lets none through."""
    instance, url = running
    direct = nbh_sandbox.UnixHTTPConnection(str(sandbox.path(instance.listen_socket)))
    try:
        direct.request("GET", url)
        response = direct.getresponse()
        response.read()
    finally:
        direct.close()
    assert response.status == 200
    assert response.headers.get_all("Set-Cookie"), "Jupyter set no cookie: this test shows nothing"
    through_nginx = get(url, referer=None)
    assert through_nginx.status == 200
    assert through_nginx.headers.get_all("Set-Cookie") is None


class HostileServer(http.server.BaseHTTPRequestHandler):
    """What a student's code could serve on its socket: a worker claiming the
    whole site, a cookie for the front end's paths, and a Referer policy that
    would send its pages' addresses (and their tokens) anywhere."""

    requests: list[str] = []

    def do_GET(self) -> None:
        HostileServer.requests.append(self.path)
        body = b"self.addEventListener('fetch', e => {});"
        self.send_response(200)
        self.send_header("Content-Type", "text/javascript")
        self.send_header("Service-Worker-Allowed", "/")
        self.send_header("Set-Cookie", "stolen=1; Path=/")
        self.send_header("Referrer-Policy", "unsafe-url")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_students_pages_send_no_referer_and_the_site_asks_for_https(sandbox, running):
    """A notebook page's address holds its token: a link or an <img> to
    another student's path must not carry it there."""
    instance, url = running
    page = get(url, referer=None)
    assert page.status == 200
    script = own_script(instance, page.body)
    for path in (url, script, f"{instance.base_url}api/status"):  # a page, a static file, a 403
        response = get(path, referer=None)
        assert response.headers.get_all("Referrer-Policy") == ["no-referrer"], (path, response.status)
        assert response.getheader("Strict-Transport-Security") == "max-age=31536000", path
    for path in ("/staff/login", "/_static/vega-embed.min.js", "/nowhere"):
        assert get(path, referer=None).getheader("Strict-Transport-Security") == "max-age=31536000", path


def test_hostile_headers_from_a_students_server_are_dropped(sandbox, running):
    instance, _ = running
    # Another student of the same course, whose socket a hostile server holds.
    hostile = Instance(instance.course, f"hostile-{os.getpid()}")
    socket_path = sandbox.path(hostile.listen_socket)
    socket_path.unlink(missing_ok=True)  # a crashed run's
    server = socketserver.UnixStreamServer(str(socket_path), HostileServer)
    os.chmod(socket_path, 0o666)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        direct = nbh_sandbox.UnixHTTPConnection(str(socket_path))
        direct.request("GET", f"{hostile.base_url}sw.js")
        response = direct.getresponse()
        response.read()
        direct.close()
        assert response.getheader("Service-Worker-Allowed") == "/" and response.getheader("Set-Cookie")
        assert response.getheader("Referrer-Policy") == "unsafe-url"

        served = get(f"{hostile.base_url}sw.js", referer=None)
        assert served.status == 200 and b"addEventListener" in served.body
        assert served.getheader("Service-Worker-Allowed") is None
        assert served.getheader("Set-Cookie") is None
        assert served.headers.get_all("Referrer-Policy") == ["no-referrer"]

        HostileServer.requests.clear()
        assert get(f"{hostile.base_url}sw.js", referer=None, headers={"Service-Worker": "script"}).status == 403
        assert HostileServer.requests == []  # refused by nginx itself
    finally:
        server.shutdown()
        server.server_close()
        socket_path.unlink()


def test_entries_are_rate_limited_per_client(sandbox, systemd, course, student):
    """Far past the burst: 429s; a pause later, a student gets in."""
    unknown = f"/ipythonExercice/no-such-course/x/{student}"  # refused by nbh-web at once
    began = time.monotonic()
    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(lambda _: get(unknown).status, range(500)))
    elapsed = time.monotonic() - began
    print(f"500 entries in {elapsed:.1f} s: {statuses.count(404)} 404, {statuses.count(429)} 429")
    assert set(statuses) == {404, 429}
    # the burst and the rate went through; the rest, and only that, was refused
    assert 80 <= statuses.count(404) <= 101 + 10 * (elapsed + 1)
    assert statuses.count(429) >= 500 - 101 - 10 * (elapsed + 1)
    time.sleep(11)  # the burst drains at 10 a second
    instance = Instance(course, student)
    try:
        assert entry(course, NOTEBOOK, student).startswith(instance.base_url)
    finally:
        systemd.stop_instance(instance)


def test_the_front_end_takes_gets_without_bodies(sandbox, systemd, course, student):
    path = f"/ipythonExercice/{course}/{NOTEBOOK}/{student}"
    for method in ("POST", "PUT", "DELETE", "HEAD"):
        response = get(path, method=method, body="x" * 100)
        assert response.status == 405, (method, response.status)
        assert response.getheader("Allow") == "GET"
    refused = sandbox.journal("NBH_EVENT=refused", "NBH_STATUS=405", "--since=-60s")
    assert any(path in e.get("NBH_URL", "") for e in refused)
    # nginx refuses a body past 4 KiB before the front end sees it
    assert get(path, method="POST", body="x" * 65536).status == 413
    assert get(path, body="x" * 65536).status == 413

    # Directly on nbh-web's socket, as something local would.
    def direct(method: str, body: str | None) -> int:
        connection = nbh_sandbox.UnixHTTPConnection(str(sandbox.path("/run/nbhosting/web.sock")))
        try:
            try:
                connection.request(method, path, body, {"Referer": "http://elsewhere.example.org/"})
            except (BrokenPipeError, ConnectionResetError):
                pass  # answered and closed before the whole body was sent
            response = connection.getresponse()
            try:
                response.read()
            except ConnectionResetError:
                pass  # closed with the body unread: the kernel resets a Unix socket then
            return response.status
        finally:
            connection.close()

    assert direct("POST", "x") == 405
    assert direct("GET", "x" * 16384) == 400  # Tornado's max_body_size
    assert direct("GET", "x" * 1024) == 403  # a small body is read, then the request judged
    assert_nothing_started_or_written(sandbox, systemd, course, student)


def test_students_servers_take_uploads(sandbox, running):
    """/nb/ keeps its own body limit: a notebook of a few MiB is saved."""
    instance, _ = running
    content = "x" * (3 << 20)
    response = get(f"{instance.base_url}api/contents/big.txt", referer=None, method="PUT",
                   body=json.dumps({"type": "file", "format": "text", "content": content}),
                   headers={"Authorization": f"token {sandbox.token(instance)}",
                            "Content-Type": "application/json"})
    assert response.status in (200, 201), response.body[:300]
    saved = sandbox.path(f"/var/lib/nbhosting/workspaces/{instance.course}/{instance.student}/big.txt")
    assert saved.stat().st_size == len(content)
