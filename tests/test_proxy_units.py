"""The proxy's sans-I/O parts: service ports, endpoint categorisation, balancer, change tracker,
impairments and shaper, frontend decisions."""
from __future__ import annotations

import random

import pytest

from netemu.api.objects import (ClientIPConfig, Endpoint, EndpointConditions, EndpointPort, EndpointSlice,
                                LoadBalancerIngress, LoadBalancerStatus, ObjectMeta, Service, ServicePort,
                                ServiceSpec, ServiceStatus, SessionAffinityConfig)
from netemu.errors import InvalidError
from netemu.fabric.base import NodeNetwork
from netemu.proxy.balancer import RANDOM, ROUND_ROBIN, Balancer
from netemu.proxy.frontend import Frontend, NodeRanges, desired
from netemu.proxy.impair import Impairment, Impairments, Shaper
from netemu.proxy.serviceport import (EndpointInfo, ServicePortName, Verdict, categorize, service_ports,
                                      slice_endpoints)
from netemu.proxy.sockopts import drop_all_filter, parse_nets, source_filter
from netemu.proxy.tracker import ChangeTracker

SVC_LABEL = EndpointSlice.SERVICE_NAME_LABEL


def svc(name="web", ns="default", ports=(ServicePort(port=80, target_port=9376),), status=None, **spec) -> Service:
    spec.setdefault("cluster_ip", "127.96.0.5")
    return Service(metadata=ObjectMeta(name=name, namespace=ns), spec=ServiceSpec(ports=ports, **spec),
                   status=status or ServiceStatus())


def eps(name="web-abc", service="web", ns="default", endpoints=(), ports=(EndpointPort(name="", port=9376),)):
    return EndpointSlice(metadata=ObjectMeta(name=name, namespace=ns, labels={SVC_LABEL: service}),
                         address_type="IPv4", endpoints=tuple(endpoints), ports=tuple(ports))


def ep(ip, node="node-1", ready=True, serving=None, terminating=None) -> Endpoint:
    return Endpoint(addresses=(ip,), node_name=node,
                    conditions=EndpointConditions(ready=ready, serving=serving, terminating=terminating))


# ---------------------------------------------------------------------------- service ports

@pytest.mark.parametrize("service, expected", [
    (svc(), {"": (80, None, ())}),
    (svc(type="NodePort", ports=(ServicePort(port=80, node_port=30007),)), {"": (80, 30007, ())}),
    (svc(type="LoadBalancer", ports=(ServicePort(port=80, node_port=30008),),
         status=ServiceStatus(load_balancer=LoadBalancerStatus(ingress=(LoadBalancerIngress(ip="127.200.0.1"),)))),
     {"": (80, 30008, ("127.200.0.1",))}),
    (svc(ports=(ServicePort(name="http", port=80), ServicePort(name="dns", protocol="UDP", port=53),
                ServicePort(name="sctp", protocol="SCTP", port=9))),
     {"http": (80, None, ()), "dns": (53, None, ())}),
    (svc(cluster_ip="None"), {}),
    (svc(type="ExternalName", cluster_ip="", external_name="example.org"), {}),
    (svc(cluster_ip=""), {}),
], ids=["cluster-ip", "node-port", "load-balancer", "multi-port-no-sctp", "headless", "external-name",
        "unallocated"])
def test_service_ports(service, expected):
    got = service_ports(service)
    assert {spn.port: (i.port, i.node_port, i.load_balancer_ips) for spn, i in got.items()} == expected


def test_service_port_policies_and_affinity():
    (info,) = service_ports(svc(type="NodePort", ports=(ServicePort(port=80, node_port=30007),),
                                internal_traffic_policy="Local", external_traffic_policy="Local",
                                session_affinity="ClientIP",
                                session_affinity_config=SessionAffinityConfig(client_ip=ClientIPConfig(timeout_seconds=60)))
                            ).values()
    assert (info.internal_local, info.external_local, info.affinity_timeout) == (True, True, 60.0)
    (default,) = service_ports(svc(session_affinity="ClientIP")).values()
    assert default.affinity_timeout == 10800
    assert str(info.name) == "default/web/TCP" and info.label == "default/web:80/TCP"


def test_slice_ports_match_by_name_and_protocol():
    """A named targetPort is resolved per pod: each slice carries its pods' port number."""
    http, https = ServicePortName("default", "web", "http", "TCP"), ServicePortName("default", "web", "https", "TCP")
    slices = [
        eps("web-a", endpoints=[ep("127.244.1.5")],
            ports=[EndpointPort(name="http", port=9376), EndpointPort(name="https", port=9377)]),
        eps("web-b", endpoints=[ep("127.244.1.6")], ports=[EndpointPort(name="http", port=8080)]),
        eps("web-c", endpoints=[ep("127.244.1.7")], ports=[EndpointPort(name="http", protocol="UDP", port=53)]),
    ]
    assert [str(e) for e in slice_endpoints(http, slices)] == ["127.244.1.5:9376", "127.244.1.6:8080"]
    assert [str(e) for e in slice_endpoints(https, slices)] == ["127.244.1.5:9377"]


