"""The zero-copy TCP relay: each direction moves data socket → pipe → socket with splice(2).

Every connection without shaping (no delay, jitter or rate) is relayed here, in the kernel:
what one socket receives is spliced into a pipe and from the pipe into the other socket, never
copied into Python. Each direction runs on readiness callbacks on the raw sockets (through the
proxy's ``poller.Poller``, which wakes them on errors on every loop): when its source is
readable, one splice takes in up to a pipe's worth and the next sends it on.
A destination that cannot take it all stops the direction from reading its source until the
destination is writable again, so backpressure is the pipe plus the two sockets' buffers.

Pipes are borrowed from a shared pool for one burst at a time: a direction keeps one only while
its data waits for a blocked destination, so idle connections hold none, and the pool lets its
spare pipes go when the last relay ends. Pipes are made 1 MiB
where the system allows it (fewer, larger splices); an unprivileged user over the kernel's pipe
limits gets smaller ones, which work the same, only with more calls.

Half-close is relayed: EOF from one side (a splice that returns 0) becomes ``shutdown(SHUT_WR)``
on the other (the pipe is always empty by then: a direction reads only when it has nothing
queued) and the reverse direction keeps flowing; the relay ends once both directions have
ended. An error on either socket (a reset, or writing to a peer that has closed) resets both,
whenever it comes. Both sockets stay watched for errors while no direction reads them (after
EOF, or while the other socket drains), so a peer that resets then is noticed at once rather than
when the other side next speaks. A reset that follows a FIN reads as EOF to splice (the FIN came
first) and is met by that watch right after: the other peer sees the FIN, then the reset, as it
would through a DNAT. A socket on which the relay sent its FIN first and then read the peer's
is in TIME_WAIT, and a reset after that never reaches it (through a DNAT it would meet the other
peer's socket in TIME_WAIT the same way).
Both sockets get a fixed receive buffer, so that what a relay holds for a client that does not
read stays a few megabytes (the pipe, two socket buffers) rather than what autotuning allows, and
TCP_NODELAY (``tune_for_relay``): the listener is tuned once and its accepted sockets inherit the
options, the upstream socket is tuned before it connects, so a relay makes no such call itself.
Where the relay's two hops stay inside one host's network stack (the loopback backend) they also
get ``RELAY_CONGESTION``, Reno, which the kernel always has and allows: a congestion control that
paces (BBR, a common default) spaces a relay's segments out with timers on a path that has no
bottleneck, and left a fifth of both cores idle in a bulk transfer (``bench/proxy.py``: 38 against
48 Gbit/s). With kube-proxy's DNAT the only congestion control is the client's own; on the netns
backend, where the wire between nodes can delay and lose, the upstream hop keeps the system's.
Per connection the relay costs one epoll registration per socket (reader and error watch at
once); when the second direction ends, the relay just closes both sockets (the close sends the
FIN a ``shutdown`` would, neither socket holds unread data then, and closing takes a socket out of
the epoll set: ``Poller.closing``, no ``epoll_ctl``); its directions then let go
of it, so an ended relay is freed at once rather than left, a reference cycle, to the collector.
Byte counts are kept per direction (one addition per splice) and go to the connection record
when the relay ends.
"""
from __future__ import annotations

import fcntl
import logging
import os
import socket
from typing import Any

import _socket

from .connlog import OK, RESET
from .poller import Poller
from .sockopts import reset_socket

log = logging.getLogger(__name__)

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
SPLICE_F_MOVE = getattr(os, "SPLICE_F_MOVE", 1)
SPLICE_F_NONBLOCK = getattr(os, "SPLICE_F_NONBLOCK", 2)
_FLAGS = SPLICE_F_MOVE | SPLICE_F_NONBLOCK
PIPE_SIZE = 1 << 20   # bytes asked of each splice, and the pipe size requested
RECEIVE_BUFFER = 1 << 20  # SO_RCVBUF of both sockets (the kernel doubles it): bounds what a relay holds
RELAY_CONGESTION = b"reno"  # relays inside one network stack (see above)
_KEEP_IDLE = 32       # pipes the pool keeps for the next burst

