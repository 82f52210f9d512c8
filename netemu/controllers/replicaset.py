"""The ReplicaSet controller: ReplicaSet → pods, replacement, scaling and status.

A ReplicaSet keeps ``spec.replicas`` active pods (neither terminating nor finished) that carry an
ownerReference to it (``controller: true``). Pods are made from ``spec.template`` with
``generateName: <replicaset>-`` (a Deployment's ReplicaSet is ``<deployment>-<pod-template-hash>``,
so its pods are ``<deployment>-<hash>-<5 chars>``). Scale-down removes unassigned, then not-ready,
then most recently ready, then newest pods first (``controller.ActivePods``). Each create and
delete is recorded as Kubernetes does (``SuccessfulCreate`` "Created pod: …", ``SuccessfulDelete``).
All deletions are graceful (``podutil.request_deletion``).

Ownership as Kubernetes' ``PodControllerRefManager``: a pod whose labels stop matching the selector
is released (its ownerReference removed); an active pod without a controller whose labels match is
adopted. Pods of a ReplicaSet that is gone are deleted (the garbage collector's background
cascade for objects removed straight from the store; the API server cascades its own deletions);
a ReplicaSet with a ``deletionTimestamp`` (foreground deletion) makes and removes no pods.

Status (``replicas``, ``fullyLabeledReplicas``, ``readyReplicas``, ``availableReplicas`` after
``minReadySeconds``, ``observedGeneration``) is written only when it changes. Per ReplicaSet the
controller keeps counts of its pods by state, updated per pod event, so a sync with nothing to do
costs no scan. As Kubernetes' ``ControllerExpectations``, a ReplicaSet whose last creations and
deletions have not all come back as pod events yet is not scaled again (its counts would be stale).
"""
from __future__ import annotations

import collections
import dataclasses
import datetime
import functools
import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

from netemu import events
from netemu.api.labels import selector_matches
from netemu.api.objects import ObjectMeta, OwnerReference, Pod, PodStatus, ReplicaSet
from netemu.errors import AlreadyExistsError, NetemuError
from netemu.frozen import evolve
from netemu.store import ADDED, Event, Store

from . import podutil
from .createretry import CreateRetry
from netemu.names import generated_name
from .workqueue import WorkQueue

log = logging.getLogger(__name__)

CONTROLLER_NAME = "replicaset-controller"

ReplicaSetKey = tuple[str, str]

_PHASE_RANK = {"Pending": 0, "": 0, "Unknown": 1, "Running": 2}


@functools.lru_cache(maxsize=4096)
def epoch(timestamp: str | None) -> float | None:
    """An RFC 3339 timestamp (seconds) as a Unix time; None when absent or unreadable (remembered:
    strptime is slow, and thousands of pods turn Ready within the same few seconds)."""
    if not timestamp:
        return None
    try:
        return datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
    except ValueError:
        return None


def now() -> float:
    return datetime.datetime.now(datetime.timezone.utc).timestamp()


def replicas_of(rs: ReplicaSet) -> int:
    return rs.spec.replicas if rs.spec.replicas is not None else 1


def owner_reference(owner: Any) -> OwnerReference:
    """The ownerReference a controller puts on what it makes (``controller``, ``blockOwnerDeletion``)."""
    return OwnerReference(api_version=owner.API_VERSION, kind=owner.KIND, name=owner.metadata.name,
                          uid=owner.metadata.uid, controller=True, block_owner_deletion=True)


def _controller_ref(obj: Any, kind: str) -> OwnerReference | None:
    ref = podutil.controller_of(obj)
    return ref if ref is not None and ref.kind == kind else None


def _labels_include(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())


# --------------------------------------------------------------------------- pod bookkeeping


