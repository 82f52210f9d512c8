"""What clients learn about the API and its types, driven with the real kubectl and the official
Python client: aggregated discovery (one document for ``/api``, one for ``/apis``), OpenAPI v2
and the descriptions ``kubectl explain`` prints, events in ``events.k8s.io/v1``, the ``status``
subresource, and type errors worded as kube-apiserver's decoder words them."""
from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import urllib.error
import urllib.request

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from kubeapi_support import KUBECTL, api_fixtures, api_request, poll
from netemu.kubeapi import KUBECONFIG

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")

AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGGREGATED_V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
OPENAPI_V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"


api, kubectl, namespace = api_fixtures("discovery")


@pytest.fixture(scope="module")
def api_client(api):
    with config.new_client_from_config(config_file=str(api.cluster.state.directory / KUBECONFIG)) as c:
        yield c


def _get(api, path: str, accept: str, *, method: str = "GET", body: dict | None = None,
         content_type: str = "application/json") -> tuple[int, dict[str, str], bytes]:
    return api_request(api, path, accept, method=method, body=body, content_type=content_type)


# ---------------------------------------------------------------------- aggregated discovery


def test_kubectl_discovers_with_two_aggregated_requests(kubectl):
    result = kubectl("api-resources", "-v=8")
    requested = re.findall(r"\] GET https://[^/\s]+(/[^?\s]*)", result.stderr)
    assert requested == ["/api", "/apis"], requested  # no /api/v1, /apis/apps/v1 … one by one
    assert re.search(r"Content-Type: application/json;g=apidiscovery\.k8s\.io;v=v2(beta1)?;as=APIGroupDiscoveryList",
                     result.stderr)


def test_api_resources_prints_what_legacy_discovery_lists(kubectl, api):
    expected = set()
    for path in ("/api/v1", "/apis/apps/v1", "/apis/discovery.k8s.io/v1", "/apis/events.k8s.io/v1"):
        status, _, body = _get(api, path, "application/json")
        assert status == 200
        listing = json.loads(body)
        for r in listing["resources"]:
            if "/" not in r["name"]:
                expected.add((r["name"], ",".join(r.get("shortNames", [])), listing["groupVersion"],
                              str(r["namespaced"]).lower(), r["kind"], ",".join(sorted(r["verbs"]))))
    header, *rows = kubectl("api-resources", "-o", "wide").stdout.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", header)]  # columns are aligned under their headers
    printed = set()
    for row in rows:
        cells = [row[a:b].strip() for a, b in zip(starts, [*starts[1:], None])]
        name, short, version, namespaced, kind, verbs = cells[:6]
        printed.add((name, short, version, namespaced, kind, ",".join(sorted(verbs.strip("[]").split(",")))))
    assert expected <= printed
    assert ("deployments", "deploy", "apps/v1", "true", "Deployment",
            "create,delete,deletecollection,get,list,patch,update,watch") in printed
    assert ("events", "ev", "events.k8s.io/v1", "true", "Event",
            "create,delete,deletecollection,get,list,patch,update,watch") in printed


@pytest.mark.parametrize("accept, version", [(f"{AGGREGATED_V2},{AGGREGATED_V2BETA1},application/json", "v2"),
                                             (f"{AGGREGATED_V2BETA1},application/json", "v2beta1")])
