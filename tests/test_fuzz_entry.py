"""The entry fuzzer: hostile entry URLs, through nginx, in both modes.

Every URL is generated so that it must be refused (a bad name, a bad or
mismatched signature, a foreign Referer, a short id in referer mode), from a
fixed seed, so a failure is repeatable. Sent as raw bytes (invalid UTF-8,
NUL, overlong encodings reach nginx as they are). The result must be: no
answer of 5xx and no missing answer, no entry let through (2xx, 3xx or a
token), no unit loaded or started, and no file written outside the
workspaces, nor any new workspace. Each request comes from a loopback address of
its own, so that nginx's per-address rate limit lets them all reach nbh-web.
"""

from __future__ import annotations

import collections
import os
import random
import socket
import time

import pytest

from nbhosting import access

from .sandbox_helpers import instance_units
from .web_helpers import HOST, LMS, NOTEBOOK, PORT, lms_key

pytestmark = pytest.mark.sandbox

SEED = 20261129
PER_MODE = 500
KNOWN_NOTEBOOKS = (NOTEBOOK, NOTEBOOK + ".ipynb", "w2/with%20space", "notebooks/01.00-IPython-Beyond-Normal-Python")
PREFIXES = ("/ipythonExercice/", "/notebookLazyCopy/")
ODD_PREFIXES = ("/ipythonExercice//", "/IPYTHONEXERCICE/", "/ipythonExercice/../ipythonExercice/",
                "/ipythonExercice/%2e%2e/notebookLazyCopy/", "/%69pythonExercice/", "/_nbh/wait/",
                "/nb/../ipythonExercice/", "//ipythonExercice/")
# Pieces of hostile names: traversal, encodings of '.', '/', '\\' and NUL,
# overlong and invalid UTF-8, non-ASCII, shell and unit-name syntax.
HOSTILE = (
    b"..", b".", b"%2e%2e", b"%2E%2E", b".%2e", b"%2f", b"%2F", b"%5c", b"\\", b"%00", b"%c0%ae", b"%c0%af",
    b"%e0%80%ae", b"%c0%2e", b"%ff", b"%fe%ff", b"%ed%a0%80", b"%c3%28", b"%f8%88%80%80%80", b"%25", b"%", b"%zz",
    b"%u002e", b"\xff", b"\xc0\xae", "é".encode(), "名前".encode(), "\u202e".encode(), "²".encode(), b"%C2%B2",
    b"%0a", b"%0d%0a", b"%20", b"+", b"~", b"$(id)", b"`id`", b";id", b"|id", b"&", b"'", b'"', b"<x>", b"{}",
    b"nbh-jupyter@x.service", b"\\x2d", b"-", b"_", b".hidden", b"x.ipynb", b"etc", b"passwd", b"%2fetc%2fpasswd",
    b"..%2f..%2f..%2fetc%2fpasswd", b"....//", b"%252e%252e", b"*", b"?", b"#",
)
CHARSET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
REFERERS = (None, b"https://evil.example.org/page", b"http://localhost:9999/", b"not a url", b"http://[x",
            b"http://localhost:8790.evil.org/", "http://é.org/".encode(), b"\xff\xfe")


