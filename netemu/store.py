"""The in-memory object store: the emulated API server's storage.

Owns objects keyed by kind, namespace and name, the resourceVersion counter, label lookups and
change events. It knows nothing about networking. Writes are immediate; events are queued and
delivered to subscribers in order, after the write returns: a subscriber that writes during
delivery appends events that the same drain delivers. With an event loop running the drain is
scheduled with ``call_soon`` and delivers for at most ``DRAIN_SLICE`` seconds per loop turn, so a
cascade of a few changes settles within one turn while a burst of thousands (one big apply)
leaves the loop free for sockets between slices; ``settled()`` waits until every queued event is
delivered. Without a loop (unit tests), call ``drain()``, which delivers everything.
"""
from __future__ import annotations

import asyncio
import bisect
import collections
import datetime
import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterable, Iterator, Mapping

from netemu.api.kinds import plural, qualified
from netemu.api.objects import INGRESS_KINDS, STORED_ONLY
from netemu.errors import AlreadyExistsError, ConflictError, NotFoundError
from netemu.frozen import evolve
from netemu.names import new_uid

log = logging.getLogger(__name__)

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"
DRAIN_SLICE = 0.02  # seconds of event delivery per loop turn before the loop gets a say

# kubectl's resource names, for "not found" / "already exists" messages.
RESOURCE_NAMES = {
    "Pod": "pods", "Service": "services", "Deployment": "deployments.apps",
    "EndpointSlice": "endpointslices.discovery.k8s.io", "Namespace": "namespaces",
    "Node": "nodes", "StatefulSet": "statefulsets.apps", "ReplicaSet": "replicasets.apps", "DaemonSet": "daemonsets.apps", "ConfigMap": "configmaps", "Secret": "secrets",
    "ServiceAccount": "serviceaccounts",
    "Event": "events", "Impairment": "impairments.netemu.dev", "Partition": "partitions.netemu.dev",
    "Capture": "captures.netemu.dev",
    "Job": "jobs.batch", "CronJob": "cronjobs.batch", "NetworkPolicy": "networkpolicies.networking.k8s.io",
    **{kind: qualified(kind, version, plural(kind)) for version, kind, _, _ in (*STORED_ONLY, *INGRESS_KINDS)},
}


_last_stamp: tuple[int, str] = (-1, "")


def now_rfc3339() -> str:
    """The current UTC time as Kubernetes writes it (whole seconds); formatted once a second."""
    global _last_stamp
    second = int(time.time())
    if _last_stamp[0] != second:
        _last_stamp = (second, datetime.datetime.fromtimestamp(second, datetime.timezone.utc)
                       .strftime("%Y-%m-%dT%H:%M:%SZ"))
    return _last_stamp[1]


@dataclass(frozen=True)
class Event:
    type: str          # ADDED, MODIFIED or DELETED
    old: Any | None    # None for ADDED
    new: Any | None    # None for DELETED

    @property
    def obj(self) -> Any:
        return self.new if self.new is not None else self.old

    @property
    def kind(self) -> str:
        return self.obj.KIND


Handler = Callable[[Event], None]
Selector = Mapping[str, str] | Callable[[Mapping[str, str]], bool] | None


def _matches(selector: Selector, labels: Mapping[str, str]) -> bool:
    if selector is None:
        return True
    if callable(selector):
        return selector(labels)
    return all(labels.get(k) == v for k, v in selector.items())


