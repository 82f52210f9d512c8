"""Events: what the scheduler, the kubelet and the controllers record, as ``netemu describe``,
``netemu get events``, ``kubectl get events`` and ``kubectl describe`` show them."""
from __future__ import annotations

import datetime
import os
import shutil
import subprocess

import pytest

from kubeapi_support import cluster_with_api
from netemu import events, printers
from netemu.api import objects as k8s
from netemu.kubeapi.describing import describe
from netemu.kubeapi import KUBECONFIG

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"


def _events_of(cluster, name: str, kind: str = "Pod") -> list[k8s.Event]:
    obj = cluster.get(kind.lower(), name)
    return events.events_for(cluster.store, obj)


def _reasons(cluster, name: str, kind: str = "Pod") -> list[str]:
    return [e.reason for e in _events_of(cluster, name, kind)]


NGINX_POD = """
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers: [{name: nginx, image: nginx}]
"""


def _find(cluster, name: str, reason: str, kind: str = "Pod") -> k8s.Event | None:
    return next((e for e in _events_of(cluster, name, kind) if e.reason == reason), None)


async def test_a_started_pod_has_scheduled_pulled_created_started_in_order(cluster):
    await cluster.apply(NGINX_POD)
    await cluster.wait_for(lambda: "Started" in _reasons(cluster, "web"), 10, "the Started event")
    evs = _events_of(cluster, "web")
    assert [e.reason for e in evs] == ["Scheduled", "Pulled", "Created", "Started"]
    by_reason = {e.reason: e for e in evs}
    node = cluster.get("pod", "web").spec.node_name
    assert by_reason["Scheduled"].message == f"Successfully assigned default/web to {node}"
    assert by_reason["Scheduled"].source.component == "default-scheduler"
    assert by_reason["Pulled"].message == 'Container image "nginx" already present on machine'
    assert by_reason["Created"].message == "Created container: nginx"
    assert by_reason["Started"].message == "Started container nginx"
    started = by_reason["Started"]
    assert (started.type, started.source.component, started.source.host) == ("Normal", "kubelet", node)
    assert started.involved_object.field_path == "spec.containers{nginx}"
    assert started.involved_object.uid == cluster.get("pod", "web").metadata.uid
    assert started.metadata.name.startswith("web.") and started.count == 1


async def test_an_unknown_image_is_a_failed_err_image_pull_warning(cluster):
    await cluster.apply("""
apiVersion: v1
kind: Pod
metadata: {name: nope}
spec:
  containers: [{name: app, image: no-such-image:1.0}]
""")
    await cluster.wait_for(lambda: _find(cluster, "nope", "Failed") is not None, 10, "the Failed event")
    failed = [e for e in _events_of(cluster, "nope") if e.reason == "Failed"]
    assert all(e.type == "Warning" for e in failed)
    messages = [e.message for e in failed]
    assert "Error: ErrImagePull" in messages
    assert any(m.startswith('Failed to pull image "no-such-image:1.0": ') for m in messages)


async def test_a_crash_loop_aggregates_back_off_into_one_event(cluster):
    await cluster.apply("""
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  containers: [{name: app, image: busybox, command: [sh, -c, "exit 1"]}]
""")

    def backoff_count() -> int:
        found = _find(cluster, "crash", "BackOff")
        return found.count if found is not None else 0

    await cluster.wait_for(lambda: backoff_count() >= 3, 20, "three back-offs")
    pod = cluster.get("pod", "crash")
    backoffs = [e for e in _events_of(cluster, "crash") if e.reason == "BackOff"]
    assert len(backoffs) == 1
    assert backoffs[0].type == "Warning"
    assert backoffs[0].message == f"Back-off restarting failed container app in pod crash_default({pod.metadata.uid})"
    assert backoffs[0].first_timestamp <= backoffs[0].last_timestamp
    assert _find(cluster, "crash", "Started").count >= 2  # every restart starts it again, one event


