"""NetworkPolicy as nftables in one node's namespace: what a node should have (``render``) and the
``nft -f -`` batch that takes it there from what it has (``transition``).

One table per node, ``inet netemu-policy``:

- base chains ``forward`` and ``output`` (hook filter, policy accept): replies and the rest of
  allowed connections pass (``ct state established,related``); the node's own traffic passes
  (``fib saddr type local``: probes, the node itself, as Kubernetes says traffic to and from the
  pod's node is always allowed); then a packet from a local pod isolated for egress jumps to its
  chain ``out-<ip>`` (map ``egress``), one to a local pod isolated for ingress to ``in-<ip>`` (map
  ``ingress``). A pod chain ``return``s what one of its rules allows and drops the rest, so that
  both directions are checked. Dropped, not rejected: a denied TCP connection times out.
- Pod-to-pod traffic on one node is routed by the node (``forward``); the service proxy's
  upstream connection leaves the node with the client pod's address (``output``), so policies
  see pod addresses after Service translation.
- One set of addresses per policy rule (``r<policy>-<i|e><rule>``): the pods its selector peers
  match. Pods coming and going only change set elements; a policy change rewrites only the chains
  of the pods it selects.

``render`` is pure; ``transition(old, new)`` names only what differs.
"""
from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

from netemu.api.labels import selector_matches
from netemu.api.networkpolicy import NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort
from netemu.api.objects import LabelSelector

from .model import EGRESS, INGRESS, Endpoint, PodFacts, peer_matches, policies_for

TABLE = "netemu-policy"
FAMILY = "inet"

BASE = f"""table {FAMILY} {TABLE} {{
  map ingress {{ type ipv4_addr : verdict; }}
  map egress {{ type ipv4_addr : verdict; }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    ct state established,related accept
    ip saddr vmap @egress
    ip daddr vmap @ingress
  }}
  chain output {{
    type filter hook output priority filter; policy accept;
    ct state established,related accept
    fib saddr type local accept
    ip saddr vmap @egress
    ip daddr vmap @ingress
  }}
}}
"""


@dataclass(frozen=True)
class NodeRules:
    """What one node's table holds besides its base chains."""
    sets: Mapping[str, frozenset[str]] = field(default_factory=dict)
    chains: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    ingress: Mapping[str, str] = field(default_factory=dict)   # pod ip -> its chain
    egress: Mapping[str, str] = field(default_factory=dict)


def ipv4(pod: PodFacts) -> str | None:
    for ip in pod.ips:
        if ipaddress.ip_address(ip).version == 4:
            return ip
    return None


def chain_name(direction: str, ip: str) -> str:
    return f"{'in' if direction == INGRESS else 'out'}-{int(ipaddress.IPv4Address(ip)):08x}"


def set_name(policy: NetworkPolicy, direction: str, index: int) -> str:
    key = policy.metadata.uid or f"{policy.metadata.namespace}/{policy.metadata.name}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"r{digest}-{'i' if direction == INGRESS else 'e'}{index}"


def _elements(ips: Iterable[str]) -> str:
    return ", ".join(sorted(ips))


def _port_matches(ports: Sequence[NetworkPolicyPort], named: Mapping[str, tuple[int, str]] | None) -> list[str]:
    """nft expressions, one per port that can match (no ports: one empty expression)."""
    if not ports:
        return [""]
    out = []
    for p in ports:
        proto = (p.protocol or "TCP").lower()
        if p.port is None:
            out.append(f"meta l4proto {proto}")
        elif isinstance(p.port, str):
            found = (named or {}).get(p.port)
            if found is not None and found[1].lower() == proto:
                out.append(f"meta l4proto {proto} th dport {found[0]}")
        elif p.end_port is not None and p.end_port != p.port:
            out.append(f"meta l4proto {proto} th dport {p.port}-{p.end_port}")
        else:
            out.append(f"meta l4proto {proto} th dport {p.port}")
    return out


def _block(peer: NetworkPolicyPeer, side: str) -> str:
    block = peer.ip_block
    assert block is not None
    text = f"ip {side} {ipaddress.ip_network(block.cidr, strict=False)}"
    excepts = [str(ipaddress.ip_network(e, strict=False)) for e in block.except_]
    if excepts:
        text += f" ip {side} != {{ {', '.join(excepts)} }}"
    return text


def selector_key(selector: LabelSelector) -> tuple[object, ...]:
    return (tuple(sorted(selector.match_labels.items())),
            tuple((r.key, r.operator, r.values) for r in selector.match_expressions))


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


