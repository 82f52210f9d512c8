"""The AtomicWriter's layout and modes, whatever the process umask (files get their mode by fchmod,
the version directory by chmod)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from netemu.kubelet import atomicwriter
from netemu.kubelet.atomicwriter import FileProjection


@pytest.fixture
def strict_umask():
    old = os.umask(0o077)
    yield
    os.umask(old)


def test_layout_and_modes_under_a_strict_umask(tmp_path: Path, strict_umask: None) -> None:
    assert atomicwriter.write(tmp_path, {"token": FileProjection(b"t", 0o644),
                                         "d/e/f": FileProjection(b"f", 0o444)})
    version = os.readlink(tmp_path / "..data")
    assert re.fullmatch(r"\.\.\d{4}(_\d\d){5}\.\d{9}", version)
    assert (tmp_path / version).stat().st_mode & 0o7777 == 0o755
    assert os.readlink(tmp_path / "token") == "..data/token"
    assert os.readlink(tmp_path / "d") == "..data/d"
    assert (tmp_path / "token").read_bytes() == b"t"
    assert (tmp_path / "token").stat().st_mode & 0o7777 == 0o644
    assert (tmp_path / "d/e/f").stat().st_mode & 0o7777 == 0o444
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["..data", version, "d", "token"])

    assert atomicwriter.write(tmp_path, {"token": FileProjection(b"t2", 0o600)})
    new_version = os.readlink(tmp_path / "..data")
    assert new_version != version
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["..data", new_version, "token"])
    assert (tmp_path / "token").read_bytes() == b"t2"
    assert (tmp_path / "token").stat().st_mode & 0o7777 == 0o600


def test_a_file_in_the_way_of_a_top_level_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("not a link")
    with pytest.raises(FileExistsError):
        atomicwriter.write(tmp_path, {"token": FileProjection(b"t", 0o644)})
