"""The staff pages from a client of their own (httpx), and the accounts
behind them. The fixtures admin, courses and teacher are in conftest.py."""

from __future__ import annotations

import re
import uuid
from urllib.parse import urlsplit

import httpx

from devtools import sandbox as nbh_sandbox

SITE = nbh_sandbox.SITE_URL
STAFF_HOST = urlsplit(nbh_sandbox.STAFF_URL).hostname
PASSWORD = "a staff password"
OTHER_COURSE = "other-course"


def add_account(name: str, *options: str, password: str = PASSWORD) -> None:
    """As root does, the password on stdin."""
    result = nbh_sandbox.run(["nbh", "staff", "add", name, "--password-stdin", *options], input=password + "\n",
                             check=False)
    assert result.returncode == 0 or "exists already" in result.stderr, result.stderr


def fresh_name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


_open: list[httpx.Client] = []  # every Staff client, closed by close_clients()


def close_clients() -> None:
    while _open:
        _open.pop().close()


class Staff:
    """A browser's worth of cookies on the site, and the forms' CSRF token."""

    def __init__(self, site: str = SITE):
        # The staff pages' origin, web.staff_url: staff.localhost, which a
        # browser resolves to loopback and this client is told (Host).
        host = {"Host": f"{STAFF_HOST}:{urlsplit(site).port}"}
        self.http = httpx.Client(base_url=site, headers=host, follow_redirects=False, timeout=60, verify=False)
        _open.append(self.http)

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def xsrf(self, path: str = "/staff/login") -> str:
        page = self.get(path)
        match = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
        assert match, (page.status_code, page.text[:500])
        return match.group(1)

    def post(self, path: str, data: dict | None = None, xsrf: bool = True) -> httpx.Response:
        data = dict(data or {})
        if xsrf:
            data["_xsrf"] = self.http.cookies.get("_xsrf") or self.xsrf()
        return self.http.post(path, data=data)

    def login(self, name: str, password: str = PASSWORD) -> httpx.Response:
        self.xsrf()
        return self.post("/staff/login", {"name": name, "password": password, "next": "/staff/"})


def logged_in(name: str, site: str = SITE) -> Staff:
    client = Staff(site)
    response = client.login(name)
    assert response.status_code == 303, response.text[:500]
    assert response.headers["Location"] == "/staff/"
    return client


def settings_text(sandbox, course: str) -> str:
    return sandbox.path(f"/etc/nbhosting/courses/{course}.toml").read_text()


def staff_events(sandbox, event: str, name: str) -> list[dict]:
    return sandbox.journal(f"NBH_EVENT={event}", f"NBH_STAFF={name}", "--since=-120s")