async def test_a_failing_liveness_probe_is_unhealthy_then_killing(cluster):
    await cluster.apply("""
apiVersion: v1
kind: Pod
metadata: {name: sick}
spec:
  containers:
  - name: app
    image: busybox
    command: [sleep, "60"]
    livenessProbe:
      exec: {command: [sh, -c, "echo not alive; exit 1"]}
      periodSeconds: 1
      failureThreshold: 2
""")
    await cluster.wait_for(lambda: _find(cluster, "sick", "Killing") is not None, 20, "the Killing event")
    unhealthy = _find(cluster, "sick", "Unhealthy")
    assert unhealthy.type == "Warning" and unhealthy.count >= 2
    assert unhealthy.message == "Liveness probe failed: not alive\n"  # the output as the kubelet keeps it
    assert _find(cluster, "sick", "Killing").message == "Container app failed liveness probe, will be restarted"


async def test_deployment_scale_records_scaling_replica_set(cluster):
    await cluster.apply("""
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: nginx, image: nginx}]
""")
    await cluster.wait_for(lambda: _find(cluster, "web", "ScalingReplicaSet", "Deployment") is not None, 10,
                           "the first ScalingReplicaSet")
    await cluster.scale("web", 3)
    await cluster.wait_for(lambda: len(_events_of(cluster, "web", "Deployment")) >= 2, 10, "the scale-up event")
    pod_hash = cluster.list("Pod")[0].metadata.labels["pod-template-hash"]
    messages = [e.message for e in _events_of(cluster, "web", "Deployment")]
    assert messages == [f"Scaled up replica set web-{pod_hash} to 1 from 0",
                        f"Scaled up replica set web-{pod_hash} to 3 from 1"]
    assert {e.source.component for e in _events_of(cluster, "web", "Deployment")} == {"deployment-controller"}


async def test_statefulset_records_successful_create(cluster):
    await cluster.apply("""
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 1
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: app, image: busybox, command: [sleep, "60"]}]
""")
    await cluster.wait_for(lambda: _find(cluster, "db", "SuccessfulCreate", "StatefulSet") is not None, 10,
                           "the SuccessfulCreate event")
    assert _find(cluster, "db", "SuccessfulCreate", "StatefulSet").message == \
        "create Pod db-0 in StatefulSet db successful"
    await cluster.scale("db", 0, kind="StatefulSet")
    await cluster.wait_for(lambda: _find(cluster, "db", "SuccessfulDelete", "StatefulSet") is not None, 10,
                           "the SuccessfulDelete event")
    assert _find(cluster, "db", "SuccessfulDelete", "StatefulSet").message == \
        "delete Pod db-0 in StatefulSet db successful"


async def test_a_missing_config_map_and_invalid_env_keys_are_warnings(cluster):
    await cluster.apply("""
apiVersion: v1
kind: Pod
metadata: {name: needs}
spec:
  containers:
  - name: app
    image: busybox
    command: [sleep, "60"]
    env: [{name: A, valueFrom: {configMapKeyRef: {name: settings, key: a}}}]
    envFrom: [{configMapRef: {name: settings}}]
""")
    await cluster.wait_for(lambda: _find(cluster, "needs", "Failed") is not None, 10, "the Failed event")
    failed = _find(cluster, "needs", "Failed")
    assert (failed.type, failed.message) == ("Warning", 'Error: configmap "settings" not found')
    await cluster.apply("""
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {a: "1", 1badkey: "x"}
""")
    await cluster.wait_for(lambda: _find(cluster, "needs", "Started") is not None, 15, "the container to start")
    invalid = _find(cluster, "needs", "InvalidEnvironmentVariableNames")
    assert invalid.type == "Warning" and invalid.involved_object.field_path == ""
    assert invalid.message.startswith("Keys [1badkey] from the EnvFrom configMap default/settings were skipped")


async def test_a_load_balancer_address_is_an_event_that_describe_svc_shows(cluster):
    await cluster.apply("""
apiVersion: v1
kind: Service
metadata: {name: front}
spec:
  type: LoadBalancer
  selector: {app: front}
  ports: [{port: 80}]
""")
    await cluster.wait_for(lambda: _find(cluster, "front", "IPAllocated", "Service") is not None, 10,
                           "the IPAllocated event")
    ip = cluster.get("svc", "front").status.load_balancer.ingress[0].ip
    assert _find(cluster, "front", "IPAllocated", "Service").message == f'Assigned IP ["{ip}"]'
    text = describe(cluster, "svc", ["front"], None)
    assert text[text.index("Events:"):].splitlines()[3].split()[:2] == ["Normal", "IPAllocated"]


