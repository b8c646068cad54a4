"""The check of a built image's archive before root loads it for the servers."""

import io
import json
import os
import tarfile

import pytest

from nbhosting import course_images
from nbhosting.courses import CourseError

IMAGE = "localhost/nbhosting/course-c:abc1234"


def archive(tmp_path, members: list[tarfile.TarInfo], manifest: object) -> int:
    path = tmp_path / "built.tar"
    with tarfile.open(path, "w") as tar:
        body = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
        for member in members:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return os.open(path, os.O_RDONLY)


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 1) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, size if kind == tarfile.REGTYPE else 0
    return info


GOOD = [member("abc.tar"), member("legacy", tarfile.DIRTYPE), member("legacy/layer.tar", tarfile.SYMTYPE, "../abc.tar")]


def test_podmans_archive_of_the_planned_image_passes(tmp_path):
    fd = archive(tmp_path, GOOD, [{"Config": "c.json", "RepoTags": [IMAGE], "Layers": ["abc.tar"]}])
    course_images.check_archive(fd, IMAGE, os.getuid())
    assert os.lseek(fd, 0, os.SEEK_CUR) == 0  # ready for podman load


@pytest.mark.parametrize("members, manifest, words", [
    (GOOD, [{"RepoTags": ["localhost/nbhosting/course-other:abc1234"]}], "not the one image"),
    (GOOD, [{"RepoTags": [IMAGE]}, {"RepoTags": [IMAGE]}], "not the one image"),
    (GOOD, {"RepoTags": [IMAGE]}, "not the one image"),
    ([member("../outside")], [{"RepoTags": [IMAGE]}], "holds '../outside'"),
    ([member("/etc/passwd")], [{"RepoTags": [IMAGE]}], "holds '/etc/passwd'"),
    ([member("l", tarfile.SYMTYPE, "/etc/nbhosting/secret")], [{"RepoTags": [IMAGE]}], "holds 'l'"),
    ([member("a/l", tarfile.SYMTYPE, "../../x")], [{"RepoTags": [IMAGE]}], "holds 'a/l'"),
    ([member("h", tarfile.LNKTYPE, "abc.tar")], [{"RepoTags": [IMAGE]}], "holds 'h'"),
    ([member("dev", tarfile.CHRTYPE)], [{"RepoTags": [IMAGE]}], "holds 'dev'"),
])
def test_anything_else_is_refused(tmp_path, members, manifest, words):
    fd = archive(tmp_path, members, manifest)
    with pytest.raises(CourseError, match=words):
        course_images.check_archive(fd, IMAGE, os.getuid())


def test_an_archive_of_another_owner_or_not_a_tar_is_refused(tmp_path):
    fd = archive(tmp_path, GOOD, [{"RepoTags": [IMAGE]}])
    with pytest.raises(CourseError, match="not a file of the builds' account"):
        course_images.check_archive(fd, IMAGE, os.getuid() + 1)
    (tmp_path / "junk").write_bytes(b"\0not a tar" * 100)
    with pytest.raises(CourseError, match="cannot be read|not the one image"):
        course_images.check_archive(os.open(tmp_path / "junk", os.O_RDONLY), IMAGE, os.getuid())
