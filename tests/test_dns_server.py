"""Cluster DNS over the real server, UDP and TCP, on 127.53.x.y (CoreDNS handler_test style).

Each row is (qname, qtype, rcode, answer, authority, additional) with records in zone-file
notation; ``{serial}`` stands for the index's SOA serial. The fixture cluster is in
test_dns_helpers.cluster_objects.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import random
import socket
import struct
import time
from typing import NamedTuple, Self

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from netemu.dns import ClusterDNS, host_upstreams

from test_dns_helpers import (BIG_ENDPOINTS, canon, config, endpoint_slice, fill, free_loopback, question, running,
                              service, tcp_exchange, udp_client, udp_exchange, zone_rrs)

SOA = "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. {serial} 7200 1800 86400 5"
SOA_96 = ("96.10.in-addr.arpa. 5 IN SOA ns.dns.96.10.in-addr.arpa. hostmaster.96.10.in-addr.arpa. "
          "{serial} 7200 1800 86400 5")
MS = "my-service.default.svc.cluster.local."
V6_PTR = ipaddress.ip_address("fd00:10:96::30").reverse_pointer + "."


class Row(NamedTuple):
    id: str
    qname: str
    qtype: str
    rcode: str = "NOERROR"
    answer: tuple[str, ...] = ()
    ns: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()


def nodata(id: str, qname: str, qtype: str, soa: str = SOA) -> Row:
    return Row(id, qname, qtype, "NOERROR", (), (soa,))


def nxdomain(id: str, qname: str, qtype: str = "A", soa: str = SOA) -> Row:
    return Row(id, qname, qtype, "NXDOMAIN", (), (soa,))


ROWS = [
    # ClusterIP services: A → the ClusterIP, also without endpoints
    Row("svc-a", MS, "A", answer=(f"{MS} 5 IN A 10.96.0.11",)),
    Row("svc-single-port-a", "my-nginx.default.svc.cluster.local.", "A",
        answer=("my-nginx.default.svc.cluster.local. 5 IN A 10.96.0.20",)),
    Row("svc-no-endpoints-a", "svc-empty.default.svc.cluster.local.", "A",
        answer=("svc-empty.default.svc.cluster.local. 5 IN A 10.96.0.12",)),
    nodata("svc-aaaa-nodata", MS, "AAAA"),
    Row("dual-stack-a", "dual.default.svc.cluster.local.", "A",
        answer=("dual.default.svc.cluster.local. 5 IN A 10.96.0.30",)),
    Row("dual-stack-aaaa", "dual.default.svc.cluster.local.", "AAAA",
        answer=("dual.default.svc.cluster.local. 5 IN AAAA fd00:10:96::30",)),
    Row("dual-stack-srv", "dual.default.svc.cluster.local.", "SRV",
        answer=("dual.default.svc.cluster.local. 5 IN SRV 0 50 80 dual.default.svc.cluster.local.",),
        extra=("dual.default.svc.cluster.local. 5 IN A 10.96.0.30",
               "dual.default.svc.cluster.local. 5 IN AAAA fd00:10:96::30")),
    # SRV for named ports (ClusterIP: target is the service name, glue in Additional)
    Row("srv-http", f"_http._tcp.{MS}", "SRV", answer=(f"_http._tcp.{MS} 5 IN SRV 0 100 80 {MS}",),
        extra=(f"{MS} 5 IN A 10.96.0.11",)),
    Row("srv-https", f"_https._tcp.{MS}", "SRV", answer=(f"_https._tcp.{MS} 5 IN SRV 0 100 443 {MS}",),
        extra=(f"{MS} 5 IN A 10.96.0.11",)),
    Row("srv-every-port", MS, "SRV", answer=(f"{MS} 5 IN SRV 0 50 80 {MS}", f"{MS} 5 IN SRV 0 50 443 {MS}"),
        extra=(f"{MS} 5 IN A 10.96.0.11",)),
    nxdomain("srv-wrong-protocol", f"_http._udp.{MS}", "SRV"),
    nxdomain("srv-unknown-port", f"_nope._tcp.{MS}", "SRV"),
    Row("srv-name-asked-for-a", f"_http._tcp.{MS}", "A", answer=(f"_http._tcp.{MS} 5 IN A 10.96.0.11",)),
    Row("srv-udp-port", "_dns._udp.kube-dns.kube-system.svc.cluster.local.", "SRV",
        answer=(("_dns._udp.kube-dns.kube-system.svc.cluster.local. 5 IN SRV 0 100 53 "
                 "kube-dns.kube-system.svc.cluster.local."),),
        extra=("kube-dns.kube-system.svc.cluster.local. 5 IN A 10.96.0.10",)),
    # headless: every ready endpoint; none ready → NXDOMAIN
    Row("headless-a", "hdls.default.svc.cluster.local.", "A",
        answer=("hdls.default.svc.cluster.local. 5 IN A 10.244.1.10",
                "hdls.default.svc.cluster.local. 5 IN A 10.244.1.11")),
    nodata("headless-aaaa", "hdls.default.svc.cluster.local.", "AAAA"),
    nxdomain("headless-none-ready", "hdls-unready.default.svc.cluster.local."),
    Row("headless-publish-not-ready", "hdls-publish.default.svc.cluster.local.", "A",
        answer=("hdls-publish.default.svc.cluster.local. 5 IN A 10.244.2.14",)),
    Row("headless-portless-a", "hdls-portless.default.svc.cluster.local.", "A",
        answer=("hdls-portless.default.svc.cluster.local. 5 IN A 10.244.1.15",)),
    nodata("headless-portless-srv", "hdls-portless.default.svc.cluster.local.", "SRV"),
    Row("headless-srv", "_http._tcp.hdls.default.svc.cluster.local.", "SRV",
        answer=("_http._tcp.hdls.default.svc.cluster.local. 5 IN SRV 0 50 80 web-0.hdls.default.svc.cluster.local.",
                ("_http._tcp.hdls.default.svc.cluster.local. 5 IN SRV 0 50 80 "
                 "10-244-1-11.hdls.default.svc.cluster.local.")),
        extra=("web-0.hdls.default.svc.cluster.local. 5 IN A 10.244.1.10",
               "10-244-1-11.hdls.default.svc.cluster.local. 5 IN A 10.244.1.11")),
    # endpoint names: the endpoint's hostname, else the dashed IP
    Row("endpoint-hostname", "web-0.hdls.default.svc.cluster.local.", "A",
        answer=("web-0.hdls.default.svc.cluster.local. 5 IN A 10.244.1.10",)),
    Row("endpoint-dashed-ip", "10-244-1-11.hdls.default.svc.cluster.local.", "A",
        answer=("10-244-1-11.hdls.default.svc.cluster.local. 5 IN A 10.244.1.11",)),
    nxdomain("endpoint-not-ready", "10-244-2-12.hdls.default.svc.cluster.local."),
    nxdomain("endpoint-unknown", "bogus.hdls.default.svc.cluster.local."),
    Row("endpoint-of-clusterip-service", "10-244-1-5.my-nginx.default.svc.cluster.local.", "A",
        answer=("10-244-1-5.my-nginx.default.svc.cluster.local. 5 IN A 10.244.1.5",)),
    Row("pod-hostname-subdomain", "busybox-1.busybox-subdomain.default.svc.cluster.local.", "A",
        answer=("busybox-1.busybox-subdomain.default.svc.cluster.local. 5 IN A 10.244.1.20",)),
    # ExternalName: CNAME (followed when the target is in the cluster zone)
    Row("external-cname", "my-service.prod.svc.cluster.local.", "CNAME",
        answer=("my-service.prod.svc.cluster.local. 5 IN CNAME my.database.example.com.",)),
    Row("external-a-without-upstream", "my-service.prod.svc.cluster.local.", "A",
        answer=("my-service.prod.svc.cluster.local. 5 IN CNAME my.database.example.com.",)),
    nxdomain("external-srv", "_http._tcp.my-service.prod.svc.cluster.local.", "SRV"),  # nothing below a CNAME
    nodata("external-plain-srv", "my-service.prod.svc.cluster.local.", "SRV"),
    nxdomain("external-ip-looking", "ext-ip.prod.svc.cluster.local."),
    Row("external-to-internal", "ext-internal.prod.svc.cluster.local.", "A",
        answer=("ext-internal.prod.svc.cluster.local. 5 IN CNAME my-service.default.svc.cluster.local.",
                f"{MS} 5 IN A 10.96.0.11")),
    nxdomain("external-endpoint", "endpoint.my-service.prod.svc.cluster.local.", "CNAME"),
    nodata("clusterip-cname", MS, "CNAME"),
    # missing names and empty non-terminals
    nxdomain("svc-missing", "nope.default.svc.cluster.local."),
    nxdomain("svc-missing-aaaa", "nope.default.svc.cluster.local.", "AAAA"),
    nxdomain("namespace-missing", "my-service.nonexistent.svc.cluster.local."),
    nodata("namespace-ent", "default.svc.cluster.local.", "A"),
    nodata("empty-namespace-ent", "empty.svc.cluster.local.", "A"),
    nxdomain("namespace-missing-ent", "nonexistent.svc.cluster.local."),
    nodata("svc-ent", "svc.cluster.local.", "A"),
    nodata("pod-ent", "pod.cluster.local.", "A"),
    nodata("pod-namespace-ent", "default.pod.cluster.local.", "A"),
    nxdomain("not-svc-or-pod", "foo.cluster.local."),
    nxdomain("too-many-labels", "a.b.c.my-service.default.svc.cluster.local."),
    # zone apex, schema version, NS
    Row("dns-version", "dns-version.cluster.local.", "TXT",
        answer=('dns-version.cluster.local. 28800 IN TXT "1.1.0"',)),
    nodata("dns-version-a", "dns-version.cluster.local.", "A"),
    Row("apex-soa", "cluster.local.", "SOA", answer=(SOA,)),
    Row("apex-ns", "cluster.local.", "NS", answer=("cluster.local. 5 IN NS ns.dns.cluster.local.",),
        extra=("ns.dns.cluster.local. 5 IN A 10.96.0.10",)),
    nodata("apex-a", "cluster.local.", "A"),
    Row("ns-dns-a", "ns.dns.cluster.local.", "A", answer=("ns.dns.cluster.local. 5 IN A 10.96.0.10",)),
    nodata("ns-dns-aaaa", "ns.dns.cluster.local.", "AAAA"),
    nodata("ns-below-apex-existing", "svc.cluster.local.", "NS"),
    nxdomain("ns-below-apex-missing", "foo.svc.cluster.local.", "NS"),
    nodata("soa-below-apex", MS, "SOA"),
    # every type: NODATA for a name that exists, NXDOMAIN for one that does not
    nodata("txt-of-service", MS, "TXT"),
    nxdomain("txt-of-missing-name", "nope.default.svc.cluster.local.", "TXT"),
    nxdomain("soa-of-missing-name", "nope.default.svc.cluster.local.", "SOA"),
    nodata("mx-existing", MS, "MX"),
    nxdomain("mx-missing", "nope.default.svc.cluster.local.", "MX"),
    # pods insecure: any well-formed dashed IP in an existing namespace
    Row("pod-a", "10-244-1-5.default.pod.cluster.local.", "A",
        answer=("10-244-1-5.default.pod.cluster.local. 5 IN A 10.244.1.5",)),
    Row("pod-a-no-such-pod", "1-2-3-4.default.pod.cluster.local.", "A",
        answer=("1-2-3-4.default.pod.cluster.local. 5 IN A 1.2.3.4",)),
    nodata("pod-aaaa-of-v4", "1-2-3-4.default.pod.cluster.local.", "AAAA"),
    Row("pod-aaaa", "fd00--1.default.pod.cluster.local.", "AAAA",
        answer=("fd00--1.default.pod.cluster.local. 5 IN AAAA fd00::1",)),
    nxdomain("label-before-pod-name", "x.10-244-1-5.default.pod.cluster.local."),  # a pod name is a leaf
    nxdomain("pod-not-an-ip", "not-an-ip.default.pod.cluster.local."),
    nxdomain("pod-leading-zero", "10-244-001-5.default.pod.cluster.local."),
    nxdomain("pod-namespace-missing", "10-244-1-5.nonexistent.pod.cluster.local."),
    # PTR: ClusterIPs and published endpoints, in the reverse zones of the cluster's ranges
    Row("ptr-clusterip", "11.0.96.10.in-addr.arpa.", "PTR", answer=(f"11.0.96.10.in-addr.arpa. 5 IN PTR {MS}",)),
    Row("ptr-endpoint-hostname", "10.1.244.10.in-addr.arpa.", "PTR",
        answer=("10.1.244.10.in-addr.arpa. 5 IN PTR web-0.hdls.default.svc.cluster.local.",)),
    Row("ptr-endpoint-dashed", "11.1.244.10.in-addr.arpa.", "PTR",
        answer=("11.1.244.10.in-addr.arpa. 5 IN PTR 10-244-1-11.hdls.default.svc.cluster.local.",)),
    Row("ptr-clusterip-service-endpoint", "6.2.244.10.in-addr.arpa.", "PTR",
        answer=("6.2.244.10.in-addr.arpa. 5 IN PTR 10-244-2-6.my-nginx.default.svc.cluster.local.",)),
    Row("ptr-ipv6-clusterip", V6_PTR, "PTR", answer=(f"{V6_PTR} 5 IN PTR dual.default.svc.cluster.local.",)),
    nxdomain("ptr-unknown-ip", "99.9.96.10.in-addr.arpa.", "PTR", soa=SOA_96),
    nxdomain("ptr-not-ready-endpoint", "12.2.244.10.in-addr.arpa.", "PTR",
             soa=SOA.replace("cluster.local.", "244.10.in-addr.arpa.")),
    nodata("ptr-of-forward-name", MS, "PTR"),
    Row("reverse-apex-soa", "96.10.in-addr.arpa.", "SOA", answer=(SOA_96,)),
    # not ours
    Row("outside-refused", "example.com.", "A", rcode="REFUSED"),
    Row("axfr-refused", "cluster.local.", "AXFR", rcode="REFUSED"),
]


def check(reply: DNSRecord, row: Row, serial: int) -> None:
    assert RCODE[reply.header.rcode] == row.rcode
    assert reply.header.qr
    assert bool(reply.header.aa) == (row.rcode in ("NOERROR", "NXDOMAIN"))
    assert not reply.header.ra
    assert canon(reply.rr) == canon(zone_rrs(row.answer, serial))
    assert canon(reply.auth) == canon(zone_rrs(row.ns, serial))
    assert canon(reply.ar) == canon(zone_rrs(row.extra, serial))


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
async def test_records(row: Row, transport: str) -> None:
    async with running() as server:
        q = question(row.qname, row.qtype)
        raw = (await udp_exchange(server.host, server.port, q.pack()) if transport == "udp"
               else (await tcp_exchange(server.host, server.port, q.pack()))[0])
        reply = DNSRecord.parse(raw)
        assert reply.header.id == q.header.id
        check(reply, row, server.index.serial)


async def test_cached_answers_are_identical_but_for_the_id() -> None:
    async with running() as server:
        first, second = question(MS), question(MS)
        a = await udp_exchange(server.host, server.port, first.pack())
        b = await udp_exchange(server.host, server.port, second.pack())
        assert a[2:] == b[2:] and a[:2] == first.pack()[:2] and b[:2] == second.pack()[:2]


@pytest.mark.parametrize("qname", ["MY-SERVICE.Default.SVC.Cluster.Local.", "my-service.default.svc.CLUSTER.local."])
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_answers_echo_the_query_case(qname: str, transport: str) -> None:
    async with running() as server:
        for qtype, rtype in (("A", "A"), ("AAAA", "SOA")):  # a positive and a negative answer
            q = question(qname, qtype)
            raw = (await udp_exchange(server.host, server.port, q.pack()) if transport == "udp"
                   else (await tcp_exchange(server.host, server.port, q.pack()))[0])
            reply = DNSRecord.parse(raw)
            assert str(reply.q.qname) == qname
            assert raw[12:12 + len(q.pack()) - 12] == q.pack()[12:]  # the question, byte for byte
            (rr,) = reply.rr or reply.auth
            assert QTYPE[rr.rtype] == rtype
            # owner names keep the query's spelling; the SOA is the zone as the query wrote it
            expected = qname if rtype == "A" else qname[-len("cluster.local."):]
            assert str(rr.rname) == expected


# ---------------------------------------------------------------------------- size and truncation


async def test_udp_without_edns_is_truncated_at_512_bytes() -> None:
    async with running() as server:
        raw = await udp_exchange(server.host, server.port, question("big.default.svc.cluster.local.").pack())
        reply = DNSRecord.parse(raw)
        assert reply.header.tc and len(raw) <= 512
        assert 0 < len(reply.rr) < len(BIG_ENDPOINTS)


async def test_tcp_carries_the_full_answer() -> None:
    async with running() as server:
        (raw,) = await tcp_exchange(server.host, server.port, question("big.default.svc.cluster.local.").pack())
        reply = DNSRecord.parse(raw)
        assert not reply.header.tc
        assert sorted(str(rr.rdata) for rr in reply.rr) == sorted(ip for ip, _, _ in BIG_ENDPOINTS)


async def test_edns_payload_size_is_honoured() -> None:
    async with running() as server:
        for size, truncated in ((4096, False), (512, True), (600, True)):
            q = question("big.default.svc.cluster.local.", edns=size)
            raw = await udp_exchange(server.host, server.port, q.pack())
            reply = DNSRecord.parse(raw)
            assert bool(reply.header.tc) == truncated, size
            assert len(raw) <= size
            (opt,) = [rr for rr in reply.ar if rr.rtype == 41]
            assert not truncated or len(reply.rr) < len(BIG_ENDPOINTS)
            assert truncated or len(reply.rr) == len(BIG_ENDPOINTS)
            assert opt.edns_do == 0


async def test_edns_do_bit_is_echoed_and_keys_the_cache() -> None:
    async with running() as server:
        plain = DNSRecord.parse(await udp_exchange(server.host, server.port, question(MS, edns=1232).pack()))
        do = DNSRecord.parse(await udp_exchange(server.host, server.port, question(MS, do=True).pack()))
        assert [rr.edns_do for rr in plain.ar if rr.rtype == 41] == [0]
        assert [rr.edns_do for rr in do.ar if rr.rtype == 41] == [1]


async def test_edns_version_other_than_zero_gets_badvers() -> None:
    async with running() as server:
        q = question(MS, edns=1232)
        q.ar[0].ttl = 1 << 16  # EDNS version 1
        reply = DNSRecord.parse(await udp_exchange(server.host, server.port, q.pack()))
        (opt,) = reply.ar
        assert opt.edns_ver == 0 and (opt.ttl >> 24) == 1 and reply.header.rcode == 0  # BADVERS = 16
        assert not reply.rr


async def test_edns_options_such_as_cookies_are_accepted() -> None:
    async with running() as server:
        q = question(MS, edns=1232)
        raw = bytearray(q.pack())
        # append a COOKIE option (code 10, 8 bytes) to the OPT record's rdata
        raw[-2:] = struct.pack("!H", 12)
        raw += struct.pack("!HH", 10, 8) + bytes(range(8))
        reply = DNSRecord.parse(await udp_exchange(server.host, server.port, bytes(raw)))
        assert [str(rr.rdata) for rr in reply.rr] == ["10.96.0.11"]


# ---------------------------------------------------------------------------- malformed input

GOOD = question(MS)
GOOD_WIRE = GOOD.pack()


def _with(wire: bytes, offset: int, value: bytes) -> bytes:
    return wire[:offset] + value + wire[offset + len(value):]


MALFORMED = [
    ("no-question", _with(GOOD_WIRE, 4, b"\x00\x00")[:12], "FORMERR"),
    ("two-questions", _with(GOOD_WIRE, 4, b"\x00\x02"), "FORMERR"),
    ("question-cut-short", GOOD_WIRE[:20], "FORMERR"),
    ("type-missing", GOOD_WIRE[:-4], "FORMERR"),
    ("label-overruns", _with(GOOD_WIRE, 12, b"\x3f"), "FORMERR"),
    ("pointer-in-question", GOOD_WIRE[:12] + b"\xc0\x0c" + GOOD_WIRE[-4:], "FORMERR"),
    ("additional-promised", _with(GOOD_WIRE, 10, b"\x00\x01"), "FORMERR"),
    ("too-many-additional", _with(GOOD_WIRE, 10, b"\x00\x03"), "FORMERR"),
    ("opcode-status", _with(GOOD_WIRE, 2, bytes([GOOD_WIRE[2] | 0x10])), "NOTIMP"),
]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("wire,rcode", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
async def test_malformed_queries_get_an_error_reply(wire: bytes, rcode: str, transport: str) -> None:
    async with running() as server:
        raw = (await udp_exchange(server.host, server.port, wire) if transport == "udp"
               else (await tcp_exchange(server.host, server.port, wire))[0])
        assert raw[:2] == wire[:2]
        flags = int.from_bytes(raw[2:4], "big")
        assert flags & 0x8000 and RCODE[flags & 0xF] == rcode
        assert raw[4:12] == bytes(8)  # header only
        # and the server still answers
        reply = DNSRecord.parse(await udp_exchange(server.host, server.port, GOOD_WIRE))
        assert [str(rr.rdata) for rr in reply.rr] == ["10.96.0.11"]


@pytest.mark.parametrize("wire", [b"", b"\x01", b"\x00" * 11, _with(GOOD_WIRE, 2, b"\x81")],
                         ids=["empty", "one-byte", "short-header", "a-response"])
async def test_packets_without_a_query_header_are_dropped(wire: bytes) -> None:
    async with running() as server, udp_client(server.host, server.port) as (transport, replies):
        transport.sendto(wire)
        transport.sendto(GOOD_WIRE)
        reply = await asyncio.wait_for(replies.get(), 2)
        assert reply[:2] == GOOD_WIRE[:2]  # the first reply is the good query's: nothing came for the bad
        assert DNSRecord.parse(reply).rr


def _mutations(rng: random.Random, count: int) -> list[bytes]:
    seeds = [question(n, t).pack() for n, t in
             [(MS, "A"), ("_http._tcp." + MS, "SRV"), ("hdls.default.svc.cluster.local.", "A"),
              ("example.com.", "A"), ("11.0.96.10.in-addr.arpa.", "PTR")]]
    seeds += [question(MS, edns=1232).pack()]
    out = []
    for i in range(count):
        if i % 4 == 0:
            out.append(rng.randbytes(rng.randrange(0, 600)))
            continue
        packet = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 6)):
            action = rng.randrange(4)
            if action == 0 and packet:
                packet[rng.randrange(len(packet))] = rng.randrange(256)
            elif action == 1 and packet:
                del packet[rng.randrange(len(packet)):]
            elif action == 2:
                packet += rng.randbytes(rng.randrange(1, 40))
            else:
                packet[2:4] = rng.randbytes(2)
        out.append(bytes(packet))
    return out


async def test_fuzz_ten_thousand_packets_never_stop_the_server(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="netemu.dns")
    rng = random.Random(20240607)
    packets = _mutations(rng, 10_000)
    async with running(cache_size=256) as server, udp_client(server.host, server.port) as (transport, replies):
        for start in range(0, len(packets), 100):  # bursts small enough for our socket buffer
            for p in packets[start:start + 100]:
                transport.sendto(p)
            await asyncio.sleep(0)  # let the server drain between bursts
            probe = question(MS)
            deadline = time.monotonic() + 5
            while True:  # replies to fuzz packets may come first; wait for the probe's
                transport.sendto(probe.pack())
                try:
                    reply = await asyncio.wait_for(_reply_with_id(replies, probe.header.id), 0.5)
                    break
                except TimeoutError:
                    assert time.monotonic() < deadline, "the server stopped answering"
            assert [str(rr.rdata) for rr in DNSRecord.parse(reply).rr] == ["10.96.0.11"]
        # garbage streams over TCP do not hurt either
        for p in packets[:50]:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
                _reader, writer = await asyncio.open_connection(server.host, server.port)
                writer.write(struct.pack("!H", len(p)) + p + rng.randbytes(rng.randrange(0, 5)))
                await writer.drain()
                writer.close()
        (raw,) = await tcp_exchange(server.host, server.port, GOOD_WIRE)
        assert DNSRecord.parse(raw).rr
        assert len(server.responder.udp_cache.entries) <= 256
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "the server logged an error"


async def _reply_with_id(replies: asyncio.Queue[bytes], qid: int) -> bytes:
    while True:
        reply = await replies.get()
        if len(reply) >= 12 and int.from_bytes(reply[:2], "big") == qid and DNSRecord.parse(reply).rr:
            return reply


async def test_tcp_carries_several_queries_per_connection() -> None:
    async with running() as server:
        queries = [question(MS), question("hdls.default.svc.cluster.local."),
                   question("nope.default.svc.cluster.local.")]
        raw = await tcp_exchange(server.host, server.port, *(q.pack() for q in queries))
        replies = [DNSRecord.parse(r) for r in raw]
        assert [r.header.id for r in replies] == [q.header.id for q in queries]
        assert [RCODE[r.header.rcode] for r in replies] == ["NOERROR", "NOERROR", "NXDOMAIN"]


# ---------------------------------------------------------------------------- following the index


async def _poll(server, q: DNSRecord, predicate, deadline: float = 2.0) -> DNSRecord:
    end = time.monotonic() + deadline
    while True:
        reply = DNSRecord.parse(await udp_exchange(server.host, server.port, q.pack()))
        if predicate(reply) or time.monotonic() > end:
            return reply
        await asyncio.sleep(0.01)


async def test_records_follow_index_changes_at_once() -> None:
    async with running() as server:
        name = "late.default.svc.cluster.local."
        before = DNSRecord.parse(await udp_exchange(server.host, server.port, question(name).pack()))
        assert RCODE[before.header.rcode] == "NXDOMAIN"  # and now cached
        serial = server.index.serial
        svc = service("default", "late", "10.96.0.99", [("http", "TCP", 80)])
        assert server.on_service(None, svc)
        assert server.index.serial > serial
        # the cache was cleared in the handler: the very next query sees the service
        after = DNSRecord.parse(await udp_exchange(server.host, server.port, question(name).pack()))
        assert [str(rr.rdata) for rr in after.rr] == ["10.96.0.99"]

        moved = service("default", "late", "10.96.0.98", [("http", "TCP", 80)], rv="2")
        server.on_service(svc, moved)
        reply = await _poll(server, question(name), lambda r: [str(rr.rdata) for rr in r.rr] == ["10.96.0.98"])
        assert [str(rr.rdata) for rr in reply.rr] == ["10.96.0.98"]

        server.on_service(moved, None)
        reply = await _poll(server, question(name), lambda r: r.header.rcode == 3)
        assert RCODE[reply.header.rcode] == "NXDOMAIN"
        assert reply.auth[0].rdata.times[0] == server.index.serial


async def test_headless_records_follow_endpoint_readiness() -> None:
    async with running() as server:
        name = "hdls-unready.default.svc.cluster.local."
        assert RCODE[(await _poll(server, question(name), lambda r: True)).header.rcode] == "NXDOMAIN"
        old = endpoint_slice("default", "hdls-unready", [("http", "TCP", 80)], [("10.244.2.13", None, False)])
        new = endpoint_slice("default", "hdls-unready", [("http", "TCP", 80)], [("10.244.2.13", None, True)], rv="2")
        assert server.on_endpointslice(old, new)
        reply = await _poll(server, question(name), lambda r: bool(r.rr))
        assert [str(rr.rdata) for rr in reply.rr] == ["10.244.2.13"]


# ---------------------------------------------------------------------------- upstream forwarding


class StubUpstream:
    """A tiny authoritative server on 127.x (UDP and TCP) standing in for the host's resolver."""

    def __init__(self) -> None:
        self.host = free_loopback()
        self.port = 0
        self.queries: list[tuple[str, str, str]] = []   # (transport, qname, qtype)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.AbstractServer | None = None

    def answer(self, wire: bytes, tcp: bool) -> bytes:
        q = DNSRecord.parse(wire)
        qname = str(q.q.qname).lower()
        self.queries.append(("tcp" if tcp else "udp", qname, QTYPE[q.q.qtype]))
        reply = q.reply()
        reply.header.ra = 1
        if qname == "example.com.":
            reply.add_answer(RR("example.com.", rdata=A("192.0.2.1"), ttl=60))
        elif qname == "my.database.example.com.":
            reply.add_answer(RR("my.database.example.com.", rdata=A("192.0.2.10"), ttl=60))
        elif qname == "retry.example.com.":
            if not tcp:
                reply.header.tc = 1
            else:
                reply.add_answer(RR("retry.example.com.", rdata=A("192.0.2.2"), ttl=60))
        elif qname == "big.example.com.":
            if not tcp:
                reply.header.tc = 1
            else:
                for i in range(60):
                    reply.add_answer(RR("big.example.com.", rdata=A(f"192.0.2.{i + 1}"), ttl=60))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply.pack()

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        stub = self

        class Proto(asyncio.DatagramProtocol):
            def connection_made(self, transport):  # type: ignore[override]
                self.transport = transport

            def datagram_received(self, data, addr):  # type: ignore[override]
                self.transport.sendto(stub.answer(data, False), addr)

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                while True:
                    (size,) = struct.unpack("!H", await reader.readexactly(2))
                    reply = stub.answer(await reader.readexactly(size), True)
                    writer.write(struct.pack("!H", len(reply)) + reply)
                    await writer.drain()
            writer.close()

        self._udp, _ = await loop.create_datagram_endpoint(Proto, local_addr=(self.host, 0))
        self.port = self._udp.get_extra_info("sockname")[1]
        self._tcp = await asyncio.start_server(serve, self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._udp is not None and self._tcp is not None
        self._udp.close()
        self._tcp.close()
        await self._tcp.wait_closed()


async def test_names_outside_the_zone_are_refused_without_upstream() -> None:
    async with running() as server:
        for transport in ("udp", "tcp"):
            q = question("example.com.")
            raw = (await udp_exchange(server.host, server.port, q.pack()) if transport == "udp"
                   else (await tcp_exchange(server.host, server.port, q.pack()))[0])
            reply = DNSRecord.parse(raw)
            assert RCODE[reply.header.rcode] == "REFUSED" and not reply.header.aa and not reply.rr


async def test_names_outside_the_zone_are_forwarded_upstream() -> None:
    async with StubUpstream() as stub, running(upstreams=(f"{stub.host}:{stub.port}",)) as server:
        q = question("example.com.")
        reply = DNSRecord.parse(await udp_exchange(server.host, server.port, q.pack()))
        assert reply.header.id == q.header.id and reply.header.ra
        assert [str(rr.rdata) for rr in reply.rr] == ["192.0.2.1"]
        (raw,) = await tcp_exchange(server.host, server.port, q.pack())
        assert [str(rr.rdata) for rr in DNSRecord.parse(raw).rr] == ["192.0.2.1"]
        assert ("tcp", "example.com.", "A") in stub.queries  # a TCP client is forwarded over TCP

        missing = DNSRecord.parse(await udp_exchange(server.host, server.port, question("nope.example.").pack()))
        assert RCODE[missing.header.rcode] == "NXDOMAIN"
        # in-zone names never go upstream
        await udp_exchange(server.host, server.port, question(MS).pack())
        assert all(not name.endswith("cluster.local.") for _, name, _ in stub.queries)


async def test_truncated_upstream_answers_are_retried_over_tcp() -> None:
    async with StubUpstream() as stub, running(upstreams=(f"{stub.host}:{stub.port}",)) as server:
        reply = DNSRecord.parse(await udp_exchange(server.host, server.port, question("retry.example.com.").pack()))
        assert [str(rr.rdata) for rr in reply.rr] == ["192.0.2.2"] and not reply.header.tc
        assert [t for t, n, _ in stub.queries if n == "retry.example.com."] == ["udp", "tcp"]
        # too big for the UDP client even from TCP: it gets TC, and the full answer over TCP
        raw = await udp_exchange(server.host, server.port, question("big.example.com.").pack())
        assert DNSRecord.parse(raw).header.tc and len(raw) <= 512
        (raw,) = await tcp_exchange(server.host, server.port, question("big.example.com.").pack())
        assert len(DNSRecord.parse(raw).rr) == 60


async def test_external_name_is_followed_upstream() -> None:
    async with StubUpstream() as stub, running(upstreams=(f"{stub.host}:{stub.port}",)) as server:
        reply = DNSRecord.parse(await udp_exchange(
            server.host, server.port, question("my-service.prod.svc.cluster.local.").pack()))
        assert canon(reply.rr) == canon(zone_rrs([
            "my-service.prod.svc.cluster.local. 5 IN CNAME my.database.example.com.",
            "my.database.example.com. 60 IN A 192.0.2.10"], 0))
        assert QTYPE[reply.rr[0].rtype] == "CNAME"  # the CNAME comes before its target
        assert reply.header.aa


async def test_unreachable_upstream_gives_servfail() -> None:
    dead = free_loopback()  # nothing listens there: the port is refused at once
    async with running(upstreams=(f"{dead}:9",), upstream_timeout=1.0) as server:
        reply = DNSRecord.parse(await udp_exchange(server.host, server.port, question("example.com.").pack()))
        assert RCODE[reply.header.rcode] == "SERVFAIL"


async def test_sockets_come_from_the_fabric_callables() -> None:
    """ClusterDNS takes its listeners and upstream sockets from a fabric's callables, as the
    netns backend hands them out (``functools.partial(fabric.start_server, where)`` …)."""
    calls: list[tuple] = []

    async def start_server(where, client_connected_cb, host, port, **kw):
        calls.append(("tcp", where, host))
        return await asyncio.start_server(client_connected_cb, host, port, **kw)

    async def datagram_socket(where, local_addr):
        calls.append(("udp", where, local_addr[0]))
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(local_addr)
        return sock

    def make_socket(where, family, type):
        calls.append(("socket", where, socket.SocketKind(type).name))
        sock = socket.socket(family, type)
        sock.setblocking(False)
        return sock

    async with StubUpstream() as stub:
        server = ClusterDNS(config(upstreams=(f"{stub.host}:{stub.port}",)))
        fill(server)
        host = free_loopback()
        await server.start(functools.partial(start_server, "dns-pod"),
                           functools.partial(datagram_socket, "dns-pod"), host, 0,
                           make_socket=functools.partial(make_socket, "dns-pod"))
        try:
            for name in ("example.com.", "retry.example.com."):
                reply = DNSRecord.parse(await udp_exchange(server.host, server.port, question(name).pack()))
                assert reply.rr
        finally:
            await server.close()
    assert calls == [("udp", "dns-pod", host), ("tcp", "dns-pod", host), ("socket", "dns-pod", "SOCK_DGRAM"),
                     ("socket", "dns-pod", "SOCK_DGRAM"), ("socket", "dns-pod", "SOCK_STREAM")]


def test_host_upstreams_reads_nameservers(tmp_path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# generated\nsearch example\nnameserver 127.0.0.53\nnameserver ::1\noptions edns0\n")
    assert host_upstreams(str(conf)) == ["127.0.0.53", "::1"]
    assert host_upstreams(str(tmp_path / "missing")) == []


async def test_a_start_cancelled_while_the_tcp_server_opens_keeps_no_socket() -> None:
    """The pod stops while its DNS server starts: a TCP listener already made (asyncio's
    start_server awaits once more after making it) is closed, not left to the collector."""
    made: list[asyncio.AbstractServer] = []
    go_on = asyncio.Event()

    async def slow_start_server(*args, **kwargs):
        server = await asyncio.start_server(*args, **kwargs)
        made.append(server)
        await go_on.wait()  # where asyncio.start_server's own last await is
        return server

    server = ClusterDNS(config())
    start = asyncio.ensure_future(server.start(slow_start_server, host=free_loopback(), port=0))
    while not made:
        await asyncio.sleep(0.01)
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    go_on.set()
    await asyncio.wait_for(made[0].wait_closed(), 5)
    assert not made[0].is_serving() and not made[0].sockets
