"""The DaemonSet controller: one pod per eligible node, rolling updates and status.

A node is eligible (``node_should_run``, Kubernetes' ``NodeShouldRunDaemonPod``) when the pod
template's ``nodeSelector`` and required node affinity admit it and the daemon pod tolerates the
node's NoSchedule and NoExecute taints (``nodeplacement.effective_taints``: a node that is not
Ready is tainted not-ready/unreachable, a cordoned one unschedulable). A pod already on a node
whose taints it no longer tolerates keeps running as long as it tolerates the NoExecute ones
(``should_continue``), which is how a daemon pod survives its node going down: it tolerates
``node.kubernetes.io/unreachable:NoExecute`` forever, and runs again when the node is back.

Each pod is made from the template as the real controller makes it (``CreatePodTemplate``):
``generateName: <ds>-``, an ownerReference with ``controller: true``, the labels
``controller-revision-hash`` (the template's hash) and ``pod-template-generation``, the daemon
tolerations (``AddOrUpdateDaemonPodTolerations``) and a required node affinity naming its node by
``metadata.name`` (``ReplaceDaemonSetPodNodeNameNodeAffinity``); the scheduler binds it there.
No ControllerRevisions are kept: a pod is up to date when its hash or its template generation
is the DaemonSet's.

Per node (``manage``): a missing pod is created, failed pods are deleted (and so replaced),
extra pods beyond the oldest are deleted, and pods on nodes that should not run one (or no
longer exist) are deleted. ``RollingUpdate`` replaces old pods node by node: with ``maxSurge``
0 it deletes at most ``maxUnavailable`` available old pods at a time (unavailable ones at once)
and the manage step creates their successors; with ``maxSurge`` it first starts a new pod next
to the old one on up to ``maxSurge`` nodes and deletes the old pod once the new one is
available. ``OnDelete`` replaces a pod only when someone deletes it. Status (desired, current,
misscheduled, ready, available after ``minReadySeconds``, updated, unavailable,
observedGeneration) is written at the end of each sync when it changed. All deletions are
graceful (``podutil.request_deletion``); pods of a DaemonSet that is gone are deleted (the garbage
collector's background cascade, for objects removed straight from the store).
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from netemu import events
from netemu.api.daemonsetrules import template_generation
from netemu.api.labels import selector_matches
from netemu.api.objects import DaemonSet, Node, ObjectMeta, Pod, PodStatus, Toleration
from netemu.errors import AlreadyExistsError, NetemuError
from netemu.store import Event, Store

from . import nodeplacement as placement
from . import podutil
from .createretry import CreateRetry
from .deployment import scaled_value, template_hash
from netemu.names import generated_name
from .replicaset import epoch, now, owner_reference
from .workqueue import WorkQueue

log = logging.getLogger(__name__)

CONTROLLER_NAME = "daemonset-controller"
REVISION_HASH_LABEL = "controller-revision-hash"
TEMPLATE_GENERATION_LABEL = "pod-template-generation"

DaemonSetKey = tuple[str, str]


# --------------------------------------------------------------------------- pods made from the template


def daemon_tolerations(tolerations: tuple[Toleration, ...], host_network: bool) -> tuple[Toleration, ...]:
    """``AddOrUpdateDaemonPodTolerations``: the template's tolerations and the daemon ones (a
    toleration with the same key, operator and effect is replaced, others are appended)."""
    wanted = [
        Toleration(key=placement.NOT_READY, operator="Exists", effect=placement.NO_EXECUTE),
        Toleration(key=placement.UNREACHABLE, operator="Exists", effect=placement.NO_EXECUTE),
        Toleration(key=placement.DISK_PRESSURE, operator="Exists", effect=placement.NO_SCHEDULE),
        Toleration(key=placement.MEMORY_PRESSURE, operator="Exists", effect=placement.NO_SCHEDULE),
        Toleration(key=placement.PID_PRESSURE, operator="Exists", effect=placement.NO_SCHEDULE),
        Toleration(key=placement.UNSCHEDULABLE, operator="Exists", effect=placement.NO_SCHEDULE),
    ]
    if host_network:
        wanted.append(Toleration(key=placement.NETWORK_UNAVAILABLE, operator="Exists", effect=placement.NO_SCHEDULE))
    out = list(tolerations)
    for toleration in wanted:
        same = [i for i, t in enumerate(out) if (t.key, t.operator or "Equal", t.effect)
                == (toleration.key, toleration.operator, toleration.effect)]
        if same:
            out[same[0]] = toleration
        else:
            out.append(toleration)
    return tuple(out)


def daemon_pod(ds: DaemonSet, node_name: str, revision_hash: str) -> Pod:
    """The pod ``ds`` runs on ``node_name`` (named by the caller from ``generateName``)."""
    template, meta = ds.spec.template, ds.metadata
    labels = dict(template.metadata.labels)
    generation = template_generation(ds)
    if generation is not None:
        labels[TEMPLATE_GENERATION_LABEL] = str(generation)
    labels[REVISION_HASH_LABEL] = revision_hash
    spec = template.spec
    extra = {**spec.extra, "affinity": placement.pin_to_node(spec.extra.get("affinity"), node_name)}
    spec = dataclasses.replace(spec, tolerations=daemon_tolerations(spec.tolerations, spec.host_network), extra=extra)
    return Pod(metadata=ObjectMeta(
        generate_name=f"{meta.name}-", namespace=meta.namespace, labels=labels,
        annotations=dict(template.metadata.annotations), owner_references=(owner_reference(ds),)),
        spec=spec, status=PodStatus(phase="Pending"))


def node_should_run(ds: DaemonSet, node: Node) -> tuple[bool, bool]:
    """(should run a daemon pod, a daemon pod already there may continue), as ``NodeShouldRunDaemonPod``."""
    spec = ds.spec.template.spec
    if spec.node_name and spec.node_name != node.metadata.name:
        return False, False
    if not placement.matches_node(spec, node):
        return False, False
    tolerations = daemon_tolerations(spec.tolerations, spec.host_network)
    taints = placement.effective_taints(node)
    if placement.untolerated(taints, tolerations) is None:
        return True, True
    return False, placement.untolerated(taints, tolerations, (placement.NO_EXECUTE,)) is None


def is_updated(pod: Pod, revision_hash: str, generation: int | None) -> bool:
    """``IsPodUpdated``: the pod carries the DaemonSet's template hash or template generation."""
    labels = pod.metadata.labels
    return (bool(revision_hash) and labels.get(REVISION_HASH_LABEL) == revision_hash) or \
        (generation is not None and labels.get(TEMPLATE_GENERATION_LABEL) == str(generation))