async def test_the_cap_keeps_the_newest_events(cluster):
    await cluster.wait_for(lambda: any(e.reason == "Started" for e in cluster.store.list("Event")), 10,
                           "the cluster DNS to have started (its events come first)")
    recorder = events.recorder(cluster.store)  # the cluster's own: the cap counts every event
    recorder.max_events = 5
    pod = k8s.Pod(metadata=k8s.ObjectMeta(name="ghost", namespace="default", uid="u-1"))
    for i in range(12):
        recorder.warning(pod, "Test", f"message {i}", component="test")
    await cluster.store.settled()
    assert len(recorder) == 5 and cluster.store.count("Event") == 5
    mine = [e.message for e in cluster.store.list("Event", "default") if e.involved_object.name == "ghost"]
    assert mine and set(mine) <= {f"message {i}" for i in range(7, 12)}
    assert "message 11" in mine
    for _ in range(3):  # a repeat bumps the count, it adds nothing
        again = recorder.warning(pod, "Test", "message 11", component="test")
    await cluster.store.settled()
    assert again.count == 4 and cluster.store.count("Event") == 5


async def test_events_older_than_the_ttl_expire(cluster):
    recorder = events.recorder(cluster.store)
    pod = k8s.Pod(metadata=k8s.ObjectMeta(name="old", namespace="default", uid="u-2"))
    first = recorder.normal(pod, "Test", "first", component="test")
    recorder.ttl = 0.0
    recorder.expire()
    await cluster.store.settled()
    assert cluster.store.get("Event", "default", first.metadata.name) is None
    assert len(recorder) == cluster.store.count("Event")  # the cluster's own events may come after


async def test_netemu_describe_pod_ends_with_the_events(cluster):
    await cluster.apply(NGINX_POD)
    await cluster.wait_for(lambda: "Started" in _reasons(cluster, "web"), 10, "the Started event")
    text = describe(cluster, "pod", ["web"], None)
    section = text[text.index("Events:"):].splitlines()
    assert section[1].split() == ["Type", "Reason", "Age", "From", "Message"]
    assert section[2].split() == ["----", "------", "----", "----", "-------"]
    assert [line.split()[1] for line in section[3:]] == ["Scheduled", "Pulled", "Created", "Started"]
    assert section[6].split()[3:] == ["kubelet", "Started", "container", "nginx"]
    table = printers.render_table("events", cluster.list("Event", "default"),
                                  now=datetime.datetime.now(datetime.timezone.utc))
    assert table.splitlines()[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert any(line.split()[1:4] == ["Normal", "Started", "pod/web"] for line in table.splitlines()[1:])


@pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")
def test_kubectl_get_events_and_describe_pod_show_them(tmp_path_factory, tmp_path):
    with cluster_with_api(tmp_path_factory.mktemp("state"), "events") as api:
        env = dict(os.environ, KUBECONFIG=str(api.cluster.state.directory / KUBECONFIG), HOME=str(tmp_path))

        def kubectl(*args: str) -> str:
            result = subprocess.run([KUBECTL, *args], env=env, capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            return result.stdout

        kubectl("run", "web", "--image=nginx")
        kubectl("wait", "--for=condition=Ready", "pod/web", "--timeout=30s")
        out = kubectl("get", "events", "--field-selector", "involvedObject.name=web")
        lines = out.splitlines()
        assert lines[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
        assert {line.split()[2] for line in lines[1:]} >= {"Scheduled", "Pulled", "Created", "Started"}
        described = kubectl("describe", "pod", "web")
        section = described[described.index("Events:"):]
        assert "Successfully assigned default/web to" in section
        assert "Started container web" in section


async def test_deleting_a_pod_records_killing_for_its_containers(cluster):
    await cluster.apply("""
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: nginx, image: nginx}]
""")
    await cluster.wait_for(lambda: "Started" in _reasons(cluster, "web"), 10, "the Started event")
    uid = cluster.get("pod", "web").metadata.uid
    await cluster.delete("pod", "web")

    def killing() -> list[k8s.Event]:
        return [e for e in cluster.store.list("Event", "default")
                if e.involved_object.uid == uid and e.reason == "Killing"]

    await cluster.wait_for(lambda: bool(killing()), 10, "the Killing event")
    assert killing()[0].message == "Stopping container nginx"
    assert killing()[0].involved_object.field_path == "spec.containers{nginx}"
