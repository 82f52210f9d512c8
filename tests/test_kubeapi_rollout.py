"""ReplicaSets and rollouts through the real kubectl: ``get rs``, ``rollout status|history|undo|
restart``, cascading deletion, and a standalone ReplicaSet manifest.

One cluster for the module (netemu's pytest plugin); kubectl reads the cluster's own kubeconfig
from its state directory under the test's tmp dir. Each test works in a namespace of its own.
"""
from __future__ import annotations

import json
import os
from typing import Any

import pytest

from kubeapi_support import KUBECTL, api_fixtures, poll


pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")

WEB = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: nginx, image: "nginx:1.25"}]
"""


api, kubectl, namespace = api_fixtures("rollout")


def items(kubectl, kind: str, namespace: str, *selector: str) -> list[dict[str, Any]]:
    return json.loads(kubectl("get", kind, "-n", namespace, *selector, "-o", "json").stdout)["items"]


def replica_sets(kubectl, namespace: str) -> dict[str, dict[str, Any]]:
    """name → ReplicaSet."""
    return {rs["metadata"]["name"]: rs for rs in items(kubectl, "rs", namespace)}


def revision(obj: dict[str, Any]) -> str:
    return obj["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision", "")


def pod_hashes(kubectl, namespace: str) -> set[str]:
    """The pod-template-hash of every pod not being deleted."""
    return {p["metadata"]["labels"]["pod-template-hash"] for p in items(kubectl, "pods", namespace)
            if not p["metadata"].get("deletionTimestamp")}


def rolled_out(kubectl, namespace: str) -> None:
    kubectl("rollout", "status", "deployment/web", "-n", namespace, "--timeout=60s")


def test_get_rs_shows_the_deployments_replica_set(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=WEB)
    rolled_out(kubectl, namespace)
    (name,) = replica_sets(kubectl, namespace)
    lines = kubectl("get", "rs", "-n", namespace).stdout.splitlines()
    assert lines[0].split() == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
    assert lines[1].split()[:4] == [name, "2", "2", "2"]
    wide = kubectl("get", "replicasets", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[5:] == ["CONTAINERS", "IMAGES", "SELECTOR"]
    pod_hash = name.removeprefix("web-")
    assert wide[1].split()[5:] == ["nginx", "nginx:1.25", f"app=web,pod-template-hash={pod_hash}"]
    rs = replica_sets(kubectl, namespace)[name]
    assert rs["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] == "2"
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"] == "3"
    assert revision(rs) == "1"
    assert revision(items(kubectl, "deploy", namespace)[0]) == "1"
    assert rs["status"] == {"replicas": 2, "fullyLabeledReplicas": 2, "readyReplicas": 2,
                            "availableReplicas": 2, "observedGeneration": 1}
    for pod in items(kubectl, "pods", namespace):
        (ref,) = pod["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"]) == ("ReplicaSet", name, rs["metadata"]["uid"])
    every = kubectl("get", "all", "-n", namespace).stdout
    assert f"replicaset.apps/{name}" in every
    described = kubectl("describe", "deployment", "web", "-n", namespace).stdout
    assert f"NewReplicaSet:   {name} (2/2 replicas created)" in described


def test_update_history_undo_and_restart(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=WEB)
    rolled_out(kubectl, namespace)
    (first,) = replica_sets(kubectl, namespace)
    first_hash = first.removeprefix("web-")
    kubectl("set", "image", "deployment/web", "nginx=nginx:1.26", "-n", namespace)
    kubectl("annotate", "deployment/web", "kubernetes.io/change-cause=image 1.26", "-n", namespace)
    rolled_out(kubectl, namespace)
    sets = poll(lambda: (s := replica_sets(kubectl, namespace)) and len(s) == 2 and all(
        "kubernetes.io/change-cause" in r["metadata"].get("annotations", {}) or n == first for n, r in s.items())
        and s, "the second ReplicaSet with the change cause")
    (second,) = set(sets) - {first}
    assert sets[first]["spec"]["replicas"] == 0 and sets[second]["spec"]["replicas"] == 2
    assert (revision(sets[first]), revision(sets[second])) == ("1", "2")
    assert pod_hashes(kubectl, namespace) == {second.removeprefix("web-")}

    history = kubectl("rollout", "history", "deployment/web", "-n", namespace).stdout.splitlines()
    assert history[0] == "deployment.apps/web "
    assert history[1].split() == ["REVISION", "CHANGE-CAUSE"]
    assert history[2].split() == ["1", "<none>"]
    assert history[3].split(None, 1) == ["2", "image 1.26"]
    detail = kubectl("rollout", "history", "deployment/web", "-n", namespace, "--revision=1").stdout
    assert "nginx:1.25" in detail and f"pod-template-hash={first_hash}" in detail

    assert "rolled back" in kubectl("rollout", "undo", "deployment/web", "-n", namespace).stdout
    rolled_out(kubectl, namespace)
    poll(lambda: pod_hashes(kubectl, namespace) == {first_hash}, "pods of the first template again")
    sets = replica_sets(kubectl, namespace)
    assert (revision(sets[first]), revision(sets[second])) == ("3", "2")
    assert sets[first]["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "1"
    deployment = items(kubectl, "deploy", namespace)[0]
    assert revision(deployment) == "3"
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.25"
    history = kubectl("rollout", "history", "deployment/web", "-n", namespace).stdout.splitlines()
    assert [line.split()[0] for line in history[2:] if line.strip()] == ["2", "3"]

    kubectl("rollout", "undo", "deployment/web", "-n", namespace, "--to-revision=2")
    rolled_out(kubectl, namespace)
    poll(lambda: pod_hashes(kubectl, namespace) == {second.removeprefix("web-")}, "pods of revision 2 again")
    assert revision(replica_sets(kubectl, namespace)[second]) == "4"

    kubectl("rollout", "restart", "deployment/web", "-n", namespace)
    rolled_out(kubectl, namespace)
    sets = poll(lambda: (s := replica_sets(kubectl, namespace)) and len(s) == 3 and s, "a third ReplicaSet")
    (third,) = set(sets) - {first, second}
    assert revision(sets[third]) == "5" and sets[third]["spec"]["replicas"] == 2
    assert "kubectl.kubernetes.io/restartedAt" in sets[third]["spec"]["template"]["metadata"]["annotations"]
    poll(lambda: pod_hashes(kubectl, namespace) == {third.removeprefix("web-")}, "restarted pods")


def test_revision_history_limit_keeps_that_many_old_replica_sets(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=WEB)
    kubectl("patch", "deployment/web", "-n", namespace, "-p", '{"spec": {"revisionHistoryLimit": 1}}')
    for image in ("nginx:1.26", "nginx:1.27"):
        rolled_out(kubectl, namespace)
        kubectl("set", "image", "deployment/web", f"nginx={image}", "-n", namespace)
    rolled_out(kubectl, namespace)
    sets = poll(lambda: (s := replica_sets(kubectl, namespace)) and len(s) == 2 and s, "the oldest to go")
    assert sorted(revision(rs) for rs in sets.values()) == ["2", "3"]


def test_deleting_the_deployment_deletes_its_replica_sets_and_pods(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=WEB)
    rolled_out(kubectl, namespace)
    kubectl("delete", "deployment", "web", "-n", namespace)
    poll(lambda: not replica_sets(kubectl, namespace), "the ReplicaSets to go")
    poll(lambda: not items(kubectl, "pods", namespace), "the pods to go")


STANDALONE = """
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: frontend
  labels: {tier: frontend}
