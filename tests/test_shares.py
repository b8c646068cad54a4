"""Shared pages as the front end reads them (nbhosting/shares.py), and the
store's trust in what a student's unit writes to the journal (follower)."""

from __future__ import annotations

import datetime
import os

import pytest

from nbhosting import follower, paths, shares, tokens
from nbhosting.names import Instance
from nbhosting.web.base import FilePieces

ID = "a" * 26
PAGE = "b" * 26


@pytest.fixture
def shared(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "SHARED_DIR", tmp_path)
    folder = tmp_path / "python-mooc" / ID
    folder.mkdir(parents=True)
    (folder / f"{PAGE}.html").write_text("<p>shared</p>")
    return folder


def read_page(course: str, share_id: str, page: str) -> bytes:
    """As nbh-web sends it (web/shared.py)."""
    return b"".join(FilePieces(*shares.open_page_within(course, share_id, page)))


def test_a_page_is_read(shared):
    assert read_page("python-mooc", ID, PAGE) == b"<p>shared</p>"


@pytest.mark.parametrize("course, share_id, page", [
    ("python-mooc", ID, "c" * 26),  # never shared, or withdrawn
    ("python-mooc", "c" * 26, PAGE),
    ("other", ID, PAGE),
    ("..", ID, PAGE), ("python-mooc", "..", PAGE), ("python-mooc", ID, ".."),
    ("python-mooc", ID, PAGE + ".html"), ("python-mooc", ID, PAGE.upper()), ("python-mooc", ID[:-1], PAGE),
    ("python-mooc", ID, "index"),
])
def test_anything_else_is_no_page(shared, course, share_id, page):
    with pytest.raises(shares.NoSuchPage):
        read_page(course, share_id, page)


def test_a_link_written_by_the_student_is_not_followed(shared, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("host secret")
    link = "d" * 26
    os.symlink(secret, shared / f"{link}.html")
    with pytest.raises(shares.NoSuchPage, match="refused"):
        read_page("python-mooc", ID, link)
    (shared / ("e" * 26 + ".html")).mkdir()
    with pytest.raises(shares.NoSuchPage):
        read_page("python-mooc", ID, "e" * 26)


def test_share_ids_differ_per_pair_and_hide_the_names():
    secret = b"s" * 32
    one = tokens.share_id(secret, Instance("python-mooc", "alice"))
    assert tokens.SHARE_ID_RE.fullmatch(one)
    assert one == tokens.share_id(secret, Instance("python-mooc", "alice"))
    assert one != tokens.share_id(secret, Instance("python-mooc", "bob"))
    assert one != tokens.share_id(secret, Instance("other", "alice"))
    assert one != tokens.share_id(b"t" * 32, Instance("python-mooc", "alice"))
    assert "alice" not in one


def entry(**fields) -> dict:
    return {"__REALTIME_TIMESTAMP": datetime.datetime(2026, 11, 29, tzinfo=datetime.timezone.utc), **fields}


def test_a_student_unit_speaks_only_for_its_own_pair():
    unit = Instance("python-mooc", "alice").service
    forged = follower.as_event(entry(_SYSTEMD_UNIT=unit, NBH_EVENT="reset", NBH_COURSE="other",
                                     NBH_STUDENT="bob", NBH_NOTEBOOK="w1/a.ipynb"))
    assert (forged.event, forged.course, forged.student, forged.notebook) == \
        ("reset", "python-mooc", "alice", "w1/a.ipynb")
    # events that only the front end or the host's services make
    for event in ("open", "cull", "refused", "launch", "staff-login", "sample"):
        assert follower.as_event(entry(_SYSTEMD_UNIT=unit, NBH_EVENT=event)) is None
    assert follower.as_event(entry(_SYSTEMD_UNIT="nbh-jupyter@garbage.service", NBH_EVENT="reset")) is None
    # the front end's own events are as they say
    open_event = follower.as_event(entry(_SYSTEMD_UNIT="nbh-web.service", NBH_EVENT="open",
                                         NBH_COURSE="python-mooc", NBH_STUDENT="bob"))
    assert (open_event.course, open_event.student) == ("python-mooc", "bob")


def test_a_file_sent_in_pieces_is_cut_at_its_size_and_closed_read_or_not(tmp_path):
    """FilePieces (web/base.py): a view refused before the render read the
    notebook (busy, too large) must not leave its descriptor open."""
    (tmp_path / "page").write_bytes(b"x" * 10)
    fd = os.open(tmp_path / "page", os.O_RDONLY)
    assert b"".join(FilePieces(fd, 4)) == b"xxxx"
    with pytest.raises(OSError):
        os.fstat(fd)  # closed at the end
    fd = os.open(tmp_path / "page", os.O_RDONLY)
    pieces = FilePieces(fd, 10)
    pieces.close()
    pieces.close()  # once only
    with pytest.raises(OSError):
        os.fstat(fd)
    assert next(pieces, b"") == b""
