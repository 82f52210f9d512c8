"""ServiceAccounts through the real kubectl and the official client: the ``default`` account of
every namespace, the ServiceAccount admission plugin (refusal in kube-apiserver's words, the
injected token volume, ``automountServiceAccountToken``), tokens (``kubectl create token``,
bearer authentication, forged and expired ones refused) and a pod that lists its own pods
through ``kubernetes.default`` with the in-cluster configuration.

One cluster for the module (netemu's pytest plugin); each test works in a namespace of its own.
"""
from __future__ import annotations

import base64
import datetime
import json
import os
import sys
import textwrap
import time
from typing import Any, Callable

import pytest
import yaml

from kubeapi_support import KUBECTL, api_fixtures, cluster_with_api, poll
from netemu import printers
from netemu.fabric import routes_outside_loopback
from test_netns_helpers import netns_ready  # noqa: F401 - fixture

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")

api, kubectl, namespace = api_fixtures("serviceaccounts")

MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"


def get_json(kubectl: Callable[..., Any], *args: str) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def pod_manifest(name: str, *, service_account: str = "", automount: bool | None = None,
                 command: list[str] | None = None) -> str:
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "busybox",
                                            "command": command or ["sleep", "3600"]}],
                            "initContainers": [{"name": "init", "image": "busybox", "command": ["true"]}],
                            "restartPolicy": "Never"}
    if service_account:
        spec["serviceAccountName"] = service_account
    if automount is not None:
        spec["automountServiceAccountToken"] = automount
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


# ------------------------------------------------------------------ the default account


def test_every_namespace_has_a_default_service_account(kubectl, namespace):
    for ns in ("default", "kube-system", "kube-public", "kube-node-lease", namespace):
        names = poll(lambda: [sa["metadata"]["name"] for sa in get_json(kubectl, "sa", "-n", ns)["items"]],
                     f"the service accounts of {ns}")
        assert "default" in names, ns
    table = kubectl("get", "sa", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "SECRETS", "AGE"]
    assert table[1].split()[:2] == ["default", "0"]


def test_default_service_account_is_made_again_after_delete(kubectl, namespace):
    first = get_json(kubectl, "sa", "default", "-n", namespace)["metadata"]["uid"]
    assert kubectl("delete", "sa", "default", "-n", namespace).stdout.strip() == 'serviceaccount "default" deleted'

    def recreated() -> bool:
        found = kubectl("get", "sa", "default", "-n", namespace, "-o", "json", check=False)
        return found.returncode == 0 and json.loads(found.stdout)["metadata"]["uid"] != first
    poll(recreated, "the default service account to come back")


def test_every_namespace_has_the_root_ca_config_map(api, kubectl, namespace):
    ca = api.cluster.kube_api.credentials.ca_cert.decode()
    for ns in ("default", "kube-system", namespace):
        cm = poll(lambda: kubectl("get", "cm", "kube-root-ca.crt", "-n", ns, "-o", "json", check=False).stdout,
                  f"kube-root-ca.crt in {ns}")
        assert json.loads(cm)["data"] == {"ca.crt": ca}


def test_describe_service_account_in_kubectls_format(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "builder"},
        "imagePullSecrets": [{"name": "registry"}], "automountServiceAccountToken": False}))
    text = kubectl("describe", "sa", "builder", "-n", namespace).stdout
    lines = [line.split(None, 1) if ":" not in line else [p.strip() for p in line.split(":", 1)]
             for line in text.splitlines()]
    assert ["Image pull secrets", "registry (not found)"] in lines
    assert ["Mountable secrets", "<none>"] in lines
    assert ["Tokens", "<none>"] in lines
    sa = get_json(kubectl, "sa", "builder", "-n", namespace)
    assert sa["automountServiceAccountToken"] is False
    assert sa["imagePullSecrets"] == [{"name": "registry"}]


# ------------------------------------------------------------------ admission


def test_pod_naming_a_missing_service_account_is_refused_in_kube_apiservers_words(kubectl, namespace):
    result = kubectl("apply", "-n", namespace, "-f", "-", input=pod_manifest("lost", service_account="foo"),
                     check=False)
    assert result.returncode == 1
    assert (f'pods "lost" is forbidden: error looking up service account {namespace}/foo: '
            'serviceaccount "foo" not found') in result.stderr
    assert "Forbidden" in result.stderr
    assert kubectl("get", "pod", "lost", "-n", namespace, check=False).returncode == 1


