"""nbhosting's configuration: /etc/nbhosting/nbhosting.toml, or $NBH_CONFIG.

Read with tomllib and checked at once: an unknown key or a bad value stops
the program with one message naming the key.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_PATH = Path("/etc/nbhosting/nbhosting.toml")


class ConfigError(ValueError):
    pass


_BYTES = re.compile(r"[0-9]+[KMGT]?|infinity")
_PERCENT = re.compile(r"[0-9]+%")


@dataclass(frozen=True)
class Limits:
    """Of one student's server (systemd's MemoryMax=, CPUQuota=, TasksMax=), and
    of the host: how many servers run at once, how fast new students come in."""

    memory_max: str = "2G"
    cpu_quota: str = "100%"
    tasks_max: int = 512
    # Student servers running or starting at once on the host; past it, an
    # entry that needs a start gets "the host is full" (503).
    max_running: int = 200
    # New workspaces (students the host has never seen) a minute, in bursts
    # of as many; past it, such an entry gets "the host is busy" (503).
    new_workspaces_per_minute: int = 120
    # The share of the workspaces' file system in use (0 to 1) past which no
    # new workspace is made: a student the host has never seen gets "the
    # host is full" (503), and the students who have one go on saving.
    disk_full: float = 0.95
    # The size of a new workspace's own file system (disks.py), which is all
    # of the disk its student can fill; "0": new workspaces are folders of
    # the workspaces' file system, bounded by nothing but disk_full. A
    # course's disk_max setting overrides it.
    disk_max: str = "0"
    # The same for each course's builds (nbh-course-build@): their image
    # storage and the built archive, on a file system of this size (the
    # base image is loaded into it: a few times its size). "0": no bound.
    build_disk_max: str = "0"
    # The same for each course's shared pages (all its students' at once),
    # which its students' code can write: a disk of this size per course,
    # made when the course's first server starts. "0": no bound.
    shared_disk_max: str = "0"
    # Images, besides the site's and a course's own build, that a course's
    # staff may choose for their course (an admin may set any).
    images: tuple = ()

    def check(self) -> None:
        for image in self.images:
            if not isinstance(image, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}", image):
                raise ConfigError(f"limits.images: {image!r} is not an image reference")
        if not _BYTES.fullmatch(self.memory_max):
            raise ConfigError(f"limits.memory_max: {self.memory_max!r} is not a size like 2G")
        if not _PERCENT.fullmatch(self.cpu_quota):
            raise ConfigError(f"limits.cpu_quota: {self.cpu_quota!r} is not a percentage like 100%")
        if self.tasks_max < 16:
            raise ConfigError(f"limits.tasks_max: {self.tasks_max} is below 16")
        for name in ("max_running", "new_workspaces_per_minute"):
            if getattr(self, name) < 1:
                raise ConfigError(f"limits.{name}: must be at least 1")
        for name in ("disk_max", "build_disk_max", "shared_disk_max"):
            text = getattr(self, name)
            if text == "infinity" or not _BYTES.fullmatch(text) or 0 < size_bytes(text) < 32 << 20:
                raise ConfigError(f"limits.{name}: {text!r} is not a size like 1G, of 32M at least (0: no bound)")
        if not 0 < self.disk_full <= 1:
            raise ConfigError("limits.disk_full: must be above 0 and at most 1 (the share of the disk in use)")

    @property
    def disk_max_bytes(self) -> int:
        return size_bytes(self.disk_max)

    @property
    def build_disk_max_bytes(self) -> int:
        return size_bytes(self.build_disk_max)

    @property
    def shared_disk_max_bytes(self) -> int:
        return size_bytes(self.shared_disk_max)

    def dropin(self) -> str:
        return (
            "# Written by `nbh setup` from nbhosting.toml [limits]; edit that file instead.\n"
            "[Service]\n"
            f"MemoryMax={self.memory_max}\n"
            f"CPUQuota={self.cpu_quota}\n"
            f"TasksMax={self.tasks_max}\n"
        )


def size_bytes(text: str) -> int:
    """A size as systemd writes it (512M, 2G), checked by _BYTES, in bytes."""
    number, unit = (text[:-1], text[-1]) if text[-1] in "KMGT" else (text, "")
    return int(number) << (10 * (1 + "KMGT".index(unit)) if unit else 0)


def size_text(value: int) -> str:
    """size_bytes' inverse: the largest unit that divides it (2G, 1536M, 100)."""
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if value >= 1 << shift and value % (1 << shift) == 0:
            return f"{value >> shift}{unit}"
    return str(value)


