"""The recent changes of the store, each with its resourceVersion, for WATCH.

A watch starts at a resourceVersion: every change after it is sent, then the live ones. The
store itself keeps no history, so ``ChangeLog`` subscribes to it at start and keeps the last
``capacity`` changes; a watch from a version older than that gets 410 Gone (the client lists
again, as it does against kube-apiserver after compaction).

Each store write raises its resourceVersion by one and emits one event, delivered in order, so a
deletion's version (the store keeps only the deleted object) is the previous change's plus one.
"""
from __future__ import annotations

import asyncio
import collections
from typing import Any, Callable

from netemu.frozen import evolve
from netemu.store import DELETED, Event, Store

DEFAULT_CAPACITY = 10_000


class Change:
    """One change: ``type`` ADDED, MODIFIED or DELETED, ``obj`` (for DELETED the last state with
    the deletion's resourceVersion) and ``rv``. A deletion's copy of the object is made when a
    watcher first looks at it: most deletions (old events making room) are never watched."""

    __slots__ = ("type", "rv", "_obj", "_deleted")

    def __init__(self, type: str, obj: Any, rv: int, deleted: bool = False) -> None:
        self.type = type
        self.rv = rv
        self._obj = obj
        self._deleted = deleted  # obj is still the stored last state, with its older version

    @property
    def obj(self) -> Any:
        if self._deleted:
            self._obj = evolve(self._obj, metadata=evolve(self._obj.metadata, resource_version=str(self.rv)))
            self._deleted = False
        return self._obj


class TooOld(Exception):
    """The asked-for resourceVersion is older than the oldest change kept."""


class Watcher:
    """One watch's queue of changes of one kind that pass its filter."""

    def __init__(self, kind: str, accept: Callable[[Any], bool], since: int) -> None:
        self.kind = kind
        self.accept = accept
        self.since = since  # changes up to this version are already known to the client
        self.queue: asyncio.Queue[Change] = asyncio.Queue()

    def offer(self, change: Change) -> None:
        if change.rv > self.since and change.obj.KIND == self.kind and self.accept(change.obj):
            self.queue.put_nowait(change)


class ChangeLog:
    def __init__(self, store: Store, capacity: int = DEFAULT_CAPACITY) -> None:
        self._store = store
        self._changes: collections.deque[Change] = collections.deque(maxlen=capacity)
        self._watchers: set[Watcher] = set()
        self._last_rv = store.resource_version
        self._unsubscribe = store.subscribe(self._on_event)

    def close(self) -> None:
        self._unsubscribe()
        self._watchers.clear()


    def _on_event(self, event: Event) -> None:
        if event.type == DELETED:
            rv = self._last_rv + 1
            change = Change(DELETED, event.old, rv, True)
        else:
            rv = int(event.new.metadata.resource_version)
            change = Change(event.type, event.new, rv, False)
        if rv > self._last_rv:
            self._last_rv = rv
        self._changes.append(change)
        if self._watchers:
            for watcher in list(self._watchers):
                watcher.offer(change)

    def watch(self, kind: str, accept: Callable[[Any], bool], since: int | None) -> Watcher:
        """A watcher for changes after ``since`` (None: after the store's current version);
        TooOld when they are no longer all kept. A list reports the store's version, which may be
        ahead of the changes delivered so far: those still to come are then skipped, not repeated."""
        watcher = Watcher(kind, accept, since if since is not None else self._store.resource_version)
        if since is not None and since < self._last_rv:
            oldest = self._changes[0].rv if self._changes else self._last_rv + 1
            if since < oldest - 1:
                raise TooOld(f"too old resource version: {since} ({oldest - 1})")
            for change in self._changes:
                if change.rv > since:
                    watcher.offer(change)
        self._watchers.add(watcher)
        return watcher

    def stop(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)
