"""ReplicaSets at the Python API level: the ReplicaSet controller (pods, status, ownership) and the
Deployment controller above it (one ReplicaSet per template, revisions, history, cleanup,
garbage collection)."""
from __future__ import annotations

import dataclasses
import datetime
import random
import re

import pytest

from netemu import printers
from netemu.api import load_text
from netemu.api.objects import ReplicaSet
from netemu.apiserver import ApiServer
from netemu.controllers import DeploymentController, ReplicaSetController, Scheduler, podutil
from netemu.controllers.deployment import (CHANGE_CAUSE, HASH_LABEL, REVISION, replica_sets_of, revision_of,
                                           template_hash)
from netemu.names import ALPHANUMS
from netemu.events import events_for
from netemu.store import Store

from test_controllers_helpers import FakeKubelet, decode, deployment, eventually, node, pod, set_ready, settle


def replica_set(name: str, replicas: int, labels: dict[str, str], namespace: str = "default",
                **spec) -> ReplicaSet:
    return decode(ReplicaSet, {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}},
                 **spec},
    })


class Env:
    def __init__(self, auto_ready: bool) -> None:
        self.store = Store()
        for name in ("n1", "n2", "n3"):
            self.store.create(node(name))
        self.deployments = DeploymentController(self.store)
        self.replicasets = ReplicaSetController(self.store)
        self.scheduler = Scheduler(self.store)
        for c in (self.deployments, self.replicasets, self.scheduler):
            c.start()
        self.kubelet = FakeKubelet(self.store, auto_ready=auto_ready)

    def stop(self) -> None:
        self.kubelet.stop()
        for c in (self.scheduler, self.replicasets, self.deployments):
            c.stop()

    def pods(self, labels: dict[str, str] | None = None) -> list:
        return [p for p in self.store.list("Pod", "default", labels or {"app": "web"}) if podutil.is_active(p)]

    def rs(self, name: str) -> ReplicaSet:
        return self.store.must_get("ReplicaSet", "default", name)

    def replica_sets(self) -> dict[str, ReplicaSet]:
        return {rs.metadata.name: rs for rs in self.store.list("ReplicaSet", "default")}

    def update(self, kind: str, name: str, **spec) -> None:
        obj = self.store.must_get(kind, "default", name)
        self.store.update(dataclasses.replace(obj, spec=dataclasses.replace(obj.spec, **spec)))

    def with_image(self, name: str, image: str) -> None:
        template = self.store.must_get("Deployment", "default", name).spec.template
        containers = (dataclasses.replace(template.spec.containers[0], image=image),)
        self.update("Deployment", name, template=dataclasses.replace(
            template, spec=dataclasses.replace(template.spec, containers=containers)))


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


def ready_count(env: Env, labels: dict[str, str] | None = None) -> int:
    return sum(1 for p in env.pods(labels) if podutil.is_ready(p))


# --------------------------------------------------------------------------- the ReplicaSet controller


async def test_pods_are_made_owned_and_counted_in_status(env: Env) -> None:
    rs = env.store.create(replica_set("frontend", 3, {"app": "web"}))
    await eventually(lambda: env.rs("frontend").status.available_replicas == 3)
    for p in env.pods():
        assert re.fullmatch(f"frontend-[{ALPHANUMS}]{{5}}", p.metadata.name)
        assert p.metadata.generate_name == "frontend-"
        (ref,) = p.metadata.owner_references
        assert (ref.api_version, ref.kind, ref.name, ref.uid, ref.controller, ref.block_owner_deletion) == (
            "apps/v1", "ReplicaSet", "frontend", rs.metadata.uid, True, True)
    s = env.rs("frontend").status
    assert (s.replicas, s.fully_labeled_replicas, s.ready_replicas, s.available_replicas,
            s.observed_generation) == (3, 3, 3, 3, env.rs("frontend").metadata.generation)
    created = [e for e in events_for(env.store, env.rs("frontend")) if e.reason == "SuccessfulCreate"]
    assert sorted(e.message for e in created) == sorted(f"Created pod: {p.metadata.name}" for p in env.pods())
    rv = env.rs("frontend").metadata.resource_version
    await settle()
    assert env.rs("frontend").metadata.resource_version == rv, "status rewritten without a change"


