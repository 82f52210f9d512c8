"""Upstream forwarding for names outside the cluster's zones (CoreDNS ``forward``).

``Forwarder.forward`` relays a client's query as it came (under a fresh ID) to the configured
upstreams in order, over UDP with a timeout and again over TCP when the UDP answer is truncated
(over TCP from the start when the client used TCP), and returns the reply under the client's ID,
or None when every upstream failed (the server then answers SERVFAIL). ``Forwarder.lookup``
resolves one name for the CNAME chase of ExternalName services.

Sockets come from a factory ``(family, type) -> socket`` so that on the netns backend they are
made in the right network namespace; by default a plain socket. ``host_upstreams`` reads the
nameservers of a resolv.conf, like CoreDNS's ``forward . /etc/resolv.conf``: the cluster may use
it, tests never do.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import struct
from collections.abc import Callable, Sequence

from dnslib import RR, DNSRecord
from dnslib import DNSError as DNSLibError

from .config import parse_hostport
from .wire import TC

log = logging.getLogger(__name__)

SocketFactory = Callable[[int, int], socket.socket]


def plain_socket(family: int, type: int) -> socket.socket:
    return socket.socket(family, type)


def upstreams_from_resolv_conf(text: str) -> list[str]:
    """The ``nameserver`` addresses of a resolv.conf text, in order."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            out.append(fields[1])
    return out


def host_upstreams(path: str = "/etc/resolv.conf") -> list[str]:
    """The host's nameservers (CoreDNS's default upstream); [] when the file is unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return upstreams_from_resolv_conf(f.read())
    except OSError:
        return []


class _Reply(asyncio.DatagramProtocol):
    def __init__(self, qid: bytes) -> None:
        self.qid = qid
        self.future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if data[:2] == self.qid and not self.future.done():
            self.future.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.future.done():
            self.future.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.future.done():
            self.future.set_exception(exc or ConnectionError("closed"))


class Forwarder:
    def __init__(self, upstreams: Sequence[str | tuple[str, int]], timeout: float = 2.0,
                 make_socket: SocketFactory | None = None) -> None:
        self.upstreams = [u if isinstance(u, tuple) else parse_hostport(u) for u in upstreams]
        self.timeout = timeout
        self.make_socket = make_socket or plain_socket

    async def forward(self, query: bytes, tcp: bool = False, limit: int | None = None) -> bytes | None:
        """The upstream's reply to ``query`` under the query's own ID, or None.

        A truncated UDP reply is asked again over TCP; the full reply replaces it only when it
        fits the client's ``limit`` (a UDP client gets the TC reply otherwise, and retries over
        TCP itself)."""
        qid = query[:2]
        for addr in self.upstreams:
            fresh = secrets.token_bytes(2)
            payload = fresh + query[2:]
            try:
                reply = await (self._tcp(addr, payload) if tcp else self._udp(addr, payload))
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ConnectionError) as exc:
                log.debug("upstream %s:%d failed: %r", addr[0], addr[1], exc)
                continue
            if len(reply) < 12 or reply[:2] != fresh:
                continue
            if not tcp and _flags(reply) & TC:
                try:
                    full = await self._tcp(addr, payload)
                    if len(full) >= 12 and full[:2] == fresh and (limit is None or len(full) <= limit):
                        reply = full
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ConnectionError) as exc:
                    log.debug("upstream %s:%d failed over tcp: %r", addr[0], addr[1], exc)
            return qid + reply[2:]
        return None

    async def lookup(self, name: str, qtype: int) -> tuple[list[RR], bool] | None:
        """Answer records for ``name``/``qtype`` from upstream and whether they were truncated."""
        request = DNSRecord.question(name.rstrip(".") or ".", "A")
        request.q.qtype = qtype
        reply = await self.forward(request.pack())
        if reply is None:
            return None
        try:
            parsed = DNSRecord.parse(reply)
        except (DNSLibError, ValueError, IndexError, struct.error):
            return None
        return list(parsed.rr), bool(parsed.header.tc)

    async def _udp(self, addr: tuple[str, int], payload: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        sock = self.make_socket(_family(addr[0]), socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(addr)
            transport, protocol = await loop.create_datagram_endpoint(lambda: _Reply(payload[:2]), sock=sock)
        except BaseException:
            sock.close()
            raise
        try:
            transport.sendto(payload)
            return await asyncio.wait_for(protocol.future, self.timeout)
        finally:
            transport.close()

    async def _tcp(self, addr: tuple[str, int], payload: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        sock = self.make_socket(_family(addr[0]), socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await asyncio.wait_for(loop.sock_connect(sock, addr), self.timeout)
            reader, writer = await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise
        try:
            writer.write(len(payload).to_bytes(2, "big") + payload)
            await writer.drain()
            size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), self.timeout), "big")
            return await asyncio.wait_for(reader.readexactly(size), self.timeout)
        finally:
            writer.close()


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def _flags(message: bytes) -> int:
    return int.from_bytes(message[2:4], "big") if len(message) >= 4 else 0
