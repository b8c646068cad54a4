"""Staff accounts, their roles, their sessions and their login attempts.

The accounts are one file, ``/etc/nbhosting/staff.json``, mode 0640
root:nbh: written by ``nbh staff`` (root), read by the front end (nbh) and
nobody else. Each account has an argon2id password hash (argon2-cffi) and an
admin flag. Grants to courses are not kept here: they are each course's
``staff`` setting (courses.change), the one truth that the CLI and the
settings form both change.

Roles: an admin sees and manages every course and creates courses; any other
account sees and manages the courses whose ``staff`` setting names it.

A session is a signed cookie (Tornado's, under a key derived from the host
secret) holding the account, when it began and a random id; it ends with its
lifetime, at logout (the id is remembered as ended until then), and when the
account's password changes or the account goes.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import argon2

from . import config, courses, files, paths
from .names import STAFF_ACCOUNT_RE

ACCOUNTS_PATH = paths.CONF_DIR / "staff.json"
PASSWORD_MIN = 8
PASSWORD_MAX = 1024
# RFC 9106's "low memory" choice (argon2-cffi's default since 23.1), named
# so that Debian's 21.1 (whose default takes 100 MiB) hashes the same way.
_hasher = argon2.PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4)
# Verified when the account does not exist, so that an unknown name costs
# the same time as a wrong password.
_NOBODY = _hasher.hash(secrets.token_hex(16))


class StaffError(Exception):
    """A bad account name, password or accounts file; the message is one line."""


@dataclass(frozen=True)
class Account:
    name: str
    password_hash: str
    admin: bool = False
    # Sessions that began before this (epoch seconds) are void: set at every
    # password change.
    since: float = 0.0

    def may_manage(self, course: courses.Course) -> bool:
        return self.admin or self.name in course.staff

    @property
    def role(self) -> str:
        return "admin" if self.admin else "staff"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not STAFF_ACCOUNT_RE.fullmatch(name):
        raise StaffError(f"bad account name {name!r}: 1 to 32 lower-case letters, digits, '_', '.' or '-', "
                         "starting with a letter")
    return name


def check_password(password: str) -> str:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise StaffError(f"a password has {PASSWORD_MIN} to {PASSWORD_MAX} characters")
    return password


# -- the accounts file ---------------------------------------------------------

def load(path: Path = ACCOUNTS_PATH) -> dict[str, Account]:
    """Every account; none when there is no file yet."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (ValueError, UnicodeDecodeError) as error:
        raise StaffError(f"{path}: not the staff accounts' JSON: {error}") from None
    try:
        accounts = {}
        for name, fields in data["accounts"].items():
            check_name(name)
            if not (isinstance(fields["hash"], str) and type(fields.get("admin", False)) is bool
                    and isinstance(fields.get("since", 0), (int, float))):
                raise TypeError(name)
            accounts[name] = Account(name, fields["hash"], fields.get("admin", False), fields.get("since", 0))
        return accounts
    except (KeyError, TypeError, AttributeError) as error:
        raise StaffError(f"{path}: not the staff accounts' JSON (at {error})") from None


def save(accounts: dict[str, Account], group_id: int, path: Path = ACCOUNTS_PATH) -> None:
    """Written aside, owned root:group_id (nbh), mode 0640, then renamed over."""
    data = {"accounts": {a.name: {"hash": a.password_hash, "admin": a.admin, "since": a.since}
                         for a in sorted(accounts.values(), key=lambda a: a.name)}}
    files.replace_text(path, json.dumps(data, indent=1) + "\n", 0o640, owner=(0, group_id))


class AccountsFile:
    """The accounts, read again when the file changes (`nbh staff` while nbh-web runs)."""

    def __init__(self, path: Path = ACCOUNTS_PATH):
        self.path = path
        self._seen: tuple | None = None
        self._accounts: dict[str, Account] = {}

    def get(self, name: str) -> Account | None:
        try:
            stat = self.path.stat()
            seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            seen = None
        if seen != self._seen:
            self._accounts = load(self.path) if seen else {}
            self._seen = seen
        return self._accounts.get(name)


# -- what `nbh staff` does -------------------------------------------------------

def hash_password(password: str) -> str:
    return _hasher.hash(check_password(password))


def add(name: str, password: str, admin: bool, group_id: int, path: Path = ACCOUNTS_PATH) -> Account:
    accounts = load(path)
    if check_name(name) in accounts:
        raise StaffError(f"account {name!r} exists already")
    accounts[name] = Account(name, hash_password(password), admin, time.time())
    save(accounts, group_id, path)
    return accounts[name]


def remove(name: str, group_id: int, path: Path = ACCOUNTS_PATH) -> list[str]:
    """The account goes, and so do its grants: the courses it lost."""
    accounts = load(path)
    if accounts.pop(check_name(name), None) is None:
        raise StaffError(f"no account {name!r}")
    lost = [course.name for course in courses.all_courses() if name in course.staff]
    for course in lost:
        revoke(name, course)
    save(accounts, group_id, path)
    return lost


def set_password(name: str, password: str, group_id: int, path: Path = ACCOUNTS_PATH) -> None:
    """A new password; the account's sessions end."""
    accounts = load(path)
    account = accounts.get(check_name(name))
    if account is None:
        raise StaffError(f"no account {name!r}")
    accounts[name] = Account(name, hash_password(password), account.admin, time.time())
    save(accounts, group_id, path)


def set_admin(name: str, admin: bool, group_id: int, path: Path = ACCOUNTS_PATH) -> None:
    accounts = load(path)
    account = accounts.get(check_name(name))
    if account is None:
        raise StaffError(f"no account {name!r}")
    accounts[name] = Account(name, account.password_hash, admin, account.since)
    save(accounts, group_id, path)


