"""What a crowd or a hostile student can push, bounded: slow readers of a
huge shared page, a flood of staff logins. Each while a student's entry
still opens (how fast is bench/bounded.py's, not a test's)."""

from __future__ import annotations

import http.client
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from devtools import sandbox as nbh_sandbox
from nbhosting import shares, tokens
from nbhosting.names import Instance

from .web_helpers import follow_start, get, signed

pytestmark = pytest.mark.sandbox

READERS = 100
FLOOD = 120


def memory_mib(sandbox, unit: str) -> float:
    """The resident memory of the unit's processes (the sandbox's cgroups
    have no memory controller to ask: the host's are cgroup v1's)."""
    total = 0
    for pid in sandbox.unit_pids(unit):
        status = Path(f"/proc/{pid}/status").read_text()
        total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
    return total / 1024


def write_page(sandbox, instance: Instance, size: int) -> str:
    """A page as a student's code can write one in their shared folder, as
    the containers' account (the running server made the folder)."""
    secret = tokens.read_secret(sandbox.path(str(tokens.SECRET_PATH)))
    share_id = tokens.share_id(secret, instance)
    page = "b" * 26 if size > shares.PAGE_MAX else "a" * 26
    sandbox.run("truncate", "--size", str(size), f"/var/lib/nbhosting/shared/{instance.course}/{share_id}/{page}.html",
                user="nbh-jupyter")
    return f"/shared/{instance.course}/{share_id}/{page}"


def slow_reader(n: int, path: str) -> socket.socket:
    """A client, from a loopback address of its own, that reads the start of the page and no more."""
    client = socket.create_connection(("127.0.0.1", nbh_sandbox.HTTP_PORT), timeout=30,
                                      source_address=(f"127.3.{n // 250}.{1 + n % 250}", 0))
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    assert client.recv(4096).startswith(b"HTTP/1.1 200"), n
    return client


def test_slow_readers_of_a_huge_shared_page_cost_the_front_end_a_piece_each(sandbox, systemd, course, student):
    instance = Instance(course, student)
    systemd.start_instance(instance)
    path = write_page(sandbox, instance, shares.PAGE_MAX)
    too_large = write_page(sandbox, instance, shares.PAGE_MAX + 1)
    assert get(too_large, referer=None).status == 404
    restarts = sandbox.run("systemctl", "show", "-P", "NRestarts", "nbh-web.service").stdout
    with ThreadPoolExecutor(16) as pool:
        readers = list(pool.map(slow_reader, range(READERS), [path] * READERS))
    try:
        time.sleep(2)  # what each would be sent, sent
        held = memory_mib(sandbox, "nbh-web.service")
        # a student's entry meanwhile: the notebook opens
        url = follow_start(get(signed(f"/ipythonExercice/{course}/w1/w1-s1-c1-intro/{student}"), referer=None))
        assert get(url, referer=None).status == 200
    finally:
        for reader in readers:
            reader.close()
        systemd.stop_instance(instance)
    # 100 readers of a 32 MiB page: a few MiB more, not 3 GiB (nor the unit's MemoryMax)
    assert 0 < held < 256, held
    assert sandbox.run("systemctl", "show", "-P", "NRestarts", "nbh-web.service").stdout == restarts
    assert sandbox.run("systemctl", "is-active", "nbh-web.service").stdout.strip() == "active"
    # the whole page, to a reader that reads it
    response = get(path, referer=None, timeout=120)
    assert response.status == 200 and len(response.body) == shares.PAGE_MAX


def test_a_flood_of_logins_is_checked_a_few_at_a_time_and_entries_go_on(sandbox, systemd, course, student):
    cookie = nbh_sandbox.front_end("GET", "/staff/login").getheader("Set-Cookie")
    xsrf = cookie.split("_xsrf=", 1)[1].split(";", 1)[0]

    def login(n: int) -> int:
        # unknown accounts cost argon2 as much as wrong passwords; each from an address of its own
        return nbh_sandbox.front_end("POST", "/staff/login", f"name=guess{n}&password=x&_xsrf={xsrf}", {
            "Origin": nbh_sandbox.STAFF_URL, "X-Real-IP": f"10.9.{n // 250}.{n % 250}", "Cookie": f"_xsrf={xsrf}",
            "Content-Type": "application/x-www-form-urlencoded"}).status

    with ThreadPoolExecutor(FLOOD) as pool:
        flood = pool.map(login, range(FLOOD))
        url = follow_start(get(signed(f"/ipythonExercice/{course}/w1/w1-s1-c1-intro/{student}"), referer=None))
        statuses = list(flood)
    try:
        assert get(url, referer=None).status == 200
    finally:
        systemd.stop_instance(Instance(course, student))
    # checked one at a time, 32 waiting: the others turned away at once (503), never queued without end
    assert set(statuses) == {403, 503}, statuses
    assert statuses.count(403) < FLOOD / 2, statuses


def test_shared_pages_are_rate_limited_per_address(sandbox):
    """nginx: 10 a second from one address, in bursts of 50; past them 429."""
    def status() -> int:
        connection = http.client.HTTPConnection("127.0.0.1", nbh_sandbox.HTTP_PORT, timeout=30,
                                                source_address=("127.5.0.1", 0))
        connection.request("GET", f"/shared/python-mooc/{'a' * 26}/{'b' * 26}")
        answer = connection.getresponse()
        answer.read()
        connection.close()
        return answer.status
    statuses = [status() for _ in range(80)]
    assert statuses[0] == 404 and statuses.count(429) >= 10, statuses
