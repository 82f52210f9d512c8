"""The scheduler: binds pending pods (empty ``spec.nodeName``, ``schedulerName: default-scheduler``)
to nodes.

A node fits when it is not ``spec.unschedulable`` (unless the pod tolerates
``node.kubernetes.io/unschedulable``), the pod tolerates its NoSchedule and NoExecute taints (a
node that is not Ready counts as tainted ``node.kubernetes.io/not-ready``, see
``nodeplacement``) and its labels and name satisfy the pod's ``nodeSelector`` and required node
affinity. Among fitting nodes it prefers the one holding the fewest pods of the same owner
(so replicas spread over distinct nodes first), then the fewest non-terminal pods, then the name.
Binding sets ``spec.nodeName`` and the ``PodScheduled`` condition; a pod that fits nowhere gets
``PodScheduled=False``, reason ``Unschedulable`` and Kubernetes' message
(``0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.``) and is
retried whenever a node changes. Resources, preferred affinity and pod (anti-)affinity are not modelled.
"""
from __future__ import annotations

import collections
import logging
from typing import Any

from netemu import events
from netemu.api.objects import Node, Pod, Taint
from netemu.frozen import evolve
from netemu.store import ADDED, DELETED, Event, Store

from . import nodeplacement, podutil
from .workqueue import WorkQueue

log = logging.getLogger(__name__)

SCHEDULER_NAME = "default-scheduler"

PodKey = tuple[str, str]
# Kubernetes' filter reasons (scheduler framework plugins), as they appear in the message.
REASON_SELECTOR = "node(s) didn't match Pod's node affinity/selector"
REASON_UNSCHEDULABLE = "node(s) were unschedulable"
REASON_NOT_READY = "node(s) had untolerated taint {node.kubernetes.io/not-ready: }"


def _node_ready(node: Node) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)


def _schedulable_facts(node: Node) -> tuple[Any, ...]:
    return (dict(node.metadata.labels), node.spec.unschedulable, _node_ready(node), node.spec.taints)


def _owner_key(pod: Pod) -> tuple[str, str] | None:
    ref = podutil.controller_of(pod)
    if ref is None:
        return None
    return (pod.metadata.namespace, ref.uid or f"{ref.kind}/{ref.name}")


def _wants_scheduling(pod: Pod) -> bool:
    return (not pod.spec.node_name and pod.spec.scheduler_name in ("", SCHEDULER_NAME)
            and podutil.is_active(pod))