class Store:
    def __init__(self) -> None:
        self._objects: dict[str, dict[str, dict[str, Any]]] = collections.defaultdict(
            lambda: collections.defaultdict(dict))
        self._rv = 0
        # Per kind, every (namespace, name) in order: made when a paged read asks for it, dropped
        # when an object of the kind is created or deleted (an update keeps the keys).
        self._order: dict[str, list[tuple[str, str]]] = {}
        self._handlers: list[tuple[frozenset[str] | None, Handler]] = []
        self._handlers_by_kind: dict[str, tuple[Handler, ...]] = {}  # per kind, in subscription order
        self._queues: list[tuple[frozenset[str] | None, asyncio.Queue[Event]]] = []
        self._pending: collections.deque[Event] = collections.deque()
        self._draining = False
        self._scheduled = False
        self._idle_waiters: list[asyncio.Future[None]] = []
        # Mutating admission by kind for what the cluster's own components create (a controller's
        # pods): kube-apiserver admits their writes as any client's. The API server's write path
        # admits its objects itself while planning and passes ``admitted=True``.
        self.admission: dict[str, Callable[[Any], Any]] = {}

    # ------------------------------------------------------------------ reads

    def get(self, kind: str, namespace: str, name: str) -> Any | None:
        return self._objects[kind][namespace].get(name)

    def must_get(self, kind: str, namespace: str, name: str) -> Any:
        obj = self.get(kind, namespace, name)
        if obj is None:
            raise NotFoundError(f'{RESOURCE_NAMES.get(kind, kind.lower())} "{name}" not found')
        return obj

    def list(self, kind: str, namespace: str | None = None, selector: Selector = None) -> list[Any]:
        """Objects of ``kind`` (in ``namespace``, or all when None) whose labels match, by ns/name."""
        spaces = self._objects[kind]
        names = [namespace] if namespace is not None else sorted(spaces)
        out = []
        for ns in names:
            for name in sorted(spaces.get(ns, {})):
                obj = spaces[ns][name]
                if _matches(selector, obj.metadata.labels):
                    out.append(obj)
        return out

    def scan(self, kind: str, namespace: str | None = None, after: tuple[str, str] | None = None) -> Iterator[Any]:
        """Objects of ``kind`` (in ``namespace``, or all when None) in ``list``'s order, starting
        after the (namespace, name) key ``after``: a page of a LIST costs what the page holds, not
        a sort of every object (the order is kept until an object is created or deleted)."""
        keys = self._order.get(kind)
        if keys is None:
            keys = sorted((ns, name) for ns, objs in self._objects[kind].items() for name in objs)
            self._order[kind] = keys
        start = bisect.bisect_left(keys, (namespace, "")) if namespace is not None else 0
        if after is not None:
            start = max(start, bisect.bisect_right(keys, after))
        spaces = self._objects[kind]
        for i in range(start, len(keys)):
            ns, name = keys[i]
            if namespace is not None and ns != namespace:
                return
            obj = spaces[ns].get(name)
            if obj is not None:  # deleted since this scan began (a caller that writes between items)
                yield obj

    def count(self, kind: str) -> int:
        return sum(len(v) for v in self._objects[kind].values())

    @property
    def resource_version(self) -> int:
        return self._rv

    # ------------------------------------------------------------------ writes

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _ns(self, obj: Any) -> str:
        return obj.metadata.namespace if obj.NAMESPACED else ""

    def create(self, obj: Any, *, admitted: bool = False) -> Any:
        """Store a new object; fills uid, resourceVersion, creationTimestamp, generation.

        Unless ``admitted``, the kind's ``admission`` (if any) may change the object or refuse
        it by raising (a NetemuError in kube-apiserver's words)."""
        ns, name = self._ns(obj), obj.metadata.name
        if name in self._objects[obj.KIND][ns]:
            raise AlreadyExistsError(
                f'{RESOURCE_NAMES.get(obj.KIND, obj.KIND.lower())} "{name}" already exists')
        admit = None if admitted else self.admission.get(obj.KIND)
        if admit is not None:
            obj = admit(obj)
        meta = evolve(
            obj.metadata, uid=obj.metadata.uid or new_uid(), resource_version=self._next_rv(),
            creation_timestamp=obj.metadata.creation_timestamp or now_rfc3339(), generation=1)
        obj = evolve(obj, metadata=meta)
        self._objects[obj.KIND][ns][name] = obj
        self._order.pop(obj.KIND, None)
        self._emit(Event(ADDED, None, obj))
        return obj

    def update(self, obj: Any, *, expect_rv: str | None = None) -> Any:
        """Replace an existing object; bumps generation when ``spec`` changed."""
        ns, name = self._ns(obj), obj.metadata.name
        old = self._objects[obj.KIND][ns].get(name)
        if old is None:
            raise NotFoundError(f'{RESOURCE_NAMES.get(obj.KIND, obj.KIND.lower())} "{name}" not found')
        if expect_rv is not None and old.metadata.resource_version != expect_rv:
            raise ConflictError(
                f'Operation cannot be fulfilled on {RESOURCE_NAMES.get(obj.KIND, obj.KIND)} "{name}": '
                "the object has been modified; please apply your changes to the latest version and try again")
        generation = old.metadata.generation
        old_spec, new_spec = getattr(old, "spec", None), getattr(obj, "spec", None)
        if (old_spec is not new_spec and old_spec != new_spec) or old.extra.get("spec") != obj.extra.get("spec"):
            generation += 1  # a kind kept as given has its spec in ``extra``; a status write keeps the spec object
        meta = evolve(
            obj.metadata, uid=old.metadata.uid, creation_timestamp=old.metadata.creation_timestamp,
            resource_version=self._next_rv(), generation=generation)
        obj = evolve(obj, metadata=meta)
        self._objects[obj.KIND][ns][name] = obj
        self._emit(Event(MODIFIED, old, obj))
        return obj

    def modify(self, kind: str, namespace: str, name: str, change: Callable[[Any], Any]) -> Any | None:
        """Apply ``change`` to the current object and store the result; None when it is gone.

        ``change`` may return the object unchanged, which writes nothing.
        """
        old = self.get(kind, namespace, name)
        if old is None:
            return None
        new = change(old)
        if new is old or new == old:
            return old
        return self.update(new)

    def delete(self, kind: str, namespace: str, name: str) -> Any:
        objs = self._objects[kind][namespace]
        old = objs.pop(name, None)
        if old is None:
            raise NotFoundError(f'{RESOURCE_NAMES.get(kind, kind.lower())} "{name}" not found')
        self._order.pop(kind, None)
        self._rv += 1
        self._emit(Event(DELETED, old, None))
        return old

    # ------------------------------------------------------------------ events

    def subscribe(self, handler: Handler, kinds: Iterable[str] | None = None) -> Callable[[], None]:
        """Call ``handler(event)`` for every later change of the given kinds; returns an unsubscribe."""
        entry = (frozenset(kinds) if kinds is not None else None, handler)
        self._handlers.append(entry)
        self._handlers_by_kind.clear()

        def unsubscribe() -> None:
            if entry in self._handlers:
                self._handlers.remove(entry)
                self._handlers_by_kind.clear()
        return unsubscribe

    def _handlers_of(self, kind: str) -> tuple[Handler, ...]:
        """The handlers that take changes of ``kind`` (a snapshot: subscribing during a delivery
        does not change who gets the event being delivered)."""
        handlers = self._handlers_by_kind.get(kind)
        if handlers is None:
            handlers = self._handlers_by_kind[kind] = tuple(
                handler for kinds, handler in self._handlers if kinds is None or kind in kinds)
        return handlers

    async def watch(self, kinds: Iterable[str] | None = None) -> AsyncIterator[Event]:
        """Yield every later change of the given kinds, for as long as the caller iterates."""
        entry: tuple[frozenset[str] | None, asyncio.Queue[Event]] = (
            frozenset(kinds) if kinds is not None else None, asyncio.Queue())
        self._queues.append(entry)
        try:
            while True:
                yield await entry[1].get()
        finally:
            self._queues.remove(entry)

    def _emit(self, event: Event) -> None:
        self._pending.append(event)
        if self._draining or self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: the caller drains
        self._scheduled = True
        loop.call_soon(self._drain_slice)

    @property
    def idle(self) -> bool:
        """No event is waiting for delivery."""
        return not self._pending and not self._draining

    async def settled(self) -> None:
        """Return once every event queued so far (and what delivering it causes) is delivered."""
        while not self.idle:
            waiter = asyncio.get_running_loop().create_future()
            self._idle_waiters.append(waiter)
            if not self._scheduled and not self._draining:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._drain_slice)
            await waiter

    def _drain_slice(self) -> None:
        self._deliver(time.monotonic() + DRAIN_SLICE)

    def drain(self) -> None:
        """Deliver every queued event (and those that delivery itself causes)."""
        self._deliver(None)

    def _deliver(self, deadline: float | None) -> None:
        """Deliver queued events in order; with a ``deadline``, stop there and go on next turn."""
        self._scheduled = False
        if self._draining:
            return
        self._draining = True
        try:
            while self._pending:
                event = self._pending.popleft()
                kind = event.kind
                for handler in self._handlers_of(kind):
                    try:
                        handler(event)
                    except Exception:  # a broken subscriber must not stop the others
                        log.exception("store subscriber %r failed on %s %s", handler, event.type, kind)
                for kinds, queue in self._queues:
                    if kinds is None or kind in kinds:
                        queue.put_nowait(event)
                if deadline is not None and self._pending and time.monotonic() > deadline:
                    self._scheduled = True
                    asyncio.get_running_loop().call_soon(self._drain_slice)
                    return
        finally:
            self._draining = False
        waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