class Fuzzer:
    """URLs that must all be refused, in one mode, from one seed."""

    def __init__(self, seed: int, mode: str, course: str, key: bytes):
        self.random, self.mode, self.course, self.key = random.Random(seed), mode, course, key

    def word(self, low: int = 1, high: int = 12) -> str:
        return "".join(self.random.choice(CHARSET) for _ in range(self.random.randint(low, high)))

    def hostile(self) -> bytes:
        """One or a few hostile pieces, maybe around a plain word, maybe very long."""
        parts = [self.random.choice(HOSTILE) for _ in range(self.random.randint(1, 3))]
        if self.random.random() < 0.5:
            parts.insert(self.random.randint(0, len(parts)), self.word().encode())
        text = b"".join(parts)
        if self.random.random() < 0.08:
            text *= self.random.choice((50, 400, 2000))
        return text

    def course_part(self) -> tuple[bytes, bool]:
        """The course, and whether it is a real one."""
        roll = self.random.random()
        if roll < 0.75:
            return self.course.encode(), True
        if roll < 0.85:
            return f"no-such-{self.word()}".encode(), False
        return self.hostile(), False

    def notebook_part(self) -> tuple[bytes, bool]:
        roll = self.random.random()
        if roll < 0.65:
            return self.random.choice(KNOWN_NOTEBOOKS).encode(), True
        if roll < 0.72:
            return f"w1/{self.word()}".encode(), False
        if roll < 0.85:
            return b"w1/" + self.hostile() + b"/w1-s1-c1-intro", False
        return b"/".join(self.hostile() for _ in range(self.random.randint(1, 4))), False

    def student_part(self) -> tuple[bytes, bool]:
        """A student, and whether it is a name that the front end accepts."""
        roll = self.random.random()
        if roll < 0.55:
            return self.word(16, 40).encode(), True
        if roll < 0.8:
            return self.word(1, 15).encode(), True
        if roll < 0.87:
            return self.word(41, 200).encode(), False  # too long for a name
        return self.hostile(), False

    def signature_query(self, course: bytes, notebook: bytes, student: bytes) -> bytes:
        """A query whose signature fails: forged, mismatched, expired or malformed."""
        expires = int(time.time()) + 600
        try:
            names = [part.decode() for part in (course, notebook, student)]
        except UnicodeDecodeError:
            names = ["c", "n", "s"]
        wrong = names[:2] + [names[2] + "x"]
        kinds = {
            "wrong key": f"expires={expires}&signature={access.signature(b'k' * 64, *names, expires)}",
            "other student": f"expires={expires}&signature={access.signature(self.key, *wrong, expires)}",
            "expired": f"expires={expires - 3600}&signature={access.signature(self.key, *names, expires - 3600)}",
            "non-ASCII": f"expires={expires}&signature=" + "%C3%A9" * 64,
            "superscript": "expires=%C2%B2&signature=" + "0" * 64,
            "Arabic digits": "expires=%D9%A1%D9%A2&signature=" + "0" * 64,
            "huge": f"expires={'9' * 400}&signature=" + "0" * 64,
            "negative": f"expires=-{expires}&signature=" + "0" * 64,
            "empty": "expires=&signature=",
            "no expiry": "signature=" + "0" * 64,
            "no signature": f"expires={expires}",
            "repeated": f"expires={expires}&signature=x&expires=1&signature=" + "0" * 64,
            "invalid UTF-8": f"expires={expires}&signature=%ff%fe",
            "raw bytes": f"expires={expires}&signature=\u00e9\u00e9",
            "long": f"expires={expires}&signature=" + "a" * 5000,
        }
        return kinds[self.random.choice(sorted(kinds))].encode()

    def urls(self, count: int) -> list[tuple[bytes, bytes | None]]:
        """(path with query, Referer) pairs, every one of which must be refused."""
        out = []
        while len(out) < count:
            course, real_course = self.course_part()
            notebook, real_notebook = self.notebook_part()
            student, good_student = self.student_part()
            odd = self.random.random() < 0.1
            prefix = self.random.choice(ODD_PREFIXES if odd else PREFIXES).encode()
            path = prefix + course + b"/" + notebook + b"/" + student + (b"/" if self.random.random() < 0.1 else b"")
            signed = self.random.random() < 0.5
            if signed:
                path += b"?" + self.signature_query(course, notebook, student)
            referer = LMS.encode() + b"/courses/x" if self.random.random() < 0.5 else self.random.choice(REFERERS)
            would_open = (real_course and real_notebook and good_student and not signed
                          and self.mode == "referer" and (referer or b"").startswith(LMS.encode())
                          and len(student) >= 16)
            if would_open:  # the one kind of URL the mode accepts: make it refused
                student = student[:self.random.randint(1, 15)]
                path = prefix + course + b"/" + notebook + b"/" + student
            out.append((path, referer))
        return out


def client_address(n: int) -> str:
    """A loopback address of its own for the n-th request: hostile URLs come
    from many hosts, and nginx's limit_req (per address) is tested elsewhere;
    from one address, most of them would get 429 and never reach nbh-web."""
    return f"127.0.{1 + n // 250}.{2 + n % 250}"


