"""The kubelet's AtomicWriter (pkg/volume/util/atomic_writer.go): how configMap, secret,
downwardAPI and projected volumes are written, so that a reader never sees half an update.

Layout of a volume directory::

    ..2026_12_05_20_53_01.123456789/   the files of one version (the payload), with their modes
    ..data -> ..2026_12_05_20_53_01.123456789
    app.properties -> ..data/app.properties     one symlink per top-level name of the payload

An update writes a new timestamped directory, points a temporary symlink at it and renames that
over ``..data`` (rename(2) is atomic), adds the top-level symlinks of new names, removes those of
names gone, then removes the old directory. A payload equal to what is there is not rewritten.
"""
from __future__ import annotations

import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from netemu.errors import NetemuError

DATA_DIR = "..data"
DATA_DIR_TMP = "..data_tmp"


class PayloadError(NetemuError):
    """A payload path the writer refuses (absolute, with ``..``, or starting with ``..``)."""


@dataclass(frozen=True)
class FileProjection:
    data: bytes
    mode: int


def _check_path(path: str) -> None:
    """validatePath: relative, no ``..`` element, not starting with ``..``, at most 4096 bytes."""
    if len(path.encode()) > 4096:
        raise PayloadError(f"invalid path: must be less than or equal to 4096 characters: {path!r}")
    if path.startswith("/"):
        raise PayloadError(f"invalid path: must be relative path: {path}")
    if ".." in path.split("/"):
        raise PayloadError(f"invalid path: must not contain '..': {path}")
    if path.startswith(".."):
        raise PayloadError(f"invalid path: must not start with '..': {path}")


def _timestamped_name(directory: str) -> str:
    """A new, unused ``..YYYY_MM_DD_HH_MM_SS.NNNNNNNNN`` directory (os.MkdirTemp's pattern), mode 0755."""
    stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime())
    while True:
        candidate = f"{directory}/{stamp}{random.randrange(10**9):09d}"
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        os.chmod(candidate, 0o755)
        return candidate


def _write_file(path: str, data: bytes, mode: int) -> None:
    """A new file with ``data`` and exactly ``mode`` (fchmod: the umask does not apply)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        while data:
            data = data[os.write(fd, data):]
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def current_version(directory: Path) -> Path | None:
    """The timestamped directory ``..data`` points at, or None before the first write."""
    try:
        return directory / os.readlink(f"{os.fspath(directory)}/{DATA_DIR}")
    except OSError:  # FileNotFoundError most often: the first write
        return None


def _same(version: Path, payload: Mapping[str, FileProjection]) -> bool:
    """Whether ``version`` holds exactly ``payload`` (contents and modes)."""
    found = {str(p.relative_to(version)) for p in version.rglob("*") if p.is_file()}
    if found != set(payload):
        return False
    for path, fp in payload.items():
        file = version / path
        if file.stat().st_mode & 0o7777 != fp.mode or file.read_bytes() != fp.data:
            return False
    return True


def _top_level(paths: Mapping[str, FileProjection] | set[str]) -> set[str]:
    return {os.path.normpath(p).split("/", 1)[0] for p in paths}


def write(directory: Path, payload: Mapping[str, FileProjection]) -> bool:
    """Write ``payload`` (relative path → contents and mode) into ``directory`` with the layout
    above; False when it was already there (nothing written)."""
    for path in payload:
        _check_path(path)
    old = current_version(directory)
    old_dir = old if old is not None and old.is_dir() else None
    if old_dir is not None and _same(old_dir, payload):
        return False
    old_paths = {str(p.relative_to(old_dir)) for p in old_dir.rglob("*") if p.is_file()} if old_dir else set()
    # Plain string paths and os calls from here: every pod's service account volume is written
    # this way, and pathlib's objects cost more than the syscalls they wrap.
    base = os.fspath(directory)
    version = _timestamped_name(base)
    made = {version}
    for path, fp in sorted(payload.items()):
        file = f"{version}/{path}"
        parent = os.path.dirname(file)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        _write_file(file, fp.data, fp.mode)
    tmp = f"{base}/{DATA_DIR_TMP}"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    os.symlink(os.path.basename(version), tmp)
    os.rename(tmp, f"{base}/{DATA_DIR}")
    for name in sorted(_top_level(payload)):
        link = f"{base}/{name}"
        try:
            os.symlink(f"{DATA_DIR}/{name}", link)
        except FileExistsError:
            if not os.path.islink(link):
                raise
    for name in sorted(_top_level(old_paths) - _top_level(payload)):
        try:
            os.unlink(f"{base}/{name}")
        except FileNotFoundError:
            pass
    if old is not None and os.fspath(old) != version:
        shutil.rmtree(old, ignore_errors=True)
    return True