def grant(name: str, course: str) -> courses.Course:
    """The course's staff setting names the account (as the settings form does)."""
    found = courses.load(course)
    return courses.change(course, staff=tuple(sorted({*found.staff, check_name(name)})))


def revoke(name: str, course: str) -> courses.Course:
    found = courses.load(course)
    if name not in found.staff:
        raise StaffError(f"{name!r} is not staff of course {course!r}")
    return courses.change(course, staff=tuple(n for n in found.staff if n != name))


def granted(name: str, all_courses: list[courses.Course]) -> list[str]:
    return [course.name for course in all_courses if name in course.staff]


# -- logging in ------------------------------------------------------------------

def verify(account: Account | None, password: str) -> bool:
    """Whether the password is the account's; as slow for an unknown account.

    argon2 takes about 0.1 s of CPU and 64 MiB: call it off the event loop.
    """
    if len(password) > PASSWORD_MAX:
        return False
    try:
        return _hasher.verify(account.password_hash if account else _NOBODY, password) and account is not None
    except (argon2.exceptions.VerificationError, ValueError):  # InvalidHash(Error): 21.1 and 23.1 name it apart
        return False


class LoginLimiter:
    """Wrong passwords within a window, by (address, account), by address,
    and by account whatever the addresses (a botnet's guesses): past the
    configured counts, that login gets 429 until the window moves on; past
    the account's, a delay that doubles with each wrong password, up to
    login_delay_max (a cap, so that its owner is not kept out for long)."""

    # Every this many failures, the keys whose failures all left the window
    # are dropped: guesses at made-up names, from made-up addresses, do not
    # pile up in the front end's memory.
    PRUNE_EVERY = 1000

    def __init__(self, settings: config.Staff, clock=time.monotonic):
        self.settings, self.clock = settings, clock
        self._failures: dict[tuple, collections.deque] = collections.defaultdict(collections.deque)
        self._counted = 0

    def _recent(self, key: tuple) -> collections.deque:
        failures, oldest = self._failures[key], self.clock() - self.settings.login_window
        while failures and failures[0] < oldest:
            failures.popleft()
        if not failures:
            del self._failures[key]
        return failures

    def retry_after(self, address: str, name: str) -> int:
        """Seconds until this login may be tried again; 0: now."""
        now, waits = self.clock(), []
        for key, limit in (((address, name), self.settings.login_attempts),
                           ((address,), self.settings.login_attempts_per_address)):
            failures = self._recent(key)
            if len(failures) >= limit:
                waits.append(failures[-limit] + self.settings.login_window - now)
        account = self._recent(("account", name))
        beyond = len(account) - self.settings.login_attempts_per_account
        if beyond >= 0:
            waits.append(account[-1] + min(self.settings.login_delay_max, 2.0 ** beyond) - now)
        waits = [wait for wait in waits if wait > 0]
        return max(1, round(max(waits))) if waits else 0

    def failed(self, address: str, name: str) -> None:
        now = self.clock()
        for key in ((address, name), (address,), ("account", name)):
            self._failures[key].append(now)
        self._counted += 1
        if self._counted % self.PRUNE_EVERY == 0:
            for key in list(self._failures):
                self._recent(key)

    def succeeded(self, address: str, name: str) -> None:
        self._failures.pop((address, name), None)
        self._failures.pop(("account", name), None)


class VerifierBusy(RuntimeError):
    pass


class Verifier:
    """argon2 (0.1 s of CPU and 64 MiB each) on threads of its own, a few at
    a time, and a bounded queue: a flood of logins waits there, or is turned
    away, never in the executor where the students' entries copy notebooks."""

    def __init__(self, threads: int = 1, waiting: int = 32):
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="argon2")
        self.limit, self.pending = threads + waiting, 0

    async def verify(self, account: Account | None, password: str) -> bool:
        if self.pending >= self.limit:
            raise VerifierBusy(f"{self.pending} logins are being checked already")
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, verify, account, password)
        finally:
            self.pending -= 1


# -- sessions ---------------------------------------------------------------------

class Sessions:
    """What a session cookie holds, and which ended early (logout)."""

    def __init__(self, lifetime: int, clock=time.time):
        self.lifetime, self.clock = lifetime, clock
        self._ended: dict[str, float] = {}  # session id -> when it would have expired

    def begin(self, account: Account) -> str:
        return json.dumps([account.name, secrets.token_hex(16), self.clock()])

    def _parse(self, value: bytes | str) -> tuple[str, str, float] | None:
        try:
            name, session, began = json.loads(value)
        except (ValueError, TypeError):
            return None
        if not (isinstance(name, str) and isinstance(session, str) and isinstance(began, (int, float))):
            return None
        return name, session, began

    def account(self, value: bytes | str | None, accounts: AccountsFile) -> Account | None:
        """The account of a valid, unexpired, not ended session; else None."""
        parsed = self._parse(value) if value else None
        if parsed is None:
            return None
        name, session, began = parsed
        now = self.clock()
        if not began <= now < began + self.lifetime or session in self._ended:
            return None
        account = accounts.get(name)
        if account is None or began < account.since:
            return None
        return account

    def end(self, value: bytes | str | None) -> None:
        parsed = self._parse(value) if value else None
        if parsed is None:
            return
        now = self.clock()
        self._ended = {s: until for s, until in self._ended.items() if until > now}  # forget the expired
        self._ended[parsed[1]] = parsed[2] + self.lifetime
