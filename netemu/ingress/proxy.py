"""The ingress controller's L7 proxy: HTTP/1.1 in netemu's event loop, parsed by httptools (llhttp).

Each client connection is a ``ClientConnection`` protocol; each request on it an ``Exchange``.
A request is routed by its Host header and path through the index's current
``routes.RouteTable`` (read per request, so route changes reach open keep-alive connections at
their next request) to one ready endpoint of the backend Service (round-robin), over a keep-alive
connection from the ``upstream.Pool``, with the head that ``heads.request_head`` writes
(``X-Forwarded-*`` as ingress-nginx sets them, the client's Host passed on). Bodies stream both
ways as they arrive, with flow control (a full client socket pauses the endpoint's and back);
a body of unknown length is sent chunked. Requests pipelined on one connection are answered in
order. No route: 404; a backend without ready endpoints (or without its Service): 503; an endpoint
that refuses or breaks before answering: 502 (a request without a body is retried once on a new
connection when a reused one turns out closed, as browsers and nginx do). An ``Upgrade``
request (WebSocket) gets a connection of its own; a ``101`` answer joins the two connections
into a tunnel until either side closes; any other answer is passed back and the connection ends,
since the client asked to leave HTTP.

No aiohttp on this path: its request and response objects cost several times what the relay
itself does (``bench/ingress.py`` measures the proxy against HAProxy).
"""
from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import deque
from typing import Any, Callable
from urllib.parse import unquote

import httptools

from . import heads
from .routes import RouteTable, strip_port
from .upstream import Endpoint, NewSocket, Pool, Upstream

log = logging.getLogger(__name__)

MAX_QUEUED = 16           # pipelined requests read ahead of the one being answered
_NO_BODY_STATUS = (204, 304)


