"""Per-student origins (web.student_origin): each pair's server on a host
name of its own, so that a page of one student's server (their code, or a
notebook they shared) reaches no other student's storage, frames or server.

In the sandbox the pairs' origins are http://<key>.localhost:8780 (Chromium
resolves *.localhost to loopback; other clients send the Host header to
127.0.0.1). The same browser attack runs in the single-origin mode too,
where it succeeds: the risk the README states for that mode, and the proof
that the attack can tell the modes apart.
"""

from __future__ import annotations

import json
import re
import time
from urllib.parse import urljoin, urlsplit

import pytest

from nbhosting import origins, podman, tokens
from devtools import sandbox as nbh_sandbox
from nbhosting.names import Instance

from .browser_helpers import NOTEBOOK, SOURCE, entry_url, first_cell_source, wait_for_kernel_idle
from .conftest import configure, nbh
from .lti_helpers import launch as lti_launch, opened
from .lti_platform import CLIENT_ID, DEPLOYMENT_ID
from .staff_helpers import add_account, logged_in
from .web_helpers import NOTEBOOK as LTI_NOTEBOOK, follow_start, get

pytestmark = pytest.mark.sandbox

ORIGIN = f"http://{{key}}.localhost:{nbh_sandbox.HTTP_PORT}"
PER_STUDENT = f'student_origin = "{ORIGIN}"\n'
KEY_HOST = re.compile(rf"http://([a-z2-7]{{26}})\.localhost:{nbh_sandbox.HTTP_PORT}$")


def apply(sandbox, extra: str) -> None:
    """A configuration as an operator applies it: nbh setup, then nbh-web's restart."""
    sandbox.path("/etc/nbhosting/nbhosting.toml").write_text(nbh_sandbox.CONFIG + extra)
    sandbox.run("nbh", "setup")
    configure(sandbox, nbh_sandbox.CONFIG + extra)


@pytest.fixture
def per_student(sandbox):
    apply(sandbox, PER_STUDENT)
    yield
    apply(sandbox, "")


@pytest.fixture
def pairs(sandbox, systemd, course, student):
    """Two students of the course; their servers are stopped after the test."""
    both = [Instance(course, student), Instance(course, student + "b")]
    yield both
    for instance in both:
        systemd.stop_instance(instance)


def key_of(sandbox, instance: Instance) -> str:
    return tokens.origin_key(tokens.read_secret(sandbox.path(str(tokens.SECRET_PATH))), instance)


def enter(sandbox, instance: Instance) -> str:
    """The entry, as the LMS's iframe asks it: where it leads."""
    url = entry_url(sandbox, instance, NOTEBOOK)
    return urljoin(url, follow_start(get(url.removeprefix(nbh_sandbox.SITE_URL), referer=None, timeout=120)))


