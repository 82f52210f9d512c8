"""Sealing: the netns backend moves the thread that runs it into a network namespace of its own.

The namespace netemu starts in (the host's) routes to the real network. A cluster on the netns
backend needs nothing there but its 127.x listeners (node and load-balancer addresses for the
host's clients), so ``enter`` moves the calling thread — the event loop's — into a fresh network
namespace that holds only ``lo``, and keeps a descriptor of the host's namespace (``Host``) for
those listeners and for the host-side commands scenarios run. Every socket, thread and process
netemu makes afterwards without naming a namespace therefore lands where no packet can leave.

Network namespaces are per thread: threads made later by the sealed thread inherit the seal,
older ones do not, so ``enter`` also gives the event loop a fresh default executor.
``leave`` returns the thread to the host's namespace. Sealing nests (a second cluster on the
same thread shares the seal); the last ``leave`` undoes it.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from netemu.cni.netlink import setns, unshare_net
from netemu.errors import BackendUnavailableError, FabricError

from . import namespaces

_local = threading.local()


@dataclass(frozen=True)
class Host:
    """The namespace the process started in, kept open while sealed."""
    fd: int

    @property
    def path(self) -> Path:
        """A path that opens the host's namespace (for ``setns`` and ``nsenter --net=``)."""
        return Path(f"/proc/{os.getpid()}/fd/{self.fd}")


def enter(loop: asyncio.AbstractEventLoop | None = None) -> Host:
    """Move the calling thread into a fresh namespace holding only ``lo`` (or, when it is
    sealed already, share that seal); the host's namespace for the caller to reach."""
    depth = getattr(_local, "depth", 0)
    if depth:
        _local.depth = depth + 1
        return _local.host
    host_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        unshare_net()
    except OSError as exc:
        os.close(host_fd)
        raise BackendUnavailableError(
            f"the netns backend cannot make a network namespace of its own ({exc.strerror}); it needs root "
            "(CAP_SYS_ADMIN and CAP_NET_ADMIN)") from exc
    try:
        namespaces.loopback_up()
    except OSError as exc:
        _return(host_fd)
        raise FabricError(f"bringing lo up in netemu's own namespace: {exc}") from exc
    _local.depth, _local.host = 1, Host(host_fd)
    if loop is not None:
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(thread_name_prefix="netemu-sealed"))
    return _local.host


def leave(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Undo one ``enter`` of the calling thread; the last one returns it to the host's namespace."""
    depth = getattr(_local, "depth", 0)
    if depth == 0:
        return
    _local.depth = depth - 1
    if depth > 1:
        return
    host: Host = _local.host
    del _local.host
    _return(host.fd)
    if loop is not None:
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor())


def _return(host_fd: int) -> None:
    try:
        setns(host_fd)
    finally:
        os.close(host_fd)
