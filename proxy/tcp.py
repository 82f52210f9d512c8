"""TCP listeners and relays.

A listener is an asyncio server on a listening socket the fabric made. For each accepted
connection it asks its dispatch function once for a ``Route``:

- ``REJECT`` (only seen in the moment before a listener closes): the client gets an RST;
- ``DROP`` (only when a source filter could not apply): the connection is held unanswered (what
  the client sends is discarded) until the client gives up;
- ``SERVE``: an upstream socket is made in the route's network, bound to the source address the
  backend should see, and connected. As in the userspace proxy, each attempt gets the next of the
  escalating ``dial_timeouts`` and a failed attempt moves on to another endpoint (a timed-out
  one is tried again when there is no other); when the attempts run out the client gets an RST.

The relay is a pair of protocol objects, one per socket, each writing what it reads to the other
(``_Pump``): the hot path is one ``transport.write`` per chunk. Backpressure comes from the
transports: when one side's write buffer passes its high-water mark the other side stops reading
until it drains. Half-close is relayed: EOF from one side becomes ``write_eof`` on the other and
the reverse direction keeps flowing; the connection closes once both directions have ended. A
reset on either side resets the other. Listener changes never touch relays: closing a listener
leaves established connections running, as the userspace proxy did.

With an impairment that shapes (delay, jitter, rate) both pumps are ``_ShapedPump``: each chunk
waits in a queue until its departure time, in order; a long queue stops reading from the source.
"""
from __future__ import annotations

import asyncio
import collections
import errno
import functools
import logging
import os
import socket
from typing import Any

from .connlog import OK, REFUSED, RESET, TIMEOUT
from .impair import Shaper
from .route import Dispatch, RelayContext, Route
from .serviceport import Verdict
from .sockopts import attach_filter, bind_source, reset

log = logging.getLogger(__name__)

_QUEUE_HIGH = 256 * 1024   # shaped: stop reading the source above this many queued bytes
_QUEUE_LOW = 64 * 1024