class Exchange:
    """One request and its answer; ``ClientConnection`` runs them one at a time, in order."""
    __slots__ = ("client", "method", "is_head", "keep_alive", "chunked_in", "endpoint", "status", "head_out",
                 "pending", "request_done", "upstream", "answered", "chunked_out", "upgrade", "retried", "has_body",
                 "http11")

    def __init__(self, client: "ClientConnection", method: bytes, keep_alive: bool) -> None:
        self.client = client
        self.method = method
        self.is_head = method == b"HEAD"
        self.keep_alive = keep_alive
        self.chunked_in = False
        self.endpoint: Endpoint | None = None
        self.status = 0                   # the proxy's own answer (404, 503, 502), if any
        self.head_out = b""
        self.pending: list[bytes] = []    # request bytes not yet on an endpoint connection
        self.request_done = False
        self.upstream: Upstream | None = None
        self.answered = False             # the answer's head went to the client
        self.chunked_out = False
        self.upgrade: bytes | None = None
        self.retried = False
        self.has_body = False
        self.http11 = True

    # -- the request side (from the client's parser)
    def send(self, data: bytes) -> None:
        upstream = self.upstream
        if upstream is not None:
            upstream.transport.write(data)  # type: ignore[union-attr]
        elif not self.status:
            self.pending.append(data)

    def request_complete(self) -> None:
        self.request_done = True
        if self.chunked_in:
            self.send(b"0\r\n\r\n")
        if self.status and self.client.current is self:
            self._answer_locally()

    # -- running it (when it is first in line)
    def start(self) -> None:
        if self.status:
            if self.request_done:
                self._answer_locally()
            return
        client = self.client
        upstream = None
        if self.upgrade is None:
            spare, client.spare = client.spare, None
            upstream = client.pool.take(self.endpoint, spare)  # type: ignore[arg-type]
        if upstream is not None:
            self._attach(upstream)
        else:
            asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        try:
            upstream = await self.client.pool.connect(self.endpoint)  # type: ignore[arg-type]
        except (OSError, asyncio.TimeoutError) as exc:
            log.info("ingress: %s → %s:%s failed: %s", self.method.decode("latin-1"), *self.endpoint, exc)  # type: ignore[misc]
            if self.client.current is self and not self.client.closed:
                self.status = 502
                self.pending.clear()
                if self.request_done:
                    self._answer_locally()
            return
        if self.client.current is not self or self.client.closed:
            upstream.transport.close()  # type: ignore[union-attr]
            return
        self._attach(upstream)

    def _attach(self, upstream: Upstream) -> None:
        self.upstream = upstream
        upstream.carry(self)
        transport = upstream.transport
        assert transport is not None
        transport.write(self.head_out)
        if self.pending:
            transport.writelines(self.pending)
            self.pending = []
        if self.client.paused_writing:
            transport.pause_reading()

    def _answer_locally(self) -> None:
        self.client.write(heads.page(self.status, self.keep_alive))
        self.client.finished(self, self.keep_alive)

    # -- the answer side (upstream.Answer)
    def head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], upgraded: bool) -> None:
        lines, has_length, upgrade = heads.response_head(status, reason, headers)
        if 100 <= status < 200 and not upgraded:      # e.g. 100 Continue: the answer follows
            lines.append(b"\r\n")
            self.client.write(b"".join(lines))
            return
        self.answered = True
        if upgraded:
            lines += (b"Connection: Upgrade\r\nUpgrade: ", upgrade or self.upgrade or b"", b"\r\n")
            self.client.start_tunnel(self)
        elif self.is_head or status in _NO_BODY_STATUS or has_length:
            pass
        elif self.http11:
            self.chunked_out = True
            lines.append(b"Transfer-Encoding: chunked\r\n")
        else:
            self.keep_alive = False       # an HTTP/1.0 client: the end of the body is the end of the connection
        if not self.keep_alive and not upgraded:
            lines.append(b"Connection: close\r\n")
        lines.append(b"\r\n")
        self.client.write(b"".join(lines))

    def body(self, data: bytes) -> None:
        if self.chunked_out:
            self.client.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.client.write(data)

    def done(self, reusable: Upstream | None) -> None:
        """The answer is complete; ``reusable``: its connection, kept alive by the endpoint."""
        self.upstream = None
        client = self.client
        if self.chunked_out:
            client.write(b"0\r\n\r\n")
        if reusable is not None:
            client.keep_spare(reusable)
        client.finished(self, self.keep_alive and self.upgrade is None)

    def raw(self, data: bytes) -> None:
        self.client.tunnel_data(data)


    def lost(self, reused: bool) -> None:
        self.upstream = None
        client = self.client
        if client.tunnel is self:
            client.close()
            return
        if client.closed or client.current is not self:
            return
        if self.answered:              # broken in the middle of the answer: so is the client's connection
            client.abort()
            return
        if reused and not self.retried and self.request_done and not self.has_body:
            self.retried = True        # the endpoint had closed the idle connection: once more on a new one
            asyncio.ensure_future(self._connect())
            return
        log.info("ingress: %s → %s:%s broke before answering", self.method.decode("latin-1"), *self.endpoint)  # type: ignore[misc]
        self.status = 502
        if self.request_done:
            self._answer_locally()


def _path_of(target: bytes) -> bytes:
    """The path of an absolute-form request target (or "*")."""
    try:
        return httptools.parse_url(target).path or b"/"
    except httptools.HttpParserInvalidURLError:
        return b"/"


def _route(table: RouteTable, host_field: bytes, path: bytes) -> Any:
    """The backend ``table`` gives a Host field and a raw path (percent-decoded as aiohttp and
    nginx match it)."""
    host = host_field.decode("latin-1")
    if ":" in host:
        host = strip_port(host)
    text = unquote(path.decode("ascii", "replace")) if b"%" in path else path.decode("latin-1")
    return table.match(host, text)


