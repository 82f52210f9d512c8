"""DELETE through the Kubernetes API: the real kubectl (``-l``, ``--all``, ``--grace-period``/``--force``,
``--cascade``, ``wait --for=delete``, namespaces) and the official Python client where kubectl cannot
say it (DELETE of a collection, preconditions, the responses' bodies)."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from kubeapi_support import KUBECTL, api_fixtures, namespace_for
from netemu.kubeapi import KUBECONFIG

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")

# A container that ignores SIGTERM: its pod stays Terminating for its whole grace period.
# Ignores SIGTERM once it says so: wait for "trapped" in its log (``_stubborn``) before deleting it.
STUBBORN = ["sh", "-c", "trap '' TERM; echo trapped; while true; do sleep 1; done"]


api, kubectl, namespace = api_fixtures("kubedelete")


@pytest.fixture(scope="module")
def api_client(api):
    with config.new_client_from_config(config_file=str(api.cluster.state.directory / KUBECONFIG)) as c:
        yield c


@pytest.fixture
def core(api_client):
    return client.CoreV1Api(api_client)


@pytest.fixture
def apps(api_client):
    return client.AppsV1Api(api_client)


def _pod(name: str, labels: dict[str, str], command: list[str] | None = None, grace: int | None = None) -> dict:
    container: dict = {"name": "c", "image": "busybox", "command": command or ["sleep", "3600"]}
    spec: dict = {"containers": [container]}
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec}


def _deployment(name: str, replicas: int = 2) -> dict:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}


def _get(api, kind: str, namespace: str, name: str):
    return api.call(api.cluster.store.get, kind, namespace, name)


def _pods(api, namespace: str) -> list:
    return api.call(api.cluster.store.list, "Pod", namespace)


def _wait(api, condition, timeout: float = 30) -> None:
    api.run(api.cluster.wait_for(condition, timeout))


def _stubborn(api, namespace: str, name: str) -> bool:
    """The STUBBORN pod runs and ignores SIGTERM already (before its trap, SIGTERM ends it)."""
    pod = api.cluster.store.get("Pod", namespace, name)
    if pod is None or pod.status.phase != "Running":
        return False
    path = api.cluster.log_path(name, None, namespace)
    return path.exists() and b"trapped" in path.read_bytes()


def _running_deployment(api, apps, namespace: str, name: str, replicas: int = 2) -> list:
    apps.create_namespaced_deployment(namespace, _deployment(name, replicas))
    _wait(api, lambda: sum(p.status.phase == "Running" for p in api.cluster.store.list("Pod", namespace))
          == replicas)
    return _pods(api, namespace)


def test_kubectl_delete_by_label_then_all(kubectl, core, api, namespace):
    for name, app in (("a", "x"), ("b", "x"), ("c", "y")):
        core.create_namespaced_pod(namespace, _pod(name, {"app": app}))
    out = kubectl("delete", "pods", "-n", namespace, "-l", "app=x").stdout.splitlines()
    assert out == ['pod "a" deleted', 'pod "b" deleted']
    assert [p.metadata.name for p in _pods(api, namespace)] == ["c"]
    assert kubectl("delete", "pods", "-n", namespace, "--all").stdout.splitlines() == ['pod "c" deleted']
    assert _pods(api, namespace) == []
    assert kubectl("delete", "pods", "-n", namespace, "--all").stdout.strip() == "No resources found"


def test_graceful_delete_answers_the_terminating_pod(core, api, namespace):
    core.create_namespaced_pod(namespace, _pod("slow", {"app": "s"}, STUBBORN, grace=600))
    _wait(api, lambda: _stubborn(api, namespace, "slow"))
    answered = core.delete_namespaced_pod("slow", namespace, grace_period_seconds=120)
    assert answered.metadata.deletion_timestamp is not None
    assert answered.metadata.deletion_grace_period_seconds == 120
    live = _get(api, "Pod", namespace, "slow")
    assert live is not None and live.metadata.deletion_grace_period_seconds == 120  # Terminating
    shorter = core.delete_namespaced_pod("slow", namespace, grace_period_seconds=60)
    assert shorter.metadata.deletion_grace_period_seconds == 60  # a later delete may only shorten it
    longer = core.delete_namespaced_pod("slow", namespace, grace_period_seconds=300)
    assert longer.metadata.deletion_grace_period_seconds == 60
    core.delete_namespaced_pod("slow", namespace, grace_period_seconds=0)
    assert _get(api, "Pod", namespace, "slow") is None


def test_force_delete_with_grace_period_zero_removes_at_once(kubectl, core, api, namespace):
    core.create_namespaced_pod(namespace, _pod("stuck", {"app": "s"}, STUBBORN, grace=600))
    _wait(api, lambda: _stubborn(api, namespace, "stuck"))
    kubectl("delete", "pod", "stuck", "-n", namespace, "--wait=false")  # 600 s of grace: Terminating
    assert _get(api, "Pod", namespace, "stuck").metadata.deletion_timestamp is not None
    assert "Terminating" in kubectl("get", "pod", "stuck", "-n", namespace).stdout
    result = kubectl("delete", "pod", "stuck", "-n", namespace, "--force", "--grace-period=0")
    assert result.stdout.strip() == 'pod "stuck" force deleted'
    assert "Immediate deletion does not wait" in result.stderr
    assert _get(api, "Pod", namespace, "stuck") is None


def test_grace_period_query_parameter_is_read(api, core, namespace):
    core.create_namespaced_pod(namespace, _pod("q", {"app": "q"}, STUBBORN, grace=600))
    _wait(api, lambda: _stubborn(api, namespace, "q"))
    directory = api.cluster.state.directory
    url = f"{api.cluster.kube_api.url}/api/v1/namespaces/{namespace}/pods/q?gracePeriodSeconds=0"
    result = subprocess.run(["curl", "-sS", "-X", "DELETE", "--cacert", str(directory / "ca.crt"),
                             "-H", f"Authorization: Bearer {(directory / 'token').read_text()}", url],
                            capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(result.stdout)["metadata"]["name"] == "q"  # a pod's answer is the pod
    assert _get(api, "Pod", namespace, "q") is None


def test_cascade_orphan_keeps_the_replicaset_without_its_owner(kubectl, apps, api, namespace):
    before = _running_deployment(api, apps, namespace, "keep")
    result = kubectl("delete", "deployment", "keep", "-n", namespace, "--cascade=orphan")
    assert result.stdout.strip() == 'deployment.apps "keep" deleted'
    assert _get(api, "Deployment", namespace, "keep") is None
    (replica_set,) = api.call(api.cluster.store.list, "ReplicaSet", namespace)
    assert replica_set.metadata.owner_references == () and replica_set.metadata.deletion_timestamp is None
    api.run(api.cluster.store.settled())
    after = _pods(api, namespace)  # the ReplicaSet's pods, untouched
    assert sorted(p.metadata.uid for p in after) == sorted(p.metadata.uid for p in before)
    assert all(p.metadata.deletion_timestamp is None for p in after)
    assert all(p.metadata.owner_references[0].uid == replica_set.metadata.uid for p in after)


def test_cascade_background_deletes_the_owner_first(kubectl, apps, api, namespace):
    _running_deployment(api, apps, namespace, "bg")
    kubectl("delete", "deployment", "bg", "-n", namespace, "--cascade=background", "--wait=false")
    assert _get(api, "Deployment", namespace, "bg") is None
    _wait(api, lambda: api.cluster.store.list("Pod", namespace) == [])


def test_cascade_foreground_keeps_the_owner_until_its_pods_are_gone(kubectl, apps, api, namespace):
    before = _running_deployment(api, apps, namespace, "fg")
    raw = apps.delete_namespaced_deployment("fg", namespace, propagation_policy="Foreground", _preload_content=False)
    # The answer is the Deployment as it is now: marked, with the finalizer, while its pods go.
    answered = json.loads(raw.data)
    assert answered["kind"] == "Deployment" and answered["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert answered["metadata"]["deletionTimestamp"]
    _wait(api, lambda: api.cluster.store.get("Deployment", namespace, "fg") is None)
    # Its ReplicaSet and every pod went first, and no replacement was made.
    assert _pods(api, namespace) == [] and api.call(api.cluster.store.list, "ReplicaSet", namespace) == []
    seen = {e.involved_object.uid for e in client.CoreV1Api(apps.api_client).list_namespaced_event(namespace).items
            if e.involved_object.kind == "Pod"}
    assert seen <= {p.metadata.uid for p in before}


def test_kubectl_cascade_foreground_waits_for_everything(kubectl, apps, api, namespace):
    _running_deployment(api, apps, namespace, "fgk")
    result = kubectl("delete", "deployment", "fgk", "-n", namespace, "--cascade=foreground")
    assert result.stdout.strip() == 'deployment.apps "fgk" deleted'
    assert _get(api, "Deployment", namespace, "fgk") is None and _pods(api, namespace) == []


def test_preconditions_that_do_not_hold_are_a_409(core, api, namespace):
    core.create_namespaced_config_map(namespace, {"apiVersion": "v1", "kind": "ConfigMap",
                                                  "metadata": {"name": "cm"}, "data": {"k": "v"}})
    live = core.read_namespaced_config_map("cm", namespace)
    with pytest.raises(ApiException) as wrong_uid:
        core.delete_namespaced_config_map("cm", namespace, body=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(uid="00000000-0000-0000-0000-000000000000")))
    status = json.loads(wrong_uid.value.body)
    assert wrong_uid.value.status == 409 and status["reason"] == "Conflict"
    assert status["message"] == (
        f'Operation cannot be fulfilled on ConfigMap "cm": the UID in the precondition '
        f"(00000000-0000-0000-0000-000000000000) does not match the UID in record ({live.metadata.uid}). "
        "The object might have been deleted and then recreated")
    with pytest.raises(ApiException) as stale:
        core.delete_namespaced_config_map("cm", namespace, body=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(resource_version="1")))
    assert stale.value.status == 409 and "The object might have been modified" in json.loads(stale.value.body)["message"]
    assert _get(api, "ConfigMap", namespace, "cm") is not None
    done = core.delete_namespaced_config_map("cm", namespace, body=client.V1DeleteOptions(
        preconditions=client.V1Preconditions(uid=live.metadata.uid, resource_version=live.metadata.resource_version)))
    assert done["status"] == "Success"  # an immediate delete answers a Status naming what went
    assert done["details"] == {"name": "cm", "kind": "configmaps", "uid": live.metadata.uid}
    assert _get(api, "ConfigMap", namespace, "cm") is None


def test_unsupported_propagation_policy_is_invalid(core, namespace):
    core.create_namespaced_config_map(namespace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "p"}})
    with pytest.raises(ApiException) as caught:
        core.delete_namespaced_config_map("p", namespace, propagation_policy="Sideways")
    status = json.loads(caught.value.body)
    assert caught.value.status == 422 and status["reason"] == "Invalid"
    assert status["details"]["causes"][0]["field"] == "propagationPolicy"
    assert status["message"].startswith('DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: '
                                        'Unsupported value: "Sideways"')


def test_delete_collection_by_label_and_field_selector(core, api, namespace):
    for name, app in (("a", "x"), ("b", "x"), ("c", "y"), ("d", "y")):
        core.create_namespaced_pod(namespace, _pod(name, {"app": app}))
    raw = core.delete_collection_namespaced_pod(namespace, label_selector="app=x", grace_period_seconds=0,
                                                _preload_content=False)
    answered = json.loads(raw.data)
    assert answered["kind"] == "PodList" and [i["metadata"]["name"] for i in answered["items"]] == ["a", "b"]
    assert [p.metadata.name for p in _pods(api, namespace)] == ["c", "d"]
    raw = core.delete_collection_namespaced_pod(namespace, field_selector="metadata.name=d", grace_period_seconds=0,
                                                _preload_content=False)
    assert [i["metadata"]["name"] for i in json.loads(raw.data)["items"]] == ["d"]
    assert [p.metadata.name for p in _pods(api, namespace)] == ["c"]
    dry = core.delete_collection_namespaced_pod(namespace, dry_run="All", _preload_content=False)
    assert [i["metadata"]["name"] for i in json.loads(dry.data)["items"]] == ["c"]
    assert [p.metadata.name for p in _pods(api, namespace)] == ["c"]


def test_delete_collection_is_in_discovery(core):
    pods = next(r for r in core.get_api_resources().resources if r.name == "pods")
    assert "deletecollection" in pods.verbs
    namespaces = next(r for r in core.get_api_resources().resources if r.name == "namespaces")
    assert "deletecollection" not in namespaces.verbs


def test_kubectl_wait_for_delete(kubectl, core, api, namespace):
    core.create_namespaced_pod(namespace, _pod("w", {"app": "w"}, STUBBORN, grace=3))
    _wait(api, lambda: _stubborn(api, namespace, "w"))
    kubectl("delete", "pod", "w", "-n", namespace, "--wait=false")
    assert _get(api, "Pod", namespace, "w") is not None  # SIGTERM ignored: it lasts its 3 s of grace
    result = kubectl("wait", "--for=delete", "pod/w", "-n", namespace, "--timeout=60s")
    assert result.stdout.strip() == "pod/w condition met"
    assert _get(api, "Pod", namespace, "w") is None


def test_namespace_deletion_takes_its_objects(kubectl, core, apps, api, request):
    namespace = namespace_for(kubectl, request)
    _running_deployment(api, apps, namespace, "web")
    core.create_namespaced_service(namespace, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                                               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
    core.create_namespaced_config_map(namespace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
    core.create_namespaced_pod(namespace, _pod("slow", {"app": "slow"}, STUBBORN, grace=600))  # keeps it Terminating
    _wait(api, lambda: _stubborn(api, namespace, "slow"))
    waiting = subprocess.Popen([KUBECTL, "delete", "namespace", namespace], env=kubectl.env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # waits until it is gone
    try:
        _wait(api, lambda: api.cluster.store.get("Namespace", "", namespace).metadata.deletion_timestamp is not None)
        phase = kubectl("get", "namespace", namespace, "-o", "jsonpath={.status.phase}").stdout
        assert phase == "Terminating"
        refused = kubectl("create", "configmap", "late", "-n", namespace, check=False)
        assert refused.returncode == 1 and "because it is being terminated" in refused.stderr
        assert _get(api, "ConfigMap", namespace, "c") is None  # what can go at once is gone already
        core.delete_namespaced_pod("slow", namespace, grace_period_seconds=0)  # the last content goes
        out, err = waiting.communicate(timeout=60)
    finally:
        waiting.kill()
    assert waiting.returncode == 0, err
    assert out.strip() == f'namespace "{namespace}" deleted'
    assert _get(api, "Namespace", "", namespace) is None
    for kind in ("Deployment", "ReplicaSet", "Pod", "Service", "EndpointSlice", "ConfigMap"):
        assert api.call(api.cluster.store.list, kind, namespace) == [], kind


def test_deleting_a_namespace_answers_it_terminating(core, api, request):
    namespace = request.node.name.removeprefix("test_")[:40].replace("_", "-")
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    core.create_namespaced_pod(namespace, _pod("slow", {"app": "slow"}, STUBBORN, grace=600))
    _wait(api, lambda: _stubborn(api, namespace, "slow"))
    answered = core.delete_namespace(namespace)
    assert answered["status"]["phase"] == "Terminating" and answered["metadata"]["deletionTimestamp"]
    core.delete_namespaced_pod("slow", namespace, grace_period_seconds=0)
    _wait(api, lambda: api.cluster.store.get("Namespace", "", namespace) is None)


def test_a_watch_sends_every_queued_change_at_once(core, namespace):
    """A watch's events are not paced: five changes already made are all sent within a watch that
    the server ends after 2 s (each waited for the next poll turn before)."""
    start = core.list_namespaced_config_map(namespace).metadata.resource_version
    for i in range(5):
        core.create_namespaced_config_map(namespace, {"apiVersion": "v1", "kind": "ConfigMap",
                                                      "metadata": {"name": f"c{i}"}})
    raw = core.list_namespaced_config_map(namespace, watch=True, resource_version=start, timeout_seconds=2,
                                          _preload_content=False)
    events = [json.loads(line) for line in raw.data.decode().splitlines() if line]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", f"c{i}") for i in range(5)]