class _Renderer:
    def __init__(self, pods: Sequence[PodFacts], namespace_labels: Mapping[str, Mapping[str, str]],
                 policies: Sequence[NetworkPolicy]):
        self.pods = [p for p in pods if ipv4(p)]
        self.pods_by_namespace: dict[str, list[PodFacts]] = {}
        for pod in self.pods:
            self.pods_by_namespace.setdefault(pod.namespace, []).append(pod)
        self.namespace_labels = namespace_labels
        self.policies_by_namespace: dict[str, list[NetworkPolicy]] = {}
        for policy in sorted(policies, key=lambda p: (p.metadata.namespace, p.metadata.name)):
            self.policies_by_namespace.setdefault(policy.metadata.namespace, []).append(policy)
        self.sets: dict[str, frozenset[str]] = {}
        self._memo: dict[tuple[object, ...], list[str]] = {}

    def _namespaces(self, selector: LabelSelector) -> list[str]:
        key = ("ns", selector_key(selector))
        if key not in self._memo:
            self._memo[key] = [ns for ns in self.pods_by_namespace
                               if selector_matches(selector, self.namespace_labels.get(ns, {}))]
        return self._memo[key]  # type: ignore[return-value]

    def _selected(self, namespace: str, selector: LabelSelector | None) -> list[str]:
        """Addresses of the pods of ``namespace`` that ``selector`` matches (None: all of them)."""
        key = (namespace, selector_key(selector) if selector is not None else None)
        if key not in self._memo:
            self._memo[key] = [ipv4(p) or "" for p in self.pods_by_namespace.get(namespace, ())
                               if selector is None or selector_matches(selector, p.labels)]
        return self._memo[key]  # type: ignore[return-value]

    def _peer_ips(self, peer: NetworkPolicyPeer, namespace: str) -> list[str]:
        """What ``model.peer_matches`` matches among the pods, for a selector peer."""
        spaces = [namespace] if peer.namespace_selector is None else self._namespaces(peer.namespace_selector)
        return [ip for ns in spaces for ip in self._selected(ns, peer.pod_selector)]

    def _peer_set(self, policy: NetworkPolicy, direction: str, index: int,
                  peers: Sequence[NetworkPolicyPeer]) -> str:
        """The set of pods the rule's selector peers match, made once per node."""
        name = set_name(policy, direction, index)
        if name not in self.sets:
            ns = policy.metadata.namespace
            self.sets[name] = frozenset(ip for peer in peers if peer.ip_block is None
                                        for ip in self._peer_ips(peer, ns))
        return name

    def _egress_named(self, ports: Sequence[NetworkPolicyPort], peers: Sequence[NetworkPolicyPeer],
                      ns: str) -> list[str]:
        return egress_named_rules(self.pods, self.namespace_labels, ports, peers, ns)

    def chain(self, pod: PodFacts, direction: str) -> tuple[str, ...] | None:
        selecting = policies_for(self.policies_by_namespace.get(pod.namespace, ()), pod, direction)
        if not selecting:
            return None
        rules: list[str] = []
        for policy in selecting:
            rules += policy_rules(policy, direction, pod.named_ports,
                                  lambda index, peers, p=policy: self._peer_set(p, direction, index, peers),
                                  self._egress_named)
        rules.append("drop")
        return tuple(rules)


def peer_set_ips(pods: Iterable[PodFacts], namespace_labels: Mapping[str, Mapping[str, str]],
                 peers: Sequence[NetworkPolicyPeer], namespace: str) -> frozenset[str]:
    """The addresses of the pods a rule's selector peers match (what its set holds)."""
    return frozenset(ip for pod in pods if (ip := ipv4(pod))
                     and any(peer_matches(peer, namespace, Endpoint(ip, pod), namespace_labels)
                             for peer in peers if peer.ip_block is None))


def egress_named_rules(pods: Iterable[PodFacts], namespace_labels: Mapping[str, Mapping[str, str]],
                       ports: Sequence[NetworkPolicyPort], peers: Sequence[NetworkPolicyPeer], ns: str) -> list[str]:
    """Egress rules with named ports: resolved on each destination pod, grouped by what they resolve to."""
    by_match: dict[str, set[str]] = {}
    for pod in pods:
        ip = ipv4(pod)
        if not ip:
            continue
        if peers and not any(peer_matches(peer, ns, Endpoint(ip, pod), namespace_labels) for peer in peers):
            continue
        for match in _port_matches(ports, pod.named_ports):
            by_match.setdefault(match, set()).add(ip)
    return [_join(f"ip daddr {{ {_elements(ips)} }}", match, "return") for match, ips in sorted(by_match.items())]


