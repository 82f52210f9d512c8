"""Message heads as the ingress proxy forwards them: the request head it sends to an endpoint, the
response head it sends to the client, and its own small answers (404, 502, 503, 400).

Headers arrive as ``(name, value)`` byte pairs from httptools. Hop-by-hop fields (RFC 9110
§7.6.1) and those the ``Connection`` field names are never forwarded; the proxy frames bodies
itself (``Content-Length`` as received, else chunked). Towards the endpoint it sets
``X-Forwarded-For`` (appended to the client's), ``X-Real-IP``, ``X-Forwarded-Host``,
``-Proto`` and ``-Port`` as ingress-nginx does, replacing any the client sent, and passes the
client's ``Host`` on.
"""
from __future__ import annotations

from typing import Sequence

SERVER = "netemu-ingress"
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
                        b"trailer", b"transfer-encoding", b"upgrade", b"proxy-connection"})
Headers = Sequence[tuple[bytes, bytes]]

_REASONS = {400: "Bad Request", 404: "Not Found", 502: "Bad Gateway", 503: "Service Temporarily Unavailable"}


def _tokens(value: bytes) -> set[bytes]:
    return {t.strip().lower() for t in value.split(b",")}


def connection_named(headers: Headers) -> set[bytes]:
    """The field names the ``Connection`` fields list (besides the hop-by-hop ones)."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named |= _tokens(value)
    return named


class RequestHead:
    """What the proxy sends an endpoint for a request, and what it learnt reading the fields."""
    __slots__ = ("head", "host", "chunked", "has_body", "upgrade")

    def __init__(self, head: bytes, host: bytes, chunked: bool, has_body: bool, upgrade: bytes | None) -> None:
        self.head, self.host, self.chunked, self.has_body, self.upgrade = head, host, chunked, has_body, upgrade


def request_head(method: bytes, target: bytes, headers: Headers, peer: bytes, forwarded: bytes,
                 upgrading: bool) -> RequestHead:
    """The head sent to the endpoint, made in one pass over the fields. ``peer`` is the client's
    address, ``forwarded`` the connection's fixed lines (``forwarded_part``); ``upgrading`` keeps
    ``Upgrade`` for a WebSocket. Without a ``Host`` field the head has none (``with_host``)."""
    named = connection_named(headers) if len(headers) > 1 else set()
    lines = [method, b" ", target, b" HTTP/1.1\r\n"]
    previous = host = b""
    upgrade: bytes | None = None
    chunked = has_body = False
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP:
            if lower == b"transfer-encoding":
                chunked = has_body = b"chunked" in value.lower()
            elif lower == b"upgrade":
                upgrade = value
            continue
        if lower in named:
            continue
        if lower.startswith(b"x-forwarded-") or lower == b"x-real-ip":
            if lower == b"x-forwarded-for":
                previous = previous + b", " + value if previous else value
            continue
        if lower == b"host":
            host = value
        elif lower == b"content-length":
            has_body = has_body or value.strip() not in (b"", b"0")
        lines += (name, b": ", value, b"\r\n")
    lines += (b"X-Forwarded-For: ", previous + b", " + peer if previous else peer, b"\r\n",
              b"X-Forwarded-Host: ", host, b"\r\n", forwarded)
    if chunked:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    if upgrading:
        upgrade = upgrade or b""
        lines += (b"Connection: Upgrade\r\nUpgrade: ", upgrade, b"\r\n")
    else:
        upgrade = None
    lines.append(b"\r\n")
    return RequestHead(b"".join(lines), host, chunked, has_body, upgrade)


def with_host(head: bytes, host: bytes) -> bytes:
    """``head`` with a ``Host`` field after its request line (for a client that sent none)."""
    line, _, rest = head.partition(b"\r\n")
    return line + b"\r\nHost: " + host + b"\r\n" + rest


def forwarded_part(peer: str, scheme: str, port: int) -> bytes:
    return f"X-Real-IP: {peer}\r\nX-Forwarded-Proto: {scheme}\r\nX-Forwarded-Port: {port}\r\n".encode("latin-1")


def response_head(status: int, reason: bytes, headers: Headers) -> tuple[list[bytes], bool, bytes | None]:
    """The head for the client, still open for the proxy's framing lines: the endpoint's fields
    less hop-by-hop ones; whether it has a ``Content-Length``; its ``Upgrade`` value."""
    named = connection_named(headers) if len(headers) > 1 else set()
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    has_length = False
    upgrade = None
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP:
            if lower == b"upgrade":
                upgrade = value
            continue
        if lower in named:
            continue
        if lower == b"content-length":
            has_length = True
        lines += (name, b": ", value, b"\r\n")
    return lines, has_length, upgrade


def _page(status: int, keep_alive: bool) -> bytes:
    reason = _REASONS[status]
    body = (f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
            f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>{SERVER}</center>\r\n"
            "</body>\r\n</html>\r\n").encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nServer: {SERVER}\r\nContent-Type: text/html\r\n"
            f"Content-Length: {len(body)}\r\n" + ("" if keep_alive else "Connection: close\r\n") + "\r\n")
    return head.encode() + body


PAGES = {(status, keep_alive): _page(status, keep_alive) for status in _REASONS for keep_alive in (True, False)}


def page(status: int, keep_alive: bool) -> bytes:
    """ingress-nginx's small HTML answer for ``status``, framed for the client's connection."""
    return PAGES[status, keep_alive]
