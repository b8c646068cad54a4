"""The trees' cache (devtools/releases.py), without a sandbox: a new list of
packages leaves a new tree, and only the newest few stay on the disk."""

from __future__ import annotations

import os

from devtools import releases


def test_only_the_newest_trees_of_a_release_stay(tmp_path, monkeypatch):
    monkeypatch.setattr(releases, "CACHE", tmp_path)
    names = [f"trixie-tree-{n:012x}.tar" for n in range(4)]
    for age, name in enumerate(names):
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, (1_000_000 + age, 1_000_000 + age))
    (tmp_path / "bookworm-tree-000000000000.tar").write_bytes(b"")  # the other release's: not counted
    (tmp_path / "jupyter-test-0000000000000000.tar").write_bytes(b"")
    releases.prune("trixie")
    kept = sorted(path.name for path in tmp_path.iterdir())
    assert kept == ["bookworm-tree-000000000000.tar", "jupyter-test-0000000000000000.tar",
                    *names[-releases.KEPT_TREES:]]
