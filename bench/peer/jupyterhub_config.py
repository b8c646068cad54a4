# JupyterHub for `make bench-peer` (bench/peer/__main__.py), in the sandbox:
# SystemdSpawner with dynamic users, configurable-http-proxy from npm, and an
# entry URL that stands for an LMS launch (/hub/login?student=NAME), as
# nbhosting's signed entry URL does. Everything else is JupyterHub's default.
# The bench passes its settings in the environment (NBH_PEER_*).
import os

from jupyterhub.auth import Authenticator
from jupyterhub.handlers import BaseHandler

c = get_config()  # noqa: F821 -- JupyterHub's config loader defines it

env = os.environ
prefix, port = env["NBH_PEER_PREFIX"], int(env["NBH_PEER_PORT"])

c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = port
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = port + 1
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{port + 2}"
c.ConfigurableHTTPProxy.command = [env["NBH_PEER_PROXY"]]
c.ConfigurableHTTPProxy.debug = False

# One account with the admin's scopes, for the bench's REST calls.
with open(env["NBH_PEER_TOKEN_FILE"]) as token:
    c.JupyterHub.services = [{"name": "bench", "api_token": token.read().strip()}]
c.JupyterHub.load_roles = [{
    "name": "bench", "services": ["bench"],
    "scopes": ["admin:users", "admin:servers", "access:servers", "read:users"],
}]

c.JupyterHub.spawner_class = "systemd"
c.SystemdSpawner.dynamic_users = True  # a user of systemd's own per server
# Short: a dynamic user takes its unit's name, at most 31 characters.
c.SystemdSpawner.unit_name_template = "jh-{USERNAME}"
c.Spawner.cmd = [f"{prefix}/bin/jupyterhub-singleuser"]
# 20 servers started at once on 2 cores take longer than JupyterHub's 30 s
# for a server to answer (http_timeout): with the defaults, some of those
# starts fail ("didn't respond in 30 seconds"). The bench measures how long
# they take, as it waits for ours.
c.Spawner.http_timeout = 120
c.Spawner.start_timeout = 120
c.Spawner.default_url = "/notebooks/" + env["NBH_PEER_NOTEBOOK"]
# The course's notebook copied into the student's home on the first start,
# as nbhosting's entry copies it into the workspace.
notebook = env["NBH_PEER_NOTEBOOK"]
# RuntimeDirectoryPreserve=no: with dynamic users, the default ("restart")
# leaves a dangling /run/<unit> link at a stop, and the next start of that
# user fails with FileExistsError (jupyterhub/systemdspawner#76).
c.SystemdSpawner.unit_extra_properties = {
    "RuntimeDirectoryPreserve": "no",
    "ExecStartPre": f"/bin/sh -c 'mkdir -p {os.path.dirname(notebook)} && "
                    f"cp -n {env['NBH_PEER_COURSE']}/{notebook} {notebook}'",
}


class EntryLoginHandler(BaseHandler):
    """The student arrives logged in by the LMS: a URL with their name."""

    async def get(self):
        user = await self.login_user({"username": self.get_argument("student")})
        self.redirect(self.get_next_url(user))


class EntryAuthenticator(Authenticator):
    auto_login = True
    allow_all = True

    def get_handlers(self, app):
        return [("/login", EntryLoginHandler)]

    async def authenticate(self, handler, data):
        return data["username"]


c.JupyterHub.authenticator_class = EntryAuthenticator
