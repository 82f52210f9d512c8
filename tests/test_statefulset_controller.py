"""StatefulSet controller on a store with a fake kubelet: names, identity, ordering, scaling,
re-creation under the same name, Parallel, rolling updates with partition, status, deletion."""
from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from netemu.api.defaults import apply_defaults
from netemu.api.objects import Pod, StatefulSet
from netemu.controllers import Scheduler, StatefulSetController, podutil
from netemu.names import ALPHANUMS
from netemu.controllers.statefulset import (POD_INDEX_LABEL, POD_NAME_LABEL, REVISION_LABEL,
                                            parent_and_ordinal, revision_name)
from netemu.store import Event, Store

from test_controllers_helpers import FakeKubelet, decode, eventually, node, set_ready, settle


def statefulset(replicas: int, image: str = "nginx:1.25", **spec: Any) -> StatefulSet:
    return apply_defaults(decode(StatefulSet, {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": replicas, "serviceName": "nginx", "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "nginx", "image": image}]}},
                 **spec},
    }))


class Env:
    def __init__(self, auto_ready: bool) -> None:
        self.store = Store()
        for name in ("n1", "n2"):
            self.store.create(node(name))
        self.controller = StatefulSetController(self.store)
        self.scheduler = Scheduler(self.store)
        self.controller.start()
        self.scheduler.start()
        self.kubelet = FakeKubelet(self.store, auto_ready=auto_ready)
        self.log: list[tuple[str, str]] = []  # ("created" | "terminating" | "deleted", pod name)
        self._unsubscribe = self.store.subscribe(self._record, kinds=["Pod"])

    def _record(self, event: Event) -> None:
        name = event.obj.metadata.name
        if event.old is None:
            self.log.append(("created", name))
        elif event.new is None:
            self.log.append(("deleted", name))
        elif podutil.is_terminating(event.new) and not podutil.is_terminating(event.old):
            self.log.append(("terminating", name))

    def stop(self) -> None:
        self._unsubscribe()
        self.kubelet.stop()
        self.scheduler.stop()
        self.controller.stop()

    def pods(self) -> dict[str, Any]:
        return {p.metadata.name: p for p in self.store.list("Pod", "default") if podutil.is_active(p)}

    def sts(self) -> StatefulSet:
        return self.store.must_get("StatefulSet", "default", "web")

    def update_spec(self, **changes: Any) -> None:
        s = self.sts()
        self.store.update(dataclasses.replace(s, spec=dataclasses.replace(s.spec, **changes)))

    def set_image(self, image: str) -> None:
        template = self.sts().spec.template
        containers = (dataclasses.replace(template.spec.containers[0], image=image),)
        self.update_spec(template=dataclasses.replace(
            template, spec=dataclasses.replace(template.spec, containers=containers)))

    def events(self, kind: str) -> list[str]:
        return [name for k, name in self.log if k == kind]


@pytest.fixture
async def env():
    e = Env(auto_ready=True)
    yield e
    assert not e.kubelet.violations
    e.stop()


@pytest.fixture
async def manual_env():
    e = Env(auto_ready=False)
    yield e
    e.stop()


def all_ready(env: Env, names: list[str]) -> bool:
    pods = env.pods()
    return sorted(pods) == sorted(names) and all(podutil.is_ready(p) for p in pods.values())


def running(env: Env) -> list[str]:
    return sorted(n for n, p in env.pods().items() if p.status.phase == "Running")


@pytest.mark.parametrize("name, expected", [
    ("web-0", ("web", 0)), ("my-db-12", ("my-db", 12)), ("web", ("", -1)), ("web-", ("", -1)),
    ("web-x1", ("", -1)), ("a-b-3", ("a-b", 3)),
], ids=["simple", "dashed-two-digits", "no-ordinal", "empty-ordinal", "not-a-number", "nested-dash"])
def test_parent_and_ordinal(name: str, expected: tuple[str, int]) -> None:
    assert parent_and_ordinal(name) == expected