class PodInfo(NamedTuple):
    """What the controller needs to know about one owned pod (taken at event time; a tuple: made
    and compared for every event of every owned pod)."""

    name: str
    owner_uid: str
    matches: bool        # labels still match the ReplicaSet's selector
    fully_labeled: bool  # labels include every template label
    active: bool
    ready: bool
    ready_since: float | None
    assigned: bool
    phase_rank: int
    seq: int

    @classmethod
    def of(cls, pod: Pod, owner_uid: str, matches: bool, fully_labeled: bool, seq: int) -> "PodInfo":
        ready = podutil.is_ready(pod)
        return cls(name=pod.metadata.name, owner_uid=owner_uid, matches=matches, fully_labeled=fully_labeled,
                   active=podutil.is_active(pod), ready=ready,
                   ready_since=epoch(podutil.ready_since(pod)) if ready else None,
                   assigned=bool(pod.spec.node_name),
                   phase_rank=_PHASE_RANK.get(pod.status.phase, 2), seq=seq)

    @property
    def tally_key(self) -> tuple[str, bool, bool, bool, bool]:
        return (self.owner_uid, self.matches, self.fully_labeled, self.active, self.ready)

    def deletion_rank(self) -> tuple[Any, ...]:
        """Sorts the pod to delete first first (controller.ActivePods ordering)."""
        since = self.ready_since if self.ready_since is not None else math.inf
        return (self.assigned, self.phase_rank, self.ready, -since, -self.seq)


class OwnedPods:
    """One ReplicaSet's pods, with counts by kind kept as they change (so a sync need not scan)."""

    def __init__(self) -> None:
        self.pods: dict[str, PodInfo] = {}
        self.tally: collections.Counter[tuple[str, bool, bool, bool, bool]] = collections.Counter()

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
class Expectations:
    """Pod creations and deletions a ReplicaSet's last sync made that no event has shown yet."""

    creations: int = 0
    deletions: set[str] = dataclasses.field(default_factory=set)


@dataclass
class Counts:
    active: int = 0
    fully_labeled: int = 0
    ready: int = 0
    available: int = 0
    foreign: int = 0  # pods of a deleted namesake, or no longer matching the selector


# --------------------------------------------------------------------------- controller


