"""Per-student origins' pure logic: the keys, the links, the mode's flag
(the sandbox's tests are in test_student_origins.py)."""

from __future__ import annotations

import os
import re

import pytest

from nbhosting import config, origins, tokens
from nbhosting.names import Instance

SECRET = b"s" * 32
ALICE, BOB = Instance("python", "alice"), Instance("python", "bob")


def test_a_key_is_an_opaque_host_label_of_the_pair():
    key = tokens.origin_key(SECRET, ALICE)
    assert re.fullmatch(r"[a-z2-7]{26}", key)
    assert key == tokens.origin_key(SECRET, ALICE)  # the same at every entry
    assert key not in (tokens.origin_key(SECRET, BOB), tokens.origin_key(b"t" * 32, ALICE),
                       tokens.origin_key(SECRET, Instance("other", "alice")))
    assert key != tokens.share_id(SECRET, ALICE)  # not the address of the pair's shared pages


@pytest.fixture
def keys(tmp_path, monkeypatch):
    monkeypatch.setattr(origins, "KEYS_DIR", tmp_path)
    return tmp_path


def test_the_link_leads_to_the_pairs_socket_and_is_mended(keys):
    origins.link(ALICE, "k" * 26)
    link = keys / f"{'k' * 26}.sock"
    assert os.readlink(link) == ALICE.listen_socket
    origins.link(ALICE, "k" * 26)  # again: unchanged
    os.unlink(link)
    os.symlink("/elsewhere", link)  # wrong (not that a key could change pair): replaced
    origins.link(ALICE, "k" * 26)
    assert os.readlink(link) == ALICE.listen_socket
    assert sorted(p.name for p in keys.iterdir()) == [f"{'k' * 26}.sock"]  # no temporary left


def test_setup_writes_the_flag_that_nginx_and_the_front_end_read(tmp_path, monkeypatch):
    monkeypatch.setattr(origins, "MODE_FLAG", tmp_path / "student-origins")
    single, per_student = config.Web(), config.Web(student_origin="https://{key}.nb.example.org")
    origins.check_mode(single)
    with pytest.raises(origins.ModeMismatch, match="run `nbh setup`"):
        origins.check_mode(per_student)
    assert origins.write_mode(per_student) is True
    assert origins.write_mode(per_student) is False
    origins.check_mode(per_student)
    with pytest.raises(origins.ModeMismatch, match="is not set"):
        origins.check_mode(single)
    assert origins.write_mode(single) is True
    assert not origins.MODE_FLAG.exists()