spec:
  replicas: 3
  selector: {matchLabels: {tier: frontend}}
  template:
    metadata: {labels: {tier: frontend}}
    spec:
      containers: [{name: php-redis, image: "nginx"}]
"""


def test_a_standalone_replica_set_owns_scales_and_takes_its_pods_along(kubectl, namespace):
    assert kubectl("apply", "-n", namespace, "-f", "-", input=STANDALONE).stdout.strip() == \
        "replicaset.apps/frontend created"
    poll(lambda: replica_sets(kubectl, namespace)["frontend"]["status"].get("readyReplicas") == 3, "3 ready pods")
    rs = replica_sets(kubectl, namespace)["frontend"]
    pods = items(kubectl, "pods", namespace)
    assert len(pods) == 3
    for pod in pods:
        assert pod["metadata"]["name"].startswith("frontend-")
        assert pod["metadata"]["ownerReferences"] == [{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "frontend", "uid": rs["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}]
    described = kubectl("describe", "rs", "frontend", "-n", namespace).stdout
    assert "Replicas:     3 current / 3 desired" in described
    assert "Pods Status:  3 Running / 0 Waiting / 0 Succeeded / 0 Failed" in described
    assert "SuccessfulCreate" in described

    kubectl("scale", "rs/frontend", "--replicas=1", "-n", namespace)
    poll(lambda: len([p for p in items(kubectl, "pods", namespace)
                      if not p["metadata"].get("deletionTimestamp")]) == 1, "a scale-down to 1")
    victim = items(kubectl, "pods", namespace)[0]["metadata"]["name"]
    kubectl("delete", "pod", victim, "-n", namespace, "--wait=false")
    poll(lambda: {p["metadata"]["name"] for p in items(kubectl, "pods", namespace)
                  if not p["metadata"].get("deletionTimestamp")} - {victim}, "a replacement pod")

    kubectl("delete", "rs", "frontend", "-n", namespace)
    poll(lambda: not items(kubectl, "pods", namespace), "the pods to go with their ReplicaSet")


def test_replica_set_validation_speaks_the_api_servers_words(kubectl, namespace):
    bad = STANDALONE.replace("template:\n    metadata: {labels: {tier: frontend}}",
                             "template:\n    metadata: {labels: {tier: backend}}")
    result = kubectl("apply", "-n", namespace, "-f", "-", input=bad, check=False)
    assert result.returncode == 1
    assert 'The ReplicaSet "frontend" is invalid: spec.template.metadata.labels: Invalid value: ' in result.stderr
    assert "`selector` does not match template `labels`" in result.stderr


def test_a_paused_deployment_rolls_out_on_resume(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=WEB)
    rolled_out(kubectl, namespace)
    kubectl("rollout", "pause", "deployment/web", "-n", namespace)
    kubectl("set", "image", "deployment/web", "nginx=nginx:1.26", "-n", namespace)

    def observed() -> bool:
        d = items(kubectl, "deploy", namespace)[0]
        return d["status"].get("observedGeneration") == d["metadata"]["generation"]
    poll(observed, "the paused change to be observed")
    assert len(replica_sets(kubectl, namespace)) == 1
    kubectl("rollout", "resume", "deployment/web", "-n", namespace)
    rolled_out(kubectl, namespace)
    sets = replica_sets(kubectl, namespace)
    assert len(sets) == 2 and sorted(revision(rs) for rs in sets.values()) == ["1", "2"]
