"""Staff accounts, sessions and login attempts: pure logic, no sandbox."""

from __future__ import annotations

import asyncio
import json
import dataclasses
import os
import stat

import pytest

from nbhosting import config, staff


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def accounts_path(tmp_path):
    return tmp_path / "staff.json"


def test_accounts_are_hashed_kept_private_and_read_back(accounts_path):
    gid = os.getgid()
    staff.add("alice", "correct horse", admin=True, group_id=gid, path=accounts_path)
    staff.add("bob", "battery staple", admin=False, group_id=gid, path=accounts_path)
    text = accounts_path.read_text()
    assert "correct horse" not in text and "$argon2id$" in text
    assert stat.S_IMODE(accounts_path.stat().st_mode) == 0o640
    accounts = staff.load(accounts_path)
    assert accounts["alice"].admin and not accounts["bob"].admin
    assert staff.verify(accounts["alice"], "correct horse")
    assert not staff.verify(accounts["alice"], "battery staple")
    assert not staff.verify(None, "correct horse")  # an unknown account
    # a hash that is not one (a file edited by hand) refuses, never raises
    assert not staff.verify(dataclasses.replace(accounts["bob"], password_hash="$argon2id$broken"), "battery staple")
    assert "$m=65536,t=3,p=4$" in accounts["bob"].password_hash  # the same cost on every argon2-cffi
    with pytest.raises(staff.StaffError, match="exists already"):
        staff.add("alice", "another one", admin=False, group_id=gid, path=accounts_path)


@pytest.mark.parametrize("name", ["Alice", "", "1bob", "a b", "x" * 33, "../etc"])
def test_bad_account_names(accounts_path, name):
    with pytest.raises(staff.StaffError, match="bad account name"):
        staff.add(name, "long enough", admin=False, group_id=os.getgid(), path=accounts_path)
    assert not accounts_path.exists()


def test_short_passwords_are_refused(accounts_path):
    with pytest.raises(staff.StaffError, match="characters"):
        staff.add("carol", "short", admin=False, group_id=os.getgid(), path=accounts_path)


def test_a_broken_file_is_one_line_naming_it(accounts_path):
    accounts_path.write_text(json.dumps({"accounts": {"alice": {"admin": True}}}))
    with pytest.raises(staff.StaffError, match="staff.json"):
        staff.load(accounts_path)
    accounts_path.write_text("{")
    with pytest.raises(staff.StaffError, match="staff.json"):
        staff.load(accounts_path)


def test_the_file_is_read_again_when_it_changes(accounts_path):
    accounts = staff.AccountsFile(accounts_path)
    assert accounts.get("alice") is None
    staff.add("alice", "correct horse", admin=False, group_id=os.getgid(), path=accounts_path)
    assert accounts.get("alice").name == "alice"
    staff.set_admin("alice", True, os.getgid(), accounts_path)
    assert accounts.get("alice").admin


def test_sessions_expire_end_at_logout_and_at_a_new_password(accounts_path):
    staff.add("alice", "correct horse", admin=False, group_id=os.getgid(), path=accounts_path)
    accounts = staff.AccountsFile(accounts_path)
    clock = Clock(accounts.get("alice").since + 1)
    sessions = staff.Sessions(lifetime=3600, clock=clock)
    cookie = sessions.begin(accounts.get("alice"))
    assert sessions.account(cookie, accounts).name == "alice"
    clock.now += 3599
    assert sessions.account(cookie, accounts)
    clock.now += 2
    assert sessions.account(cookie, accounts) is None  # expired

    clock.now = accounts.get("alice").since + 10
    cookie = sessions.begin(accounts.get("alice"))
    other = sessions.begin(accounts.get("alice"))
    sessions.end(cookie)
    assert sessions.account(cookie, accounts) is None  # logged out
    assert sessions.account(other, accounts)  # another browser's session stays

    staff.set_password("alice", "a new password", os.getgid(), accounts_path)
    clock.now = accounts.get("alice").since - 1
    assert sessions.account(other, accounts) is None  # begun before the new password
    for garbage in (None, "", "[]", "[1, 2, 3]", '["alice"]', "not json", '["alice", "x", "soon"]'):
        assert sessions.account(garbage, accounts) is None


def test_a_removed_account_has_no_session(accounts_path, monkeypatch):
    monkeypatch.setattr(staff.courses, "all_courses", lambda: [])
    staff.add("alice", "correct horse", admin=True, group_id=os.getgid(), path=accounts_path)
    accounts = staff.AccountsFile(accounts_path)
    sessions = staff.Sessions(lifetime=3600)
    cookie = sessions.begin(accounts.get("alice"))
    assert staff.remove("alice", os.getgid(), accounts_path) == []
    assert sessions.account(cookie, accounts) is None


def test_wrong_passwords_are_limited_per_account_and_address():
    clock = Clock()
    limiter = staff.LoginLimiter(config.Staff(login_attempts=3, login_attempts_per_address=5, login_window=60),
                                 clock=clock)
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1", "alice") == 0
        limiter.failed("10.0.0.1", "alice")
        clock.now += 1
    assert limiter.retry_after("10.0.0.1", "alice") == 57  # the oldest of the three leaves the window then
    assert limiter.retry_after("10.0.0.2", "alice") == 0  # another address
    assert limiter.retry_after("10.0.0.1", "bob") == 0  # another account, not yet the address's limit
    limiter.failed("10.0.0.1", "bob")
    limiter.failed("10.0.0.1", "carol")
    assert limiter.retry_after("10.0.0.1", "dave") > 0  # five from that address
    clock.now += 60
    assert limiter.retry_after("10.0.0.1", "alice") == 0
    limiter.failed("10.0.0.3", "erin")
    limiter.succeeded("10.0.0.3", "erin")
    assert limiter.retry_after("10.0.0.3", "erin") == 0


