"""Deployment controller (with the ReplicaSet controller under it): naming, scaling, rollouts,
replacement, deletion and status."""
from __future__ import annotations

import dataclasses
import re

import pytest

from netemu.api.objects import DeploymentStrategy, RollingUpdateDeployment
from netemu.controllers import DeploymentController, ReplicaSetController, Scheduler, podutil
from netemu.controllers.deployment import HASH_LABEL, surge_and_unavailable, template_hash
from netemu.names import ALPHANUMS
from netemu.store import Store

from test_controllers_helpers import FakeKubelet, deployment, eventually, node, set_ready, settle

NAME_RE = re.compile(rf"^web-(?P<hash>[{ALPHANUMS}]{{1,10}})-[{ALPHANUMS}]{{5}}$")


class Env:
    def __init__(self, auto_ready: bool) -> None:
        self.store = Store()
        for name in ("n1", "n2", "n3"):
            self.store.create(node(name))
        self.controller = DeploymentController(self.store)
        self.replicasets = ReplicaSetController(self.store)
        self.scheduler = Scheduler(self.store)
        self.controller.start()
        self.replicasets.start()
        self.scheduler.start()
        self.kubelet = FakeKubelet(self.store, auto_ready=auto_ready)

    def stop(self) -> None:
        self.kubelet.stop()
        self.scheduler.stop()
        self.replicasets.stop()
        self.controller.stop()

    def pods(self, active_only: bool = True) -> list:
        pods = self.store.list("Pod", "default", {"app": "web"})
        return [p for p in pods if podutil.is_active(p)] if active_only else pods

    def deployment(self):
        return self.store.must_get("Deployment", "default", "web")

    def update_spec(self, **changes) -> None:
        d = self.deployment()
        self.store.update(dataclasses.replace(d, spec=dataclasses.replace(d.spec, **changes)))


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


def all_ready(env: Env, replicas: int) -> bool:
    pods = env.store.list("Pod", "default", {"app": "web"})
    return len(pods) == replicas and all(podutil.is_ready(p) and podutil.is_active(p) for p in pods)


@pytest.mark.parametrize("replicas,surge,unavailable,expected", [
    (10, None, None, (3, 2)),
    (3, "25%", "25%", (1, 0)),
    (5, "30%", "30%", (2, 1)),
    (4, 1, 0, (1, 0)),
    (1, 0, 0, (0, 1)),
    (2, 0, 5, (0, 2)),
], ids=["defaults-10", "25pct-3", "30pct-5", "ints", "both-zero", "unavailable-capped"])
def test_surge_and_unavailable_round_as_kubernetes(replicas, surge, unavailable, expected) -> None:
    d = deployment("web", replicas, {"app": "web"})
    d = dataclasses.replace(d, spec=dataclasses.replace(d.spec, strategy=DeploymentStrategy(
        rolling_update=RollingUpdateDeployment(max_surge=surge, max_unavailable=unavailable))))
    assert surge_and_unavailable(d, replicas) == expected


def test_template_hash_is_stable_and_follows_the_template() -> None:
    a = deployment("web", 1, {"app": "web"}).spec.template
    b = deployment("other", 5, {"app": "web"}).spec.template
    c = deployment("web", 1, {"app": "web"}, image="nginx:1.26").spec.template
    assert template_hash(a) == template_hash(b) != template_hash(c)
    assert re.fullmatch(f"[{ALPHANUMS}]{{1,10}}", template_hash(a))


async def test_pods_are_named_labelled_and_owned_as_kubernetes_does(env: Env) -> None:
    d = env.store.create(deployment("web", 3, {"app": "web"}))
    await eventually(lambda: all_ready(env, 3), what="3 ready pods")
    h = template_hash(d.spec.template)
    for p in env.pods():
        m = NAME_RE.match(p.metadata.name)
        assert m and m["hash"] == h, p.metadata.name
        assert p.metadata.labels == {"app": "web", HASH_LABEL: h}
        assert p.metadata.generate_name == f"web-{h}-"
        rs = env.store.must_get("ReplicaSet", "default", f"web-{h}")
        (ref,) = p.metadata.owner_references
        assert (ref.kind, ref.name, ref.uid, ref.controller) == ("ReplicaSet", f"web-{h}", rs.metadata.uid, True)
        assert p.spec.containers[0].image == "nginx:1.25"
    (ref,) = rs.metadata.owner_references
    assert (ref.kind, ref.name, ref.uid, ref.controller) == ("Deployment", "web", d.metadata.uid, True)


