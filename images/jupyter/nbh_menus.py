"""nbhosting's server extension behind the File menu's entries (the
@nbhosting/menus front-end extension): reset a notebook to the course's
version, share a static copy, tell the student who they are. It runs in the
student's own server, with the student's own rights: the course is mounted
read-only, the workspace read-write, and the student's shared pages folder
read-write; nothing here needs more.

Its events go to the host's journal through the journal's socket, which the
host mounts in (nbh_journal.py).
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import tempfile
import time
from pathlib import Path

from jupyter_server.base.handlers import APIHandler, AuthenticatedFileHandler
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from jupyter_server.utils import url_path_join
from tornado import web
from traitlets import default

from nbh_journal import event

WORK = Path("/home/jovyan/work")
COURSE = Path("/home/jovyan/course")
SHARED = Path("/home/jovyan/shared")
PAGE_RE = re.compile(r"[a-z2-7]{26}")
# nbconvert's pages load require.js and MathJax from a CDN: not here.
NO_CDN = {"require_js_url": "", "mathjax_url": ""}


def _jupyter_server_extension_points():
    return [{"module": "nbh_menus"}]


def inside(root: Path, relative: str) -> Path:
    """root/relative, refused (400) if it would lead out of root."""
    if not isinstance(relative, str) or not relative or relative.startswith("/") or "\0" in relative:
        raise web.HTTPError(400, "not a notebook path")
    path = root / relative
    if any(part in ("", ".", "..") for part in relative.split("/")):
        raise web.HTTPError(400, "not a notebook path")
    if not path.suffix == ".ipynb":
        raise web.HTTPError(400, "not a notebook")
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(root):
        raise web.HTTPError(403, "outside its folder")
    return real


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()
    except OSError:
        return False


def copy_replacing(source: Path, target: Path) -> None:
    """target becomes a copy of source, at once (a rename)."""
    fd, temporary = tempfile.mkstemp(prefix=".nbh-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(source.read_bytes())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def backup_name(path: Path, when: float) -> Path:
    stamp = time.strftime("%Y-%m-%d-%H%M%S", time.localtime(when))
    candidate = path.with_name(f"{path.stem}-backup-{stamp}{path.suffix}")
    n = 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-backup-{stamp}-{n}{path.suffix}")
    return candidate


def reset(relative: str) -> str | None:
    """The course's version in place of the student's, whose version is
    renamed to a timestamped backup beside it. The backup's path, or None
    if the student had no version."""
    source = inside(COURSE, relative)
    if not source.is_file():
        raise web.HTTPError(404, "this notebook is not in the course")
    target = inside(WORK, relative)
    target.parent.mkdir(parents=True, exist_ok=True)
    backup = None
    if target.exists():
        backup = backup_name(target, time.time())
        os.link(target, backup)  # the student's bytes, under a second name; never overwritten
    copy_replacing(source, target)
    return backup.relative_to(WORK).as_posix() if backup else None


class Shares:
    """The student's shared pages: <page>.html in SHARED, one page per
    notebook, the notebook → page map in index.json. A page's name is random
    (130 bits), so its address cannot be guessed; it stays the same for the
    notebook, so sharing again updates the page at the same address."""

    def __init__(self, folder: Path = SHARED, url: str | None = None):
        self.folder = folder
        self.url = url if url is not None else os.environ.get("NBH_SHARE_URL", "")

    def _index(self) -> dict:
        try:
            index = json.loads((self.folder / "index.json").read_text())
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in index.items() if isinstance(v, str) and PAGE_RE.fullmatch(v)} \
            if isinstance(index, dict) else {}

    def _write_index(self, index: dict) -> None:
        fd, temporary = tempfile.mkstemp(prefix=".index-", dir=self.folder)
        with os.fdopen(fd, "w") as out:
            json.dump(index, out)
        os.chmod(temporary, 0o644)
        os.replace(temporary, self.folder / "index.json")

    def address(self, relative: str) -> str | None:
        page = self._index().get(relative)
        if page and (self.folder / f"{page}.html").is_file():
            return self.url + page
        return None

    def share(self, relative: str, html: str) -> str:
        index = self._index()
        page = index.get(relative) or base64.b32encode(secrets.token_bytes(17)).decode().lower()[:26]
        fd, temporary = tempfile.mkstemp(prefix=".page-", dir=self.folder)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(html)
        os.chmod(temporary, 0o644)  # the front end reads it through the group
        os.replace(temporary, self.folder / f"{page}.html")
        if index.get(relative) != page:
            index[relative] = page
            self._write_index(index)
        return self.url + page

    def withdraw(self, relative: str) -> bool:
        index = self._index()
        page = index.pop(relative, None)
        if page is None:
            return False
        (self.folder / f"{page}.html").unlink(missing_ok=True)
        self._write_index(index)
        return True


def render(path: Path) -> str:
    """The saved notebook as one HTML page, figures inline; nothing from elsewhere."""
    import nbconvert  # noqa: PLC0415 -- costly, and only when sharing
    import nbformat  # noqa: PLC0415

    notebook = nbformat.read(path, as_version=4)
    exporter = nbconvert.HTMLExporter(template_name="lab", embed_images=True, **NO_CDN)
    # path: where markdown images by a relative path are read from, to inline them
    body, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"name": path.stem,
                                                                           "path": str(path.parent)}})
    return body


class Handler(APIHandler):
    def path_argument(self) -> str:
        if self.request.method in ("POST",):
            try:
                return json.loads(self.request.body or b"{}")["path"]
            except (ValueError, KeyError, TypeError):
                raise web.HTTPError(400, "a JSON body with a path") from None
        return self.get_argument("path")


class ResetHandler(Handler):
    @web.authenticated
    async def post(self):
        relative = self.path_argument()
        backup = reset(relative)
        event("reset", f"reset {relative} to the course's version" + (f", backup {backup}" if backup else ""),
              NBH_NOTEBOOK=relative, NBH_BACKUP=backup or "")
        self.finish({"path": relative, "backup": backup})


class ShareHandler(Handler):
    shares = Shares()

    @web.authenticated
    async def get(self):
        self.finish({"url": self.shares.address(self.path_argument())})

    @web.authenticated
    async def post(self):
        relative = self.path_argument()
        path = inside(WORK, relative)
        if not path.is_file():
            raise web.HTTPError(404, "no such notebook")
        try:
            html = render(path)
        except Exception as error:  # a notebook nbformat cannot read
            self.log.warning("nbhosting: cannot render %s: %s", relative, error)
            raise web.HTTPError(400, f"this notebook cannot be shared: {error}") from None
        url = self.shares.share(relative, html)
        event("share", f"shared {relative}", NBH_NOTEBOOK=relative, NBH_ACTION="share")
        self.finish({"url": url})

    @web.authenticated
    async def delete(self):
        relative = self.path_argument()
        if not self.shares.withdraw(relative):
            raise web.HTTPError(404, "this notebook is not shared")
        event("share", f"withdrew the shared page of {relative}", NBH_NOTEBOOK=relative, NBH_ACTION="withdraw")
        self.finish({"url": None})


class WhoamiHandler(Handler):
    @web.authenticated
    async def get(self):
        hide = [item for item in os.environ.get("NBH_HIDE", "").split(",") if item]
        self.finish({"course": os.environ.get("NBH_COURSE", ""), "student": os.environ.get("NBH_STUDENT", ""),
                     "hide": hide})


class FilesHandler(AuthenticatedFileHandler):
    """/files/ (a markdown image, a download): the workspace's files, and the
    course's that the host linked beside a notebook (nbhosting/mappings.py:
    data/, figures/), which lead into the read-only course and which
    Jupyter's own handler refuses as outside the workspace."""

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        real = os.path.realpath(absolute_path)
        if real.startswith(f"{COURSE}/"):
            return super().validate_absolute_path(str(COURSE), real)
        return super().validate_absolute_path(root, absolute_path)


class ContentsManager(AsyncLargeFileManager):
    """A notebook fresh from the course is trusted: the course is trusted
    content. Once the student changed it, Jupyter's own rules apply (its
    signature, kept across restarts: jupyter_server_config.py)."""

    @default("files_handler_class")
    def _files_handler_class_default(self):
        return FilesHandler

    def mark_trusted_cells(self, nb, path=""):
        if not self.notary.check_signature(nb) and self._from_course(path):
            self.notary.sign(nb)
        return super().mark_trusted_cells(nb, path)

    def _from_course(self, path: str) -> bool:
        try:
            mine, course = inside(WORK, path), inside(COURSE, path)
        except web.HTTPError:
            return False
        return same_file(mine, course)


def _load_jupyter_server_extension(serverapp):
    base = serverapp.web_app.settings["base_url"]
    serverapp.web_app.add_handlers(".*$", [
        (url_path_join(base, "nbh", "reset"), ResetHandler),
        (url_path_join(base, "nbh", "share"), ShareHandler),
        (url_path_join(base, "nbh", "whoami"), WhoamiHandler),
    ])

