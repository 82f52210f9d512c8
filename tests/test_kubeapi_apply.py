"""Server-side apply, managed fields, fieldValidation and ``kubectl diff`` with the real kubectl
(and the official Python client) against a netemu cluster's Kubernetes API."""
from __future__ import annotations

import json
import os

import pytest
import yaml

from kubeapi_support import KUBECTL, api_fixtures
from netemu.kubeapi import KUBECONFIG

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")


api, kubectl, namespace = api_fixtures("kubeapply")


def deployment(replicas: int = 1, image: str = "nginx", ports: tuple[int, ...] = (80,),
               labels: dict | None = None) -> str:
    container = {"name": "web", "image": image, "ports": [{"containerPort": p} for p in ports]}
    return yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": labels or {"app": "web"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [container]}}}})


def config_map(data: dict, name: str = "settings") -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})


def managed(kubectl, namespace: str, resource: str) -> list[dict]:
    out = kubectl("get", resource, "-n", namespace, "-o", "json", "--show-managed-fields").stdout
    return json.loads(out)["metadata"]["managedFields"]


def by_manager(entries: list[dict]) -> dict[str, dict]:
    return {e["manager"]: e for e in entries}


def test_server_side_apply_creates_then_updates(kubectl, api, namespace):
    created = kubectl("apply", "--server-side", "-v=6", "-n", namespace, "-f", "-", input=deployment(replicas=1))
    assert created.stdout.strip() == "deployment.apps/web serverside-applied"
    # kube-apiserver answers an apply that creates with 201, one that updates with 200
    assert "PATCH" in created.stderr and "201 Created" in created.stderr
    entry = by_manager(managed(kubectl, namespace, "deploy/web"))["kubectl"]
    assert entry["operation"] == "Apply" and entry["apiVersion"] == "apps/v1" and entry["fieldsType"] == "FieldsV1"
    container = entry["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']
    assert container == {".": {}, "f:image": {}, "f:name": {},
                         "f:ports": {'k:{"containerPort":80,"protocol":"TCP"}': {".": {}, "f:containerPort": {}}}}
    uid = api.cluster.get("Deployment", "web", namespace).metadata.uid
    updated = kubectl("apply", "--server-side", "-v=6", "-n", namespace, "-f", "-",
                      input=deployment(replicas=3, image="nginx:1.27"))
    assert "200 OK" in updated.stderr and "201 Created" not in updated.stderr
    live = api.cluster.get("Deployment", "web", namespace)
    assert live.metadata.uid == uid and live.spec.replicas == 3
    assert [c.image for c in live.spec.template.spec.containers] == ["nginx:1.27"]
    # managed fields stay out of kubectl's ordinary output
    assert "managedFields" not in kubectl("get", "deploy/web", "-n", namespace, "-o", "yaml").stdout


def test_fields_the_applier_stops_sending_are_removed(kubectl, api, namespace):
    kubectl("apply", "--server-side", "-n", namespace, "-f", "-",
            input=deployment(ports=(80, 8080), labels={"app": "web", "tier": "front"}))
    kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=deployment(ports=(80,)))
    live = api.cluster.get("Deployment", "web", namespace)
    assert live.metadata.labels == {"app": "web"}
    assert [p.container_port for p in live.spec.template.spec.containers[0].ports] == [80]
    kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=config_map({"a": "1", "b": "2"}))
    kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=config_map({"a": "1"}))
    assert api.cluster.get("ConfigMap", "settings", namespace).data == {"a": "1"}


def test_conflict_with_client_side_apply_then_force(kubectl, api, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=deployment(replicas=2))
    refused = kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=deployment(replicas=4), check=False)
    assert refused.returncode == 1
    assert ('Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using apps/v1: .spec.replicas'
            in refused.stderr)
    assert api.cluster.get("Deployment", "web", namespace).spec.replicas == 2
    kubectl("apply", "--server-side", "--force-conflicts", "-n", namespace, "-f", "-", input=deployment(replicas=4))
    assert api.cluster.get("Deployment", "web", namespace).spec.replicas == 4
    # kubectl then moves what its client-side apply owned to its server-side manager (csaupgrade)
    entries = by_manager(managed(kubectl, namespace, "deploy/web"))
    assert "kubectl-client-side-apply" not in entries
    assert entries["kubectl"]["operation"] == "Apply" and "f:replicas" in entries["kubectl"]["fieldsV1"]["f:spec"]
    live = api.cluster.get("Deployment", "web", namespace)
    assert live.spec.replicas == 4 and [c.name for c in live.spec.template.spec.containers] == ["web"]


def test_conflict_status_names_the_field(kubectl, api, namespace):
    """The 409 Status itself: reason Conflict, a FieldManagerConflict cause per field."""
    kubectl("apply", "--server-side", "--field-manager=first", "-n", namespace, "-f", "-",
            input=config_map({"a": "1", "b": "2"}))
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
                       "data": {"a": "x", "b": "y"}})
    result = kubectl("apply", "--server-side", "--field-manager=second", "-n", namespace, "-f", "-", "-v=8",
                     input=body, check=False)
    assert result.returncode == 1
    assert ('Apply failed with 2 conflicts: conflicts with "first":\n- .data.a\n- .data.b'
            in result.stderr.replace("\\n", "\n"))
    assert '"reason":"FieldManagerConflict"' in result.stderr.replace(" ", "")