def test_a_workloads_pods_wait_for_their_service_account(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"serviceAccountName": "web-sa",
                                       "containers": [{"name": "main", "image": "busybox",
                                                       "command": ["sleep", "3600"]}]}}}}))

    def failed_create() -> list[dict[str, Any]]:
        return [e for e in get_json(kubectl, "events", "-n", namespace)["items"] if e["reason"] == "FailedCreate"]
    event = poll(failed_create, "a FailedCreate event")[0]
    assert event["type"] == "Warning" and event["involvedObject"]["kind"] == "ReplicaSet"
    rs = event["involvedObject"]["name"]
    assert event["message"] == (f'Error creating: pods "{rs}-" is forbidden: error looking up service account '
                                f'{namespace}/web-sa: serviceaccount "web-sa" not found')
    assert get_json(kubectl, "pods", "-n", namespace)["items"] == []
    kubectl("create", "serviceaccount", "web-sa", "-n", namespace)
    pods = poll(lambda: get_json(kubectl, "pods", "-n", namespace)["items"], "the pod after the account came", 40)
    assert pods[0]["spec"]["serviceAccountName"] == "web-sa"


def test_a_statefulsets_pod_waits_for_its_service_account(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}},
                              "spec": {"serviceAccountName": "db-sa",
                                       "containers": [{"name": "main", "image": "busybox",
                                                       "command": ["sleep", "3600"]}]}}}}))
    event = poll(lambda: [e for e in get_json(kubectl, "events", "-n", namespace)["items"]
                          if e["reason"] == "FailedCreate"], "a FailedCreate event")[0]
    assert event["message"] == (f'create Pod db-0 in StatefulSet db failed error: pods "db-0" is forbidden: error '
                                f'looking up service account {namespace}/db-sa: serviceaccount "db-sa" not found')
    kubectl("create", "serviceaccount", "db-sa", "-n", namespace)
    poll(lambda: get_json(kubectl, "pods", "-n", namespace)["items"], "db-0 after the account came", 40)


POD_SPEC_WITH_ACCOUNT = {"serviceAccountName": "agent-sa", "restartPolicy": "Never",
                         "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]}


@pytest.mark.parametrize("kind,spec", [
    ("DaemonSet", {"apiVersion": "apps/v1", "spec": {
        "selector": {"matchLabels": {"app": "agent"}},
        "template": {"metadata": {"labels": {"app": "agent"}},
                     "spec": {**POD_SPEC_WITH_ACCOUNT, "restartPolicy": "Always"}}}}),
    ("Job", {"apiVersion": "batch/v1", "spec": {"template": {"spec": POD_SPEC_WITH_ACCOUNT}}}),
])
def test_daemon_set_and_job_pods_wait_for_their_service_account(kubectl, namespace, kind, spec):
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({"kind": kind, "metadata": {"name": "agent"},
                                                                   **spec}))
    event = poll(lambda: [e for e in get_json(kubectl, "events", "-n", namespace)["items"]
                          if e["reason"] == "FailedCreate"], "a FailedCreate event")[0]
    assert event["type"] == "Warning" and event["involvedObject"]["kind"] == kind
    assert event["message"] == (f'Error creating: pods "agent-" is forbidden: error looking up service account '
                                f'{namespace}/agent-sa: serviceaccount "agent-sa" not found')
    assert get_json(kubectl, "pods", "-n", namespace)["items"] == []
    kubectl("create", "serviceaccount", "agent-sa", "-n", namespace)
    pods = poll(lambda: get_json(kubectl, "pods", "-n", namespace)["items"], "the pod after the account came", 40)
    assert pods[0]["spec"]["serviceAccountName"] == "agent-sa"


