"""Removing a directory tree fast: a cluster's state directory holds about fifteen entries per pod
(its files, service-account volume, log and address record), 150,000 for 10,000 pods, and
``shutil.rmtree`` spends more time in Python per entry than the kernel spends unlinking it. The
system's ``rm -rf`` removes the same tree about a third faster, and a big tree is removed by
several ``rm`` at once, one per core (up to ``MAX_JOBS``), each given a share of the entries one
level down (``pods/<uid>``, ``logs/<file>``, ...): the unlinking is the kernel's work, in
different directories, and two processes on two cores removed 10,000 pods' files in 0.98 s
against 1.70 s for one. ``shutil.rmtree`` is the fallback where there is no ``rm`` or it left
something behind. Neither follows symbolic links, and ``rm`` does not descend into other
filesystems mounted inside the tree. The shares are named by paths under the tree, so the tree
must be the caller's own (a state directory is, mode 0700): nobody else can swap a directory in
it for a link between the listing and the removal."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

MAX_JOBS = 4
PARALLEL_FROM = 2000          # entries one level down: below that, one ``rm``
_ARGV_BYTES = 128 * 1024      # paths per ``rm`` command, well under the kernel's argument limit


def remove_tree(directory: Path) -> None:
    """Remove ``directory`` and everything in it; nothing happens when it does not exist."""
    if not directory.exists() and not directory.is_symlink():
        return
    rm = shutil.which("rm")
    if rm is not None:
        jobs = min(os.cpu_count() or 1, MAX_JOBS)
        if jobs > 1 and directory.is_dir() and not directory.is_symlink():
            shares = _entries_one_level_down(directory)
            if len(shares) >= PARALLEL_FROM:
                _remove_at_once(rm, directory, shares, jobs)
        subprocess.run([rm, "-rf", "--one-file-system", "--", str(directory)], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    if directory.exists():
        shutil.rmtree(directory, ignore_errors=True)


def _entries_one_level_down(directory: Path) -> list[str]:
    """``sub/name`` for every entry of every subdirectory (not a link) of ``directory``."""
    entries: list[str] = []
    with os.scandir(directory) as top:
        for sub in top:
            if sub.is_dir(follow_symlinks=False):
                try:
                    entries += [f"{sub.name}/{name}" for name in os.listdir(sub.path)]
                except OSError:
                    pass
    return entries


def _remove_at_once(rm: str, directory: Path, entries: list[str], jobs: int) -> None:
    """``rm -rf`` the ``entries`` (relative to ``directory``), ``jobs`` commands at a time."""
    commands: list[list[str]] = []
    command: list[str] = []
    size = 0
    for entry in entries:
        if command and size + len(entry) + 1 > _ARGV_BYTES:
            commands.append(command)
            command, size = [], 0
        command.append(entry)
        size += len(entry) + 1
    commands.append(command)
    running: list[subprocess.Popen] = []
    for paths in commands:
        if len(running) == jobs:
            running.pop(0).wait()
        running.append(subprocess.Popen([rm, "-rf", "--one-file-system", "--", *paths], cwd=directory,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL))
    for process in running:
        process.wait()
