"""Whether a state directory or a file in it may be trusted, checked before each use.

The default state root (``/dev/shm/netemu-<uid>``, ``/tmp/netemu-<uid>``) has a name anyone can
predict, in a directory anyone can write, so another user can create it first and plant a
``state.json``, a ledger or credentials there. So netemu creates the root and every cluster
directory 0700 and trusts one only when it is a real directory (not a symbolic link), owned by the
current user and writable by nobody else, in a parent that no other user may rename it out of. Files
read from a cluster directory are opened with ``O_NOFOLLOW`` relative to a checked directory
descriptor and checked again on the open file. Anything else raises ``UnsafeStateError``:
one line saying what is wrong and how to fix it, before anything is read, started, connected or
signalled.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from netemu.errors import UnsafeStateError

_FIX_ROOT = "remove it or set NETEMU_STATE_DIR to a directory of your own"


def my_uid() -> int:
    return os.geteuid()


def _problem(st: os.stat_result, kind: str) -> str | None:
    """What makes an object with status ``st`` unfit to be trusted as a ``kind``; None when fit."""
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    want = {"directory": stat.S_ISDIR, "file": stat.S_ISREG, "socket": stat.S_ISSOCK}[kind]
    if not want(st.st_mode):
        return f"is not a {kind}"
    if st.st_uid != my_uid():
        return f"is owned by uid {st.st_uid}, not you (uid {my_uid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = "others" if st.st_mode & stat.S_IWOTH else "its group"
        return f"is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _refuse(what: str, path: Path | str, problem: str, fix: str) -> UnsafeStateError:
    return UnsafeStateError(f"{what} {path} {problem}: {fix}")


def _check(path: Path, st: os.stat_result, kind: str, what: str, fix: str) -> None:
    problem = _problem(st, kind)
    if problem:
        raise _refuse(what, path, problem, fix)


def _check_ancestors(root: Path) -> None:
    """No other user may swap the root for their own: every directory above it is either closed
    to others' writes or sticky (as /tmp and /dev/shm are), where only an entry's owner renames it."""
    parent = Path(os.path.realpath(root.parent))
    for directory in (parent, *parent.parents):
        st = os.stat(directory)
        if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
            raise _refuse("state directory", root, f"lies in {directory}, which any user may write and which is "
                          f"not sticky (mode {stat.S_IMODE(st.st_mode):04o}), so another user could replace it",
                          "set NETEMU_STATE_DIR to a directory in one of your own")


def check_root(root: Path) -> bool:
    """Verify the state root; False when it does not exist (there is nothing to use yet)."""
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        return False
    _check(root, st, "directory", "state directory", _FIX_ROOT)
    _check_ancestors(root)
    return True


def ensure_root(root: Path) -> Path:
    """Create the state root 0700 unless it exists, then verify it (whoever created it)."""
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        _check_ancestors(root)
        try:
            root.mkdir(mode=0o700)
        except FileExistsError:
            pass  # made before, by us or by someone else: the check below tells
    except OSError as exc:
        raise UnsafeStateError(f"cannot create state directory {root}: {exc.strerror or exc}: "
                               "set NETEMU_STATE_DIR to a directory you may write") from exc
    check_root(root)
    return root


def check_cluster_dir(directory: Path) -> bool:
    """Verify one cluster's directory (the root above it already checked); False when absent."""
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        return False
    _check(directory, st, "directory", "cluster directory", "remove it")
    return True


def make_cluster_dir(directory: Path) -> None:
    """Create a fresh cluster directory 0700 (it must not exist) and verify what was made."""
    directory.mkdir(mode=0o700)
    check_cluster_dir(directory)


def open_dir(directory: Path, what: str = "cluster directory") -> int:
    """A descriptor of the verified directory itself (``O_NOFOLLOW``): for ``openat`` and locks."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _refuse(what, directory, "is a symbolic link or not a directory", "remove it") from exc
        raise
    try:
        _check(directory, os.fstat(fd), "directory", what,
               _FIX_ROOT if what == "state directory" else "remove it")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_file(directory: Path, name: str) -> bytes | None:
    """The content of ``directory/name``, a regular file of ours; None when it does not exist."""
    try:
        dir_fd = open_dir(directory)
    except FileNotFoundError:
        return None
    try:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _refuse("state file", directory / name, "is a symbolic link",
                              f"remove the cluster directory {directory}") from exc
            raise
        with os.fdopen(fd, "rb") as f:
            _check(directory / name, os.fstat(f.fileno()), "file", "state file",
                   f"remove the cluster directory {directory}")
            return f.read()
    finally:
        os.close(dir_fd)


def write_file(directory: Path, name: str, data: bytes) -> None:
    """Replace ``directory/name`` atomically with a new 0600 file holding ``data``."""
    dir_fd = open_dir(directory)
    tmp = f".{name}.tmp"
    try:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