def test_a_sync_ahead_of_its_pod_events_makes_no_extra_pods() -> None:
    """Two changes queued before any is delivered: the second sync must not count the pods the
    first one made as missing (ControllerExpectations)."""
    store = Store()
    controller = ReplicaSetController(store)
    controller.start()
    made: list[str] = []
    store.subscribe(lambda e: e.type == "ADDED" and made.append(e.new.metadata.name), kinds=["Pod"])
    rs = store.create(replica_set("frontend", 3, {"app": "web"}))
    store.update(dataclasses.replace(rs, spec=dataclasses.replace(rs.spec, min_ready_seconds=5)))
    store.drain()  # ADDED syncs and makes 3 pods; MODIFIED syncs again before their events arrive
    assert len(made) == 3 and len(store.list("Pod", "default")) == 3
    controller.stop()


async def test_scale_down_removes_not_ready_pods_first(manual_env: Env) -> None:
    env = manual_env
    env.store.create(replica_set("frontend", 4, {"app": "web"}))
    await eventually(lambda: len([p for p in env.pods() if p.status.pod_ip]) == 4)
    keep = sorted(env.pods(), key=lambda p: p.metadata.name)[:2]
    for p in keep:
        set_ready(env.store, p, True)
    await eventually(lambda: env.rs("frontend").status.ready_replicas == 2)
    env.update("ReplicaSet", "frontend", replicas=2)
    await eventually(lambda: {p.metadata.name for p in env.pods()} == {p.metadata.name for p in keep})
    deleted = [e.message for e in events_for(env.store, env.rs("frontend")) if e.reason == "SuccessfulDelete"]
    assert len(deleted) == 2 and not any(p.metadata.name in m for m in deleted for p in keep)
    await eventually(lambda: env.rs("frontend").status.replicas == 2)


@pytest.mark.parametrize("how", ["deleted", "failed"])
async def test_lost_pod_is_replaced(env: Env, how: str) -> None:
    env.store.create(replica_set("frontend", 2, {"app": "web"}))
    await eventually(lambda: ready_count(env) == 2)
    victim = env.pods()[0]
    if how == "deleted":
        env.store.delete("Pod", "default", victim.metadata.name)
    else:
        env.store.update(dataclasses.replace(victim, status=dataclasses.replace(victim.status, phase="Failed")))
    await eventually(lambda: ready_count(env) == 2 and victim.metadata.name not in
                     {p.metadata.name for p in env.pods()})


async def test_relabelled_pod_is_released_and_a_matching_orphan_adopted(env: Env) -> None:
    env.store.create(replica_set("frontend", 2, {"app": "web"}))
    await eventually(lambda: ready_count(env) == 2)
    victim = env.pods()[0]
    relabelled = dataclasses.replace(victim.metadata, labels={"app": "debug"})
    env.store.update(dataclasses.replace(victim, metadata=relabelled))
    await eventually(lambda: ready_count(env) == 2)
    assert env.store.must_get("Pod", "default", victim.metadata.name).metadata.owner_references == ()
    # a bare pod that matches is adopted; the ReplicaSet, one over, lets the unscheduled one go
    owners: list = []
    unsubscribe = env.store.subscribe(lambda e: e.new is not None and e.new.metadata.name == "stray"
                                      and owners.append(podutil.controller_of(e.new)), kinds=["Pod"])
    env.store.create(pod("stray", {"app": "web"}))
    await eventually(lambda: env.store.get("Pod", "default", "stray") is None)
    unsubscribe()
    assert owners[-1] is not None and owners[-1].name == "frontend"
    await eventually(lambda: len(env.pods()) == 2 and env.rs("frontend").status.replicas == 2)


async def test_deleting_the_replica_set_deletes_its_pods_gracefully(env: Env) -> None:
    env.store.create(replica_set("frontend", 3, {"app": "web"}))
    await eventually(lambda: ready_count(env) == 3)
    terminating: set[str] = set()
    unsubscribe = env.store.subscribe(
        lambda e: e.new is not None and podutil.is_terminating(e.new) and terminating.add(e.new.metadata.name),
        kinds=["Pod"])
    env.store.delete("ReplicaSet", "default", "frontend")
    await eventually(lambda: not env.store.list("Pod", "default"))
    unsubscribe()
    assert len(terminating) == 3


async def test_a_replica_set_being_deleted_makes_no_pods(env: Env) -> None:
    rs = replica_set("frontend", 2, {"app": "web"})
    rs = dataclasses.replace(rs, metadata=dataclasses.replace(
        rs.metadata, deletion_timestamp="2026-01-01T00:00:00Z", finalizers=("foregroundDeletion",)))
    env.store.create(rs)
    await settle(50)
    assert env.pods() == []


