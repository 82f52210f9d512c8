"""The ingress controller's L7 proxy: HTTP/1.1 with aiohttp, in netemu's event loop.

Each request is routed by its Host header and path through the index's current
``routes.RouteTable`` (read per request, so route changes reach open keep-alive connections at
their next request), sent to one ready endpoint of the backend Service (round-robin) over a
keep-alive client pool (an ``Upgrade`` request, WebSocket, on a connection of its own: see
``upgrade``), with ``X-Forwarded-For`` / ``-Proto`` / ``-Host`` / ``X-Real-IP`` set
as ingress-nginx sets them and the client's Host passed on. Bodies stream both ways (chunked when
the length is unknown). No route: 404; a backend without ready endpoints (or without its Service):
503; an endpoint that refuses or breaks: 502. The answers carry ingress-nginx's small HTML pages.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from typing import Any, Callable

import aiohttp
from aiohttp import web

from . import upgrade
from .routes import RouteTable, strip_port

log = logging.getLogger(__name__)

SERVER = "netemu-ingress"
# RFC 9110 §7.6.1 hop-by-hop fields, never forwarded
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "transfer-encoding", "upgrade", "proxy-connection"})


def _page(status: int, reason: str) -> web.Response:
    body = (f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
            f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>{SERVER}</center>\r\n"
            "</body>\r\n</html>\r\n")
    return web.Response(status=status, text=body, content_type="text/html", headers={"Server": SERVER})


def _forward_headers(request: web.BaseRequest, host: str) -> dict[str, str]:
    connection_named = {t.strip().lower() for t in request.headers.get("Connection", "").split(",")}
    out: dict[str, str] = {}
    for name, value in request.headers.items():
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in connection_named or lower.startswith("x-forwarded-"):
            continue
        out[name] = value if name not in out else out[name] + ", " + value
    peer = request.remote or ""
    previous = request.headers.get("X-Forwarded-For")
    out["X-Forwarded-For"] = f"{previous}, {peer}" if previous else peer
    out["X-Real-IP"] = peer
    out["X-Forwarded-Host"] = host
    out["X-Forwarded-Proto"] = request.scheme
    out["X-Forwarded-Port"] = str((request.transport.get_extra_info("sockname") or ("", 0))[1]) \
        if request.transport else ""
    out["Host"] = request.headers.get("Host", host)
    return out


class IngressProxy:
    """Serves HTTP on a socket it is given; ``table`` is asked for the routes at each request."""

    def __init__(self, table: Callable[[], RouteTable],
                 new_socket: Callable[[int, int], socket.socket] | None = None) -> None:
        """``new_socket(family, type)`` makes the sockets of connections to endpoints (in the
        controller pod's network on the netns backend); plain sockets by default."""
        self._table = table
        self._new_socket = new_socket
        self._session: aiohttp.ClientSession | None = None
        self._server: web.Server | None = None
        self.listener: Any = None
        self.tls_listener: Any = None

    async def serve(self, sock: socket.socket) -> Any:
        loop = asyncio.get_running_loop()
        make = self._new_socket
        connector = aiohttp.TCPConnector(
            limit=0, keepalive_timeout=60, force_close=False,
            **({"socket_factory": lambda info: make(info[0], info[1])} if make is not None else {}))
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                              timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))
        self._server = web.Server(self._handle, access_log=None)
        self.listener = await loop.create_server(self._server, sock=sock)
        return self.listener

    async def serve_tls(self, sock: socket.socket, context: ssl.SSLContext) -> Any:
        """Also serve HTTPS on ``sock`` (after ``serve``), terminating TLS with ``context``."""
        assert self._server is not None, "serve() first"
        self.tls_listener = await asyncio.get_running_loop().create_server(self._server, sock=sock, ssl=context)
        return self.tls_listener

    async def close(self) -> None:
        for listener in (self.listener, self.tls_listener):
            if listener is not None:
                listener.close()
        if self._server is not None:
            await self._server.shutdown(1.0)
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        host = strip_port(request.headers.get("Host", "") or "")
        backend = self._table().match(host, request.path)
        if backend is None:
            return _page(404, "Not Found")
        endpoint = backend.pick()
        if endpoint is None:
            return _page(503, "Service Temporarily Unavailable")
        ip, port = endpoint
        if upgrade.is_upgrade(request):
            try:
                return await upgrade.relay(request, ip, port, _forward_headers(request, host), self._new_socket,
                                           HOP_BY_HOP)
            except (OSError, asyncio.TimeoutError) as exc:
                log.info("ingress: upgrade %s %s → %s:%s failed: %s", request.method, request.path, ip, port, exc)
                return _page(502, "Bad Gateway")
        url = f"http://{ip}:{port}{request.raw_path}"
        assert self._session is not None
        data = request.content if request.body_exists else None
        try:
            async with self._session.request(
                    request.method, url, headers=_forward_headers(request, host), data=data, allow_redirects=False,
                    skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type")) as upstream:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                connection_named = {t.strip().lower() for t in upstream.headers.get("Connection", "").split(",")}
                for name, value in upstream.headers.items():
                    lower = name.lower()
                    if lower in HOP_BY_HOP or lower in connection_named:
                        continue
                    response.headers.add(name, value)
                if "Content-Length" not in upstream.headers and upstream.status not in (204, 304):
                    response.enable_chunked_encoding()
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientConnectionError, OSError) as exc:
            log.info("ingress: %s %s → %s:%s failed: %s", request.method, request.path, ip, port, exc)
            return _page(502, "Bad Gateway")


def listening_socket(server: Any) -> socket.socket:
    """A duplicate of the listening socket of an asyncio server (made by the fabric, not serving),
    for aiohttp's protocol to serve on."""
    sock = server.sockets[0]
    dup = socket.socket(sock.family, sock.type, sock.proto, fileno=os.dup(sock.fileno()))
    dup.setblocking(False)
    return dup
