"""DaemonSets at the Python API level: one pod per eligible node (nodeSelector, taints and
tolerations, cordoned and not-ready nodes, nodes coming and going), the pods as the real
controller makes them, rolling updates (maxUnavailable, maxSurge) and OnDelete, status,
validation and defaults, and garbage collection."""
from __future__ import annotations

import dataclasses
import datetime
import json
import random
import re

import yaml

import pytest

from netemu import printers
from netemu.api import apply_defaults, load_text, validate
from netemu.api.daemonsetrules import TEMPLATE_GENERATION_ANNOTATION
from netemu.api.objects import DaemonSet, Taint
from netemu.apiserver import ApiServer
from netemu.controllers import DaemonSetController, Scheduler, podutil
from netemu.controllers.daemonset import REVISION_HASH_LABEL, TEMPLATE_GENERATION_LABEL
from netemu.names import ALPHANUMS
from netemu.errors import ManifestErrors
from netemu.events import events_for
from netemu.store import Store

from test_controllers_helpers import FakeKubelet, decode, eventually, node, settle

NODES = ("n1", "n2", "n3")


def manifest(name: str = "agent", image: str = "nginx:1.25", *, node_selector: dict[str, str] | None = None,
             tolerations: list[dict] | None = None, strategy: str = "", min_ready: int = 0) -> str:
    spec: dict = {"containers": [{"name": "agent", "image": image}]}
    if node_selector:
        spec["nodeSelector"] = node_selector
    if tolerations:
        spec["tolerations"] = tolerations
    return f"""
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  minReadySeconds: {min_ready}
  {strategy}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec: {json.dumps(spec)}
"""


class Env:
    def __init__(self, auto_ready: bool = True) -> None:
        self.store = Store()
        for name in NODES:
            self.store.create(node(name))
        self.api = ApiServer(self.store, service_cidr="10.96.0.0/16", rng=random.Random(3))
        self.api.bootstrap()
        self.daemonsets = DaemonSetController(self.store)
        self.scheduler = Scheduler(self.store)
        for c in (self.daemonsets, self.scheduler):
            c.start()
        self.kubelet = FakeKubelet(self.store, auto_ready=auto_ready)

    def stop(self) -> None:
        self.kubelet.stop()
        for c in (self.scheduler, self.daemonsets):
            c.stop()

    def apply(self, text: str) -> list[str]:
        return self.api.apply(load_text(text))

    def pods(self, app: str = "agent") -> list:
        return [p for p in self.store.list("Pod", "default", {"app": app}) if podutil.is_active(p)]

    def nodes_of(self, app: str = "agent") -> list[str]:
        return sorted(p.spec.node_name for p in self.pods(app))

    def ds(self, name: str = "agent") -> DaemonSet:
        return self.store.must_get("DaemonSet", "default", name)

    def change_node(self, name: str, **spec) -> None:
        n = self.store.must_get("Node", "", name)
        self.store.update(dataclasses.replace(n, spec=dataclasses.replace(n.spec, **spec)))

    def running_everywhere(self, app: str = "agent", nodes: tuple[str, ...] = NODES) -> bool:
        pods = self.pods(app)
        return sorted(p.spec.node_name for p in pods) == sorted(nodes) and all(podutil.is_ready(p) for p in pods)


@pytest.fixture
async def env():
    e = Env()
    yield e
    assert not e.kubelet.violations
    e.stop()


# --------------------------------------------------------------------------- one pod per node


async def test_one_pod_per_node_made_as_the_real_controller_makes_it(env):
    assert env.apply(manifest()) == ["daemonset.apps/agent created"]
    await eventually(env.running_everywhere, what="a ready pod on each node")
    ds = env.ds()
    assert ds.metadata.annotations[TEMPLATE_GENERATION_ANNOTATION] == "1"
    for pod in env.pods():
        assert re.fullmatch(rf"agent-[{ALPHANUMS}]{{5}}", pod.metadata.name)
        (ref,) = pod.metadata.owner_references
        assert (ref.kind, ref.name, ref.uid, ref.controller, ref.block_owner_deletion) == \
            ("DaemonSet", "agent", ds.metadata.uid, True, True)
        assert pod.metadata.labels[TEMPLATE_GENERATION_LABEL] == "1"
        assert pod.metadata.labels[REVISION_HASH_LABEL]
        terms = pod.spec.extra["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert terms == {"nodeSelectorTerms": [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": [pod.spec.node_name]}]}]}
        assert [(t.key, t.operator, t.effect) for t in pod.spec.tolerations] == [
            ("node.kubernetes.io/not-ready", "Exists", "NoExecute"),
            ("node.kubernetes.io/unreachable", "Exists", "NoExecute"),
            ("node.kubernetes.io/disk-pressure", "Exists", "NoSchedule"),
            ("node.kubernetes.io/memory-pressure", "Exists", "NoSchedule"),
            ("node.kubernetes.io/pid-pressure", "Exists", "NoSchedule"),
            ("node.kubernetes.io/unschedulable", "Exists", "NoSchedule")]
    await eventually(lambda: env.ds().status.number_available == 3)
    status = env.ds().status
    assert (status.desired_number_scheduled, status.current_number_scheduled, status.number_ready,
            status.updated_number_scheduled, status.number_available, status.number_unavailable,
            status.number_misscheduled, status.observed_generation) == (3, 3, 3, 3, 3, 0, 0, 1)
    created = [e.message for e in events_for(env.store, ds) if e.reason == "SuccessfulCreate"]
    assert sorted(created) == sorted(f"Created pod: {p.metadata.name}" for p in env.pods())