def test_revision_name_follows_the_template_only() -> None:
    a, b, c = statefulset(1).spec.template, statefulset(5).spec.template, statefulset(1, "nginx:1.26").spec.template
    assert revision_name("web", a) == revision_name("web", b) != revision_name("web", c)
    assert re.fullmatch(f"web-[{ALPHANUMS}]{{1,10}}", revision_name("web", a))


async def test_pods_have_stable_names_labels_owner_and_dns_identity(env: Env) -> None:
    sts = env.store.create(statefulset(3))
    await eventually(lambda: all_ready(env, ["web-0", "web-1", "web-2"]), what="3 ready pods")
    revision = revision_name("web", sts.spec.template)
    for ordinal in range(3):
        pod = env.pods()[f"web-{ordinal}"]
        assert pod.metadata.labels == {"app": "web", POD_NAME_LABEL: f"web-{ordinal}",
                                       POD_INDEX_LABEL: str(ordinal), REVISION_LABEL: revision}
        assert (pod.spec.hostname, pod.spec.subdomain) == (f"web-{ordinal}", "nginx")
        (ref,) = pod.metadata.owner_references
        assert (ref.api_version, ref.kind, ref.name, ref.uid, ref.controller, ref.block_owner_deletion) == (
            "apps/v1", "StatefulSet", "web", sts.metadata.uid, True, True)
    assert env.events("created") == ["web-0", "web-1", "web-2"]


async def test_ordered_ready_waits_for_each_pod_to_be_running_and_ready(manual_env: Env) -> None:
    env = manual_env
    env.store.create(statefulset(3))
    for ordinal in range(3):
        name = f"web-{ordinal}"
        await eventually(lambda name=name: name in running(env), what=f"{name} running")
        await settle()
        assert sorted(env.pods()) == [f"web-{i}" for i in range(ordinal + 1)], "created too early"
        set_ready(env.store, env.pods()[name], True)
    await eventually(lambda: env.sts().status.ready_replicas == 3)
    assert env.events("created") == ["web-0", "web-1", "web-2"]


async def test_an_unready_pod_blocks_scale_up(manual_env: Env) -> None:
    env = manual_env
    env.store.create(statefulset(1))
    await eventually(lambda: running(env) == ["web-0"])
    env.update_spec(replicas=3)
    await settle()
    assert sorted(env.pods()) == ["web-0"]
    set_ready(env.store, env.pods()["web-0"], True)
    await eventually(lambda: "web-1" in env.pods())
    assert "web-2" not in env.pods()


async def test_scale_down_goes_from_the_highest_ordinal_one_pod_at_a_time(env: Env) -> None:
    env.store.create(statefulset(4))
    await eventually(lambda: all_ready(env, [f"web-{i}" for i in range(4)]))
    env.log.clear()
    env.update_spec(replicas=1)
    await eventually(lambda: sorted(env.pods()) == ["web-0"] and not env.store.get("Pod", "default", "web-1"))
    assert env.log == [("terminating", "web-3"), ("deleted", "web-3"),
                       ("terminating", "web-2"), ("deleted", "web-2"),
                       ("terminating", "web-1"), ("deleted", "web-1")]
    await eventually(lambda: env.sts().status.replicas == 1)


@pytest.mark.parametrize("how", ["deleted", "failed"])
async def test_a_lost_pod_comes_back_under_its_name(env: Env, how: str) -> None:
    env.store.create(statefulset(3))
    await eventually(lambda: all_ready(env, ["web-0", "web-1", "web-2"]))
    victim = env.pods()["web-1"]
    if how == "deleted":
        podutil.request_deletion(env.store, victim)
    else:
        env.store.update(dataclasses.replace(victim, status=dataclasses.replace(victim.status, phase="Failed")))
    await eventually(lambda: all_ready(env, ["web-0", "web-1", "web-2"])
                     and env.pods()["web-1"].metadata.uid != victim.metadata.uid)
    assert env.pods()["web-1"].spec.hostname == "web-1"
    assert env.events("created")[3:] == ["web-1"]