@pytest.mark.parametrize("client", ["kubectl", "netemu"])
def test_a_bundle_with_its_namespace_and_service_account_applies_in_one_go(api, kubectl, namespace, client):
    """The pod's ``default`` account is made as its namespace is, and an account later in the
    bundle counts (kubectl sends the objects one by one; netemu admits the batch as planned)."""
    fresh = f"{namespace}-x"
    bundle = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": fresh}},
              json.loads(pod_manifest("first")) | {"metadata": {"name": "first", "namespace": fresh}},
              json.loads(pod_manifest("second", service_account="app"))
              | {"metadata": {"name": "second", "namespace": fresh}},
              {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": fresh}}]
    if client == "kubectl":
        bundle.insert(2, bundle.pop())  # kubectl creates in order: the account before its pod
        kubectl("apply", "-f", "-", input=yaml.safe_dump_all(bundle))
    else:
        api.apply(yaml.safe_dump_all(bundle))
    assert get_json(kubectl, "pod", "first", "-n", fresh)["spec"]["serviceAccountName"] == "default"
    assert get_json(kubectl, "pod", "second", "-n", fresh)["spec"]["serviceAccountName"] == "app"
    kubectl("delete", "namespace", fresh, "--wait=false")


def test_netemu_describes_a_service_account_as_kubectl_does(api, kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "ops"},
        "secrets": [{"name": "ops-token"}, {"name": "gone"}]}))
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ops-token",
                                                         "annotations": {"kubernetes.io/service-account.name": "ops"}},
        "type": "kubernetes.io/service-account-token"}))
    sa = api.get("ServiceAccount", "ops", namespace)
    text = printers.describe(sa, events=[], related={"secrets": api.list("Secret", namespace)},
                             now=datetime.datetime.now(datetime.timezone.utc))
    assert text == (f"Name:                ops\nNamespace:           {namespace}\nLabels:              <none>\n"
                    "Annotations:         <none>\nImage pull secrets:  <none>\n"
                    "Mountable secrets:   ops-token\n                     gone (not found)\n"
                    "Tokens:              ops-token\nEvents:              <none>\n")
    assert kubectl("get", "sa", "ops", "-n", namespace).stdout.split()[3:5] == ["ops", "2"]


def test_token_volume_is_injected_as_kube_apiserver_does(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=pod_manifest("shaped"))
    pod = get_json(kubectl, "pod", "shaped", "-n", namespace)
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "default" and spec["serviceAccount"] == "default"
    [volume] = [v for v in spec["volumes"] if v["name"].startswith("kube-api-access-")]
    assert len(volume["name"]) == len("kube-api-access-") + 5
    assert volume["projected"] == {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}
    for container in (*spec["containers"], *spec["initContainers"]):
        assert {"name": volume["name"], "mountPath": MOUNT_PATH, "readOnly": True} in container["volumeMounts"]
    # a re-apply of the same manifest keeps what admission added: nothing changes
    again = kubectl("apply", "-n", namespace, "-f", "-", input=pod_manifest("shaped"))
    assert again.stdout.strip() == "pod/shaped unchanged"


def test_automount_false_on_the_pod_or_the_account_is_respected(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=pod_manifest("quiet", automount=False))
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "tokenless"},
        "automountServiceAccountToken": False}))
    kubectl("apply", "-n", namespace, "-f", "-", input=pod_manifest("quiet-too", service_account="tokenless"))
    kubectl("apply", "-n", namespace, "-f", "-", input=pod_manifest("overridden", service_account="tokenless",
                                                                   automount=True))
    for name, mounted in (("quiet", False), ("quiet-too", False), ("overridden", True)):
        spec = get_json(kubectl, "pod", name, "-n", namespace)["spec"]
        volumes = [v["name"] for v in spec.get("volumes", []) if v["name"].startswith("kube-api-access-")]
        mounts = [m for m in spec["containers"][0].get("volumeMounts", []) if m["mountPath"] == MOUNT_PATH]
        assert bool(volumes) == mounted and bool(mounts) == mounted, name


# ------------------------------------------------------------------ tokens


def test_kubectl_create_token_and_the_token_authenticates(api, kubectl, namespace):
    kubectl("create", "serviceaccount", "robot", "-n", namespace)
    token = kubectl("create", "token", "robot", "-n", namespace, "--duration=20m").stdout.strip()
    claims = claims_of(token)
    uid = get_json(kubectl, "sa", "robot", "-n", namespace)["metadata"]["uid"]
    assert claims["iss"] == "https://kubernetes.default.svc.cluster.local"
    assert claims["aud"] == ["https://kubernetes.default.svc.cluster.local"]
    assert claims["sub"] == f"system:serviceaccount:{namespace}:robot"
    assert claims["kubernetes.io"]["namespace"] == namespace
    assert claims["kubernetes.io"]["serviceaccount"] == {"name": "robot", "uid": uid}
    assert claims["exp"] - claims["iat"] == 1200 and claims["nbf"] == claims["iat"]
    assert (api.cluster.state.directory / "sa.key").stat().st_mode & 0o777 == 0o600  # the signing key
    # the token alone (no client certificate) lists pods
    listed = _as_token(api, kubectl, token, namespace)
    assert listed.returncode == 0, listed.stderr
    too_short = kubectl("create", "token", "robot", "-n", namespace, "--duration=1m", check=False)
    assert too_short.returncode == 1
    assert "may not specify a duration less than 10 minutes" in too_short.stderr
    missing = kubectl("create", "token", "nobody", "-n", namespace, check=False)
    assert 'serviceaccounts "nobody" not found' in missing.stderr