async def test_a_deleted_pod_is_replaced_on_its_node(env):
    env.apply(manifest())
    await eventually(env.running_everywhere)
    victim = next(p for p in env.pods() if p.spec.node_name == "n2")
    env.api.delete("Pod", "default", victim.metadata.name)
    await eventually(lambda: env.running_everywhere() and victim.metadata.name not in
                     {p.metadata.name for p in env.pods()}, what="a new pod on n2")


async def test_node_selector_picks_nodes_and_follows_label_changes(env):
    env.store.update(dataclasses.replace(node("n1", labels={"role": "edge"})))
    env.apply(manifest(node_selector={"role": "edge"}))
    await eventually(lambda: env.nodes_of() == ["n1"] and env.ds().status.desired_number_scheduled == 1)
    labelled = env.store.must_get("Node", "", "n3")
    env.store.update(dataclasses.replace(labelled, metadata=dataclasses.replace(
        labelled.metadata, labels={**labelled.metadata.labels, "role": "edge"})))
    await eventually(lambda: env.nodes_of() == ["n1", "n3"], what="a pod on the newly labelled node")
    env.store.update(node("n1"))  # label removed: the pod goes
    await eventually(lambda: env.nodes_of() == ["n3"], what="the pod leaving the unlabelled node")
    await eventually(lambda: env.ds().status.desired_number_scheduled == 1
                     and env.ds().status.number_misscheduled == 0)


async def test_a_taint_keeps_daemon_pods_off_unless_tolerated(env):
    env.change_node("n2", taints=(Taint(key="dedicated", value="db", effect="NoSchedule"),))
    env.apply(manifest())
    env.apply(manifest("tolerant", tolerations=[{"key": "dedicated", "operator": "Equal", "value": "db",
                                                  "effect": "NoSchedule"}]))
    await eventually(lambda: env.nodes_of() == ["n1", "n3"] and env.running_everywhere("tolerant"))
    await settle()
    assert env.nodes_of() == ["n1", "n3"]
    assert env.ds().status.desired_number_scheduled == 2


async def test_a_no_execute_taint_evicts_daemon_pods_that_do_not_tolerate_it(env):
    env.apply(manifest())
    await eventually(env.running_everywhere)
    env.change_node("n3", taints=(Taint(key="maintenance", effect="NoExecute"),))
    await eventually(lambda: env.nodes_of() == ["n1", "n2"], what="the pod on n3 evicted")
    env.change_node("n3", taints=())
    await eventually(env.running_everywhere, what="the pod back on n3")


async def test_daemon_pods_run_on_cordoned_nodes(env):
    env.change_node("n1", unschedulable=True)
    env.apply(manifest())
    await eventually(env.running_everywhere, what="a pod on the cordoned node too")


async def test_nodes_added_and_removed(env):
    env.apply(manifest())
    await eventually(env.running_everywhere)
    env.store.create(node("n4"))
    await eventually(lambda: env.running_everywhere(nodes=(*NODES, "n4")), what="a pod on the new node")
    env.store.delete("Node", "", "n1")
    await eventually(lambda: env.running_everywhere(nodes=("n2", "n3", "n4")), what="the pod of the gone node deleted")


async def test_a_node_that_is_not_ready_gets_no_new_pod_but_keeps_its_own(env):
    down = node("n3", ready=False)
    env.store.update(down)
    env.apply(manifest())
    await eventually(lambda: env.nodes_of() == ["n1", "n2"])
    env.store.update(node("n3"))
    await eventually(env.running_everywhere, what="a pod once n3 is Ready")
    env.store.update(node("n3", ready=False))  # the pod there tolerates not-ready:NoExecute: it stays
    await settle()
    assert env.nodes_of() == ["n1", "n2", "n3"]


