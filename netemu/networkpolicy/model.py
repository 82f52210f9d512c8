"""What NetworkPolicies allow: a pure model of the API's semantics, shared by the enforcer and tests.

The rules (networking.k8s.io/v1 API reference, "Network Policies" concept page):

- A pod is isolated for a direction when at least one policy in its namespace selects it
  (``spec.podSelector``) and has that direction in its ``policyTypes``. A pod isolated for no
  direction accepts and sends everything.
- What an isolated pod may receive (send) is the union of the ingress (egress) rules of every
  policy that selects it; policies never deny, they only add.
- A connection needs both: egress allowed at the source pod and ingress allowed at the destination
  pod. Replies of an allowed connection are always allowed (the enforcer keeps connection state).
- A rule matches when one of its peers matches (no peers: any) and one of its ports matches (no
  ports: any). A peer is ``podSelector`` (pods of the policy's namespace), ``namespaceSelector``
  (every pod of the selected namespaces), both (selected pods of selected namespaces), or
  ``ipBlock`` (addresses in ``cidr`` and in none of ``except``; pod addresses included).
- A port is a protocol (default TCP) with a number, a range ``port``..``endPort``, no port (every
  port), or a name, resolved on the destination pod's containers' ports of that protocol.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from netemu.api.labels import selector_matches
from netemu.api.networkpolicy import (
    IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, policy_types,
)

INGRESS, EGRESS = "Ingress", "Egress"


@dataclass(frozen=True)
class PodFacts:
    """What the model needs of a pod: where it is, its labels, its addresses and its named ports
    (``{name: (port, protocol)}`` from its containers' ``ports``)."""
    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    ips: tuple[str, ...] = ()
    named_ports: Mapping[str, tuple[int, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Endpoint:
    """One end of a connection: a pod, or only an address (a host, something outside the cluster)."""
    ip: str
    pod: PodFacts | None = None


def pod_facts(pod: object) -> PodFacts:
    """``PodFacts`` of an ``objects.Pod``."""
    meta, spec, status = pod.metadata, pod.spec, pod.status  # type: ignore[attr-defined]
    ips = tuple(p.ip for p in getattr(status, "pod_ips", ()) if getattr(p, "ip", "")) or (
        (status.pod_ip,) if getattr(status, "pod_ip", "") else ())
    named = {p.name: (p.container_port, p.protocol or "TCP")
             for c in spec.containers for p in c.ports if p.name}
    return PodFacts(meta.namespace, meta.name, dict(meta.labels), ips, named)


def in_block(ip: str, block: IPBlock) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
        if addr not in ipaddress.ip_network(block.cidr, strict=False):
            return False
        return not any(addr in ipaddress.ip_network(e, strict=False) for e in block.except_)
    except ValueError:
        return False


def selects(policy: NetworkPolicy, pod: PodFacts) -> bool:
    return policy.metadata.namespace == pod.namespace and selector_matches(policy.spec.pod_selector, pod.labels)


def peer_matches(peer: NetworkPolicyPeer, policy_namespace: str, other: Endpoint,
                 namespace_labels: Mapping[str, Mapping[str, str]]) -> bool:
    if peer.ip_block is not None:
        return in_block(other.ip, peer.ip_block)
    pod = other.pod
    if pod is None:
        return False
    if peer.namespace_selector is not None:
        if not selector_matches(peer.namespace_selector, namespace_labels.get(pod.namespace, {})):
            return False
    elif pod.namespace != policy_namespace:
        return False
    return peer.pod_selector is None or selector_matches(peer.pod_selector, pod.labels)


def port_matches(rule_port: NetworkPolicyPort, dst: Endpoint, port: int, protocol: str) -> bool:
    if (rule_port.protocol or "TCP") != protocol:
        return False
    if rule_port.port is None:
        return True
    if isinstance(rule_port.port, str):
        named = dst.pod.named_ports.get(rule_port.port) if dst.pod is not None else None
        return named is not None and named == (port, protocol)
    last = rule_port.end_port if rule_port.end_port is not None else rule_port.port
    return rule_port.port <= port <= last


def _ports_match(ports: Sequence[NetworkPolicyPort], dst: Endpoint, port: int, protocol: str) -> bool:
    return not ports or any(port_matches(p, dst, port, protocol) for p in ports)


def policies_for(policies: Iterable[NetworkPolicy], pod: PodFacts, direction: str) -> list[NetworkPolicy]:
    """The policies that select ``pod`` for ``direction`` (isolated when there is one)."""
    return [p for p in policies if selects(p, pod) and direction in policy_types(p)]


def direction_allows(policies: Iterable[NetworkPolicy], direction: str, local: PodFacts, remote: Endpoint,
                     dst: Endpoint, port: int, protocol: str,
                     namespace_labels: Mapping[str, Mapping[str, str]]) -> bool:
    """Whether ``local``'s policies for ``direction`` let it talk with ``remote``."""
    selecting = policies_for(policies, local, direction)
    if not selecting:
        return True
    for policy in selecting:
        ns = policy.metadata.namespace
        rules = policy.spec.ingress if direction == INGRESS else policy.spec.egress
        for rule in rules:
            peers = rule.from_ if direction == INGRESS else rule.to  # type: ignore[union-attr]
            if not _ports_match(rule.ports, dst, port, protocol):
                continue
            if not peers or any(peer_matches(peer, ns, remote, namespace_labels) for peer in peers):
                return True
    return False


def allowed(policies: Sequence[NetworkPolicy], namespace_labels: Mapping[str, Mapping[str, str]],
            src: Endpoint, dst: Endpoint, port: int, protocol: str = "TCP") -> bool:
    """Whether a new connection ``src`` → ``dst``:``port``/``protocol`` is allowed."""
    if src.pod is not None and not direction_allows(policies, EGRESS, src.pod, dst, dst, port, protocol,
                                                    namespace_labels):
        return False
    if dst.pod is not None and not direction_allows(policies, INGRESS, dst.pod, src, dst, port, protocol,
                                                    namespace_labels):
        return False
    return True