async def test_parallel_creates_and_deletes_all_at_once(manual_env: Env) -> None:
    env = manual_env
    env.store.create(statefulset(3, podManagementPolicy="Parallel"))
    await eventually(lambda: running(env) == ["web-0", "web-1", "web-2"], what="3 pods without readiness")
    env.log.clear()
    env.update_spec(replicas=0)
    await eventually(lambda: not env.store.list("Pod", "default"))
    terminating = env.events("terminating")
    assert sorted(terminating) == ["web-0", "web-1", "web-2"]
    assert env.log[:3] == [("terminating", n) for n in terminating], "a deletion waited for another"


async def test_rolling_update_replaces_pods_from_the_highest_ordinal(env: Env) -> None:
    old = env.store.create(statefulset(3))
    await eventually(lambda: all_ready(env, ["web-0", "web-1", "web-2"]))
    old_rev = revision_name("web", old.spec.template)
    env.log.clear()
    env.set_image("nginx:1.27")
    new_rev = revision_name("web", env.sts().spec.template)

    def done() -> bool:
        s = env.sts().status
        return s.current_revision == new_rev and s.updated_replicas == 3 and s.ready_replicas == 3
    await eventually(done, what="the update to finish")
    assert env.events("terminating") == ["web-2", "web-1", "web-0"]
    assert env.events("created") == ["web-2", "web-1", "web-0"]
    assert {p.metadata.labels[REVISION_LABEL] for p in env.pods().values()} == {new_rev} != {old_rev}
    assert all(p.spec.containers[0].image == "nginx:1.27" for p in env.pods().values())
    s = env.sts().status
    assert (s.current_replicas, s.update_revision) == (3, new_rev)


async def test_partition_keeps_lower_ordinals_at_the_current_revision(env: Env) -> None:
    old = env.store.create(statefulset(3, updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}))
    await eventually(lambda: all_ready(env, ["web-0", "web-1", "web-2"]))
    old_rev = revision_name("web", old.spec.template)
    env.set_image("nginx:1.27")
    new_rev = revision_name("web", env.sts().spec.template)
    await eventually(lambda: env.sts().status.updated_replicas == 1 and env.sts().status.ready_replicas == 3)

    def revisions() -> dict[str, str]:
        return {n: p.metadata.labels[REVISION_LABEL] for n, p in env.pods().items()}
    assert revisions() == {"web-0": old_rev, "web-1": old_rev, "web-2": new_rev}
    s = env.sts().status
    assert (s.current_revision, s.update_revision, s.current_replicas) == (old_rev, new_rev, 2)
    # A pod below the partition comes back at the current revision.
    podutil.request_deletion(env.store, env.pods()["web-0"])
    await eventually(lambda: all_ready(env, ["web-0", "web-1", "web-2"]) and env.events("created")[-1] == "web-0")
    assert revisions()["web-0"] == old_rev
    # Lowering the partition finishes the rollout.
    strategy = env.sts().spec.update_strategy
    env.update_spec(update_strategy=dataclasses.replace(
        strategy, rolling_update=dataclasses.replace(strategy.rolling_update, partition=0)))
    await eventually(lambda: env.sts().status.current_revision == new_rev and env.sts().status.current_replicas == 3)
    assert set(revisions().values()) == {new_rev}


async def test_on_delete_updates_only_pods_that_users_delete(env: Env) -> None:
    env.store.create(statefulset(2, updateStrategy={"type": "OnDelete"}))
    await eventually(lambda: all_ready(env, ["web-0", "web-1"]))
    env.set_image("nginx:1.27")
    new_rev = revision_name("web", env.sts().spec.template)
    await eventually(lambda: env.sts().status.update_revision == new_rev)
    await settle()
    assert env.events("terminating") == []
    podutil.request_deletion(env.store, env.pods()["web-1"])
    await eventually(lambda: all_ready(env, ["web-0", "web-1"])
                     and env.pods()["web-1"].metadata.labels[REVISION_LABEL] == new_rev)
    assert env.pods()["web-0"].metadata.labels[REVISION_LABEL] != new_rev


