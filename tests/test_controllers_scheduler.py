"""Scheduler: spreading, nodeSelector, unschedulable and not-ready nodes, retries on node changes."""
from __future__ import annotations

import collections
import dataclasses

import pytest

from netemu.controllers import DeploymentController, ReplicaSetController, Scheduler
from netemu.store import Store

from test_controllers_helpers import deployment, eventually, node, pod, settle


@pytest.fixture
async def store():
    s = Store()
    scheduler = Scheduler(s)
    scheduler.start()
    yield s
    scheduler.stop()


def bound(store: Store, name: str) -> str:
    return store.must_get("Pod", "default", name).spec.node_name


def scheduled_condition(store: Store, name: str):
    return next((c for c in store.must_get("Pod", "default", name).status.conditions
                 if c.type == "PodScheduled"), None)


async def test_two_replicas_on_three_nodes_land_on_distinct_nodes(store: Store) -> None:
    controller, replicasets = DeploymentController(store), ReplicaSetController(store)
    controller.start()
    replicasets.start()
    for name in ("n1", "n2", "n3"):
        store.create(node(name))
    # an unrelated pod makes n1 the busiest, so plain "fewest pods" would not decide alone
    store.create(pod("other", {"app": "other"}, node_name="n1"))
    store.create(deployment("web", 2, {"app": "web"}))

    def both_bound():
        pods = [p for p in store.list("Pod", "default", {"app": "web"}) if p.spec.node_name]
        return pods if len(pods) == 2 else None

    pods = await eventually(both_bound)
    assert len({p.spec.node_name for p in pods}) == 2
    assert "n1" not in {p.spec.node_name for p in pods}
    for p in pods:
        assert scheduled_condition(store, p.metadata.name).status == "True"
    replicasets.stop()
    controller.stop()


async def test_pods_without_owner_spread_by_count(store: Store) -> None:
    for name in ("n1", "n2", "n3"):
        store.create(node(name))
    for i in range(6):
        store.create(pod(f"p{i}", {}))
    await eventually(lambda: all(p.spec.node_name for p in store.list("Pod")))
    counts = collections.Counter(p.spec.node_name for p in store.list("Pod"))
    assert counts == {"n1": 2, "n2": 2, "n3": 2}


async def test_node_selector_is_honoured(store: Store) -> None:
    store.create(node("n1"))
    store.create(node("n2", labels={"disk": "ssd"}))
    store.create(node("n3"))
    for i in range(3):
        store.create(pod(f"p{i}", {}, nodeSelector={"disk": "ssd"}))
    await eventually(lambda: all(p.spec.node_name for p in store.list("Pod")))
    assert {p.spec.node_name for p in store.list("Pod")} == {"n2"}


@pytest.mark.parametrize("nodes,message", [
    ([node("n1"), node("n2"), node("n3")],
     "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."),
    ([node("n1", labels={"disk": "ssd"}, unschedulable=True), node("n2", labels={"disk": "ssd"}, ready=False),
      node("n3")],
     "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
     "1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, 1 node(s) were unschedulable."),
    ([], "no nodes available to schedule pods"),
], ids=["selector", "mixed", "no-nodes"])
async def test_unschedulable_pod_reports_why_and_is_retried_on_node_change(
        store: Store, nodes: list, message: str) -> None:
    for n in nodes:
        store.create(n)
    store.create(pod("p", {}, nodeSelector={"disk": "ssd"}))
    cond = await eventually(lambda: scheduled_condition(store, "p"))
    assert (cond.status, cond.reason, cond.message) == ("False", "Unschedulable", message)
    assert bound(store, "p") == ""
    store.create(node("fresh", labels={"disk": "ssd"}))
    await eventually(lambda: bound(store, "p") == "fresh")
    assert scheduled_condition(store, "p").status == "True"


async def test_node_becoming_schedulable_retries_pending_pods(store: Store) -> None:
    cordoned = store.create(node("n1", unschedulable=True))
    store.create(pod("p", {}))
    await eventually(lambda: scheduled_condition(store, "p"))
    assert "1 node(s) were unschedulable" in scheduled_condition(store, "p").message
    store.update(dataclasses.replace(cordoned, spec=dataclasses.replace(cordoned.spec, unschedulable=False)))
    await eventually(lambda: bound(store, "p") == "n1")


async def test_a_node_that_turns_ready_takes_the_pod_its_taint_kept_off(store: Store) -> None:
    """The scheduler keeps each node's taints per version of the node: a new version is read anew."""
    not_ready = store.create(node("n1", ready=False))
    store.create(pod("p", {}))
    await eventually(lambda: scheduled_condition(store, "p"))
    assert "untolerated taint {node.kubernetes.io/not-ready: }" in scheduled_condition(store, "p").message
    ready = node("n1")
    store.update(dataclasses.replace(ready, metadata=not_ready.metadata))
    await eventually(lambda: bound(store, "p") == "n1")


async def test_other_schedulers_and_prebound_pods_are_left_alone(store: Store) -> None:
    store.create(node("n1"))
    store.create(pod("mine", {}))
    store.create(pod("theirs", {}, schedulerName="my-scheduler"))
    store.create(pod("ghost", {}, node_name="no-such-node"))
    await eventually(lambda: bound(store, "mine") == "n1")
    await settle()
    assert bound(store, "theirs") == "" and scheduled_condition(store, "theirs") is None
    assert bound(store, "ghost") == "no-such-node"


async def test_existing_pods_are_scheduled_at_start() -> None:
    s = Store()
    s.create(node("n1"))
    s.create(pod("early", {}))
    scheduler = Scheduler(s)
    scheduler.start()
    await eventually(lambda: s.must_get("Pod", "default", "early").spec.node_name == "n1")
    scheduler.stop()
