"""``remove_tree``: a state directory goes whole, links are not followed, and without ``rm`` the
Python fallback does the same."""
from __future__ import annotations

from pathlib import Path

import pytest

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
