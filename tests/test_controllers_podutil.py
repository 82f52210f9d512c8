"""podutil: pod facts, conditions and graceful deletion as the API server does it."""
from __future__ import annotations

import dataclasses

import pytest

from netemu.controllers import podutil
from netemu.store import Store

from test_controllers_helpers import pod


def test_is_ready_reads_the_ready_condition() -> None:
    assert not podutil.is_ready(pod("a", {}))
    assert not podutil.is_ready(pod("a", {}, ip="10.0.0.1", ready=False))
    assert podutil.is_ready(pod("a", {}, ip="10.0.0.1", ready=True))


def test_set_condition_returns_same_tuple_when_unchanged_and_keeps_transition_time() -> None:
    first = podutil.set_condition((), "Ready", "True")
    assert first[0].type == "Ready" and first[0].last_transition_time
    assert podutil.set_condition(first, "Ready", "True") is first
    renamed = podutil.set_condition(first, "Ready", "True", reason="Why")
    assert renamed is not first and renamed[0].last_transition_time == first[0].last_transition_time
    both = podutil.set_condition(first, "PodScheduled", "True")
    assert [c.type for c in both] == ["Ready", "PodScheduled"]


@pytest.mark.parametrize("node_name,phase,grace,gone", [
    ("", "Pending", None, True),
    ("n1", "Running", None, False),
    ("n1", "Running", 0, True),
    ("n1", "Succeeded", None, True),
    ("n1", "Failed", 5, True),
], ids=["unbound", "bound-graceful", "grace-0", "succeeded", "failed"])
def test_request_deletion(node_name: str, phase: str, grace: int | None, gone: bool) -> None:
    store = Store()
    p = pod("a", {}, node_name=node_name, terminationGracePeriodSeconds=7)
    p = store.create(dataclasses.replace(p, status=dataclasses.replace(p.status, phase=phase)))
    result = podutil.request_deletion(store, p, grace)
    current = store.get("Pod", "default", "a")
    if gone:
        assert result is None and current is None
    else:
        assert current is not None and podutil.is_terminating(current)
        assert current.metadata.deletion_grace_period_seconds == 7
        assert result == current


def test_request_deletion_only_shortens_the_grace_period() -> None:
    store = Store()
    p = store.create(pod("a", {}, node_name="n1"))
    podutil.request_deletion(store, p, 30)
    rv = store.get("Pod", "default", "a").metadata.resource_version
    podutil.request_deletion(store, p, 60)
    assert store.get("Pod", "default", "a").metadata.resource_version == rv
    podutil.request_deletion(store, p, 5)
    assert store.get("Pod", "default", "a").metadata.deletion_grace_period_seconds == 5
    assert podutil.request_deletion(store, store.get("Pod", "default", "a"), 0) is None
    assert store.get("Pod", "default", "a") is None
