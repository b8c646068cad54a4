"""The names LTI launches give students (nbhosting/ltinames.py): what is
kept of the claims, and the per-course cache the staff pages read. The
launch that keeps them and the page that shows them: test_lti_launch.py."""

from __future__ import annotations

import os

from nbhosting import ltinames
from nbhosting.names import Instance


def test_a_name_is_the_name_claim_or_given_and_family_printable_and_short():
    assert ltinames.from_claims({"name": "  Ada\n\tLovelace "}) == "Ada Lovelace"
    assert ltinames.from_claims({"given_name": "Grace", "family_name": "Hopper"}) == "Grace Hopper"
    assert ltinames.from_claims({"name": "", "family_name": "Hopper"}) == "Hopper"
    assert ltinames.from_claims({"name": ["not", "text"], "given_name": 3}) == ""
    assert ltinames.from_claims({}) == ""
    assert ltinames.from_claims({"name": "a\x00b\x1b[31mc"}) == "ab[31mc"
    assert len(ltinames.from_claims({"name": "x" * 1000})) == ltinames.NAME_MAX


def test_names_are_kept_when_they_change_and_read_again_when_the_course_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(ltinames, "NAMES_DIR", tmp_path)
    alice, bob = Instance("c1", "lti.fun.aaaa"), Instance("c1", "lti.fun.bbbb")
    names = ltinames.CourseNames(tmp_path)
    assert names.of("c1") == {}
    assert ltinames.remember(alice, "Alice") and not ltinames.remember(alice, "Alice")
    assert not ltinames.remember(bob, "")
    assert names.of("c1") == {"lti.fun.aaaa": "Alice"}
    assert os.stat(tmp_path / "c1").st_mode & 0o777 == 0o700
    assert os.stat(tmp_path / "c1" / "lti.fun.aaaa").st_mode & 0o777 == 0o600
    assert names.of("c1") is not names.of("c1")  # changed a moment ago: read again (the clock's tick)
    os.utime(tmp_path / "c1", ns=(0, 10**18))
    cached = names.of("c1")
    assert names.of("c1") is cached  # nothing changed since, long enough ago: not read again
    ltinames.remember(bob, "Bob")
    ltinames.remember(alice, "Alice L.")
    assert names.of("c1") == {"lti.fun.aaaa": "Alice L.", "lti.fun.bbbb": "Bob"}
    (tmp_path / "c1" / "link").symlink_to("/etc/passwd")
    os.utime(tmp_path / "c1", ns=(0, 0))
    assert "link" not in names.of("c1")  # only files, read without following a link
