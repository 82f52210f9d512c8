"""The DNS server on uvloop, as netemu runs it: the hot path, TCP, truncation and forwarding."""
from __future__ import annotations

import asyncio

import uvloop
from dnslib import DNSRecord

from test_dns_helpers import BIG_ENDPOINTS, question, running, tcp_exchange, udp_exchange
from test_dns_server import StubUpstream


def test_uvloop_serves_udp_tcp_and_forwards() -> None:
    uvloop.run(_scenario())  # a plain test: pytest-asyncio's loop is the standard one


async def _scenario() -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
    async with StubUpstream() as stub, running(upstreams=(f"{stub.host}:{stub.port}",)) as server:
        for _ in range(2):  # a miss, then the cached answer
            q = question("my-service.default.svc.cluster.local.")
            reply = DNSRecord.parse(await udp_exchange(server.host, server.port, q.pack()))
            assert reply.header.id == q.header.id and [str(rr.rdata) for rr in reply.rr] == ["10.96.0.11"]
        assert DNSRecord.parse(await udp_exchange(
            server.host, server.port, question("big.default.svc.cluster.local.").pack())).header.tc
        (raw,) = await tcp_exchange(server.host, server.port, question("big.default.svc.cluster.local.").pack())
        assert len(DNSRecord.parse(raw).rr) == len(BIG_ENDPOINTS)
        for name, expected in (("example.com.", "192.0.2.1"), ("retry.example.com.", "192.0.2.2")):
            reply = DNSRecord.parse(await udp_exchange(server.host, server.port, question(name).pack()))
            assert [str(rr.rdata) for rr in reply.rr] == [expected]
