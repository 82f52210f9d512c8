"""The deployment controller: Deployment → pods, scaling, rolling updates and status.

netemu has no ReplicaSet objects: the controller owns pods directly, but names and labels them as
Kubernetes' ReplicaSets would. A pod is named ``<deployment>-<pod-template-hash>-<5 chars>``; the
hash is fnv32a over the pod template (canonical JSON) encoded with Kubernetes'
``rand.SafeEncodeString`` alphabet, so it looks like a real one (``7c5ddbdf54``). Pods carry the
template's labels plus ``pod-template-hash`` and an ownerReference to the **Deployment** (in
Kubernetes it points at the ReplicaSet ``<deployment>-<hash>``; status messages still name that
ReplicaSet).

Reconcile: scale to ``spec.replicas`` (scale-down removes unassigned, then not-ready, then
most recently ready, then newest pods first, as ReplicaSets do); a template change rolls out,
creating new-hash pods and removing old-hash ones as new ones become available, within
maxSurge (rounded up) and maxUnavailable (rounded down); ``Recreate`` removes every old pod first.
Pods that disappear or finish are replaced. Deleting a Deployment deletes its pods. All deletions
are graceful (``podutil.request_deletion``). Status (replicas, updated/ready/available/unavailable
counts, observedGeneration, Available and Progressing conditions with Kubernetes' reasons) is
written only when it changes. Per deployment the controller keeps counts of its pods by template
hash and state, updated per pod event, so a sync with nothing to do costs no scan.

Not modelled: ReplicaSet history, revision annotations, adoption of orphan pods, progress
deadlines; a paused deployment only gets its status updated.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import logging
import math
from dataclasses import dataclass
from typing import Any

from netemu import events
from netemu.api import codec
from netemu.api.labels import selector_matches
from netemu.api.objects import (Deployment, DeploymentCondition, DeploymentStatus, ObjectMeta,
                                OwnerReference, Pod, PodStatus, PodTemplateSpec)
from netemu.errors import AlreadyExistsError
from netemu.store import ADDED, Event, Store, now_rfc3339

from . import podutil
from .names import fnv32a, generated_name, safe_encode
from .workqueue import WorkQueue

log = logging.getLogger(__name__)

HASH_LABEL = "pod-template-hash"
CONTROLLER_NAME = "deployment-controller"

DeploymentKey = tuple[str, str]


def template_hash(template: PodTemplateSpec) -> str:
    """The pod-template-hash of a template: fnv32a of its canonical JSON, SafeEncodeString'd decimal."""
    canonical = json.dumps(codec.to_dict(template), sort_keys=True, separators=(",", ":"))
    return safe_encode(str(fnv32a(canonical.encode())))


