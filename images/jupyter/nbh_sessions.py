"""Open tabs outlive their server: the sessions that had a tab connected
when the server stopped (a cull, the maximum age) get a new kernel under
their old session and kernel ids when the server starts again.

A Notebook 7 tab holds the ids of its session and kernel. When its server
comes back without them, it declares the kernel dead and asks the student to
pick another one. With the same ids, its websocket simply reconnects, to a
fresh kernel: the variables are gone, the notebook carries on.

- KernelManager writes the sessions down as the server shuts down, before
  its kernels are stopped. Only sessions with a tab connected count, so a
  revival starts no kernel that nobody waits for. systemd stops the socket's
  proxy before the server (it is ordered after it), so the tabs' websockets
  close just before Jupyter gets SIGTERM: a tab connected a moment ago counts.
- restore() starts their kernels, called by nbh_ready before READY=1, so no
  request reaches the server before they are there.
- KernelManager also answers for a kernel in the moment between
  jupyter_client listing it and jupyter_server giving it its activity
  (jupyter/notebook#5345, enterprise_gateway#1395): a request for the
  kernels or the server's status then answered 500. The pre-start makes
  that moment common: the page's first requests come while it starts.
- KernelConnection tells a tab reconnecting to a restored kernel that it is
  idle: the new kernel's "starting" went out before any tab listened, and
  Notebook counts no status caused by its own kernel_info requests.

The file lives in the workspace, hidden from Jupyter's file browser, and is
read once: a crash loop restores nothing.
"""

import asyncio
import json
import os
import re
import time

from jupyter_server._tz import utcnow
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager

FILE = ".nbh-sessions.json"
# How recent a tab's last disconnection may be for its session to count.
RECENT_SECONDS = 10
# At most this many kernels start again with the server, all at once.
MAX_SESSIONS = 10
_UUID = re.compile(r"\A[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_FIELDS = ("session_id", "kernel_id", "kernel_name", "path", "name", "type")
_restored = set()  # ids of restored kernels that no tab has reconnected to yet


class KernelManager(AsyncMappingKernelManager):
    """Jupyter's kernel manager, which remembers the open tabs' sessions."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._disconnected_at = {}  # kernel id -> time.monotonic() of its last disconnection

    def notify_disconnect(self, kernel_id):
        self._disconnected_at[kernel_id] = time.monotonic()
        super().notify_disconnect(kernel_id)

    def kernel_model(self, kernel_id):
        kernel = self._kernels.get(kernel_id)
        if kernel is not None and not kernel.trait_has_value("last_activity"):
            # The markers jupyter_server sets a moment later, on the same loop.
            kernel.execution_state, kernel.last_activity = "starting", utcnow()
        return super().kernel_model(kernel_id)

    def tab_connected(self, kernel_id):
        if self._kernel_connections.get(kernel_id, 0) > 0:
            return True
        return time.monotonic() - self._disconnected_at.get(kernel_id, float("-inf")) < RECENT_SECONDS

    async def shutdown_all(self, now=False):
        try:
            await remember(self.parent)
        except Exception:  # never keep the server from stopping
            self.log.exception("nbh_sessions: could not remember the sessions")
        await super().shutdown_all(now=now)


class KernelConnection(ZMQChannelsWebsocketConnection):
    """Jupyter's kernel websocket, which says "idle" to a tab reconnecting to
    a restored kernel once the connection is live."""

    def connect(self):
        connected = super().connect()
        if connected is not None and self.kernel_id in _restored:
            _restored.discard(self.kernel_id)
            connected.add_done_callback(lambda _: self._send_status_message("idle"))
        return connected


def _file(serverapp):
    return os.path.join(serverapp.root_dir, FILE)


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


async def remember(serverapp):
    """Write down the sessions that have a tab connected."""
    kernels, records = serverapp.kernel_manager, []
    for session in await serverapp.session_manager.list_sessions():
        kernel = session["kernel"]
        if kernels.tab_connected(kernel["id"]):
            records.append({"session_id": session["id"], "kernel_id": kernel["id"],
                            "kernel_name": kernel["name"], "path": session["path"],
                            "name": session["name"], "type": session["type"]})
    path = _file(serverapp)
    if not records:
        _remove(path)
        return
    with open(path + ".tmp", "w") as f:
        json.dump(records, f)
    os.replace(path + ".tmp", path)
    serverapp.log.info("nbh_sessions: remembered %d session(s) with an open tab", len(records))


def _valid(record):
    return (isinstance(record, dict)
            and all(isinstance(record.get(k), str) for k in _FIELDS)
            and _UUID.match(record["session_id"]) and _UUID.match(record["kernel_id"]))


async def restore(serverapp):
    """Start a kernel for each remembered session, under its old ids."""
    path, log = _file(serverapp), serverapp.log
    try:
        with open(path) as f:
            records = json.load(f)
    except FileNotFoundError:
        return
    except (OSError, ValueError) as e:
        log.warning("nbh_sessions: ignoring %s: %s", path, e)
        return
    finally:
        _remove(path)
    if not isinstance(records, list):
        log.warning("nbh_sessions: ignoring %s: not a list", path)
        return
    valid = [r for r in records if _valid(r)]
    if len(valid) < len(records):
        log.warning("nbh_sessions: ignoring %d malformed record(s) in %s", len(records) - len(valid), path)
    if len(valid) > MAX_SESSIONS:
        log.warning("nbh_sessions: restoring only %d of %d sessions", MAX_SESSIONS, len(valid))
    await asyncio.gather(*(_restore_one(serverapp, r) for r in valid[:MAX_SESSIONS]))


async def _restore_one(serverapp, record):
    sessions, log = serverapp.session_manager, serverapp.log
    try:
        await sessions.start_kernel_for_session(
            session_id=record["session_id"], path=record["path"], name=record["name"],
            type=record["type"], kernel_name=record["kernel_name"], kernel_id=record["kernel_id"])
        await sessions.save_session(record["session_id"], path=record["path"], name=record["name"],
                                    type=record["type"], kernel_id=record["kernel_id"])
    except Exception as e:  # a kernel that cannot start must not stop the server
        log.warning("nbh_sessions: could not restore session %s (%s): %s",
                    record["session_id"], record["path"], e)
    else:
        _restored.add(record["kernel_id"])
        log.info("nbh_sessions: restored session %s of %s with a new %s kernel",
                 record["session_id"], record["path"], record["kernel_name"])
