"""The garbage collector's two non-default propagation policies, over ownerReferences.

Kubernetes deletes an owner in one of three ways (``DeleteOptions.propagationPolicy``):

- **Background** (the default): the owner goes at once and its dependents after it. The API
  server does this itself (``ApiServer._delete_dependents``); nothing here.
- **Orphan**: the dependents stay, with their ownerReference to the owner removed (``orphan``).
- **Foreground**: the owner stays, with ``metadata.deletionTimestamp`` and the
  ``foregroundDeletion`` finalizer, while its dependents are deleted; once the last one is gone
  the finalizer is removed and the owner with it (``delete_foreground``). A controller leaves an
  owner that is being deleted alone (it makes no new pods for it).

netemu's owners are Deployments (their ReplicaSets), ReplicaSets, StatefulSets and DaemonSets (their pods)
and Services (their EndpointSlices); dependents live in the owner's namespace. A foreground
deletion deletes the dependents in the foreground too, so a Deployment waits for its pods.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

from netemu.store import DELETED, Event, Store, now_rfc3339

FOREGROUND_FINALIZER = "foregroundDeletion"
ORPHAN_FINALIZER = "orphan"

OwnerKey = tuple[str, str, str]  # kind, namespace, name


def owned_by(obj: Any, uid: str) -> bool:
    return any(ref.uid == uid for ref in obj.metadata.owner_references)


class GarbageCollector:
    """Orphaning and foreground deletion over one store.

    ``delete_dependent(obj)`` deletes one dependent as the API server does (a pod gracefully);
    ``remove_owner(obj)`` removes an owner whose dependents are gone (the API server's final step:
    the store entry, a Service's addresses)."""

    def __init__(self, store: Store, kinds: Iterable[str], delete_dependent: Callable[[Any], None],
                 remove_owner: Callable[[Any], None]) -> None:
        self.store = store
        self.kinds = tuple(kinds)
        self._delete_dependent = delete_dependent
        self._remove_owner = remove_owner
        self._waiting: dict[str, OwnerKey] = {}  # uid of an owner in foreground deletion → its key
        self._unsubscribe = store.subscribe(self._on_event, kinds=self.kinds)

    def close(self) -> None:
        self._unsubscribe()

    def dependents(self, owner: Any) -> list[Any]:
        uid = owner.metadata.uid
        if not uid or not owner.NAMESPACED:
            return []
        return [obj for kind in self.kinds for obj in self.store.list(kind, owner.metadata.namespace)
                if owned_by(obj, uid)]

    def orphan(self, owner: Any) -> None:
        """Remove the ownerReferences to ``owner`` from its dependents (they stay)."""
        uid = owner.metadata.uid
        for obj in self.dependents(owner):
            refs = tuple(ref for ref in obj.metadata.owner_references if ref.uid != uid)
            self.store.update(dataclasses.replace(obj, metadata=dataclasses.replace(obj.metadata,
                                                                                    owner_references=refs)))

    def delete_foreground(self, owner: Any) -> Any | None:
        """Mark ``owner`` as being deleted and delete its dependents; it goes when they are gone.
        Returns the owner as it is now (None once removed: it had no dependents)."""
        meta = owner.metadata
        finalizers = meta.finalizers if FOREGROUND_FINALIZER in meta.finalizers \
            else (*meta.finalizers, FOREGROUND_FINALIZER)
        marked = self.store.update(dataclasses.replace(owner, metadata=dataclasses.replace(
            meta, deletion_timestamp=meta.deletion_timestamp or now_rfc3339(),
            deletion_grace_period_seconds=0, finalizers=finalizers)))
        self._waiting[meta.uid] = (owner.KIND, meta.namespace, meta.name)
        for obj in self.dependents(marked):
            if self.store.get(obj.KIND, obj.metadata.namespace, obj.metadata.name) is not None:
                self._delete_dependent(obj)
        self._check(meta.uid)
        return self.store.get(owner.KIND, meta.namespace, meta.name)

    def _on_event(self, event: Event) -> None:
        if not self._waiting or event.old is None:
            return
        if event.type != DELETED and event.new.metadata.owner_references == event.old.metadata.owner_references:
            return
        for ref in event.old.metadata.owner_references:
            if ref.uid in self._waiting:
                self._check(ref.uid)

    def _check(self, uid: str) -> None:
        """Finish the foreground deletion of the owner ``uid`` once it has no dependents left."""
        key = self._waiting.get(uid)
        owner = self.store.get(*key) if key else None
        if owner is None or owner.metadata.uid != uid or FOREGROUND_FINALIZER not in owner.metadata.finalizers:
            self._waiting.pop(uid, None)
            return
        if self.dependents(owner):
            return
        del self._waiting[uid]
        finalizers = tuple(f for f in owner.metadata.finalizers if f != FOREGROUND_FINALIZER)
        owner = self.store.update(dataclasses.replace(owner, metadata=dataclasses.replace(
            owner.metadata, finalizers=finalizers)))
        self._remove_owner(owner)  # netemu keeps no object for other finalizers (none of its own are left)
