"""``proxy_workers: auto``: one proxy process, and more while the proxy is busy (loopback backend).

A Python process relays at most one core's worth of connections, and most clusters never need
more. With ``auto`` (the default) the cluster's proxy starts as one process whose TCP listeners are
ready to be shared (SO_REUSEPORT), and every ``check_interval`` it looks at how busy the last
interval was: the readiness events its listeners and relays handled (``Poller.events``) and the
CPU time the cluster's process used. After ``busy_checks`` busy intervals in a row — the process
used at least ``busy_cpu`` of a core *and* the proxy handled at least ``busy_events`` events a
second, so a process busy with something else (a big apply) does not count — one more worker
process is started (``workers.ProxyWorkers.add``) and takes a share of the new connections, until
there are as many processes as CPUs this process may run on, at most ``MAX_PROCESSES``. A worker
stays until the cluster stops: closing its listeners would drop the connections waiting in their
accept queues.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

log = logging.getLogger(__name__)

MAX_PROCESSES = 4        # what ``auto`` grows to at most (the cluster's process included)
CHECK_INTERVAL = 0.25    # seconds between looks at the load
BUSY_CPU = 0.6           # share of a core the cluster's process used in a busy interval
BUSY_EVENTS = 5000       # readiness events a second the proxy handled in a busy interval
BUSY_CHECKS = 2          # busy intervals in a row before a worker starts


def process_limit() -> int:
    """Processes ``auto`` may run: one per CPU this process may use, at most ``MAX_PROCESSES``."""
    return max(1, min(MAX_PROCESSES, len(os.sched_getaffinity(0))))


class Autoscaler:
    """Starts workers of ``workers`` (a ``ProxyWorkers``) for ``group`` while it is busy; ``close``
    before the group closes."""

    def __init__(self, group: Any, workers: Any, *, limit: int | None = None) -> None:
        self.group = group
        self.workers = workers
        self.limit = process_limit() if limit is None else limit
        self.check_interval = CHECK_INTERVAL
        self.busy_cpu = BUSY_CPU
        self.busy_events = BUSY_EVENTS
        self.busy_checks = BUSY_CHECKS
        self.loop = asyncio.get_running_loop()
        self._busy = 0
        self._adding: asyncio.Task | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._mark()
        self._plan()

    @property
    def processes(self) -> int:
        return 1 + len(self.workers)

    @property
    def starting(self) -> bool:
        """A worker is being started."""
        return self._adding is not None

    def _mark(self) -> None:
        self._at, self._cpu, self._events = self.loop.time(), time.process_time(), self.group.ctx.poller.events

    def _plan(self) -> None:
        if not self._closed and self._adding is None:  # at the limit too: ``limit`` may change
            self._timer = self.loop.call_later(self.check_interval, self._check)

    def _check(self) -> None:
        self._timer = None
        at, cpu, events = self._at, self._cpu, self._events
        self._mark()
        span = self._at - at
        busy = (span > 0 and self._cpu - cpu >= self.busy_cpu * span
                and self._events - events >= self.busy_events * span)
        self._busy = self._busy + 1 if busy else 0
        if self._busy >= self.busy_checks and self.processes < self.limit:
            self._busy = 0
            self._adding = self.loop.create_task(self._add())
            return
        self._plan()

    async def _add(self) -> None:
        try:
            pid = await self.workers.add()
        except Exception as exc:  # no memory or descriptors for a process: stay as many as now
            log.warning("proxy busy, but no worker process could start: %s", exc)
            self.limit = self.processes
        else:
            log.info("proxy busy: started worker process %s (%d proxy processes)", pid, self.processes)
        finally:
            self._adding = None
        self._mark()
        self._plan()

    async def close(self) -> None:
        """Stop looking; a worker being started is waited for (the group's close then stops it)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._adding is not None:
            await asyncio.wait([self._adding])