def has_egress_named_ports(policy: NetworkPolicy) -> bool:
    return any(isinstance(p.port, str) for rule in policy.spec.egress for p in rule.ports)


def has_ingress_named_ports(policy: NetworkPolicy) -> bool:
    return any(isinstance(p.port, str) for rule in policy.spec.ingress for p in rule.ports)


def policy_rules(policy: NetworkPolicy, direction: str, named_ports: Mapping[str, tuple[int, str]],
                 set_for: Callable[[int, Sequence[NetworkPolicyPeer]], str],
                 egress_named: Callable[[Sequence[NetworkPolicyPort], Sequence[NetworkPolicyPeer], str], list[str]],
                 ) -> list[str]:
    """The rules ``policy`` adds to the ``direction`` chain of a pod it selects (whose named ports
    are ``named_ports``); ``set_for(index, peers)`` names the set of a rule's selector peers."""
    side = "saddr" if direction == INGRESS else "daddr"
    ns = policy.metadata.namespace
    rules: list[str] = []
    for index, rule in enumerate(policy.spec.ingress if direction == INGRESS else policy.spec.egress):
        peers = rule.from_ if direction == INGRESS else rule.to  # type: ignore[union-attr]
        if direction == EGRESS and any(isinstance(p.port, str) for p in rule.ports):
            rules += egress_named(rule.ports, peers, ns)
            continue
        matches = _port_matches(rule.ports, named_ports if direction == INGRESS else None)
        peer_exprs: list[str] = []
        if not peers:
            peer_exprs.append("")
        if any(p.ip_block is None for p in peers):
            peer_exprs.append(f"ip {side} @{set_for(index, peers)}")
        peer_exprs += [_block(p, side) for p in peers if p.ip_block is not None]
        rules += [_join(peer, match, "return") for peer in peer_exprs for match in matches]
    return rules


def render(local: Sequence[PodFacts], pods: Sequence[PodFacts], namespace_labels: Mapping[str, Mapping[str, str]],
           policies: Sequence[NetworkPolicy]) -> NodeRules:
    """What a node whose pods are ``local`` should hold, given every pod, namespace and policy."""
    r = _Renderer(pods, namespace_labels, policies)
    chains: dict[str, tuple[str, ...]] = {}
    maps: dict[str, dict[str, str]] = {INGRESS: {}, EGRESS: {}}
    for pod in local:
        ip = ipv4(pod)
        if ip is None:
            continue
        for direction in (INGRESS, EGRESS):
            rules = r.chain(pod, direction)
            if rules is not None:
                name = chain_name(direction, ip)
                chains[name] = rules
                maps[direction][ip] = name
    return NodeRules(r.sets, chains, maps[INGRESS], maps[EGRESS])


def transition(old: NodeRules, new: NodeRules) -> str:
    """The ``nft -f -`` batch that turns a table holding ``old`` into one holding ``new`` (empty:
    nothing to do). Order keeps every reference valid: sets and chains are made before rules and
    map elements use them, and deleted after nothing uses them any more."""
    t = f"{FAMILY} {TABLE}"
    lines: list[str] = []
    for name, ips in new.sets.items():
        before = old.sets.get(name)
        if before is None:
            lines.append(f"add set {t} {name} {{ type ipv4_addr; }}")
            before = frozenset()
        if ips - before:
            lines.append(f"add element {t} {name} {{ {_elements(ips - before)} }}")
        if before - ips:
            lines.append(f"delete element {t} {name} {{ {_elements(before - ips)} }}")
    for name, rules in new.chains.items():
        if old.chains.get(name) == rules:
            continue
        lines.append(f"add chain {t} {name}")
        if name in old.chains:
            lines.append(f"flush chain {t} {name}")
        lines += [f"add rule {t} {name} {rule}" for rule in rules]
    for map_name, before, after in (("ingress", old.ingress, new.ingress), ("egress", old.egress, new.egress)):
        gone = [ip for ip in before if after.get(ip) != before[ip]]
        if gone:
            lines.append(f"delete element {t} {map_name} {{ {_elements(gone)} }}")
        added = {ip: chain for ip, chain in after.items() if before.get(ip) != chain}
        if added:
            lines.append(f"add element {t} {map_name} {{ "
                         + ", ".join(f"{ip} : jump {added[ip]}" for ip in sorted(added)) + " }")
    lines += [f"delete chain {t} {name}" for name in old.chains if name not in new.chains]
    lines += [f"delete set {t} {name}" for name in old.sets if name not in new.sets]
    return "".join(line + "\n" for line in lines)