def send(path: bytes, referer: bytes | None, source: str = "127.0.0.1") -> tuple[int, bytes]:
    """One raw HTTP/1.1 request; the status (0 for no answer) and the head and body."""
    request = b"GET " + path + f" HTTP/1.1\r\nHost: {HOST}:{PORT}\r\nConnection: close\r\n".encode()
    if referer is not None:
        request += b"Referer: " + referer + b"\r\n"
    with socket.create_connection((HOST, PORT), timeout=30, source_address=(source, 0)) as connection:
        connection.sendall(request + b"\r\n")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    try:
        return int(answer.split(b"\r\n", 1)[0].split()[1]), answer
    except (IndexError, ValueError):
        return 0, answer


ROOTS = ("/var/lib/nbhosting", "/etc/nbhosting", "/run/nbhosting")
WORKSPACES = "/var/lib/nbhosting/workspaces"
CONTAINERS = "/var/lib/nbhosting/containers"  # podman's storage: its lock files' times change
EVENTS = "/var/lib/nbhosting/events"  # the event store, which keeps the refusals (nbh-events)
# The disks' images: a mounted one (a course's shared pages, mounted until
# shutdown) is written back by the kernel's loop device whenever it flushes.
DISKS = "/var/lib/nbhosting/disks"


def files(sandbox) -> dict[str, tuple]:
    """Path -> (type and size, modification time) of everything under ROOTS
    but inside the workspaces, where only the pairs (course/student) count;
    the names alone where others write (podman, the event store, the loop
    devices)."""
    found = {}
    for root in ROOTS:
        top = sandbox.path(root)
        for folder, dirs, names in os.walk(top):
            inside = "/" + os.path.relpath(folder, sandbox.path("/"))
            if inside == WORKSPACES:
                for course in dirs:
                    for student in os.listdir(os.path.join(folder, course)):
                        found[f"{inside}/{course}/{student}"] = ("workspace",)
                dirs.clear()
                continue
            for name in dirs + names:
                path = os.path.join(folder, name)
                info = os.lstat(path)
                when = None if inside.startswith((CONTAINERS, EVENTS, DISKS)) else info.st_mtime_ns
                found[f"{inside}/{name}"] = (info.st_mode, info.st_size if when else None, when)
    return found


@pytest.fixture
def auth_mode(sandbox_config):
    return lambda mode: sandbox_config(f'auth = "{mode}"\n')


@pytest.mark.parametrize("mode", ["signed", "referer"])
def test_hostile_entries_open_start_and_write_nothing(sandbox, course, auth_mode, mode):
    auth_mode(mode)
    urls = Fuzzer(SEED + (mode == "referer"), mode, course, lms_key()).urls(PER_MODE)
    assert send(f"/ipythonExercice/{course}/{NOTEBOOK}/x".encode(), None, "127.0.9.1")[0] == 403  # nbh-web is up
    units, written = instance_units(sandbox), files(sandbox)

    statuses, failures = collections.Counter(), []
    began = time.monotonic()
    for n, (path, referer) in enumerate(urls):
        status, answer = send(path, referer, client_address(n))
        statuses[status] += 1
        if not 400 <= status < 500 or status == 429 or b"token=" in answer:
            failures.append((status, path[:200], referer, answer[:300]))
    elapsed = time.monotonic() - began

    units_after, written_after = instance_units(sandbox), files(sandbox)
    new_units = sorted(set(units_after) - set(units))
    started = sorted(u for u, state in units_after.items() if state != "inactive" and units.get(u) != state
                     and u not in new_units)
    new_files = sorted(set(written_after) - set(written))
    changed = sorted(p for p in set(written) & set(written_after) if written[p] != written_after[p])
    print(f"\nentry fuzzer, {mode} mode: {len(urls)} URLs in {elapsed:.1f} s; answers "
          + ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items()))
          + f"; 5xx: {sum(c for s, c in statuses.items() if s >= 500)}, not refused: {len(failures)}, "
          f"units loaded: {len(new_units)}, started: {len(started)}, files new: {len(new_files)}, "
          f"changed: {len(changed)}")
    assert not failures, failures[:10]
    assert not new_units and not started, (new_units, started)
    assert not new_files and not changed, (new_files[:20], changed[:20])
    assert statuses[403] > len(urls) // 10  # the front end's refusals, not only nginx's
