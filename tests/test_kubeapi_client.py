"""The official Python client (``kubernetes``), curl and raw HTTPS against a netemu cluster's API:
list, create and watch; 409 on a stale update; 401 without credentials; Status objects."""
from __future__ import annotations

import json
import ssl
import subprocess
import threading
import urllib.error
import urllib.request

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from kubeapi_support import cluster_with_api
from netemu.kubeapi import KUBECONFIG


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with cluster_with_api(tmp_path_factory.mktemp("state"), "kubeclient") as handle:
        yield handle


@pytest.fixture(scope="module")
def core(api):
    with config.new_client_from_config(config_file=str(api.cluster.state.directory / KUBECONFIG)) as api_client:
        yield client.CoreV1Api(api_client)


@pytest.fixture
def namespace(core, request):
    name = request.node.name.removeprefix("test_")[:40].replace("_", "-").strip("-")
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def _pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "t"}},
            "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}}


def _request(api, path: str, *, method: str = "GET", body: dict | None = None, token: str | None = None,
             content_type: str = "application/json") -> tuple[int, dict]:
    directory = api.cluster.state.directory
    context = ssl.create_default_context(cafile=str(directory / "ca.crt"))
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(api.cluster.kube_api.url + path, method=method, headers=headers,
                                     data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def _token(api) -> str:
    return (api.cluster.state.directory / "token").read_text()


def test_lists_and_creates_pods_and_services(core, api, namespace):
    core.create_namespaced_pod(namespace, _pod("one"))
    core.create_namespaced_service(namespace, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "t"}, "ports": [{"port": 80, "targetPort": 8080}]}})
    pods = core.list_namespaced_pod(namespace)
    assert [p.metadata.name for p in pods.items] == ["one"]
    assert int(pods.metadata.resource_version) >= int(pods.items[0].metadata.resource_version)
    service = core.read_namespaced_service("web", namespace)
    assert service.spec.cluster_ip == api.cluster.service_ip("web", namespace)  # allocated by admission
    assert [s.metadata.name for s in core.list_namespaced_service(namespace, label_selector="").items] == ["web"]
    by_field = core.list_pod_for_all_namespaces(field_selector=f"metadata.namespace={namespace},metadata.name=one")
    assert [p.metadata.name for p in by_field.items] == ["one"]


def test_watch_sees_added_modified_deleted_in_order(core, api, namespace):
    start = core.list_namespaced_pod(namespace).metadata.resource_version
    seen: list[tuple[str, str]] = []
    done = threading.Event()

    def follow() -> None:
        w = watch.Watch()
        for event in w.stream(core.list_namespaced_pod, namespace, resource_version=start, timeout_seconds=30):
            seen.append((event["type"], event["object"].metadata.name))
            if event["type"] == "DELETED":
                w.stop()
        done.set()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    core.create_namespaced_pod(namespace, _pod("w"))
    core.patch_namespaced_pod("w", namespace, {"metadata": {"labels": {"step": "two"}}})
    core.delete_namespaced_pod("w", namespace, grace_period_seconds=0)
    api.run(api.cluster.wait_for(lambda: api.cluster.store.get("Pod", namespace, "w") is None, 30))
    assert done.wait(30)
    types = [t for t, name in seen if name == "w"]
    assert types[0] == "ADDED" and types[-1] == "DELETED" and "MODIFIED" in types
    assert types.index("MODIFIED") < types.index("DELETED")


def test_stale_update_is_a_conflict(core, namespace):
    created = core.create_namespaced_service(namespace, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"selector": {"app": "t"}, "ports": [{"port": 80}]}})
    created.metadata.labels = {"first": "yes"}
    core.replace_namespaced_service("s", namespace, created)  # created's resourceVersion is now stale
    created.metadata.labels = {"second": "yes"}
    with pytest.raises(ApiException) as caught:
        core.replace_namespaced_service("s", namespace, created)
    assert caught.value.status == 409
    status = json.loads(caught.value.body)
    assert status["reason"] == "Conflict"
    assert "the object has been modified" in status["message"]
    assert core.read_namespaced_service("s", namespace).metadata.labels == {"first": "yes"}