class ClientConnection(asyncio.Protocol):
    """One client connection: parses requests, runs their exchanges in order."""

    def __init__(self, proxy: "IngressProxy", scheme: str) -> None:
        self.proxy, self.pool, self.scheme = proxy, proxy.pool, scheme
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Exchange] = deque()
        self.current: Exchange | None = None       # being answered
        self.reading: Exchange | None = None       # being parsed
        self.peer = b""
        self.forwarded = b""
        self.closed = False
        self.paused_writing = False
        self.paused_reading = False                # too many pipelined requests wait
        self.spare: Upstream | None = None         # the last endpoint connection, kept for the next request
        self.corked = False                        # writes wait in ``out`` for one send (``uncork``)
        self.out: list[bytes] = []
        self.tunnel: Exchange | None = None
        self.upgrading = False                     # an upgrade request was read: no more HTTP from the client
        self.early: list[bytes] = []               # client bytes after an upgrade request, before the 101
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._route: tuple[Any, bytes, bytes, Any] = (None, b"", b"", None)   # (table, host, path, backend) last routed

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.proxy.connections.add(self)
        peer = transport.get_extra_info("peername")
        sockname = transport.get_extra_info("sockname")
        self.peer = (peer[0] if peer else "").encode("latin-1")
        self.forwarded = heads.forwarded_part(self.peer.decode("latin-1"), self.scheme,
                                              sockname[1] if sockname else 0)

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self._to_tunnel(data)
            return
        if self.upgrading:
            self.early.append(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.upgrading = True
            rest = data[exc.args[0]:]
            if rest:
                self.early.append(rest)
        except httptools.HttpParserError as exc:
            log.info("ingress: a malformed request from %s: %s", self.peer.decode("latin-1"), exc)
            if self.current is None:
                self.write(heads.page(400, False))
            self.close()

    def eof_received(self) -> bool:
        if self.tunnel is not None and self.tunnel.upstream is not None:
            transport = self.tunnel.upstream.transport
            if transport is not None and transport.can_write_eof():
                transport.write_eof()
                return True
        return False

    def keep_spare(self, upstream: Upstream) -> None:
        """Keep a reusable endpoint connection for this connection's next request (most go to the
        same endpoint); the pool gets the one kept before, and this one when the client leaves."""
        if self.closed:
            self.pool.release(upstream)
            return
        if self.spare is not None and self.spare is not upstream:
            self.pool.release(self.spare)
        self.spare = upstream

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.proxy.connections.discard(self)
        spare, self.spare = self.spare, None
        if spare is not None and spare.transport is not None and not spare.transport.is_closing():
            self.pool.release(spare)
        for exchange in (self.current, self.tunnel):
            if exchange is not None and exchange.upstream is not None:
                upstream, exchange.upstream = exchange.upstream, None
                upstream.answer = None
                if upstream.transport is not None:
                    upstream.transport.close()   # mid-answer: not reusable
        self.queue.clear()
        self.current = self.tunnel = None

    def pause_writing(self) -> None:
        self.paused_writing = True
        exchange = self.tunnel or self.current
        if exchange is not None and exchange.upstream is not None and exchange.upstream.transport is not None:
            exchange.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused_writing = False
        exchange = self.tunnel or self.current
        if exchange is not None and exchange.upstream is not None and exchange.upstream.transport is not None:
            exchange.upstream.transport.resume_reading()

    # -- httptools callbacks
    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser, headers, target = self.parser, self._headers, self._url
        self._url, self._headers = b"", []
        exchange = Exchange(self, parser.get_method(), parser.should_keep_alive())
        exchange.http11 = parser.get_http_version() == "1.1"
        forwarded = heads.request_head(exchange.method, target, headers, self.peer, self.forwarded,
                                       parser.should_upgrade())
        exchange.chunked_in, exchange.has_body = forwarded.chunked, forwarded.has_body
        path = target.partition(b"?")[0] if target[:1] == b"/" else _path_of(target)
        table = self.proxy.table()
        memo = self._route
        if memo[0] is table and memo[1] == forwarded.host and memo[2] == path:
            backend = memo[3]       # the same host and path as this connection's last request
        else:
            backend = _route(table, forwarded.host, path)
            self._route = (table, forwarded.host, path, backend)
        if backend is None:
            exchange.status = 404
        else:
            endpoint = backend.pick()
            if endpoint is None:
                exchange.status = 503
            else:
                exchange.endpoint = endpoint
                exchange.upgrade = forwarded.upgrade
                exchange.head_out = forwarded.head if forwarded.host else \
                    heads.with_host(forwarded.head, b"%s:%d" % (endpoint[0].encode(), endpoint[1]))
        self.reading = exchange
        self.queue.append(exchange)
        if self.current is None:
            self._next()
        elif len(self.queue) > MAX_QUEUED and self.transport is not None:
            self.transport.pause_reading()
            self.paused_reading = True

    def on_body(self, body: bytes) -> None:
        exchange = self.reading
        if exchange is not None:
            exchange.send(b"%x\r\n%s\r\n" % (len(body), body) if exchange.chunked_in else body)

    def on_message_complete(self) -> None:
        exchange = self.reading
        if exchange is not None:
            exchange.request_complete()

    # -- used by exchanges
    def write(self, data: bytes) -> None:
        if self.corked:
            self.out.append(data)
        elif not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]

    def uncork(self) -> None:
        """Send what was written since ``cork``: a head and a small body leave in one segment."""
        self.corked = False
        out = self.out
        if out:
            self.out = []
            if not self.closed:
                self.transport.write(out[0] if len(out) == 1 else b"".join(out))  # type: ignore[union-attr]

    def finished(self, exchange: Exchange, keep_alive: bool) -> None:
        if self.current is not exchange:
            return
        self.current = None
        if self.queue and self.queue[0] is exchange:
            self.queue.popleft()
        if self.tunnel is exchange:
            return
        if not keep_alive or self.upgrading:    # (an upgrade the endpoint did not accept ends it)
            self.close()
            return
        if self.paused_reading and self.transport is not None and len(self.queue) <= MAX_QUEUED:
            self.paused_reading = False
            self.transport.resume_reading()
        self._next()

    def _next(self) -> None:
        if self.queue and self.current is None and not self.closed:
            self.current = self.queue[0]
            self.current.start()

    def start_tunnel(self, exchange: Exchange) -> None:
        """The endpoint accepted the upgrade: from now on bytes pass both ways as they are."""
        self.tunnel, self.upgrading = exchange, False
        if self.early and exchange.upstream is not None and exchange.upstream.transport is not None:
            exchange.upstream.transport.writelines(self.early)
        self.early = []

    def tunnel_data(self, data: bytes) -> None:
        """Bytes from the endpoint after its 101; b"" when it half-closed."""
        if data:
            self.write(data)
            return
        if self.transport is not None and not self.closed:
            if self.transport.can_write_eof():
                self.transport.write_eof()
            else:
                self.close()

    def _to_tunnel(self, data: bytes) -> None:
        upstream = self.tunnel.upstream if self.tunnel is not None else None
        if upstream is None or upstream.transport is None:
            self.close()
            return
        upstream.transport.write(data)

    def close(self) -> None:
        """Close after sending what is written (corked writes too)."""
        if self.transport is not None and not self.transport.is_closing():
            self.uncork()
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class IngressProxy:
    """Serves HTTP on a socket it is given; ``table`` is asked for the routes at each request."""

    def __init__(self, table: Callable[[], RouteTable], new_socket: NewSocket | None = None) -> None:
        """``new_socket(family, type)`` makes the sockets of connections to endpoints (in the
        controller pod's network on the netns backend); plain sockets by default."""
        self.table = table
        self.pool = Pool(new_socket)
        self.connections: set[ClientConnection] = set()
        self.listener: Any = None
        self.tls_listener: Any = None

    async def serve(self, sock: socket.socket) -> Any:
        self.listener = await asyncio.get_running_loop().create_server(
            lambda: ClientConnection(self, "http"), sock=sock)
        return self.listener

    async def serve_tls(self, sock: socket.socket, context: ssl.SSLContext) -> Any:
        """Also serve HTTPS on ``sock``, terminating TLS with ``context``."""
        self.tls_listener = await asyncio.get_running_loop().create_server(
            lambda: ClientConnection(self, "https"), sock=sock, ssl=context)
        return self.tls_listener

    async def close(self) -> None:
        for listener in (self.listener, self.tls_listener):
            if listener is not None:
                listener.close()
        for connection in list(self.connections):
            connection.close()
        self.pool.close()
        for listener in (self.listener, self.tls_listener):
            if listener is not None:
                await listener.wait_closed()


def listening_socket(server: Any) -> socket.socket:
    """A duplicate of the listening socket of an asyncio server (made by the fabric, not serving),
    for the proxy to serve on."""
    import os
    sock = server.sockets[0]
    dup = socket.socket(sock.family, sock.type, sock.proto, fileno=os.dup(sock.fileno()))
    dup.setblocking(False)
    return dup
