"""Events in the journal, with structured fields.

Every start, ready, stop and failure of a server is one journal entry with
NBH_EVENT=, NBH_COURSE=, NBH_STUDENT= (and more), so that
``journalctl NBH_EVENT=start NBH_COURSE=python-mooc`` answers questions.
A server's unit logs its own (``nbh-jupyter-run``, ExecStart= and
ExecStopPost=; the image's ``nbh_ready`` for "ready"), so servers started
by socket activation are logged too.
nbh-events.service keeps them all in the event store (store.py).
"""

from __future__ import annotations

import ctypes
import os
import syslog

from .names import Instance

EVENTS = frozenset({"start", "ready", "stop", "failure", "open", "close", "refused", "full", "cull", "gc",
                    "revoke", "sample", "course-create", "course-set", "course-update", "course-build",
                    "course-delete", "course-rename", "launch", "reset", "share"})
# What staff members do, on the staff pages or with `nbh staff`: NBH_STAFF= names them.
STAFF_EVENTS = frozenset({"staff-login", "staff-login-failed", "staff-logout", "staff-refused", "staff-create",
                          "staff-update", "staff-build", "staff-delete", "staff-rename", "staff-settings",
                          "staff-stop", "staff-open", "staff-view", "staff-account"})
IDENTIFIER = "nbhosting"


class _IOVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_char_p), ("iov_len", ctypes.c_size_t)]


_libsystemd: ctypes.CDLL | None = None


def _journal_sendv(fields: dict[str, str]) -> None:
    """libsystemd's sd_journal_sendv, which pystemd wraps too; but pystemd's
    module for it imports its whole package first (its D-Bus classes, lxml):
    0.01 to 0.02 CPU second in each of the short processes of a server's start
    and stop (nbh-jupyter-run). Like pystemd's, a failure to log
    is not an error of the caller's."""
    global _libsystemd
    if _libsystemd is None:
        _libsystemd = ctypes.CDLL("libsystemd.so.0")
        _libsystemd.sd_journal_sendv.argtypes = (ctypes.POINTER(_IOVec), ctypes.c_int)
    lines = [f"{key}={value}".encode() for key, value in fields.items()]
    _libsystemd.sd_journal_sendv((_IOVec * len(lines))(*((line, len(line)) for line in lines)), len(lines))


def _send(event: str, message: str, priority: int, **fields: str) -> None:
    if event not in EVENTS and event not in STAFF_EVENTS:
        raise ValueError(f"unknown event {event!r}")
    _journal_sendv({"PRIORITY": str(priority), "MESSAGE": message, "SYSLOG_IDENTIFIER": IDENTIFIER,
                    "NBH_EVENT": event, **fields})


def send(event: str, instance: Instance, message: str, priority: int = syslog.LOG_INFO, **fields: str) -> None:
    _send(event, message, priority, NBH_COURSE=instance.course, NBH_STUDENT=instance.student,
          NBH_INSTANCE=instance.name, **{key: str(value) for key, value in fields.items()})


def journal_only(event: str, message: str, **fields: str) -> None:
    """An event that concerns no one student."""
    _send(event, message, syslog.LOG_INFO, **fields)


def staff(event: str, account: str, message: str, priority: int = syslog.LOG_INFO, **fields: str) -> None:
    """A staff member's action (or attempt), NBH_STAFF= naming them."""
    _send(event, message, priority, NBH_STAFF=account,
          **{key: str(value)[:200] for key, value in fields.items() if value is not None})


def refused(status: int, reason: str, **fields: str) -> None:
    """A bad or unauthorized entry; the names are as they came, cut short."""
    _send("refused", f"refused ({status}): {reason}", syslog.LOG_NOTICE, NBH_STATUS=str(status),
          **{key: str(value)[:200] for key, value in fields.items() if value is not None})


def after_stop(instance: Instance, environ: os._Environ | dict) -> None:
    """ExecStopPost=: a stop, or a failure with systemd's own words for it."""
    result = environ.get("SERVICE_RESULT", "success")
    code, status = environ.get("EXIT_CODE", ""), environ.get("EXIT_STATUS", "")
    if result == "success":
        send("stop", instance, f"{instance.path} stopped")
    else:
        send(
            "failure", instance,
            f"{instance.path} failed: {result} ({code} {status})".rstrip(),
            priority=syslog.LOG_WARNING,
            NBH_RESULT=result, NBH_EXIT_CODE=code, NBH_EXIT_STATUS=status,
        )