class ReplicaSetController:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._pods: dict[ReplicaSetKey, OwnedPods] = {}
        self._orphans: dict[str, set[str]] = {}  # namespace → active pods without a controller
        self._adopt: set[ReplicaSetKey] = set()  # ReplicaSets to look among the orphans next sync
        self._expected: dict[ReplicaSetKey, Expectations] = {}  # creations and deletions not yet seen
        self._create_retry: CreateRetry[ReplicaSetKey] = CreateRetry(store, CONTROLLER_NAME)
        self._seq = 0
        self._queue: WorkQueue[ReplicaSetKey] = WorkQueue(self._sync, "replicaset-controller")
        self._unsubscribe: Any = None

    def start(self) -> None:
        self._unsubscribe = self._store.subscribe(self._on_event, kinds=("Pod", "ReplicaSet"))
        for pod in self._store.list("Pod"):
            self._on_pod(Event(ADDED, None, pod))
        for rs in self._store.list("ReplicaSet"):
            key = (rs.metadata.namespace, rs.metadata.name)
            self._adopt.add(key)
            self._queue.add(key)

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
        if new is not None and (old is None or old.spec.selector != new.spec.selector
                                or old.metadata.uid != new.metadata.uid):
            if old is not None:
                self._rematch(key, new)  # apps/v1 forbids a selector change; tolerate it anyway
            if self._orphans.get(key[0]):
                self._adopt.add(key)
        if (new is None or old is None or old.spec != new.spec or old.metadata.uid != new.metadata.uid
                or old.metadata.deletion_timestamp != new.metadata.deletion_timestamp):
            self._queue.add(key)

    def _selector_facts(self, ns: str, rs_name: str, pod: Pod) -> tuple[bool, bool]:
        """(labels match the selector, labels include the template's labels) for an owned pod."""
        rs = self._store.get("ReplicaSet", ns, rs_name)
        if rs is None:
            return True, True
        labels = pod.metadata.labels
        return (selector_matches(rs.spec.selector, labels),
                _labels_include(labels, rs.spec.template.metadata.labels))

    def _on_pod(self, event: Event) -> None:
        old_ref = _controller_ref(event.old, "ReplicaSet") if event.old is not None else None
        new_ref = _controller_ref(event.new, "ReplicaSet") if event.new is not None else None
        self._track_orphan(event)
        self._index_pod(event, old_ref, new_ref)
        if self._expected:
            self._observe(event, old_ref, new_ref)  # after the index has the pod: it may sync at once

    def _index_pod(self, event: Event, old_ref: OwnerReference | None, new_ref: OwnerReference | None) -> None:
        ns, name = event.obj.metadata.namespace, event.obj.metadata.name
        if old_ref is not None and (new_ref is None or new_ref.name != old_ref.name):
            key = (ns, old_ref.name)  # deleted, or no longer owned by this ReplicaSet
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
            matches, fully_labeled = before.matches, before.fully_labeled
        else:
            matches, fully_labeled = self._selector_facts(ns, new_ref.name, event.new)
        info = PodInfo.of(event.new, new_ref.uid, matches, fully_labeled, before.seq if before else self._seq)
        if info != before:
            owned.put(info)
            self._queue.add(key)

    def _track_orphan(self, event: Event) -> None:
        """Keep the namespace's set of active pods without a controller; a new or relabelled one
        may be adopted by a ReplicaSet of its namespace whose selector matches."""
        pod = event.new
        ns, name = event.obj.metadata.namespace, event.obj.metadata.name
        orphan = pod is not None and podutil.controller_of(pod) is None and podutil.is_active(pod)
        orphans = self._orphans.get(ns)
        if not orphan:
            if orphans is not None:
                orphans.discard(name)
            return
        was = orphans is not None and name in orphans
        self._orphans.setdefault(ns, set()).add(name)
        if was and event.old is not None and event.old.metadata.labels == pod.metadata.labels:
            return
        for rs in self._store.list("ReplicaSet", ns):
            if rs.metadata.deletion_timestamp is None and _selects(rs, pod.metadata.labels):
                key = (ns, rs.metadata.name)
                self._adopt.add(key)
                self._queue.add(key)

    def _observe(self, event: Event, old_ref: OwnerReference | None, new_ref: OwnerReference | None) -> None:
        """Tick off an expected creation (the pod's first event) or deletion (it stops being active)."""
        ns, name = event.obj.metadata.namespace, event.obj.metadata.name
        if event.old is None and new_ref is not None:
            expected = self._expected.get((ns, new_ref.name))
            if expected is not None and expected.creations:
                expected.creations -= 1
                self._settle_expectations((ns, new_ref.name))
        ref = old_ref or new_ref
        if ref is not None and (event.new is None or not podutil.is_active(event.new)):
            expected = self._expected.get((ns, ref.name))
            if expected is not None and name in expected.deletions:
                expected.deletions.discard(name)
                self._settle_expectations((ns, ref.name))

    def _settle_expectations(self, key: ReplicaSetKey) -> None:
        expected = self._expected[key]
        if not expected.creations and not expected.deletions:
            del self._expected[key]
            self._queue.add(key)

    def _rematch(self, key: ReplicaSetKey, rs: ReplicaSet) -> None:
        owned = self._pods.get(key)
        for info in list(owned.pods.values()) if owned else ():
            pod = self._store.get("Pod", key[0], info.name)
            if pod is not None:
                labels = pod.metadata.labels
                owned.put(info._replace(
                    matches=selector_matches(rs.spec.selector, labels),
                    fully_labeled=_labels_include(labels, rs.spec.template.metadata.labels)))

    # ------------------------------------------------------------------ sync

    def _sync(self, key: ReplicaSetKey) -> None:
        ns, name = key
        rs: ReplicaSet | None = self._store.get("ReplicaSet", ns, name)
        owned = self._pods.get(key) or OwnedPods()
        if rs is None:
            self._adopt.discard(key)
            self._expected.pop(key, None)
            self._create_retry.forget(key)
            for info in list(owned.pods.values()):
                self._delete(ns, info.name, owner_uid=info.owner_uid)  # the garbage collector's cascade
            return
        writes = 0
        if key in self._adopt:
            self._adopt.discard(key)
            if rs.metadata.deletion_timestamp is None:
                writes += self._adopt_orphans(rs)
        counts = self._count(rs, owned)
        if counts.foreign:
            writes += self._drop_foreign(rs, owned)
        if rs.metadata.deletion_timestamp is None and key not in self._expected:
            writes += self._manage(rs, owned, counts.active)
        if writes:
            return  # the pod events this caused bring another sync, which writes the status
        self._write_status(rs, counts)

    def _count(self, rs: ReplicaSet, owned: OwnedPods) -> Counts:
        counts = Counts()
        uid = rs.metadata.uid
        for (owner_uid, matches, fully_labeled, active, ready), n in owned.tally.items():
            if (owner_uid and owner_uid != uid) or not matches:
                counts.foreign += n
            elif active:
                counts.active += n
                counts.fully_labeled += n if fully_labeled else 0
                counts.ready += n if ready else 0
        if rs.spec.min_ready_seconds <= 0:
            counts.available = counts.ready
        else:
            moment = now()
            counts.available = sum(1 for info in self._mine(rs, owned)
                                   if info.active and self._available(rs, info, moment))
        return counts

    def _mine(self, rs: ReplicaSet, owned: OwnedPods) -> list[PodInfo]:
        uid = rs.metadata.uid
        return [i for i in owned.pods.values() if i.matches and i.owner_uid in ("", uid)]

    def _available(self, rs: ReplicaSet, info: PodInfo, moment: float) -> bool:
        if not info.ready:
            return False
        wait = rs.spec.min_ready_seconds
        if wait <= 0 or info.ready_since is None:
            return True
        remaining = info.ready_since + wait - moment
        if remaining <= 0:
            return True
        self._queue.add_after((rs.metadata.namespace, rs.metadata.name), remaining)
        return False

    def _manage(self, rs: ReplicaSet, owned: OwnedPods, active: int) -> int:
        """manageReplicas: create or delete pods toward ``spec.replicas``; returns the writes."""
        want = replicas_of(rs)
        key = (rs.metadata.namespace, rs.metadata.name)
        if active < want:
            created = 0
            for _ in range(want - active):  # as slowStartBatch: the first refusal stops the batch
                if not self._create(rs):
                    break
                created += 1
            if created:
                self._expected[key] = Expectations(creations=created)
            return created
        if active == want:
            return 0
        candidates = [i for i in self._mine(rs, owned) if i.active]
        victims = sorted(candidates, key=PodInfo.deletion_rank)[:active - want]
        deleted = {i.name for i in victims if self._delete(rs.metadata.namespace, i.name, rs)}
        if deleted:
            self._expected[key] = Expectations(deletions=deleted)
        return len(deleted)

    def _drop_foreign(self, rs: ReplicaSet, owned: OwnedPods) -> int:
        writes = 0
        ns, uid = rs.metadata.namespace, rs.metadata.uid
        for info in list(owned.pods.values()):
            if info.owner_uid and info.owner_uid != uid:
                writes += self._delete(ns, info.name, owner_uid=info.owner_uid)  # a deleted namesake's pod
            elif not info.matches:
                writes += self._release(ns, info.name)
        return writes

    def _adopt_orphans(self, rs: ReplicaSet) -> int:
        """ClaimPods' adoption: active pods without a controller whose labels match the selector."""
        ns = rs.metadata.namespace
        owner = owner_reference(rs)
        writes = 0
        for name in sorted(self._orphans.get(ns, ())):
            pod = self._store.get("Pod", ns, name)
            if pod is None or podutil.controller_of(pod) is not None or not podutil.is_active(pod) \
                    or not _selects(rs, pod.metadata.labels):
                continue

            def adopt(p: Pod) -> Pod:
                return evolve(p, metadata=evolve(
                    p.metadata, owner_references=p.metadata.owner_references + (owner,)))
            if self._store.modify("Pod", ns, name, adopt) is not None:
                writes += 1
        return writes

    def _create(self, rs: ReplicaSet) -> int:
        template, meta = rs.spec.template, rs.metadata
        base = f"{meta.name}-"
        owner = owner_reference(rs)
        for _ in range(10):
            pod = Pod(metadata=ObjectMeta(
                name=generated_name(base), generate_name=base, namespace=meta.namespace,
                labels=dict(template.metadata.labels), annotations=dict(template.metadata.annotations),
                owner_references=(owner,)),
                spec=template.spec, status=PodStatus(phase="Pending"))
            try:
                created = self._store.create(pod)
            except AlreadyExistsError:
                continue
            except NetemuError as exc:  # refused by admission (a missing service account): retried
                key = (meta.namespace, meta.name)
                self._queue.add_after(key, self._create_retry.refused(key, rs, exc))
                return 0
            self._create_retry.succeeded((meta.namespace, meta.name))
            events.recorder(self._store).normal(rs, "SuccessfulCreate", f"Created pod: {created.metadata.name}",
                                                component=CONTROLLER_NAME)
            return 1
        log.warning("replicaset %s/%s: no free pod name found", meta.namespace, meta.name)
        return 0

    def _delete(self, ns: str, name: str, rs: ReplicaSet | None = None, owner_uid: str | None = None) -> int:
        """Delete a pod gracefully; with ``owner_uid``, only while that owner still controls it
        (the index may lag the store: an orphaned pod is kept)."""
        pod = self._store.get("Pod", ns, name)
        if pod is None or podutil.is_terminating(pod):
            return 0
        if owner_uid is not None:
            ref = _controller_ref(pod, "ReplicaSet")
            if ref is None or ref.uid != owner_uid:
                return 0
        podutil.request_deletion(self._store, pod)
        if rs is not None:
            events.recorder(self._store).normal(rs, "SuccessfulDelete", f"Deleted pod: {name}",
                                                component=CONTROLLER_NAME)
        return 1

    def _release(self, ns: str, name: str) -> int:
        """Orphan a pod whose labels no longer match the selector, as a ReplicaSet does."""
        def drop_owner(pod: Pod) -> Pod:
            ref = _controller_ref(pod, "ReplicaSet")
            refs = tuple(r for r in pod.metadata.owner_references if r is not ref)
            return evolve(pod, metadata=evolve(pod.metadata, owner_references=refs))
        return 0 if self._store.modify("Pod", ns, name, drop_owner) is None else 1

    def _write_status(self, rs: ReplicaSet, counts: Counts) -> None:
        status = evolve(
            rs.status, replicas=counts.active, fully_labeled_replicas=counts.fully_labeled,
            ready_replicas=counts.ready, available_replicas=counts.available,
            observed_generation=rs.metadata.generation)
        if status != rs.status:
            self._store.modify("ReplicaSet", rs.metadata.namespace, rs.metadata.name,
                               lambda r: evolve(r, status=status))


def _selects(rs: ReplicaSet, labels: Mapping[str, str]) -> bool:
    """The ReplicaSet's selector matches ``labels`` (an empty or missing selector matches nothing)."""
    selector = rs.spec.selector
    if selector is None or (not selector.match_labels and not selector.match_expressions):
        return False
    return selector_matches(selector, labels)


__all__ = ["CONTROLLER_NAME", "OwnedPods", "PodInfo", "ReplicaSetController", "owner_reference", "replicas_of"]
