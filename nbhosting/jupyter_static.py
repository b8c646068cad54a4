"""Jupyter's static files, extracted once per image for nginx to serve.

Notebook's scripts (57 files, 1.6 MiB compressed) came from each student's
own server, under /nb/<course>/<student>/static/: no browser could reuse
them across students or courses, and each cost that server's CPU.
``nbh jupyter-static [IMAGE]`` (root: for the site's image, after it is
built or imported; a course's build does it for its own) extracts them into
static/<image id>/, which nginx serves under /_jupyter/<image id>/ to
anyone, immutable and precompressed (nginx/jupyter-static.conf). They are
the image's files: nothing in them is a student's.

An image is a course staff's input, so its files are read from `podman
export` of a container created (never run) from it, and only regular files
under Notebook's static folder and the labextensions folders are kept, of
known kinds, by names and sizes bounded here; no link nor device is made.
The folder is named by the image's id, which the image's content fixes: no
image writes where another image's pages read.

A start (jupyter_run) gives the container the folder's URL and the
fingerprint of the names extracted (the main bundle's and each extension's
entry, which webpack names by their content); the image's nbh_static uses
the URL only if its own files have the same fingerprint, so an image
tagged again since its extraction keeps its server's own files, as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from . import paths

# A start reads the record (for_start) and imports nothing more: what the
# extraction needs is imported by the extraction.

STATIC_ROOT = paths.DATA_DIR / "static"
# image name -> {"id", "fingerprint"}: what a start reads (world-readable).
RECORD = STATIC_ROOT / "images.json"
URL_PREFIX = "/_jupyter/"

# Where an image has them: <python>/site-packages/notebook/static/ and
# <prefix>/share/jupyter/labextensions/ (any prefix: conda's, a venv's, /usr).
_WANTED = (
    (r"(?:\./)?(?:[^/]+/)*(?:site|dist)-packages/notebook/static/(.+)", "static"),
    (r"(?:\./)?(?:[^/]+/)*share/jupyter/labextensions/(.+)", "labextensions"),
)
# What a page loads: scripts, styles, fonts, images, schemas. No page, no
# document a browser would run on the site's origin (an SVG is served
# sandboxed, nginx/jupyter-static.conf).
SUFFIXES = frozenset(("js", "mjs", "css", "json", "woff", "woff2", "ttf", "otf", "eot", "svg", "png",
                      "gif", "jpg", "jpeg", "ico", "wasm"))
_PART = r"[A-Za-z0-9@_+~-][A-Za-z0-9@._+~-]{0,127}"
MAX_FILES = 20_000
MAX_BYTES = 256 << 20
# Precompressed (nginx's gzip_static) when it saves, past this size.
COMPRESS = frozenset(("js", "mjs", "css", "json", "svg", "ttf", "otf", "eot", "wasm"))
COMPRESS_MIN = 512


class StaticError(Exception):
    pass


def target(member: str) -> str | None:
    """Where a file of the image's goes in its folder, or None (not kept)."""
    for pattern, under in _WANTED:
        found = re.fullmatch(pattern, member)
        if found:
            parts = found.group(1).split("/")
            if all(re.fullmatch(_PART, part) for part in parts) and parts[-1].rsplit(".", 1)[-1] in SUFFIXES \
                    and "." in parts[-1]:
                return "/".join([under, *parts])
    return None


def fingerprint(main_bundles: list[str], extensions: list[tuple[str, str]]) -> str:
    """The text the image's nbh_static computes from its own names."""
    import hashlib  # noqa: PLC0415

    names = [f"static/{name}" for name in main_bundles]
    names += [f"labextensions/{name}/{load}" for name, load in extensions]
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:32]


def folder_fingerprint(folder: Path) -> str:
    """What the page config of an image whose files these are would give."""
    static = folder / "static"
    main = [p.name for p in static.glob("main.*.js")] if static.is_dir() else []
    extensions = []
    for package in sorted((folder / "labextensions").glob("**/package.json")):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            meta = json.loads(package.read_text())
            load = meta["jupyterlab"]["_build"]["load"]
            if isinstance(meta.get("name"), str) and isinstance(load, str) and (package.parent / load).is_file():
                extensions.append((meta["name"], load))
    return fingerprint(main, extensions)


