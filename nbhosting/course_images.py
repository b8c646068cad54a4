"""A course's own image, built from the Containerfile its repository ships.

A course's Containerfile is its staff's input to the host, and a build that
escapes its container (buildah has had such bugs) must find nothing to
steal. ``nbh-course-build@<course>.service`` runs in three steps:

- ``prepare`` (root, outside the unit's sandbox): checks the Containerfile
  (containerfile.py), exports the site's base image from the servers'
  storage into an archive the builds may read (once per image id), and
  writes the build's plan where the build reads it and cannot write;
- ``build`` (account nbh-build, its own image storage per course, in a
  mount namespace without the host's secrets, workspaces, sockets or any
  course but this one, read-only, and without network): ``podman build``
  ``FROM`` the base image (build argument ``NBH_BASE_IMAGE``), then saves
  the image into an archive: all it hands root, which trusts nothing else
  of it;
- ``install`` (root): checks the archive (a regular file of the builds'
  account, one image of the planned name, no name nor link out of it in
  the tar), loads it into the servers' storage and records it in
  ``builds/<course>.json``: a course whose image setting is "course" starts
  its next servers from it. Running servers keep the image they started with.

With ``limits.build_disk_max``, a unit before them (``disk``, root,
nbh-course-disk@<course>.service, pulled in by a drop-in of `nbh setup`)
makes the course's build disk and mounts it over the build storage until
the build ends: a build that fills it fails alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from . import config, containerfile, courses, disks, files, jupyter_static, nofollow, paths, podman
from .jupyter_run import DEFAULT_IMAGE, PODMAN

REPOSITORY = "localhost/nbhosting/course-"
BUILD_USER = "nbh-build"
# The builds' folder, laid out by tmpfiles.d: base/, the base image's
# archives (root's; the builds read them), and courses/<course>, the builds'
# account's (the unit's StateDirectory=: image storage, the built archive).
BUILD_ROOT = Path("/var/lib/nbh-build")
BASE_ARCHIVES = BUILD_ROOT / "base"
COURSES = BUILD_ROOT / "courses"
# disks/<course>.ext4: the course's build storage when limits.build_disk_max
# is set (root's; nbh-course-build@.service mounts it over courses/<course>).
BUILD_DISKS = BUILD_ROOT / "disks"
# The plans, root's: the builds' account reads its own and writes none.
PLANS = Path("/run/nbh-build")
BUILT = "built.tar"
# A built image larger than this is refused (the archive is uncompressed).
MAX_ARCHIVE = 16 << 30


def base_image() -> str:
    return os.environ.get("NBH_IMAGE") or DEFAULT_IMAGE


def containerfile_digest(course: courses.Course) -> str | None:
    """What autopull compares with the last build, to know whether to build again."""
    relative = courses.containerfile(course)
    if relative is None:
        return None
    return hashlib.sha256((course.path / relative).read_bytes()).hexdigest()


def _plan_path(name: str) -> Path:
    """Beside the build's runtime folder, in root's: what the build may not
    change, since root's install step acts on it."""
    return PLANS / f"{name}.plan.json"


def _read_plan(name: str) -> dict:
    try:
        plan = json.loads(_plan_path(name).read_text())
    except (OSError, ValueError) as error:
        raise courses.CourseError(f"no plan of the build (its prepare step): {error}") from None
    if not isinstance(plan, dict) or plan.get("course") != name:
        raise courses.CourseError(f"the build's plan is not for {name!r}")
    return plan


def _checked_run(argv: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, stdin=kwargs.pop("stdin", subprocess.DEVNULL), check=False, **kwargs)
    if result.returncode != 0:
        raise courses.CourseError(f"{what} failed (exit status {result.returncode}); "
                                  "the previous image stays in use")
    return result


def export_base(image: str) -> Path:
    """The base image as an archive the builds may read, made once per image id."""
    found = podman.run(["image", "inspect", "--format", "{{.Id}}", image])
    image_id = found.stdout.strip()
    if found.returncode != 0 or not image_id.isalnum():
        raise courses.CourseError(f"no base image {image} in the servers' storage")
    archive = BASE_ARCHIVES / f"{image_id}.tar"
    if archive.exists():
        return archive
    for old in BASE_ARCHIVES.glob("*.tar"):
        old.unlink()  # the base image changed: builds load the new one
    print(f"exporting the base image {image} ({image_id[:12]}) for the builds", flush=True)
    fd, aside = tempfile.mkstemp(prefix=f".{image_id}.", suffix=".new", dir=BASE_ARCHIVES)
    try:
        with os.fdopen(fd, "wb") as out:
            _checked_run(podman.argv(["save", image]), "exporting the base image", stdout=out)
        os.chmod(aside, 0o644)
        os.replace(aside, archive)
    finally:
        Path(aside).unlink(missing_ok=True)
    return archive