def test_aggregated_document_has_resources_and_subresources(api, accept, version):
    status, headers, body = _get(api, "/apis", accept)
    assert status == 200
    assert headers["Content-Type"] == f"application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"
    doc = json.loads(body)
    assert (doc["kind"], doc["apiVersion"]) == ("APIGroupDiscoveryList", f"apidiscovery.k8s.io/{version}")
    groups = {g["metadata"]["name"]: g for g in doc["items"]}
    assert {"apps", "discovery.k8s.io", "events.k8s.io"} <= set(groups)
    (apps_v1,) = groups["apps"]["versions"]
    assert apps_v1["version"] == "v1" and apps_v1["freshness"] == "Current"
    deployments = next(r for r in apps_v1["resources"] if r["resource"] == "deployments")
    assert deployments["responseKind"] == {"group": "apps", "version": "v1", "kind": "Deployment"}
    assert deployments["scope"] == "Namespaced" and deployments["singularResource"] == "deployment"
    assert deployments["shortNames"] == ["deploy"] and deployments["categories"] == ["all"]
    assert "watch" in deployments["verbs"]
    subresources = {s["subresource"]: s for s in deployments["subresources"]}
    assert subresources["scale"]["responseKind"] == {"group": "autoscaling", "version": "v1", "kind": "Scale"}
    assert subresources["status"] == {"subresource": "status", "verbs": ["get", "patch", "update"],
                                      "responseKind": {"group": "apps", "version": "v1", "kind": "Deployment"}}

    status, _, body = _get(api, "/api", accept)
    (core,) = json.loads(body)["items"]
    pods = next(r for r in core["versions"][0]["resources"] if r["resource"] == "pods")
    assert pods["responseKind"]["group"] == "" and pods["scope"] == "Namespaced"
    assert {"attach", "exec", "log", "portforward", "status"} <= {s["subresource"] for s in pods["subresources"]}
    nodes = next(r for r in core["versions"][0]["resources"] if r["resource"] == "nodes")
    assert nodes["scope"] == "Cluster"


def test_legacy_discovery_for_clients_that_do_not_ask(api):
    for accept in ("application/json, */*", "", f"application/json,{AGGREGATED_V2}"):
        status, headers, body = _get(api, "/apis", accept)
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        assert "g=apidiscovery" not in headers["Content-Type"]
        assert json.loads(body)["kind"] == "APIGroupList"
    status, _, body = _get(api, "/api/v1", "application/json")
    names = {r["name"]: r for r in json.loads(body)["resources"]}
    assert names["pods/status"]["kind"] == "Pod" and names["pods/status"]["verbs"] == ["get", "patch", "update"]
    assert names["services/status"]["kind"] == "Service"


# ---------------------------------------------------------------------- OpenAPI and explain


def test_explain_prints_the_kubernetes_description(kubectl):
    out = kubectl("explain", "deployment.spec.replicas").stdout
    assert "Number of desired pods." in out and "<empty>" not in out
    out = kubectl("explain", "deployment").stdout
    assert "Deployment enables declarative updates for Pods and ReplicaSets." in out
    ignored = kubectl("explain", "pod.spec.affinity").stdout
    assert "netemu does not act on this field" in " ".join(ignored.split())


