"""DNS wire format for the server: parse a query strictly, pack a response with truncation.

No I/O. ``parse_query`` reads the header, the one question and the EDNS(0) OPT record by hand
(fast, and strict where the server must be: a header that parses but a message that does not
gives ``Reject(FORMERR)``; a packet too short for a header, or a response, is ``Drop``). It also
computes the answer-cache keys: the normalised ``key`` (query flags that matter, the question
bytes as sent, the EDNS size and DO bit) and whether the raw packet after its ID identifies the
answer on its own (``raw_key``), which lets the hot path skip parsing altogether.

``pack_response`` writes the question exactly as the query sent it (so the answer echoes the
query's case), then the records through a dnslib buffer; when the message outgrows the limit
(512 without EDNS, the EDNS payload size over UDP, 65535 over TCP) it stops at the last record
that fits and sets TC, as miekg/dns ``Msg.Truncate`` does for CoreDNS.
"""
from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from dnslib import RR, DNSBuffer, DNSLabel
from dnslib.bit import set_bits

QR, AA, TC, RD, RA, AD, CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0020, 0x0010
OPCODE_MASK = 0x7800

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, BADVERS = 0, 1, 2, 3, 4, 5, 16
OPT = 41
MIN_UDP = 512
MAX_MESSAGE = 65535
_HEADER = struct.Struct("!HHHHHH")
_LDH = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


class Drop(Exception):
    """Not worth an answer: shorter than a header, or a response."""


class Reject(Exception):
    """Answer with a header-only error (FORMERR, NOTIMP)."""

    def __init__(self, rcode: int, data: bytes) -> None:
        super().__init__(rcode)
        self.response = header_only(data, rcode)


@dataclass(slots=True)
class Query:
    id: int
    flags: int
    labels: tuple[bytes, ...]   # the question name as sent (case kept)
    name: str                   # the same in presentation form, e.g. "Svc1.NS.svc.cluster.local."
    qtype: int
    qclass: int
    question: bytes             # the raw question section
    edns: bool
    udp_size: int               # what the client can receive over UDP (512 without EDNS)
    do: bool
    edns_version: int
    key: bytes                  # normalised answer-cache key
    raw_key: bool               # True when data[2:] alone identifies the answer

    def limit(self, tcp: bool) -> int:
        return MAX_MESSAGE if tcp else max(MIN_UDP, self.udp_size)


def header_only(data: bytes, rcode: int) -> bytes:
    """A reply carrying just the header of ``data`` (ID, opcode) and ``rcode``."""
    qid, flags = struct.unpack_from("!HH", data)
    return _HEADER.pack(qid, QR | (flags & OPCODE_MASK) | (rcode & 0xF), 0, 0, 0, 0)


def parse_query(data: bytes) -> Query:
    if type(data) is not bytes:
        data = bytes(data)
    if len(data) < 12:
        raise Drop()
    qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if flags & QR:
        raise Drop()
    if flags & OPCODE_MASK:
        raise Reject(NOTIMP, data)
    if qdcount != 1 or ancount > 1 or nscount > 1 or arcount > 2:
        raise Reject(FORMERR, data)
    labels, offset = _question_name(data, 12)
    if offset + 4 > len(data):
        raise Reject(FORMERR, data)
    qtype, qclass = struct.unpack_from("!HH", data, offset)
    qend = offset + 4
    offset = qend
    for _ in range(ancount + nscount):
        offset, _rtype, _rclass, _ttl, _rd = _rr(data, offset)
    edns = do = False
    udp_size, version, opt_empty = MIN_UDP, 0, True
    for _ in range(arcount):
        name_at = offset
        offset, rtype, rclass, ttl, rdata = _rr(data, offset)
        if rtype != OPT:
            continue
        if edns or data[name_at] != 0:
            raise Reject(FORMERR, data)  # a second OPT, or one not owned by the root
        _check_options(data, rdata)
        edns, udp_size = True, max(MIN_UDP, rclass)
        version, do = (ttl >> 16) & 0xFF, bool(ttl & 0x8000)
        opt_empty = rdata[0] == rdata[1]
    question = data[12:qend]
    key = (struct.pack("!H", flags & (RD | CD)) + b"\xff" + question
           + (b"E" + bytes((do, version)) + udp_size.to_bytes(2, "big") if edns else b""))
    raw_key = (offset == len(data) and ancount == 0 and nscount == 0
               and (arcount == 0 or (arcount == 1 and edns and opt_empty)))
    return Query(qid, flags, labels, text_of(labels), qtype, qclass, question, edns, udp_size, do,
                 version, key, raw_key)


def _question_name(data: bytes, offset: int) -> tuple[tuple[bytes, ...], int]:
    labels = []
    total = 1
    end = len(data)
    while True:
        if offset >= end:
            raise Reject(FORMERR, data)
        length = data[offset]
        if length == 0:
            return tuple(labels), offset + 1
        if length & 0xC0:
            raise Reject(FORMERR, data)  # no compression pointers (or extended labels) in the question
        total += length + 1
        if total > 255 or offset + 1 + length > end:
            raise Reject(FORMERR, data)
        labels.append(data[offset + 1:offset + 1 + length])
        offset += 1 + length