class Scheduler:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._nodes: dict[str, Node] = {}
        self._taints: dict[str, tuple[Node, tuple[Taint, ...]]] = {}  # node → (that version, its taints)
        self._pods_on_node: collections.Counter[str] = collections.Counter()
        self._owner_on_node: dict[tuple[str, str], collections.Counter[str]] = {}
        self._placed: dict[PodKey, tuple[str, tuple[str, str] | None]] = {}
        self._pending: dict[PodKey, None] = {}
        self._queue: WorkQueue[PodKey] = WorkQueue(self._schedule, "scheduler")
        self._unsubscribe = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._unsubscribe = self._store.subscribe(self._on_event, kinds=("Pod", "Node"))
        for node in self._store.list("Node"):
            self._nodes[node.metadata.name] = node
        for pod in self._store.list("Pod"):
            self._on_pod(Event(ADDED, None, pod))

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._queue.stop()

    # ------------------------------------------------------------------ events

    def _on_event(self, event: Event) -> None:
        if event.kind == "Node":
            self._on_node(event)
        else:
            self._on_pod(event)

    def _on_node(self, event: Event) -> None:
        name = event.obj.metadata.name
        if event.type == DELETED:
            self._nodes.pop(name, None)
            self._taints.pop(name, None)
            return
        self._nodes[name] = event.new
        if event.old is None or _schedulable_facts(event.old) != _schedulable_facts(event.new):
            for key in self._pending:
                self._queue.add(key)

    def _on_pod(self, event: Event) -> None:
        pod = event.obj
        key = (pod.metadata.namespace, pod.metadata.name)
        new = event.new
        self._account(key, new)
        if new is not None and _wants_scheduling(new):
            changed_spec = event.old is None or event.old.spec.node_selector != new.spec.node_selector \
                or key not in self._pending
            self._pending[key] = None
            if changed_spec:
                self._queue.add(key)
        else:
            self._pending.pop(key, None)

    def _account(self, key: PodKey, pod: Pod | None) -> None:
        """Keep the per-node pod counts (non-terminal pods bound to a node) in step with ``pod``."""
        placed = (pod.spec.node_name, _owner_key(pod)) \
            if pod is not None and pod.spec.node_name and not podutil.is_terminal(pod) else None
        before = self._placed.get(key)
        if before == placed:
            return
        if before is not None:
            node, owner = before
            self._pods_on_node[node] -= 1
            if owner is not None:
                self._owner_on_node[owner][node] -= 1
                if self._owner_on_node[owner].total() == 0:
                    del self._owner_on_node[owner]
            del self._placed[key]
        if placed is not None:
            node, owner = placed
            self._pods_on_node[node] += 1
            if owner is not None:
                self._owner_on_node.setdefault(owner, collections.Counter())[node] += 1
            self._placed[key] = placed

    # ------------------------------------------------------------------ scheduling

    def _schedule(self, key: PodKey) -> None:
        pod = self._store.get("Pod", *key)
        if pod is None or not _wants_scheduling(pod):
            self._pending.pop(key, None)
            return
        fitting: list[str] = []
        rejected: collections.Counter[str] = collections.Counter()
        tolerations = pod.spec.tolerations
        constrained = bool(pod.spec.node_selector) or nodeplacement.required_node_terms(pod.spec) is not None
        for name, node in self._nodes.items():
            taint = nodeplacement.untolerated(self._scheduling_taints(name, node), tolerations)
            if node.spec.unschedulable and not nodeplacement.tolerates(
                    tolerations, Taint(key=nodeplacement.UNSCHEDULABLE, effect=nodeplacement.NO_SCHEDULE)):
                rejected[REASON_UNSCHEDULABLE] += 1
            elif taint is not None:
                rejected[f"node(s) had untolerated taint {nodeplacement.taint_text(taint)}"] += 1
            elif constrained and not nodeplacement.matches_node(pod.spec, node):
                rejected[REASON_SELECTOR] += 1
            else:
                fitting.append(name)
        if not fitting:
            self._mark_unschedulable(pod, self._failure_message(rejected))
            return
        owner = _owner_key(pod)
        siblings = self._owner_on_node.get(owner, collections.Counter()) if owner else collections.Counter()
        chosen = min(fitting, key=lambda n: (siblings[n], self._pods_on_node[n], n))
        status = evolve(pod.status, conditions=podutil.set_condition(
            pod.status.conditions, "PodScheduled", "True"))
        bound = evolve(pod, spec=evolve(pod.spec, node_name=chosen), status=status)
        self._pending.pop(key, None)
        self._account(key, bound)  # count it now so the rest of this batch spreads
        bound = self._store.update(bound)
        events.recorder(self._store).normal(
            bound, "Scheduled", f"Successfully assigned {key[0]}/{key[1]} to {chosen}", component=SCHEDULER_NAME)
        log.debug("bound pod %s/%s to %s", *key, chosen)

    def _scheduling_taints(self, name: str, node: Node) -> tuple[Taint, ...]:
        """The node's effective taints but the cordon's (checked on its own above), worked out
        once per version of the node rather than once per pod and node."""
        cached = self._taints.get(name)
        if cached is None or cached[0] is not node:
            cached = self._taints[name] = (node, tuple(
                t for t in nodeplacement.effective_taints(node) if t.key != nodeplacement.UNSCHEDULABLE))
        return cached[1]

    def _failure_message(self, rejected: collections.Counter[str]) -> str:
        if not self._nodes:
            return "no nodes available to schedule pods"
        reasons = sorted(f"{count} {reason}" for reason, count in rejected.items())
        return f"0/{len(self._nodes)} nodes are available: {', '.join(reasons)}."

    def _mark_unschedulable(self, pod: Pod, message: str) -> None:
        conditions = podutil.set_condition(pod.status.conditions, "PodScheduled", "False",
                                           reason="Unschedulable", message=message)
        if conditions is pod.status.conditions:
            return
        if pod.status.phase == "":
            status = evolve(pod.status, conditions=conditions, phase="Pending")
        else:
            status = evolve(pod.status, conditions=conditions)
        pod = self._store.update(evolve(pod, status=status))
        events.recorder(self._store).warning(pod, "FailedScheduling", message, component=SCHEDULER_NAME)
        log.info("pod %s/%s is unschedulable: %s", pod.metadata.namespace, pod.metadata.name, message)
