"""SPDY/3.1 framing, the server's half, as Kubernetes' streaming protocols use it (moby/spdystream).

kubectl 1.31+ runs ``pods/portforward`` as SPDY tunnelled through a WebSocket (subprotocol
``SPDY/3.1+portforward.k8s.io``): the WebSocket's binary messages are a byte stream of SPDY
frames, with no regard for message boundaries. This module turns that stream into frames and
frames into bytes; it does no I/O. What spdystream sends and expects:

- control frames (SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS,
  WINDOW_UPDATE) and data frames, each with an 8-byte header;
- header blocks (SYN_STREAM, SYN_REPLY, HEADERS) compressed with zlib and SPDY/3's dictionary,
  one compression stream per direction for the whole session, each block sync-flushed;
- no flow control (spdystream ignores WINDOW_UPDATE and never sends it).
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from netemu.errors import NetemuError

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
# RST_STREAM status codes
PROTOCOL_ERROR, REFUSED_STREAM, CANCEL = 1, 3, 5
MAX_FRAME = 1 << 24  # the 24-bit length field; larger frames are a protocol error
_HEADER = struct.Struct(">II")


def _dictionary() -> bytes:
    """SPDY/3's zlib dictionary for header blocks (draft 3, section 2.6.10.1)."""
    words = ("options head post put delete trace accept accept-charset accept-encoding accept-language "
             "accept-ranges age allow authorization cache-control connection content-base content-encoding "
             "content-language content-length content-location content-md5 content-range content-type date "
             "etag expect expires from host if-match if-modified-since if-none-match if-range "
             "if-unmodified-since last-modified location max-forwards pragma proxy-authenticate "
             "proxy-authorization range referer retry-after server te trailer transfer-encoding upgrade "
             "user-agent vary via warning www-authenticate method get status").split()
    words += ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
    tail = ("100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
            "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
            "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
            "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
            "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
            "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
            "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.")
    return b"".join(struct.pack(">I", len(w)) + w.encode() for w in words) + tail.encode()


DICTIONARY = _dictionary()


class SpdyError(NetemuError):
    """The peer broke the SPDY framing (the session ends)."""


@dataclass
class Frame:
    """One frame: ``kind`` is a control type, or 0 for a data frame."""
    kind: int
    flags: int
    stream_id: int = 0
    data: bytes = b""                                        # a data frame's payload
    headers: dict[str, list[str]] = field(default_factory=dict)  # SYN_STREAM, SYN_REPLY, HEADERS
    status: int = 0                                          # RST_STREAM, GOAWAY
    ping_id: int = 0

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)

    def header(self, name: str) -> str:
        values = self.headers.get(name.lower())
        return values[0] if values else ""


class Codec:
    """One session's framing: ``feed`` bytes as they come, ``frames`` out; ``encode_*`` for replies."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._deflate = zlib.compressobj(zlib.Z_BEST_COMPRESSION, zdict=DICTIONARY)

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= 8:
            first, second = _HEADER.unpack_from(self._buffer)
            length = second & 0xFFFFFF
            if len(self._buffer) < 8 + length:
                break
            body = bytes(self._buffer[8:8 + length])
            del self._buffer[:8 + length]
            flags = second >> 24
            if first & 0x80000000:
                frame = self._control((first >> 16) & 0x7FFF, first & 0xFFFF, flags, body)
                if frame is not None:
                    frames.append(frame)
            else:
                frames.append(Frame(0, flags, first & 0x7FFFFFFF, data=body))
        return frames

    def _control(self, version: int, kind: int, flags: int, body: bytes) -> Frame | None:
        if version != VERSION:
            raise SpdyError(f"unsupported SPDY version {version}")
        try:
            if kind == SYN_STREAM:
                stream_id = struct.unpack_from(">I", body)[0] & 0x7FFFFFFF
                return Frame(kind, flags, stream_id, headers=self._headers(body[10:]))
            if kind in (SYN_REPLY, HEADERS):
                stream_id = struct.unpack_from(">I", body)[0] & 0x7FFFFFFF
                return Frame(kind, flags, stream_id, headers=self._headers(body[4:]))
            if kind in (RST_STREAM, GOAWAY):
                stream_id, status = struct.unpack_from(">II", body)
                return Frame(kind, flags, stream_id & 0x7FFFFFFF, status=status)
            if kind == PING:
                return Frame(kind, flags, ping_id=struct.unpack_from(">I", body)[0])
        except struct.error as exc:
            raise SpdyError(f"a short SPDY control frame of type {kind}") from exc
        return Frame(kind, flags)  # SETTINGS, WINDOW_UPDATE and the unknown: nothing to act on

    def _headers(self, block: bytes) -> dict[str, list[str]]:
        try:
            raw = self._inflate.decompress(block)
        except zlib.error as exc:
            raise SpdyError(f"a SPDY header block that does not decompress: {exc}") from exc
        try:
            (count,), at = struct.unpack_from(">I", raw), 4
            headers: dict[str, list[str]] = {}
            for _ in range(count):
                (size,) = struct.unpack_from(">I", raw, at)
                name, at = raw[at + 4:at + 4 + size].decode("latin-1").lower(), at + 4 + size
                (size,) = struct.unpack_from(">I", raw, at)
                value, at = raw[at + 4:at + 4 + size].decode("latin-1"), at + 4 + size
                headers.setdefault(name, []).extend(value.split("\0"))
        except struct.error as exc:
            raise SpdyError("a truncated SPDY header block") from exc
        return headers

    def _header_block(self, headers: dict[str, str]) -> bytes:
        raw = struct.pack(">I", len(headers))
        for name, value in headers.items():
            raw += struct.pack(">I", len(name)) + name.lower().encode("latin-1")
            raw += struct.pack(">I", len(value)) + value.encode("latin-1")
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def encode_reply(self, stream_id: int, *, fin: bool = False, headers: dict[str, str] | None = None) -> bytes:
        return _control(SYN_REPLY, FLAG_FIN if fin else 0,
                        struct.pack(">I", stream_id) + self._header_block(headers or {}))


def _control(kind: int, flags: int, body: bytes) -> bytes:
    return _HEADER.pack(0x80000000 | (VERSION << 16) | kind, (flags << 24) | len(body)) + body


def encode_data(stream_id: int, data: bytes, *, fin: bool = False) -> bytes:
    return _HEADER.pack(stream_id & 0x7FFFFFFF, ((FLAG_FIN if fin else 0) << 24) | len(data)) + data


def encode_reset(stream_id: int, status: int = CANCEL) -> bytes:
    return _control(RST_STREAM, 0, struct.pack(">II", stream_id, status))


def encode_ping(ping_id: int) -> bytes:
    return _control(PING, 0, struct.pack(">I", ping_id))


def encode_goaway(last_stream_id: int, status: int = 0) -> bytes:
    return _control(GOAWAY, 0, struct.pack(">II", last_stream_id, status))
