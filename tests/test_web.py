"""The LMS entry, through nginx and nbh-web, against the sandbox."""

from __future__ import annotations

import re
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest

from devtools import sandbox as nbh_sandbox
from nbhosting import cli
from nbhosting.names import Instance

from .conftest import COURSE_NOTEBOOKS, nbh
from .web_helpers import (LMS, NOTEBOOK, assert_nothing_started_or_written, entry, entry_path, execute, follow_start,
                          get, signed, sse, workspace_file)

pytestmark = pytest.mark.sandbox


def test_entry_copies_once_and_redirects_to_the_students_own_server(sandbox, systemd, course, student, stop):
    instance = Instance(course, student)
    stop(instance)
    url = entry(course, NOTEBOOK, student)
    path, query = url.split("?")
    assert path == f"/nb/{course}/{student}/notebooks/{NOTEBOOK}.ipynb"
    assert query == f"token={sandbox.token(instance)}"
    page = get(url, referer=None)
    assert page.status == 200
    assert "frame-ancestors 'self' " + " ".join(nbh_sandbox.LMS_ORIGINS) in page.getheader("Content-Security-Policy")
    assert page.getheader("X-Frame-Options") is None

    copy = workspace_file(sandbox, course, student, f"{NOTEBOOK}.ipynb")
    assert copy.read_text() == sandbox.path(f"/var/lib/nbhosting/courses/{course}/{NOTEBOOK}.ipynb").read_text()
    info = copy.stat()
    assert stat.S_IMODE(info.st_mode) == 0o660
    group = sandbox.run("stat", "-c", "%G", f"/var/lib/nbhosting/workspaces/{course}/{student}/{NOTEBOOK}.ipynb")
    assert group.stdout.strip() == "nbh-jupyter"
    opens = sandbox.journal("NBH_EVENT=open", f"NBH_STUDENT={student}")
    assert [(e["NBH_NOTEBOOK"], e["NBH_COPIED"]) for e in opens] == [(f"{NOTEBOOK}.ipynb", "yes")]

    # The student's work, saved through their Jupyter, is never overwritten.
    saved = sandbox.api(instance, f"api/contents/{NOTEBOOK}.ipynb")
    saved["content"]["cells"][0]["source"] = "print('my own work')"
    sandbox.api(instance, f"api/contents/{NOTEBOOK}.ipynb", method="PUT",
                body={"type": "notebook", "format": "json", "content": saved["content"]})
    assert entry(course, NOTEBOOK + ".ipynb", student, kind="notebookLazyCopy") == url
    assert "my own work" in copy.read_text()
    opens = sandbox.journal("NBH_EVENT=open", f"NBH_STUDENT={student}")
    assert [e["NBH_COPIED"] for e in opens] == ["yes", "no"]


@pytest.mark.parametrize("notebook", sorted(COURSE_NOTEBOOKS))
def test_notebooks_anywhere_in_the_course(sandbox, course, student, stop, notebook):
    stop(Instance(course, student))
    url = entry(course, notebook.replace(" ", "%20"), student)
    assert get(url, referer=None).status == 200
    assert workspace_file(sandbox, course, student, notebook).exists()


@pytest.mark.parametrize("path, status", [
    ("/ipythonExercice/no-such-course/w1/x/{student}", 404),
    ("/ipythonExercice/{course}/w1/no-such-notebook/{student}", 404),
    ("/ipythonExercice/{course}/w9/w1-s1-c1-intro/{student}", 404),
    ("/ipythonExercice/bad.course/w1/x/{student}", 400),
    ("/ipythonExercice/{course}/w1/w1-s1-c1-intro/bad%20student", 400),
    ("/ipythonExercice/{course}/w1/w1-s1-c1-intro/.hidden", 400),
    ("/ipythonExercice/{course}/%2e%2e/%2e%2e/etc/passwd/{student}", 400),
    ("/ipythonExercice/{course}/w1/%2e%2e/%2e%2e/w1-s1-c1-intro/{student}", 400),
    ("/ipythonExercice/{course}/%2fetc/passwd/{student}", 400),
    ("/ipythonExercice/{course}/w1/x%00y/{student}", 400),
    ("/ipythonExercice/{course}/{student}", 404),
    ("/somewhere/else", 404),
])
def test_bad_entries(sandbox, systemd, course, student, path, status):
    response = get(path.format(course=course, student=student))
    assert response.status == status, response.body[:300]
    assert b"<h1>" in response.body and b"Traceback" not in response.body
    assert_nothing_started_or_written(sandbox, systemd, course, student)
    if "%00" in path:
        return  # nginx itself refuses a NUL, before the front end (in its own log)
    assert response.getheader("Content-Security-Policy").startswith("frame-ancestors 'self'")
    refused = sandbox.journal("NBH_EVENT=refused", f"NBH_STATUS={status}", "--since=-60s")
    assert refused, "no journal entry"