def duration_text(seconds: float | None) -> str:
    """A server's age or idle time, as `nbh status` and the staff pages show it: 1h05m, 4m07s, -."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")
# nginx routes a host name whose first label is a key (26 base32 letters) to
# that pair's server: the key, alone, is that label.
_STUDENT_ORIGIN = re.compile(r"https?://\{key\}(\.[A-Za-z0-9-]+)+(:[0-9]{1,5})?")


# How an entry is authorized (web.auth): by a URL the LMS signed, or, for an
# LMS that can only put an anonymous id in a static iframe URL, by the
# Referer of an allowed origin and an id too long to guess.
AUTH_MODES = ("signed", "referer")
# Known, and not modes: the message says what instead.
LATER_AUTH_MODES = {"lti": "LTI launches are not a mode: they work beside either mode, "
                           "from the platforms registered with `nbh lti add`"}


@dataclass(frozen=True)
class Web:
    """The front end: who may embed notebooks, and how entries are authorized."""

    # Origins of the LMS pages that embed notebooks: the frame-ancestors of
    # every page, and the referers accepted in referer mode.
    lms_origins: tuple = ()
    # One of AUTH_MODES; a valid signed URL is accepted in every mode.
    auth: str = "signed"
    # In referer mode, shorter student ids are refused: the id is the secret.
    min_student_id: int = 16
    # How long a URL printed by `nbh sign` stays valid, in seconds.
    signature_ttl: int = 7 * 24 * 3600
    # How long an entry waits for the server before answering with the
    # "starting your notebook" page, in seconds.
    start_page_after: float = 1.5
    # This site as the LMS reaches it, for `nbh sign`.
    public_url: str = "https://localhost"
    # The staff pages' own origin, where no student's server nor shared page
    # is served (nginx serves /staff/ only on a host whose name begins with
    # "staff."); empty: https://staff.<public_url's host>.
    staff_url: str = ""
    # Each student's server on an origin of its own, "https://{key}.<domain>"
    # ({key}: an opaque id of the pair), so that no student's page reaches
    # another's storage or frames; it needs a wildcard DNS name and
    # certificate. Empty: every server under public_url's /nb/.
    student_origin: str = ""
    # An entry starts the notebook's kernel while the browser loads the
    # page (nbhosting/prestart.py); one that no page takes within this many
    # seconds is shut down. 0: no pre-start, the page starts its kernel.
    prestart_timeout: int = 60

    def check(self) -> None:
        for origin in self.lms_origins:
            if not isinstance(origin, str) or not _ORIGIN.fullmatch(origin):
                raise ConfigError(f"web.lms_origins: {origin!r} is not an origin like https://lms.example.org")
        if self.auth in LATER_AUTH_MODES:
            raise ConfigError(f"web.auth: {self.auth!r}: {LATER_AUTH_MODES[self.auth]}; "
                              f"use one of {', '.join(map(repr, AUTH_MODES))}")
        if self.auth not in AUTH_MODES:
            raise ConfigError(f"web.auth: {self.auth!r} is not one of {', '.join(map(repr, AUTH_MODES))}")
        if self.auth == "referer" and not self.lms_origins:
            raise ConfigError("web.auth: 'referer' needs web.lms_origins, the LMS pages' origins")
        if not 1 <= self.min_student_id <= 40:
            raise ConfigError("web.min_student_id: must be between 1 and 40 (the longest student id)")
        if self.signature_ttl <= 0:
            raise ConfigError("web.signature_ttl: must be positive")
        if not 0 <= self.start_page_after <= 30:
            raise ConfigError("web.start_page_after: must be between 0 and 30")
        if not 0 <= self.prestart_timeout <= 3600:
            raise ConfigError("web.prestart_timeout: must be between 0 (off) and 3600 seconds")
        if not re.fullmatch(r"https?://[^\s/]+", self.public_url):
            raise ConfigError(f"web.public_url: {self.public_url!r} is not like https://host")
        staff = urlsplit(self.staff_origin)
        if not _ORIGIN.fullmatch(self.staff_origin) or not (staff.hostname or "").startswith("staff."):
            raise ConfigError(f"web.staff_url: {self.staff_origin!r} is not like https://staff.example.org "
                              "(a host name that begins with 'staff.', which nginx serves the staff pages on)")
        if staff.hostname == urlsplit(self.public_url).hostname:
            raise ConfigError("web.staff_url: the staff pages need an origin of their own, not public_url's")
        if self.student_origin and not _STUDENT_ORIGIN.fullmatch(self.student_origin):
            raise ConfigError(f"web.student_origin: {self.student_origin!r} is not like "
                              "https://{key}.nb.example.org ({key}, then a host name of the site's)")

    @property
    def staff_origin(self) -> str:
        if self.staff_url:
            return self.staff_url
        scheme, _, host = self.public_url.partition("://")
        return f"{scheme}://staff.{host}"

    def student_url(self, key: str) -> str:
        """The origin of the pair whose key this is; "" in single-origin mode."""
        return self.student_origin.replace("{key}", key, 1)

    @property
    def frame_ancestors(self) -> str:
        return " ".join(("'self'", *self.lms_origins))


@dataclass(frozen=True)
class Cull:
    """When idle servers stop: `nbh cull` (nbh-cull.timer) and systemd's own limits."""

    # Stop a server whose kernels have been idle this long, in seconds
    # (a course may set its own: `nbh course create --idle-timeout`).
    idle_timeout: int = 1800
    # Stop a server with no kernel at all after this long, in seconds.
    grace: int = 600
    # How often nbh-cull.timer looks, in seconds.
    period: int = 60
    # Stop any server after this long, busy or not (RuntimeMaxSec=), in seconds.
    max_age: int = 86400
    # Second line: the socket proxy exits, and the server with it, when no
    # connection at all has been open this long, in seconds.
    proxy_idle: int = 7200
    # A student not seen (no entry) for this long, whose server is not
    # running, becomes dormant at the next `nbh gc` (nbh-gc.timer): their
    # socket is stopped and systemd unloads their units; their next entry
    # starts it again. In seconds.
    dormant_after: int = 7 * 86400

    def check(self) -> None:
        for name in ("idle_timeout", "grace", "period", "max_age", "proxy_idle", "dormant_after"):
            if getattr(self, name) < 1:
                raise ConfigError(f"cull.{name}: must be a positive number of seconds")

    def dropins(self) -> dict[str, str]:
        """systemd drop-ins, by unit, for what a unit setting does itself."""
        head = "# Written by `nbh setup` from nbhosting.toml [cull]; edit that file instead.\n"
        return {
            "nbh-jupyter@.service": f"{head}[Service]\nRuntimeMaxSec={self.max_age}\n",
            "nbh-proxy@.service": f"{head}[Service]\nEnvironment=NBH_PROXY_IDLE={self.proxy_idle}s\n",
            "nbh-cull.timer": f"{head}[Timer]\nOnUnitActiveSec={self.period}s\n",
        }


