"""``kubectl get`` rows and ``kubectl describe`` text for NetworkPolicies (kubectl's printNetworkPolicy
and describeNetworkPolicy / describeNetworkPolicySpec), built on ``netemu.printers``' helpers.

``printers`` looks these up when it first needs them, so this module may import it freely.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Sequence

from netemu.api.networkpolicy import (
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicySpec, SetSelector,
)
from netemu.printers import (
    Related, _annotations_multiline, _extra_sections, _labels_multiline, _selector_string, _since, _Writer, parse_time,
)

COLUMNS = ("NAME", "POD-SELECTOR", "AGE")
INDENT = "    "


def _format_selector(selector: SetSelector | None) -> str:
    """metav1.FormatLabelSelector: ``<none>`` for an empty selector."""
    text = _selector_string(selector) if selector is not None else "<none>"
    return text or "<none>"


def network_policy_cells(policy: NetworkPolicy, now: datetime, wide: bool) -> list[str]:
    return [policy.metadata.name, _format_selector(policy.spec.pod_selector),
            _since(policy.metadata.creation_timestamp, now)]


def _go_time(value: str | None) -> str:
    """metav1.Time printed with %s (Go's time.String), in UTC."""
    when = parse_time(value)
    if when is None:
        return "0001-01-01 00:00:00 +0000 UTC"
    return when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def _peer(w: _Writer, peer: NetworkPolicyPeer) -> None:
    if peer.pod_selector is not None and peer.namespace_selector is not None:
        w.write(1, f"{INDENT}NamespaceSelector: {_format_selector(peer.namespace_selector)}\n")
        w.write(1, f"{INDENT}PodSelector: {_format_selector(peer.pod_selector)}\n")
    elif peer.pod_selector is not None:
        w.write(1, f"{INDENT}PodSelector: {_format_selector(peer.pod_selector)}\n")
    elif peer.namespace_selector is not None:
        w.write(1, f"{INDENT}NamespaceSelector: {_format_selector(peer.namespace_selector)}\n")
    elif peer.ip_block is not None:
        w.write(1, f"{INDENT}IPBlock:\n")
        w.write(2, f"{INDENT}CIDR: {peer.ip_block.cidr}\n")
        w.write(2, f"{INDENT}Except: {', '.join(peer.ip_block.except_)}\n")


def _rules(w: _Writer, rules: Sequence[NetworkPolicyIngressRule | NetworkPolicyEgressRule], direction: str) -> None:
    """printNetworkPolicySpecIngressFrom / printNetworkPolicySpecEgressTo."""
    if not rules:
        w.write(0, f"{INDENT}<none> (Selected pods are isolated for {direction} connectivity)\n")
        return
    ingress = direction == "ingress"
    word = "From" if ingress else "To"
    for i, rule in enumerate(rules):
        if not rule.ports:
            w.write(0, f"{INDENT}To Port: <any> (traffic allowed to all ports)\n")
        for port in rule.ports:
            shown = "<nil>" if port.port is None else port.port
            w.write(0, f"{INDENT}To Port: {shown}/{port.protocol or 'TCP'}\n")
        peers = rule.from_ if isinstance(rule, NetworkPolicyIngressRule) else rule.to
        if not peers:
            w.write(0, f"{INDENT}{word}: <any> (traffic not restricted by {'source' if ingress else 'destination'})\n")
        for peer in peers:
            w.write(0, f"{INDENT}{word}:\n")
            _peer(w, peer)
        if i != len(rules) - 1:
            w.write(0, f"{INDENT}----------\n")


def _enabled(spec: NetworkPolicySpec) -> tuple[bool, bool]:
    """getPolicyType: which directions the policy affects."""
    if not spec.policy_types:
        return True, bool(spec.egress)
    return "Ingress" in spec.policy_types, "Egress" in spec.policy_types


def describe_network_policy(w: _Writer, policy: NetworkPolicy, events: Sequence[Any] | None, related: Related,
                            now: datetime) -> None:
    meta, spec = policy.metadata, policy.spec
    w.write(0, f"Name:\t{meta.name}\n")
    w.write(0, f"Namespace:\t{meta.namespace}\n")
    w.write(0, f"Created on:\t{_go_time(meta.creation_timestamp)}\n")
    _labels_multiline(w, "Labels", meta.labels)
    _annotations_multiline(w, "Annotations", meta.annotations)
    w.write(0, "Spec:\n")
    w.write(1, "PodSelector: ")
    selector = _format_selector(spec.pod_selector)
    if selector == "<none>":
        w.write(2, "<none> (Allowing the specific traffic to all pods in this namespace)\n")
    else:
        w.write(2, f"{selector}\n")
    ingress, egress = _enabled(spec)
    if ingress:
        w.write(1, "Allowing ingress traffic:\n")
        _rules(w, spec.ingress, "ingress")
    else:
        w.write(1, "Not affecting ingress traffic\n")
    if egress:
        w.write(1, "Allowing egress traffic:\n")
        _rules(w, spec.egress, "egress")
    else:
        w.write(1, "Not affecting egress traffic\n")
    w.write(1, f"Policy Types: {', '.join(spec.policy_types)}\n")
    _extra_sections(w, related)
