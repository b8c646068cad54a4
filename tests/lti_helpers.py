"""An LTI 1.3 launch as a browser carries it between the fake platform
(tests/lti_platform.py) and nbh-web in the sandbox."""

from __future__ import annotations

import html
import json
import re
import urllib.request
from urllib.parse import urlencode

import pytest

from devtools import sandbox as nbh_sandbox

from .lti_platform import FakePlatform
from .web_helpers import NOTEBOOK, follow_start, get

SITE = nbh_sandbox.SITE_URL


def login(platform: FakePlatform, sub: str, link: str = "", **changes) -> tuple[int, str]:
    """The platform's login initiation (a GET): nbh-web's status and where it redirects."""
    query = {**platform.login_query(sub, link), **changes}
    response = get("/lti/login?" + urlencode({k: v for k, v in query.items() if v is not None}), referer=None)
    return response.status, response.getheader("Location") or ""


def authorization(platform: FakePlatform, sub: str, link: str = "") -> dict:
    """Login, then the OIDC request nbh-web sends the browser to the platform with."""
    status, location = login(platform, sub, link)
    assert status == 302 and location.startswith(platform.url + "/auth?"), (status, location)
    with urllib.request.urlopen(location) as answer:  # the platform's page: its form of the launch
        page = answer.read().decode()
    query = platform.auth_requests[-1]
    action = html.unescape(re.search(r'action="([^"]+)"', page).group(1))
    assert action == f"{SITE}/lti/launch" == query["redirect_uri"]
    return query


def post_launch(id_token: str, state: str, **extra):
    body = urlencode({"id_token": id_token, "state": state, **extra})
    return get("/lti/launch", referer=None, method="POST", body=body,
               headers={"Content-Type": "application/x-www-form-urlencoded"})


def launch(platform: FakePlatform, sub: str, course: str, notebook: str = NOTEBOOK, changes=None, **token):
    """A whole launch: login, the platform's id_token (with `changes`), the POST."""
    platform.links["link-1"] = {"course": course, "notebook": notebook}
    query = authorization(platform, sub, "link-1")
    id_token = platform.id_token(query["nonce"], sub, platform.links["link-1"], changes=changes, **token)
    return post_launch(id_token, query["state"]), query, id_token


def refused_events(since: float) -> list[dict]:
    """The refused events since then, oldest first."""
    result = nbh_sandbox.run(["journalctl", "--no-pager", "-o", "json", "NBH_EVENT=refused", f"--since=@{int(since)}"])
    events = [json.loads(line) for line in result.stdout.splitlines()]
    return [event for event in events if int(event["__REALTIME_TIMESTAMP"]) / 1e6 >= since]


def opened(response, since: float) -> str:
    """follow_start, saying why on a refusal."""
    if response.status not in (200, 302):
        events = refused_events(since)
        log = nbh_sandbox.run(["journalctl", "--no-pager", "-o", "cat", "-n", "20", "-u", "nbh-lti-keys.service",
                               "-u", "nbh-web.service"]).stdout
        pytest.fail(f"launch: {response.status}, {events[-1]['MESSAGE'] if events else 'no refused event'}\n{log}")
    return follow_start(response)
