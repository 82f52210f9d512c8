"""The StatefulSet controller: StatefulSet → pods with stable names and network identities.

Follows Kubernetes' ``pkg/controller/statefulset``. Pod ``<set>-<ordinal>`` gets the template's
labels plus ``statefulset.kubernetes.io/pod-name``, ``apps.kubernetes.io/pod-index`` and
``controller-revision-hash``, an ownerReference to the StatefulSet, and ``spec.hostname`` =
its name and ``spec.subdomain`` = ``spec.serviceName`` (set at creation only): with a headless
Service of that name, cluster DNS answers ``web-0.nginx.<ns>.svc.<zone>``.

Per sync, as ``updateStatefulSet`` does:

- Ordinals ``[start, start + replicas)`` are wanted (``spec.ordinals.start``, default 0); other
  pods are condemned. A failed (or succeeded) pod is deleted and re-created under its name; a
  missing one is created; a deleted one comes back under the same name once it is gone.
- ``OrderedReady`` (the default): ordinal *i* is created only when every lower one is Running,
  Ready (and available after ``minReadySeconds``); condemned pods go from the highest ordinal
  down, one at a time, each fully gone before the next. ``Parallel`` creates and deletes
  everything at once.
- ``RollingUpdate``: after scaling, the pod with the highest ordinal ≥ ``partition`` that is not
  of the update revision is deleted (and re-created at it), waiting for each to be healthy
  again; pods below the partition are (re-)created at the current revision. ``OnDelete`` only
  uses the update revision for pods that users delete.
- Status: replicas, readyReplicas, availableReplicas, currentReplicas, updatedReplicas,
  currentRevision/updateRevision, observedGeneration, collisionCount; a rolling update
  completes (current := update) when every pod is updated and ready. Written only on change.

Revisions are named like ControllerRevisions (``<set>-<hash>``, FNV-1 of the template patch
``{"spec":{"template":{...,"$patch":"replace"}}}``); there are no ControllerRevision objects:
the controller keeps each set's templates by revision in memory (up to revisionHistoryLimit
non-live ones). Deleting a StatefulSet deletes its pods; all deletions are graceful
(``podutil.request_deletion``). Pods are indexed per set as their events arrive, so a sync costs
work in proportion to that set's pods, never a scan of the store.

Each pod gets a ``persistentVolumeClaim`` volume per ``volumeClaimTemplates`` entry (claim
``<template>-<set>-<ordinal>``, as updateStorage names it; the kubelet gives it an empty
directory, no PersistentVolumeClaim object is made). Not modelled: adoption of orphan pods,
``maxUnavailable`` (updates go one pod at a time, as with the feature gate off).
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import re
from dataclasses import dataclass

from netemu import events
from netemu.api import codec
from netemu.api.labels import selector_matches
from netemu.api.volumes import with_claim_volumes
from netemu.api.objects import (ObjectMeta, OwnerReference, Pod, PodStatus, PodTemplateSpec,
                                StatefulSet, StatefulSetStatus)
from netemu.errors import AlreadyExistsError, NetemuError
from netemu.store import ADDED, Event, Store

from . import podutil
from netemu.names import safe_encode
from .workqueue import WorkQueue

log = logging.getLogger(__name__)

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
REVISION_LABEL = "controller-revision-hash"
CONTROLLER_NAME = "statefulset-controller"
CREATE_RETRY = 2.0  # seconds before retrying a pod creation that admission refused
MAX_REVISION_PREFIX = 223  # history.ControllerRevisionName keeps the name a valid subdomain

SetKey = tuple[str, str]

_MEMBER_NAME = re.compile(r"^(.*)-([0-9]+)$")


def parent_and_ordinal(pod_name: str) -> tuple[str, int]:
    """getParentNameAndOrdinal: ``web-3`` → ("web", 3); ("", -1) when the name has no ordinal."""
    match = _MEMBER_NAME.match(pod_name)
    if match is None or int(match.group(2)) > 2**31 - 1:
        return "", -1
    return match.group(1), int(match.group(2))


def _fnv32(data: bytes) -> int:
    """FNV-1 (not 1a), as hash/fnv.New32 that HashControllerRevision uses."""
    h = 0x811C9DC5
    for byte in data:
        h = ((h * 0x01000193) & 0xFFFFFFFF) ^ byte
    return h


def revision_name(set_name: str, template: PodTemplateSpec, collision_count: int = 0) -> str:
    """The ControllerRevision name of ``template`` for the set ``set_name`` (``web-7b9f4c8d6``)."""
    patch = {"spec": {"template": {**codec.to_dict(template), "$patch": "replace"}}}
    raw = json.dumps(patch, sort_keys=True, separators=(",", ":")) + str(collision_count)
    return f"{set_name[:MAX_REVISION_PREFIX]}-{safe_encode(str(_fnv32(raw.encode())))}"


def _epoch(timestamp: str | None) -> float | None:
    if not timestamp:
        return None
    try:
        return datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.UTC).timestamp()
    except ValueError:
        return None


def _now() -> float:
    return datetime.datetime.now(datetime.UTC).timestamp()


@dataclass(frozen=True)
class Member:
    """What the controller needs to know about one pod a set owns (taken at event time)."""

    name: str
    owner_uid: str
    ordinal: int           # -1: not named <set>-<n>, ignored as Kubernetes does
    matches: bool          # labels still match the set's selector
    revision: str
    created: bool          # has a phase (isCreated)
    running_ready: bool    # phase Running and Ready condition True
    ready_since: float | None
    terminating: bool
    finished: bool         # Failed or Succeeded: re-created
    identity_ok: bool      # the pod-name and pod-index labels are right

    @classmethod
    def of(cls, pod: Pod, owner_uid: str, matches: bool) -> Member:
        _, ordinal = parent_and_ordinal(pod.metadata.name)
        labels = pod.metadata.labels
        running_ready = pod.status.phase == "Running" and podutil.is_ready(pod)
        return cls(name=pod.metadata.name, owner_uid=owner_uid, ordinal=ordinal, matches=matches,
                   revision=labels.get(REVISION_LABEL, ""), created=bool(pod.status.phase),
                   running_ready=running_ready,
                   ready_since=_epoch(podutil.ready_since(pod)) if running_ready else None,
                   terminating=podutil.is_terminating(pod), finished=podutil.is_terminal(pod),
                   identity_ok=(labels.get(POD_NAME_LABEL) == pod.metadata.name
                                and labels.get(POD_INDEX_LABEL) == str(ordinal)))

    @property
    def healthy(self) -> bool:
        return self.running_ready and not self.terminating


def _owner_ref(pod: Pod) -> OwnerReference | None:
    ref = podutil.controller_of(pod)
    if ref is not None and ref.kind == "StatefulSet":
        return ref
    return None


def _replicas(sts: StatefulSet) -> int:
    return 1 if sts.spec.replicas is None else sts.spec.replicas


def _start_ordinal(sts: StatefulSet) -> int:
    return sts.spec.ordinals.start if sts.spec.ordinals is not None else 0


def _partition(sts: StatefulSet) -> int:
    ru = sts.spec.update_strategy.rolling_update
    return (ru.partition or 0) if ru is not None else 0


class _Revisions:
    """One set's templates by revision name, oldest first (the in-memory ControllerRevisions)."""

    def __init__(self, uid: str) -> None:
        self.uid = uid
        self.templates: dict[str, PodTemplateSpec] = {}
        self.last: tuple[PodTemplateSpec, str] | None = None  # (template object, its name): a cache

    def update_revision(self, sts: StatefulSet) -> str:
        template = sts.spec.template
        if self.last is not None and self.last[0] is template:
            return self.last[1]
        name = revision_name(sts.metadata.name, template)
        self.templates.pop(name, None)  # a rollback makes an old revision the newest again
        self.templates[name] = template
        self.last = (template, name)
        return name

    def truncate(self, limit: int, live: set[str]) -> None:
        history = [name for name in self.templates if name not in live]
        for name in history[:max(0, len(history) - limit)]:
            del self.templates[name]