async def test_min_ready_seconds_delays_availability(env: Env) -> None:
    env.store.create(replica_set("frontend", 2, {"app": "web"}, minReadySeconds=1))
    await eventually(lambda: env.rs("frontend").status.ready_replicas == 2)
    assert env.rs("frontend").status.available_replicas == 0
    await eventually(lambda: env.rs("frontend").status.available_replicas == 2, timeout=5)


# --------------------------------------------------------------------------- Deployments over ReplicaSets


async def test_a_deployment_gets_one_replica_set_with_revision_1(env: Env) -> None:
    d = env.store.create(deployment("web", 3, {"app": "web"}, revisionHistoryLimit=10))
    await eventually(lambda: env.store.must_get("Deployment", "default", "web").status.available_replicas == 3)
    h = template_hash(d.spec.template)
    rs = env.rs(f"web-{h}")
    assert rs.metadata.labels == {"app": "web", HASH_LABEL: h}
    assert rs.spec.selector.match_labels == {"app": "web", HASH_LABEL: h}
    assert rs.spec.template.metadata.labels == {"app": "web", HASH_LABEL: h}
    assert rs.spec.template.spec == d.spec.template.spec
    assert dict(rs.metadata.annotations) == {REVISION: "1", "deployment.kubernetes.io/desired-replicas": "3",
                                             "deployment.kubernetes.io/max-replicas": "4"}
    assert revision_of(env.store.must_get("Deployment", "default", "web")) == 1
    messages = [e.message for e in events_for(env.store, d) if e.reason == "ScalingReplicaSet"]
    assert messages == [f"Scaled up replica set web-{h} to 3 from 0"]


async def test_rollout_rollback_and_history_limit(env: Env) -> None:
    env.store.create(deployment("web", 2, {"app": "web"}, revisionHistoryLimit=2))
    await eventually(lambda: ready_count(env) == 2)
    first = template_hash(env.store.must_get("Deployment", "default", "web").spec.template)
    d = env.store.must_get("Deployment", "default", "web")
    env.store.update(dataclasses.replace(d, metadata=dataclasses.replace(
        d.metadata, annotations={**d.metadata.annotations, CHANGE_CAUSE: "to 1.26"})))
    env.with_image("web", "nginx:1.26")
    second = template_hash(env.store.must_get("Deployment", "default", "web").spec.template)

    def settled_on(h: str) -> bool:
        pods = env.pods()
        d = env.store.must_get("Deployment", "default", "web")
        return (len(pods) == 2 and all(p.metadata.labels[HASH_LABEL] == h and podutil.is_ready(p) for p in pods)
                and d.status.updated_replicas == 2 and d.status.replicas == 2)

    await eventually(lambda: settled_on(second), what="the rollout to 1.26")
    sets = env.replica_sets()
    assert (sets[f"web-{first}"].spec.replicas, sets[f"web-{second}"].spec.replicas) == (0, 2)
    assert (revision_of(sets[f"web-{first}"]), revision_of(sets[f"web-{second}"])) == (1, 2)
    assert sets[f"web-{second}"].metadata.annotations[CHANGE_CAUSE] == "to 1.26"
    assert CHANGE_CAUSE not in sets[f"web-{first}"].metadata.annotations

    env.with_image("web", "nginx:1.25")  # what `kubectl rollout undo` does: the old template back
    await eventually(lambda: settled_on(first), what="the rollback")
    await eventually(lambda: revision_of(env.store.must_get("Deployment", "default", "web")) == 3)
    rs = env.rs(f"web-{first}")
    assert revision_of(rs) == 3 and rs.metadata.annotations["deployment.kubernetes.io/revision-history"] == "1"
    assert len(env.replica_sets()) == 2

    for image in ("nginx:1.27", "nginx:1.28"):
        env.with_image("web", image)
        await eventually(lambda: settled_on(template_hash(
            env.store.must_get("Deployment", "default", "web").spec.template)), what=f"the rollout to {image}")
    # revisions 3 (1.25), 4 (1.27), 5 (1.28): two old ones kept, revision 2 (1.26) deleted
    await eventually(lambda: sorted(revision_of(rs) for rs in env.replica_sets().values()) == [3, 4, 5],
                     what="the oldest revision to go")


