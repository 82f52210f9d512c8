"""Cluster DNS: NXDOMAIN or NODATA depends on whether the *name* exists — for every query type,
at every depth of the cluster zone and of the reverse zones — and both carry the zone's SOA.

Asked over real UDP (and TCP) with dnspython, a client independent of the server's own dnslib,
against the fixture cluster of test_dns_helpers.cluster_objects. A name exists when it owns
records of some type or names below it do (an empty non-terminal, RFC 8020), so a name that
exists has every ancestor up to its zone existing too.
"""
from __future__ import annotations

import dns.asyncquery
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from test_dns_helpers import running

ZONE = "cluster.local."
REV_SVC = "96.10.in-addr.arpa."     # 10.96.0.0/12 → 96…111.10.in-addr.arpa.
REV_POD = "244.10.in-addr.arpa."    # 10.244.0.0/16
TYPES = ("A", "AAAA", "TXT", "SRV", "CNAME", "MX", "NS", "SOA", "PTR", "CAA", "HINFO")
MS = "my-service.default.svc.cluster.local."
EXT = "my-service.prod.svc.cluster.local."      # ExternalName → my.database.example.com

# (id, name, exists, zone whose SOA a negative answer carries)
EXISTING = [
    ("apex", ZONE, ZONE),
    ("svc-ent", "svc.cluster.local.", ZONE),
    ("pod-ent", "pod.cluster.local.", ZONE),
    ("namespace", "default.svc.cluster.local.", ZONE),
    ("namespace-announced-empty", "empty.svc.cluster.local.", ZONE),
    ("pod-namespace", "default.pod.cluster.local.", ZONE),
    ("clusterip-service", MS, ZONE),
    ("clusterip-without-endpoints", "svc-empty.default.svc.cluster.local.", ZONE),
    ("headless-service", "hdls.default.svc.cluster.local.", ZONE),
    ("dual-stack-service", "dual.default.svc.cluster.local.", ZONE),
    ("srv-name", f"_http._tcp.{MS}", ZONE),
    ("srv-protocol-ent", f"_tcp.{MS}", ZONE),
    ("udp-srv-name", "_dns._udp.kube-dns.kube-system.svc.cluster.local.", ZONE),
    ("udp-protocol-ent", "_udp.kube-dns.kube-system.svc.cluster.local.", ZONE),
    ("headless-srv-name", "_http._tcp.hdls.default.svc.cluster.local.", ZONE),
    ("headless-protocol-ent", "_tcp.hdls.default.svc.cluster.local.", ZONE),
    ("endpoint-hostname", "web-0.hdls.default.svc.cluster.local.", ZONE),
    ("endpoint-dashed-ip", "10-244-1-11.hdls.default.svc.cluster.local.", ZONE),
    ("endpoint-of-clusterip-service", "10-244-1-5.my-nginx.default.svc.cluster.local.", ZONE),
    ("externalname", EXT, ZONE),
    ("externalname-in-zone", "ext-internal.prod.svc.cluster.local.", ZONE),
    ("pod-name", "10-244-1-5.default.pod.cluster.local.", ZONE),
    ("pod-name-v6", "fd00--1.default.pod.cluster.local.", ZONE),
    ("dns-version", "dns-version.cluster.local.", ZONE),
    ("ns-name", "ns.dns.cluster.local.", ZONE),
    ("ns-name-ent", "dns.cluster.local.", ZONE),
    ("reverse-apex", REV_SVC, REV_SVC),
    ("reverse-clusterip", "11.0.96.10.in-addr.arpa.", REV_SVC),
    ("reverse-ent", "0.96.10.in-addr.arpa.", REV_SVC),
    ("reverse-endpoint", "10.1.244.10.in-addr.arpa.", REV_POD),
    ("reverse-endpoint-ent", "1.244.10.in-addr.arpa.", REV_POD),
]
MISSING = [
    ("missing-service", "nope.default.svc.cluster.local.", ZONE),
    ("missing-namespace", "nonexistent.svc.cluster.local.", ZONE),
    ("service-in-missing-namespace", "my-service.nonexistent.svc.cluster.local.", ZONE),
    ("pod-in-missing-namespace", "10-244-1-5.nonexistent.pod.cluster.local.", ZONE),
    ("neither-svc-nor-pod", "foo.cluster.local.", ZONE),
    ("wrong-protocol", f"_http._udp.{MS}", ZONE),
    ("protocol-ent-without-ports", f"_udp.{MS}", ZONE),
    ("unknown-port", f"_nope._tcp.{MS}", ZONE),
    ("srv-name-without-underscores", f"http.tcp.{MS}", ZONE),
    ("protocol-without-underscore", f"tcp.{MS}", ZONE),
    ("bare-underscores", f"_._tcp.{MS}", ZONE),
    ("unnamed-port-has-no-srv-name", "_tcp.my-nginx.default.svc.cluster.local.", ZONE),
    ("too-deep", f"a.b.c.{MS}", ZONE),
    ("below-externalname-srv", f"_http._tcp.{EXT}", ZONE),
    ("below-externalname-protocol", f"_tcp.{EXT}", ZONE),
    ("below-externalname-label", f"www.{EXT}", ZONE),
    ("below-externalname-two-labels", f"a.b.{EXT}", ZONE),
    ("ip-looking-externalname", "ext-ip.prod.svc.cluster.local.", ZONE),
    ("headless-none-ready", "hdls-unready.default.svc.cluster.local.", ZONE),
    ("below-headless-none-ready", "_http._tcp.hdls-unready.default.svc.cluster.local.", ZONE),
    ("unknown-endpoint", "bogus.hdls.default.svc.cluster.local.", ZONE),
    ("not-ready-endpoint", "10-244-2-12.hdls.default.svc.cluster.local.", ZONE),
    ("below-endpoint", "x.web-0.hdls.default.svc.cluster.local.", ZONE),
    ("below-pod-name", "x.10-244-1-5.default.pod.cluster.local.", ZONE),
    ("two-below-pod-name", "_http._tcp.10-244-1-5.default.pod.cluster.local.", ZONE),
    ("pod-name-not-an-ip", "not-an-ip.default.pod.cluster.local.", ZONE),
    ("no-wildcard-service", "*.default.svc.cluster.local.", ZONE),
    ("no-wildcard-namespace", "my-service.*.svc.cluster.local.", ZONE),
    ("below-dns-version", "x.dns-version.cluster.local.", ZONE),
    ("below-ns-name", "x.ns.dns.cluster.local.", ZONE),
    ("reverse-unknown-ip", "99.9.96.10.in-addr.arpa.", REV_SVC),
    ("reverse-empty-prefix", "9.96.10.in-addr.arpa.", REV_SVC),
    ("reverse-not-ready-endpoint", "12.2.244.10.in-addr.arpa.", REV_POD),
    ("reverse-leading-zero", "011.0.96.10.in-addr.arpa.", REV_SVC),
    ("reverse-too-deep", "1.11.0.96.10.in-addr.arpa.", REV_SVC),
]
ROWS = [(i, n, True, z) for i, n, z in EXISTING] + [(i, n, False, z) for i, n, z in MISSING]