class TCPListener:
    """One listening socket and its asyncio server."""

    def __init__(self, server: asyncio.AbstractServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock

    @classmethod
    async def open(cls, ctx: RelayContext, sock: socket.socket, dispatch: Dispatch, backlog: int) -> "TCPListener":
        """Serve on ``sock`` (bound, not necessarily listening yet)."""
        factory = functools.partial(_Accepted, ctx, dispatch)
        server = await ctx.loop.create_server(factory, sock=sock, backlog=backlog)
        return cls(server, sock)

    def set_filter(self, program: bytes | None) -> None:
        attach_filter(self.sock, program)

    def close(self) -> None:
        self.server.close()


class _Accepted(asyncio.Protocol):
    """A client connection from accept until its relay is linked (or it is refused or held)."""

    __slots__ = ("ctx", "dispatch", "transport", "route", "pending", "eof", "task", "held")

    def __init__(self, ctx: RelayContext, dispatch: Dispatch) -> None:
        self.ctx = ctx
        self.dispatch = dispatch
        self.transport: Any = None
        self.route: Route | None = None
        self.pending: list[bytes] = []
        self.eof = False
        self.task: asyncio.Task | None = None
        self.held = False

    @property
    def node(self) -> str:
        return self.route.record.node if self.route is not None else ""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        route = self.route = self.dispatch((peer[0], peer[1]))
        if route.verdict is Verdict.SERVE:
            imp = route.impairment
            if imp is not None and imp.tcp_reset and self.ctx.rng.random() < imp.tcp_reset:
                route.record.finish(RESET)
                reset(transport)
                return
            transport.pause_reading()
            self.ctx.live.add(self)
            self.task = self.ctx.loop.create_task(self._connect(route))
        elif route.verdict is Verdict.DROP:
            self.held = True  # read and discard, so that a client giving up is noticed
            self.ctx.live.add(self)
        else:
            route.record.finish(REFUSED)
            reset(transport)

    def data_received(self, data: bytes) -> None:
        if self.held:
            return
        # uvloop starts reading after connection_made even if it paused; keep what came early.
        self.pending.append(data)
        self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        return not self.held

    def connection_lost(self, exc: Exception | None) -> None:
        self.ctx.live.discard(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.route is not None:
            self.route.record.finish(TIMEOUT if self.held else (RESET if exc else OK))

    def close(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.transport.abort()

    async def _connect(self, route: Route) -> None:
        ctx = self.ctx
        loop = ctx.loop
        address = route.address
        tried: list[tuple[str, int]] = []
        outcome = REFUSED
        for timeout in ctx.dial_timeouts:
            sock = ctx.sockets.socket(route.where, socket.AF_INET, socket.SOCK_STREAM)
            try:
                bind_source(sock, route.source_ip, stream=True)
                # A plain non-blocking connect: loop.sock_connect would resolve the address and
                # asyncio.timeout would add a cancellation scope, both measurable per connection.
                err = sock.connect_ex(address)
                if err == errno.EINPROGRESS:
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err == 0 and not _connected(sock):  # over loopback or veth it usually is by now
                    ready = loop.create_future()
                    fd = sock.fileno()
                    loop.add_writer(fd, _settle, ready, None)
                    timer = loop.call_later(timeout, _settle, ready, TimeoutError)
                    try:
                        await ready
                    finally:
                        loop.remove_writer(fd)
                        timer.cancel()
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
            except OSError as exc:  # TimeoutError included
                sock.close()
                timed_out = isinstance(exc, TimeoutError)
                outcome = TIMEOUT if timed_out else REFUSED
                log.debug("%s: connect to %s:%s failed: %s", route.record.service_port, *address, exc)
                tried.append(address)
                retry = route.retry(tried) if route.retry is not None else None
                if retry is None and not timed_out:
                    break
                address = retry or address  # a slow endpoint gets the next, longer timeout
                continue
            except BaseException:
                sock.close()
                raise
            await self._link(route, sock)
            return
        ctx.live.discard(self)
        route.record.finish(outcome)
        reset(self.transport)

    async def _link(self, route: Route, sock: socket.socket) -> None:
        ctx = self.ctx
        relay = _Relay(route.record, ctx.live)
        imp = route.impairment
        if imp is not None and imp.shapes:
            client: _Pump = _ShapedPump(relay, ctx.loop, Shaper(imp, ordered=True, rng=ctx.rng))
            upstream: _Pump = _ShapedPump(relay, ctx.loop, Shaper(imp, ordered=True, rng=ctx.rng))
        else:
            client, upstream = _Pump(relay), _Pump(relay)
        client.transport = self.transport
        client.peer, upstream.peer = upstream, client
        relay.client, relay.upstream = client, upstream
        try:
            await ctx.loop.create_connection(lambda: upstream, sock=sock)
        except BaseException as exc:
            if upstream.transport is not None:
                upstream.transport.abort()
            else:
                sock.close()
            if isinstance(exc, OSError):
                ctx.live.discard(self)
                route.record.finish(RESET)
                reset(self.transport)
                return
            raise
        ctx.live.discard(self)
        if relay.done:  # the upstream went away at once; the client has been closed
            return
        ctx.live.add(relay)
        self.transport.set_protocol(client)
        for chunk in self.pending:
            client.data_received(chunk)
        self.pending = []
        if self.eof:
            client.eof_received()
        else:
            self.transport.resume_reading()


def _connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


def _settle(future: asyncio.Future, exc: type[BaseException] | None) -> None:
    if not future.done():
        if exc is None:
            future.set_result(None)
        else:
            future.set_exception(exc())


class _Relay:
    """Both sides of one proxied connection and how it ends."""

    __slots__ = ("record", "live", "client", "upstream", "done")

    def __init__(self, record: Any, live: set) -> None:
        self.record = record
        self.live = live
        self.client: Any = None
        self.upstream: Any = None
        self.done = False

    @property
    def node(self) -> str:
        return self.record.node

    def on_eof(self, side: "_Pump") -> bool:
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
        return True

    def on_lost(self, side: "_Pump", exc: Exception | None) -> None:
        if self.done:
            return
        self.done = True
        self.live.discard(self)
        other = side.peer.transport
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
    """One socket of a relay: what it reads goes to the peer's transport as it is."""

    __slots__ = ("relay", "transport", "peer", "nbytes", "eof")

    def __init__(self, relay: _Relay) -> None:
        self.relay = relay
        self.transport: Any = None
        self.peer: Any = None
        self.nbytes = 0
        self.eof = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.nbytes += len(data)
        self.peer.transport.write(data)

    def eof_received(self) -> bool:
        return self.relay.on_eof(self)

    def pause_writing(self) -> None:
        self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.on_lost(self, exc)

    def stop(self) -> None:
        """The relay ended: drop anything still scheduled."""


_EOF = None  # queued in place of data: the source sent EOF


class _ShapedPump(_Pump):
    """A pump whose chunks reach the peer at the shaper's departure times, in order."""

    __slots__ = ("loop", "shaper", "queue", "queued", "timer", "holds", "self_held")

    def __init__(self, relay: _Relay, loop: asyncio.AbstractEventLoop, shaper: Shaper) -> None:
        super().__init__(relay)
        self.loop = loop
        self.shaper = shaper
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.queued = 0
        self.timer: asyncio.TimerHandle | None = None
        self.holds = 0
        self.self_held = False

    def data_received(self, data: bytes) -> None:
        self.nbytes += len(data)
        self._enqueue(data)
        if self.queued > _QUEUE_HIGH and not self.self_held:
            self.self_held = True
            self.hold()

    def eof_received(self) -> bool:
        self._enqueue(_EOF)
        return True

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
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()
