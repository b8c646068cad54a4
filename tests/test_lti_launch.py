"""LTI 1.3 launches through nginx and nbh-web, against the sandbox, from a
fake platform on loopback (tests/lti_platform.py): a launch opens the
student's notebook, copied and running; every bad launch gets a 403 page and
a `refused` event naming the platform and the reason, and starts nothing.
"""

from __future__ import annotations

import html
import json
import re
import stat
import time

import jwt
import pytest

from nbhosting import lti
from nbhosting.names import Instance

from .conftest import nbh
from .lti_helpers import SITE, authorization, launch, login, opened, post_launch, refused_events
from .lti_platform import CLIENT_ID, DEPLOYMENT_ID, new_key
from .sandbox_helpers import instance_units
from .staff_helpers import add_account, fresh_name, logged_in
from .web_helpers import NOTEBOOK, follow_start, get, signed, workspace_file

pytestmark = pytest.mark.sandbox


def test_a_launch_opens_the_students_notebook_copied_and_running(sandbox, systemd, course, lti_platform, student,
                                                                  stop):
    sub = f"user-{student}"
    instance = Instance(course, lti_platform.student(sub))
    stop(instance)
    assert not workspace_file(sandbox, course, instance.student, "").exists()
    since = time.time()
    response, _, _ = launch(lti_platform, sub, course)
    url = opened(response, since)
    assert url == f"/nb/{course}/{instance.student}/notebooks/{NOTEBOOK}.ipynb?token={sandbox.token(instance)}"
    assert get(url, referer=None).status == 200
    assert systemd.active_state(instance.service) == "active"
    copy = workspace_file(sandbox, course, instance.student, f"{NOTEBOOK}.ipynb")
    assert copy.read_text() == sandbox.path(f"/var/lib/nbhosting/courses/{course}/{NOTEBOOK}.ipynb").read_text()
    (event,) = sandbox.journal("NBH_EVENT=launch", f"NBH_STUDENT={instance.student}")
    assert event["NBH_PLATFORM"] == "fake" and event["NBH_COURSE"] == course

    # Warm, the same student again: straight to the same notebook, the copy kept.
    again, _, _ = launch(lti_platform, sub, course)
    assert again.status == 302 and again.getheader("Location") == url
    opens = sandbox.journal("NBH_EVENT=open", f"NBH_STUDENT={instance.student}")
    assert [e["NBH_COPIED"] for e in opens] == ["yes", "no"]


def test_the_course_staff_find_an_lti_student_by_the_name_their_lms_sent(sandbox, systemd, course, lti_platform,
                                                                          student, stop):
    """The name claims, kept per course (nbh's alone), shown and searched on
    the staff pages; HTML in a name is text; a launch without one keeps it."""

    sub = f"named-{student}"
    instance = Instance(course, lti_platform.student(sub))
    stop(instance)
    hostile = f"Ada <img src=x onerror=alert(1)> Lovelace {student}"
    response, _, _ = launch(lti_platform, sub, course, changes={"name": hostile})
    assert response.status in (200, 302)
    inside = f"/var/lib/nbhosting/lti/names/{course}/{instance.student}"
    kept = sandbox.path(inside)
    assert kept.read_text() == hostile
    for account in ("nbh-jupyter", "nobody"):  # the containers' account: what a student's code escaping runs as
        assert sandbox.run("cat", inside, user=account, check=False).returncode != 0, account
    teacher = fresh_name("namer")
    add_account(teacher)
    assert nbh(sandbox, "staff", "grant", teacher, course).returncode == 0
    client = logged_in(teacher)
    found = client.get(f"/staff/courses/{course}", params={"q": f"lovelace {student}"}).text
    assert re.findall(rf'/staff/courses/{course}/students/([^"]+)"', found) == [instance.student], found[-3000:]
    assert html.escape(hostile, quote=False) in found and "<img src=x" not in found
    page = client.get(f"/staff/courses/{course}/students/{instance.student}").text
    assert f"Known to their LMS as <strong>{html.escape(hostile, quote=False)}</strong>" in page
    # given and family names when there is no name; none at all: the last one kept
    launch(lti_platform, sub, course, changes={"given_name": "Grace", "family_name": f"Hopper {student}"})
    assert kept.read_text() == f"Grace Hopper {student}"
    launch(lti_platform, sub, course)
    assert kept.read_text() == f"Grace Hopper {student}"
    found = client.get(f"/staff/courses/{course}", params={"q": "GRACE HOPPER"}).text
    assert instance.student in found


def test_the_target_link_uri_names_the_notebook_too(sandbox, course, lti_platform, student, stop):
    sub = f"target-{student}"
    instance = Instance(course, lti_platform.student(sub))
    stop(instance)
    query = authorization(lti_platform, sub)
    token = lti_platform.id_token(query["nonce"], sub, changes={
        "lti_target_link_uri": f"{SITE}/lti/launch/{course}/w2/with%20space"})
    url = follow_start(post_launch(token, query["state"]))
    assert url.startswith(f"/nb/{course}/{instance.student}/notebooks/w2/with%20space.ipynb?token=")
    assert workspace_file(sandbox, course, instance.student, "w2/with space.ipynb").exists()