async def test_status_and_conditions(env: Env) -> None:
    env.store.create(deployment("web", 3, {"app": "web"}))
    await eventually(lambda: env.deployment().status.available_replicas == 3)
    d = env.deployment()
    s = d.status
    assert (s.replicas, s.updated_replicas, s.ready_replicas, s.available_replicas,
            s.unavailable_replicas, s.observed_generation) == (3, 3, 3, 3, 0, d.metadata.generation)
    conditions = {c.type: c for c in s.conditions}
    h = template_hash(d.spec.template)
    assert (conditions["Available"].status, conditions["Available"].reason) == ("True", "MinimumReplicasAvailable")
    assert (conditions["Progressing"].status, conditions["Progressing"].reason,
            conditions["Progressing"].message) == (
        "True", "NewReplicaSetAvailable", f'ReplicaSet "web-{h}" has successfully progressed.')
    rv = d.metadata.resource_version
    await settle()
    assert env.deployment().metadata.resource_version == rv, "status rewritten without a change"


async def test_scale_up_and_down_removes_not_ready_pods_first(manual_env: Env) -> None:
    env = manual_env
    env.store.create(deployment("web", 3, {"app": "web"}))
    await eventually(lambda: len([p for p in env.pods() if p.status.pod_ip]) == 3)
    env.update_spec(replicas=5)
    await eventually(lambda: len([p for p in env.pods() if p.status.pod_ip]) == 5)
    pods = sorted(env.pods(), key=lambda p: p.metadata.name)
    keep = pods[:2]
    for p in keep:
        set_ready(env.store, p, True)
    await eventually(lambda: env.deployment().status.ready_replicas == 2)
    env.update_spec(replicas=2)
    await eventually(lambda: len(env.pods()) == 2)
    assert {p.metadata.name for p in env.pods()} == {p.metadata.name for p in keep}
    # the removed ones were bound, so they terminate gracefully (the kubelet finishes the job)
    await eventually(lambda: len(env.pods(active_only=False)) == 2)
    await eventually(lambda: env.deployment().status.replicas == 2)


@pytest.mark.parametrize("strategy", [
    None,
    DeploymentStrategy(rolling_update=RollingUpdateDeployment(max_surge=0, max_unavailable=1)),
    DeploymentStrategy(rolling_update=RollingUpdateDeployment(max_surge="50%", max_unavailable=0)),
], ids=["default-25pct", "surge0-unavail1", "surge50pct-unavail0"])
async def test_template_change_rolls_out_within_surge_and_unavailable(env: Env, strategy) -> None:
    replicas = 4
    env.store.create(deployment("web", replicas, {"app": "web"}, strategy=None))
    if strategy is not None:
        env.update_spec(strategy=strategy)
    await eventually(lambda: all_ready(env, replicas))
    d = env.deployment()
    surge, unavailable = surge_and_unavailable(d, replicas)
    breaches: list[str] = []

    def watch(event) -> None:
        active = env.pods()
        ready = [p for p in active if podutil.is_ready(p)]
        if len(active) > replicas + surge:
            breaches.append(f"{len(active)} active pods")
        if len(ready) < replicas - unavailable:
            breaches.append(f"{len(ready)} ready pods")

    unsubscribe = env.store.subscribe(watch, kinds=["Pod"])
    template = d.spec.template
    new_template = dataclasses.replace(template, spec=dataclasses.replace(
        template.spec, containers=(dataclasses.replace(template.spec.containers[0], image="nginx:1.26"),)))
    env.update_spec(template=new_template)
    new_hash = template_hash(new_template)

    def rolled_out() -> bool:
        pods = env.store.list("Pod", "default", {"app": "web"})
        return all_ready(env, replicas) and all(p.metadata.labels[HASH_LABEL] == new_hash for p in pods)

    await eventually(rolled_out, what="rollout to finish")
    unsubscribe()
    assert not breaches, breaches[:5]
    await eventually(lambda: any(c.reason == "NewReplicaSetAvailable" and new_hash in c.message
                                 for c in env.deployment().status.conditions))
    assert env.deployment().status.updated_replicas == replicas