def test_openapi_v2_through_kubectl_and_jq(kubectl):
    raw = kubectl("get", "--raw", "/openapi/v2").stdout

    def jq(program: str) -> str:
        return subprocess.run(["jq", "-r", program], input=raw, capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()

    assert jq(".swagger") == "2.0"
    assert jq('.definitions["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"][0] '
              '| "\\(.group)/\\(.version) \\(.kind)"') == "apps/v1 Deployment"
    assert jq('.definitions["io.k8s.api.apps.v1.DeploymentSpec"].properties.replicas.description') == \
        "Number of desired pods."
    assert jq('.definitions["io.k8s.api.apps.v1.DeploymentSpec"].properties.template["$ref"]') == \
        "#/definitions/io.k8s.api.core.v1.PodTemplateSpec"
    assert jq('.paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status"].patch.operationId') == \
        "patchAppsV1NamespacedDeploymentStatus"
    assert jq('.definitions["io.k8s.api.events.v1.Event"].properties.note.description') != "null"
    assert jq('[.paths[][] | .operationId] | length == (unique | length)') == "true"


def test_openapi_v2_json_unless_protobuf_is_asked_for(api):
    # protobuf itself: tests/test_kubeapi_openapiv2_proto.py
    status, headers, _ = _get(api, "/openapi/v2", OPENAPI_V2_PROTOBUF)
    assert status == 200 and headers["Content-Type"] == "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    status, headers, body = _get(api, "/openapi/v2", f"{OPENAPI_V2_PROTOBUF};q=0.5,application/json")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["swagger"] == "2.0"
    assert _get(api, "/openapi/v2", "text/html")[0] == 406


# ---------------------------------------------------------------------- events.k8s.io/v1


def test_kubectl_events_and_events_k8s_io(kubectl, namespace, api_client):
    kubectl("create", "deployment", "web", "--image=nginx", "-n", namespace)

    def scaled() -> bool:
        return "ScalingReplicaSet" in kubectl("events", "-n", namespace).stdout
    poll(scaled, "kubectl events to show the deployment's ScalingReplicaSet")
    table = kubectl("get", "events.v1.events.k8s.io", "-n", namespace).stdout
    assert "ScalingReplicaSet" in table and "deployment/web" in table
    items = json.loads(kubectl("get", "events.v1.events.k8s.io", "-n", namespace, "-o", "json").stdout)["items"]
    scaling = next(e for e in items if e["reason"] == "ScalingReplicaSet")
    assert scaling["apiVersion"] == "events.k8s.io/v1"
    assert scaling["regarding"]["kind"] == "Deployment" and scaling["regarding"]["name"] == "web"
    assert scaling["note"].startswith("Scaled up replica set web-")
    assert scaling["reportingController"] == "deployment-controller"
    assert scaling["deprecatedCount"] >= 1 and "eventTime" in scaling
    assert "involvedObject" not in scaling and "message" not in scaling

    # written through events.k8s.io/v1, read through core/v1 (and back)
    events_v1 = client.EventsV1Api(api_client)
    created = events_v1.create_namespaced_event(namespace, {
        "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "hello"},
        "eventTime": "2026-01-01T00:00:00.000000Z", "reason": "Tested", "note": "written as events.k8s.io/v1",
        "type": "Normal", "action": "Test", "reportingController": "tests", "reportingInstance": "here",
        "regarding": {"kind": "Deployment", "apiVersion": "apps/v1", "name": "web", "namespace": namespace}})
    assert created.note == "written as events.k8s.io/v1" and created.regarding.name == "web"
    core = client.CoreV1Api(api_client).read_namespaced_event("hello", namespace)
    assert core.message == "written as events.k8s.io/v1" and core.involved_object.name == "web"
    assert core.reporting_component == "tests"
    patched = events_v1.patch_namespaced_event("hello", namespace, {"note": "patched"})
    assert patched.note == "patched"
    assert "patched" in kubectl("events", "-n", namespace, "--for", "deployment/web").stdout


def test_watch_of_events_k8s_io_streams_that_version(api, namespace, api_client):
    client.CoreV1Api(api_client).create_namespaced_event(namespace, {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "seen"}, "reason": "Watched",
        "message": "written as core/v1", "type": "Normal", "involvedObject": {"kind": "Namespace", "name": namespace}})
    code, _, body = _get(api, f"/apis/events.k8s.io/v1/namespaces/{namespace}/events?watch=true&timeoutSeconds=1",
                         "application/json")
    assert code == 200
    (event,) = [json.loads(line) for line in body.splitlines() if line.strip()]
    assert event["type"] == "ADDED" and event["object"]["apiVersion"] == "events.k8s.io/v1"
    assert event["object"]["note"] == "written as core/v1" and event["object"]["regarding"]["name"] == namespace


# ---------------------------------------------------------------------- the status subresource


def _service(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}}


def test_status_writes_change_only_status(api_client, namespace):
    core = client.CoreV1Api(api_client)
    core.create_namespaced_service(namespace, _service("lb"))
    ingress = {"status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.77"}]}}, "spec": {"ports": [{"port": 81}]}}
    patched = core.patch_namespaced_service_status("lb", namespace, ingress)
    assert patched.status.load_balancer.ingress[0].ip == "127.0.0.77"
    assert [p.port for p in patched.spec.ports] == [80]  # the spec in the patch is ignored
    assert core.read_namespaced_service_status("lb", namespace).status.load_balancer.ingress[0].ip == "127.0.0.77"

    # a write of the main resource keeps the stored status
    live = core.read_namespaced_service("lb", namespace)
    live.status.load_balancer.ingress[0].ip = "127.0.0.78"
    live.metadata.labels = {"updated": "yes"}
    replaced = core.replace_namespaced_service("lb", namespace, live)
    assert replaced.metadata.labels == {"updated": "yes"}
    assert replaced.status.load_balancer.ingress[0].ip == "127.0.0.77"

    # PUT status: a stale resourceVersion is a conflict, a current one replaces the status
    stale = core.read_namespaced_service_status("lb", namespace)
    stale.metadata.resource_version = "1"
    with pytest.raises(ApiException) as caught:
        core.replace_namespaced_service_status("lb", namespace, stale)
    assert caught.value.status == 409
    current = core.read_namespaced_service_status("lb", namespace)
    current.status.load_balancer.ingress = [client.V1LoadBalancerIngress(hostname="lb.example")]
    put = core.replace_namespaced_service_status("lb", namespace, current)
    assert put.status.load_balancer.ingress[0].hostname == "lb.example"