@dataclass(frozen=True)
class Courses:
    """Courses that follow their repository (nbh-autopull.timer)."""

    # How often nbh-autopull.timer updates the courses with autopull on, in seconds.
    autopull_period: int = 300

    def check(self) -> None:
        if self.autopull_period < 10:
            raise ConfigError("courses.autopull_period: at least 10 seconds")

    def dropins(self) -> dict[str, str]:
        head = "# Written by `nbh setup` from nbhosting.toml [courses]; edit that file instead.\n"
        period = f"{self.autopull_period}s"
        # The empty assignment resets all the unit's timers (they add up
        # otherwise): then the first after start, and the period.
        return {"nbh-autopull.timer": f"{head}[Timer]\nOnActiveSec=\nOnActiveSec={period}\n"
                                      f"OnUnitActiveSec={period}\n"}


@dataclass(frozen=True)
class Events:
    """The event store (nbh-events.service) and the sampler (nbh-sample.timer)."""

    # Events older than this many days are removed from the store; 0 keeps
    # everything (the default). The journal keeps its own, shorter, history.
    keep_days: int = 0
    # How often nbh-sample.timer samples the host and the courses, in seconds.
    sample_period: int = 60

    def check(self) -> None:
        if self.keep_days < 0:
            raise ConfigError("events.keep_days: must be 0 (keep everything) or a positive number of days")
        if self.sample_period < 10:
            raise ConfigError("events.sample_period: must be at least 10 seconds")

    def dropins(self) -> dict[str, str]:
        head = "# Written by `nbh setup` from nbhosting.toml [events]; edit that file instead.\n"
        return {"nbh-sample.timer": f"{head}[Timer]\nOnUnitActiveSec={self.sample_period}s\n"}


