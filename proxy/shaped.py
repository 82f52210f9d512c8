"""The shaped TCP relay: connections whose impairment delays, jitters or rate-limits them.

Both sockets become asyncio transports with a ``_Pump`` protocol each. What a pump reads waits
in its queue until the shaper's departure time (chunks never overtake each other) and is then
written to the other side's transport. A queue longer than ``_QUEUE_HIGH`` bytes stops reading
from the source until it falls under ``_QUEUE_LOW``; a peer transport whose write buffer is full
stops the source the same way (``hold``/``release`` count both reasons). EOF travels through
the queue like data and becomes ``write_eof`` on the other side, so half-close keeps its place in
the stream; the connection closes once both directions have ended. A reset on either side
resets the other, whenever it comes: a transport reads no more after EOF (or while paused), so
each socket is also watched for errors by the proxy's ``poller.Poller``, through a duplicate
descriptor of the relay's own (a transport may close its descriptor before it reports the loss,
and the number could be a new socket's by then). Unshaped connections never come here (see
``splice``).
"""
from __future__ import annotations

import asyncio
import collections
import os
import socket
from typing import Any

from .connlog import OK, RESET
from .impair import Impairment, Shaper
from .poller import Poller
from .route import RelayContext
from .sockopts import reset, reset_socket

_QUEUE_HIGH = 256 * 1024   # stop reading the source above this many queued bytes
_QUEUE_LOW = 64 * 1024
_EOF = None  # queued in place of data: the source sent EOF


async def relay_shaped(ctx: RelayContext, record: Any, impairment: Impairment, client: Any, upstream: Any) -> None:
    """Relay between two connected sockets with ``impairment``'s timing, until both sides end."""
    loop = ctx.loop
    client, upstream = _python_socket(client), _python_socket(upstream)
    relay = _Relay(record, ctx.live, ctx.poller)
    client_pump = _Pump(relay, loop, Shaper(impairment, ordered=True, rng=ctx.rng))
    upstream_pump = _Pump(relay, loop, Shaper(impairment, ordered=True, rng=ctx.rng))
    client_pump.peer, upstream_pump.peer = upstream_pump, client_pump
    relay.client, relay.upstream = client_pump, upstream_pump
    ctx.live.add(relay)
    try:
        await loop.connect_accepted_socket(lambda: client_pump, sock=client)
        await loop.create_connection(lambda: upstream_pump, sock=upstream)
    except BaseException:
        relay.done = True
        ctx.live.discard(relay)
        for pump, sock in ((client_pump, client), (upstream_pump, upstream)):
            if pump.transport is not None:
                reset(pump.transport)
            else:
                reset_socket(sock)
        record.finish(RESET)
        raise
    if relay.done:  # one side went away while the other was being wrapped
        for pump in (client_pump, upstream_pump):
            if pump.transport is not None:
                pump.transport.abort()
        return
    relay.link()


def _python_socket(sock: Any) -> socket.socket:
    """``sock`` as a ``socket.socket``, which the event loops take over (a bare ``_socket.socket``
    from the listener's fast path is rewrapped: uvloop detaches only the former when it closes)."""
    if isinstance(sock, socket.socket):
        return sock
    return socket.socket(sock.family, sock.type, sock.proto, sock.detach())


class _Relay:
    """Both sides of one shaped connection and how it ends."""

    __slots__ = ("record", "live", "poller", "client", "upstream", "done", "linked")

    def __init__(self, record: Any, live: set, poller: Poller) -> None:
        self.record = record
        self.live = live
        self.poller = poller
        self.client: Any = None
        self.upstream: Any = None
        self.done = False
        self.linked = False

    @property
    def node(self) -> str:
        return self.record.node

    def link(self) -> None:
        """Both transports exist: pass on what came before."""
        self.linked = True
        for pump in (self.client, self.upstream):
            pump.watch_errors(self.poller)
        for pump in (self.client, self.upstream):
            pump.replay()

    def on_eof(self, side: "_Pump") -> None:
        side.eof = True
        other = side.peer
        if other.eof:
            self.client.transport.close()
            self.upstream.transport.close()
        else:
            try:
                other.transport.write_eof()
            except (OSError, RuntimeError):
                pass

    def on_lost(self, side: "_Pump", exc: Exception | None) -> None:
        if self.done:
            return
        self.done = True
        self.live.discard(self)
        other = side.peer.transport
        if other is not None:
            if exc is None:
                other.close()
            else:
                reset(other)
        self.client.stop()
        self.upstream.stop()
        self.record.finish(OK if exc is None else RESET, self.client.nbytes, self.upstream.nbytes)

    def close(self) -> None:
        for side in (self.client, self.upstream):
            if side.transport is not None:
                side.transport.abort()