def unpack(stream, into: Path) -> int:
    """Keep what target() keeps of a tar stream, as plain files; their count.
    A kept name that is a link (or anything but a file, or a hard link to a
    file not kept) fails the whole: a page missing one file would not load,
    and without the extraction the server serves its own."""
    import shutil  # noqa: PLC0415
    import tarfile  # noqa: PLC0415

    count = size = 0
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            where = None if member.isdir() else target(member.name)
            if where is None:
                continue
            path = into / where
            if path.exists():
                continue  # a second copy of a name (another prefix's): the first stays
            if member.islnk():
                linked = target(member.linkname)
                if linked is None or not (into / linked).is_file():
                    raise StaticError(f"{member.name}: a hard link to a file not extracted")
            elif not member.isreg():
                raise StaticError(f"{member.name}: not a regular file")
            count += 1
            size += member.size
            if count > MAX_FILES or size > MAX_BYTES:
                raise StaticError(f"more than {MAX_FILES} files or {MAX_BYTES >> 20} MiB of static files")
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "xb") as out:  # x: never through a name already there
                if member.islnk():
                    with open(into / linked, "rb") as source:
                        shutil.copyfileobj(source, out)
                else:
                    shutil.copyfileobj(archive.extractfile(member), out)
            os.chmod(path, 0o644)
    return count


def precompress(folder: Path, earlier: Sequence[Path] = ()) -> None:
    """gzip's and brotli's best beside each file they shrink (foo.js.gz,
    foo.js.br), for nginx's gzip_static and brotli_static. A file that an
    earlier image's folder has under its name, byte for byte, becomes a hard
    link to it, with its compressed forms: a course's image built FROM the
    site's shares Notebook's files, and brotli's best costs 20 CPU-seconds
    an image. Links between folders of the same owner, read-only to all:
    removing one folder (nbh gc) leaves the others whole."""
    import filecmp  # noqa: PLC0415
    import gzip  # noqa: PLC0415

    import brotli  # noqa: PLC0415

    for path in sorted(folder.rglob("*")):
        if not (path.is_file() and path.suffix[1:] in COMPRESS and path.stat().st_size >= COMPRESS_MIN):
            continue
        name = path.relative_to(folder)
        same = next((other / name for other in earlier if (other / name).is_file()
                     and not (other / name).is_symlink() and filecmp.cmp(other / name, path, shallow=False)), None)
        if same is not None:
            _link(same, path)
        data = path.read_bytes()
        smallest = len(data)
        for suffix, pack in ((".gz", lambda d: gzip.compress(d, compresslevel=9, mtime=0)),
                             (".br", lambda d: brotli.compress(d, quality=11))):
            packed_path = path.parent / (path.name + suffix)
            known = same.parent / (same.name + suffix) if same is not None else None
            if known is not None and known.is_file() and not known.is_symlink():
                _link(known, packed_path)
                smallest = min(smallest, known.stat().st_size)
                continue
            packed = pack(data)
            if len(packed) < smallest:  # brotli where it beats gzip, gzip where it saves
                packed_path.write_bytes(packed)
                os.chmod(packed_path, 0o644)
                smallest = len(packed)


def _link(source: Path, path: Path) -> None:
    """path becomes a hard link to source (through a new name: never onto an open file)."""
    temporary = path.parent / f".{path.name}.link"
    os.link(source, temporary, follow_symlinks=False)
    os.replace(temporary, path)


def image_id(image: str) -> str:
    from . import podman  # noqa: PLC0415

    found = podman.run(["image", "inspect", "--format", "{{.Id}}", image])
    found_id = found.stdout.strip()
    if found.returncode != 0 or not re.fullmatch(r"[0-9a-f]{64}", found_id):
        raise StaticError(f"no image {image} in the servers' storage")
    return found_id


def extract(image: str) -> dict:
    """The image's static files in STATIC_ROOT/<id>/ (once per id), and the
    record a start reads. As root."""
    from . import files  # noqa: PLC0415

    the_id = image_id(image)
    folder = STATIC_ROOT / the_id
    STATIC_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
    with _locked():
        if not folder.is_dir():
            _extract_into(folder, image, the_id)
        entry = {"id": the_id, "fingerprint": folder_fingerprint(folder)}
        record = read_record()
        record[image] = entry
        files.replace_text(RECORD, json.dumps(record, indent=1, sort_keys=True))
    return entry