def test_a_referer_opens_nothing_in_the_default_signed_mode(sandbox, systemd, course, student):
    """The forgery of issue 8: any client may send the LMS page as its Referer."""
    response = get(f"/ipythonExercice/{course}/{NOTEBOOK}/{student}", referer=LMS + "/courses/x")
    assert response.status == 403, response.body[:300]
    assert b"token=" not in response.body and response.getheader("Location") is None
    assert_nothing_started_or_written(sandbox, systemd, course, student)
    refused = sandbox.journal("NBH_EVENT=refused", f"NBH_STUDENT={student}")
    assert refused and refused[-1]["NBH_STATUS"] == "403" and "not signed" in refused[-1]["MESSAGE"]


@pytest.mark.parametrize("referer", [None, "https://evil.example.org/page", "http://localhost:9999/x",
                                     "not a url", "http://[localhost:8790/"])
def test_referer_mode_refuses_other_referers(sandbox, systemd, course, student, referer_mode, referer):
    response = get(f"/ipythonExercice/{course}/{NOTEBOOK}/{student}", referer=referer)
    assert response.status == 403
    assert_nothing_started_or_written(sandbox, systemd, course, student)
    refused = sandbox.journal("NBH_EVENT=refused", f"NBH_STUDENT={student}")
    assert refused and refused[-1]["NBH_STATUS"] == "403"


def test_referer_mode_opens_long_ids_only(sandbox, systemd, course, student, stop, referer_mode):
    assert len(student) >= 16
    stop(Instance(course, student))
    url = entry(course, NOTEBOOK, student, sign=False)
    assert url.startswith(f"/nb/{course}/{student}/notebooks/")
    assert get(url, referer=None).status == 200
    short = "s" + student[-14:]  # as unique as the student
    response = get(f"/ipythonExercice/{course}/{NOTEBOOK}/{short}")
    assert response.status == 403
    assert_nothing_started_or_written(sandbox, systemd, course, short)
    refused = sandbox.journal("NBH_EVENT=refused", f"NBH_STUDENT={short}")
    assert "shorter than web.min_student_id" in refused[-1]["MESSAGE"]
    # signed wins: a signed URL opens a short id, without any Referer
    stop(Instance(course, short))
    assert entry(course, NOTEBOOK, short, referer=None).startswith(f"/nb/{course}/{short}/")
    # a URL with a bad signature is refused, whatever its Referer
    tampered = entry_path(course, NOTEBOOK, student).replace("signature=", "signature=0")
    assert get(tampered).status == 403
    warnings = sandbox.run("journalctl", "--no-pager", "-u", "nbh-web.service", "--since=-120s").stdout
    assert "trusts the ids' secrecy" in warnings


def test_another_students_server_refuses_this_students_token(sandbox, course, student, stop):
    alice, bob = Instance(course, student + "a"), Instance(course, student + "b")
    stop(alice)
    stop(bob)
    alice_url = entry(course, NOTEBOOK, alice.student)
    entry(course, NOTEBOOK, bob.student)
    for url in (alice_url.replace(f"/{alice.student}/", f"/{bob.student}/"),  # Alice's token, Bob's server
                alice_url.split("?")[0],  # no token
                f"/nb/{course}/{bob.student}/tree",
                f"/nb/{course}/{bob.student}/api/contents?" + alice_url.split("?")[1]):
        assert get(url, referer=None).status == 403, url


def test_fifty_at_once_start_one_server(sandbox, course, student, stop):
    instance = Instance(course, student)
    stop(instance)
    with ThreadPoolExecutor(50) as pool:
        urls = list(pool.map(lambda _: entry(course, NOTEBOOK, student), range(50)))
    assert len(set(urls)) == 1
    assert [c for c in sandbox.containers() if c == instance.container] == [instance.container]
    assert len(sandbox.journal("NBH_EVENT=start", f"NBH_STUDENT={student}")) == 1
    copies = [e["NBH_COPIED"] for e in sandbox.journal("NBH_EVENT=open", f"NBH_STUDENT={student}")]
    assert copies.count("yes") == 1 and len(copies) == 50