def test_two_managers_co_own_a_field(kubectl, api, namespace):
    kubectl("apply", "--server-side", "--field-manager=alice", "-n", namespace, "-f", "-",
            input=config_map({"shared": "1", "mine": "a"}))
    kubectl("apply", "--server-side", "--field-manager=bob", "-n", namespace, "-f", "-",
            input=config_map({"shared": "1"}))
    entries = by_manager(managed(kubectl, namespace, "cm/settings"))
    assert entries["alice"]["fieldsV1"] == {"f:data": {"f:mine": {}, "f:shared": {}}}
    assert entries["bob"]["fieldsV1"] == {"f:data": {"f:shared": {}}}
    kubectl("apply", "--server-side", "--field-manager=alice", "-n", namespace, "-f", "-",
            input=config_map({"mine": "a"}))
    assert api.cluster.get("ConfigMap", "settings", namespace).data == {"mine": "a", "shared": "1"}  # bob's still
    shown = kubectl("get", "cm/settings", "-n", namespace, "-o", "yaml", "--show-managed-fields").stdout
    assert "manager: alice" in shown and "manager: bob" in shown and "operation: Apply" in shown


def test_scale_takes_replicas_then_apply_conflicts(kubectl, api, namespace):
    kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=deployment(replicas=1))
    kubectl("scale", "deploy/web", "-n", namespace, "--replicas=2")
    refused = kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=deployment(replicas=1), check=False)
    assert refused.returncode == 1
    assert 'conflict with "kubectl" with subresource "scale" using apps/v1: .spec.replicas' in refused.stderr
    kubectl("apply", "--server-side", "--force-conflicts", "-n", namespace, "-f", "-", input=deployment(replicas=1))
    assert api.cluster.get("Deployment", "web", namespace).spec.replicas == 1


def test_server_side_dry_run_stores_nothing(kubectl, api, namespace):
    result = kubectl("apply", "--server-side", "--dry-run=server", "-n", namespace, "-f", "-",
                     input=config_map({"a": "1"}))
    assert result.stdout.strip() == "configmap/settings serverside-applied (server dry run)"
    assert api.cluster.store.get("ConfigMap", namespace, "settings") is None


def test_diff_is_clean_for_a_match_and_shows_a_change(kubectl, namespace):
    new = kubectl("diff", "-n", namespace, "-f", "-", input=config_map({"a": "1"}), check=False)
    assert new.returncode == 1, new.stderr
    added = [line for line in new.stdout.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert "+  a: \"1\"" in added and not any("generation" in line for line in added)
    kubectl("apply", "-n", namespace, "-f", "-", input=config_map({"a": "1"}))
    same = kubectl("diff", "-n", namespace, "-f", "-", input=config_map({"a": "1"}), check=False)
    assert (same.returncode, same.stdout, same.stderr) == (0, "", "")
    changed = kubectl("diff", "-n", namespace, "-f", "-", input=config_map({"a": "2"}), check=False)
    assert changed.returncode == 1
    assert '-  a: "1"' in changed.stdout and '+  a: "2"' in changed.stdout
    assert "managedFields" not in changed.stdout and "generation" not in changed.stdout


def test_diff_of_a_deployment_after_server_side_apply_is_clean(kubectl, namespace):
    kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=deployment())
    same = kubectl("diff", "--server-side", "-n", namespace, "-f", "-", input=deployment(), check=False)
    assert (same.returncode, same.stdout) == (0, "")


TYPO = """apiVersion: v1
kind: ConfigMap
metadata:
  name: typo
data:
  a: "1"
extra: field
"""


def test_validate_warn_applies_and_prints_the_warning(kubectl, api, namespace):
    result = kubectl("apply", "--validate=warn", "-n", namespace, "-f", "-", input=TYPO)
    assert result.stdout.strip() == "configmap/typo created"
    assert 'Warning: unknown field "extra"' in result.stderr
    assert api.cluster.get("ConfigMap", "typo", namespace).data == {"a": "1"}


def test_validate_false_applies_silently(kubectl, api, namespace):
    result = kubectl("apply", "--validate=false", "-n", namespace, "-f", "-", input=TYPO.replace("typo", "quiet"))
    assert result.stdout.strip() == "configmap/quiet created" and result.stderr == ""
    assert api.cluster.get("ConfigMap", "quiet", namespace).data == {"a": "1"}


def test_validate_strict_refuses(kubectl, api, namespace):
    result = kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=TYPO, check=False)
    assert result.returncode == 1 and 'unknown field "extra"' in result.stderr
    assert api.cluster.store.get("ConfigMap", namespace, "typo") is None


def test_ordinary_writes_record_their_managers(kubectl, namespace):
    kubectl("create", "configmap", "made", "-n", namespace, "--from-literal=a=1")
    kubectl("label", "cm/made", "-n", namespace, "tier=x")
    entries = by_manager(managed(kubectl, namespace, "cm/made"))
    assert entries["kubectl-create"]["operation"] == "Update"
    assert entries["kubectl-create"]["fieldsV1"] == {"f:data": {".": {}, "f:a": {}}}
    assert entries["kubectl-label"]["fieldsV1"] == {"f:metadata": {"f:labels": {".": {}, "f:tier": {}}}}


def test_python_client_applies_with_the_apply_content_type(api, namespace):
    kubernetes = pytest.importorskip("kubernetes")
    client = kubernetes.config.new_client_from_config(str(api.cluster.state.directory / KUBECONFIG))
    try:
        core = kubernetes.client.CoreV1Api(client)
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "from-python"}, "data": {"k": "v"}}
        made = core.patch_namespaced_config_map("from-python", namespace, body, field_manager="python",
                                                _content_type="application/apply-patch+yaml")
        assert made.data == {"k": "v"}
        assert [(m.manager, m.operation) for m in made.metadata.managed_fields] == [("python", "Apply")]
        with pytest.raises(kubernetes.client.ApiException) as missing:
            core.patch_namespaced_config_map("from-python", namespace, body,
                                             _content_type="application/apply-patch+yaml")
        assert missing.value.status == 422
        assert json.loads(missing.value.body)["message"] == \
            'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch'
    finally:
        client.close()
