"""Connections from the ingress proxy to endpoints, kept alive and reused (``Pool``).

An ``Upstream`` is an asyncio protocol on one connection to one endpoint. It carries one exchange
at a time: the exchange writes the request to ``transport`` and gets the endpoint's answer through
its ``Answer`` callbacks, parsed by httptools (llhttp): ``head``, ``body`` (decoded from chunked),
``done`` and ``lost``. When the answer is complete and the endpoint keeps the connection alive,
the connection goes back to the pool for the next request to that endpoint; idle connections
close after ``IDLE_TIMEOUT`` seconds (checked by one sweep, not a timer per request), and at most
``MAX_IDLE`` wait per endpoint, as nginx's ``keepalive`` upstream pool does.

A response to ``HEAD`` has no body whatever its ``Content-Length`` says; llhttp cannot be told,
so the connection gets a fresh parser after such a head. A ``101 Switching Protocols`` answer
(llhttp raises ``HttpParserUpgrade``) hands the bytes after it, and all later ones, to the
exchange's ``raw`` callback: the connection is then a tunnel and never returns to the pool.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any, Callable, Protocol

import httptools

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
IDLE_TIMEOUT = 60.0
MAX_IDLE = 256
Endpoint = tuple[str, int]
NewSocket = Callable[[int, int], socket.socket]


class Answer(Protocol):
    """What an ``Upstream`` reports to the exchange it carries; ``client`` is corked while one
    read is parsed (``corked``, ``uncork()``), so what it produces leaves in one send."""
    is_head: bool
    client: Any

    def head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], upgraded: bool) -> None: ...
    def body(self, data: bytes) -> None: ...
    def done(self, reusable: "Upstream | None") -> None: ...
    def raw(self, data: bytes) -> None: ...
    def lost(self, reused: bool) -> None: ...


class Upstream(asyncio.Protocol):
    __slots__ = ("pool", "endpoint", "transport", "answer", "parser", "reason", "headers", "status", "reused",
                 "started", "tunnel", "tunnel_next", "idle_since", "_skip")

    def __init__(self, pool: "Pool", endpoint: Endpoint) -> None:
        self.pool, self.endpoint = pool, endpoint
        self.transport: asyncio.Transport | None = None
        self.answer: Answer | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.reason, self.headers, self.status = b"", [], 0
        self.reused = False       # carried an exchange before: may have been closed by the endpoint meanwhile
        self.started = False      # bytes of the current answer arrived
        self.tunnel = self.tunnel_next = False
        self.idle_since = 0.0
        self._skip = False

    def carry(self, answer: Answer) -> None:
        self.answer, self.started = answer, False

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        answer = self.answer
        if self.tunnel:
            if answer is not None:
                answer.raw(data)
            return
        if answer is None:    # an idle connection has nothing to say: it is broken
            self.transport.close()  # type: ignore[union-attr]
            return
        self.started = True
        self._skip = False
        client = answer.client
        client.corked = True   # what this read produces for the client goes out in one send
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.tunnel = True
            rest = data[exc.args[0]:]
            if rest and self.answer is not None:
                self.answer.raw(rest)
        except httptools.HttpParserError as exc:
            log.info("ingress: endpoint %s:%s sent a malformed answer: %s", *self.endpoint, exc)
            self.transport.close()  # type: ignore[union-attr]
        finally:
            client.uncork()

    def eof_received(self) -> bool:
        if self.tunnel and self.answer is not None:
            self.answer.raw(b"")
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.forget(self)
        answer, self.answer = self.answer, None
        if answer is not None:
            answer.lost(self.reused and not self.started)

    # -- httptools callbacks
    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        answer = self.answer
        if answer is None or self._skip:
            self.reason, self.headers = b"", []
            return
        parser, reason, headers = self.parser, self.reason, self.headers
        self.reason, self.headers = b"", []
        status = self.status = parser.get_status_code()
        upgraded = parser.should_upgrade()   # llhttp sets it before this callback: a 101 with Upgrade
        self.tunnel_next = upgraded
        answer.head(status, reason, headers, upgraded)
        if answer.is_head and status >= 200:
            keep_alive = parser.should_keep_alive()
            self._skip = True        # the rest of this message is not a body; a new parser for the next
            self.parser = httptools.HttpResponseParser(self)
            self._finish(keep_alive)

    def on_body(self, body: bytes) -> None:
        if self.answer is not None and not self._skip:
            self.answer.body(body)

    def on_message_complete(self) -> None:
        if self._skip or self.answer is None or self.tunnel_next or 100 <= self.status < 200:
            return       # (a 101 becomes a tunnel; other 1xx answers precede the real one)
        self._finish(self.parser.should_keep_alive())

    def _finish(self, keep_alive: bool) -> None:
        """The answer is complete: the exchange gets the connection back to keep (``done``) when
        the endpoint keeps it alive; else it closes."""
        answer, self.answer = self.answer, None
        if not keep_alive:
            self.transport.close()  # type: ignore[union-attr]
        answer.done(self if keep_alive else None)  # type: ignore[union-attr]


class Pool:
    """Idle keep-alive connections per endpoint, and new ones made on demand."""

    def __init__(self, new_socket: NewSocket | None = None) -> None:
        self._new_socket = new_socket
        self._idle: dict[Endpoint, list[Upstream]] = {}
        self._all: set[Upstream] = set()
        self._sweep: asyncio.TimerHandle | None = None
        self.closed = False

    def take(self, endpoint: Endpoint, spare: Upstream | None = None) -> Upstream | None:
        """An idle connection to ``endpoint`` — ``spare`` (the client connection's last one) when
        it goes there and is still open — or None."""
        if spare is not None and spare.endpoint == endpoint and spare.transport is not None \
                and not spare.transport.is_closing():
            spare.reused = True
            return spare
        if spare is not None:
            self.release(spare)
        idle = self._idle.get(endpoint)
        while idle:
            upstream = idle.pop()
            if upstream.transport is not None and not upstream.transport.is_closing():
                upstream.reused = True
                return upstream
        return None

    async def connect(self, endpoint: Endpoint) -> Upstream:
        """A new connection to ``endpoint`` (OSError or TimeoutError when it cannot be made)."""
        loop = asyncio.get_running_loop()
        ip, port = endpoint
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        make = self._new_socket
        if make is None:
            _, upstream = await asyncio.wait_for(
                loop.create_connection(lambda: Upstream(self, endpoint), ip, port), CONNECT_TIMEOUT)
        else:
            sock = make(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, (ip, port)), CONNECT_TIMEOUT)
                _, upstream = await loop.create_connection(lambda: Upstream(self, endpoint), sock=sock)
            except BaseException:
                sock.close()
                raise
        if self.closed:
            upstream.transport.close()  # type: ignore[union-attr]
            raise ConnectionError("the ingress proxy is closing")
        self._all.add(upstream)
        return upstream

    def release(self, upstream: Upstream) -> None:
        idle = self._idle.setdefault(upstream.endpoint, [])
        if self.closed or len(idle) >= MAX_IDLE:
            upstream.transport.close()  # type: ignore[union-attr]
            return
        upstream.idle_since = time.monotonic()
        idle.append(upstream)
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(IDLE_TIMEOUT / 4, self._close_idle)

    def forget(self, upstream: Upstream) -> None:
        self._all.discard(upstream)
        idle = self._idle.get(upstream.endpoint)
        if idle and upstream in idle:
            idle.remove(upstream)

    def _close_idle(self) -> None:
        self._sweep = None
        cutoff = time.monotonic() - IDLE_TIMEOUT
        waiting = False
        for idle in self._idle.values():
            for upstream in [u for u in idle if u.idle_since < cutoff]:
                upstream.transport.close()  # type: ignore[union-attr]
                idle.remove(upstream)
            waiting = waiting or bool(idle)
        if waiting and not self.closed:
            self._sweep = asyncio.get_running_loop().call_later(IDLE_TIMEOUT / 4, self._close_idle)

    def close(self) -> None:
        self.closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for upstream in list(self._all):
            if upstream.transport is not None:
                upstream.transport.close()
        self._idle.clear()
