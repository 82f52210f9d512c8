"""Which addresses a container's processes listen on, read from /proc.

On the loopback backend every pod shares the host's network stack, so a program that binds the
wildcard address (0.0.0.0 or ::) would take the port on every pod IP at once. The kubelet uses
``wildcard_listeners`` to catch that and report it plainly instead of letting pods collide.
"""
from __future__ import annotations

import os
from typing import Iterable


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return out


def _socket_inodes(pids: Iterable[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return inodes


def _listeners(path: str, inodes: set[str]) -> list[tuple[str, int]]:
    out = []
    try:
        with open(path) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] != "0A" or fields[9] not in inodes:  # 0A: TCP_LISTEN
                    continue
                addr, port = fields[1].split(":")
                out.append((addr, int(port, 16)))
    except OSError:
        pass
    return out


def wildcard_listeners(pid: int) -> list[str]:
    """``host:port`` of every wildcard TCP listener held by ``pid`` or its descendants."""
    inodes = _socket_inodes(_descendants(pid))
    if not inodes:
        return []
    found = []
    for addr, port in _listeners("/proc/net/tcp", inodes):
        if int(addr, 16) == 0:
            found.append(f"0.0.0.0:{port}")
    for addr, port in _listeners("/proc/net/tcp6", inodes):
        if int(addr, 16) == 0:
            found.append(f"[::]:{port}")
    return found
