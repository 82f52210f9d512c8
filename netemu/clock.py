"""The cluster's wall clock, which tests and scenarios can move forward.

``Clock.time()`` is Unix time plus an offset; ``advance(seconds)`` grows the offset, and every
wake-up set with ``call_at`` whose time has now come fires on the next loop turn (the others are
re-armed for their new, shorter delay). The Job and CronJob controllers take their time from
here — schedules, back-offs, deadlines, TTLs and the timestamps they write — so a test of a
``*/1 * * * *`` CronJob advances the clock by a minute instead of waiting one. Everything else
(the kubelet, probes, the event loop) keeps real time: advancing does not make processes run
faster, it makes the controllers believe that time has passed.
"""
from __future__ import annotations

import asyncio
import datetime
import time
from typing import Callable

from netemu.errors import InvalidError


def rfc3339(moment: float) -> str:
    """Unix seconds as Kubernetes writes a time (RFC 3339, UTC, whole seconds)."""
    return datetime.datetime.fromtimestamp(int(moment), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
    except ValueError:
        return None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Wakeup:
    """A callback due at a clock time; ``cancel()`` drops it."""

    def __init__(self, clock: "Clock", when: float, callback: Callable[[], None]) -> None:
        self.clock, self.when, self.callback = clock, when, callback
        self._handle: asyncio.TimerHandle | asyncio.Handle | None = None
        self._loop = _running_loop()  # the cluster's loop; advance() may come from another thread

    def arm(self) -> None:
        """(Re)start the timer for the time left, on the loop the wake-up was made on."""
        if self._loop is not None and _running_loop() is not self._loop:
            self._loop.call_soon_threadsafe(self.arm)
            return
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._loop is not None:
            self._handle = self._loop.call_later(max(0.0, self.when - self.clock.time()), self._fire)

    def _fire(self) -> None:
        self._handle = None
        if self.clock.time() < self.when:  # woken early (a float rounding): sleep the rest
            self.arm()
            return
        self.clock._wakeups.discard(self)
        self.callback()

    @property
    def pending(self) -> bool:
        """Not yet fired nor cancelled."""
        return self in self.clock._wakeups

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.clock._wakeups.discard(self)


class Clock:
    """Wall time that can be fast-forwarded (never moved back)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self._wakeups: set[Wakeup] = set()

    def time(self) -> float:
        return time.time() + self.offset

    def now_rfc3339(self) -> str:
        return rfc3339(self.time())

    def call_at(self, when: float, callback: Callable[[], None]) -> Wakeup:
        """Run ``callback`` (on the event loop) once ``time()`` has reached ``when``."""
        wakeup = Wakeup(self, when, callback)
        # Known to advance() before its timer is set: an advance from another thread in between
        # re-arms it, where arming first could leave it timed by the clock before the advance.
        self._wakeups.add(wakeup)
        wakeup.arm()
        return wakeup

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward; wake-ups now due fire on the next loop turn (of the
        cluster's loop: any thread may advance the clock)."""
        if seconds < 0:
            raise InvalidError(f"the clock only moves forward: cannot advance by {seconds} seconds")
        self.offset += seconds
        for wakeup in list(self._wakeups):
            wakeup.arm()

    def close(self) -> None:
        for wakeup in list(self._wakeups):
            wakeup.cancel()