async def test_a_failed_pod_is_deleted_and_replaced(env):
    env.apply(manifest())
    await eventually(env.running_everywhere)
    victim = env.pods()[0]
    env.store.update(dataclasses.replace(victim, status=dataclasses.replace(victim.status, phase="Failed")))
    await eventually(lambda: env.store.get("Pod", "default", victim.metadata.name) is None and env.running_everywhere())
    assert any(e.reason == "FailedDaemonPod" for e in events_for(env.store, env.ds()))


# --------------------------------------------------------------------------- updates


def watch_unavailable(env: Env) -> list[int]:
    """Nodes without an available daemon pod, recorded at every pod change."""
    seen: list[int] = []

    def on_event(_event) -> None:
        ready_nodes = {p.spec.node_name for p in env.pods() if podutil.is_ready(p)}
        seen.append(len(set(NODES) - ready_nodes))
    env.store.subscribe(on_event, kinds=["Pod"])
    return seen


def all_updated(env: Env, generation: str) -> bool:
    pods = env.pods()
    return env.running_everywhere() and all(p.metadata.labels[TEMPLATE_GENERATION_LABEL] == generation
                                            and p.spec.containers[0].image == "nginx:1.27" for p in pods)


async def test_rolling_update_replaces_one_node_at_a_time(env):
    env.apply(manifest())
    await eventually(env.running_everywhere)
    before = {p.metadata.name for p in env.pods()}
    unavailable = watch_unavailable(env)
    env.apply(manifest(image="nginx:1.27"))
    assert env.ds().metadata.annotations[TEMPLATE_GENERATION_ANNOTATION] == "2"
    await eventually(lambda: all_updated(env, "2"), what="every pod updated")
    assert max(unavailable) == 1
    assert not before & {p.metadata.name for p in env.pods()}
    await eventually(lambda: env.ds().status.updated_number_scheduled == 3 and env.ds().status.number_available == 3)
    assert env.ds().status.observed_generation == env.ds().metadata.generation == 2


async def test_rolling_update_with_max_surge_starts_the_new_pod_before_the_old_goes(env):
    env.apply(manifest(strategy="updateStrategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}"))
    await eventually(env.running_everywhere)
    unavailable = watch_unavailable(env)
    most_on_a_node: list[int] = []
    env.store.subscribe(lambda _e: most_on_a_node.append(max(
        [sum(1 for p in env.pods() if p.spec.node_name == n) for n in NODES])), kinds=["Pod"])
    env.apply(manifest(image="nginx:1.27",
                       strategy="updateStrategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}"))
    await eventually(lambda: all_updated(env, "2"), what="every pod updated")
    assert max(unavailable) == 0
    assert max(most_on_a_node) == 2


async def test_on_delete_replaces_a_pod_only_when_it_is_deleted(env):
    env.apply(manifest(strategy="updateStrategy: {type: OnDelete}"))
    await eventually(env.running_everywhere)
    env.apply(manifest(image="nginx:1.27", strategy="updateStrategy: {type: OnDelete}"))
    await eventually(lambda: env.ds().status.observed_generation == 2)
    await settle()
    assert all(p.spec.containers[0].image == "nginx:1.25" for p in env.pods())
    assert env.ds().status.updated_number_scheduled == 0
    victim = next(p for p in env.pods() if p.spec.node_name == "n1")
    env.api.delete("Pod", "default", victim.metadata.name)
    await eventually(lambda: [p.spec.node_name for p in env.pods() if p.spec.containers[0].image == "nginx:1.27"]
                     == ["n1"] and env.running_everywhere(), what="n1's pod re-created from the new template")
    await eventually(lambda: env.ds().status.updated_number_scheduled == 1)


# --------------------------------------------------------------------------- deletion


@pytest.mark.parametrize("propagation", [None, "Foreground"])
async def test_deleting_the_daemon_set_deletes_its_pods(env, propagation):
    env.apply(manifest())
    await eventually(env.running_everywhere)
    env.api.delete("DaemonSet", "default", "agent", propagation=propagation)
    await eventually(lambda: not env.store.list("Pod", "default") and env.store.get("DaemonSet", "default", "agent")
                     is None, what="pods and DaemonSet gone")


async def test_orphaned_pods_stay_and_are_adopted_by_a_new_daemon_set(env):
    env.apply(manifest())
    await eventually(env.running_everywhere)
    names = {p.metadata.name for p in env.pods()}
    env.api.delete("DaemonSet", "default", "agent", propagation="Orphan")
    await settle()
    assert {p.metadata.name for p in env.pods()} == names
    assert all(not p.metadata.owner_references for p in env.pods())
    env.apply(manifest())
    uid = env.ds().metadata.uid
    await eventually(lambda: all(p.metadata.owner_references and p.metadata.owner_references[0].uid == uid
                                 for p in env.pods()), what="pods adopted")
    assert {p.metadata.name for p in env.pods()} == names


# --------------------------------------------------------------------------- defaults and validation