def test_unauthenticated_curl_gets_401(api):
    url = api.cluster.kube_api.url + "/api/v1/pods"
    result = subprocess.run(["curl", "-sS", "--cacert", str(api.cluster.state.directory / "ca.crt"),
                             "-w", "\n%{http_code}", url], capture_output=True, text=True, timeout=30)
    body, code = result.stdout.rsplit("\n", 1)
    assert code == "401"
    assert json.loads(body) == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
    wrong = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert",
                            str(api.cluster.state.directory / "ca.crt"), "-H", "Authorization: Bearer nope", url],
                           capture_output=True, text=True, timeout=30)
    assert wrong.stdout == "401"


def test_bearer_token_is_accepted(api):
    status, body = _request(api, "/api/v1/namespaces/default/services/kubernetes", token=_token(api))
    assert status == 200 and body["spec"]["ports"][0]["port"] == 443


def test_invalid_object_is_a_422_status_with_causes(api, namespace):
    status, body = _request(api, f"/api/v1/namespaces/{namespace}/services", method="POST", token=_token(api),
                            body={"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bad"},
                                  "spec": {"ports": [{"port": 70000, "targetPort": 80}]}})
    assert status == 422 and body["reason"] == "Invalid"
    assert body["message"] == ('The Service "bad" is invalid: spec.ports[0].port: Invalid value: 70000: '
                               "must be between 1 and 65535, inclusive")
    assert body["details"]["causes"] == [{"reason": "FieldValueInvalid", "field": "spec.ports[0].port",
                                          "message": "Invalid value: 70000: must be between 1 and 65535, inclusive"}]


def test_watch_from_a_forgotten_version_is_gone(api, namespace):
    changes = api.cluster.kube_api.changes
    api.call(lambda: [changes._changes.popleft() for _ in range(min(5, len(changes._changes)))])
    status, body = _request(api, f"/api/v1/namespaces/{namespace}/pods?watch=true&resourceVersion=1",
                            token=_token(api))
    assert status == 200
    assert body["type"] == "ERROR" and body["object"]["code"] == 410 and body["object"]["reason"] == "Expired"


def test_patch_types(api, core, namespace):
    core.create_namespaced_pod(namespace, _pod("p"))
    path = f"/api/v1/namespaces/{namespace}/pods/p"
    status, body = _request(api, path, method="PATCH", token=_token(api), content_type="application/json-patch+json",
                            body=[{"op": "add", "path": "/metadata/labels/json", "value": "patch"}])
    assert status == 200 and body["metadata"]["labels"]["json"] == "patch"
    status, body = _request(api, path, method="PATCH", token=_token(api), content_type="application/merge-patch+json",
                            body={"metadata": {"labels": {"json": None, "merge": "patch"}}})
    assert status == 200 and body["metadata"]["labels"] == {"app": "t", "merge": "patch"}
    status, body = _request(api, path + "?dryRun=All", method="PATCH", token=_token(api),
                            content_type="application/strategic-merge-patch+json",
                            body={"metadata": {"labels": {"dry": "run"}}})
    assert status == 200 and body["metadata"]["labels"]["dry"] == "run"
    assert "dry" not in core.read_namespaced_pod("p", namespace).metadata.labels


def test_port_forward_with_the_python_client(core, namespace):
    """The client's ``portforward`` speaks the channel WebSocket (v4.channel.k8s.io): data to a
    port the pod serves, and the kubelet's error for one nothing listens on."""
    from kubernetes.stream import portforward

    from kubeapi_support import poll
    core.create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}]}]}})
    poll(lambda: core.read_namespaced_pod("web", namespace).status.phase == "Running", "web running")
    forward = portforward(core.connect_get_namespaced_pod_portforward, "web", namespace, ports="80,81")
    try:
        sock = forward.socket(80)
        sock.setblocking(True)
        sock.settimeout(10)
        sock.sendall(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
        answer = b""
        while b"</html>" not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 OK") and b"<title>Welcome to nginx!</title>" in answer
        error = poll(lambda: forward.error(81), "the error for port 81")
        assert error.startswith(f"error forwarding port 81 to pod web, uid ") and "connection refused" in error
    finally:
        forward.close()   # the client's proxy thread then closes the WebSocket: wait for it to end
        for thread in threading.enumerate():
            if thread.name.startswith("Kubernetes port forward proxy"):
                thread.join(30)
                assert not thread.is_alive(), "the client's port-forward thread did not end"
        forward.websocket.shutdown()  # the thread leaves the socket open when the server closed first