def scaled_value(value: int | str | None, total: int, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent: ints as they are, "25%" of total rounded."""
    if value is None:
        value = "25%"
    if isinstance(value, int):
        return value
    if value.endswith("%"):
        scaled = int(value[:-1]) * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    return int(value)


def surge_and_unavailable(deployment: Deployment, replicas: int) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as deploymentutil.ResolveFenceposts, unavailable capped."""
    strategy = deployment.spec.strategy
    if strategy is not None and strategy.type == "Recreate":
        return 0, 0
    rolling = strategy.rolling_update if strategy is not None else None
    surge = scaled_value(rolling.max_surge if rolling else None, replicas, True)
    unavailable = scaled_value(rolling.max_unavailable if rolling else None, replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, replicas)


# --------------------------------------------------------------------------- pod bookkeeping

_PHASE_RANK = {"Pending": 0, "": 0, "Unknown": 1, "Running": 2}


def _epoch(timestamp: str | None) -> float | None:
    if not timestamp:
        return None
    try:
        return datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class PodInfo:
    """What the controller needs to know about one owned pod (taken at event time)."""

    name: str
    owner_uid: str
    matches: bool  # labels still match the deployment's selector
    hash: str
    active: bool
    terminal: bool
    ready: bool
    ready_since: float | None
    assigned: bool
    phase_rank: int
    seq: int

    @classmethod
    def of(cls, pod: Pod, owner_uid: str, matches: bool, seq: int) -> "PodInfo":
        ready = podutil.is_ready(pod)
        return cls(name=pod.metadata.name, owner_uid=owner_uid, matches=matches,
                   hash=pod.metadata.labels.get(HASH_LABEL, ""),
                   active=podutil.is_active(pod), terminal=podutil.is_terminal(pod), ready=ready,
                   ready_since=_epoch(podutil.ready_since(pod)) if ready else None,
                   assigned=bool(pod.spec.node_name),
                   phase_rank=_PHASE_RANK.get(pod.status.phase, 2), seq=seq)

    @property
    def tally_key(self) -> tuple[str, bool, str, bool, bool, bool]:
        return (self.owner_uid, self.matches, self.hash, self.active, self.terminal, self.ready)

    def deletion_rank(self) -> tuple[Any, ...]:
        """Sorts the pod to delete first first (controller.ActivePods ordering)."""
        since = self.ready_since if self.ready_since is not None else math.inf
        return (self.assigned, self.phase_rank, self.ready, -since, -self.seq)


class OwnedPods:
    """One deployment's pods, with counts by kind kept as they change (so a sync need not scan)."""

    def __init__(self) -> None:
        self.pods: dict[str, PodInfo] = {}
        self.tally: collections.Counter[tuple[str, bool, str, bool, bool, bool]] = collections.Counter()

    def put(self, info: PodInfo) -> None:
        self.remove(info.name)
        self.pods[info.name] = info
        self.tally[info.tally_key] += 1

    def remove(self, name: str) -> None:
        old = self.pods.pop(name, None)
        if old is not None:
            self.tally[old.tally_key] -= 1
            if not self.tally[old.tally_key]:
                del self.tally[old.tally_key]


@dataclass
class Counts:
    """Active pods of the current template ("new") and of older ones ("old")."""

    new_active: int = 0
    new_ready: int = 0
    new_available: int = 0
    old_active: int = 0
    old_ready: int = 0
    old_available: int = 0
    old_lingering: int = 0  # old pods not finished, terminating ones included
    foreign: int = 0        # pods of a deleted namesake, or no longer matching the selector

    @property
    def active(self) -> int:
        return self.new_active + self.old_active

    @property
    def available(self) -> int:
        return self.new_available + self.old_available


def _owner_ref(pod: Pod) -> OwnerReference | None:
    ref = podutil.controller_of(pod)
    if ref is not None and ref.kind == "Deployment":
        return ref
    return None


# --------------------------------------------------------------------------- controller


class DeploymentController:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._pods: dict[DeploymentKey, OwnedPods] = {}
        self._hashes: dict[DeploymentKey, tuple[PodTemplateSpec, str]] = {}
        # per deployment: (template hash, whether its "ReplicaSet" was just created)
        self._announce: dict[DeploymentKey, tuple[str, bool]] = {}
        self._seq = 0
        self._queue: WorkQueue[DeploymentKey] = WorkQueue(self._sync, "deployment-controller")
        self._unsubscribe = None

    def start(self) -> None:
        self._unsubscribe = self._store.subscribe(self._on_event, kinds=("Pod", "Deployment"))
        for pod in self._store.list("Pod"):
            self._on_pod(Event(ADDED, None, pod))
        for deployment in self._store.list("Deployment"):
            self._queue.add((deployment.metadata.namespace, deployment.metadata.name))

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._queue.stop()

    # ------------------------------------------------------------------ events

    def _on_event(self, event: Event) -> None:
        if event.kind == "Pod":
            self._on_pod(event)
            return
        key = (event.obj.metadata.namespace, event.obj.metadata.name)
        old, new = event.old, event.new
        if old is not None and new is not None and old.spec.selector != new.spec.selector:
            self._rematch(key, new)  # apps/v1 forbids this; tolerate it anyway
        if new is None or old is None or old.spec != new.spec or old.metadata.uid != new.metadata.uid:
            self._queue.add(key)

    def _selector_allows(self, ns: str, deployment_name: str, pod: Pod) -> bool:
        deployment = self._store.get("Deployment", ns, deployment_name)
        return deployment is None or selector_matches(deployment.spec.selector, pod.metadata.labels)

    def _on_pod(self, event: Event) -> None:
        ns, name = event.obj.metadata.namespace, event.obj.metadata.name
        old_ref = _owner_ref(event.old) if event.old is not None else None
        new_ref = _owner_ref(event.new) if event.new is not None else None
        if old_ref is not None and (new_ref is None or new_ref.name != old_ref.name):
            key = (ns, old_ref.name)  # deleted, or no longer owned by this deployment
            owned = self._pods.get(key)
            if owned is not None:
                owned.remove(name)
                if not owned.pods:
                    del self._pods[key]
            self._queue.add(key)
        if new_ref is None:
            return
        key = (ns, new_ref.name)
        owned = self._pods.setdefault(key, OwnedPods())
        before = owned.pods.get(name)
        if before is None:
            self._seq += 1
        if before is not None and event.old is not None and event.old.metadata.labels == event.new.metadata.labels:
            matches = before.matches
        else:
            matches = self._selector_allows(ns, new_ref.name, event.new)
        info = PodInfo.of(event.new, new_ref.uid, matches, before.seq if before else self._seq)
        if info != before:
            owned.put(info)
            self._queue.add(key)

    def _rematch(self, key: DeploymentKey, deployment: Deployment) -> None:
        owned = self._pods.get(key)
        for info in list(owned.pods.values()) if owned else ():
            pod = self._store.get("Pod", key[0], info.name)
            if pod is not None:
                owned.put(dataclasses.replace(
                    info, matches=selector_matches(deployment.spec.selector, pod.metadata.labels)))

    # ------------------------------------------------------------------ sync

    def _sync(self, key: DeploymentKey) -> None:
        ns, name = key
        deployment: Deployment | None = self._store.get("Deployment", ns, name)
        owned = self._pods.get(key) or OwnedPods()
        if deployment is None:
            self._hashes.pop(key, None)
            self._announce.pop(key, None)
            for info in list(owned.pods.values()):
                self._delete(ns, info.name)
            return
        h = self._hash_of(key, deployment.spec.template)
        counts = self._count(deployment, owned, h)
        writes = 0
        if counts.foreign:
            writes += self._drop_foreign(deployment, owned)
        if key not in self._announce or self._announce[key][0] != h:
            # A new "ReplicaSet", unless pods of this template exist already (a rollback).
            self._announce[key] = (h, not any(k[2] == h for k in owned.tally))
        replicas = deployment.spec.replicas if deployment.spec.replicas is not None else 1
        if not deployment.spec.paused:
            writes += self._reconcile(deployment, owned, h, replicas, counts)
        if writes:
            return  # the pod events this caused bring another sync, which writes the status
        self._write_status(deployment, h, replicas, counts, self._announce[key][1])
        self._announce[key] = (h, False)

    def _hash_of(self, key: DeploymentKey, template: PodTemplateSpec) -> str:
        cached = self._hashes.get(key)
        if cached is not None and cached[0] is template:
            return cached[1]
        h = template_hash(template)
        self._hashes[key] = (template, h)
        return h

    def _count(self, deployment: Deployment, owned: OwnedPods, h: str) -> Counts:
        counts = Counts()
        uid = deployment.metadata.uid
        for (owner_uid, matches, pod_hash, active, terminal, ready), n in owned.tally.items():
            if (owner_uid and owner_uid != uid) or not matches:
                counts.foreign += n
            elif pod_hash == h:
                counts.new_active += n if active else 0
                counts.new_ready += n if active and ready else 0
            else:
                counts.old_active += n if active else 0
                counts.old_ready += n if active and ready else 0
                counts.old_lingering += n if not terminal else 0
        if deployment.spec.min_ready_seconds <= 0:
            counts.new_available, counts.old_available = counts.new_ready, counts.old_ready
        else:
            now = _now()
            for info in self._mine(deployment, owned):
                if info.active and self._available(deployment, info, now):
                    if info.hash == h:
                        counts.new_available += 1
                    else:
                        counts.old_available += 1
        return counts

    def _mine(self, deployment: Deployment, owned: OwnedPods) -> list[PodInfo]:
        uid = deployment.metadata.uid
        return [i for i in owned.pods.values() if i.matches and i.owner_uid in ("", uid)]

    def _drop_foreign(self, deployment: Deployment, owned: OwnedPods) -> int:
        writes = 0
        ns, uid = deployment.metadata.namespace, deployment.metadata.uid
        for info in list(owned.pods.values()):
            if info.owner_uid and info.owner_uid != uid:
                writes += self._delete(ns, info.name)  # a deleted namesake's pod: garbage-collect
            elif not info.matches:
                writes += self._release(ns, info.name)
        return writes

    def _available(self, deployment: Deployment, info: PodInfo, now: float) -> bool:
        if not info.ready:
            return False
        wait = deployment.spec.min_ready_seconds
        if wait <= 0 or info.ready_since is None:
            return True
        remaining = info.ready_since + wait - now
        if remaining <= 0:
            return True
        self._queue.add_after((deployment.metadata.namespace, deployment.metadata.name), remaining)
        return False

    def _reconcile(self, deployment: Deployment, owned: OwnedPods, h: str, replicas: int,
                   counts: Counts) -> int:
        """Create and delete pods toward the desired state; returns the number of writes.

        Works on counts; pod lists are only built when some pods must go.
        """
        ns = deployment.metadata.namespace
        strategy = deployment.spec.strategy
        if strategy is not None and strategy.type == "Recreate":
            if counts.old_active:
                return sum(self._delete(ns, i.name) for i in self._mine(deployment, owned)
                           if i.active and i.hash != h)
            if counts.old_lingering:
                return 0  # old pods still terminating: Recreate waits until they are gone
            return self._scale(deployment, owned, h, replicas, counts.new_active)
        if not counts.old_active or counts.new_active > replicas:
            return self._scale(deployment, owned, h, replicas, counts.new_active)
        surge, max_unavailable = surge_and_unavailable(deployment, replicas)
        # reconcileNewReplicaSet: grow the new pods within maxSurge
        scale_up = min(replicas + surge - counts.active, replicas - counts.new_active)
        if scale_up > 0:
            self._scaled(deployment, h, counts.new_active, counts.new_active + scale_up)
            return sum(self._create(deployment, h) for _ in range(scale_up))
        # reconcileOldReplicaSets: shrink the old ones while keeping minAvailable
        min_available = replicas - max_unavailable
        new_unavailable = counts.new_active - counts.new_available
        max_scaled_down = counts.active - min_available - new_unavailable
        if max_scaled_down <= 0:
            return 0
        cleanup = min(counts.old_active - counts.old_available, max_scaled_down)
        scale_down = max(0, min(counts.available - min_available, max_scaled_down - cleanup))
        if not cleanup and not scale_down:
            return 0
        now = _now()
        old = [i for i in self._mine(deployment, owned) if i.active and i.hash != h]
        oldest_seq: dict[str, int] = {}
        for i in old:
            oldest_seq[i.hash] = min(oldest_seq.get(i.hash, i.seq), i.seq)
        old.sort(key=lambda i: (oldest_seq[i.hash], i.deletion_rank()))
        unhealthy = [i for i in old if not self._available(deployment, i, now)][:cleanup]
        healthy = [i for i in old if self._available(deployment, i, now)][:scale_down]
        victims = unhealthy + healthy
        for old_hash in sorted({i.hash for i in victims}):
            size = sum(1 for i in old if i.hash == old_hash)
            self._scaled(deployment, old_hash, size, size - sum(1 for i in victims if i.hash == old_hash))
        return sum(self._delete(ns, i.name) for i in victims)

    def _scaled(self, deployment: Deployment, h: str, old: int, new: int) -> None:
        """The ScalingReplicaSet event; netemu's pods of one template hash stand for its ReplicaSet."""
        direction = "up" if new > old else "down"
        events.recorder(self._store).normal(
            deployment, "ScalingReplicaSet",
            f"Scaled {direction} replica set {deployment.metadata.name}-{h} to {new} from {old}",
            component=CONTROLLER_NAME)

    def _scale(self, deployment: Deployment, owned: OwnedPods, h: str, replicas: int, current: int) -> int:
        if current != replicas:
            self._scaled(deployment, h, current, replicas)
        if current < replicas:
            return sum(self._create(deployment, h) for _ in range(replicas - current))
        if current == replicas:
            return 0
        new = [i for i in self._mine(deployment, owned) if i.active and i.hash == h]
        victims = sorted(new, key=PodInfo.deletion_rank)[:current - replicas]
        return sum(self._delete(deployment.metadata.namespace, i.name) for i in victims)

    def _create(self, deployment: Deployment, h: str) -> int:
        template = deployment.spec.template
        meta = deployment.metadata
        base = f"{meta.name}-{h}-"
        owner = OwnerReference(api_version="apps/v1", kind="Deployment", name=meta.name,
                               uid=meta.uid, controller=True, block_owner_deletion=True)
        labels = {**template.metadata.labels, HASH_LABEL: h}
        for _ in range(10):
            pod = Pod(metadata=ObjectMeta(
                name=generated_name(base), generate_name=base, namespace=meta.namespace,
                labels=labels, annotations=dict(template.metadata.annotations),
                owner_references=(owner,)),
                spec=template.spec, status=PodStatus(phase="Pending"))
            try:
                self._store.create(pod)
                return 1
            except AlreadyExistsError:
                continue
        log.warning("deployment %s/%s: no free pod name found", meta.namespace, meta.name)
        return 0

    def _delete(self, ns: str, name: str) -> int:
        pod = self._store.get("Pod", ns, name)
        if pod is None or podutil.is_terminating(pod):
            return 0
        podutil.request_deletion(self._store, pod)
        return 1

    def _release(self, ns: str, name: str) -> int:
        """Orphan a pod whose labels no longer match the selector, as a ReplicaSet does."""
        def drop_owner(pod: Pod) -> Pod:
            ref = _owner_ref(pod)
            refs = tuple(r for r in pod.metadata.owner_references if r is not ref)
            return dataclasses.replace(pod, metadata=dataclasses.replace(pod.metadata, owner_references=refs))
        return 0 if self._store.modify("Pod", ns, name, drop_owner) is None else 1

    # ------------------------------------------------------------------ status

    def _write_status(self, deployment: Deployment, h: str, replicas: int, counts: Counts,
                      new_rs_created: bool) -> None:
        updated, available = counts.new_active, counts.available
        old_status = deployment.status
        status = DeploymentStatus(
            observed_generation=deployment.metadata.generation, replicas=counts.active,
            updated_replicas=updated, ready_replicas=counts.new_ready + counts.old_ready,
            available_replicas=available, unavailable_replicas=max(0, replicas - available),
            conditions=old_status.conditions, extra=old_status.extra)
        _, max_unavailable = surge_and_unavailable(deployment, replicas)
        if available >= replicas - max_unavailable:
            conditions = _set_condition(status.conditions, "Available", "True", "MinimumReplicasAvailable",
                                        "Deployment has minimum availability.")
        else:
            conditions = _set_condition(status.conditions, "Available", "False", "MinimumReplicasUnavailable",
                                        "Deployment does not have minimum availability.")
        rs_name = f"{deployment.metadata.name}-{h}"
        progressing = next((c for c in conditions if c.type == "Progressing"), None)
        settled = (status.replicas == status.updated_replicas and progressing is not None
                   and progressing.reason == "NewReplicaSetAvailable" and not new_rs_created)
        if not settled:
            if updated == replicas and status.replicas == replicas and available == replicas:
                conditions = _set_condition(conditions, "Progressing", "True", "NewReplicaSetAvailable",
                                            f'ReplicaSet "{rs_name}" has successfully progressed.')
            elif new_rs_created:
                conditions = _set_condition(conditions, "Progressing", "True", "NewReplicaSetCreated",
                                            f'Created new replica set "{rs_name}"')
            elif progressing is None or _made_progress(old_status, status):
                conditions = _set_condition(conditions, "Progressing", "True", "ReplicaSetUpdated",
                                            f'ReplicaSet "{rs_name}" is progressing.')
        status = dataclasses.replace(status, conditions=conditions)
        if status != old_status:
            self._store.modify("Deployment", deployment.metadata.namespace, deployment.metadata.name,
                               lambda d: dataclasses.replace(d, status=status))


def _now() -> float:
    return datetime.datetime.now(datetime.timezone.utc).timestamp()


def _made_progress(old: DeploymentStatus, new: DeploymentStatus) -> bool:
    """deploymentutil.DeploymentProgressing."""
    return (new.updated_replicas > old.updated_replicas
            or new.replicas - new.updated_replicas < old.replicas - old.updated_replicas
            or new.ready_replicas > old.ready_replicas
            or new.available_replicas > old.available_replicas)


def _set_condition(conditions: tuple[DeploymentCondition, ...], type: str, status: str, reason: str,
                   message: str) -> tuple[DeploymentCondition, ...]:
    """SetDeploymentCondition: lastTransitionTime kept while the status holds."""
    now = now_rfc3339()
    for i, cond in enumerate(conditions):
        if cond.type != type:
            continue
        if cond.status == status and cond.reason == reason and cond.message == message:
            return conditions
        changed = dataclasses.replace(
            cond, status=status, reason=reason, message=message, last_update_time=now,
            last_transition_time=cond.last_transition_time if cond.status == status else now)
        return conditions[:i] + (changed,) + conditions[i + 1:]
    return conditions + (DeploymentCondition(type=type, status=status, reason=reason, message=message,
                                             last_update_time=now, last_transition_time=now),)
