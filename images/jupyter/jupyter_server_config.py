# nbhosting: configuration of the Jupyter server in a student's container.
# Installed as /etc/jupyter/jupyter_server_config.py in both images (by
# images/jupyter/install), where Jupyter reads it whatever the user.
#
# The host bind-mounts a per-instance directory at /run/nbh, read-only,
# holding the token file, and passes the socket to listen on (nbh_ready.py).
# The host side runs as the same uid as root in the container, so no TCP
# port and no other user.
import os
import sys

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_core.paths import jupyter_path

c = get_config()  # noqa: F821 -- provided by traitlets when it loads this file

RUN = "/run/nbh"

# The per-student secret. Without it, refuse to start: a server without a
# token would let anyone who reaches the socket in. SystemExit is not caught
# by traitlets' config loading (it catches Exception), so the server exits 1.
try:
    with open(f"{RUN}/token") as f:
        token = f.read().strip()
except OSError as e:
    sys.exit(f"nbhosting: cannot read the token file {RUN}/token ({e}), refusing to start")
if not token:
    sys.exit(f"nbhosting: the token file {RUN}/token is empty, refusing to start")
c.IdentityProvider.token = token

# Listen only on a unix socket: the one systemd passes (LISTEN_FDS, see
# nbh_ready.py), or, without one, this path.
c.ServerApp.sock = f"{RUN}/jupyter.sock"
c.ServerApp.sock_mode = "0600"
# Requests arrive through nginx with the public Host header; the socket and
# the token are the access control, so do not check Host against localhost.
c.ServerApp.allow_remote_access = True
c.ServerApp.base_url = os.environ.get("NBH_BASE_URL", "/")
c.ServerApp.root_dir = "/home/jovyan/work"
c.ServerApp.allow_root = True  # container root is the unprivileged host account
c.ServerApp.open_browser = False

# Who may put the notebook in an iframe: us and the LMS (space-separated
# CSP sources, e.g. "https://lms.example.org").
ancestors = os.environ.get("NBH_FRAME_ANCESTORS", "").strip()


def page_config_hook(handler, page_config):
    """Notebook's scripts from the site's shared copy of this image's (nbh_static.py)."""
    import nbh_static  # noqa: PLC0415 (at the first page, not at every start)

    return nbh_static.page_config_hook(handler, page_config)


c.ServerApp.tornado_settings = {
    # The LMS's iframe is cross-site: the browser may keep no cookie there
    # (Safari never does). The page has the token in its config; this makes
    # the front end put it in websocket URLs too (kernels, events), which
    # otherwise count on the login cookie.
    "page_config_data": {"appendToken": "true"},
    "page_config_hook": page_config_hook,
    "headers": {
        "Content-Security-Policy": f"frame-ancestors 'self' {ancestors}".strip(),
        # the token is in the page's URL: never send it to another site
        "Referrer-Policy": "same-origin",
    },
}

# Server extensions. This file wins over the jupyter_server_config.d/*.json
# files that packages install. jupyter_lsp is costly at start and unused.
c.ServerApp.jpserver_extensions = {
    "nbh_ready": True,  # sd_notify READY=1 once listening, see nbh_ready.py
    "nbh_menus": True,  # the File menu's reset, share and student id, see nbh_menus.py
    "nbh_prestart": True,  # the kernel started as the page loads, see nbh_prestart.py
    "nbh_exporters": True,  # api/nbconvert answered from the image, see nbh_exporters.py
    "nbh_validators": True,  # nbformat's validators generated with the image, see nbh_validators.py
    "jupyter_lsp": False,
    # Reads the classic Notebook's configuration, which no image has, and
    # imports IPython to list its nbextensions folder: 0.02 s at every start.
    "notebook_shim": False,
}

# A notebook fresh from the course opens trusted (nbh_menus.py). Jupyter's
# own trust of what the student ran survives a restart: the signatures are
# kept in the workspace, under a key the host derives for this student
# (the home folder, where Jupyter keeps both by default, is a tmpfs). The
# file is at the workspace's top, which exists: SQLite makes no folder, and
# in one it cannot open Jupyter falls back to memory, with a warning.
c.ServerApp.contents_manager_class = "nbh_menus.ContentsManager"
c.NotebookNotary.secret_file = f"{RUN}/notary-secret"
c.NotebookNotary.db_file = "/home/jovyan/work/.nbh-signatures.db"

# Asked for by the page with no token (a <link>, an <img>): in a cross-site
# iframe, with no cookie, they would be refused and log a 403. There is no
# custom.css; the kernels' logos are removed from the image (install).
c.JupyterNotebookApp.custom_css = False

# Tabs left open on a stopped server carry on when it starts again: their
# sessions come back with new kernels under the same ids (nbh_sessions.py).
c.ServerApp.kernel_manager_class = "nbh_sessions.KernelManager"
c.ServerApp.kernel_websocket_connection_class = "nbh_sessions.KernelConnection"
# The page adopts the kernel the front end started for it (nbh_prestart.py).
c.ServerApp.session_manager_class = "nbh_prestart.SessionManager"


class JupyterKernelSpecManager(KernelSpecManager):
    """Kernels in Jupyter's folders, where the image has them, and not also
    in IPython's, which jupyter_client finds by importing IPython into the
    server as the page lists the kernels (kernel_dirs is no setting)."""

    def _kernel_dirs_default(self):
        return jupyter_path("kernels")


c.ServerApp.kernel_spec_manager_class = JupyterKernelSpecManager

# The workspace is a bind mount: a trash would land in it (.Trash-0) or fail.
c.FileContentsManager.delete_to_trash = False

# The container has no network: no news feed, no update check.
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
# nor PyPI: the read-only extension manager, not the PyPI one, which builds
# an HTTP client (and its TLS context) at every start: 0.05 CPU second of
# 0.46 (images/measure-cuts).
c.LabApp.extension_manager = "readonly"
