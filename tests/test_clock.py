"""netemu.clock: a fast-forwardable clock whose wake-ups fire on the cluster's loop, whichever
thread advances it."""
from __future__ import annotations

import asyncio
import threading

from netemu.clock import Clock, Wakeup


async def test_an_advance_while_a_wake_up_is_being_set_still_reaches_it(monkeypatch):
    """An advance from another thread that lands while a wake-up computes its first timer (with the
    clock as it was) re-arms it: the wake-up fires at once, not an hour of real time later."""
    clock = Clock()
    fired = asyncio.Event()
    original_arm = Wakeup.arm
    raced: list[bool] = []

    def arm_racing_an_advance(self: Wakeup) -> None:
        original_arm(self)
        if not raced:  # the first timer is set: now another thread moves the clock past it
            raced.append(True)
            advancer = threading.Thread(target=clock.advance, args=(3600,))
            advancer.start()
            advancer.join()

    monkeypatch.setattr(Wakeup, "arm", arm_racing_an_advance)
    clock.call_at(clock.time() + 3600, fired.set)
    await asyncio.wait_for(fired.wait(), timeout=30)
    assert raced


async def test_a_due_wake_up_fires_and_a_cancelled_one_does_not():
    clock = Clock()
    calls: list[str] = []
    done = asyncio.Event()
    clock.call_at(clock.time() + 60, lambda: calls.append("cancelled")).cancel()
    clock.call_at(clock.time() + 60, lambda: (calls.append("due"), done.set()))
    clock.advance(61)
    await asyncio.wait_for(done.wait(), timeout=30)
    assert calls == ["due"]
