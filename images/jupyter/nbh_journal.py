"""Events from the student's server to the host's journal.

The host mounts the journal's socket in; entries go in journald's native
protocol. journald takes the unit (hence course and student) from the
sender's cgroup, and the store believes that, not the fields sent here
(nbhosting/follower.py). Best effort: a server runs without its events.
"""

from __future__ import annotations

import os
import socket
import struct

JOURNAL = "/run/systemd/journal/socket"


def journal_send(**fields: str) -> None:
    """One entry in the host's journal (its native protocol), best effort."""
    data = bytearray()
    for key, value in fields.items():
        raw = str(value).encode()
        if b"\n" in raw:
            data += key.encode() + b"\n" + struct.pack("<Q", len(raw)) + raw + b"\n"
        else:
            data += key.encode() + b"=" + raw + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as journal:
            journal.sendto(bytes(data), JOURNAL)
    except OSError:
        pass


def event(name: str, message: str, **fields: str) -> None:
    journal_send(MESSAGE=message, PRIORITY="6", SYSLOG_IDENTIFIER="nbhosting", NBH_EVENT=name,
                 NBH_COURSE=os.environ.get("NBH_COURSE", ""), NBH_STUDENT=os.environ.get("NBH_STUDENT", ""),
                 **fields)
