"""What the relays get from the proxier for each new connection or flow, and what they share.

A listener asks its dispatch function once per TCP connection or UDP flow (never per chunk) and
gets a ``Route``: a verdict, and for ``SERVE`` where to connect, from which source address, in
which node's network, with which impairment, plus the connection record to complete. ``retry``
gives another endpoint after a failed connect (or None when none is left).
"""
from __future__ import annotations

import asyncio
import random
import socket
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import _socket

from .connlog import ConnectionRecord
from .datagrams import DatagramBatch
from .impair import Impairment
from .poller import Poller
from .serviceport import Verdict
from .sockopts import bind_source
from .splice import PipePool


class SocketMaker(Protocol):
    def socket(self, where: str, family: int, type: int) -> Any: ...

    def sockets(self, where: str, family: int, type: int, count: int) -> list[Any]:
        """Asked only where ``shared_stack`` is False (see ``Fabric.sockets``)."""


@dataclass(slots=True)
class Route:
    verdict: Verdict
    record: ConnectionRecord
    address: tuple[str, int] | None = None       # where to connect (SERVE only)
    source_ip: str | None = None                  # address the backend should see
    where: str = ""                               # network to make the upstream socket in
    impairment: Impairment | None = None
    retry: Callable[[list[tuple[str, int]]], tuple[str, int] | None] | None = None


Dispatch = Callable[[tuple[str, int]], Route]
_MAX_SOURCES = 65536  # kernel_source's cache: more and it starts over
_DISCARD_PORT = 9     # any port does for the route lookup
_STREAM_NONBLOCK = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
SPARE_BATCH = 64      # the most sockets ``spare_socket`` makes in one trip into a node's network
SPARE_LIMIT = 256     # the most spares all nodes together keep (descriptors: often 1,024 a process)


