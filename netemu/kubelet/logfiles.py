"""The log files of built-in-image containers, written through a bounded set of open files.

A container emulated in-process writes its log lines through ``LogFiles.writer``. Keeping one
file open per container costs a descriptor each: with 10,000 pods that is 10,000 descriptors on
top of their listening sockets, past a common ``ulimit -n``. Here at most ``limit`` files are open
at once, the most recently written ones (an LRU); a writer whose file was closed reopens it, in
append mode, at its next line. Each line is written through at once (one write(2)), so whatever
reads the file (``kubectl logs``) sees every line whether its file is open here or not.
"""
from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Callable

OPEN_FILES = 256  # for the whole process: every kubelet of every cluster in it shares them
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


class _Target:
    __slots__ = ("path", "closed")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.closed = False


class _OpenFiles:
    """At most ``limit`` open append descriptors, the most recently used (an LRU). Plain
    descriptors and write(2), no file objects: with thousands of containers each reopening its
    log, a Python text file's set-up (buffers, codec, fstat, isatty) costs more than the write."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.handles: collections.OrderedDict[_Target, int] = collections.OrderedDict()  # newest last

    def get(self, target: _Target) -> int:
        fd = self.handles.get(target)
        if fd is not None:
            self.handles.move_to_end(target)
            return fd
        while len(self.handles) >= self.limit:
            os.close(self.handles.popitem(last=False)[1])
        fd = self.handles[target] = os.open(target.path, _APPEND, 0o666)
        return fd

    def write(self, target: _Target, data: bytes) -> None:
        fd = self.get(target)
        while data:
            data = data[os.write(fd, data):]

    def close(self, target: _Target) -> None:
        fd = self.handles.pop(target, None)
        if fd is not None:
            os.close(fd)


_SHARED = _OpenFiles(OPEN_FILES)


class LogFiles:
    """One kubelet's container logs; ``limit`` gives it open files of its own instead of the
    process's shared ``OPEN_FILES``."""

    def __init__(self, limit: int | None = None) -> None:
        self._files = _OpenFiles(limit) if limit is not None else _SHARED
        self._by_pod: dict[str, dict[str, _Target]] = {}  # pod uid → container → its target

    @property
    def open_count(self) -> int:
        return sum(1 for targets in self._by_pod.values() for t in targets.values() if t in self._files.handles)

    def writer(self, uid: str, container: str, path: Path) -> Callable[[str], None]:
        """``write(line)`` appending to ``path``; it writes nothing once ``close_pod(uid)`` ran."""
        targets = self._by_pod.setdefault(uid, {})
        target = targets.get(container)
        if target is None or target.closed:
            target = targets[container] = _Target(path)
            self._files.get(target)  # the file exists from the start, as a container runtime's does
        files = self._files

        def write(line: str) -> None:
            if not target.closed:
                files.write(target, (line if line.endswith("\n") else line + "\n").encode())
        return write

    def close_pod(self, uid: str) -> None:
        for target in self._by_pod.pop(uid, {}).values():
            target.closed = True
            self._files.close(target)

    def close(self) -> None:
        for uid in list(self._by_pod):
            self.close_pod(uid)
