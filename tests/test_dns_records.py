"""Cluster DNS without sockets: name parsing, reverse names, config, the index's change
detection, record generation in other pod modes, wire parsing and packing."""
from __future__ import annotations

import dataclasses

import pytest
from dnslib import RCODE, DNSRecord

from netemu.api.objects import (LoadBalancerIngress, LoadBalancerStatus, PodCondition, PodIP, PodStatus,
                                ServiceStatus)
from netemu.dns import DNSConfig, DNSIndex, Resolver
from netemu.dns.config import parse_hostport, reverse_zones_of
from netemu.dns.index import SlimAddress
from netemu.dns.records import Request, _NXDomain, endpoint_hostname, extract_address_from_reverse, parse_request
from netemu.dns.server import AnswerCache
from netemu.dns.wire import Drop, Reject, pack_response, parse_query
from netemu.errors import DNSError

from test_dns_helpers import canon, config, endpoint_slice, fill, namespace, pod, question, service, zone_rrs

ZONE = "cluster.local."

PARSE = [
    ("apex", "cluster.local.", Request()),
    ("svc", "svc.cluster.local.", Request()),
    ("pod", "pod.cluster.local.", Request()),
    ("namespace", "ns.svc.cluster.local.", Request(namespace="ns", pod_or_svc="svc")),
    ("service", "web.ns.svc.cluster.local.", Request(service="web", namespace="ns", pod_or_svc="svc")),
    ("endpoint", "ep.web.ns.svc.cluster.local.",
     Request(endpoint="ep", service="web", namespace="ns", pod_or_svc="svc")),
    ("srv", "_http._tcp.web.ns.svc.cluster.local.",
     Request(port="http", protocol="tcp", service="web", namespace="ns", pod_or_svc="svc")),
    ("srv-without-underscores", "http.tcp.web.ns.svc.cluster.local.",
     Request(port="http", protocol="tcp", service="web", namespace="ns", pod_or_svc="svc")),
    ("pod-name", "10-0-0-1.ns.pod.cluster.local.", Request(service="10-0-0-1", namespace="ns", pod_or_svc="pod")),
]


@pytest.mark.parametrize("name,expected", [p[1:] for p in PARSE], ids=[p[0] for p in PARSE])
def test_parse_request(name: str, expected: Request) -> None:
    assert parse_request(name, ZONE) == expected


@pytest.mark.parametrize("name", ["foo.cluster.local.", "a.b.c.web.ns.svc.cluster.local.",
                                  "web.ns.service.cluster.local."])
def test_parse_request_invalid(name: str) -> None:
    with pytest.raises(_NXDomain):
        parse_request(name, ZONE)


@pytest.mark.parametrize("name,ip", [
    ("1.0.96.10.in-addr.arpa.", "10.96.0.1"),
    ("0.96.10.in-addr.arpa.", ""),
    ("01.0.96.10.in-addr.arpa.", ""),
    ("x.0.96.10.in-addr.arpa.", ""),
    ("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", "fd00::1"),
    ("1.0.d.f.ip6.arpa.", ""),
    ("web.ns.svc.cluster.local.", ""),
])
def test_extract_address_from_reverse(name: str, ip: str) -> None:
    assert extract_address_from_reverse(name) == ip


@pytest.mark.parametrize("addr,expected", [
    (SlimAddress("10.244.1.5", "", True), "10-244-1-5"),
    (SlimAddress("fd00::5", "", True), "fd00--5"),
    (SlimAddress("10.244.1.5", "web-0", True), "web-0"),
])
def test_endpoint_hostname(addr: SlimAddress, expected: str) -> None:
    assert endpoint_hostname(addr) == expected


@pytest.mark.parametrize("cidr,zones", [
    ("10.96.0.0/12", [f"{n}.10.in-addr.arpa." for n in range(96, 112)]),
    ("10.244.0.0/16", ["244.10.in-addr.arpa."]),
    ("10.244.1.0/24", ["1.244.10.in-addr.arpa."]),
    ("10.0.0.0/8", ["10.in-addr.arpa."]),
    ("fd00:10:96::/112", ["0.0.0.0." * 4 + "6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa."]),
])
def test_reverse_zones_of(cidr: str, zones: list[str]) -> None:
    assert reverse_zones_of(cidr) == zones