# ---------------------------------------------------------------------------- categorize

READY_1 = EndpointInfo("127.244.1.5", 80, "node-1")
READY_2 = EndpointInfo("127.244.2.5", 80, "node-2")
NOT_READY_2 = EndpointInfo("127.244.2.6", 80, "node-2", ready=False, serving=False)
TERMINATING_1 = EndpointInfo("127.244.1.9", 80, "node-1", ready=False, serving=True, terminating=True)


@pytest.mark.parametrize("endpoints, node, local, verdict, chosen", [
    ((), "node-1", False, Verdict.REJECT, []),
    ((NOT_READY_2,), "node-1", False, Verdict.REJECT, []),
    ((READY_1, READY_2), "node-2", False, Verdict.SERVE, ["127.244.1.5", "127.244.2.5"]),
    ((READY_1, READY_2), "node-2", True, Verdict.SERVE, ["127.244.2.5"]),
    ((READY_1,), "node-2", True, Verdict.DROP, []),
    ((NOT_READY_2,), "node-2", True, Verdict.REJECT, []),
    ((TERMINATING_1, READY_2), "node-1", True, Verdict.SERVE, ["127.244.1.9"]),
    ((TERMINATING_1, READY_2), "node-1", False, Verdict.SERVE, ["127.244.2.5"]),
    ((TERMINATING_1,), "node-2", False, Verdict.SERVE, ["127.244.1.9"]),
], ids=["none", "not-ready-only", "cluster", "local-hit", "local-miss-drops", "local-none-anywhere-rejects",
        "local-terminating-fallback", "cluster-prefers-ready", "cluster-terminating-fallback"])
def test_categorize(endpoints, node, local, verdict, chosen):
    got_verdict, got = categorize(endpoints, node, local)
    assert got_verdict is verdict
    assert [e.ip for e in got] == chosen


# ---------------------------------------------------------------------------- balancer

def endpoints(n):
    return [EndpointInfo(f"127.244.1.{i}", 80, "node-1") for i in range(1, n + 1)]


def test_round_robin_is_exactly_even_and_survives_no_op_updates():
    b = Balancer(ROUND_ROBIN, rng=random.Random(1))
    b.update(endpoints(3))
    picks = [b.pick("c", 0).ip for _ in range(6)]
    b.update(list(reversed(endpoints(3))))  # same set: order and position kept
    picks += [b.pick("c", 0).ip for _ in range(93)]
    assert {ip: picks.count(ip) for ip in set(picks)} == {f"127.244.1.{i}": 33 for i in (1, 2, 3)}


def test_random_uses_every_endpoint():
    b = Balancer(RANDOM, rng=random.Random(7))
    b.update(endpoints(3))
    assert {b.pick("c", 0).ip for _ in range(100)} == {"127.244.1.1", "127.244.1.2", "127.244.1.3"}


def test_client_ip_affinity_pins_expires_and_follows_removal():
    b = Balancer(ROUND_ROBIN, affinity_timeout=10, rng=random.Random(3))
    b.update(endpoints(3))
    first = b.pick("a", 0)
    assert all(b.pick("a", t) == first for t in (1, 5, 14))   # each use refreshes the timer
    assert b.pick("a", 14 + 10) != first                       # unused for the timeout: balanced anew
    assert {b.pick(c, 30).ip for c in "bcd"} == {e.ip for e in endpoints(3)}  # others keep rotating
    pinned = b.pick("z", 100)
    b.update([e for e in endpoints(3) if e.ip != pinned.ip])
    assert b.pick("z", 101).ip != pinned.ip


def test_retry_excludes_failed_endpoints_and_resets_affinity():
    b = Balancer(ROUND_ROBIN, affinity_timeout=100, rng=random.Random(5))
    b.update(endpoints(2))
    first = b.pick("a", 0)
    second = b.pick("a", 1, exclude={first.address})
    assert second != first and b.pick("a", 2) == second
    assert b.pick("a", 3, exclude={e.address for e in endpoints(2)}) is None


# ---------------------------------------------------------------------------- tracker

def test_tracker_collapses_no_ops_and_reports_changed_views():
    t = ChangeTracker()
    s = svc()
    assert t.service_update(None, s)
    assert not t.service_update(s, Service(metadata=ObjectMeta(name="web", namespace="default", labels={"x": "y"}),
                                           spec=s.spec))  # a label edit changes nothing the proxy sees
    t.slice_update(None, eps(endpoints=[ep("127.244.1.5")]))
    (key, view), = t.take_changes().items()
    assert key == ("default", "web")
    (info, found), = view.values()
    assert [str(e) for e in found] == ["127.244.1.5:9376"]
    assert t.take_changes() == {}
    t.slice_update(eps(endpoints=[ep("127.244.1.5")]), eps(endpoints=[ep("127.244.1.5")]))
    assert t.take_changes() == {}                              # same endpoints: no change
    t.service_update(s, None)
    assert t.take_changes() == {("default", "web"): {}}
    assert t.views() == {}