def _skip_name(data: bytes, offset: int) -> int:
    end = len(data)
    while True:
        if offset >= end:
            raise Reject(FORMERR, data)
        length = data[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:
            if offset + 2 > end:
                raise Reject(FORMERR, data)
            return offset + 2
        if length & 0xC0:
            raise Reject(FORMERR, data)
        offset += 1 + length


def _rr(data: bytes, offset: int) -> tuple[int, int, int, int, tuple[int, int]]:
    """Skip one resource record: (next offset, type, class, ttl, (rdata start, rdata end))."""
    offset = _skip_name(data, offset)
    if offset + 10 > len(data):
        raise Reject(FORMERR, data)
    rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", data, offset)
    start = offset + 10
    if start + rdlen > len(data):
        raise Reject(FORMERR, data)
    return start + rdlen, rtype, rclass, ttl, (start, start + rdlen)


def _check_options(data: bytes, rdata: tuple[int, int]) -> None:
    offset, end = rdata
    while offset < end:
        if offset + 4 > end:
            raise Reject(FORMERR, data)
        (length,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + length
        if offset > end:
            raise Reject(FORMERR, data)


# ---------------------------------------------------------------------------- names


def text_of(labels: Sequence[bytes]) -> str:
    """Presentation form with a trailing dot; bytes outside letters, digits, ``-`` and ``_``
    become ``\\DDD``, so the text splits on dots unambiguously and lowercases safely."""
    if not labels:
        return "."
    parts = []
    for label in labels:
        if all(b in _LDH for b in label):
            parts.append(label.decode("ascii"))
        else:
            parts.append("".join(chr(b) if b in _LDH else f"\\{b:03d}" for b in label))
    return ".".join(parts) + "."


def label_of(text: str) -> DNSLabel:
    """The dnslib name for presentation text (``\\DDD`` escapes undone)."""
    stripped = text.rstrip(".") if text != "." else ""
    if not stripped:
        return DNSLabel(())
    if "\\" not in stripped:
        return DNSLabel(tuple(part.encode("latin-1") for part in stripped.split(".")))
    return DNSLabel(tuple(_unescape(part) for part in stripped.split(".")))


def _unescape(part: str) -> bytes:
    out = bytearray()
    i = 0
    while i < len(part):
        if part[i] == "\\" and part[i + 1:i + 4].isdigit():
            out.append(int(part[i + 1:i + 4]))
            i += 4
        else:
            out.append(ord(part[i]))
            i += 1
    return bytes(out)


# ---------------------------------------------------------------------------- responses


class _Buffer(DNSBuffer):
    """dnslib's buffer, but compression targets only where a 14-bit pointer can reach."""

    def encode_name(self, name):  # type: ignore[override]
        if not isinstance(name, DNSLabel):
            name = DNSLabel(name)
        rest = list(name.label)
        while rest:
            suffix = tuple(rest)
            pointer = self.names.get(suffix)
            if pointer is not None:
                self.pack("!H", set_bits(pointer, 3, 14, 2))
                return
            if self.offset < 0x4000:
                self.names[suffix] = self.offset
            element = rest.pop(0)
            self.pack("!B", len(element))
            self.append(element)
        self.append(b"\x00")


def pack_response(query: Query, rcode: int, answer: Sequence[RR] = (), authority: Sequence[RR] = (),
                  additional: Sequence[RR] = (), *, authoritative: bool = False, limit: int = MIN_UDP,
                  truncated: bool = False) -> bytes:
    """The reply to ``query``; records that do not fit in ``limit`` bytes are left out with TC."""
    flags = QR | (query.flags & (OPCODE_MASK | RD | CD)) | (rcode & 0xF)
    if authoritative:
        flags |= AA
    opt = b""
    if query.edns:
        ttl = ((rcode >> 4) & 0xFF) << 24 | (0x8000 if query.do else 0)
        opt = b"\x00" + struct.pack("!HHIH", OPT, max(MIN_UDP, min(query.udp_size, MAX_MESSAGE)), ttl, 0)
    buf = _Buffer()
    buf.pack("!HHHHHH", query.id, 0, 1, 0, 0, 0)
    buf.encode_name(DNSLabel(query.labels))
    buf.pack("!HH", query.qtype, query.qclass)
    budget = limit - len(opt)
    counts = [0, 0, 0]
    cut = False
    for section, records in enumerate((answer, authority, additional)):
        for rr in records:
            mark = buf.offset
            rr.pack(buf)
            if buf.offset > budget:
                del buf.data[mark:]
                buf.offset = mark
                cut = True
                break
            counts[section] += 1
        if cut:
            break
    if cut or truncated:
        flags |= TC
    if opt:
        buf.append(opt)
        counts[2] += 1
    buf.update(0, "!HHHHHH", query.id, flags, 1, *counts)
    return bytes(buf.data)