class StatefulSetController:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._members: dict[SetKey, dict[str, Member]] = {}
        self._revisions: dict[SetKey, _Revisions] = {}
        self._sets: set[SetKey] = set()
        self._queue: WorkQueue[SetKey] = WorkQueue(self._sync, "statefulset-controller")
        self._unsubscribe = None

    def start(self) -> None:
        self._unsubscribe = self._store.subscribe(self._on_event, kinds=("Pod", "StatefulSet"))
        for sts in self._store.list("StatefulSet"):
            self._sets.add((sts.metadata.namespace, sts.metadata.name))
        for pod in self._store.list("Pod"):
            self._on_pod(Event(ADDED, None, pod))
        for key in sorted(self._sets):
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
        if new is None:
            self._sets.discard(key)
        else:
            self._sets.add(key)
        if old is not None and new is not None and old.spec.selector != new.spec.selector:
            self._rematch(key, new)  # apps/v1 forbids this; tolerate it anyway
        if new is None or old is None or old.spec != new.spec or old.metadata.uid != new.metadata.uid:
            self._queue.add(key)

    def _on_pod(self, event: Event) -> None:
        pod = event.obj
        ns, name = pod.metadata.namespace, pod.metadata.name
        old_ref = _owner_ref(event.old) if event.old is not None else None
        new_ref = _owner_ref(event.new) if event.new is not None else None
        if old_ref is not None and (new_ref is None or new_ref.name != old_ref.name):
            key = (ns, old_ref.name)  # deleted, or no longer owned by this set
            members = self._members.get(key)
            if members is not None:
                members.pop(name, None)
                if not members:
                    del self._members[key]
            self._queue.add(key)
        parent, _ = parent_and_ordinal(name)
        if (ns, parent) in self._sets and (new_ref is None or new_ref.name != parent):
            self._queue.add((ns, parent))  # a pod not ours holds (or freed) one of the set's names
        if new_ref is None:
            return
        key = (ns, new_ref.name)
        members = self._members.setdefault(key, {})
        before = members.get(name)
        if before is not None and event.old is not None and event.old.metadata.labels == event.new.metadata.labels:
            matches = before.matches
        else:
            sts = self._store.get("StatefulSet", ns, new_ref.name)
            matches = sts is None or selector_matches(sts.spec.selector, event.new.metadata.labels)
        member = Member.of(event.new, new_ref.uid, matches)
        if member != before:
            members[name] = member
            self._queue.add(key)

    def _rematch(self, key: SetKey, sts: StatefulSet) -> None:
        members = self._members.get(key, {})
        for name, member in list(members.items()):
            pod = self._store.get("Pod", key[0], name)
            if pod is not None:
                members[name] = dataclasses.replace(
                    member, matches=selector_matches(sts.spec.selector, pod.metadata.labels))

    # ------------------------------------------------------------------ sync

    def _sync(self, key: SetKey) -> None:
        ns, name = key
        sts: StatefulSet | None = self._store.get("StatefulSet", ns, name)
        members = self._members.get(key, {})
        if sts is None:
            self._revisions.pop(key, None)
            for member in list(members.values()):
                self._delete(ns, member.name)
            return
        revisions = self._revisions.get(key)
        if revisions is None or revisions.uid != sts.metadata.uid:
            revisions = self._revisions[key] = _Revisions(sts.metadata.uid)
        update_rev = revisions.update_revision(sts)
        current_rev = sts.status.current_revision
        if current_rev not in revisions.templates:
            current_rev = update_rev
        writes = 0
        mine: dict[int, Member] = {}
        for member in list(members.values()):
            if member.owner_uid and member.owner_uid != sts.metadata.uid:
                writes += self._delete(ns, member.name)  # a deleted namesake's pod: garbage-collect
            elif not member.matches:
                writes += self._release(ns, member.name)
            elif member.ordinal >= 0 and parent_and_ordinal(member.name)[0] == name:
                mine[member.ordinal] = member
        start, replicas = _start_ordinal(sts), _replicas(sts)
        wanted = range(start, start + replicas)
        condemned = sorted((m for o, m in mine.items() if o not in wanted), key=lambda m: m.ordinal)
        if sts.metadata.deletion_timestamp is None:  # being deleted (foreground): no new pods
            writes += self._reconcile(sts, revisions, current_rev, update_rev, mine, wanted, condemned)
        live = {current_rev, update_rev} | {m.revision for m in mine.values()}
        revisions.truncate(sts.spec.revision_history_limit if sts.spec.revision_history_limit is not None
                           else 10, live)
        if writes:
            return  # the pod events this caused bring another sync, which writes the status
        self._write_status(sts, current_rev, update_rev, [mine[o] for o in wanted if o in mine] + condemned)

    def _reconcile(self, sts: StatefulSet, revisions: _Revisions, current_rev: str, update_rev: str,
                   mine: dict[int, Member], wanted: range, condemned: list[Member]) -> int:
        """Create, delete and fix pods toward the wanted state; returns the number of writes."""
        ns = sts.metadata.namespace
        monotonic = sts.spec.pod_management_policy != "Parallel"
        writes = 0
        for ordinal in wanted:
            member = mine.get(ordinal)
            if member is not None and member.finished:
                writes += self._delete(ns, member.name)  # re-created under its name once gone
                if monotonic:
                    return writes
                continue
            if member is None:
                writes += self._create(sts, revisions, current_rev, update_rev, ordinal)
                if monotonic:
                    return writes
                continue
            if monotonic and (member.terminating or not self._available(sts, member)):
                return writes
            if not member.identity_ok and not member.terminating:
                writes += self._fix_identity(ns, member)
        # Scale down from the highest ordinal; in order, each fully gone before the next.
        first_unhealthy = next((m for m in condemned if not m.healthy), None)
        for member in reversed(condemned):
            if member.terminating:
                if monotonic:
                    return writes
                continue
            if monotonic and not self._available(sts, member) and member is not first_unhealthy:
                return writes
            writes += self._delete(ns, member.name)
            if monotonic:
                return writes
        if sts.spec.update_strategy.type != "RollingUpdate":
            return writes  # OnDelete: pods take the update revision when users delete them
        for ordinal in reversed(wanted[_partition(sts):]):
            member = mine.get(ordinal)
            if member is None:
                return writes  # just created (Parallel): wait for it
            if member.revision != update_rev and not member.terminating:
                return writes + self._delete(ns, member.name)
            if not member.healthy:
                return writes
        return writes

    def _available(self, sts: StatefulSet, member: Member) -> bool:
        """isRunningAndAvailable; asks for a sync when minReadySeconds will have passed."""
        if not member.running_ready:
            return False
        wait = sts.spec.min_ready_seconds
        if wait <= 0 or member.ready_since is None:
            return True
        remaining = member.ready_since + wait - _now()
        if remaining <= 0:
            return True
        self._queue.add_after((sts.metadata.namespace, sts.metadata.name), remaining)
        return False

    # ------------------------------------------------------------------ writes

    def _create(self, sts: StatefulSet, revisions: _Revisions, current_rev: str, update_rev: str,
                ordinal: int) -> int:
        """newVersionedStatefulSetPod: below the partition at the current revision, else the update one."""
        strategy = sts.spec.update_strategy
        ru = strategy.rolling_update
        start = _start_ordinal(sts)
        use_current = strategy.type == "RollingUpdate" and (
            (ru is None and ordinal < start + sts.status.current_replicas)
            or (ru is not None and ordinal < start + (ru.partition or 0)))
        revision = current_rev if use_current else update_rev
        template = revisions.templates[revision]
        meta = sts.metadata
        name = f"{meta.name}-{ordinal}"
        owner = OwnerReference(api_version="apps/v1", kind="StatefulSet", name=meta.name, uid=meta.uid,
                               controller=True, block_owner_deletion=True)
        labels = {**template.metadata.labels, POD_NAME_LABEL: name, POD_INDEX_LABEL: str(ordinal),
                  REVISION_LABEL: revision}
        pod = Pod(metadata=ObjectMeta(name=name, namespace=meta.namespace, labels=labels,
                                      annotations=dict(template.metadata.annotations),
                                      owner_references=(owner,)),
                  spec=with_claim_volumes(dataclasses.replace(template.spec, hostname=name,
                                                              subdomain=sts.spec.service_name),
                                          sts.spec.extra.get("volumeClaimTemplates"), meta.name, ordinal),
                  status=PodStatus(phase="Pending"))
        try:
            self._store.create(pod)
        except AlreadyExistsError:
            return 0  # a pod not ours (or a deleted namesake's) holds the name: wait for it to go
        except NetemuError as exc:  # refused by admission (a missing service account): retried
            events.recorder(self._store).warning(
                sts, "FailedCreate", f"create Pod {name} in StatefulSet {meta.name} failed error: {exc}",
                component=CONTROLLER_NAME)
            self._queue.add_after((meta.namespace, meta.name), CREATE_RETRY)
            return 0
        events.recorder(self._store).normal(
            sts, "SuccessfulCreate", f"create Pod {name} in StatefulSet {meta.name} successful",
            component=CONTROLLER_NAME)
        return 1

    def _delete(self, ns: str, name: str) -> int:
        pod = self._store.get("Pod", ns, name)
        if pod is None or (podutil.is_terminating(pod) and not podutil.is_terminal(pod)):
            return 0
        podutil.request_deletion(self._store, pod)
        owner = _owner_ref(pod)
        sts = self._store.get("StatefulSet", ns, owner.name) if owner is not None else None
        if sts is not None:
            events.recorder(self._store).normal(
                sts, "SuccessfulDelete", f"delete Pod {name} in StatefulSet {sts.metadata.name} successful",
                component=CONTROLLER_NAME)
        return 1

    def _release(self, ns: str, name: str) -> int:
        """Orphan a pod whose labels no longer match the selector, as ClaimPods does."""
        def drop_owner(pod: Pod) -> Pod:
            ref = _owner_ref(pod)
            refs = tuple(r for r in pod.metadata.owner_references if r is not ref)
            return dataclasses.replace(pod, metadata=dataclasses.replace(pod.metadata, owner_references=refs))
        return 0 if self._store.modify("Pod", ns, name, drop_owner) is None else 1

    def _fix_identity(self, ns: str, member: Member) -> int:
        """UpdateStatefulPod: put back the pod-name and pod-index labels."""
        def relabel(pod: Pod) -> Pod:
            labels = {**pod.metadata.labels, POD_NAME_LABEL: member.name, POD_INDEX_LABEL: str(member.ordinal)}
            return dataclasses.replace(pod, metadata=dataclasses.replace(pod.metadata, labels=labels))
        return 0 if self._store.modify("Pod", ns, member.name, relabel) is None else 1

    # ------------------------------------------------------------------ status

    def _write_status(self, sts: StatefulSet, current_rev: str, update_rev: str, pods: list[Member]) -> None:
        """computeReplicaStatus over the wanted and condemned pods, then completeRollingUpdate."""
        replicas = ready = available = current = updated = 0
        for member in pods:
            replicas += member.created
            if member.running_ready:
                ready += 1
                available += self._available(sts, member)
            if member.created and not member.terminating:
                current += member.revision == current_rev
                updated += member.revision == update_rev
        if sts.spec.update_strategy.type == "RollingUpdate" and updated == replicas and ready == replicas:
            current, current_rev = updated, update_rev
        old = sts.status
        status = StatefulSetStatus(
            observed_generation=sts.metadata.generation, replicas=replicas, ready_replicas=ready,
            current_replicas=current, updated_replicas=updated, available_replicas=available,
            current_revision=current_rev, update_revision=update_rev,
            collision_count=old.collision_count or 0, extra=old.extra)
        if status != old:
            self._store.modify("StatefulSet", sts.metadata.namespace, sts.metadata.name,
                               lambda s: dataclasses.replace(s, status=status))
