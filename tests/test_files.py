"""nbhosting/files.py: a file replaced whole, or not at all."""

from __future__ import annotations

import os
import stat

import pytest

from nbhosting import files


def test_a_new_file_has_its_text_and_mode_whatever_the_umask(tmp_path):
    path = tmp_path / "settings.toml"
    old = os.umask(0o077)
    try:
        files.replace_text(path, "x = 1\n", 0o644)
    finally:
        os.umask(old)
    assert path.read_text() == "x = 1\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["settings.toml"]  # nothing aside is left


def test_an_owner_and_a_mode_no_one_else_may_read(tmp_path):
    path = tmp_path / "secret"
    files.replace_text(path, "s3cret\n", 0o440, owner=(os.getuid(), os.getgid()))
    info = path.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o440, os.getuid(), os.getgid())
    files.replace_text(path, "new\n", 0o440)  # a read-only file is replaced, not written into
    assert path.read_text() == "new\n"


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_aside(tmp_path):
    path = tmp_path / "platform.toml"
    path.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):
        files.replace_text(path, "half\ud800", 0o644)  # not encodable: fails mid-write
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["platform.toml"]


def test_a_link_at_the_path_is_replaced_and_what_it_pointed_to_is_untouched(tmp_path):
    """A folder's writer could have put a link where the file goes: the
    rename replaces the link itself."""
    target = tmp_path / "elsewhere"
    target.write_text("not yours\n")
    path = tmp_path / "accounts.json"
    path.symlink_to(target)
    files.replace_text(path, "{}\n", 0o640)
    assert not path.is_symlink() and path.read_text() == "{}\n"
    assert target.read_text() == "not yours\n"
