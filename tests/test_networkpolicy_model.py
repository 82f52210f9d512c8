"""The NetworkPolicy model against the upstream network-policy e2e cases (test/e2e/network/netpol):
pods a, b, c in namespaces x, y, z, each serving TCP and UDP on 80 and 81 (named serve-80-tcp …),
and the reachability matrix each policy must produce."""
from __future__ import annotations

import itertools

import pytest

from netemu.api import codec
from netemu.api.defaults import apply_defaults
from netemu.api.networkpolicy import NetworkPolicy
from netemu.api.validation import validate
from netemu.networkpolicy.model import Endpoint, PodFacts, allowed

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
NS_LABELS = {ns: {"ns": ns} for ns in NAMESPACES}


def _pods() -> dict[str, PodFacts]:
    out = {}
    for i, (ns, name) in enumerate(itertools.product(NAMESPACES, PODS)):
        named = {f"serve-{p}-{proto.lower()}": (p, proto) for p in (80, 81) for proto in ("TCP", "UDP")}
        out[f"{ns}/{name}"] = PodFacts(ns, name, {"pod": name}, (f"10.244.{i // 3}.{i % 3 + 10}",), named)
    return out


PODS_BY_ID = _pods()


def policy(namespace: str, spec: dict) -> NetworkPolicy:
    obj, problems = codec.from_dict(NetworkPolicy, {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": namespace}, "spec": spec})
    assert not problems
    obj = apply_defaults(obj)
    assert validate(obj) == []
    return obj


def matrix(policies: list[NetworkPolicy], port: int = 80, protocol: str = "TCP") -> set[tuple[str, str]]:
    """The (from, to) pairs that may connect."""
    return {(s, d) for s, d in itertools.product(PODS_BY_ID, PODS_BY_ID)
            if allowed(policies, NS_LABELS, Endpoint(PODS_BY_ID[s].ips[0], PODS_BY_ID[s]),
                       Endpoint(PODS_BY_ID[d].ips[0], PODS_BY_ID[d]), port, protocol)}


ALL = set(itertools.product(PODS_BY_ID, PODS_BY_ID))


def into(dsts: set[str], srcs: set[str] | None = None) -> set[tuple[str, str]]:
    """Pairs towards ``dsts``, from ``srcs`` (all pods when None)."""
    return {(s, d) for s, d in ALL if d in dsts and (srcs is None or s in srcs)}


X = {f"x/{p}" for p in PODS}


def test_no_policy_allows_everything() -> None:
    assert matrix([]) == ALL


def test_deny_all_ingress() -> None:
    assert matrix([policy("x", {"podSelector": {}})]) == ALL - into(X)


def test_deny_all_ingress_and_egress() -> None:
    deny = policy("x", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    assert matrix([deny]) == {(s, d) for s, d in ALL if s not in X and d not in X}


def test_allow_from_same_namespace() -> None:
    p = policy("x", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]})
    assert matrix([p]) == ALL - into(X) | into(X, X)


def test_allow_from_labelled_namespace() -> None:
    p = policy("x", {"podSelector": {"matchLabels": {"pod": "a"}},
                     "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]})
    ys = {f"y/{p}" for p in PODS}
    assert matrix([p]) == ALL - into({"x/a"}) | into({"x/a"}, ys)


def test_pod_and_namespace_selector_in_one_peer_is_an_and() -> None:
    p = policy("x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "b"}}}]}]})
    assert matrix([p]) == ALL - into({"x/a"}) | into({"x/a"}, {"y/b"})


def test_pod_and_namespace_selector_in_two_peers_is_an_or() -> None:
    p = policy("x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"ns": "y"}}}, {"podSelector": {"matchLabels": {"pod": "b"}}}]}]})
    assert matrix([p]) == ALL - into({"x/a"}) | into({"x/a"}, {"y/a", "y/b", "y/c", "x/b"})


def test_union_of_two_policies() -> None:
    only_y = policy("x", {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]})
    only_z = policy("x", {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]})
    others = {p for p in PODS_BY_ID if p not in X}
    assert matrix([only_y, only_z]) == ALL - into(X) | into(X, others)


def test_egress_to_dns_only() -> None:
    p = policy("x", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [
        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]})
    assert matrix([p]) == {(s, d) for s, d in ALL if s not in X}
    assert matrix([p], 53, "UDP") == ALL
    assert matrix([p], 53, "TCP") == ALL


def test_named_port_is_resolved_on_the_destination() -> None:
    p = policy("x", {"podSelector": {}, "ingress": [{"ports": [{"port": "serve-81-udp", "protocol": "UDP"}]}]})
    assert matrix([p], 81, "UDP") == ALL
    assert matrix([p], 80, "UDP") == ALL - into(X)
    assert matrix([p], 81, "TCP") == ALL - into(X)  # the name is of the UDP port


def test_end_port_range() -> None:
    p = policy("x", {"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 81}]}]})
    assert matrix([p], 80) == ALL
    assert matrix([p], 81) == ALL
    assert matrix([p], 82) == ALL - into(X)


def test_ip_block_with_except() -> None:
    xb = PODS_BY_ID["x/b"].ips[0]
    p = policy("x", {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [
        {"to": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": [f"{xb}/32"]}}]}]})
    assert matrix([p]) == ALL - {("x/a", "x/b")}


def test_egress_and_ingress_are_both_required() -> None:
    deny_in_y = policy("y", {"podSelector": {}})
    allow_out_x = policy("x", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]})
    ys = {f"y/{p}" for p in PODS}
    assert matrix([deny_in_y, allow_out_x]) == ALL - into(ys)


def test_a_host_address_is_matched_by_ip_block_only() -> None:
    p = policy("x", {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "192.0.2.0/24"}},
                                                              {"namespaceSelector": {}}]}]})
    dst = PODS_BY_ID["x/a"]
    assert allowed([p], NS_LABELS, Endpoint("192.0.2.7"), Endpoint(dst.ips[0], dst), 80)
    assert not allowed([p], NS_LABELS, Endpoint("198.51.100.7"), Endpoint(dst.ips[0], dst), 80)


@pytest.mark.parametrize("protocol", ["TCP", "UDP"])
def test_policy_of_another_namespace_does_not_isolate(protocol: str) -> None:
    assert matrix([policy("z", {"podSelector": {"matchLabels": {"pod": "q"}}})], 80, protocol) == ALL