def defaulted(text: str) -> DaemonSet:
    (m,) = load_text(text)
    return apply_defaults(m.obj)


def test_defaults_are_kubernetes_ones():
    ds = defaulted(manifest())
    strategy = ds.spec.update_strategy
    assert (strategy.type, strategy.rolling_update.max_unavailable, strategy.rolling_update.max_surge) == \
        ("RollingUpdate", 1, 0)
    assert ds.spec.revision_history_limit == 10
    assert ds.spec.template.spec.restart_policy == "Always"
    assert defaulted(manifest(strategy="updateStrategy: {type: OnDelete}")).spec.update_strategy.rolling_update is None


@pytest.mark.parametrize("change, problems", [
    ("spec:\n  selector: {matchLabels: {app: other}}",
     ['spec.template.metadata.labels: Invalid value: map[string]string{"app":"agent"}: '
      '`selector` does not match template `labels`']),
    ("spec:\n  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 1}}",
     ["spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: 1: may not be set when maxUnavailable is non-zero"]),
    ("spec:\n  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 0}}",
     ["spec.updateStrategy.rollingUpdate.maxUnavailable: Required value: cannot be 0 when maxSurge is 0"]),
    ("spec:\n  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 120%}}",
     ['spec.updateStrategy.rollingUpdate.maxUnavailable: Invalid value: 120%: must not be greater than 100%']),
    ("spec:\n  updateStrategy: {type: Recreate}",
     ['spec.updateStrategy: Unsupported value: apps.DaemonSetUpdateStrategy{Type:"Recreate", '
      'RollingUpdate:(*apps.RollingUpdateDaemonSet)(nil)}: supported values: "RollingUpdate", "OnDelete"']),
    ("spec:\n  template:\n    spec: {restartPolicy: Never}",
     ['spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always"']),
    ("spec:\n  template:\n    spec: {tolerations: [{operator: Equal, value: x}]}",
     ['spec.template.spec.tolerations[0].operator: Invalid value: "Equal": operator must be Exists when '
      '`key` is empty, which means "match all values and all keys"']),
    ("spec:\n  template:\n    spec: {tolerations: [{key: a, effect: NoSchedule, tolerationSeconds: 5}]}",
     ["spec.template.spec.tolerations[0].effect: Invalid value: \"NoSchedule\": "
      "effect must be 'NoExecute' when `tolerationSeconds` is set"]),
])
def test_validation_speaks_kube_apiserver(change, problems):
    base = yaml.safe_load(manifest())
    patch = yaml.safe_load(change)["spec"]
    template_spec = patch.pop("template", {}).get("spec", {})
    base["spec"].update(patch)
    base["spec"]["template"]["spec"].update(template_spec)
    base["metadata"]["namespace"] = "default"
    assert [str(p) for p in validate(apply_defaults(decode(DaemonSet, base)))] == problems


async def test_the_selector_is_immutable(env):
    env.apply(manifest())
    changed = manifest().replace("matchLabels: {app: agent}", "matchLabels: {app: agent, tier: node}").replace(
        "labels: {app: agent}", "labels: {app: agent, tier: node}")
    with pytest.raises(ManifestErrors, match="spec.selector: Invalid value: .*: field is immutable"):
        env.apply(changed)


# --------------------------------------------------------------------------- netemu get / describe


async def test_get_and_describe_print_what_kubectl_prints(env):
    for name in NODES:
        env.store.update(node(name, labels={"kubernetes.io/os": "linux"}))
    env.apply(manifest(node_selector={"kubernetes.io/os": "linux"}))
    await eventually(lambda: env.ds().status.number_available == 3)
    ds, now = env.ds(), datetime.datetime.now(datetime.timezone.utc)
    rows = printers.render_table("ds", [ds], now=now, wide=True).splitlines()
    assert rows[0].split() == ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE", "SELECTOR",
                               "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    assert rows[1].split()[:7] == ["agent", "3", "3", "3", "3", "3", "kubernetes.io/os=linux"]
    assert rows[1].split()[-3:] == ["agent", "nginx:1.25", "app=agent"]
    text = printers.describe(ds, events=None, related={"pods": env.pods()}, now=now)
    assert text.splitlines()[:12] == [
        "Name:           agent",
        "Namespace:      default",
        "Selector:       app=agent",
        "Node-Selector:  kubernetes.io/os=linux",
        "Labels:         <none>",
        "Annotations:    deprecated.daemonset.template.generation: 1",
        "Desired Number of Nodes Scheduled: 3",
        "Current Number of Nodes Scheduled: 3",
        "Number of Nodes Scheduled with Up-to-date Pods: 3",
        "Number of Nodes Scheduled with Available Pods: 3",
        "Number of Nodes Misscheduled: 0",
        "Pods Status:  3 Running / 0 Waiting / 0 Succeeded / 0 Failed",
    ]