async def query(server, name: str, rdtype: str, transport: str = "udp") -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    if transport == "udp":
        return await dns.asyncquery.udp(q, server.host, port=server.port, timeout=2)
    return await dns.asyncquery.tcp(q, server.host, port=server.port, timeout=2)


def check_negative(reply: dns.message.Message, zone: str, what: str) -> None:
    soa = [rrset for rrset in reply.authority if rrset.rdtype == dns.rdatatype.SOA]
    assert len(soa) == 1 and soa[0].name == dns.name.from_text(zone), f"{what}: authority {reply.authority}"
    assert reply.flags & dns.flags.AA, what


@pytest.mark.parametrize("id_,name,exists,zone", ROWS, ids=[r[0] for r in ROWS])
async def test_rcode_depends_on_the_name_for_every_type(id_: str, name: str, exists: bool, zone: str) -> None:
    async with running() as server:
        for rdtype in TYPES:
            for transport in ("udp", "tcp"):
                reply = await query(server, name, rdtype, transport)
                what = f"{name} {rdtype} over {transport}"
                expected = dns.rcode.NOERROR if exists else dns.rcode.NXDOMAIN
                assert reply.rcode() == expected, f"{what}: {dns.rcode.to_text(reply.rcode())}"
                if not reply.answer:
                    check_negative(reply, zone, what)
                else:
                    assert exists, f"{what}: records for a name that does not exist: {reply.answer}"


def ancestors(name: str, zone: str) -> list[str]:
    labels = name.split(".")
    return [n for n in (".".join(labels[i:]) for i in range(1, len(labels))) if n.endswith(zone) and n != "."]


@pytest.mark.parametrize("id_,name,zone", EXISTING, ids=[r[0] for r in EXISTING])
async def test_every_ancestor_of_an_existing_name_exists(id_: str, name: str, zone: str) -> None:
    async with running() as server:
        for parent in ancestors(name, zone):
            reply = await query(server, parent, "A")
            assert reply.rcode() == dns.rcode.NOERROR, f"{parent} (above {name}): {dns.rcode.to_text(reply.rcode())}"


async def test_externalname_keeps_its_cname_and_nothing_below_it_exists() -> None:
    async with running() as server:
        reply = await query(server, EXT, "A")
        assert [rrset.to_text() for rrset in reply.answer] == [f"{EXT} 5 IN CNAME my.database.example.com."]
        reply = await query(server, f"_http._tcp.{EXT}", "A")
        assert reply.rcode() == dns.rcode.NXDOMAIN and not reply.answer


async def test_a_new_service_makes_its_names_exist_and_a_deleted_one_unmakes_them() -> None:
    from test_dns_helpers import service
    async with running() as server:
        name = "fresh.default.svc.cluster.local."
        assert (await query(server, f"_tcp.{name}", "TXT")).rcode() == dns.rcode.NXDOMAIN
        created = service("default", "fresh", "10.96.0.77", [("web", "TCP", 8080)])
        server.on_service(None, created)
        for qname in (name, f"_tcp.{name}", f"_web._tcp.{name}", "77.0.96.10.in-addr.arpa."):
            assert (await query(server, qname, "TXT")).rcode() == dns.rcode.NOERROR, qname
        server.on_service(created, None)
        for qname in (name, f"_tcp.{name}", "77.0.96.10.in-addr.arpa."):
            assert (await query(server, qname, "TXT")).rcode() == dns.rcode.NXDOMAIN, qname