@pytest.fixture
def referer_mode(sandbox_config):
    sandbox_config('auth = "referer"\n')


def test_starting_page_follows_the_start(sandbox, course, student, stop, sandbox_config):
    stop(Instance(course, student))
    sandbox_config("start_page_after = 0\n")
    response = get(entry_path(course, NOTEBOOK, student))
    assert response.status == 200 and b"Starting your notebook" in response.body
    assert "frame-ancestors" in response.getheader("Content-Security-Policy")
    wait = re.search(rb'new EventSource\("([^"]+)"\)', response.body).group(1).decode()
    events = sse(get(wait, referer=None, timeout=120).body)
    assert [kind for kind, _ in events][-1] == "ready"
    assert all(kind == "progress" for kind, _ in events[:-1])
    assert get(events[-1][1]["url"], referer=None).status == 200
    # a ticket is tied to its pair
    forged = wait.replace("ticket=", "ticket=x")
    assert get(forged, referer=None).status == 403


def test_signed_urls(sandbox, systemd, course, student, stop):
    stop(Instance(course, student))
    printed = nbh(sandbox, "sign", course, "w2/with space", student)
    assert printed.returncode == 0, printed.stderr
    url = urlsplit(printed.stdout.strip())
    assert f"{url.scheme}://{url.netloc}" == nbh_sandbox.SITE_URL
    assert url.path == f"/ipythonExercice/{course}/w2/with%20space/{student}"
    path = f"{url.path}?{url.query}"
    assert follow_start(get(path, referer=None)).startswith(f"/nb/{course}/{student}/notebooks/w2/with%20space")
    tampered = path.replace(f"/{student}?", f"/{student}x?")
    assert get(tampered, referer=None).status == 403
    assert get(url.path, referer=LMS).status == 403  # a referer is not enough
    expired = signed(f"/ipythonExercice/{course}/{NOTEBOOK}/{student}x", ttl=-10)
    assert get(expired, referer=None).status == 403
    assert_nothing_started_or_written(sandbox, systemd, course, student + "x")


def test_nbh_sign_prints_an_accepted_url_or_says_why_not(sandbox, course, student):
    too_short = nbh(sandbox, "sign", "--ttl", "-10", course, NOTEBOOK, student)
    assert too_short.returncode == 1 and too_short.stderr.count("\n") == 1
    assert "--ttl -10" in too_short.stderr and not too_short.stdout
    unreadable = nbh(sandbox, "sign", course, NOTEBOOK, student, user="nbh-jupyter")  # not in group nbh
    assert unreadable.returncode == 1 and unreadable.stderr.count("\n") == 1
    assert "cannot read /etc/nbhosting/lms-key" in unreadable.stderr
    sandbox.run("mv", "/etc/nbhosting/lms-key", "/etc/nbhosting/lms-key.aside")
    try:
        missing = nbh(sandbox, "sign", course, NOTEBOOK, student)
    finally:
        sandbox.run("mv", "/etc/nbhosting/lms-key.aside", "/etc/nbhosting/lms-key")
    assert missing.returncode == 1 and missing.stderr == "nbh: no LMS key at /etc/nbhosting/lms-key: run `nbh setup` as root\n"


@pytest.mark.parametrize("query", [
    "expires=%C2%B2&signature={signature}",                     # '²': str.isdigit() is true
    "expires={expires}&signature=%C3%A9" + "%C3%A9" * 63,        # non-ASCII: compare_digest raised TypeError
    "expires={expires}&signature=%FF%FE",                         # not UTF-8
    "expires=%FF&signature={signature}",
    "expires=-1&signature={signature}",
    "expires=99999999999999999999&signature={signature}",
    "expires=&signature=",
    "expires={expires}&signature={signature}&signature=x",       # the last one counts
    "expires={expires}&expires=1&signature={signature}",
    "expires={expires}",
    "signature={signature}",
])
def test_malformed_signatures_and_expiries_are_refused_not_errors(sandbox, systemd, course, student, query):
    path = f"/ipythonExercice/{course}/{NOTEBOOK}/{student}"
    good = dict(part.split("=") for part in urlsplit(signed(path)).query.split("&"))
    response = get(f"{path}?{query.format(**good)}")
    assert response.status in (400, 403), (response.status, response.body[:300])
    assert b"Traceback" not in response.body
    assert_nothing_started_or_written(sandbox, systemd, course, student)