@pytest.mark.parametrize("kwargs,message", [
    ({"ttl": 3601}, "ttl must be in range [0, 3600]: 3601"),
    ({"zone": "a..b"}, "invalid zone"),
    ({"reverse_cidrs": ("10.96.0.0/33",)}, "not a CIDR"),
    ({"upstreams": ("dns.example",)}, "not an IP address"),
    ({"upstreams": ("127.0.0.1:99999",)}, "invalid port"),
    ({"pod_mode": "sometimes"}, "pod mode must be one of"),
    ({"dns_ip": "10.96.0.300"}, "dns_ip: not an IP address"),
])
def test_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(DNSError, match=message.replace("[", r"\[").replace("]", r"\]")):
        DNSConfig(**kwargs)


@pytest.mark.parametrize("text,addr", [
    ("127.0.0.1", ("127.0.0.1", 53)), ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    ("::1", ("::1", 53)), ("[::1]:5353", ("::1", 5353)),
])
def test_parse_hostport(text: str, addr: tuple[str, int]) -> None:
    assert parse_hostport(text) == addr


# ---------------------------------------------------------------------------- index changes


def test_only_real_changes_bump_the_serial_and_call_listeners() -> None:
    index = DNSIndex()
    calls: list[int] = []
    index.add_listener(lambda: calls.append(index.serial))
    svc = service("default", "web", "10.96.0.5", [("http", "TCP", 80)])
    assert index.on_service(None, svc) and len(calls) == 1
    serial = index.serial
    # same resourceVersion: not an update at all
    assert not index.on_service(svc, svc)
    # a status or label edit DNS cannot see: no change
    relabelled = dataclasses.replace(svc, metadata=dataclasses.replace(svc.metadata, labels={"a": "b"},
                                                                       resource_version="2"))
    assert not index.on_service(svc, relabelled)
    with_status = dataclasses.replace(relabelled, status=ServiceStatus(), metadata=dataclasses.replace(
        relabelled.metadata, resource_version="3"))
    assert not index.on_service(relabelled, with_status)
    assert index.serial == serial and len(calls) == 1
    # a new port is a change
    two_ports = service("default", "web", "10.96.0.5", [("http", "TCP", 80), ("x", "UDP", 9)], rv="4")
    assert index.on_service(with_status, two_ports)
    assert index.serial > serial and len(calls) == 2


def test_endpoint_readiness_is_a_change_but_a_slice_relabel_is_not() -> None:
    index = DNSIndex()
    index.on_service(None, service("default", "h", "None", [("http", "TCP", 80)]))
    old = endpoint_slice("default", "h", [("http", "TCP", 80)], [("10.244.0.9", None, False)])
    assert index.on_endpointslice(None, old)
    same = dataclasses.replace(old, metadata=dataclasses.replace(old.metadata, resource_version="2",
                                                                 annotations={"x": "y"}))
    assert not index.on_endpointslice(old, same)
    ready = endpoint_slice("default", "h", [("http", "TCP", 80)], [("10.244.0.9", None, True)], rv="3")
    assert index.on_endpointslice(same, ready)
    (subset,) = index.subsets(index.service("default", "h"))
    assert [a.ip for a in subset.addresses] == ["10.244.0.9"]
    assert index.on_endpointslice(ready, None)
    assert index.subsets(index.service("default", "h")) == []


def test_pods_change_answers_only_through_namespaces_unless_verified() -> None:
    index = DNSIndex()
    p = pod("lonely", "p", "10.244.0.7")
    assert index.on_pod(None, p)  # the namespace "lonely" now exists (it holds an object)
    moved = dataclasses.replace(p, status=PodStatus(phase="Running", pod_ip="10.244.0.8"),
                                metadata=dataclasses.replace(p.metadata, resource_version="2"))
    assert not index.on_pod(p, moved)
    assert index.on_pod(moved, None) and not index.namespace_exists("lonely")
    verified = DNSIndex(watch_pods=True)
    verified.on_pod(None, p)
    assert verified.on_pod(p, moved) and [x.name for x in verified.pods_by_ip("10.244.0.8")] == ["p"]


def _version(p, rv: str, **status):
    return dataclasses.replace(p, status=dataclasses.replace(p.status, **status),
                               metadata=dataclasses.replace(p.metadata, resource_version=rv))


