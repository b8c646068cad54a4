"""nbhosting's server extension: systemd's side of Jupyter Server. It
listens on the socket systemd made, tells systemd when it is ready, and
refuses pages asked for without the server's token.

The socket Jupyter listens on is made by systemd (nbh-upstream@.socket), out
of the container's reach, and passed in as LISTEN_FDS (podman hands it on):
nothing a student runs can replace it with a link to another socket, as it
could a socket Jupyter made in a folder of its own. Without LISTEN_FDS,
Jupyter binds ServerApp.sock itself, as usual.

podman run --sdnotify=container passes NOTIFY_SOCKET into the container and
leaves READY=1 to it. Once loaded, this extension schedules a callback on
the IOLoop, which runs only after the server has bound its socket: it first
restores the sessions of the tabs left open when the server last stopped
(nbh_sessions.py), then sends READY=1. Does not notify without NOTIFY_SOCKET.

Then it logs the "ready" event, with the seconds since the unit began to
start (NBH_STARTED_AT, which nbh-jupyter-run passes in). The unit used to
run a process of its own for that (ExecStartPost=): 0.04 CPU second and
as long a wait at every start, on the path of the student's first request.
"""

import asyncio
import os
import signal
import socket
import time

from jupyter_server.base.handlers import JupyterHandler
from tornado import web
from tornado.ioloop import IOLoop

import nbh_sessions
from nbh_journal import event


def _jupyter_server_extension_points():
    return [{"module": "nbh_ready"}]


def _no_login_page(handler):
    """No login page: a server is reached with its own token only (in the URL
    the front end redirects to), and a cookie could not be kept in the LMS's
    cross-site iframe anyway. A page asked for without it is refused (403)
    instead of redirected to a form nobody can fill in."""
    raise web.HTTPError(403)


SD_LISTEN_FDS_START = 3


def _listen_on_passed_socket(serverapp):
    """Listen on the socket systemd passed, instead of binding ServerApp.sock."""
    count = os.environ.pop("LISTEN_FDS", "")
    for name in ("LISTEN_PID", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    if count != "1":
        return
    listening = socket.socket(fileno=SD_LISTEN_FDS_START)
    listening.set_inheritable(False)  # not for kernels
    listening.setblocking(False)  # Tornado accepts until EAGAIN

    def bind_passed_socket():
        serverapp.http_server.add_socket(listening)
        return True

    # ServerApp binds from the IOLoop, after the extensions are loaded.
    serverapp._bind_http_server_unix = bind_passed_socket


def _load_jupyter_server_extension(serverapp):
    JupyterHandler.get_login_url = _no_login_page
    _listen_on_passed_socket(serverapp)
    # Take it out of the environment so that kernels and terminals, which
    # run students' code, cannot talk to systemd.
    path = os.environ.pop("NOTIFY_SOCKET", "")
    IOLoop.current().add_callback(_start, serverapp, path)


def _stop(serverapp):
    serverapp.log.info("nbh_ready: SIGTERM, stopping")
    serverapp.stop()


async def _start(serverapp, path):
    # SIGTERM handled on the loop, not in a signal handler: Jupyter's own logs
    # from inside the handler, and when the signal lands while the server is
    # writing a log line (a tab's websocket closing as systemd stops the
    # proxy, just before the server), that write fails ("reentrant call"),
    # the server never stops, and systemd kills it 20 s later without its
    # sessions written down (nbh_sessions).
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, _stop, serverapp)
    try:
        await nbh_sessions.restore(serverapp)
    except Exception:  # the server is worth starting all the same
        serverapp.log.exception("nbh_sessions: could not restore the sessions")
    _notify(serverapp, path)


def _notify(serverapp, path):
    log = serverapp.log
    if not path:
        log.info("nbh_ready: NOTIFY_SOCKET is not set, not notifying")
        return
    message = "READY=1\nSTATUS=Jupyter Server is listening"
    # A name starting with '@' is in the abstract namespace.
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(message.encode())
    except OSError as e:
        log.warning("nbh_ready: could not notify %s: %s", path, e)
    else:
        log.info("nbh_ready: sent READY=1 to %s", path)
        _ready_event()


def _ready_event():
    """After READY=1, so that a start's events stay in their order in the
    journal (start, ready, then the front end's open once systemd has it)."""
    where = f"{os.environ.get('NBH_COURSE', '')}/{os.environ.get('NBH_STUDENT', '')}"
    try:
        seconds = time.clock_gettime(time.CLOCK_BOOTTIME) - float(os.environ["NBH_STARTED_AT"])
    except (KeyError, ValueError):
        event("ready", f"{where} is ready")
        return
    event("ready", f"{where} is ready after {seconds:.2f} s", NBH_START_SECONDS=f"{seconds:.3f}")