def test_signatures_and_tickets_stay_out_of_the_logs(sandbox, course, student, stop, sandbox_config):
    stop(Instance(course, student))
    sandbox_config("start_page_after = 0\n")
    path = entry_path(course, NOTEBOOK, student)
    response = get(path)
    assert response.status == 200
    wait = re.search(rb'new EventSource\("([^"]+)"\)', response.body).group(1).decode()
    assert sse(get(wait, referer=None, timeout=120).body)[-1][0] == "ready"
    bad_ticket = wait + "x"
    assert get(bad_ticket, referer=None).status == 403
    secrets = [urlsplit(path).query.split("signature=")[1], wait.split("ticket=")[1]]
    log = sandbox.run("journalctl", "--no-pager", "-o", "cat", "-u", "nbh-web.service", "--since=-120s").stdout
    assert f"200 GET /ipythonExercice/{course}/{NOTEBOOK}/{student} " in log  # the access log is there
    assert "200 GET /_nbh/wait " in log and "403 GET /_nbh/wait: wait: bad ticket" in log
    for secret in secrets:
        assert secret[:20] not in log
    for entry_log in sandbox.journal("SYSLOG_IDENTIFIER=nbhosting", "--since=-120s"):
        assert not any(secret[:20] in str(value) for secret in secrets for value in entry_log.values())


def test_a_revoked_token_fails_and_the_next_entry_works(sandbox, systemd, course, student, stop):
    instance = Instance(course, student)
    stop(instance)
    old = entry(course, NOTEBOOK, student)
    assert get(old, referer=None).status == 200
    assert nbh(sandbox, "revoke", course, student, user="nbh").returncode == 1  # root only
    revoked = nbh(sandbox, "revoke", course, student)
    assert revoked.returncode == 0, revoked.stderr
    assert "generation 1" in revoked.stdout and "server stopped" in revoked.stdout
    assert systemd.state(instance.service).ActiveState == "inactive"
    assert systemd.state(instance.socket).ActiveState == "active"
    assert get(old, referer=None).status == 403  # starts the server again, with the new token
    new = entry(course, NOTEBOOK, student)
    assert new != old and new.split("token=")[1] == sandbox.token(instance)
    assert get(new, referer=None).status == 200
    assert get(old, referer=None).status == 403
    events = sandbox.journal("NBH_EVENT=revoke", f"NBH_STUDENT={student}")
    assert [e["NBH_GENERATION"] for e in events] == ["1"]
    store = sandbox.run("stat", "-c", "%a %U %G", "/var/lib/nbhosting/tokens",
                        f"/var/lib/nbhosting/tokens/{course}", f"/var/lib/nbhosting/tokens/{course}/{student}")
    assert store.stdout.split("\n")[:3] == ["750 root nbh-jupyter", "750 root nbh-jupyter", "640 root nbh-jupyter"]


def test_rotating_the_host_secret_changes_every_token(sandbox, systemd, course, student, stop):
    instance = Instance(course, student)
    stop(instance)
    old = entry(course, NOTEBOOK, student)
    assert nbh(sandbox, "rotate-secret", user="nbh").returncode == 1  # root only
    rotated = nbh(sandbox, "rotate-secret")
    assert rotated.returncode == 0, rotated.stderr
    assert systemd.state(instance.service).ActiveState == "inactive"
    assert sandbox.run("stat", "-c", "%a %U %G", "/etc/nbhosting/secret").stdout.strip() == "440 root nbh"
    new = entry(course, NOTEBOOK, student)
    assert new != old and new.split("token=")[1] == sandbox.token(instance)
    assert get(new, referer=None).status == 200
    assert get(old, referer=None).status == 403