async def test_a_scale_reaches_the_new_replica_set_with_its_annotations(env: Env) -> None:
    d = env.store.create(deployment("web", 1, {"app": "web"}))
    await eventually(lambda: ready_count(env) == 1)
    env.update("Deployment", "web", replicas=4)
    await eventually(lambda: ready_count(env) == 4)
    rs = env.rs(f"web-{template_hash(d.spec.template)}")
    assert (rs.spec.replicas, rs.metadata.annotations["deployment.kubernetes.io/desired-replicas"],
            rs.metadata.annotations["deployment.kubernetes.io/max-replicas"]) == (4, "4", "5")


async def test_deleting_the_deployment_takes_its_replica_sets_and_pods(env: Env) -> None:
    env.store.create(deployment("web", 2, {"app": "web"}))
    await eventually(lambda: ready_count(env) == 2)
    env.store.delete("Deployment", "default", "web")
    await eventually(lambda: not env.replica_sets() and not env.store.list("Pod", "default"))


async def test_an_orphaned_replica_set_is_adopted_by_a_new_deployment(env: Env) -> None:
    d = env.store.create(deployment("web", 2, {"app": "web"}))
    await eventually(lambda: ready_count(env) == 2)
    name = f"web-{template_hash(d.spec.template)}"
    pods = {p.metadata.name for p in env.pods()}
    # `kubectl delete deployment web --cascade=orphan`: the ReplicaSet loses its owner, then the owner goes
    rs = env.rs(name)
    env.store.update(dataclasses.replace(rs, metadata=dataclasses.replace(rs.metadata, owner_references=())))
    env.store.delete("Deployment", "default", "web")
    await settle(50)
    assert name in env.replica_sets() and {p.metadata.name for p in env.pods()} == pods
    again = env.store.create(deployment("web", 2, {"app": "web"}))
    await eventually(lambda: podutil.controller_of(env.rs(name)) is not None)
    assert podutil.controller_of(env.rs(name)).uid == again.metadata.uid
    await eventually(lambda: env.store.must_get("Deployment", "default", "web").status.available_replicas == 2)
    assert {p.metadata.name for p in env.pods()} == pods, "the pods were kept, not replaced"


# --------------------------------------------------------------------------- through the API server

MANIFEST = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx}]}
"""


async def test_the_api_server_cascades_and_counts_pods_once(env: Env) -> None:
    api = ApiServer(env.store, service_cidr="10.96.0.0/16", rng=random.Random(3), max_pods=3)
    api.bootstrap()
    api.apply(load_text(MANIFEST))
    await eventually(lambda: ready_count(env) == 3)
    assert api.pods_demanded() == 3  # the ReplicaSet's pods are the Deployment's
    assert api.apply(load_text(MANIFEST)) == ["deployment.apps/web unchanged"]
    assert api.delete("deployment", "default", "web") == 'deployment.apps "web" deleted'
    assert not env.replica_sets()
    await eventually(lambda: not env.store.list("Pod", "default"))
    api.apply(load_text(MANIFEST.replace("kind: Deployment", "kind: ReplicaSet").replace("web}", "front}", 1)))
    await eventually(lambda: ready_count(env) == 3)
    assert api.scale("rs", "default", "front", 1) == "replicaset.apps/front scaled"
    await eventually(lambda: len(env.pods()) == 1)
    api.close()


# --------------------------------------------------------------------------- printing


async def test_get_and_describe_print_kubectls_layout(env: Env) -> None:
    d = env.store.create(deployment("web", 2, {"app": "web"}))
    await eventually(lambda: env.store.must_get("Deployment", "default", "web").status.available_replicas == 2)
    name = f"web-{template_hash(d.spec.template)}"
    rs = env.rs(name)
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)
    table = printers.render_table("rs", [rs], now=later).splitlines()
    assert table[0].split() == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
    assert table[1].split() == [name, "2", "2", "2", "5m"]
    wide = printers.render_table("replicasets", [rs], wide=True, now=later).splitlines()
    assert wide[1].split()[5:] == ["web", "nginx:1.25", f"app=web,pod-template-hash={name[4:]}"]
    text = printers.describe(rs, related={"pods": env.pods()}, now=later)
    assert "Controlled By:  Deployment/web\n" in text
    assert "Replicas:       2 current / 2 desired\n" in text
    assert "Pods Status:    2 Running / 0 Waiting / 0 Succeeded / 0 Failed\n" in text
    new, old = replica_sets_of(env.store, env.store.must_get("Deployment", "default", "web"))
    text = printers.describe(env.store.must_get("Deployment", "default", "web"),
                             related={"new_replica_sets": new, "old_replica_sets": old}, now=later)
    assert f"OldReplicaSets:  <none>\nNewReplicaSet:   {name} (2/2 replicas created)\n" in text
