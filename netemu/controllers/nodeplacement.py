"""Where a pod may run: taints and tolerations, ``nodeSelector`` and required node affinity.

Shared by the scheduler and the DaemonSet controller, as Kubernetes' ``v1helper`` taint helpers
and the ``nodeaffinity.GetRequiredNodeAffinity(pod).Match(node)`` matcher are:

- ``effective_taints(node)``: the node's ``spec.taints`` and those the node lifecycle controller
  keeps there from the node's state (``node.kubernetes.io/not-ready`` or ``unreachable``, effects
  NoSchedule and NoExecute, while the Ready condition is False or Unknown;
  ``node.kubernetes.io/unschedulable:NoSchedule`` while cordoned), whether or not they were written.
- ``tolerates(tolerations, taint)``: ``ToleratesTaint`` (an empty key with ``Exists`` matches
  every key, an empty effect every effect).
- ``matches_node(spec, node)``: the pod's ``nodeSelector`` and its
  ``affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution`` (terms ORed, each
  term's requirements ANDed; ``matchExpressions`` on labels with In, NotIn, Exists,
  DoesNotExist, Gt, Lt; ``matchFields`` on ``metadata.name``). Affinity is kept verbatim in the
  pod spec (``PodSpec.extra``), so it is read as the manifest gives it.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from netemu.api.objects import Node, PodSpec, Taint, Toleration

NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
DISK_PRESSURE = "node.kubernetes.io/disk-pressure"
MEMORY_PRESSURE = "node.kubernetes.io/memory-pressure"
PID_PRESSURE = "node.kubernetes.io/pid-pressure"
NETWORK_UNAVAILABLE = "node.kubernetes.io/network-unavailable"

NO_SCHEDULE, PREFER_NO_SCHEDULE, NO_EXECUTE = "NoSchedule", "PreferNoSchedule", "NoExecute"
NODE_NAME_FIELD = "metadata.name"


def ready_status(node: Node) -> str:
    """The node's Ready condition status: True, False or Unknown (no condition: Unknown)."""
    for cond in node.status.conditions:
        if cond.type == "Ready":
            return cond.status
    return "Unknown"


def state_taints(node: Node) -> tuple[Taint, ...]:
    """The taints the node lifecycle controller derives from the node's state."""
    status = ready_status(node)
    taints: list[Taint] = []
    if status != "True":
        key = UNREACHABLE if status == "Unknown" else NOT_READY
        taints += [Taint(key=key, effect=NO_SCHEDULE), Taint(key=key, effect=NO_EXECUTE)]
    if node.spec.unschedulable:
        taints.append(Taint(key=UNSCHEDULABLE, effect=NO_SCHEDULE))
    return tuple(taints)


def effective_taints(node: Node) -> tuple[Taint, ...]:
    """``spec.taints`` plus the state taints not already there (same key and effect)."""
    present = {(t.key, t.effect) for t in node.spec.taints}
    return node.spec.taints + tuple(t for t in state_taints(node) if (t.key, t.effect) not in present)


def tolerates(tolerations: Iterable[Toleration], taint: Taint) -> bool:
    """Some toleration tolerates ``taint`` (``v1helper.TolerationsTolerateTaint``)."""
    for t in tolerations:
        if t.effect and t.effect != taint.effect:
            continue
        if t.key != taint.key and not (not t.key and t.operator == "Exists"):
            continue
        if t.operator == "Exists" or t.value == taint.value:
            return True
    return False


def untolerated(taints: Iterable[Taint], tolerations: Sequence[Toleration],
                effects: Iterable[str] = (NO_SCHEDULE, NO_EXECUTE)) -> Taint | None:
    """The first taint with one of ``effects`` that no toleration tolerates (``FindMatchingUntoleratedTaint``)."""
    wanted = frozenset(effects)
    for taint in taints:
        if taint.effect in wanted and not tolerates(tolerations, taint):
            return taint
    return None


def tolerates_forever(tolerations: Iterable[Toleration], taint: Taint) -> bool:
    """Some toleration tolerates ``taint`` without ``tolerationSeconds`` (never evicted for it)."""
    return tolerates([t for t in tolerations if t.toleration_seconds is None], taint)


def taint_text(taint: Taint) -> str:
    """The scheduler's ``{key: value}`` for a taint, as its messages print it."""
    return f"{{{taint.key}: {taint.value}}}"


# --------------------------------------------------------------------------- node affinity


def _requirement_matches(req: Mapping[str, Any], value: str | None) -> bool:
    op = req.get("operator", "")
    values = [str(v) for v in req.get("values") or ()]
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and len(values) == 1:
        try:
            have, bound = int(value), int(values[0])
        except ValueError:
            return False
        return have > bound if op == "Gt" else have < bound
    return False


def _term_matches(term: Mapping[str, Any], node: Node) -> bool:
    expressions = term.get("matchExpressions") or ()
    fields = term.get("matchFields") or ()
    if not expressions and not fields:
        return False  # an empty term matches no node
    labels = node.metadata.labels
    if not all(_requirement_matches(req, labels.get(req.get("key", ""))) for req in expressions):
        return False
    return all(_requirement_matches(req, node.metadata.name if req.get("key") == NODE_NAME_FIELD else None)
               for req in fields)


def required_node_terms(spec: PodSpec) -> list[Mapping[str, Any]] | None:
    """The required node-affinity terms of a pod spec; None when it has none."""
    affinity = spec.extra.get("affinity") or {}
    required = (affinity.get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    if not required:
        return None
    return list(required.get("nodeSelectorTerms") or ())


def matches_node(spec: PodSpec, node: Node) -> bool:
    """``nodeSelector`` and required node affinity both admit ``node``."""
    labels = node.metadata.labels
    if any(labels.get(k) != v for k, v in spec.node_selector.items()):
        return False
    terms = required_node_terms(spec)
    return terms is None or any(_term_matches(term, node) for term in terms)


def pin_to_node(affinity: Mapping[str, Any] | None, node_name: str) -> dict[str, Any]:
    """``ReplaceDaemonSetPodNodeNameNodeAffinity``: the required node affinity becomes one term
    matching ``metadata.name`` = ``node_name``; the rest of the affinity is kept."""
    pinned = {"nodeSelectorTerms": [{"matchFields": [
        {"key": NODE_NAME_FIELD, "operator": "In", "values": [node_name]}]}]}
    out = dict(affinity or {})
    node_affinity = dict(out.get("nodeAffinity") or {})
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = pinned
    out["nodeAffinity"] = node_affinity
    return out


def pinned_node(spec: PodSpec) -> str | None:
    """The node a pod's required affinity names by ``metadata.name`` (a DaemonSet pod's node)."""
    for term in required_node_terms(spec) or ():
        for req in term.get("matchFields") or ():
            values = req.get("values") or ()
            if req.get("key") == NODE_NAME_FIELD and req.get("operator") == "In" and len(values) == 1:
                return str(values[0])
    return None
