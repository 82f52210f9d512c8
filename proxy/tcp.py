"""TCP listeners: accepting each connection, routing it once, connecting it to its endpoint.

A listener is a listening socket the fabric made, watched by the proxy's ``poller.Poller`` (as
every raw socket of the proxy is, so that errors wake the callbacks on uvloop too): each readiness
accepts what is waiting and asks the dispatch function once per connection for a ``Route``:

- ``REJECT`` (only seen in the moment before a listener closes): the client gets an RST;
- ``DROP`` (only when a source filter could not apply): the connection is held unanswered (what
  the client sends is discarded) until the client gives up;
- ``SERVE``: an upstream socket is made in the route's network, bound to the source address the
  backend should see (unless the kernel gives it that address anyway, as it gives 127.0.0.1, a
  host client's usual address, on the loopback backend: ``RelayContext.bind_upstream``), and
  connected. As in the userspace proxy, each attempt gets the next of the
  escalating ``dial_timeouts`` and a failed attempt moves on to another endpoint (a timed-out
  one is tried again when there is no other); when the attempts run out the client gets an RST.
  Once connected, the two sockets are relayed by ``splice.SpliceRelay`` (zero-copy, in the
  kernel) or, when the route's impairment shapes traffic, by ``shaped.relay_shaped``.

Accepting without an asyncio server keeps the client socket raw, as the zero-copy relay needs, and
costs less per connection than making a transport for it; connects are callbacks, not tasks, and
usually complete at once over loopback (a second ``connect`` then says so, with no wait for
writability): such a connection makes no object but its relay, and ``_Dial`` takes over only when
the first attempt did not connect at once. An accepted socket is a bare ``_socket.socket`` (what
``socket.socket`` builds on, without its Python layer); a shaped relay gets a ``socket.socket`` for
the event loop. The listening socket carries the relay's socket options
(``splice.tune_for_relay``), which accepted sockets inherit, so a connection costs no call for them
on the client side. Listener changes never touch relays: closing a listener leaves established
connections running, as the userspace proxy did.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
from typing import Any

import _socket

from .connlog import REFUSED, RESET, TIMEOUT
from .route import Dispatch, RelayContext, Route
from .serviceport import DROP, SERVE
from .shaped import relay_shaped
from .sockopts import attach_filter, reset_socket
from .splice import SpliceRelay, tune_for_relay

log = logging.getLogger(__name__)

_ACCEPT_BATCH = 64                   # connections accepted per readiness callback
_ACCEPT_PAUSE = 0.5                  # seconds to stop accepting when out of file descriptors
_AF_INET, _SOCK_STREAM = socket.AF_INET, socket.SOCK_STREAM
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class TCPListener:
    """One listening socket and the connections it accepts."""

    def __init__(self, ctx: RelayContext, sock: socket.socket, dispatch: Dispatch) -> None:
        self.ctx = ctx
        self.sock = sock
        self.dispatch = dispatch
        sock.setblocking(False)
        tune_for_relay(sock, ctx.congestion)  # inherited by every accepted socket: no call per connection
        self._fd = sock.fileno()
        ctx.poller.add_reader(self._fd, self._accept)

    @classmethod
    async def open(cls, ctx: RelayContext, sock: socket.socket, dispatch: Dispatch, backlog: int) -> "TCPListener":
        """Serve on ``sock`` (bound, not necessarily listening yet)."""
        sock.listen(backlog)
        return cls(ctx, sock, dispatch)

    def set_filter(self, program: bytes | None) -> None:
        attach_filter(self.sock, program)

    def close(self) -> None:
        if self._fd < 0:
            return
        self.ctx.poller.forget(self._fd)
        self._fd = -1
        self.sock.close()

    def _accept(self) -> None:
        sock, ctx, dispatch = self.sock, self.ctx, self.dispatch
        for _ in range(_ACCEPT_BATCH):
            try:
                # ``socket.accept`` without its wrapper, which looks up the listener's family and
                # type as enums for every connection
                fd, peer = sock._accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    log.warning("%s:%s: cannot accept: %s; pausing", *sock.getsockname(), exc.strerror)
                    ctx.release_spares()
                    ctx.poller.remove_reader(self._fd)
                    ctx.loop.call_later(_ACCEPT_PAUSE, self._resume)
                    return
                continue  # ECONNABORTED and the like: that client is gone already
            client = _socket.socket(_AF_INET, _SOCK_STREAM, 0, fd)  # without socket.socket's Python layer
            client.setblocking(False)
            _serve(ctx, client, dispatch(peer))  # AF_INET: (ip, port)

    def _resume(self) -> None:
        if self._fd >= 0:
            self.ctx.poller.add_reader(self._fd, self._accept)


def _serve(ctx: RelayContext, client: socket.socket, route: Route) -> None:
    verdict = route.verdict
    if verdict is SERVE:
        imp = route.impairment
        if imp is not None and imp.tcp_reset and ctx.rng.random() < imp.tcp_reset:
            route.record.finish(RESET)
            reset_socket(client)
            return
        if imp is not None or not ctx.dial_timeouts:
            _Dial(ctx, client, route).attempt()
            return
        sock, err = _connect(ctx, route, route.address)  # type: ignore[arg-type]
        if sock is not None and err == 0:  # the usual case: relayed with no _Dial made
            SpliceRelay(ctx.poller, ctx.pipes, route.record, ctx.live, client, sock).start()
            return
        dial = _Dial(ctx, client, route)  # the first attempt did not connect at once
        if dial.went(sock, err):
            dial.attempt()
    elif verdict is DROP:
        _Held(ctx, client, route.record)
    else:
        route.record.finish(REFUSED)
        reset_socket(client)


class _Held:
    """A dropped connection: what the client sends is read and discarded until it gives up."""

    __slots__ = ("ctx", "sock", "fd", "record")

    def __init__(self, ctx: RelayContext, sock: socket.socket, record: Any) -> None:
        self.ctx = ctx
        self.sock = sock
        self.record = record
        self.fd = sock.fileno()
        ctx.poller.add_reader(self.fd, self._readable)
        ctx.live.add(self)

    @property
    def node(self) -> str:
        return self.record.node

    def _readable(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close()

    def close(self) -> None:
        if self.fd < 0:
            return
        self.ctx.poller.forget(self.fd)
        self.fd = -1
        self.sock.close()
        self.ctx.live.discard(self)
        self.record.finish(TIMEOUT)


def _connect(ctx: RelayContext, route: Route, address: tuple[str, int]) -> tuple[socket.socket | None, int]:
    """One connect attempt: (socket, 0) connected, (socket, EALREADY) still connecting, (socket,
    errno) failed, (None, errno) no socket to be had."""
    try:
        sock = ctx.stream_socket(route.where)
    except OSError as exc:
        log.warning("%s: no socket for the upstream: %s", route.record.service_port, exc)
        return None, exc.errno or errno.EMFILE
    try:
        # before connecting: the window it offers follows the buffer, and a congestion control
        # changed later leaves the socket paced if it started as BBR (sk_pacing_status stays)
        tune_for_relay(sock, ctx.congestion)
        ctx.bind_upstream(sock, route, address, stream=True)
        # A plain non-blocking connect: loop.sock_connect would resolve the address and add a
        # future per connection.
        err = sock.connect_ex(address)
        if err == errno.EINPROGRESS:
            # Over loopback or veth the handshake is usually done by now: connecting again says
            # so (0), says it is still going on (EALREADY), or gives the error.
            err = sock.connect_ex(address)
            if err == errno.EISCONN:
                err = 0
    except OSError as exc:
        err = exc.errno or errno.EIO
    return sock, err


class _Dial:
    """An accepted client while its upstream connection is being made (one attempt at a time)."""

    __slots__ = ("ctx", "client", "route", "address", "tried", "attempts", "outcome", "sock", "timer", "task")

    def __init__(self, ctx: RelayContext, client: socket.socket, route: Route) -> None:
        self.ctx = ctx
        self.client = client
        self.route = route
        self.address: tuple[str, int] = route.address  # type: ignore[assignment]
        self.tried: list[tuple[str, int]] = []
        self.attempts = 0
        self.outcome = REFUSED
        self.sock: socket.socket | None = None    # the attempt in progress
        self.timer: Any = None
        self.task: Any = None                     # linking a shaped relay

    @property
    def node(self) -> str:
        return self.route.record.node

    def attempt(self) -> None:
        """Make connect attempts until one connects, one is in progress, or none is left."""
        ctx = self.ctx
        while self.attempts < len(ctx.dial_timeouts):
            if not self.went(*_connect(ctx, self.route, self.address)):
                return
        self._give_up()

    def went(self, sock: socket.socket | None, err: int) -> bool:
        """Take the outcome of one attempt (``_connect``'s); True when another should follow."""
        ctx = self.ctx
        timeout = ctx.dial_timeouts[self.attempts]
        self.attempts += 1
        if err == 0:
            self._link(sock)  # type: ignore[arg-type]
            return False
        if err == errno.EALREADY:
            assert sock is not None
            self.sock = sock
            ctx.live.add(self)
            ctx.poller.add_writer(sock.fileno(), self._writable)
            self.timer = ctx.loop.call_later(timeout, self._timed_out)
            return False
        if sock is None:  # no socket to try with
            self._give_up()
            return False
        sock.close()
        if self._failed(err, timed_out=False):
            return True
        self._give_up()
        return False

    def _writable(self) -> None:
        sock = self.sock
        assert sock is not None
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err == 0:  # connected, or a wake-up that was not this socket's (see Poller.closing)
            err = sock.connect_ex(self.address)
            if err == errno.EALREADY:
                return
            if err == errno.EISCONN:
                err = 0
        self._stop_waiting()
        if err == 0:
            self.ctx.live.discard(self)
            self._link(sock)
            return
        sock.close()
        if self._failed(err, timed_out=False):
            self.attempt()
        else:
            self._give_up()

    def _timed_out(self) -> None:
        self.timer = None
        self._stop_waiting().close()
        self._failed(errno.ETIMEDOUT, timed_out=True)
        self.attempt()

    def _stop_waiting(self) -> socket.socket:
        sock = self.sock
        assert sock is not None
        self.sock = None
        self.ctx.poller.forget(sock.fileno())
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        return sock

    def _failed(self, err: int, *, timed_out: bool) -> bool:
        """Record a failed attempt; False when there is no point in another."""
        route = self.route
        self.outcome = TIMEOUT if timed_out else REFUSED
        log.debug("%s: connect to %s:%s failed: %s", route.record.service_port, *self.address, os.strerror(err))
        self.tried.append(self.address)
        retry = route.retry(self.tried) if route.retry is not None else None
        if retry is None and not timed_out:
            return False
        self.address = retry or self.address  # a slow endpoint gets the next, longer timeout
        return True

    def _give_up(self) -> None:
        self.ctx.live.discard(self)
        self.route.record.finish(self.outcome)
        reset_socket(self.client)

    def _link(self, upstream: socket.socket) -> None:
        ctx, route = self.ctx, self.route
        imp = route.impairment
        if imp is not None and imp.shapes:
            ctx.live.add(self)  # until the transports are made (the group's close waits for it)
            self.task = ctx.loop.create_task(self._link_shaped(upstream))
            return
        SpliceRelay(ctx.poller, ctx.pipes, route.record, ctx.live, self.client, upstream).start()

    async def _link_shaped(self, upstream: socket.socket) -> None:
        try:
            await relay_shaped(self.ctx, self.route.record, self.route.impairment, self.client, upstream)
        except OSError as exc:
            log.debug("%s: relay failed: %s", self.route.record.service_port, exc)
        finally:
            self.ctx.live.discard(self)

    def close(self) -> None:
        """The group is closing or the node went away."""
        if self.task is not None:
            if not self.task.done():
                self.task.cancel()
            return
        if self.sock is not None:
            self._stop_waiting().close()
        self.ctx.live.discard(self)
        self.route.record.finish(RESET)
        reset_socket(self.client)