def is_available(pod: Pod, min_ready_seconds: int, moment: float) -> bool:
    if not podutil.is_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    since = epoch(podutil.ready_since(pod))
    return since is None or since + min_ready_seconds <= moment


def node_of(pod: Pod) -> str:
    """The node a daemon pod is on, or is meant for while not yet bound."""
    return pod.spec.node_name or placement.pinned_node(pod.spec) or ""


# --------------------------------------------------------------------------- the controller


@dataclass
class SyncState:
    """What one sync of one DaemonSet works from."""
    ds: DaemonSet
    revision_hash: str
    generation: int | None
    nodes: list[Node]
    pods_by_node: dict[str, list[Pod]] = field(default_factory=dict)  # active-or-terminating, oldest first
    moment: float = 0.0

    def eligibility(self, node: Node) -> tuple[bool, bool]:
        return node_should_run(self.ds, node)


class DaemonSetController:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._queue: WorkQueue[DaemonSetKey] = WorkQueue(self._sync, CONTROLLER_NAME)
        self._create_retry: CreateRetry[DaemonSetKey] = CreateRetry(store, CONTROLLER_NAME)
        self._unsubscribe: Any = None
        self._created: list[Pod] = []  # pods this sync made (``_refreshed`` adds them to its state)

    def start(self) -> None:
        self._unsubscribe = self._store.subscribe(self._on_event, kinds=("Pod", "DaemonSet", "Node"))
        for ds in self._store.list("DaemonSet"):
            self._queue.add((ds.metadata.namespace, ds.metadata.name))

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._queue.stop()

    # ------------------------------------------------------------------ events

    def _on_event(self, event: Event) -> None:
        if event.kind == "Node":
            old, new = event.old, event.new
            if old is None or new is None or _placement_facts(old) != _placement_facts(new):
                for ds in self._store.list("DaemonSet"):
                    self._queue.add((ds.metadata.namespace, ds.metadata.name))
            return
        if event.kind == "DaemonSet":
            self._queue.add((event.obj.metadata.namespace, event.obj.metadata.name))
            return
        self._on_pod(event)

    def _on_pod(self, event: Event) -> None:
        ns = event.obj.metadata.namespace
        for pod in (event.old, event.new):
            ref = podutil.controller_of(pod) if pod is not None else None
            if ref is not None and ref.kind == "DaemonSet":
                self._queue.add((ns, ref.name))
        pod = event.new
        if pod is not None and podutil.controller_of(pod) is None and podutil.is_active(pod) and (
                event.old is None or event.old.metadata.labels != pod.metadata.labels):
            for ds in self._store.list("DaemonSet", ns):  # an orphan a DaemonSet may adopt
                if _selects(ds, pod.metadata.labels):
                    self._queue.add((ns, ds.metadata.name))

    # ------------------------------------------------------------------ sync

    def _sync(self, key: DaemonSetKey) -> None:
        ns, name = key
        self._created = []
        ds: DaemonSet | None = self._store.get("DaemonSet", ns, name)
        if ds is None:
            self._create_retry.forget(key)
            for pod in self._store.list("Pod", ns):
                ref = podutil.controller_of(pod)
                if ref is not None and ref.kind == "DaemonSet" and ref.name == name:
                    self._delete(pod)  # the garbage collector's cascade
            return
        pods = self._claim_pods(ds)
        state = SyncState(ds=ds, revision_hash=template_hash(ds.spec.template), generation=template_generation(ds),
                          nodes=self._store.list("Node"), moment=now())
        for pod in sorted(pods, key=_age):
            state.pods_by_node.setdefault(node_of(pod), []).append(pod)
        if ds.metadata.deletion_timestamp is None:
            self._manage(state)
            strategy = ds.spec.update_strategy
            if strategy.type == "RollingUpdate" and strategy.rolling_update is not None:
                self._rolling_update(self._refreshed(state))
        self._write_status(self._refreshed(state))

    def _claim_pods(self, ds: DaemonSet) -> list[Pod]:
        """The DaemonSet's pods (``ClaimPods``): adopt matching orphans, release pods that stopped
        matching, delete pods a deleted namesake left behind."""
        ns, uid = ds.metadata.namespace, ds.metadata.uid
        mine: list[Pod] = []
        for pod in self._store.list("Pod", ns):
            ref = podutil.controller_of(pod)
            matches = _selects(ds, pod.metadata.labels)
            if ref is None:
                if matches and podutil.is_active(pod) and ds.metadata.deletion_timestamp is None:
                    pod = self._set_owner(pod, ds) or pod
                    mine.append(pod)
                continue
            if ref.kind != "DaemonSet" or ref.name != ds.metadata.name:
                continue
            if ref.uid != uid:
                self._delete(pod)
            elif not matches:
                self._release(pod)
            elif not (podutil.is_terminal(pod) and podutil.is_terminating(pod)):
                mine.append(pod)
        return mine

    def _refreshed(self, state: SyncState) -> SyncState:
        """``state`` with its pods read again from the store (after this sync's writes)."""
        pods_by_node: dict[str, list[Pod]] = {}
        for pods in state.pods_by_node.values():
            for pod in pods:
                current = self._store.get("Pod", pod.metadata.namespace, pod.metadata.name)
                if current is not None and current.metadata.uid == pod.metadata.uid:
                    pods_by_node.setdefault(node_of(current), []).append(current)
        for pod in self._created:
            pods_by_node.setdefault(node_of(pod), []).append(pod)
        self._created = []
        for pods in pods_by_node.values():
            pods.sort(key=_age)
        return dataclasses.replace(state, pods_by_node=pods_by_node)

    def _manage(self, state: SyncState) -> None:
        """``manage``/``podsShouldBeOnNode``: create missing pods, delete failed, extra and misplaced ones."""
        ds = state.ds
        surge = _surge_enabled(ds)
        node_names = {n.metadata.name for n in state.nodes}
        for node_name, pods in state.pods_by_node.items():
            if node_name not in node_names:  # the node is gone (PodGC's job in Kubernetes)
                for pod in pods:
                    self._delete(pod, ds)
        for node in state.nodes:
            should_run, should_continue = state.eligibility(node)
            pods = state.pods_by_node.get(node.metadata.name, [])
            if not should_continue:
                for pod in pods:
                    self._delete(pod, ds)
                continue
            if not should_run:
                continue
            running = []
            for pod in pods:
                if podutil.is_terminating(pod):
                    continue
                if pod.status.phase == "Failed":
                    events.recorder(self._store).warning(
                        ds, "FailedDaemonPod",
                        f"Found failed daemon pod {pod.metadata.namespace}/{pod.metadata.name} on node "
                        f"{node.metadata.name}, will try to kill it", component=CONTROLLER_NAME)
                    self._delete(pod, ds)
                    continue
                running.append(pod)
            if not running:
                self._create(ds, node.metadata.name, state.revision_hash)
            elif surge:
                keep = self._surge_keep(state, running)
                for pod in running:
                    if pod not in keep:
                        self._delete(pod, ds)
            else:
                for pod in running[1:]:  # all but the oldest
                    self._delete(pod, ds)

    @staticmethod
    def _surge_keep(state: SyncState, running: list[Pod]) -> list[Pod]:
        """With surge: the oldest updated pod and, while it is not available, the oldest old one."""
        updated = [p for p in running if is_updated(p, state.revision_hash, state.generation)]
        old = [p for p in running if p not in updated]
        if not updated:
            return old[:1]
        if old and not is_available(updated[0], state.ds.spec.min_ready_seconds, state.moment):
            return [updated[0], old[0]]
        return [updated[0]]

    def _rolling_update(self, state: SyncState) -> None:
        ds = state.ds
        eligible = [n for n in state.nodes if state.eligibility(n)[0]]
        desired = len(eligible)
        rolling = ds.spec.update_strategy.rolling_update
        assert rolling is not None
        max_surge = scaled_value(rolling.max_surge, desired, round_up=True) if _surge_enabled(ds) else 0
        max_unavailable = scaled_value(rolling.max_unavailable, desired, round_up=True)
        if max_surge == 0 and max_unavailable == 0:
            max_unavailable = 1
        per_node = {n.metadata.name: _updated_and_old(state, state.pods_by_node.get(n.metadata.name, []))
                    for n in eligible}
        if max_surge == 0:
            self._replace_unavailable_first(state, per_node, max_unavailable)
        else:
            self._surge(state, per_node, max_surge)

    def _replace_unavailable_first(self, state: SyncState, per_node: dict[str, Any], max_unavailable: int) -> None:
        ds, moment = state.ds, state.moment
        unavailable = 0
        replace_now: list[Pod] = []
        candidates: list[Pod] = []
        for node_name in sorted(per_node):
            new, old, ok = per_node[node_name]
            if not ok or (old is None and new is None):
                unavailable += 1
            elif new is not None:
                if not is_available(new, ds.spec.min_ready_seconds, moment):
                    unavailable += 1
            elif not is_available(old, ds.spec.min_ready_seconds, moment):
                replace_now.append(old)
            elif unavailable < max_unavailable:
                candidates.append(old)
        budget = max(0, min(max_unavailable - unavailable, len(candidates)))
        for pod in replace_now + candidates[:budget]:
            self._delete(pod, ds)

    def _surge(self, state: SyncState, per_node: dict[str, Any], max_surge: int) -> None:
        ds, moment = state.ds, state.moment
        surged = 0
        create_on: list[str] = []
        delete: list[Pod] = []
        for node_name in sorted(per_node):
            new, old, ok = per_node[node_name]
            if not ok:
                surged += 1
            elif old is None:
                continue
            elif new is None:
                if not is_available(old, ds.spec.min_ready_seconds, moment):
                    create_on.append(node_name)
                elif surged < max_surge:
                    surged += 1
                    create_on.append(node_name)
            elif not is_available(new, ds.spec.min_ready_seconds, moment):
                surged += 1
            else:
                delete.append(old)
        for pod in delete:
            self._delete(pod, ds)
        for node_name in create_on:
            self._create(ds, node_name, state.revision_hash)

    # ------------------------------------------------------------------ writes

    def _create(self, ds: DaemonSet, node_name: str, revision_hash: str) -> None:
        template = daemon_pod(ds, node_name, revision_hash)
        for _ in range(10):
            pod = dataclasses.replace(template, metadata=dataclasses.replace(
                template.metadata, name=generated_name(template.metadata.generate_name)))
            key = (ds.metadata.namespace, ds.metadata.name)
            try:
                created = self._store.create(pod)
            except AlreadyExistsError:
                continue
            except NetemuError as exc:  # refused by admission (a missing service account): retried
                self._queue.add_after(key, self._create_retry.refused(key, ds, exc))
                return
            self._create_retry.succeeded(key)
            self._created = [*self._created, created]
            events.recorder(self._store).normal(ds, "SuccessfulCreate", f"Created pod: {created.metadata.name}",
                                                component=CONTROLLER_NAME)
            return
        log.warning("daemonset %s/%s: no free pod name found", ds.metadata.namespace, ds.metadata.name)

    def _delete(self, pod: Pod, ds: DaemonSet | None = None) -> None:
        current = self._store.get("Pod", pod.metadata.namespace, pod.metadata.name)
        if current is None or current.metadata.uid != pod.metadata.uid or podutil.is_terminating(current):
            return
        podutil.request_deletion(self._store, current)
        if ds is not None:
            events.recorder(self._store).normal(ds, "SuccessfulDelete", f"Deleted pod: {pod.metadata.name}",
                                                component=CONTROLLER_NAME)

    def _set_owner(self, pod: Pod, ds: DaemonSet) -> Pod | None:
        owner = owner_reference(ds)
        return self._store.modify("Pod", pod.metadata.namespace, pod.metadata.name, lambda p: dataclasses.replace(
            p, metadata=dataclasses.replace(p.metadata, owner_references=p.metadata.owner_references + (owner,))))

    def _release(self, pod: Pod) -> None:
        def drop_owner(p: Pod) -> Pod:
            refs = tuple(r for r in p.metadata.owner_references if not (r.controller and r.kind == "DaemonSet"))
            return dataclasses.replace(p, metadata=dataclasses.replace(p.metadata, owner_references=refs))
        self._store.modify("Pod", pod.metadata.namespace, pod.metadata.name, drop_owner)

    def _write_status(self, state: SyncState) -> None:
        """``updateDaemonSetStatus``."""
        ds = state.ds
        desired = current = misscheduled = ready = available = updated = 0
        for node in state.nodes:
            should_run, _ = state.eligibility(node)
            pods = state.pods_by_node.get(node.metadata.name, [])
            if not should_run:
                misscheduled += 1 if pods else 0
                continue
            desired += 1
            if not pods:
                continue
            current += 1
            pod = min(pods, key=_age_and_phase)
            if podutil.is_ready(pod):
                ready += 1
                if is_available(pod, ds.spec.min_ready_seconds, state.moment):
                    available += 1
                elif ds.spec.min_ready_seconds > 0:
                    since = epoch(podutil.ready_since(pod)) or state.moment
                    self._queue.add_after((ds.metadata.namespace, ds.metadata.name),
                                          max(0.0, since + ds.spec.min_ready_seconds - state.moment))
            if is_updated(pod, state.revision_hash, state.generation):
                updated += 1
        status = dataclasses.replace(
            ds.status, desired_number_scheduled=desired, current_number_scheduled=current,
            number_misscheduled=misscheduled, number_ready=ready, number_available=available,
            updated_number_scheduled=updated, number_unavailable=desired - available,
            observed_generation=ds.metadata.generation)
        if status != ds.status:
            self._store.modify("DaemonSet", ds.metadata.namespace, ds.metadata.name,
                               lambda d: dataclasses.replace(d, status=status))


