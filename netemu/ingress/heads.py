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


# What a field name is to the proxy, by the name as received (a cache: one dict lookup per field
# instead of lowering and comparing it each time; names are few, the cache is bounded).
_PASS, _HOP, _XFF, _XDROP, _HOST, _LENGTH, _TE, _UPGRADE, _CONNECTION = range(9)
_KINDS: dict[bytes, int] = {}
_MAX_KINDS = 4096


def _kind(name: bytes) -> int:
    lower = name.lower()
    kind = (_TE if lower == b"transfer-encoding" else _UPGRADE if lower == b"upgrade"
            else _CONNECTION if lower == b"connection" else _HOP if lower in HOP_BY_HOP
            else _XFF if lower == b"x-forwarded-for"
            else _XDROP if lower.startswith(b"x-forwarded-") or lower == b"x-real-ip"
            else _HOST if lower == b"host" else _LENGTH if lower == b"content-length" else _PASS)
    if len(_KINDS) < _MAX_KINDS:
        _KINDS[name] = kind
    return kind


def _names_more(value: bytes) -> bool:
    """Whether a ``Connection`` value names fields beyond the hop-by-hop ones (``close``,
    ``keep-alive``, ``upgrade`` are the usual), which must then be removed too."""
    return not _tokens(value) <= _CONNECTION_USUAL


_CONNECTION_USUAL = HOP_BY_HOP | {b"close", b""}


def request_head(method: bytes, target: bytes, headers: Headers, peer: bytes, forwarded: bytes,
                 upgrading: bool) -> RequestHead:
    """The head sent to the endpoint, made in one pass over the fields. ``peer`` is the client's
    address, ``forwarded`` the connection's fixed lines (``forwarded_part``); ``upgrading`` keeps
    ``Upgrade`` for a WebSocket. Without a ``Host`` field the head has none (``with_host``)."""
    lines = [method, b" ", target, b" HTTP/1.1\r\n"]
    previous = host = b""
    upgrade: bytes | None = None
    chunked = has_body = False
    kinds = _KINDS
    for name, value in headers:
        kind = kinds.get(name)
        if kind is None:
            kind = _kind(name)
        if kind == _PASS:
            lines += (name, b": ", value, b"\r\n")
        elif kind == _HOST:
            host = value
            lines += (name, b": ", value, b"\r\n")
        elif kind == _LENGTH:
            has_body = has_body or value.strip() not in (b"", b"0")
            lines += (name, b": ", value, b"\r\n")
        elif kind == _XFF:
            previous = previous + b", " + value if previous else value
        elif kind == _TE:
            chunked = has_body = b"chunked" in value.lower()
        elif kind == _UPGRADE:
            upgrade = value
        elif kind == _CONNECTION and _names_more(value):
            return _request_head_naming(method, target, headers, peer, forwarded, upgrading)
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


def _request_head_naming(method: bytes, target: bytes, headers: Headers, peer: bytes, forwarded: bytes,
                         upgrading: bool) -> RequestHead:
    """``request_head`` for a request whose ``Connection`` field names other fields to drop."""
    named = connection_named(headers) | {b"connection"}
    kept = [(name, value) for name, value in headers if name.lower() not in named]
    return request_head(method, target, kept, peer, forwarded, upgrading)


def with_host(head: bytes, host: bytes) -> bytes:
    """``head`` with a ``Host`` field after its request line (for a client that sent none)."""
    line, _, rest = head.partition(b"\r\n")
    return line + b"\r\nHost: " + host + b"\r\n" + rest


def forwarded_part(peer: str, scheme: str, port: int) -> bytes:
    return f"X-Real-IP: {peer}\r\nX-Forwarded-Proto: {scheme}\r\nX-Forwarded-Port: {port}\r\n".encode("latin-1")


def response_head(status: int, reason: bytes, headers: Headers) -> tuple[list[bytes], bool, bytes | None]:
    """The head for the client, still open for the proxy's framing lines: the endpoint's fields
    less hop-by-hop ones; whether it has a ``Content-Length``; its ``Upgrade`` value."""
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    has_length = False
    upgrade = None
    kinds = _KINDS
    for name, value in headers:
        kind = kinds.get(name)
        if kind is None:
            kind = _kind(name)
        if kind == _LENGTH:
            has_length = True
        elif kind == _UPGRADE:
            upgrade = value
            continue
        elif kind == _CONNECTION and _names_more(value):
            named = connection_named(headers) | {b"connection"}
            return response_head(status, reason, [(n, v) for n, v in headers if n.lower() not in named])
        elif kind in (_HOP, _TE, _CONNECTION):
            continue
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
