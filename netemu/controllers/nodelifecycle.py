"""What the node lifecycle controller does when a node stops answering, and when it is back.

- The node is tainted ``node.kubernetes.io/unreachable`` (NoSchedule and NoExecute) while its
  Ready condition is Unknown, and untainted when it is Ready again (``TaintBasedEvictions``).
- Its pods are marked not ready (``MarkPodsNotReady``), so their endpoints are withdrawn.
- Pods that do not tolerate the NoExecute taint forever are evicted (deleted at once: Kubernetes
  waits the 300 s of the default ``tolerationSeconds``, netemu does not); pods that do, such as
  DaemonSet pods, stay bound to the node and run again when its kubelet comes back.
"""
from __future__ import annotations

import dataclasses

from netemu.api.objects import Node, Pod, Taint
from netemu.store import Store, now_rfc3339

from . import nodeplacement as placement
from . import podutil

UNREACHABLE_TAINTS = (Taint(key=placement.UNREACHABLE, effect=placement.NO_SCHEDULE),
                      Taint(key=placement.UNREACHABLE, effect=placement.NO_EXECUTE))


def with_reachability_taints(node: Node, reachable: bool) -> Node:
    """``node`` with the unreachable taints added (``reachable`` False) or removed."""
    kept = tuple(t for t in node.spec.taints if t.key != placement.UNREACHABLE)
    if not reachable:
        added = now_rfc3339()
        kept += tuple(dataclasses.replace(t, time_added=added) for t in UNREACHABLE_TAINTS)
    if kept == node.spec.taints:
        return node
    return dataclasses.replace(node, spec=dataclasses.replace(node.spec, taints=kept))


def stays_when_unreachable(pod: Pod) -> bool:
    """The pod tolerates ``node.kubernetes.io/unreachable:NoExecute`` without a time limit."""
    return placement.tolerates_forever(pod.spec.tolerations, UNREACHABLE_TAINTS[1])


def _not_ready(pod: Pod) -> Pod:
    conditions = podutil.set_condition(pod.status.conditions, "Ready", "False")
    return dataclasses.replace(pod, status=dataclasses.replace(pod.status, conditions=conditions))


def node_unreachable(store: Store, node_name: str) -> None:
    """Evict the node's pods that do not tolerate it being unreachable; mark the rest not ready."""
    for pod in store.list("Pod"):
        if pod.spec.node_name != node_name:
            continue
        if stays_when_unreachable(pod) and not podutil.is_terminating(pod):
            store.modify("Pod", pod.metadata.namespace, pod.metadata.name, _not_ready)
        else:
            store.delete("Pod", pod.metadata.namespace, pod.metadata.name)
