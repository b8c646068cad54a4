"""Server tokens: derived from the host secret and the pair's generation."""

import hashlib
import hmac
import os
import stat

import pytest

from nbhosting import tokens
from nbhosting.names import Instance

SECRET = b"s" * 64
ALICE = Instance("python-mooc", "alice")


def test_generation_zero_is_the_token_of_before():
    before = hmac.new(SECRET, b"jupyter-token:python-mooc/alice", hashlib.sha256).hexdigest()
    assert tokens.server_token(SECRET, ALICE.path) == before
    assert tokens.server_token(SECRET, ALICE.path, 0) == before


def test_every_generation_and_pair_has_its_own_token():
    seen = {tokens.server_token(SECRET, path, generation)
            for path in ("python-mooc/alice", "python-mooc/bob", "other/alice") for generation in range(4)}
    assert len(seen) == 12


def test_a_missing_file_or_course_folder_is_generation_zero(tmp_path):
    assert tokens.generation(ALICE, tmp_path / "none") == 0
    (tmp_path / "python-mooc").mkdir()
    assert tokens.generation(ALICE, tmp_path) == 0


@pytest.mark.parametrize("text", ["", "x", "-1", "1.5", "²", "1" * 19])
def test_a_malformed_file_is_an_error_naming_it(tmp_path, text):
    path = tmp_path / "python-mooc" / "alice"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(tokens.TokenError, match=str(path)):
        tokens.generation(ALICE, tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_bump_writes_the_next_generation_readable_by_the_group(tmp_path):
    store = tmp_path / "tokens"
    old = tokens.server_token(SECRET, ALICE.path, tokens.generation(ALICE, store))
    assert tokens.bump_generation(ALICE, 4242, store) == 1
    assert tokens.bump_generation(ALICE, 4242, store) == 2
    assert tokens.generation(ALICE, store) == 2
    assert tokens.generation(Instance("python-mooc", "bob"), store) == 0
    for path, mode in ((store, 0o750), (store / "python-mooc", 0o750), (store / "python-mooc" / "alice", 0o640)):
        info = path.stat()
        assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (mode, 0, 4242), path
    assert sorted(p.name for p in (store / "python-mooc").iterdir()) == ["alice"]  # nothing left aside
    new = tokens.server_token(SECRET, ALICE.path, tokens.generation(ALICE, store))
    assert new != old


def test_derive_writes_the_pairs_values_and_follows_nothing_planted(tmp_path, monkeypatch):
    """nbh-jupyter-run --derive runs as root in a folder the containers'
    account can write: a link planted there is replaced, never followed."""
    from nbhosting import jupyter_run

    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / tokens.SECRET_CREDENTIAL).write_bytes(SECRET)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("root's file")
    (runtime / "token").symlink_to(victim)
    (runtime / "share-id").write_text("planted")
    jupyter_run.derive(ALICE, str(runtime))
    assert victim.read_text() == "root's file"
    assert sorted(path.name for path in runtime.iterdir()) == sorted(jupyter_run.DERIVED)
    assert (runtime / "token").read_text() == tokens.server_token(SECRET, ALICE.path)
    assert (runtime / "share-id").read_text() == tokens.share_id(SECRET, ALICE)
    assert (runtime / "notary-secret").read_text() == tokens.notary_secret(SECRET, ALICE)
    for path in runtime.iterdir():
        assert not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) == 0o400
    # a link in place of the folder itself is refused
    (tmp_path / "linked").symlink_to(runtime)
    with pytest.raises(OSError):
        jupyter_run.derive(ALICE, str(tmp_path / "linked"))


def test_no_use_of_the_host_secret_can_pass_for_another():
    """Each derived value is an HMAC of its use's label and a message: no
    label may begin another, or a message of one use could forge another's."""
    labels = list(tokens.LABELS.values())
    assert len(set(labels)) == len(labels)
    for one in labels:
        for other in labels:
            assert one == other or not other.startswith(one), (one, other)


def test_derived_values_are_those_running_servers_and_sessions_hold():
    """The labels are part of every token, link and cookie already given:
    the values are pinned, so that moving code never changes them."""
    secret = b"s" * 32
    instance = Instance("python-mooc", "student-1")
    derived = [tokens.server_token(secret, instance.path), tokens.server_token(secret, instance.path, 2),
               tokens.share_id(secret, instance), tokens.origin_key(secret, instance),
               tokens.notary_secret(secret, instance), tokens.derive(secret, "ticket", b"x").hex(),
               tokens.derive(secret, "staff-cookies").hex(), tokens.derive(secret, "lti-state").hex()]
    assert [value[:26] for value in derived] == [
        "77747c1380b58ace129b584542", "8df05f67362c598413896f5bec", "ynhchu5np7rsy3mws53ujkubo4",
        "qcxedultbvp6x567k23dfvflgu", "62fa0c341082c39a693b93a283", "2239692bc8f3d77eb65ea33421",
        "2aa4f4998beaa15d0ff9c88058", "ae22936c1d9148f4dfcbb9c210"]