def prepare(name: str) -> str:
    """Step 1, as root: check, export the base, plan. The image's name."""
    course = courses.load(name)
    relative = courses.containerfile(course)
    if relative is None:
        raise courses.CourseError(f"course {name!r} ships no {' or '.join(courses.CONTAINERFILES)}")
    commit = courses.status(course).commit
    if commit is None:
        raise courses.CourseError(f"course {name!r} was never updated (nbh course update {name})")
    fd = nofollow.open_file(course.path.resolve(), relative)
    with os.fdopen(fd, "rb") as file:
        text = file.read()
    refused = containerfile.refusals(text.decode(errors="replace"))
    for reason in refused:
        print(f"refused: {relative}, {reason}", flush=True)
    if refused:
        raise courses.CourseError(f"{relative} asks for what a course's build may not have "
                                  "(see its log); nothing was built, the previous image stays in use")
    image = f"{REPOSITORY}{name}:{commit}"
    base = base_image()
    archive = export_base(base)
    plan = {"course": name, "image": image, "commit": commit, "base": base, "base_id": archive.stem,
            "base_archive": str(archive), "containerfile": relative,
            "digest": hashlib.sha256(text).hexdigest(), "context": str(course.path)}
    files.replace_text(_plan_path(name), json.dumps(plan))
    print(f"building {image} from {relative} at {commit}, FROM {base}", flush=True)
    return image


def build_disk(name: str) -> str:
    """As root, before the build (nbh-course-disk@, in the host's mount
    namespace): the course's build disk of limits.build_disk_max bytes,
    mounted over its build storage until the build unit ends. Mounted once
    for all the build's steps: two mounts of one ext4 image (one per step's
    namespace, as MountImages= would make) would each cache what the other
    writes. The storage is a cache (the base image, loaded again): a disk of
    another size is made anew, empty, and the folder's content goes when the
    course gets its first disk."""
    courses.load(name)  # a course, named as names.py allows
    try:
        size = config.load().limits.build_disk_max_bytes
    except config.ConfigError as error:
        raise courses.CourseError(str(error)) from None
    storage, image = COURSES / name, BUILD_DISKS / f"{name}.ext4"
    if os.path.ismount(storage):  # an unmount that found it busy: this course's disk, as it is
        return f"the build storage of {name} is its disk, mounted already"
    account = pwd.getpwnam(BUILD_USER)
    try:
        storage.mkdir(mode=0o700)
        os.chown(storage, account.pw_uid, account.pw_gid)
    except FileExistsError:
        pass
    try:
        current = image.stat().st_size
    except FileNotFoundError:
        current = None
    said = f"{size} bytes"
    if current != size:
        if current is None:  # the folder was the storage: what it holds would lie hidden under the disk
            for entry in list(storage.iterdir()):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        else:
            image.unlink()
        if not size:
            return f"the build storage of {name} is a folder again (limits.build_disk_max)"
        disks.make_image(image, size, (account.pw_uid, account.pw_gid))
        said = f"a new disk of its own of {size} bytes (limits.build_disk_max)"
    disks.mount_image(image, storage)
    return f"the build storage of {name} is {said}"


def build(name: str) -> str:
    """Step 2, as the builds' account in the unit's sandbox: build and save."""
    plan = _read_plan(name)
    have = subprocess.run([PODMAN, "image", "inspect", "--format", "{{.Id}}", plan["base"]],
                          capture_output=True, text=True, check=False).stdout.strip()
    if have != plan["base_id"]:
        print(f"loading the base image {plan['base']} into this course's build storage", flush=True)
        _checked_run([PODMAN, "load", "--quiet", "--input", plan["base_archive"]], "loading the base image",
                     stdout=subprocess.DEVNULL)
    argv = [PODMAN, "build", "--pull=never", "--network=none", "--layers=false",
            "--build-arg", f"NBH_BASE_IMAGE={plan['base']}",
            "--file", str(Path(plan["context"]) / plan["containerfile"]),
            "--tag", plan["image"], "--", plan["context"]]
    # Its output goes to the unit's journal, where the staff pages follow it.
    _checked_run(argv, "podman build", stdout=sys.stdout, stderr=subprocess.STDOUT)
    archive = Path(os.environ["STATE_DIRECTORY"]) / BUILT
    archive.unlink(missing_ok=True)
    _checked_run([PODMAN, "save", "--output", str(archive), plan["image"]], "saving the image")
    subprocess.run([PODMAN, "rmi", plan["image"]], stdout=subprocess.DEVNULL, check=False)  # kept: the base
    return plan["image"]