def _as_token(api: Any, kubectl: Callable[..., Any], token: str, namespace: str) -> Any:
    """``kubectl get pods`` with nothing but the bearer token (no kubeconfig, no client certificate)."""
    return kubectl("--kubeconfig", os.devnull, "--server", api.cluster.kube_api.url,
                   "--certificate-authority", str(api.cluster.state.directory / "ca.crt"), "--token", token,
                   "get", "pods", "-n", namespace, check=False)


def test_forged_expired_and_orphaned_tokens_are_unauthorized(api, kubectl, namespace):
    kubectl("create", "serviceaccount", "robot", "-n", namespace)
    token = kubectl("create", "token", "robot", "-n", namespace).stdout.strip()
    header, payload, signature = token.split(".")
    claims = claims_of(token)
    claims["sub"] = "system:serviceaccount:kube-system:default"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    sa = api.cluster.store.get("ServiceAccount", namespace, "robot")
    expired = api.cluster.kube_api.tokens.issue(namespace, sa, expiration_seconds=600, now=time.time() - 3600).token
    for bad in (f"{header}.{forged_payload}.{signature}", f"{header}.{payload}.{signature[:-4]}AAAA", expired,
                "not-a-token"):
        result = _as_token(api, kubectl, bad, namespace)
        assert result.returncode == 1
        assert "You must be logged in to the server" in result.stderr, result.stderr  # kubectl's words for a 401
    assert _as_token(api, kubectl, token, namespace).returncode == 0
    kubectl("delete", "sa", "robot", "-n", namespace)
    assert "You must be logged in to the server" in _as_token(api, kubectl, token, namespace).stderr


def test_token_request_through_the_official_client(api, namespace):
    from kubernetes import client, config
    api_client = config.new_client_from_config(str(api.cluster.state.directory / "kubeconfig"))
    try:
        core = client.CoreV1Api(api_client)
        answer = core.create_namespaced_service_account_token("default", namespace, client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=["vault"], expiration_seconds=3600)))
        assert answer.spec.audiences == ["vault"] and answer.spec.expiration_seconds == 3600
        assert claims_of(answer.status.token)["aud"] == ["vault"]
        assert answer.status.expiration_timestamp is not None
        accounts = core.list_namespaced_service_account(namespace).items
        assert [sa.metadata.name for sa in accounts] == ["default"]
    finally:
        api_client.close()


# ------------------------------------------------------------------ in-cluster access


IN_CLUSTER = textwrap.dedent("""
    import os
    from kubernetes import client, config
    config.load_incluster_config()
    namespace = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read()
    pods = client.CoreV1Api().list_namespaced_pod(namespace)
    print("listed", sorted(p.metadata.name for p in pods.items), os.environ["KUBERNETES_SERVICE_HOST"], flush=True)
""")


def test_a_pod_lists_its_own_pods_with_the_in_cluster_configuration(api, kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-",
            input=pod_manifest("insider", command=[sys.executable, "-c", IN_CLUSTER]))

    def finished() -> str:
        pod = get_json(kubectl, "pod", "insider", "-n", namespace)
        return pod["status"].get("phase") in ("Succeeded", "Failed") and pod["status"]["phase"]
    phase = poll(finished, "the in-cluster client to finish", 60)
    logs = kubectl("logs", "insider", "-n", namespace).stdout
    assert phase == "Succeeded", logs
    assert f"listed ['insider'] {api.cluster.apiserver.kubernetes_ip}" in logs


@pytest.mark.netns
def test_in_cluster_client_on_the_netns_backend(netns_ready, tmp_path):  # noqa: F811
    """On separate network stacks the proxy reaches the API server's listener from the host's
    network (proxy.proxier: a 127.x endpoint is the host's)."""
    if routes_outside_loopback():
        pytest.skip("the netns backend runs only in a namespace without outside routes (make test)")
    with cluster_with_api(tmp_path / "state", "sa-netns", backend="netns") as api:
        api.apply(pod_manifest("insider", command=[sys.executable, "-c", IN_CLUSTER]))
        store = api.cluster.store  # the predicate runs on the cluster's loop
        api.wait_for(lambda: store.get("Pod", "default", "insider").status.phase in ("Succeeded", "Failed"), 60)
        logs = api.logs("insider")
        assert api.get("Pod", "insider").status.phase == "Succeeded", logs
        assert f"listed ['insider'] {api.cluster.apiserver.kubernetes_ip}" in logs
