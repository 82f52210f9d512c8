"""The deployment controller: Deployment → ReplicaSets, rolling updates, revisions and status.

As Kubernetes' deployment controller, a Deployment owns one ReplicaSet per pod template it has
had, named ``<deployment>-<pod-template-hash>``; the ReplicaSet controller (``replicaset.py``)
makes the pods. The hash is a 32-bit hash of the pod template (CRC-32 of its canonical JSON;
Kubernetes takes FNV-32a of a dump of its Go struct, which no other program reproduces) in
Kubernetes' ``rand.SafeEncodeString`` alphabet, so it looks like a real one (``7c5ddbdf54``). A ReplicaSet
carries the template's labels plus ``pod-template-hash`` (in its labels, selector and template),
an ownerReference to the Deployment (``controller: true``), the Deployment's annotations (but
kubectl's and the controller's own) and ``deployment.kubernetes.io/revision``,
``desired-replicas`` and ``max-replicas``; the Deployment carries the revision of its newest
ReplicaSet. A template seen before (``kubectl rollout undo``) brings its ReplicaSet back with the
next revision, the old one noted in ``deployment.kubernetes.io/revision-history``.

Reconcile (``rolloutRolling``): the new ReplicaSet grows within maxSurge (rounded up) of
``spec.replicas``, old ones shrink, oldest first, while maxUnavailable (rounded down) holds:
unavailable old pods go first. ``Recreate`` scales every old ReplicaSet to 0, waits until their
pods are gone, then scales the new one up. Once a rollout is complete, old ReplicaSets scaled to 0
beyond ``revisionHistoryLimit`` are deleted, lowest revision first. Each scaling is recorded as
a ``ScalingReplicaSet`` event. Counts come from the ReplicaSets' status; a ReplicaSet whose status
lags its spec counts as the larger of the two for the surge and the smaller for availability, so
the bounds hold while its controller catches up. A paused Deployment is only scaled; one being
deleted (foreground) only gets its status. A ReplicaSet whose labels stop matching the selector is
released; an orphan of the same name (``delete --cascade=orphan``, then apply again) is adopted.
ReplicaSets of a Deployment that is gone are deleted (the garbage collector's cascade for objects
removed straight from the store).

Status (replicas, updated/ready/available/unavailable counts, observedGeneration, Available and
Progressing conditions with Kubernetes' reasons) is written only when it changes. The controller
keeps each Deployment's ReplicaSets (a handful) indexed from their events, so a sync with nothing
to do reads no other object.

Not modelled: proportional scaling of several ReplicaSets during a rollout (a scale mid-rollout
goes through the rolling bounds instead), progress deadlines, hash collisions (``collisionCount``).
"""
from __future__ import annotations

import collections
import json
import logging
import math
import zlib
from dataclasses import dataclass
from typing import Any

from netemu import events
from netemu.api import codec
from netemu.api.labels import selector_matches
from netemu.api.objects import (Deployment, DeploymentCondition, DeploymentStatus, LabelSelector, ObjectMeta,
                                Pod, PodTemplateSpec, ReplicaSet, ReplicaSetSpec)
from netemu.errors import AlreadyExistsError
from netemu.frozen import evolve
from netemu.store import ADDED, Event, Store, now_rfc3339

from . import podutil
from netemu.names import safe_encode
from .replicaset import owner_reference, replicas_of
from .workqueue import WorkQueue

log = logging.getLogger(__name__)

HASH_LABEL = "pod-template-hash"
CONTROLLER_NAME = "deployment-controller"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
CHANGE_CAUSE = "kubernetes.io/change-cause"
# Annotations a Deployment does not pass on to its ReplicaSets (deploymentutil's annotationsToSkip).
SKIPPED_ANNOTATIONS = frozenset({"kubectl.kubernetes.io/last-applied-configuration", REVISION, REVISION_HISTORY,
                                 DESIRED_REPLICAS, MAX_REPLICAS, "deprecated.deployment.rollback.to"})

DeploymentKey = tuple[str, str]
ReplicaSetKey = tuple[str, str]


def template_hash(template: PodTemplateSpec) -> str:
    """The pod-template-hash of a template: CRC-32 of its canonical JSON, SafeEncodeString'd decimal.

    Empty values are left out first, as the Go structs Kubernetes hashes do not tell ``resources:
    {}`` (what ``kubectl rollout undo`` sends back) from no ``resources`` at all."""
    canonical = json.dumps(_without_empty(codec.to_dict(template)), sort_keys=True, separators=(",", ":"))
    return safe_encode(str(zlib.crc32(canonical.encode())))