def check_archive(fd: int, image: str, owner: int) -> None:
    """A docker-archive of exactly this image, a file of this owner: files,
    folders and links, none leading out of the archive. CourseError otherwise."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != owner:
        raise courses.CourseError("the built archive is not a file of the builds' account")
    if info.st_size > MAX_ARCHIVE:
        raise courses.CourseError(f"the built image is larger than {MAX_ARCHIVE >> 30} GiB")
    manifest = None
    try:
        with os.fdopen(os.dup(fd), "rb") as file, tarfile.open(fileobj=file, mode="r:") as archive:
            for member in archive:
                name = os.path.normpath(member.name)
                # podman's docker-archive links a layer's legacy name to its file
                target = os.path.normpath(os.path.join(os.path.dirname(name), member.linkname))
                inside = not name.startswith(("/", "..")) and (
                    member.isfile() or member.isdir() or member.issym() and not target.startswith(("/", "..")))
                if not inside:
                    raise courses.CourseError(f"the built archive holds {member.name!r}, not a file in it")
                if name == "manifest.json" and member.size < 1 << 20:
                    manifest = json.load(archive.extractfile(member))
    except (tarfile.TarError, ValueError) as error:
        raise courses.CourseError(f"the built archive cannot be read: {error}") from None
    if not (isinstance(manifest, list) and len(manifest) == 1
            and manifest[0].get("RepoTags") in ([image], [image.removeprefix("localhost/")])):
        raise courses.CourseError(f"the built archive is not the one image {image}")
    os.lseek(fd, 0, os.SEEK_SET)


def install(name: str) -> str:
    """Step 3, as root: check the archive, load it for the servers, record it."""
    plan = _read_plan(name)
    folder = os.open(COURSES / name, nofollow.DIR_FLAGS)
    try:
        fd = os.open(BUILT, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
        try:
            check_archive(fd, plan["image"], pwd.getpwnam(BUILD_USER).pw_uid)
            _checked_run(podman.argv(["load", "--quiet"]), "loading the built image", stdin=fd,
                         stdout=subprocess.DEVNULL)
        finally:
            os.close(fd)
        os.unlink(BUILT, dir_fd=folder)
    finally:
        os.close(folder)
    if podman.run(["image", "exists", plan["image"]]).returncode != 0:
        raise courses.CourseError(f"{plan['image']} is not in the servers' storage after its load")
    record = {"image": plan["image"], "commit": plan["commit"], "containerfile": plan["digest"],
              "time": time.time()}
    paths.BUILDS_DIR.mkdir(parents=True, exist_ok=True)
    files.replace_text(paths.BUILDS_DIR / f"{name}.json", json.dumps(record))
    try:  # for nginx: without, the course's servers serve their own
        jupyter_static.extract(plan["image"])
    except (jupyter_static.StaticError, OSError) as error:
        print(f"the image's static files stay its servers' own: {error}", flush=True)
    return plan["image"]


def in_use_by_settings() -> set[str]:
    """The built images that a course's image setting names."""
    used = set()
    for course in courses.all_courses():
        record = courses.build_record(course.name)
        if course.image == courses.OWN_IMAGE and record:
            used.add(record["image"])
    return used


def collect(dry_run: bool = False) -> list[str]:
    """Remove course images that no setting and no container (running or not) uses."""
    listing = podman.run(["images", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
                          f"reference={REPOSITORY}*"])
    if listing.returncode != 0:
        raise OSError(f"podman images failed: {listing.stderr.strip()[-300:]}")
    containers = podman.run(["ps", "--all", "--format", "{{.Image}}"])
    if containers.returncode != 0:
        raise OSError(f"podman ps failed: {containers.stderr.strip()[-300:]}")
    keep = in_use_by_settings() | set(containers.stdout.split())
    removed = []
    for image in listing.stdout.split():
        if image.startswith(REPOSITORY) and image not in keep:
            if not dry_run:
                podman.run(["rmi", "--ignore", image])
            removed.append(f"image {image}")
    if removed and not dry_run:
        # Their layers, and those of a build that tagged the same name again.
        podman.run(["image", "prune", "--force"])
    return removed