def test_restarting_the_front_end_keeps_kernels(sandbox, systemd, course, student, stop):
    instance = Instance(course, student)
    stop(instance)
    entry(course, NOTEBOOK, student)
    main_pid = systemd.state(instance.service).MainPID
    kernel = sandbox.api(instance, "api/kernels", method="POST", body={"name": "python3"})
    loop = systemd.loop
    assert loop.run_until_complete(execute(sandbox, instance, kernel["id"], "x = 41")) == ""
    sandbox.run("systemctl", "restart", "nbh-web.service")
    assert systemd.state("nbh-web.service").ActiveState == "active"
    assert entry(course, NOTEBOOK, student).startswith(instance.base_url)
    assert loop.run_until_complete(execute(sandbox, instance, kernel["id"], "print(x + 1)")) == "42\n"
    assert systemd.state(instance.service).MainPID == main_pid


def test_maintenance_switch(sandbox, course, student):
    sandbox.run("touch", "/etc/nbhosting/maintenance")
    try:
        response = get(f"/ipythonExercice/{course}/{NOTEBOOK}/{student}")
        assert response.status == 503 and b"maintenance" in response.body
    finally:
        sandbox.run("rm", "/etc/nbhosting/maintenance")
    assert get(f"/ipythonExercice/{course}/no-such/{student}").status == 404


def test_nginx_configuration_is_valid(sandbox):
    result = sandbox.run("nginx", "-t", check=False)
    assert result.returncode == 0, result.stderr
    assert "[warn]" not in result.stderr, result.stderr


def test_the_tls_site_speaks_http2_where_nginx_has_the_directive(sandbox):
    """nginx 1.25.1 and later (Debian 13's 1.26): `nbh setup` turns HTTP/2 on
    in the site's TLS servers, and a client that offers it gets it, on the
    site and on the staff origin. nginx 1.22 (Debian 12's), which would refuse
    the directive: no file, HTTP/1.1."""
    version = cli.nginx_version(sandbox.run("nginx", "-v", check=False).stderr)  # the sandbox's nginx
    conf = sandbox.path(str(cli.NGINX_HTTP2_CONF))

    def over_tls(host: str) -> str:
        """The HTTP version curl (offering HTTP/2 by ALPN) and the site agree on, and the status."""
        port = nbh_sandbox.HTTPS_PORT
        return subprocess.run(["curl", "-sk", "--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                               "--resolve", f"{host}:{port}:127.0.0.1", f"https://{host}:{port}/"],
                              capture_output=True, text=True, timeout=30).stdout

    answers = {host: over_tls(host) for host in ("nbh.localhost", "staff.localhost")}
    if version >= cli.NGINX_HTTP2_SINCE:
        assert conf.read_text().endswith("http2 on;\n")
        assert all(answer.startswith("2 ") for answer in answers.values()), answers
    else:
        assert not conf.exists()
        assert all(answer.startswith("1.1 ") for answer in answers.values()), answers
    assert not any(answer.endswith(" 000") for answer in answers.values()), answers  # answered
    # what nginx includes there, as root, in the TLS servers: no account but root adds to it
    for account in ("nbh", "nbh-jupyter", "nbh-build", "nbh-courses"):
        planted = sandbox.run("sh", "-c", "mkdir -p /etc/nbhosting/nginx && echo 'return 200;' > "
                              "/etc/nbhosting/nginx/planted.conf", user=account, check=False)
        assert planted.returncode != 0, account
    assert not sandbox.path("/etc/nbhosting/nginx/planted.conf").exists()


def test_a_server_that_cannot_start_gives_a_clear_page(sandbox, student):
    """A course whose image is missing: an error page with a retry link, and why in the journal."""
    course = "broken-image"
    sandbox.make_course(course, "--image", "localhost/nbhosting/no-such-image:1")
    assert "no-such-image" in nbh(sandbox, "course", "show", course).stdout
    response = get(entry_path(course, NOTEBOOK, student))
    if response.status == 200:  # the "starting" page: its stream says it failed
        wait = re.search(rb'new EventSource\("([^"]+)"\)', response.body).group(1).decode()
        kind, data = sse(get(wait, referer=None, timeout=120).body)[-1]
        assert kind == "failed" and "could not start" in data["message"]
    else:
        assert response.status == 503, response.body[:300]
        assert b"could not start" in response.body and b"Try again" in response.body
    failures = sandbox.journal("NBH_EVENT=failure", f"NBH_STUDENT={student}")
    assert any("exit-code" in f.get("NBH_REASON", f["MESSAGE"]) for f in failures), failures
    assert not workspace_file(sandbox, course, student, f"{NOTEBOOK}.ipynb").exists()