def _without_empty(value: Any) -> Any:
    if isinstance(value, dict):
        kept = {k: _without_empty(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_without_empty(v) for v in value]
    return value


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


def revision_of(obj: Any) -> int:
    """deploymentutil.Revision: the ``deployment.kubernetes.io/revision`` annotation, 0 when none."""
    try:
        return int(obj.metadata.annotations.get(REVISION, "0"))
    except ValueError:
        return 0


def replica_sets_of(store: Store, deployment: Deployment) -> tuple[list[ReplicaSet], list[ReplicaSet]]:
    """(new, old) ReplicaSets of ``deployment`` as ``kubectl describe`` shows them: those it
    controls, the new one being that of its current template."""
    uid, h = deployment.metadata.uid, template_hash(deployment.spec.template)
    mine = [rs for rs in store.list("ReplicaSet", deployment.metadata.namespace)
            if any(r.controller and r.uid == uid for r in rs.metadata.owner_references)]
    new = [rs for rs in mine if _hash_of_replica_set(rs) == h]
    return new, [rs for rs in mine if _hash_of_replica_set(rs) != h]


def _hash_of_replica_set(rs: ReplicaSet) -> str:
    return rs.metadata.labels.get(HASH_LABEL) or rs.spec.template.metadata.labels.get(HASH_LABEL, "")


def _deployment_ref(obj: Any) -> Any | None:
    ref = podutil.controller_of(obj)
    return ref if ref is not None and ref.kind == "Deployment" else None


def _user_annotations(deployment: Deployment) -> dict[str, str]:
    """The annotations a Deployment passes on to its new ReplicaSet."""
    return {k: v for k, v in deployment.metadata.annotations.items() if k not in SKIPPED_ANNOTATIONS}


# --------------------------------------------------------------------------- replica set bookkeeping


@dataclass(frozen=True)
class SetInfo:
    """What the controller needs to know about one owned ReplicaSet (taken at event time)."""

    name: str
    owner_uid: str
    matches: bool  # labels still match the deployment's selector
    hash: str
    revision: int
    replicas: int     # spec.replicas
    current: int      # status.replicas
    ready: int
    available: int
    fresh: bool       # status.observedGeneration caught up with the spec
    terminating: bool
    created: str
    seq: int

    @classmethod
    def of(cls, rs: ReplicaSet, owner_uid: str, matches: bool, seq: int) -> "SetInfo":
        status = rs.status
        return cls(name=rs.metadata.name, owner_uid=owner_uid, matches=matches, hash=_hash_of_replica_set(rs),
                   revision=revision_of(rs), replicas=replicas_of(rs), current=status.replicas,
                   ready=status.ready_replicas, available=status.available_replicas,
                   fresh=status.observed_generation >= rs.metadata.generation,
                   terminating=rs.metadata.deletion_timestamp is not None,
                   created=rs.metadata.creation_timestamp or "", seq=seq)

    @property
    def pods(self) -> int:
        """Pods it has or will have, for the surge bound: a lagging status counts until it catches up."""
        return max(self.replicas, self.current)

    @property
    def usable(self) -> int:
        """Available pods it keeps, for the availability bound."""
        return min(self.available, self.replicas)

    def age_rank(self) -> tuple[str, int, str]:
        """controller.ReplicaSetsByCreationTimestamp: oldest first."""
        return (self.created, self.seq, self.name)


# --------------------------------------------------------------------------- controller


class DeploymentController:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._sets: dict[DeploymentKey, dict[str, SetInfo]] = {}
        self._owner_of: dict[ReplicaSetKey, DeploymentKey] = {}
        self._pods_left: collections.Counter[ReplicaSetKey] = collections.Counter()  # unfinished pods per RS
        self._hashes: dict[DeploymentKey, tuple[PodTemplateSpec, str]] = {}
        self._created: dict[DeploymentKey, str] = {}  # the new ReplicaSet this controller just made
        self._seq = 0
        self._queue: WorkQueue[DeploymentKey] = WorkQueue(self._sync, "deployment-controller")
        self._unsubscribe: Any = None

    def start(self) -> None:
        self._unsubscribe = self._store.subscribe(self._on_event, kinds=("Pod", "ReplicaSet", "Deployment"))
        for pod in self._store.list("Pod"):
            self._on_pod(Event(ADDED, None, pod))
        for rs in self._store.list("ReplicaSet"):
            self._on_replica_set(Event(ADDED, None, rs))
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
        elif event.kind == "ReplicaSet":
            self._on_replica_set(event)
        else:
            self._on_deployment(event)

    def _on_deployment(self, event: Event) -> None:
        key = (event.obj.metadata.namespace, event.obj.metadata.name)
        old, new = event.old, event.new
        if old is not None and new is not None and old.spec.selector != new.spec.selector:
            self._rematch(key, new)  # apps/v1 forbids this; tolerate it anyway
        if (new is None or old is None or old.spec != new.spec or old.metadata.uid != new.metadata.uid
                or old.metadata.deletion_timestamp != new.metadata.deletion_timestamp
                or old.metadata.annotations != new.metadata.annotations):
            self._queue.add(key)

    def _on_replica_set(self, event: Event) -> None:
        ns, name = event.obj.metadata.namespace, event.obj.metadata.name
        old_ref = _deployment_ref(event.old) if event.old is not None else None
        new_ref = _deployment_ref(event.new) if event.new is not None else None
        if old_ref is not None and (new_ref is None or new_ref.name != old_ref.name):
            key = (ns, old_ref.name)  # deleted, or no longer owned by this deployment
            sets = self._sets.get(key)
            if sets is not None:
                sets.pop(name, None)
                if not sets:
                    del self._sets[key]
            self._owner_of.pop((ns, name), None)
            self._queue.add(key)
        if new_ref is None:
            return
        key = (ns, new_ref.name)
        sets = self._sets.setdefault(key, {})
        before = sets.get(name)
        if before is None:
            self._seq += 1
        if before is not None and event.old is not None and event.old.metadata.labels == event.new.metadata.labels:
            matches = before.matches
        else:
            deployment = self._store.get("Deployment", ns, new_ref.name)
            matches = deployment is None or selector_matches(deployment.spec.selector, event.new.metadata.labels)
        info = SetInfo.of(event.new, new_ref.uid, matches, before.seq if before else self._seq)
        if info != before:
            sets[name] = info
            self._owner_of[(ns, name)] = key
            self._queue.add(key)

    def _on_pod(self, event: Event) -> None:
        """Count each ReplicaSet's unfinished pods (terminating ones included): Recreate waits for 0."""
        before, after = _replica_set_key(event.old), _replica_set_key(event.new)
        if before == after:
            return
        if before is not None:
            self._pods_left[before] -= 1
            if self._pods_left[before] <= 0:
                del self._pods_left[before]
                owner = self._owner_of.get(before)
                if owner is not None:
                    self._queue.add(owner)
        if after is not None:
            self._pods_left[after] += 1

    def _rematch(self, key: DeploymentKey, deployment: Deployment) -> None:
        sets = self._sets.get(key)
        for info in list(sets.values()) if sets else ():
            rs = self._store.get("ReplicaSet", key[0], info.name)
            if rs is not None:
                sets[info.name] = evolve(
                    info, matches=selector_matches(deployment.spec.selector, rs.metadata.labels))

    # ------------------------------------------------------------------ sync

    def _sync(self, key: DeploymentKey) -> None:
        ns, name = key
        deployment: Deployment | None = self._store.get("Deployment", ns, name)
        sets = self._sets.get(key) or {}
        if deployment is None:
            self._hashes.pop(key, None)
            self._created.pop(key, None)
            for info in list(sets.values()):
                self._delete_replica_set(ns, info.name, info.owner_uid)
            return
        uid = deployment.metadata.uid
        writes = 0
        mine: list[SetInfo] = []
        for info in list(sets.values()):
            if info.owner_uid and info.owner_uid != uid:
                writes += self._delete_replica_set(ns, info.name, info.owner_uid)  # a deleted namesake's
            elif not info.matches:
                writes += self._release(ns, info.name)
            elif not info.terminating:
                mine.append(info)
        h = self._hash_of(key, deployment.spec.template)
        new = next((i for i in mine if i.hash == h), None)
        olds = [i for i in mine if i is not new]
        replicas = deployment.spec.replicas if deployment.spec.replicas is not None else 1
        if deployment.metadata.deletion_timestamp is None:
            if new is not None:
                writes += self._sync_new_annotations(deployment, new, olds)
            if not deployment.spec.paused:
                strategy = deployment.spec.strategy
                if strategy is not None and strategy.type == "Recreate":
                    writes += self._recreate(deployment, h, new, olds, replicas)
                else:
                    writes += self._rolling(deployment, h, new, olds, replicas)
            elif new is not None and not any(o.replicas for o in olds):
                writes += self._scale(deployment, new, replicas, replicas)
        if writes:
            return  # the ReplicaSet events this caused bring another sync, which writes the status
        if any(not i.fresh for i in mine):
            return  # a ReplicaSet's controller has yet to count a change: its status write syncs again
        created = self._created.pop(key, None)
        status = self._write_status(deployment, h, new, mine, replicas, new is not None and created == new.name)
        complete = (status.updated_replicas == replicas and status.replicas == replicas
                    and status.available_replicas == replicas)
        if complete and not deployment.spec.paused and deployment.metadata.deletion_timestamp is None:
            self._clean_up(deployment, olds)

    def _hash_of(self, key: DeploymentKey, template: PodTemplateSpec) -> str:
        cached = self._hashes.get(key)
        if cached is not None and cached[0] is template:
            return cached[1]
        h = template_hash(template)
        self._hashes[key] = (template, h)
        return h

    # ------------------------------------------------------------------ strategies

    def _rolling(self, deployment: Deployment, h: str, new: SetInfo | None, olds: list[SetInfo],
                 replicas: int) -> int:
        """rolloutRolling: reconcileNewReplicaSet, then reconcileOldReplicaSets."""
        surge, max_unavailable = surge_and_unavailable(deployment, replicas)
        max_total = replicas + surge
        if new is None:
            current = sum(o.pods for o in olds)
            size = replicas if not olds else max(0, min(max_total - current, replicas))
            return self._create(deployment, h, size, olds, replicas)
        if new.replicas > replicas:
            return self._scale(deployment, new, replicas, replicas)
        if new.replicas < replicas:
            current = new.pods + sum(o.pods for o in olds)
            if current < max_total:
                size = new.replicas + min(max_total - current, replicas - new.replicas)
                if size != new.replicas:
                    return self._scale(deployment, new, size, replicas)
        if not any(o.replicas for o in olds):
            return 0
        min_available = replicas - max_unavailable
        all_pods = new.replicas + sum(o.replicas for o in olds)
        max_scaled_down = all_pods - min_available - (new.replicas - new.usable)
        if max_scaled_down <= 0:
            return 0
        olds = sorted(olds, key=SetInfo.age_rank)
        sizes = {o.name: o.replicas for o in olds}
        cleaned = 0  # cleanupUnhealthyReplicas: unavailable old pods go first
        for o in olds:
            if cleaned >= max_scaled_down:
                break
            unhealthy = sizes[o.name] - o.usable
            if sizes[o.name] and unhealthy > 0:
                down = min(max_scaled_down - cleaned, unhealthy)
                sizes[o.name] -= down
                cleaned += down
        available = new.usable + sum(min(o.available, sizes[o.name]) for o in olds)
        to_scale_down = available - min_available  # scaleDownOldReplicaSetsForRollingUpdate
        for o in olds:
            if to_scale_down <= 0:
                break
            down = min(sizes[o.name], to_scale_down)
            sizes[o.name] -= down
            to_scale_down -= down
        return sum(self._scale(deployment, o, sizes[o.name], replicas, only_down=True)
                   for o in olds if sizes[o.name] != o.replicas)

    def _recreate(self, deployment: Deployment, h: str, new: SetInfo | None, olds: list[SetInfo],
                  replicas: int) -> int:
        """rolloutRecreate: old ReplicaSets to 0, wait for their pods to go, then the new one up."""
        active = [o for o in olds if o.replicas]
        if active:
            return sum(self._scale(deployment, o, 0, replicas) for o in active)
        ns = deployment.metadata.namespace
        if any(o.current or self._pods_left[(ns, o.name)] for o in olds):
            return 0  # old pods still running or terminating
        if new is None:
            return self._create(deployment, h, replicas, olds, replicas)
        return self._scale(deployment, new, replicas, replicas)

    # ------------------------------------------------------------------ replica sets

    def _replica_annotations(self, deployment: Deployment, replicas: int) -> dict[str, str]:
        surge, _ = surge_and_unavailable(deployment, replicas)
        return {DESIRED_REPLICAS: str(replicas), MAX_REPLICAS: str(replicas + surge)}

    def _create(self, deployment: Deployment, h: str, size: int, olds: list[SetInfo], replicas: int) -> int:
        """The new ReplicaSet of the current template, with the next revision."""
        meta, spec = deployment.metadata, deployment.spec
        name = f"{meta.name}-{h}"
        template = spec.template
        labels = {**template.metadata.labels, HASH_LABEL: h}
        template = evolve(template, metadata=evolve(template.metadata, labels=labels))
        selector = spec.selector or LabelSelector()
        selector = evolve(selector, match_labels={**selector.match_labels, HASH_LABEL: h})
        revision = max((o.revision for o in olds), default=0) + 1
        annotations = {**_user_annotations(deployment), REVISION: str(revision),
                       **self._replica_annotations(deployment, replicas)}
        rs = ReplicaSet(
            metadata=ObjectMeta(name=name, namespace=meta.namespace, labels=labels, annotations=annotations,
                                owner_references=(owner_reference(deployment),)),
            spec=ReplicaSetSpec(replicas=size, min_ready_seconds=spec.min_ready_seconds, selector=selector,
                                template=template))
        try:
            self._store.create(rs)
        except AlreadyExistsError:
            return self._adopt(deployment, name)
        self._created[(meta.namespace, meta.name)] = name
        if size > 0:
            self._scaled(deployment, name, 0, size)
        return 1

    def _adopt(self, deployment: Deployment, name: str) -> int:
        """A ReplicaSet of the new one's name exists: adopt it when it is an orphan that matches."""
        ns = deployment.metadata.namespace
        existing = self._store.get("ReplicaSet", ns, name)
        if existing is None or podutil.controller_of(existing) is not None:
            if existing is not None and _deployment_ref(existing) is None:
                log.warning("deployment %s/%s: ReplicaSet %s belongs to another controller",
                            ns, deployment.metadata.name, name)
            return 0
        if existing.metadata.deletion_timestamp is not None or \
                not selector_matches(deployment.spec.selector, existing.metadata.labels):
            return 0
        owner = owner_reference(deployment)
        self._store.modify("ReplicaSet", ns, name, lambda rs: evolve(rs, metadata=evolve(
            rs.metadata, owner_references=rs.metadata.owner_references + (owner,))))
        return 1

    def _sync_new_annotations(self, deployment: Deployment, new: SetInfo, olds: list[SetInfo]) -> int:
        """SetNewReplicaSetAnnotations: the next revision when an old template comes back (kept in
        revision-history), the Deployment's annotations, and its minReadySeconds."""
        rs = self._store.get("ReplicaSet", deployment.metadata.namespace, new.name)
        if rs is None:
            return 0
        annotations = dict(rs.metadata.annotations)
        annotations.update(_user_annotations(deployment))
        revision = max((o.revision for o in olds), default=0) + 1
        if new.revision < revision:
            if new.revision:
                history = annotations.get(REVISION_HISTORY)
                annotations[REVISION_HISTORY] = f"{history},{new.revision}" if history else str(new.revision)
            annotations[REVISION] = str(revision)
        min_ready = deployment.spec.min_ready_seconds
        if annotations == rs.metadata.annotations and rs.spec.min_ready_seconds == min_ready:
            return 0
        self._store.update(evolve(
            rs, metadata=evolve(rs.metadata, annotations=annotations),
            spec=evolve(rs.spec, min_ready_seconds=min_ready)))
        return 1

    def _scale(self, deployment: Deployment, info: SetInfo, size: int, replicas: int, *,
               only_down: bool = False) -> int:
        """scaleReplicaSetAndRecordEvent, with the replicas annotations brought up to date.
        ``only_down``: an old ReplicaSet never grows (the index may lag a scale-down just made)."""
        rs = self._store.get("ReplicaSet", deployment.metadata.namespace, info.name)
        if rs is None:
            return 0
        before = replicas_of(rs)
        if only_down and size > before:
            return 0
        annotations = {**rs.metadata.annotations, **self._replica_annotations(deployment, replicas)}
        if before == size and annotations == rs.metadata.annotations:
            return 0
        self._store.update(evolve(
            rs, metadata=evolve(rs.metadata, annotations=annotations),
            spec=evolve(rs.spec, replicas=size)))
        if before != size:
            self._scaled(deployment, info.name, before, size)
        return 1

    def _scaled(self, deployment: Deployment, rs_name: str, old: int, new: int) -> None:
        direction = "up" if new > old else "down"
        events.recorder(self._store).normal(
            deployment, "ScalingReplicaSet", f"Scaled {direction} replica set {rs_name} to {new} from {old}",
            component=CONTROLLER_NAME)

    def _delete_replica_set(self, ns: str, name: str, owner_uid: str | None = None) -> int:
        """Delete a ReplicaSet; with ``owner_uid``, only while that owner still controls it (the
        index may lag the store: an orphaned one is kept)."""
        rs = self._store.get("ReplicaSet", ns, name)
        if rs is None:
            return 0
        if owner_uid is not None:
            ref = _deployment_ref(rs)
            if ref is None or ref.uid != owner_uid:
                return 0
        self._store.delete("ReplicaSet", ns, name)
        return 1

    def _release(self, ns: str, name: str) -> int:
        """Orphan a ReplicaSet whose labels no longer match the selector."""
        def drop_owner(rs: ReplicaSet) -> ReplicaSet:
            ref = _deployment_ref(rs)
            refs = tuple(r for r in rs.metadata.owner_references if r is not ref)
            return evolve(rs, metadata=evolve(rs.metadata, owner_references=refs))
        return 0 if self._store.modify("ReplicaSet", ns, name, drop_owner) is None else 1

    def _clean_up(self, deployment: Deployment, olds: list[SetInfo]) -> None:
        """cleanupDeployment: old ReplicaSets beyond revisionHistoryLimit, lowest revision first."""
        limit = deployment.spec.revision_history_limit
        if limit is None or len(olds) <= limit:
            return
        for info in sorted(olds, key=lambda i: (i.revision, i.age_rank()))[:len(olds) - limit]:
            if info.replicas == 0 and info.current == 0 and info.fresh:
                self._delete_replica_set(deployment.metadata.namespace, info.name, deployment.metadata.uid)

    # ------------------------------------------------------------------ status

    def _write_status(self, deployment: Deployment, h: str, new: SetInfo | None, mine: list[SetInfo],
                      replicas: int, new_rs_created: bool) -> DeploymentStatus:
        """calculateStatus and syncRolloutStatus: counts from the ReplicaSets' status; the
        Deployment's revision annotation (its new ReplicaSet's) is set in the same write."""
        updated = new.current if new is not None else 0
        available = sum(i.available for i in mine)
        old_status = deployment.status
        status = DeploymentStatus(
            observed_generation=deployment.metadata.generation, replicas=sum(i.current for i in mine),
            updated_replicas=updated, ready_replicas=sum(i.ready for i in mine),
            available_replicas=available, unavailable_replicas=max(0, replicas - available),
            conditions=old_status.conditions, extra=old_status.extra)
        _, max_unavailable = surge_and_unavailable(deployment, replicas)
        if available >= replicas - max_unavailable:
            conditions = _set_condition(status.conditions, "Available", "True", "MinimumReplicasAvailable",
                                        "Deployment has minimum availability.")
        else:
            conditions = _set_condition(status.conditions, "Available", "False", "MinimumReplicasUnavailable",
                                        "Deployment does not have minimum availability.")
        rs_name = new.name if new is not None else f"{deployment.metadata.name}-{h}"
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
        status = evolve(status, conditions=conditions)
        revision = str(new.revision) if new is not None else None
        if status != old_status or (revision and deployment.metadata.annotations.get(REVISION) != revision):
            def change(d: Deployment) -> Deployment:
                meta = d.metadata
                if revision and meta.annotations.get(REVISION) != revision:
                    meta = evolve(meta, annotations={**meta.annotations, REVISION: revision})
                return evolve(d, metadata=meta, status=status)
            self._store.modify("Deployment", deployment.metadata.namespace, deployment.metadata.name, change)
        return status


def _replica_set_key(pod: Pod | None) -> ReplicaSetKey | None:
    if pod is None or podutil.is_terminal(pod):
        return None
    ref = podutil.controller_of(pod)
    if ref is None or ref.kind != "ReplicaSet":
        return None
    return (pod.metadata.namespace, ref.name)


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
        changed = evolve(
            cond, status=status, reason=reason, message=message, last_update_time=now,
            last_transition_time=cond.last_transition_time if cond.status == status else now)
        return conditions[:i] + (changed,) + conditions[i + 1:]
    return conditions + (DeploymentCondition(type=type, status=status, reason=reason, message=message,
                                             last_update_time=now, last_transition_time=now),)


__all__ = ["CHANGE_CAUSE", "CONTROLLER_NAME", "DeploymentController", "HASH_LABEL", "REVISION",
           "replica_sets_of", "revision_of", "surge_and_unavailable", "template_hash"]