def test_a_verified_index_follows_a_pods_addresses_and_deletion_but_not_its_conditions() -> None:
    index = DNSIndex(watch_pods=True)
    p = pod("default", "p", "10.244.0.7")
    index.on_pod(None, p)
    serial = index.serial
    ready = _version(p, "2", conditions=(PodCondition(type="Ready", status="True"),))
    assert not index.on_pod(p, ready) and index.serial == serial
    moved = _version(ready, "3", pod_ips=(PodIP(ip="10.244.0.9"),))
    assert index.on_pod(ready, moved)
    assert [x.name for x in index.pods_by_ip("10.244.0.9")] == ["p"] and index.pods_by_ip("10.244.0.7") == []
    failed = _version(moved, "4", phase="Failed")
    assert index.on_pod(moved, failed) and index.pods_by_ip("10.244.0.9")[0].phase == "Failed"
    deleting = dataclasses.replace(failed, metadata=dataclasses.replace(
        failed.metadata, resource_version="5", deletion_timestamp="2026-01-01T00:00:00Z"))
    assert index.on_pod(failed, deleting) and index.pods_by_ip("10.244.0.9")[0].deleting


def test_namespaces_exist_by_event_or_by_content() -> None:
    index = DNSIndex()
    assert not index.namespace_exists("default")
    assert index.on_namespace(None, namespace("default")) and index.namespace_exists("default")
    assert not index.on_namespace(namespace("default"), namespace("default"))
    index.on_service(None, service("default", "web", "10.96.0.5", [("http", "TCP", 80)]))
    assert not index.on_namespace(namespace("default"), None)  # still holds a service
    assert index.namespace_exists("default")


def test_load_balancer_ips_get_ptr_records() -> None:
    index = DNSIndex()
    index.on_namespace(None, namespace("default"))
    svc = service("default", "lb", "10.96.0.40", [("http", "TCP", 80)])
    svc = dataclasses.replace(svc, status=ServiceStatus(load_balancer=LoadBalancerStatus(
        ingress=(LoadBalancerIngress(ip="10.96.200.1"),))))
    index.on_service(None, svc)
    answer = Resolver(config(), index).answer("1.200.96.10.in-addr.arpa.", 12)
    assert [str(rr.rdata) for rr in answer.answer] == ["lb.default.svc.cluster.local."]


# ---------------------------------------------------------------------------- pod modes, weights


def _resolver(**overrides: object) -> Resolver:
    cfg = config(**overrides)
    index = DNSIndex(watch_pods=cfg.pod_mode == "verified")
    fill(index)
    return Resolver(cfg, index)


@pytest.mark.parametrize("mode,name,rcode,addresses", [
    ("insecure", "1-2-3-4.default.pod.cluster.local.", "NOERROR", ["1.2.3.4"]),
    ("verified", "1-2-3-4.default.pod.cluster.local.", "NXDOMAIN", []),
    ("verified", "10-244-1-20.default.pod.cluster.local.", "NOERROR", ["10.244.1.20"]),
    ("verified", "10-244-1-20.prod.pod.cluster.local.", "NXDOMAIN", []),
    ("disabled", "10-244-1-20.default.pod.cluster.local.", "NXDOMAIN", []),
])
def test_pod_modes(mode: str, name: str, rcode: str, addresses: list[str]) -> None:
    answer = _resolver(pod_mode=mode).answer(name, 1)
    assert RCODE[answer.rcode] == rcode
    assert [str(rr.rdata) for rr in answer.answer] == addresses


def test_srv_weight_is_100_over_n() -> None:
    resolver = _resolver()
    resolver.index.on_endpointslice(None, endpoint_slice("default", "hdls", [("http", "TCP", 80)], [
        ("10.244.5.1", None, True), ("10.244.5.2", None, True), ("10.244.5.3", None, True)], name="hdls-second"))
    answer = resolver.answer("_http._tcp.hdls.default.svc.cluster.local.", 33)
    assert sorted(rr.rdata.weight for rr in answer.answer) == [20] * 5  # 2 + 3 ready endpoints