@pytest.mark.parametrize("origin", [0.0, 3.0, 1e7])  # a clock that began at boot, minutes or months ago
def test_guesses_from_many_addresses_wait_longer_and_longer(origin):
    clock = Clock()
    clock.now = origin
    limiter = staff.LoginLimiter(config.Staff(login_attempts_per_account=4, login_delay_max=60, login_window=600),
                                 clock=clock)
    for n in range(4):  # a botnet: each guess from an address of its own
        assert limiter.retry_after(f"10.1.0.{n}", "admin") == 0
        limiter.failed(f"10.1.0.{n}", "admin")
    waits = []
    for n in range(4, 12):
        waits.append(limiter.retry_after(f"10.1.0.{n}", "admin"))
        clock.now += waits[-1]
        assert limiter.retry_after(f"10.1.0.{n}", "admin") == 0
        limiter.failed(f"10.1.0.{n}", "admin")
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60]
    assert limiter.retry_after("10.2.0.1", "bob") == 0  # another account
    # its owner, once let in, clears the delay
    clock.now += 60
    limiter.succeeded("10.3.0.1", "admin")
    assert limiter.retry_after("10.1.0.99", "admin") == 0


def test_failures_that_left_the_window_are_forgotten():
    clock = Clock()
    limiter = staff.LoginLimiter(config.Staff(login_window=60), clock=clock)
    for n in range(3000):  # a spray of made-up names from made-up addresses
        limiter.failed(f"10.{n // 250}.{n % 250}.1", f"guess{n}")
    assert len(limiter._failures) == 9000
    clock.now += 61
    for n in range(limiter.PRUNE_EVERY):
        limiter.failed("10.255.0.1", "admin")
    assert len(limiter._failures) == 3  # that address, that account, the two


def test_password_checks_wait_in_a_bounded_queue_of_their_own():
    verifier = staff.Verifier(threads=1, waiting=2)
    account = staff.Account("alice", staff._hasher.hash("right"), admin=False)

    async def flood():
        checks = [asyncio.ensure_future(verifier.verify(account, "wrong")) for _ in range(5)]
        return await asyncio.gather(*checks, return_exceptions=True)

    results = asyncio.run(flood())
    assert results[:3] == [False, False, False]
    assert all(isinstance(r, staff.VerifierBusy) for r in results[3:]), results
    assert asyncio.run(verifier.verify(account, "right")) is True
    assert verifier.pending == 0


def test_the_notebook_tree_and_where_a_login_may_lead():
    from nbhosting.web.staff import notebook_tree, safe_next

    assert notebook_tree(["notebooks/a.ipynb", "top.ipynb", "w1/s1/x.ipynb", "w1/y.ipynb"]) == [
        (0, "notebooks/", None), (1, "a.ipynb", "notebooks/a.ipynb"), (0, "top.ipynb", "top.ipynb"),
        (0, "w1/", None), (1, "s1/", None), (2, "x.ipynb", "w1/s1/x.ipynb"), (1, "y.ipynb", "w1/y.ipynb")]
    assert safe_next("/staff/courses/x") == "/staff/courses/x"
    for elsewhere in (None, "", "https://evil.example/staff/", "//evil.example/staff/", "/staff\\..\\x", "/nb/x/y/",
                      "/\\evil.example"):
        assert safe_next(elsewhere) == "/staff/"


def test_the_student_list_is_paged_and_searched():
    from nbhosting.web.staff import STUDENTS_PAGE, StudentRow, student_page, url_query
    rows = [StudentRow(f"s{n:04d}", "inactive/dead", None) for n in range(250)]
    rows += [StudentRow("staff.alice", "active/running", None), StudentRow("lti.fun.abcdefghijklmnopqrstuvwx", "inactive/dead", None)]
    page = student_page(rows, "", 0, set())
    assert (page.enrolled, page.found, page.first, len(page.rows)) == (251, 252, 0, STUDENTS_PAGE)
    last = student_page(rows, "", 250, set())
    assert (last.first, [row.name for row in last.rows]) == (200, [row.name for row in rows[200:]])
    # past the end, or before the start: the last page, the first
    assert student_page(rows, "", 10**9, set()).first == 200 and student_page(rows, "", -5, set()).first == 0
    # any case, anywhere in the id
    assert [row.name for row in student_page(rows, " S012", 0, set()).rows] == [f"s{n:04d}" for n in range(120, 130)]
    # the id an LTI platform sent, through the names the platforms give it
    found = student_page(rows, "12345", 0, {"lti.fun.abcdefghijklmnopqrstuvwx"})
    assert [row.name for row in found.rows] == ["lti.fun.abcdefghijklmnopqrstuvwx"]
    assert student_page(rows, "nobody", 0, set()).rows == []
    assert url_query("a b", 100) == "q=a+b&from=100" and url_query("", 0) == ""
