"""The controllers' work queue: collapse many events into one sync per dirty key per loop turn.

Event handlers only ``add`` keys; the queue runs ``process(key)`` once for each key on the next
loop turn (``loop.call_soon``), so a burst of events about one object costs one sync. Keys added
while processing wait for the following turn. A turn processes keys for at most ``SLICE``
seconds; the rest wait, in order, for the next turn, so thousands of dirty keys (one big apply)
never keep the loop from its sockets. Without a running event loop (plain unit tests) keys are
processed at once.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Generic, Hashable, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
SLICE = 0.02  # seconds of processing per loop turn


class WorkQueue(Generic[K]):
    def __init__(self, process: Callable[[K], None], name: str) -> None:
        self._process = process
        self._name = name
        self._dirty: dict[K, None] = {}  # insertion-ordered set
        self._handle: asyncio.Handle | None = None
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._running = False
        self._stopped = False

    def add(self, key: K) -> None:
        if self._stopped:
            return
        self._dirty[key] = None
        if self._handle is not None or self._running:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._handle = loop.call_soon(self.flush)

    def add_after(self, key: K, delay: float) -> None:
        """``add(key)`` after ``delay`` seconds; an earlier pending timer for the key wins."""
        if self._stopped:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.add(key)  # no loop, no clock: at once
            return
        current = self._timers.get(key)
        if current is not None and current.when() <= loop.time() + delay:
            return
        if current is not None:
            current.cancel()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def cancel_timer(self, key: K) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def flush(self) -> None:
        """Process every key that is dirty now."""
        self._handle = None
        if self._running:
            return
        self._running = True
        in_loop = self._loop_running()
        deadline = time.monotonic() + SLICE
        try:
            while self._dirty:
                batch, self._dirty = self._dirty, {}
                keys = iter(batch)
                for key in keys:
                    try:
                        self._process(key)
                    except Exception:  # one broken object must not stall the others
                        log.exception("%s: sync of %r failed", self._name, key)
                    if in_loop and time.monotonic() > deadline:
                        rest = dict.fromkeys(keys)  # unprocessed keys go first next turn
                        rest.update(self._dirty)
                        self._dirty = rest
                        break
                if in_loop:
                    break  # keys added meanwhile: next turn
        finally:
            self._running = False
        if self._dirty and not self._stopped:
            self._handle = asyncio.get_running_loop().call_soon(self.flush)

    @property
    def idle(self) -> bool:
        """No key is waiting to be processed (timers of ``add_after`` aside)."""
        return not self._dirty and not self._running

    @staticmethod
    def _loop_running() -> bool:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False
        return True

    def stop(self) -> None:
        self._stopped = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._dirty.clear()
