"""NetworkPolicy: the policy model (``model``), its nftables form (``nftables``), that form kept up
to date change by change (``state``) and the enforcer that keeps a netns cluster's nodes in step
(``enforcer``).

``attach(cluster)`` wires it into a starting cluster: on the netns backend the enforcer runs; on
the loopback backend pods share the host's network stack and nothing can filter between them, so
policies are stored without effect and every write of one answers with a warning that says so.
"""
from __future__ import annotations

from typing import Any, Callable

NOT_ENFORCED = ("NetworkPolicy is not enforced on the loopback backend (pods share the host's network stack): "
                "stored without effect; use the netns backend to enforce it")


def enforced(cluster: Any) -> bool:
    return getattr(cluster.config, "backend", "") == "netns"


def attach(cluster: Any) -> Callable[[], None]:
    """Start enforcing (netns) or warn on every write (loopback); returns what stops it."""
    if enforced(cluster):
        from .enforcer import PolicyEnforcer
        enforcer = PolicyEnforcer(cluster)
        enforcer.start()
        cluster.network_policy = enforcer
        return enforcer.stop
    cluster.apiserver.warnings["NetworkPolicy"] = lambda _obj: [NOT_ENFORCED]
    return lambda: None


def describe_sections(cluster: Any) -> list[tuple[str, list[str]]]:
    """What ``netemu describe networkpolicy`` adds: whether the cluster enforces it."""
    if enforced(cluster):
        return [("Enforcement", ["nftables in every node namespace; denied packets are dropped (TCP times out)"])]
    return [("Enforcement", [NOT_ENFORCED])]


def pod_sections(cluster: Any, pod: Any) -> list[tuple[str, list[str]]]:
    """What ``netemu describe pod`` adds: the policies that select the pod and for which directions
    (nothing when none does: the pod is not isolated)."""
    from netemu.api.networkpolicy import policy_types

    from .model import pod_facts, selects
    facts = pod_facts(pod)
    lines = [f"{p.metadata.name}\t{', '.join(policy_types(p))}"
             for p in sorted(cluster.store.list("NetworkPolicy", pod.metadata.namespace), key=lambda p: p.metadata.name)
             if selects(p, facts)]
    if not lines:
        return []
    if not enforced(cluster):
        lines.append("(stored without effect: the loopback backend does not enforce NetworkPolicy)")
    return [("NetworkPolicies", lines)]