@contextlib.contextmanager
def _locked():
    """One extraction or collection at a time (builds of several courses at
    once, `nbh gc`): each rewrites the record."""
    import fcntl  # noqa: PLC0415

    with open(STATIC_ROOT / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _extract_into(folder: Path, image: str, the_id: str) -> None:
    """The files, through a work folder that becomes `folder` once complete."""
    import shutil  # noqa: PLC0415
    import tarfile  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    from . import podman  # noqa: PLC0415

    work = Path(tempfile.mkdtemp(prefix=f".{the_id[:12]}.", dir=STATIC_ROOT))
    scratch = Path(tempfile.mkdtemp(prefix=".export.", dir=STATIC_ROOT))
    container = f"nbh-static-{the_id[:12]}-{os.getpid()}"
    try:
        created = podman.run(["create", "--pull=never", "--network=none", "--name", container, the_id, "true"])
        if created.returncode != 0:
            raise StaticError(f"podman create {image}: {created.stderr.strip()[-300:]}")
        # podman export opens its output by name (/dev/stdout too, which
        # the account may not): a file in a folder of the account's.
        os.chown(scratch, *_container_account())
        exported = podman.run(["export", "--output", f"{scratch}/image.tar", container], timeout=900)
        if exported.returncode != 0:
            raise StaticError(f"podman export {image}: {exported.stderr.strip()[-300:]}")
        try:
            fd = os.open(scratch / "image.tar", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as stream:
                count = unpack(stream, work)
        except (OSError, tarfile.TarError) as error:
            raise StaticError(f"reading {image}'s files: {error}") from None
        if count == 0 or not (work / "static").is_dir():
            raise StaticError(f"{image} has no Notebook static folder")
        precompress(work, [other for other in STATIC_ROOT.iterdir()
                           if re.fullmatch(r"[0-9a-f]{64}", other.name) and other.is_dir()])
        for path in (work, *work.rglob("*")):  # for nginx, whatever the umask (a build's is 0077)
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        os.rename(work, folder)
    finally:
        podman.run(["rm", "--force", "--ignore", container])
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _container_account() -> tuple[int, int]:
    import pwd  # noqa: PLC0415

    account = pwd.getpwnam("nbh-jupyter")
    return account.pw_uid, account.pw_gid


def read_record() -> dict:
    try:
        record = json.loads(RECORD.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def for_start(image: str) -> dict[str, str]:
    """The container's environment for the shared copy of its image's files
    (none: the server serves its own, as before)."""
    entry = read_record().get(image)
    if not isinstance(entry, dict):
        return {}
    the_id, print_ = entry.get("id"), entry.get("fingerprint")
    if not (isinstance(the_id, str) and re.fullmatch(r"[0-9a-f]{64}", the_id) and isinstance(print_, str)
            and re.fullmatch(r"[0-9a-f]{32}", print_)):
        return {}
    return {"NBH_STATIC_URL": f"{URL_PREFIX}{the_id}/", "NBH_STATIC_FINGERPRINT": print_}


def collect(dry_run: bool = False) -> list[str]:
    """The folders of images that are no longer in the servers' storage."""
    import shutil  # noqa: PLC0415

    from . import files, podman  # noqa: PLC0415

    listing = podman.run(["images", "--quiet", "--no-trunc"])
    if listing.returncode != 0:
        raise OSError(f"podman images failed: {listing.stderr.strip()[-300:]}")
    present = {line.strip().removeprefix("sha256:") for line in listing.stdout.split()}
    removed = []
    if not STATIC_ROOT.is_dir():
        return removed
    with _locked():
        for folder in STATIC_ROOT.iterdir():
            if folder.is_dir() and re.fullmatch(r"[0-9a-f]{64}", folder.name) and folder.name not in present:
                if not dry_run:
                    shutil.rmtree(folder)
                removed.append(f"static files of image {folder.name[:12]}")
        if removed and not dry_run:
            record = {name: entry for name, entry in read_record().items()
                      if isinstance(entry, dict) and entry.get("id") in present}
            files.replace_text(RECORD, json.dumps(record, indent=1, sort_keys=True))
    return removed
