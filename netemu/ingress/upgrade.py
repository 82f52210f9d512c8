"""Connection upgrades (WebSocket) through the ingress proxy.

A request with ``Connection: upgrade`` and an ``Upgrade`` header is sent to the endpoint on a
connection of its own (never the keep-alive pool) with those two headers kept. If the endpoint
answers ``101 Switching Protocols``, the 101 goes back to the client and the two connections are
then joined: bytes relay both ways until either side closes, as ingress-nginx does for WebSocket.
Any other answer is passed back as it is and the client connection is closed, since it asked to
leave HTTP. The endpoint's answer head is parsed with the standard library's HTTP header parser.
aiohttp's server hands the bytes after an upgrade request to a parser set on its protocol
(``set_parser``, the hook its WebSocket support uses); ``_ToEndpoint`` is that parser.
"""
from __future__ import annotations

import asyncio
import http.client
import io
import socket
from typing import Callable

from aiohttp import web

NewSocket = Callable[[int, int], socket.socket]
CONNECT_TIMEOUT = 5.0
HEAD_LIMIT = 65536
BODY_TIMEOUT = 30.0   # for a refused upgrade's answer without Content-Length


def is_upgrade(request: web.BaseRequest) -> bool:
    connection = {t.strip().lower() for t in request.headers.get("Connection", "").split(",")}
    return "upgrade" in connection and bool(request.headers.get("Upgrade"))


class _ToEndpoint:
    """Receives the client's bytes after the upgrade (aiohttp's payload-parser interface)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if not self._writer.is_closing():
            self._writer.write(data)
        return False, b""

    def feed_eof(self) -> None:
        if self._writer.is_closing():
            return
        if self._writer.can_write_eof():
            self._writer.write_eof()
        else:
            self._writer.close()


async def _connect(ip: str, port: int, new_socket: NewSocket | None) -> tuple[asyncio.StreamReader,
                                                                              asyncio.StreamWriter]:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = new_socket(family, socket.SOCK_STREAM) if new_socket else socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (ip, port)), CONNECT_TIMEOUT)
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=HEAD_LIMIT)


async def relay(request: web.BaseRequest, ip: str, port: int, headers: dict[str, str],
                new_socket: NewSocket | None, hop_by_hop: frozenset[str]) -> web.StreamResponse:
    """Forward the upgrade request ``request`` (``headers`` already forwarded-style) to ``ip:port``
    and relay the joined connections until one side closes. OSError when the endpoint fails."""
    reader, writer = await _connect(ip, port, new_socket)
    protocol = request.protocol
    try:
        fields = {**headers, "Connection": "Upgrade", "Upgrade": request.headers["Upgrade"]}
        head = f"{request.method} {request.raw_path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
        writer.write(head.encode("latin-1") + b"\r\n")
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:  # not OSErrors
            raise ConnectionError(f"the endpoint closed or sent no HTTP answer to an upgrade: {exc}") from exc
        status_line, _, rest = raw.partition(b"\r\n")
        parts = status_line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ConnectionError(f"the endpoint answered an upgrade with {status_line[:80]!r}")
        status, reason = int(parts[1]), (parts[2] if len(parts) > 2 else "")
        answer = http.client.parse_headers(io.BytesIO(rest))
        response = web.StreamResponse(status=status, reason=reason)
        for name, value in answer.items():
            if name.lower() not in hop_by_hop and name.lower() != "content-length":
                response.headers.add(name, value)
        if status != 101:
            length = answer.get("Content-Length")
            body = await asyncio.wait_for(
                reader.readexactly(int(length)) if length and length.isdigit() else reader.read(), BODY_TIMEOUT)
            response.content_length = len(body)
            await response.prepare(request)
            await response.write(body)
            await response.write_eof()
            return response
        response.headers["Connection"] = "Upgrade"
        response.headers["Upgrade"] = answer.get("Upgrade", request.headers["Upgrade"])
        await response.prepare(request)
        transport = request.transport
        protocol.set_parser(_ToEndpoint(writer))  # type: ignore[arg-type]
        try:
            while transport is not None and not transport.is_closing():
                data = await reader.read(HEAD_LIMIT)
                if not data:
                    break
                transport.write(data)
        except OSError:   # the endpoint broke the joined connection: close the client's too
            pass
        return response
    finally:
        writer.close()
        protocol.force_close()
