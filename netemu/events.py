"""The event recorder: why something is (not) working, as Kubernetes Events in the store.

The kubelet and the controllers call ``recorder(store).normal(...)`` / ``.warning(...)``; the
result is a core/v1 ``Event`` that ``kubectl get events``, ``kubectl describe`` and ``netemu
describe`` show. As client-go's event correlator does, the same reason and message about the same
object from the same source is not written twice: the stored event's ``count`` and
``lastTimestamp`` grow instead (a crash loop makes one ``BackOff`` event with a rising count).

Bounded: at most ``MAX_EVENTS`` events per cluster (the oldest go first) and none older than
``EVENT_TTL`` seconds (kube-apiserver's default ``--event-ttl`` of one hour), so a crash loop or a
scale storm cannot grow memory without bound. Events of a deleted namespace go with it.
"""
from __future__ import annotations

import collections
import time
import weakref
from typing import Any

from netemu.api.objects import Event, EventSource, ObjectMeta, ObjectReference
from netemu.errors import NetemuError
from netemu.frozen import evolve
from netemu.store import ADDED, DELETED, Event as StoreEvent, Store, now_rfc3339

MAX_EVENTS = 100_000  # about 1.5 KiB each: bring-up of 10,000 pods writes 55,000 (kube-apiserver keeps all for an hour)
EVENT_TTL = 3600.0  # seconds

NORMAL, WARNING = "Normal", "Warning"

_Key = tuple[str, str, str, str, str, str, str, str, str]


def reference(obj: Any, field_path: str = "") -> ObjectReference:
    """The ``involvedObject`` of an event about ``obj`` (``fieldPath`` e.g. ``spec.containers{nginx}``)."""
    meta = obj.metadata
    return ObjectReference(kind=obj.KIND, namespace=meta.namespace if obj.NAMESPACED else "",
                           name=meta.name, uid=meta.uid, api_version=obj.API_VERSION,
                           resource_version=meta.resource_version, field_path=field_path)


def container_path(container: str, *, init: bool = False) -> str:
    """The fieldPath the kubelet gives a container's events."""
    return f"spec.{'initContainers' if init else 'containers'}{{{container}}}"


class EventRecorder:
    """Writes and aggregates the events of one cluster's store; see the module's docstring."""

    def __init__(self, store: Store, *, max_events: int = MAX_EVENTS, ttl: float = EVENT_TTL) -> None:
        self.store = store
        self.max_events = max_events
        self.ttl = ttl
        # (namespace, name) of every stored event, least recently written first, with that time.
        self._order: collections.OrderedDict[tuple[str, str], float] = collections.OrderedDict()
        self._by_key: dict[_Key, tuple[str, str]] = {}
        self._key_of: dict[tuple[str, str], _Key] = {}
        self._last_nanos = 0
        store.subscribe(self._on_change, kinds=["Event", "Namespace"])

    # ------------------------------------------------------------------ recording

    def normal(self, obj: Any, reason: str, message: str, *, component: str, host: str = "",
               field_path: str = "") -> Event | None:
        return self.record(obj, NORMAL, reason, message, component=component, host=host, field_path=field_path)

    def warning(self, obj: Any, reason: str, message: str, *, component: str, host: str = "",
                field_path: str = "") -> Event | None:
        return self.record(obj, WARNING, reason, message, component=component, host=host, field_path=field_path)

    def record(self, obj: Any, type_: str, reason: str, message: str, *, component: str, host: str = "",
               field_path: str = "") -> Event | None:
        """Write (or bump) one event about ``obj``; None when it could not be stored (its namespace
        is gone, say): an event is never worth failing the caller for."""
        ref = reference(obj, field_path)
        namespace = ref.namespace or "default"
        key: _Key = (namespace, ref.kind, ref.name, ref.uid, field_path, type_, reason, message,
                     f"{component}/{host}")
        now = now_rfc3339()
        self._expire(time.time())
        try:
            existing = self._by_key.get(key)
            current = self.store.get("Event", *existing) if existing else None
            if current is not None:
                stored = self.store.update(evolve(
                    current, count=current.count + 1, last_timestamp=now, involved_object=ref))
            else:
                stored = self.store.create(Event(
                    metadata=ObjectMeta(name=f"{ref.name}.{self._unique_nanos():x}", namespace=namespace),
                    involved_object=ref, reason=reason, message=message, type=type_,
                    source=EventSource(component=component, host=host),
                    first_timestamp=now, last_timestamp=now, count=1,
                    reporting_component=component, reporting_instance=host))
        except NetemuError:
            return None
        where = (namespace, stored.metadata.name)
        self._by_key[key] = where
        self._key_of[where] = key
        self._touch(where, time.time())
        self._trim()
        return stored

    def _unique_nanos(self) -> int:
        """The name suffix client-go uses (the time in nanoseconds), never the same twice."""
        nanos = max(time.time_ns(), self._last_nanos + 1)
        self._last_nanos = nanos
        return nanos

    # ------------------------------------------------------------------ bounds

    def _touch(self, where: tuple[str, str], when: float) -> None:
        self._order[where] = when
        self._order.move_to_end(where)

    def _expire(self, now: float) -> None:
        while self._order:
            where, when = next(iter(self._order.items()))
            if now - when <= self.ttl:
                return
            self._drop(where)

    def _trim(self) -> None:
        while len(self._order) > self.max_events:
            self._drop(next(iter(self._order)))

    def _drop(self, where: tuple[str, str]) -> None:
        self._forget(where)
        if self.store.get("Event", *where) is not None:
            self.store.delete("Event", *where)

    def _forget(self, where: tuple[str, str]) -> None:
        self._order.pop(where, None)
        key = self._key_of.pop(where, None)
        if key is not None and self._by_key.get(key) == where:
            del self._by_key[key]

    def expire(self) -> None:
        """Drop the events older than the TTL now (recording does this too)."""
        self._expire(time.time())

    def __len__(self) -> int:
        return len(self._order)

    # ------------------------------------------------------------------ store changes

    def _on_change(self, change: StoreEvent) -> None:
        obj = change.obj
        if obj.KIND == "Namespace":
            if change.type == DELETED:
                for event in self.store.list("Event", obj.metadata.name):
                    self._drop((obj.metadata.name, event.metadata.name))
            return
        where = (obj.metadata.namespace, obj.metadata.name)
        if change.type == DELETED:
            self._forget(where)
        elif change.type == ADDED and where not in self._order and self.store.get("Event", *where) is not None:
            self._touch(where, time.time())  # written by a client of the API: bounded all the same
            self._trim()


_RECORDERS: "weakref.WeakKeyDictionary[Store, EventRecorder]" = weakref.WeakKeyDictionary()


def recorder(store: Store) -> EventRecorder:
    """The one recorder of ``store``'s cluster (made on first use)."""
    found = _RECORDERS.get(store)
    if found is None:
        found = _RECORDERS[store] = EventRecorder(store)
    return found


def events_for(store: Store, obj: Any) -> list[Event]:
    """The events about ``obj`` (by uid, as ``kubectl describe`` finds them), oldest first."""
    namespace = obj.metadata.namespace if obj.NAMESPACED else "default"
    uid = obj.metadata.uid
    found = [e for e in store.list("Event", namespace)
             if e.involved_object.uid == uid and e.involved_object.kind == obj.KIND
             and e.involved_object.name == obj.metadata.name]
    return sorted(found, key=sort_key)


def sort_key(event: Event) -> tuple[str, str]:
    """Events by when they last happened (kubectl's ``SortableEvents``), then by name."""
    return (event.last_timestamp or event.first_timestamp or event.event_time or "", event.metadata.name)