def test_serial_and_ttl_come_from_the_index_and_config() -> None:
    resolver = _resolver(ttl=30)
    answer = resolver.answer("nope.default.svc.cluster.local.", 1)
    assert canon(answer.authority) == canon(zone_rrs([
        "cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. {serial} 7200 1800 86400 30"],
        resolver.index.serial))


def test_custom_zone() -> None:
    resolver = _resolver(zone="cluster-domain.example")
    answer = resolver.answer("my-service.default.svc.cluster-domain.example.", 1)
    assert [str(rr.rdata) for rr in answer.answer] == ["10.96.0.11"]
    assert not resolver.answer("my-service.default.svc.cluster.local.", 1).in_zone


# ---------------------------------------------------------------------------- wire


def test_cache_keys() -> None:
    plain = parse_query(question("a.example.").pack())
    assert plain.raw_key and plain.udp_size == 512 and not plain.edns
    edns = parse_query(question("a.example.", edns=4096).pack())
    assert edns.raw_key and edns.udp_size == 4096 and edns.key != plain.key
    do = parse_query(question("a.example.", do=True).pack())
    assert do.key != edns.key
    upper = parse_query(question("A.example.").pack())
    assert upper.key != plain.key and upper.name == "A.example."
    trailing = parse_query(question("a.example.").pack() + b"junk")
    assert not trailing.raw_key and trailing.key == plain.key


def test_odd_bytes_in_names_are_escaped_and_echoed() -> None:
    wire = bytearray(question("ab.example.").pack())
    wire[13] = ord(".")  # the label "a.b" ... as one label
    q = parse_query(bytes(wire))
    assert q.name == "\\046b.example."
    reply = DNSRecord.parse(pack_response(q, 5))
    assert reply.q.qname.label == (b".b", b"example")


@pytest.mark.parametrize("wire,error", [(b"\x00" * 5, Drop), (b"\x00\x01\x80\x00" + b"\x00" * 8, Drop),
                                        (b"\x00\x01\x00\x00" + b"\x00" * 8, Reject)])
def test_parse_query_errors(wire: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_query(wire)


def test_big_tcp_answers_stay_valid_past_the_compression_pointer_range() -> None:
    resolver = _resolver()
    resolver.index.on_service(None, service("default", "huge", "None", [("http", "TCP", 80)]))
    resolver.index.on_endpointslice(None, endpoint_slice("default", "huge", [("http", "TCP", 80)], [
        (f"10.244.{i // 250}.{i % 250 + 1}", None, True) for i in range(500)]))
    answer = resolver.answer("_http._tcp.huge.default.svc.cluster.local.", 33)
    q = parse_query(question("_http._tcp.huge.default.svc.cluster.local.", "SRV").pack())
    wire = pack_response(q, answer.rcode, answer.answer, answer.authority, answer.additional, limit=65535)
    reply = DNSRecord.parse(wire)
    assert len(wire) > 0x4000 and not reply.header.tc  # names past 16 KiB cannot be pointed to
    assert len(reply.rr) == len(reply.ar) == 500
    assert all(str(rr.rname) == "_http._tcp.huge.default.svc.cluster.local." for rr in reply.rr)
    assert [str(rr.rdata.target) for rr in reply.rr] == [str(rr.rname) for rr in reply.ar]
    assert [str(rr.rname).split(".")[0] for rr in reply.ar] == [str(rr.rdata).replace(".", "-") for rr in reply.ar]


def test_answer_cache_is_bounded() -> None:
    cache = AnswerCache(3)
    for key in (b"a", b"b", b"c", b"d"):
        cache.put(key, key)
    assert list(cache.entries) == [b"b", b"c", b"d"]
    cache.clear()
    assert cache.entries == {}


def test_names_first_written_past_16_kib_are_not_pointed_to() -> None:
    from dnslib import RR, A
    names = [f"name-{i}.example." for i in range(1200)]
    answer = [RR(n, rdata=A("192.0.2.1")) for n in names]
    again = [RR(n, rdata=A("192.0.2.2")) for n in names]  # the same names once more
    q = parse_query(question("x.example.").pack())
    wire = pack_response(q, 0, answer, (), again, limit=65535)
    reply = DNSRecord.parse(wire)
    assert len(wire) > 0x8000 and not reply.header.tc
    assert [str(rr.rname) for rr in reply.rr] == names == [str(rr.rname) for rr in reply.ar]