async def test_recreate_removes_old_pods_before_creating_new_ones(env: Env) -> None:
    env.store.create(deployment("web", 3, {"app": "web"}, strategy={"type": "Recreate"}))
    await eventually(lambda: all_ready(env, 3))
    old_hash = template_hash(env.deployment().spec.template)
    mixed: list[int] = []

    def watch(event) -> None:
        hashes = {p.metadata.labels[HASH_LABEL] for p in env.pods(active_only=False)}
        if len(hashes) > 1:
            mixed.append(1)

    unsubscribe = env.store.subscribe(watch, kinds=["Pod"])
    template = env.deployment().spec.template
    env.update_spec(template=dataclasses.replace(template, metadata=dataclasses.replace(
        template.metadata, annotations={"restartedAt": "now"})))
    await eventually(lambda: all_ready(env, 3) and all(
        p.metadata.labels[HASH_LABEL] != old_hash for p in env.pods()))
    unsubscribe()
    assert not mixed


@pytest.mark.parametrize("how", ["deleted", "failed"])
async def test_lost_pod_is_replaced(env: Env, how: str) -> None:
    env.store.create(deployment("web", 3, {"app": "web"}))
    await eventually(lambda: all_ready(env, 3))
    victim = env.pods()[0]
    if how == "deleted":
        env.store.delete("Pod", "default", victim.metadata.name)
    else:
        env.store.update(dataclasses.replace(victim, status=dataclasses.replace(victim.status, phase="Failed")))
    await eventually(lambda: len(env.pods()) == 3 and victim.metadata.name not in
                     {p.metadata.name for p in env.pods()} and all(podutil.is_ready(p) for p in env.pods()))
    await eventually(lambda: env.deployment().status.available_replicas == 3)


async def test_deleting_the_deployment_deletes_its_pods_gracefully(env: Env) -> None:
    env.store.create(deployment("web", 3, {"app": "web"}))
    await eventually(lambda: all_ready(env, 3))
    terminating: set[str] = set()
    unsubscribe = env.store.subscribe(
        lambda e: e.new is not None and podutil.is_terminating(e.new) and terminating.add(e.new.metadata.name),
        kinds=["Pod"])
    env.store.delete("Deployment", "default", "web")
    await eventually(lambda: not env.store.list("Pod", "default"))
    unsubscribe()
    assert len(terminating) == 3


async def test_relabelled_pod_is_orphaned_and_replaced(env: Env) -> None:
    env.store.create(deployment("web", 2, {"app": "web"}))
    await eventually(lambda: all_ready(env, 2))
    victim = env.pods()[0]
    env.store.update(dataclasses.replace(victim, metadata=dataclasses.replace(
        victim.metadata, labels={"app": "debug"})))
    await eventually(lambda: all_ready(env, 2))
    orphan = env.store.must_get("Pod", "default", victim.metadata.name)
    assert orphan.metadata.owner_references == () and podutil.is_active(orphan)


async def test_existing_deployments_are_reconciled_at_start() -> None:
    store = Store()
    store.create(deployment("web", 2, {"app": "web"}))
    controller, replicasets = DeploymentController(store), ReplicaSetController(store)
    controller.start()
    replicasets.start()
    await eventually(lambda: len(store.list("Pod", "default", {"app": "web"})) == 2)
    await settle()
    assert len(store.list("Pod", "default", {"app": "web"})) == 2
    assert len(store.list("ReplicaSet", "default")) == 1
    replicasets.stop()
    controller.stop()


async def test_min_ready_seconds_delays_availability(env: Env) -> None:
    env.store.create(deployment("web", 2, {"app": "web"}, minReadySeconds=1))
    await eventually(lambda: env.deployment().status.ready_replicas == 2)
    await eventually(lambda: env.deployment().status.available_replicas == 2, timeout=5)
    s = env.deployment().status
    assert s.unavailable_replicas == 0
    assert {c.type: c.status for c in s.conditions} == {"Available": "True", "Progressing": "True"}