def on_host(url: str, host: str | None = None) -> tuple[int, bytes]:
    """GET url's path from the sandbox's nginx, with url's host (or this one)."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    response = get(path, referer=None, headers={"Host": host or parts.netloc})
    return response.status, response.body


def test_each_pair_answers_on_its_own_origin_and_nowhere_else(sandbox, per_student, pairs):
    mine, theirs = pairs
    url = enter(sandbox, mine)
    origin = f"{urlsplit(url).scheme}://{urlsplit(url).netloc}"
    key = KEY_HOST.fullmatch(origin).group(1)
    assert key == key_of(sandbox, mine)
    assert mine.student not in url.split("/nb/")[0]  # the origin names no one
    assert urlsplit(url).path.startswith(mine.base_url)
    link = sandbox.path(f"{origins.KEYS_DIR}/{key}.sock")
    assert link.is_symlink() and str(link.readlink()) == mine.listen_socket
    status, body = on_host(url)
    assert status == 200 and b"<title>" in body, (status, body[:300])

    # the site's origin serves no student's server: the page, Jupyter's scripts
    assert on_host(url, "127.0.0.1")[0] == 404
    script = re.search(rb'src="([^"]*/static/[^"?]+\.js)', body).group(1).decode()
    # (the page takes nginx's shared copy, on its origin as on every other;
    # the server's own is its origin's alone)
    assert urlsplit(script).path.startswith("/_jupyter/"), script
    assert on_host(urljoin(url, script))[0] == 200
    own = f"{mine.base_url}static/notebook/{urlsplit(script).path.rsplit('/', 1)[1]}"
    assert on_host(urljoin(url, own))[0] == 200
    assert on_host(urljoin(url, own), "127.0.0.1")[0] == 404
    # the pair's origin serves its server and nothing else: not another
    # pair's path (it reaches this pair's server, which has no such page),
    # not the front end's pages
    their_url = enter(sandbox, theirs)
    assert urlsplit(their_url).netloc != urlsplit(url).netloc
    their_path = urlsplit(their_url).path + "?" + urlsplit(their_url).query
    assert on_host(their_url)[0] == 200
    assert on_host("http://x" + their_path, urlsplit(url).netloc)[0] == 404
    for path in ("/", "/staff/", "/staff/login", f"/shared/{mine.course}/x/y", "/lti/jwks",
                 entry_url(sandbox, mine, NOTEBOOK).removeprefix(nbh_sandbox.SITE_URL)):
        assert on_host("http://x" + path, urlsplit(url).netloc)[0] == 404, path
    # a key that no entry made leads nowhere
    unknown = "a" * 26
    assert on_host(f"http://x{mine.base_url}api/status", f"{unknown}.localhost:{nbh_sandbox.HTTP_PORT}")[0] == 503
    # the shared pages are the site's, as the File menu's Share shows them
    environment = sandbox.run(*podman.argv(["inspect", mine.container, "--format", "{{json .Config.Env}}"]))
    share_id = tokens.share_id(tokens.read_secret(sandbox.path(str(tokens.SECRET_PATH))), mine)
    assert f"NBH_SHARE_URL={nbh_sandbox.SITE_URL}/shared/{mine.course}/{share_id}/" in json.loads(environment.stdout)


def test_the_front_end_will_not_start_when_nginx_is_in_the_other_mode(sandbox):
    try:
        configure(sandbox, nbh_sandbox.CONFIG + PER_STUDENT)  # no `nbh setup`: no flag for nginx
        assert not sandbox.path(str(origins.MODE_FLAG)).exists()
        assert get("/staff/login", referer=None, headers={"Host": "staff.localhost"}).status in (502, 503)
        log = sandbox.run("journalctl", "--no-pager", "--output=cat", "--lines=20", "--unit", "nbh-web.service").stdout
        assert "run `nbh setup`" in log, log
    finally:
        configure(sandbox, nbh_sandbox.CONFIG)
        # its restarts hit the start limit, which failed the socket too
        sandbox.run("systemctl", "reset-failed", "nbh-web.socket")
        sandbox.run("systemctl", "start", "nbh-web.socket")
    assert get("/staff/login", referer=None, headers={"Host": "staff.localhost"}).status == 200


# What a page of one student's server runs in a browser that has another
# student's notebook open (the link of a shared or sent notebook): read the
# other's storage, then frame the other's server (its URL given, token and
# all: the strongest position) and read into it.
PROBE = """
const done = arguments[arguments.length - 1], result = {origin: location.origin};
result.storage = localStorage.getItem("nbh-probe");
const frame = document.createElement("iframe");
frame.src = arguments[0];
frame.onload = () => {
  try { result.frame = "read " + frame.contentWindow.localStorage.getItem("nbh-probe"); }
  catch (error) { result.frame = "refused: " + error.name; }
  done(result);
};
document.body.appendChild(frame);
"""


@pytest.mark.parametrize("mode", ["single-origin", "per-student"])
def test_a_students_page_cannot_read_another_students_storage_nor_frame_their_server(
        sandbox, pairs, browser, mode, request):
    if mode == "per-student":
        request.getfixturevalue("per_student")
    victim, attacker = pairs
    victim_url = enter(sandbox, victim)
    browser.driver.get(victim_url)
    browser.wait("the victim's notebook", lambda: SOURCE in first_cell_source(browser))
    browser.js("localStorage.setItem('nbh-probe', 'the victim\\'s')")
    browser.driver.get(enter(sandbox, attacker))
    browser.wait("the attacker's notebook", lambda: SOURCE in first_cell_source(browser))
    wait_for_kernel_idle(browser, sandbox, attacker)  # its kernel's websocket too, on its origin
    browser.driver.set_script_timeout(60)
    result = browser.driver.execute_async_script(PROBE, victim_url)
    if mode == "single-origin":  # the risk of that mode, which the README states
        assert result == {"origin": nbh_sandbox.SITE_URL, "storage": "the victim's", "frame": "read the victim's"}
    else:
        victim_origin = urljoin(victim_url, "/").rstrip("/")
        assert KEY_HOST.fullmatch(result["origin"]) and KEY_HOST.fullmatch(victim_origin), (result, victim_url)
        assert result["origin"] != victim_origin
        assert result["storage"] is None, result
        assert result["frame"] == "refused: SecurityError", result


def test_an_lti_launch_leads_to_the_pairs_origin(sandbox, course, lti_platform, per_student, student, stop):
    # registered again: test_rpm.py, which runs before, boots the sandbox
    # anew, without the session's registration
    added = nbh(sandbox, "lti", "add", "fake", "--issuer", lti_platform.url, "--client-id", CLIENT_ID,
                "--deployment-id", DEPLOYMENT_ID, "--auth-url", lti_platform.url + "/auth",
                "--jwks-url", lti_platform.url + "/jwks", "--courses", "*")
    assert added.returncode == 0, added.stderr
    sub = f"origin-{student}"
    instance = Instance(course, lti_platform.student(sub))
    stop(instance)
    response, _, _ = lti_launch(lti_platform, sub, course)
    url = opened(response, time.time() - 60)
    key = key_of(sandbox, instance)
    assert url == (f"http://{key}.localhost:{nbh_sandbox.HTTP_PORT}/nb/{course}/{instance.student}/notebooks/"
                   f"{LTI_NOTEBOOK}.ipynb?token={sandbox.token(instance)}")
    assert on_host(url)[0] == 200


def test_open_as_myself_leads_to_the_staff_members_own_origin(sandbox, systemd, course, per_student):
    add_account("admin", "--admin")
    instance = Instance(course, "staff.admin")
    try:
        client = logged_in("admin")
        # the browser follows the form's redirect to the pair's origin (CSP form-action)
        policy = client.get(f"/staff/courses/{course}").headers["Content-Security-Policy"]
        assert f"form-action 'self' {nbh_sandbox.SITE_URL} http://*.localhost:{nbh_sandbox.HTTP_PORT};" in policy
        response = client.post(f"/staff/courses/{course}/open", {"notebook": NOTEBOOK})
        assert response.status_code == 303, response.text[:500]
        location = response.headers["Location"]
        assert location.startswith(f"http://{key_of(sandbox, instance)}.localhost:{nbh_sandbox.HTTP_PORT}"
                                   f"{instance.base_url}notebooks/{NOTEBOOK}?token="), location
        assert on_host(location)[0] == 200
    finally:
        systemd.stop_instance(instance)


def test_gc_removes_the_keys_of_sockets_that_are_gone(sandbox, systemd, per_student, pairs):
    """A pair put to sleep (its socket stopped) leaves a link to nothing; the
    unit nbh-gc.timer starts removes it, and keeps a running pair's."""
    asleep, awake = pairs
    for instance in pairs:
        enter(sandbox, instance)
    links = {instance: f"{origins.KEYS_DIR}/{key_of(sandbox, instance)}.sock" for instance in pairs}

    def leads_somewhere(instance: Instance) -> bool:  # followed inside the sandbox, as nginx does
        return sandbox.run("test", "-e", links[instance], check=False).returncode == 0

    systemd.stop_instance(asleep)
    systemd.stop(asleep.socket)
    assert sandbox.path(links[asleep]).is_symlink() and not leads_somewhere(asleep)
    sandbox.run("systemctl", "start", "nbh-gc.service")
    assert not sandbox.path(links[asleep]).is_symlink()
    assert leads_somewhere(awake)
    # the next entry makes it again
    assert on_host(enter(sandbox, asleep))[0] == 200
    assert leads_somewhere(asleep)