def other_key() -> dict:
    return {"key": new_key()[1]}


# Each bad launch: (what the id_token gets, a part of the reason in the event).
BAD_TOKENS = {
    "signed by another key": ({}, other_key, "bad signature"),
    "wrong aud": ({"aud": "another-tool"}, dict, "not for client id"),
    "expired": ({"exp": 1_700_000_000, "iat": 1_699_999_700}, dict, "expired"),  # in November 2023
    "wrong deployment id": ({"lti_deployment_id": "deployment-2"}, dict, "unknown deployment id"),
    "missing sub": ({"sub": None}, dict, "no sub"),
    "unknown issuer": ({"iss": "https://unknown.example.org"}, dict, "not from the platform of its login"),
    "not a resource link launch": ({"lti_message_type": "LtiDeepLinkingRequest"}, dict, "message type"),
}


def assert_refused(response, since: float, reason: str, units_before: dict, sandbox) -> None:
    assert response.status == 403, response.body[:300]
    assert b"<h1>403" in response.body and b"token=" not in response.body and not response.getheader("Location")
    events = refused_events(since)
    assert events, "no refused event"
    assert events[-1]["NBH_PLATFORM"] == "fake" and reason in events[-1]["NBH_REASON"], events[-1]
    assert instance_units(sandbox) == units_before  # nothing loaded, nothing started


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_bad_launches_are_refused_and_start_nothing(sandbox, course, lti_platform, student, kind):
    changes, token, reason = BAD_TOKENS[kind]
    sub = f"bad-{student}"
    units, since = instance_units(sandbox), time.time()
    response, _, _ = launch(lti_platform, sub, course, changes=changes, **token())
    assert_refused(response, since, reason, units, sandbox)
    assert not workspace_file(sandbox, course, lti_platform.student(sub), "").exists()


def test_a_platform_launches_only_into_its_courses(sandbox, course, lti_platform, student):
    """Its registration names the courses it may launch into: a launch naming
    another is refused, with its refused event, and starts nothing."""
    register = ("lti", "add", "fake", "--issuer", lti_platform.url, "--client-id", CLIENT_ID,
                "--deployment-id", DEPLOYMENT_ID, "--auth-url", lti_platform.url + "/auth",
                "--jwks-url", lti_platform.url + "/jwks", "--courses")
    added = nbh(sandbox, *register, "another-course")
    assert added.returncode == 0 and "it may launch into another-course" in added.stdout, added
    try:
        sub = f"course-{student}"
        units, since = instance_units(sandbox), time.time()
        response, _, _ = launch(lti_platform, sub, course)
        assert_refused(response, since, f"may not launch into the course {course!r}", units, sandbox)
        assert not workspace_file(sandbox, course, lti_platform.student(sub), "").exists()
    finally:
        assert nbh(sandbox, *register, "*").returncode == 0


def test_a_tampered_state_is_refused(sandbox, course, lti_platform, student):
    sub = f"tamper-{student}"
    platform_query = authorization(lti_platform, sub)
    head, payload, mac = platform_query["state"].split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    forged = jwt.utils.base64url_encode(json.dumps({**claims, "nonce": "chosen"}).encode()).decode()
    units, since = instance_units(sandbox), time.time()
    token = lti_platform.id_token("chosen", sub, {"course": course, "notebook": NOTEBOOK})
    response = post_launch(token, f"{head}.{forged}.{mac}")
    assert response.status == 403
    assert "bad state" in refused_events(since)[-1]["NBH_REASON"]
    assert instance_units(sandbox) == units


def test_a_login_from_an_unknown_issuer_is_refused(sandbox, course, lti_platform, student):
    units, since = instance_units(sandbox), time.time()
    status, location = login(lti_platform, student, iss="https://unknown.example.org")
    assert status == 403 and not location
    event = refused_events(since)[-1]
    assert event["NBH_ISSUER"] == "https://unknown.example.org" and "unknown issuer" in event["NBH_REASON"]
    status, _ = login(lti_platform, student, client_id="another-tool")
    assert status == 403 and "unknown client_id" in refused_events(since)[-1]["NBH_REASON"]
    assert instance_units(sandbox) == units


def test_a_replayed_nonce_is_refused_even_after_a_restart(sandbox, systemd, course, lti_platform, student, stop):
    sub = f"replay-{student}"
    instance = Instance(course, lti_platform.student(sub))
    stop(instance)
    response, query, token = launch(lti_platform, sub, course)
    follow_start(response)
    systemd.stop_instance(instance)
    sandbox.run("systemctl", "restart", "nbh-web.service")  # it forgets everything but what is on disk
    units, since = instance_units(sandbox), time.time()
    assert_refused(post_launch(token, query["state"]), since, "nonce was used already", units, sandbox)
    assert systemd.active_state(instance.service) == "inactive"