# --------------------------------------------------------------------------- helpers


def _placement_facts(node: Node) -> tuple[Any, ...]:
    return (dict(node.metadata.labels), node.spec.unschedulable, node.spec.taints,
            placement.ready_status(node))


def _selects(ds: DaemonSet, labels: Any) -> bool:
    selector = ds.spec.selector
    if selector is None or (not selector.match_labels and not selector.match_expressions):
        return False
    return selector_matches(selector, labels)


def _surge_enabled(ds: DaemonSet) -> bool:
    rolling = ds.spec.update_strategy.rolling_update
    return (ds.spec.update_strategy.type == "RollingUpdate" and rolling is not None
            and rolling.max_surge not in (None, 0, "0%"))


def _age(pod: Pod) -> tuple[float, str]:
    return (epoch(pod.metadata.creation_timestamp) or math.inf, pod.metadata.name)


_PHASE_ORDER = {"Running": 0, "Pending": 1, "": 1, "Unknown": 2, "Succeeded": 3, "Failed": 3}


def _age_and_phase(pod: Pod) -> tuple[Any, ...]:
    """``podByCreationTimestampAndPhase``: oldest first; at equal age, running before pending."""
    return (_age(pod)[0], _PHASE_ORDER.get(pod.status.phase, 2), pod.metadata.name)


def _updated_and_old(state: SyncState, pods: Iterable[Pod]) -> tuple[Pod | None, Pod | None, bool]:
    """``findUpdatedPodsOnNode``: the node's one updated and one old pod (terminating ones
    skipped); ``ok`` is False when there are two of either."""
    new = old = None
    for pod in pods:
        if podutil.is_terminating(pod):
            continue
        if is_updated(pod, state.revision_hash, state.generation):
            if new is not None:
                return None, None, False
            new = pod
        else:
            if old is not None:
                return None, None, False
            old = pod
    return new, old, True


__all__ = ["CONTROLLER_NAME", "DaemonSetController", "REVISION_HASH_LABEL", "TEMPLATE_GENERATION_LABEL",
           "daemon_pod", "daemon_tolerations", "is_updated", "node_should_run"]
