"""Deleting connection-tracking entries in a node namespace, over ctnetlink (``NETLINK_NETFILTER``).

What kube-proxy does with ``conntrack -D`` when a UDP endpoint goes (pkg/proxy/conntrack): a UDP
"connection" DNAT'd to a pod lives in conntrack for as long as its client keeps sending, so
without this a client that keeps its source port goes on sending to the removed pod. ``delete``
lists the table once (a dump of the IPv4 entries), picks the UDP entries that ``match``, and
deletes each by its original tuple. The socket is made in the node's namespace; no tool needed.
"""
from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass
from typing import Callable, Iterator

from netemu.errors import FabricError

from . import namespaces

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_DELETE = 1, 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_F_NESTED = 0x8000
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY = 1, 2
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST = 1, 2
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
CTA_ZONE = 18
UDP = 17


@dataclass(frozen=True)
class Tuple:
    src: str
    dst: str
    proto: int
    sport: int
    dport: int


@dataclass(frozen=True)
class Entry:
    orig: Tuple
    reply: Tuple


def _attrs(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            return
        yield kind & ~NLA_F_NESTED, data[offset + 4:offset + length]
        offset += (length + 3) & ~3


def _attr(kind: int, payload: bytes, nested: bool = False) -> bytes:
    header = struct.pack("=HH", 4 + len(payload), kind | (NLA_F_NESTED if nested else 0))
    return header + payload + b"\0" * (-len(payload) % 4)


def _parse_tuple(data: bytes) -> Tuple | None:
    fields: dict[str, object] = {}
    for kind, value in _attrs(data):
        if kind == CTA_TUPLE_IP:
            for k, v in _attrs(value):
                if k == CTA_IP_V4_SRC:
                    fields["src"] = socket.inet_ntoa(v)
                elif k == CTA_IP_V4_DST:
                    fields["dst"] = socket.inet_ntoa(v)
        elif kind == CTA_TUPLE_PROTO:
            for k, v in _attrs(value):
                if k == CTA_PROTO_NUM:
                    fields["proto"] = v[0]
                elif k == CTA_PROTO_SRC_PORT:
                    fields["sport"] = struct.unpack("!H", v[:2])[0]
                elif k == CTA_PROTO_DST_PORT:
                    fields["dport"] = struct.unpack("!H", v[:2])[0]
    try:
        return Tuple(**fields)  # type: ignore[arg-type]
    except TypeError:  # not IPv4 with ports
        return None


def _message(kind: int, flags: int, seq: int, payload: bytes = b"") -> bytes:
    body = struct.pack("=BBH", socket.AF_INET, 0, 0) + payload  # nfgenmsg
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_CTNETLINK << 8) | kind, flags, seq, 0) + body


def _encode_tuple(t: Tuple) -> bytes:
    ip = _attr(CTA_IP_V4_SRC, socket.inet_aton(t.src)) + _attr(CTA_IP_V4_DST, socket.inet_aton(t.dst))
    proto = (_attr(CTA_PROTO_NUM, bytes([t.proto])) + _attr(CTA_PROTO_SRC_PORT, struct.pack("!H", t.sport))
             + _attr(CTA_PROTO_DST_PORT, struct.pack("!H", t.dport)))
    return _attr(CTA_TUPLE_IP, ip, nested=True) + _attr(CTA_TUPLE_PROTO, proto, nested=True)


def _replies(sock: socket.socket, seq: int) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each answer to request ``seq`` until it is done."""
    while True:
        data = sock.recv(1 << 20)
        offset = 0
        while offset + 16 <= len(data):
            length, kind, _flags, got, _pid = struct.unpack_from("=IHHII", data, offset)
            payload = data[offset + 16:offset + length]
            offset += (length + 3) & ~3
            if got != seq:
                continue
            if kind == NLMSG_DONE:
                return
            if kind == NLMSG_ERROR:
                code = -struct.unpack_from("=i", payload)[0]
                if code:
                    raise OSError(code, errno.errorcode.get(code, str(code)))
                return
            yield kind, payload


def _delete_in_namespace(match: Callable[[Entry], bool]) -> int:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.bind((0, 0))
        sock.send(_message(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, 1))
        doomed = []
        for _kind, payload in _replies(sock, 1):
            tuples = {kind: value for kind, value in _attrs(payload[4:])}  # after nfgenmsg
            orig = _parse_tuple(tuples.get(CTA_TUPLE_ORIG, b""))
            reply = _parse_tuple(tuples.get(CTA_TUPLE_REPLY, b""))
            if orig is not None and reply is not None and orig.proto == UDP and match(Entry(orig, reply)):
                doomed.append(orig)
        deleted = 0
        for seq, orig in enumerate(doomed, start=2):
            sock.send(_message(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, seq,
                               _attr(CTA_TUPLE_ORIG, _encode_tuple(orig), nested=True)))
            try:
                for _ in _replies(sock, seq):
                    pass
                deleted += 1
            except FileNotFoundError:  # gone meanwhile
                pass
        return deleted
    finally:
        sock.close()


async def delete_udp(netns: str, match: Callable[[Entry], bool]) -> int:
    """Delete the UDP entries of ``netns`` for which ``match(entry)`` holds; how many went."""
    try:
        return await namespaces.acall_in(netns, _delete_in_namespace, match)
    except OSError as exc:
        raise FabricError(f"conntrack in {netns}: {exc}") from exc
