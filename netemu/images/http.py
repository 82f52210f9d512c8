"""The small HTTP/1.1 server loop shared by the HTTP emulations (nginx, httpd, agnhost,
http-echo).

Owns: reading requests from an asyncio stream (request line, headers, Content-Length or chunked
body, ``Expect: 100-continue``), keep-alive and ``Connection: close`` for HTTP/1.1 and 1.0,
limits (request line, header block, body), and turning any malformed input into an error
response followed by a close - never an exception. Requests are answered one at a time, so
pipelined requests are served in order.

What a response looks like on the wire (status wording, header order, error pages, access log)
belongs to the server product being played: an ``HttpStyle``. Handlers return a ``Response``
(or an awaitable of one) holding only their own headers and body.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

MAX_REQUEST_LINE = 8192
MAX_HEADER_BYTES = 32768
MAX_HEADERS = 100
MAX_BLANK_LINES = 8       # empty lines tolerated before a request line (RFC 9112 §2.2)

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(r"HTTP/(\d)\.(\d)")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")
_LINE_ENDS = (b"\r\n", b"\n")


@dataclass(slots=True)
class Request:
    method: str
    target: str                      # as sent: /path?query
    path: str                        # still percent-encoded
    query: str
    version: str                     # "HTTP/1.1" or "HTTP/1.0"
    headers: list[tuple[str, str]]
    body: bytes
    peer: tuple[str, int]            # the client's address as this server sees it
    keep_alive: bool                 # what the client asked for

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    @property
    def line(self) -> str:
        return f"{self.method} {self.target} {self.version}"


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    close: bool = False      # close the connection after this response
    abort: bool = False      # close without answering (a process that died mid-request)
    after: Callable[[], None] | None = None   # called once the response is sent (or aborted)


Handler = Callable[[Request], Response | Awaitable[Response]]


def body_allowed(status: int) -> bool:
    return not (100 <= status < 200 or status in (204, 304))


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


_date_cache: tuple[int, str] = (0, "")


def http_date() -> str:
    """The Date header value, formatted once per second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


def render_head(status_line: str, headers: list[tuple[str, str]]) -> bytes:
    parts = [status_line, "\r\n"]
    for name, value in headers:
        parts += (name, ": ", value, "\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("latin-1", "replace")


class HttpStyle:
    """How one server product frames responses, words its errors and logs requests."""

    idle_timeout: float | None = 65.0   # seconds to wait for the next request head
    max_body: int = 1 << 20

    def head(self, request: Request | None, response: Response, keep_alive: bool) -> bytes:
        raise NotImplementedError

    def error(self, status: int, request: Request | None) -> Response:
        raise NotImplementedError

    def access(self, peer: tuple[str, int], request_line: str, request: Request | None,
               response: Response, body_bytes: int) -> None:
        """Called after each response; the default logs nothing."""


@dataclass(slots=True)
class _Rejected:
    status: int
    line: str = ""


async def serve_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     handler: Handler, style: HttpStyle) -> None:
    """Answer requests on one connection until either side closes it."""
    peername = writer.get_extra_info("peername") or ("", 0)
    peer = (peername[0], peername[1])
    try:
        while True:
            if style.idle_timeout is None:
                parsed = await _read_request(reader, writer, peer, style)
            else:
                async with asyncio.timeout(style.idle_timeout):
                    parsed = await _read_request(reader, writer, peer, style)
            if parsed is None:
                return
            if isinstance(parsed, _Rejected):
                response = style.error(parsed.status, None)
                await _send(writer, style, peer, parsed.line, None, response, False)
                return
            response = await _answer(handler, parsed, style)
            if response.abort:
                if response.after:
                    response.after()
                return
            keep_alive = parsed.keep_alive and not response.close
            await _send(writer, style, peer, parsed.line, parsed, response, keep_alive)
            if response.after:
                response.after()
            if not keep_alive:
                return
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
            ValueError, TimeoutError):
        return  # the client went away, sent an endless line or fell idle


async def _answer(handler: Handler, request: Request, style: HttpStyle) -> Response:
    try:
        result = handler(request)
        if not isinstance(result, Response):
            result = await result
        return result
    except Exception:
        logger.exception("HTTP handler failed for %s", request.line)
        response = style.error(500, request)
        response.close = True
        return response


async def _send(writer: asyncio.StreamWriter, style: HttpStyle, peer: tuple[str, int],
                request_line: str, request: Request | None, response: Response,
                keep_alive: bool) -> None:
    head = style.head(request, response, keep_alive)
    send_body = (response.body and body_allowed(response.status)
                 and (request is None or request.method != "HEAD"))
    writer.write(head + response.body if send_body else head)
    await writer.drain()
    style.access(peer, request_line, request, response, len(response.body) if send_body else 0)


