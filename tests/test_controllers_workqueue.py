"""WorkQueue: one sync per dirty key per loop turn, errors contained, timers."""
from __future__ import annotations

import asyncio
import logging

from netemu.controllers.workqueue import WorkQueue

from test_controllers_helpers import eventually, settle


async def test_many_adds_make_one_sync_per_key_per_turn() -> None:
    seen: list[str] = []
    queue: WorkQueue[str] = WorkQueue(seen.append, "test")
    for _ in range(100):
        queue.add("a")
        queue.add("b")
    assert seen == []
    await settle(2)
    assert seen == ["a", "b"]


async def test_keys_added_while_processing_wait_for_the_next_turn() -> None:
    seen: list[str] = []

    def process(key: str) -> None:
        seen.append(key)
        if key == "a":
            queue.add("a2")

    queue: WorkQueue[str] = WorkQueue(process, "test")
    queue.add("a")
    await asyncio.sleep(0)
    assert seen == ["a"]
    await settle(2)
    assert seen == ["a", "a2"]


async def test_a_failing_key_does_not_stop_the_others(caplog) -> None:
    seen: list[str] = []

    def process(key: str) -> None:
        if key == "bad":
            raise RuntimeError("boom")
        seen.append(key)

    queue: WorkQueue[str] = WorkQueue(process, "test")
    with caplog.at_level(logging.ERROR):
        queue.add("bad")
        queue.add("good")
        await settle(2)
    assert seen == ["good"] and "boom" in caplog.text


async def test_add_after_keeps_the_earliest_timer_and_stop_cancels() -> None:
    seen: list[str] = []
    queue: WorkQueue[str] = WorkQueue(seen.append, "test")
    queue.add_after("k", 0.01)
    queue.add_after("k", 5)
    await eventually(lambda: seen == ["k"])
    queue.add_after("later", 0.01)
    queue.stop()
    # a witness timer due after the cancelled one: the loop runs timers in the order they are due,
    # so once the witness has been processed the cancelled key would have been too
    witnessed: list[str] = []
    witness: WorkQueue[str] = WorkQueue(witnessed.append, "witness")
    witness.add_after("witness", 0.02)
    await eventually(lambda: witnessed == ["witness"])
    assert seen == ["k"]


def test_without_a_loop_keys_are_processed_at_once() -> None:
    seen: list[str] = []
    queue: WorkQueue[str] = WorkQueue(seen.append, "test")
    queue.add("a")
    queue.add_after("b", 10)
    assert seen == ["a", "b"]
