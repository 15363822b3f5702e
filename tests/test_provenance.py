"""A run's provenance (summary.json's `provenance`): versions from the installed packages, the
commit read from the checkout's .git files (loose ref, packed ref, detached HEAD, worktree)."""

from __future__ import annotations

import platform
from pathlib import Path

from nevisbench.run.store.provenance import git_commit, provenance

SHA = "0123456789abcdef0123456789abcdef01234567"


def _module(root: Path) -> Path:
    module = root / "pkg" / "mod.py"
    module.parent.mkdir(parents=True)
    module.write_text("")
    return module


def test_commit_is_read_from_loose_and_packed_refs_and_a_detached_head(tmp_path: Path):
    git = tmp_path / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    module = _module(tmp_path)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "refs" / "heads" / "main").write_text(SHA + "\n")
    assert git_commit(module) == SHA
    (git / "refs" / "heads" / "main").unlink()
    (git / "packed-refs").write_text(f"# pack-refs with: peeled\n{SHA[::-1]} refs/heads/main\n")
    assert git_commit(module) == SHA[::-1]
    (git / "HEAD").write_text(SHA + "\n")
    assert git_commit(module) == SHA


def test_worktree_commit_and_no_repository(tmp_path: Path):
    main = tmp_path / "main" / ".git"
    (main / "worktrees" / "wt").mkdir(parents=True)
    (main / "refs" / "heads").mkdir(parents=True)
    (main / "refs" / "heads" / "topic").write_text(SHA)
    (main / "worktrees" / "wt" / "HEAD").write_text("ref: refs/heads/topic\n")
    (main / "worktrees" / "wt" / "commondir").write_text("../..\n")
    tree = tmp_path / "wt"
    tree.mkdir()
    (tree / ".git").write_text(f"gitdir: {main / 'worktrees' / 'wt'}\n")
    assert git_commit(_module(tree)) == SHA
    assert git_commit(Path("/")) is None


def test_provenance_names_versions_and_device():
    found = provenance("cpu", 1)
    assert found["python"] == platform.python_version() and found["torch"] and found["lightning"]
    assert found["device"]["accelerator"] == "cpu" and found["device"]["devices"] == 1 and "cuda" not in found["device"]