@dataclass(frozen=True)
class Staff:
    """The staff pages (/staff/): sessions and login attempts."""

    # A staff session (its cookie) lasts this long, in seconds; then log in again.
    session_lifetime: int = 8 * 3600
    # Wrong passwords for one account from one address within login_window
    # seconds; past them, that pair gets 429 until the window has passed.
    login_attempts: int = 5
    # Wrong passwords from one address, whatever the accounts, in the same window.
    login_attempts_per_address: int = 50
    # Wrong passwords for one account, whatever the addresses, in the same
    # window; past them, each try waits twice as long as the one before,
    # up to login_delay_max seconds.
    login_attempts_per_account: int = 20
    login_delay_max: int = 60
    login_window: int = 600

    def check(self) -> None:
        if not 60 <= self.session_lifetime <= 30 * 86400:
            raise ConfigError("staff.session_lifetime: must be between 60 seconds and 30 days")
        for name in ("login_attempts", "login_attempts_per_address", "login_attempts_per_account",
                     "login_delay_max", "login_window"):
            if getattr(self, name) < 1:
                raise ConfigError(f"staff.{name}: must be at least 1")


@dataclass(frozen=True)
class Config:
    limits: Limits = Limits()
    web: Web = Web()
    cull: Cull = Cull()
    courses: Courses = Courses()
    events: Events = Events()
    staff: Staff = Staff()


_SECTIONS = {"limits": Limits, "web": Web, "cull": Cull, "courses": Courses, "events": Events, "staff": Staff}
_TOML_TYPES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               tuple: "a list", list: "a list", dict: "a table"}


def _section(name: str, cls: type, table: object):
    if not isinstance(table, dict):
        raise ConfigError(f"{name}: expected a table")
    known = {f.name: f for f in fields(cls)}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"{name}.{key}: unknown key")
        expected = type(known[key].default)
        if expected is float and type(value) is int:
            value = table[key] = float(value)
        if expected is tuple and type(value) is list:
            value = table[key] = tuple(value)
        if type(value) is not expected:
            raise ConfigError(f"{name}.{key}: expected {_TOML_TYPES[expected]}, got {_TOML_TYPES.get(type(value), type(value).__name__)}")
    section = cls(**table)
    section.check()
    return section


def load(path: Path | None = None) -> Config:
    path = path or Path(os.environ.get("NBH_CONFIG", DEFAULT_PATH))
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return Config()
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: {error}") from None
    for key in data:
        if key not in _SECTIONS:
            raise ConfigError(f"{key}: unknown section")
    return Config(**{key: _section(key, _SECTIONS[key], dict(value) if isinstance(value, dict) else value)
                     for key, value in data.items()})