class _Pump(asyncio.Protocol):
    """One socket of a shaped relay: its chunks reach the peer at the shaper's times, in order."""

    __slots__ = ("relay", "loop", "shaper", "transport", "peer", "nbytes", "eof", "queue", "queued", "timer",
                 "holds", "self_held", "early", "early_eof", "watcher")

    def __init__(self, relay: _Relay, loop: asyncio.AbstractEventLoop, shaper: Shaper) -> None:
        self.relay = relay
        self.loop = loop
        self.shaper = shaper
        self.transport: Any = None
        self.peer: Any = None
        self.nbytes = 0
        self.eof = False
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.queued = 0
        self.timer: asyncio.TimerHandle | None = None
        self.holds = 0
        self.self_held = False
        self.early: list[bytes] = []
        self.early_eof = False
        self.watcher: socket.socket | None = None  # a duplicate of the transport's socket, for errors

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self.relay.linked:  # the other transport does not exist yet
            self.early.append(data)
            self.transport.pause_reading()
            return
        self.nbytes += len(data)
        self._enqueue(data)
        if self.queued > _QUEUE_HIGH and not self.self_held:
            self.self_held = True
            self.hold()

    def eof_received(self) -> bool:
        if not self.relay.linked:
            self.early_eof = True
        else:
            self._enqueue(_EOF)
        return True

    def replay(self) -> None:
        early, self.early = self.early, []
        for data in early:
            self.data_received(data)
        if self.early_eof:
            self._enqueue(_EOF)
        elif early and not self.self_held:
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.on_lost(self, exc)

    def watch_errors(self, poller: Poller) -> None:
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return
        self.watcher = socket.socket(fileno=os.dup(sock.fileno()))
        poller.watch_errors(self.watcher.fileno(), self._error)

    def _error(self) -> None:
        """The socket has an error or hung up (while its transport may not be reading)."""
        assert self.watcher is not None
        err = self.watcher.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err and not self.relay.done:
            self.relay.on_lost(self, OSError(err, os.strerror(err)))
            self.transport.abort()

    def _enqueue(self, data: bytes | None) -> None:
        size = len(data) if data is not None else 0
        at = self.shaper.departure(size, self.loop.time())
        self.queue.append((at, data))
        self.queued += size
        if self.timer is None:
            self.timer = self.loop.call_at(at, self._deliver)

    def _deliver(self) -> None:
        self.timer = None
        if self.relay.done:
            return
        now = self.loop.time()
        queue, peer = self.queue, self.peer.transport
        while queue and queue[0][0] <= now:
            _, data = queue.popleft()
            if data is _EOF:
                self.relay.on_eof(self)
            else:
                self.queued -= len(data)
                peer.write(data)
        if queue:
            self.timer = self.loop.call_at(queue[0][0], self._deliver)
        if self.self_held and self.queued < _QUEUE_LOW:
            self.self_held = False
            self.release()

    def hold(self) -> None:
        self.holds += 1
        if self.holds == 1:
            self.transport.pause_reading()

    def release(self) -> None:
        self.holds -= 1
        if self.holds == 0:
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        self.peer.hold()

    def resume_writing(self) -> None:
        self.peer.release()

    def stop(self) -> None:
        """The relay ended: drop anything still scheduled, and the error watch."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()
        if self.watcher is not None:
            self.relay.poller.forget(self.watcher.fileno())
            self.watcher.close()
            self.watcher = None