_splice = os.splice  # called with positional arguments: no keyword parsing per call
_close = _socket.socket.close  # socket.socket.close without its Python layers (no makefile() here)


def tune_for_relay(sock: socket.socket, congestion: bytes | None = None) -> None:
    """TCP_NODELAY, the fixed receive buffer and the ``congestion`` control algorithm, if any, on
    a relayed socket, or on a listener (whose accepted sockets inherit all three)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # Splicing a megabyte at a time makes receive autotuning grow a buffer up to tcp_rmem's
    # maximum (often 32 MiB) while the other side is not reading.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    if congestion is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, congestion)
        except OSError:  # not allowed or not there: the system's default
            pass

Pipe = tuple[int, int]  # (read end, write end)


class PipePool:
    """Empty non-blocking pipes, lent out per burst and taken back empty, while relays use them."""

    def __init__(self, size: int = PIPE_SIZE, keep: int = _KEEP_IDLE) -> None:
        self.size = size
        self.keep = keep
        self.users = 0
        self._idle: list[Pipe] = []

    def join(self) -> None:
        self.users += 1

    def leave(self) -> None:
        self.users -= 1
        if not self.users:
            self.close()

    def take(self) -> Pipe:
        """An empty pipe (raises OSError when no file descriptor is left)."""
        if self._idle:
            return self._idle.pop()
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(w, F_SETPIPE_SZ, self.size)
        except OSError:  # over /proc/sys/fs/pipe-max-size or the user's pipe pages: keep the default
            pass
        return r, w

    def give(self, pipe: Pipe) -> None:
        """Return an empty pipe."""
        if len(self._idle) < self.keep:
            self._idle.append(pipe)
        else:
            _close_pipe(pipe)

    def close(self) -> None:
        for pipe in self._idle:
            _close_pipe(pipe)
        self._idle.clear()


def _close_pipe(pipe: Pipe) -> None:
    os.close(pipe[0])
    os.close(pipe[1])


class SpliceRelay:
    """Both directions of one proxied connection; ``start`` begins relaying."""

    __slots__ = ("poller", "pool", "record", "live", "client", "upstream", "up", "down", "done")

    def __init__(self, poller: Poller, pool: PipePool, record: Any, live: set,
                 client: socket.socket, upstream: socket.socket) -> None:
        self.poller = poller
        self.pool = pool
        self.record = record
        self.live = live
        self.client = client
        self.upstream = upstream
        self.up = _Direction(self, pool, client, upstream)
        self.down = _Direction(self, pool, upstream, client)
        self.done = False

    @property
    def node(self) -> str:
        return self.record.node

    def start(self) -> None:
        """Relay (both sockets tuned by ``tune_for_relay`` already)."""
        self.live.add(self)
        self.pool.join()
        watch = self.poller.watch
        for direction in (self.up, self.down):
            watch(direction.src_fd, direction.readable, direction.source_failed)
            direction.reading = True

    def check(self, sock: socket.socket) -> bool:
        """Fail the relay if ``sock`` has a pending error (a reset); True if it had."""
        if self.done:
            return True
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if not err:
            return False
        self.fail(OSError(err, os.strerror(err)))
        return True

    def fail(self, exc: OSError) -> None:
        log.debug("%s: relay reset: %s", self.record.service_port, exc)
        self._finish(RESET, reset=True)

    def close(self) -> None:
        """Stop at once (the group is closing or the node went away)."""
        self._finish(OK, reset=False)

    def _finish(self, outcome: str, *, reset: bool) -> None:
        if self.done:
            return
        self.done = True
        self.live.discard(self)
        up, down, closing = self.up, self.down, self.poller.closing
        for direction in (up, down):
            direction.stop()
        self.pool.leave()
        for sock, fd in ((self.client, up.src_fd), (self.upstream, down.src_fd)):
            closing(fd)
            if reset:
                reset_socket(sock)
            else:
                _close(sock)
        self.record.finish(outcome, up.nbytes, down.nbytes)


class _Direction:
    """One direction of a relay: ``src`` → pipe → ``dst``."""

    __slots__ = ("relay", "poller", "pool", "src", "dst", "src_fd", "dst_fd", "pipe", "queued", "nbytes",
                 "reading", "writing", "ended")

    def __init__(self, relay: SpliceRelay, pool: PipePool, src: socket.socket, dst: socket.socket) -> None:
        self.relay: SpliceRelay | None = relay  # None once the relay has ended (no reference cycle)
        self.poller = relay.poller
        self.pool = pool
        self.src = src
        self.dst = dst
        self.src_fd = src.fileno()
        self.dst_fd = dst.fileno()
        self.pipe: Pipe | None = None
        self.queued = 0      # bytes in the pipe
        self.nbytes = 0      # bytes relayed so far
        self.reading = False
        self.writing = False
        self.ended = False

    def source_failed(self) -> None:
        """An error or hang-up on the source while nothing reads it."""
        if self.relay is not None:
            self.relay.check(self.src)

    def readable(self) -> None:
        """The source has data or EOF (the pipe is empty: a direction reads only then)."""
        relay = self.relay
        if relay is None:  # a callback already due when the relay ended
            return
        pool = self.pool
        try:
            pipe = pool._idle.pop() if pool._idle else pool.take()
        except OSError as exc:
            log.warning("%s: no pipe for the relay: %s", relay.record.service_port, exc)
            relay.fail(exc)
            return
        try:
            n = _splice(self.src_fd, pipe[1], PIPE_SIZE, None, None, _FLAGS)
        except BlockingIOError:
            pool.give(pipe)
            return
        except OSError as exc:
            pool.give(pipe)
            relay.fail(exc)
            return
        if n == 0:
            pool.give(pipe)
            self._eof(relay)
            return
        self.nbytes += n
        try:  # the common case: the destination takes it all at once
            sent = _splice(pipe[0], self.dst_fd, n, None, None, _FLAGS)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            _close_pipe(pipe)
            relay.fail(exc)
            return
        if sent == n:  # empty again: back to the pool (``give``, inline: once per message)
            idle = pool._idle
            if len(idle) < pool.keep:
                idle.append(pipe)
            else:
                pool.give(pipe)
            return
        self.pipe, self.queued = pipe, n - sent
        self._flush(relay)

    def writable(self) -> None:
        relay = self.relay
        if relay is None:
            return
        self._flush(relay)
        if not self.queued and self.writing:
            self.writing = False
            self.poller.remove_writer(self.dst_fd)
            self.poller.add_reader(self.src_fd, self.readable)
            self.reading = True

    def _flush(self, relay: SpliceRelay) -> None:
        pipe = self.pipe
        assert pipe is not None
        while self.queued:
            try:
                n = _splice(pipe[0], self.dst_fd, self.queued, None, None, _FLAGS)
            except BlockingIOError:
                if not self.writing:  # hold the source until the destination drains
                    self.reading = False
                    self.poller.remove_reader(self.src_fd)
                    self.writing = True
                    self.poller.add_writer(self.dst_fd, self.writable)
                return
            except OSError as exc:
                relay.fail(exc)
                return
            self.queued -= n
        self.pool.give(pipe)
        self.pipe = None

    def _eof(self, relay: SpliceRelay) -> None:
        self.ended = True
        if relay.up.ended and relay.down.ended:  # the last direction: closing both sends the FIN
            relay._finish(OK, reset=False)
            return
        self.reading = False
        self.poller.remove_reader(self.src_fd)
        try:
            self.dst.shutdown(socket.SHUT_WR)
        except OSError:  # the peer is gone; its own direction will tell
            pass

    def stop(self) -> None:
        """Drop any data still in the pipe (the relay then forgets both sockets' callbacks) and
        let go of the relay, so that it is freed as soon as it is dropped, not by the collector."""
        self.reading = self.writing = False
        self.relay = None
        if self.pipe is not None:
            _close_pipe(self.pipe)
            self.pipe = None
            self.queued = 0
