"""The kernel is ready when the page is: nbhosting's front end asks for a
notebook's kernel as it redirects the student to the notebook, so that the
kernel starts while the browser loads Notebook's page, not after.

- ``POST <base_url>nbh/prestart`` ``{"path": ..., "timeout": seconds}``, with
  the server's token (the front end, on the server's own socket): starts a
  session for the notebook with the kernel its metadata names, unless the
  path has a session already (a second open starts nothing) or the notebook
  names no kernel this server has (Notebook asks the student then).
- SessionManager keeps one session per path when two ask at once: the
  session list and a session request for a path whose session is being
  created wait for it, so Notebook 7's SessionContext, which looks for a
  session of its path before it starts one, finds the pre-started one and
  adopts it instead of starting a second kernel.
- A pre-started kernel that no websocket has connected to within the
  timeout is shut down with its session. Until then it is a kernel like any
  other to ``nbh cull``, which stops the whole server when it is idle; once
  it is gone, the server's activity is that of the open (the request that
  pre-started it), so it is culled as if nothing had been started.
"""

import asyncio
import json
import posixpath

from jupyter_client.kernelspec import NoSuchKernel
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.services.sessions.sessionmanager import SessionManager as JupyterSessionManager
from jupyter_server.utils import url_path_join
from tornado import web

TIMEOUT_MAX = 3600
# A notebook's metadata is read to name its kernel: a larger file is not.
NOTEBOOK_MAX = 64 << 20


def _jupyter_server_extension_points():
    return [{"module": "nbh_prestart"}]


class SessionManager(JupyterSessionManager):
    """Jupyter's session manager, with one session per path even when the
    pre-start and the page ask at once, and pre-started sessions that end
    when no page takes them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._creating = {}  # path -> future, done when its session is made (or not)
        self._unadopted = {}  # kernel id -> timer that shuts it down

    async def create_session(self, path=None, **kwargs):
        done = asyncio.get_running_loop().create_future()
        self._creating[path] = done
        try:
            return await super().create_session(path=path, **kwargs)
        finally:
            if self._creating.get(path) is done:
                del self._creating[path]
            done.set_result(None)

    async def _settled(self, path=None):
        """Wait for the sessions being created (of this path, or all)."""
        pending = [f for p, f in self._creating.items() if path is None or p == path]
        if pending:
            await asyncio.wait(pending)

    async def session_exists(self, path):
        await self._settled(path)
        return await super().session_exists(path)

    async def list_sessions(self):
        await self._settled()
        return await super().list_sessions()

    async def prestart(self, path, kernel_name, timeout):
        """A session for the notebook at path, whose kernel ends after timeout
        seconds unless a websocket connects to it; None if path has one."""
        if await self.session_exists(path):
            self.log.info("nbh_prestart: %s has a session already, nothing started", path)
            return None
        model = await self.create_session(path=path, name=posixpath.basename(path), type="notebook",
                                          kernel_name=kernel_name)
        session_id, kernel_id = model["id"], model["kernel"]["id"]
        self._unadopted[kernel_id] = asyncio.get_running_loop().call_later(
            timeout, lambda: asyncio.ensure_future(self._expire(session_id, kernel_id, path, timeout)))
        self.log.info("nbh_prestart: kernel %s started for %s", kernel_id, path)
        return model

    def adopted(self, kernel_id):
        timer = self._unadopted.pop(kernel_id, None)
        if timer is not None:
            timer.cancel()
            self.log.info("nbh_prestart: kernel %s adopted", kernel_id)

    async def _expire(self, session_id, kernel_id, path, timeout):
        if self._unadopted.pop(kernel_id, None) is None or kernel_id not in self.kernel_manager:
            return
        try:
            await self.delete_session(session_id)
        except Exception as e:  # gone meanwhile (a restart, a shutdown from the API)
            self.log.warning("nbh_prestart: could not shut down kernel %s: %s", kernel_id, e)
        else:
            self.log.info("nbh_prestart: kernel %s of %s shut down, no page took it in %s s",
                          kernel_id, path, timeout)


class PrestartHandler(APIHandler):
    auth_resource = "sessions"

    @web.authenticated
    @authorized
    async def post(self):
        body = self.get_json_body() or {}
        path, timeout = body.get("path"), body.get("timeout", 60)
        if not isinstance(path, str) or not path.endswith(".ipynb"):
            raise web.HTTPError(400, "path: a notebook's path")
        if not isinstance(timeout, (int, float)) or not 0 < timeout <= TIMEOUT_MAX:
            raise web.HTTPError(400, f"timeout: seconds, at most {TIMEOUT_MAX}")
        kernel_name = self._kernel_name(path)
        started = None
        if kernel_name:
            try:
                started = await self.session_manager.prestart(path, kernel_name, timeout)
            except NoSuchKernel:
                pass  # a kernel this server lacks: Notebook asks the student
        self.finish(json.dumps({"started": started is not None, "kernel": kernel_name,
                                "session": started and started["id"]}))

    def _kernel_name(self, path):
        """The kernel the notebook's metadata names, as Notebook would ask."""
        try:
            with open(self.contents_manager._get_os_path(path), "rb") as f:
                notebook = json.loads(f.read(NOTEBOOK_MAX + 1)[:NOTEBOOK_MAX])
            name = notebook["metadata"]["kernelspec"]["name"]
        except (OSError, ValueError, KeyError, TypeError, web.HTTPError) as e:
            self.log.info("nbh_prestart: no kernel named by %s: %s", path, e)
            return None
        return name if isinstance(name, str) else None


def _load_jupyter_server_extension(serverapp):
    sessions = serverapp.session_manager
    if not isinstance(sessions, SessionManager):
        serverapp.log.warning("nbh_prestart: ServerApp.session_manager_class is not nbh_prestart's: not loaded")
        return
    # A websocket connecting to a kernel is a page taking it.
    kernels = serverapp.kernel_manager
    connect = kernels.notify_connect

    def notify_connect(kernel_id):
        sessions.adopted(kernel_id)
        connect(kernel_id)

    kernels.notify_connect = notify_connect
    serverapp.web_app.add_handlers(".*$", [(url_path_join(serverapp.base_url, "nbh/prestart"), PrestartHandler)])