def test_status_of_pods_and_deployments(api_client, namespace):
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    core.create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}})
    patched = core.patch_namespaced_pod_status("p", namespace, {
        "status": {"conditions": [{"type": "example.com/Checked", "status": "True"}]}})
    assert any(c.type == "example.com/Checked" and c.status == "True" for c in patched.status.conditions)

    apps.create_namespaced_deployment(namespace, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
                 "template": {"metadata": {"labels": {"app": "d"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})

    def replace_status():  # the deployment controller writes the status too: retry on a conflict, as clients do
        live = apps.read_namespaced_deployment_status("d", namespace)
        live.spec.replicas = 5
        live.status.observed_generation = 99
        try:
            return apps.replace_namespaced_deployment_status("d", namespace, live)
        except ApiException as exc:
            if exc.status != 409:
                raise
            return None
    put = poll(replace_status, "a status update without a conflict")
    assert put.spec.replicas == 1 and put.status.observed_generation == 99
    assert apps.read_namespaced_deployment("d", namespace).spec.replicas == 1


def test_status_writes_are_refused_for_kinds_without_status(api, namespace):
    directory = api.cluster.state.directory
    context = ssl.create_default_context(cafile=str(directory / "ca.crt"))
    request = urllib.request.Request(
        f"{api.cluster.kube_api.url}/api/v1/namespaces/{namespace}/configmaps/x/status", method="PUT", data=b"{}",
        headers={"Authorization": f"Bearer {(directory / 'token').read_text()}", "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, context=context, timeout=10)
    with refused.value:
        assert refused.value.code == 404


# ---------------------------------------------------------------------- type errors


def test_wrong_type_is_a_400_in_go_decoder_words(kubectl, namespace, api, api_client, tmp_path):
    manifest = tmp_path / "web.yaml"
    manifest.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n"
        "spec:\n  replicas: \"two\"\n  selector: {matchLabels: {app: web}}\n"
        "  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: nginx}]\n")
    result = kubectl("apply", "-n", namespace, "-f", str(manifest), check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f'Error from server (BadRequest): error when creating "{manifest}": Deployment in version "v1" cannot be '
        "handled as a Deployment: json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas "
        "of type int32")

    apps = client.AppsV1Api(api_client)  # its models check types before sending: the wrong one goes by hand
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "web", "image": "nginx",
                                                           "ports": [{"containerPort": "http"}]}]}}}}
    code, _, answer = _get(api, f"/apis/apps/v1/namespaces/{namespace}/deployments",
                           "application/json", method="POST", body=body)
    status = json.loads(answer)
    assert (code, status["reason"]) == (400, "BadRequest")
    assert status["message"] == (
        'Deployment in version "v1" cannot be handled as a Deployment: json: cannot unmarshal string into Go struct '
        "field ContainerPort.spec.template.spec.containers.ports.containerPort of type int32")

    # an update (PUT) and a patch are decoded the same way
    body["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": 80}]
    apps.create_namespaced_deployment(namespace, body)
    code, _, answer = _get(api, f"/apis/apps/v1/namespaces/{namespace}/deployments/web", "application/json",
                           method="PATCH", body={"spec": {"paused": "yes"}},
                           content_type="application/merge-patch+json")
    assert code == 400
    assert "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.paused of type bool" in \
        json.loads(answer)["message"]
    live = apps.read_namespaced_deployment("web", namespace)
    live_body = api_client.sanitize_for_serialization(live)
    live_body["spec"]["minReadySeconds"] = "soon"
    code, _, answer = _get(api, f"/apis/apps/v1/namespaces/{namespace}/deployments/web", "application/json",
                           method="PUT", body=live_body)
    assert code == 400 and "DeploymentSpec.spec.minReadySeconds of type int32" in json.loads(answer)["message"]