@dataclass
class RelayContext:
    """Shared by every listener and relay of one proxy group."""

    loop: asyncio.AbstractEventLoop
    sockets: SocketMaker
    dial_timeouts: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
    udp_idle_timeout: float = 30.0
    udp_max_flows: int = 4096
    in_process_udp: bool = False                  # flows may call in-process UDP servers (``local``)
    congestion: bytes | None = None               # TCP congestion control of relayed sockets (None: the system's)
    rng: random.Random = field(default_factory=random.Random)
    live: set[Any] = field(default_factory=set)   # open relays, held connections, UDP listeners
    pipes: PipePool = field(default_factory=PipePool)  # for the zero-copy relay
    shared_stack: bool = False                    # one network stack for every node (loopback backend)
    poller: Poller = field(init=False)            # readiness of every raw socket (listeners, relays, flows)
    sources: dict[Any, str] = field(init=False, default_factory=dict)  # see ``kernel_source``
    foreign: set[tuple[str, str]] = field(init=False, default_factory=set)  # see ``bind_upstream``
    spares: dict[tuple[str, int], list[Any]] = field(init=False, default_factory=dict)  # see ``spare_socket``
    _batches: dict[tuple[str, int], int] = field(init=False, default_factory=dict)
    _datagrams: DatagramBatch | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.poller = Poller(self.loop)

    def stream_socket(self, where: str) -> Any:
        """A new non-blocking TCP socket in ``where``'s network, for an upstream connection. On one
        shared stack it is a bare ``_socket.socket``: ``socket.socket``'s Python layer costs 0.3 µs
        a connection, and the relays need none of it."""
        if self.shared_stack:
            return _socket.socket(socket.AF_INET, _STREAM_NONBLOCK)
        return self.spare_socket(where, socket.SOCK_STREAM)

    def datagram_socket(self, where: str) -> Any:
        """A new non-blocking UDP socket in ``where``'s network, for a flow's upstream."""
        if self.shared_stack:
            return self.sockets.socket(where, socket.AF_INET, socket.SOCK_DGRAM)
        return self.spare_socket(where, socket.SOCK_DGRAM)

    def spare_socket(self, where: str, kind: int) -> Any:
        """A new socket of ``kind`` made in ``where``'s network, where each node has a network
        stack of its own (netns backend). Making one there takes a thread that enters the
        namespace and comes back (``namespaces.call_in``): 70 µs and several thread hand-offs,
        which a busy machine stretches, all of it on the event loop. So sockets are made in
        batches and kept as spares: a batch is one socket the first time, and twice the last one
        each time the spares run out, up to ``SPARE_BATCH``, so a node that opens few
        connections holds few spares, and one under load goes into its namespace once every
        64 connections. A spare is an unconnected socket (a descriptor and a few hundred bytes);
        all nodes together keep at most ``SPARE_LIMIT`` (a batch is cut to what is left, one
        socket at least), so a big cluster busy on every node does not spend a process's
        descriptors on spares; a node's spares are closed when the node goes away
        (``close_all``), all of them with
        the proxy (``close``), and every spare as soon as a listener runs out of descriptors
        (``release_spares``)."""
        key = (where, kind)
        spares = self.spares.get(key)
        if not spares:
            batch = self._batches.get(key, 1)
            kept = sum(len(others) for others in self.spares.values())
            count = max(1, min(batch, SPARE_LIMIT + 1 - kept))  # the one taken now is no spare
            spares = self.spares[key] = self.sockets.sockets(where, socket.AF_INET, kind, count)
            self._batches[key] = min(2 * batch, SPARE_BATCH)
        return spares.pop()

    def release_spares(self) -> None:
        """Close every spare socket: descriptors are short."""
        self._close_spares(None)

    def _close_spares(self, node: str | None) -> None:
        for key in [k for k in self.spares if node is None or k[0] == node]:
            for sock in self.spares.pop(key):
                sock.close()
            self._batches.pop(key, None)

    def bind_upstream(self, sock: Any, route: Route, address: tuple[str, int], *, stream: bool) -> None:
        """Bind a relay's upstream socket, before it connects to ``address``, to the source address
        the backend should see (``route.source_ip``), unless the kernel gives it that address
        anyway (``kernel_source``): a connection from 127.0.0.1, a host client's or a pod program's
        that binds no address on the loopback backend, then costs no call for it. A source the
        network does not own (a client pod's address in a netns node) is bound transparently once
        a plain bind is refused, and remembered in ``foreign``, so that the next connection from
        it binds transparently at once rather than failing first."""
        source = route.source_ip
        if source and source != self.kernel_source(route.where, address[0]):
            key = (route.where, source)
            foreign = self.foreign
            if key in foreign:
                bind_source(sock, source, stream=stream, transparent=True)
            elif bind_source(sock, source, stream=stream):
                if len(foreign) >= _MAX_SOURCES:
                    foreign.clear()
                foreign.add(key)

    def kernel_source(self, where: str, ip: str) -> str:
        """The source address the kernel gives a connection to ``ip`` made in ``where``'s network
        ("" if none), learned once per address and kept in ``sources``: connecting a UDP socket
        makes the kernel choose it, and sends nothing."""
        key = ip if self.shared_stack else (where, ip)
        source = self.sources.get(key)
        if source is None:
            if len(self.sources) >= _MAX_SOURCES:  # addresses of endpoints long gone
                self.sources.clear()
            try:
                probe = self.sockets.socket(where, socket.AF_INET, socket.SOCK_DGRAM)
            except OSError:
                return ""
            try:
                probe.connect((ip, _DISCARD_PORT))
                source = probe.getsockname()[0]
            except OSError:
                source = ""
            finally:
                probe.close()
            self.sources[key] = source
        return source

    @property
    def datagrams(self) -> DatagramBatch:
        """The UDP listeners' batch (made with the first listener): one listener at a time reads
        into it, and is done with it before its callback returns."""
        if self._datagrams is None:
            self._datagrams = DatagramBatch()
        return self._datagrams

    def close_all(self, node: str | None = None) -> None:
        """Close every live relay (of one node, or all)."""
        for item in list(self.live):
            if node is None or item.node == node:
                item.close()
        self._close_spares(node)

    def close(self) -> None:
        """After ``close_all``: release what the relays shared."""
        self._close_spares(None)
        self.pipes.close()
        self.poller.close()