def test_tracker_ignores_slices_without_service_label():
    t = ChangeTracker()
    orphan = EndpointSlice(metadata=ObjectMeta(name="x", namespace="default"))
    assert not t.slice_update(None, orphan)


# ---------------------------------------------------------------------------- impairments

def test_impairment_validation_and_combination():
    with pytest.raises(InvalidError, match="udp_loss must be between 0 and 1"):
        Impairment(udp_loss=1.5)
    with pytest.raises(InvalidError, match="delay_ms must be >= 0"):
        Impairment(delay_ms=-1)
    a, b = Impairment(delay_ms=10, rate_kbit=1000, udp_loss=0.5), Impairment(delay_ms=5, rate_kbit=500, udp_loss=0.5)
    assert a.combine(b) == Impairment(delay_ms=15, rate_kbit=500, udp_loss=0.75)


def test_impairments_lookup_is_none_when_nothing_applies():
    imps = Impairments()
    assert imps.lookup(("default", "web"), ("node-1",)) is None
    imps.set(Impairment(delay_ms=10), service=("default", "web"))
    imps.set(Impairment(delay_ms=1), node="node-2")
    assert imps.lookup(("default", "other"), ("node-1",)) is None
    assert imps.lookup(("default", "web"), ("node-2", "node-2")).delay_ms == 11  # a node counts once
    imps.set(None, service=("default", "web"))
    assert imps.lookup(("default", "web"), ("node-1",)) is None
    with pytest.raises(InvalidError):
        imps.set(Impairment(delay_ms=1))


def test_shaper_keeps_order_delays_and_paces():
    s = Shaper(Impairment(delay_ms=100, jitter_ms=50, rate_kbit=8), ordered=True, rng=random.Random(2))
    times = [s.departure(100, 0.0) for _ in range(10)]   # 8 kbit/s = 1000 B/s: 0.1 s per chunk
    assert times == sorted(times)
    assert times[0] >= 0.1 + 0.1 - 0.05
    assert times[-1] >= 1.0 + 0.1 - 0.05


# ---------------------------------------------------------------------------- frontends

def ranges():
    r = NodeRanges()
    r.set_nodes([NodeNetwork("node-1", "127.10.0.1", "127.244.1.0/24"),
                 NodeNetwork("node-2", "127.10.0.2", "127.244.2.0/24")])
    return r


@pytest.mark.parametrize("ip, node", [
    ("127.244.1.7", "node-1"), ("127.244.2.200", "node-2"), ("127.10.0.2", "node-2"), ("127.0.0.1", None),
    ("::1", None)], ids=["pod-1", "pod-2", "node-ip", "host", "ipv6"])
def test_node_ranges(ip, node):
    assert ranges().node_of(ip) == node


def frontend(kind, claims, node=None):
    spn = ServicePortName("default", "web", "", "TCP")
    (info,) = service_ports(svc()).values()
    return Frontend(key=("", "TCP", "127.96.0.5", 80), kind=kind, owner=spn, info=info, node=node, claims=claims)


S, D, R = Verdict.SERVE, Verdict.DROP, Verdict.REJECT
NETS_2 = source_filter(parse_nets(["127.244.2.0/24", "127.10.0.2/32"]), drop_listed=True)
ALLOW_2 = source_filter(parse_nets(["127.244.2.0/24", "127.10.0.2/32"]), drop_listed=False)


@pytest.mark.parametrize("kind, claims, node, expected", [
    ("cluster-ip", {}, None, (False, None)),
    ("cluster-ip", {"node-1": R, "node-2": R}, None, (False, None)),
    ("cluster-ip", {"node-1": S, "node-2": S}, None, (True, None)),
    ("cluster-ip", {"node-1": S, "node-2": D}, None, (True, NETS_2)),
    ("cluster-ip", {"node-1": D, "node-2": S}, None, (True, ALLOW_2)),
    ("node-port", {"node-1": D}, "node-1", (True, drop_all_filter())),
    ("node-port", {"node-1": R}, "node-1", (False, None)),
    ("load-balancer", {"node-1": D, "node-2": S}, None, (True, None)),
    ("load-balancer", {"node-1": D, "node-2": D}, None, (False, None)),
], ids=["unclaimed", "no-endpoints", "serve", "drop-one-node", "drop-default-node", "node-port-drop",
        "node-port-reject", "lb-some-node", "lb-no-node"])
def test_frontend_desired(kind, claims, node, expected):
    assert desired(frontend(kind, claims, node), ranges(), "node-1") == expected