async def _read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        peer: tuple[str, int], style: HttpStyle) -> Request | _Rejected | None:
    line = await reader.readline()
    blanks = 0
    while line in _LINE_ENDS:
        blanks += 1
        if blanks > MAX_BLANK_LINES:
            return None
        line = await reader.readline()
    if not line.endswith(b"\n"):
        return None     # EOF, possibly mid-line
    text = line.rstrip(b"\r\n").decode("latin-1")
    if len(line) > MAX_REQUEST_LINE:
        return _Rejected(414, text[:64])
    parts = text.split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
        return _Rejected(400, text)
    method, target, version = parts
    matched = _VERSION.fullmatch(version)
    if not matched:
        return _Rejected(400, text)
    if matched.group(1) != "1":
        return _Rejected(505 if matched.group(1) > "1" else 400, text)
    version = "HTTP/1.0" if matched.group(2) == "0" else "HTTP/1.1"

    headers: list[tuple[str, str]] = []
    size = 0
    while True:
        raw = await reader.readline()
        if not raw.endswith(b"\n"):
            return None
        if raw in _LINE_ENDS:
            break
        size += len(raw)
        if size > MAX_HEADER_BYTES or len(headers) >= MAX_HEADERS:
            return _Rejected(400, text)
        name, colon, value = raw.partition(b":")
        if not colon or not name or name[:1] in b" \t" or name[-1:] in b" \t":
            return _Rejected(400, text)
        headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))

    path, query = _split_target(target)
    if path is None:
        return _Rejected(400, text)
    connection: set[str] = set()
    host_seen = False
    content_length: int | None = None
    transfer_encoding = ""
    expect_continue = False
    for name, value in headers:
        key = name.lower()
        if key == "connection":
            connection.update(t.strip().lower() for t in value.split(","))
        elif key == "host":
            host_seen = True
        elif key == "content-length":
            if not value.isdigit() or (content_length is not None and int(value) != content_length):
                return _Rejected(400, text)
            content_length = int(value)
        elif key == "transfer-encoding":
            transfer_encoding = value.lower()
        elif key == "expect":
            expect_continue = value.lower() == "100-continue"
    if version == "HTTP/1.1" and not host_seen:
        return _Rejected(400, text)
    if version == "HTTP/1.1":
        keep_alive = "close" not in connection
    else:
        keep_alive = "keep-alive" in connection and "close" not in connection

    body = b""
    if transfer_encoding:
        if content_length is not None:
            return _Rejected(400, text)
        if transfer_encoding.rsplit(",", 1)[-1].strip() != "chunked":
            return _Rejected(501, text)
        if expect_continue and version == "HTTP/1.1":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        read = await _read_chunked(reader, style.max_body)
        if isinstance(read, int):
            return _Rejected(read, text) if read else None
        body = read
    elif content_length:
        if content_length > style.max_body:
            return _Rejected(413, text)
        if expect_continue and version == "HTTP/1.1":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await reader.readexactly(content_length)

    return Request(method, target, path, query, version, headers, body, peer, keep_alive)


def _split_target(target: str) -> tuple[str | None, str]:
    if target.startswith("/"):
        path, _, query = target.partition("?")
        return path, query
    if target == "*":
        return "*", ""
    if target[:7].lower() == "http://" or target[:8].lower() == "https://":
        try:
            parts = urlsplit(target)
        except ValueError:
            return None, ""
        return parts.path or "/", parts.query
    return None, ""


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes | int:
    """The decoded body, or a status to reject with (0: the client went away)."""
    chunks: list[bytes] = []
    total = 0
    while True:
        line = await reader.readline()
        if not line.endswith(b"\n"):
            return 0
        size_text = line.split(b";", 1)[0].strip()
        if not _CHUNK_SIZE.fullmatch(size_text):
            return 400
        size = int(size_text, 16)
        if size == 0:
            break
        total += size
        if total > limit:
            return 413
        chunk = await reader.readexactly(size + 2)
        if chunk[-2:] != b"\r\n":
            return 400
        chunks.append(chunk[:size])
    while True:   # trailer section
        line = await reader.readline()
        if not line.endswith(b"\n"):
            return 0
        if line in _LINE_ENDS:
            return b"".join(chunks)


__all__ = [
    "Handler", "HttpStyle", "Request", "Response", "body_allowed", "http_date", "reason",
    "render_head", "serve_http",
]