def test_a_rotated_key_that_the_jwks_lists_is_accepted(sandbox, course, lti_platform, student, stop):
    sub = f"rotate-{student}"
    stop(Instance(course, lti_platform.student(sub)))
    follow_start(launch(lti_platform, sub, course)[0])  # the keys are in nbh-web's cache
    fetches = lti_platform.jwks_fetches
    lti_platform.rotate()
    response, _, _ = launch(lti_platform, sub, course)
    assert response.status == 302, response.body[:300]
    assert lti_platform.jwks_fetches == fetches + 1  # fetched again for the new key, once
    cache = sandbox.path("/var/lib/nbhosting/lti/keys/fake.json")
    assert lti_platform.keys[-1][0] in cache.read_text()
    assert stat.S_IMODE(cache.stat().st_mode) == 0o640
    assert sandbox.run("stat", "-c", "%U", "/var/lib/nbhosting/lti/keys/fake.json").stdout.strip() == "nbh"


def test_launch_body_limits_and_methods(sandbox, course, lti_platform, student, stop):
    sub = f"big-{student}"
    stop(Instance(course, lti_platform.student(sub)))
    # An id_token of 10 KiB, as a platform with many claims sends: accepted.
    response, _, token = launch(lti_platform, sub, course, changes={"padding": "x" * 7000})
    assert len(token) > 9000 and response.status in (200, 302), response.body[:300]
    assert post_launch("x" * 17 * 1024, "y").status == 413  # nginx
    assert get("/lti/launch", referer=None).status == 405
    assert get("/lti/jwks", referer=None, method="POST", body="x").status == 405
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert get(signed(f"/ipythonExercice/{course}/{NOTEBOOK}/{student}"), referer=None, method="POST",
               body="x" * 5000, headers=form).status == 413  # the entries keep their 4 KiB
    assert get("/lti/launch", referer=None, method="POST", body="{}",
               headers={"Content-Type": "application/json"}).status == 400


def test_entries_refuse_lti_students(sandbox, systemd, course, lti_platform, student):
    """Even signed by the LMS: only a launch reaches an LTI student's workspace."""
    name = lti_platform.student(f"someone-{student}")
    response = get(signed(f"/ipythonExercice/{course}/{NOTEBOOK}/{name}"), referer=None)
    assert response.status == 403
    assert systemd.active_state(Instance(course, name).service) == "inactive"
    result = nbh(sandbox, "sign", course, NOTEBOOK, name)
    assert result.returncode == 1 and "LTI" in result.stderr and not result.stdout


def test_the_tools_jwks_is_its_key(sandbox):
    key = sandbox.path(str(lti.TOOL_KEY_PATH))
    assert stat.S_IMODE(key.stat().st_mode) == 0o440
    owner = sandbox.run("stat", "-c", "%U:%G", str(lti.TOOL_KEY_PATH)).stdout.strip()
    assert owner == "root:nbh"
    response = get("/lti/jwks", referer=None)
    assert response.status == 200 and response.getheader("Content-Type") == "application/json"
    assert json.loads(response.body) == lti.tool_jwks(key.read_bytes())


def test_nbh_lti_commands(sandbox, lti_platform):
    listing = nbh(sandbox, "lti", "list")
    assert listing.returncode == 0 and re.search(rf"^fake +{re.escape(lti_platform.url)} +{CLIENT_ID} ",
                                                  listing.stdout, re.M), listing.stdout
    args = ("lti", "add", "other", "--issuer", "https://lms.example.org", "--client-id", "c",
            "--deployment-id", "1", "--auth-url", "https://lms.example.org/auth", "--jwks-url",
            "https://lms.example.org/jwks")
    as_nbh = nbh(sandbox, *args, user="nbh")
    assert as_nbh.returncode == 1 and as_nbh.stderr.strip() == "nbh: lti add must run as root"
    taken = nbh(sandbox, *args[:2], "fake", *args[3:])
    assert taken.returncode == 1 and "choose another name" in taken.stderr and len(taken.stderr.splitlines()) == 1
    bad = nbh(sandbox, "lti", "add", "x", "--issuer", "http://lms.example.org", "--client-id", "c",
              "--deployment-id", "1", "--auth-url", "https://a", "--jwks-url", "https://b")
    assert bad.returncode == 1 and "bad issuer" in bad.stderr


def test_the_keys_unit_verifies(sandbox):
    result = sandbox.run("systemd-analyze", "verify", "--man=no", "nbh-lti-keys.service", check=False)
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_the_front_end_may_start_the_keys_unit_and_no_more(sandbox):
    allowed = sandbox.run("systemctl", "--no-ask-password", "start", "nbh-lti-keys.service", user="nbh", check=False)
    assert allowed.returncode == 0, allowed.stderr
    for argv in (["stop", "nbh-lti-keys.service"], ["restart", "nbh-lti-keys.service"],
                 ["enable", "nbh-lti-keys.service"], ["start", "nbh-lti-keysx.service"],
                 ["start", "nbh-lti-keys@x.service"], ["set-property", "nbh-lti-keys.service", "MemoryMax=1T"]):
        result = sandbox.run("systemctl", "--no-ask-password", *argv, user="nbh", check=False)
        assert result.returncode != 0 and ("Access denied" in result.stderr
                                           or "authentication required" in result.stderr.lower()), (argv, result)
