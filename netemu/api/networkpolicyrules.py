"""The API server's rules for networking.k8s.io/v1 NetworkPolicy, in Kubernetes' words.

- ``default_network_policy``: ``pkg/apis/networking/v1/defaults.go`` (SetDefaults_NetworkPolicy:
  ``policyTypes`` Ingress always, plus Egress when there are egress rules, when none are given;
  SetDefaults_NetworkPolicyPort: protocol TCP).
- ``validate_network_policy`` / ``validate_network_policy_update``: ``pkg/apis/networking/
  validation`` (ValidateNetworkPolicy, ValidateNetworkPolicyPort, ValidateNetworkPolicyPeer,
  ValidateIPBlock); an update may keep a CIDR the old policy already had, valid or not.
"""
from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Iterable

from netemu.errors import FieldProblem

from . import networkpolicy as n
from .labels import is_valid_port_name, is_valid_port_num, name_is_dns_subdomain
from .validation import (
    forbidden, invalid, is_valid_cidr, not_supported, parse_ip_sloppy, required, validate_label_selector,
    validate_object_meta,
)

# --------------------------------------------------------------------------- defaults


def _default_ports(ports: tuple[n.NetworkPolicyPort, ...]) -> tuple[n.NetworkPolicyPort, ...]:
    return tuple(p if p.protocol else replace(p, protocol="TCP") for p in ports)


def default_network_policy(policy: n.NetworkPolicy) -> n.NetworkPolicy:
    spec = policy.spec
    spec = replace(
        spec, policy_types=n.policy_types(policy),
        ingress=tuple(replace(r, ports=_default_ports(r.ports)) for r in spec.ingress),
        egress=tuple(replace(r, ports=_default_ports(r.ports)) for r in spec.egress))
    return replace(policy, spec=spec)


# --------------------------------------------------------------------------- validation


def _port(port: n.NetworkPolicyPort, path: str) -> list[FieldProblem]:
    """ValidateNetworkPolicyPort."""
    errs: list[FieldProblem] = []
    if port.protocol is not None and port.protocol not in n.PROTOCOLS:
        errs.append(not_supported(f"{path}.protocol", port.protocol, n.PROTOCOLS))
    if port.port is None:
        if port.end_port is not None:
            errs.append(invalid(f"{path}.endPort", port.end_port, "may not be specified when `port` is not specified"))
        return errs
    if isinstance(port.port, int):
        errs += [invalid(f"{path}.port", port.port, m) for m in is_valid_port_num(port.port)]
        if port.end_port is not None:
            if port.end_port < port.port:
                errs.append(invalid(f"{path}.endPort", port.end_port, "must be greater than or equal to `port`"))
            errs += [invalid(f"{path}.endPort", port.end_port, m) for m in is_valid_port_num(port.end_port)]
        return errs
    if port.end_port is not None:
        errs.append(invalid(f"{path}.endPort", port.end_port, "may not be specified when `port` is non-numeric"))
    errs += [invalid(f"{path}.port", port.port, m) for m in is_valid_port_name(port.port)]
    return errs


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """netutils.ParseCIDRSloppy: the network a CIDR names (host bits dropped), or None."""
    addr, _, bits = text.partition("/")
    ip = parse_ip_sloppy(addr)
    if ip is None or not bits.isdigit():
        return None
    try:
        return ipaddress.ip_network(f"{ip}/{bits}", strict=False)
    except ValueError:
        return None


def _cidr(path: str, value: str, allowed: frozenset[str]) -> list[FieldProblem]:
    """IsValidCIDRForLegacyField (a CIDR the old object already had passes as it is)."""
    return [] if value in allowed else is_valid_cidr(path, value)


def _ip_block(block: n.IPBlock, path: str, allowed: frozenset[str]) -> list[FieldProblem]:
    """ValidateIPBlock."""
    if not block.cidr:
        return [required(f"{path}.cidr")]
    errs = _cidr(f"{path}.cidr", block.cidr, allowed)
    network = _network(block.cidr)
    if network is None:
        return errs
    for i, text in enumerate(block.except_):
        where = f"{path}.except[{i}]"
        errs += _cidr(where, text, allowed)
        inner = _network(text)
        if inner is None:
            continue
        if inner.version != network.version or inner.network_address not in network \
                or network.prefixlen >= inner.prefixlen:
            errs.append(invalid(where, text, "must be a strict subset of `cidr`"))
    return errs


def _peer(peer: n.NetworkPolicyPeer, path: str, allowed: frozenset[str]) -> list[FieldProblem]:
    """ValidateNetworkPolicyPeer."""
    errs: list[FieldProblem] = []
    count = 0
    if peer.pod_selector is not None:
        count += 1
        errs += validate_label_selector(peer.pod_selector, f"{path}.podSelector")
    if peer.namespace_selector is not None:
        count += 1
        errs += validate_label_selector(peer.namespace_selector, f"{path}.namespaceSelector")
    if peer.ip_block is not None:
        count += 1
        errs += _ip_block(peer.ip_block, f"{path}.ipBlock", allowed)
    if count == 0:
        errs.append(required(path, "must specify a peer"))
    elif count > 1 and peer.ip_block is not None:
        errs.append(forbidden(path, "may not specify both ipBlock and another peer"))
    return errs


def _rules(rules: Iterable[n.NetworkPolicyIngressRule | n.NetworkPolicyEgressRule], path: str, peers_name: str,
           allowed: frozenset[str]) -> list[FieldProblem]:
    errs: list[FieldProblem] = []
    for i, rule in enumerate(rules):
        for j, port in enumerate(rule.ports):
            errs += _port(port, f"{path}[{i}].ports[{j}]")
        peers = rule.from_ if isinstance(rule, n.NetworkPolicyIngressRule) else rule.to
        for j, peer in enumerate(peers):
            errs += _peer(peer, f"{path}[{i}].{peers_name}[{j}]", allowed)
    return errs


def _spec(spec: n.NetworkPolicySpec, allowed: frozenset[str]) -> list[FieldProblem]:
    """ValidateNetworkPolicySpec."""
    errs = validate_label_selector(spec.pod_selector, "spec.podSelector")
    errs += _rules(spec.ingress, "spec.ingress", "from", allowed)
    errs += _rules(spec.egress, "spec.egress", "to", allowed)
    if len(spec.policy_types) > len(n.POLICY_TYPES):
        errs.append(invalid("spec.policyTypes", list(spec.policy_types), "may not specify more than two policyTypes"))
        return errs
    for i, kind in enumerate(spec.policy_types):
        if kind not in n.POLICY_TYPES:
            errs.append(not_supported(f"spec.policyTypes[{i}]", kind, n.POLICY_TYPES))
    return errs


def validate_network_policy(policy: n.NetworkPolicy) -> list[FieldProblem]:
    """ValidateNetworkPolicy."""
    errs = validate_object_meta(policy.metadata, True, name_is_dns_subdomain)
    return errs + _spec(policy.spec, frozenset())


def _cidrs_of(policy: n.NetworkPolicy) -> frozenset[str]:
    peers = [p for r in policy.spec.ingress for p in r.from_] + [p for r in policy.spec.egress for p in r.to]
    return frozenset(text for p in peers if p.ip_block is not None for text in (p.ip_block.cidr, *p.ip_block.except_))


def validate_network_policy_update(old: n.NetworkPolicy, new: n.NetworkPolicy) -> list[FieldProblem]:
    """ValidateNetworkPolicyUpdate: the old policy's CIDRs are not checked again."""
    errs = validate_object_meta(new.metadata, True, name_is_dns_subdomain)
    return errs + _spec(new.spec, _cidrs_of(old))
