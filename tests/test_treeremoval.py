"""``remove_tree``: a state directory goes whole, links are not followed, and without ``rm`` the
Python fallback does the same; a big one is shared out between several ``rm`` at once."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from netemu import treeremoval
from netemu.treeremoval import remove_tree


def tree(root: Path, outside: Path) -> Path:
    directory = root / "cluster"
    for i in range(50):
        volume = directory / "pods" / f"pod-{i}" / "volumes" / "sa"
        volume.mkdir(parents=True)
        (volume / "token").write_text("t")
        (directory / "pods" / f"pod-{i}" / "hosts").write_text("h")
    (directory / "link-to-outside").symlink_to(outside)
    (directory / "pods" / "dir-link").symlink_to(outside.parent, target_is_directory=True)
    return directory


@pytest.mark.parametrize("with_rm", [True, False], ids=["rm", "shutil"])
def test_the_tree_goes_and_what_links_point_to_stays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      with_rm: bool) -> None:
    outside = tmp_path / "keep" / "file"
    outside.parent.mkdir()
    outside.write_text("kept")
    directory = tree(tmp_path, outside)
    if not with_rm:
        monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    remove_tree(directory)
    assert not directory.exists()
    assert outside.read_text() == "kept"


def test_a_missing_directory_is_no_error(tmp_path: Path) -> None:
    remove_tree(tmp_path / "never-made")
    assert list(tmp_path.iterdir()) == []


def test_a_big_tree_is_removed_by_several_rm_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "keep" / "file"
    outside.parent.mkdir()
    outside.write_text("kept")
    directory = tree(tmp_path, outside)
    monkeypatch.setattr(treeremoval, "PARALLEL_FROM", 10)   # 51 entries under pods/
    monkeypatch.setattr(treeremoval, "_ARGV_BYTES", 100)    # about 10 paths a command
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    started: list[list[str]] = []
    real_popen = subprocess.Popen

    def popen(args, **kwargs):
        started.append(list(args))
        return real_popen(args, **kwargs)
    monkeypatch.setattr(subprocess, "Popen", popen)
    remove_tree(directory)
    assert not directory.exists()
    assert outside.read_text() == "kept"
    shares = [args[args.index("--") + 1:] for args in started if args[-1] != str(directory)]  # then the rest
    assert len(shares) >= 5 and sorted(p for s in shares for p in s) == sorted(
        [f"pods/pod-{i}" for i in range(50)] + ["pods/dir-link"])