async def test_status_is_written_once_settled(env: Env) -> None:
    env.store.create(statefulset(2))
    await eventually(lambda: env.sts().status.available_replicas == 2)
    sts = env.sts()
    s = sts.status
    rev = revision_name("web", sts.spec.template)
    assert (s.observed_generation, s.replicas, s.ready_replicas, s.current_replicas, s.updated_replicas,
            s.current_revision, s.update_revision, s.collision_count) == (
        sts.metadata.generation, 2, 2, 2, 2, rev, rev, 0)
    rv = sts.metadata.resource_version
    await settle()
    assert env.sts().metadata.resource_version == rv, "status rewritten without a change"


async def test_ordinals_start_shifts_the_names(env: Env) -> None:
    env.store.create(statefulset(2, ordinals={"start": 5}))
    await eventually(lambda: all_ready(env, ["web-5", "web-6"]))
    assert env.pods()["web-6"].metadata.labels[POD_INDEX_LABEL] == "6"


async def test_min_ready_seconds_delays_the_next_pod(env: Env) -> None:
    env.store.create(statefulset(2, minReadySeconds=1))
    await eventually(lambda: "web-0" in env.pods() and podutil.is_ready(env.pods()["web-0"]))
    assert env.sts().status.available_replicas == 0 and "web-1" not in env.pods()
    await eventually(lambda: all_ready(env, ["web-0", "web-1"]), timeout=5)
    await eventually(lambda: env.sts().status.available_replicas == 2, timeout=5)


async def test_removed_identity_labels_are_put_back(env: Env) -> None:
    env.store.create(statefulset(1))
    await eventually(lambda: all_ready(env, ["web-0"]))
    pod = env.pods()["web-0"]
    labels = {k: v for k, v in pod.metadata.labels.items() if k != POD_NAME_LABEL}
    env.store.update(dataclasses.replace(pod, metadata=dataclasses.replace(pod.metadata, labels=labels)))
    await eventually(lambda: env.pods()["web-0"].metadata.labels.get(POD_NAME_LABEL) == "web-0")
    assert env.pods()["web-0"].metadata.uid == pod.metadata.uid


async def test_a_foreign_pod_holding_a_name_is_waited_for(env: Env) -> None:
    squatter = env.store.create(decode(Pod, {
        "metadata": {"name": "web-0", "namespace": "default", "labels": {"app": "other"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
    env.store.create(statefulset(1))
    await eventually(lambda: "web-0" in running(env))
    await settle()
    assert env.pods()["web-0"].metadata.uid == squatter.metadata.uid
    env.store.delete("Pod", "default", "web-0")
    await eventually(lambda: all_ready(env, ["web-0"]) and env.pods()["web-0"].metadata.owner_references)


async def test_deleting_the_statefulset_deletes_its_pods_gracefully(env: Env) -> None:
    env.store.create(statefulset(3))
    await eventually(lambda: all_ready(env, ["web-0", "web-1", "web-2"]))
    env.log.clear()
    env.store.delete("StatefulSet", "default", "web")
    await eventually(lambda: not env.store.list("Pod", "default"))
    assert sorted(env.events("terminating")) == ["web-0", "web-1", "web-2"]


async def test_existing_statefulsets_are_reconciled_at_start() -> None:
    store = Store()
    store.create(statefulset(2, podManagementPolicy="Parallel"))
    controller = StatefulSetController(store)
    controller.start()
    await eventually(lambda: len(store.list("Pod", "default")) == 2)
    await settle()
    assert sorted(p.metadata.name for p in store.list("Pod", "default")) == ["web-0", "web-1"]
    controller.stop()
