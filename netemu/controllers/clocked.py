"""What the Job and CronJob controllers share: a work queue of their objects, fed by those
objects' events and by the events of the objects they control, and wake-ups on the cluster's
clock (``netemu.clock``: back-offs, deadlines, schedules and TTLs fall due when it is advanced).
"""
from __future__ import annotations

from typing import Any

from netemu.clock import Clock, Wakeup
from netemu.store import Event, Store

from . import podutil
from .workqueue import WorkQueue

Key = tuple[str, str]  # (namespace, name)


class ClockedController:
    KIND: str = ""    # the controller's own kind: Job, CronJob
    OWNED: str = ""   # the kind it controls: Pod, Job
    NAME: str = ""    # its name in logs and events

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self.clock = clock
        self._wakeups: dict[Key, Wakeup] = {}
        self._queue: WorkQueue[Key] = WorkQueue(self._sync, self.NAME)
        self._unsubscribe: Any = None

    def start(self) -> None:
        self._unsubscribe = self._store.subscribe(self._on_event, kinds=(self.OWNED, self.KIND))
        for obj in self._store.list(self.KIND):
            self._queue.add((obj.metadata.namespace, obj.metadata.name))

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._queue.stop()
        for wakeup in self._wakeups.values():
            wakeup.cancel()
        self._wakeups.clear()

    def _on_event(self, event: Event) -> None:
        obj = event.obj
        if event.kind == self.KIND:
            self._queue.add((obj.metadata.namespace, obj.metadata.name))
            return
        for owned in (event.old, event.new):
            ref = podutil.controller_of(owned) if owned is not None else None
            if ref is not None and ref.kind == self.KIND:
                self._queue.add((obj.metadata.namespace, ref.name))

    def _wake_at(self, key: Key, when: float) -> None:
        """Sync ``key`` again when the clock reaches ``when`` (an earlier pending wake-up stays)."""
        current = self._wakeups.get(key)
        if current is not None and current.when <= when and current.pending:
            return
        if current is not None:
            current.cancel()
        self._wakeups[key] = self.clock.call_at(when, lambda: self._queue.add(key))

    def _forget(self, key: Key) -> None:
        """The object is gone: drop its wake-up."""
        wakeup = self._wakeups.pop(key, None)
        if wakeup is not None:
            wakeup.cancel()

    def _sync(self, key: Key) -> None:
        raise NotImplementedError
