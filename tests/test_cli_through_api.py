"""netemu's CLI reaches its cluster only through the cluster's Kubernetes API: `apply`/`delete -f`,
`describe`, `wait`, `exec`, `capture` and `down` use netemu's extension paths of it
(netemu.kubeapi.operations), which answer only the cluster's owner; there is no control socket.

The cluster runs in the test's event loop; the CLI runs as a real process against it."""
from __future__ import annotations

import asyncio
import http.client
import json
import os
import ssl
import sys
from pathlib import Path

from netemu.kubeapi.client import ApiClient
from netemu.kubeapi.operations import MAX_APPLY_BYTES, PATH

NETEMU = str(Path(sys.executable).parent / "netemu")
OPERATIONS = [("POST", "apply"), ("POST", "describe"), ("POST", "wait"), ("POST", "exec"), ("POST", "captures"),
              ("GET", "captures/1"), ("DELETE", "captures/1"), ("DELETE", "cluster")]
SERVICE = """apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
"""
BAD_SERVICE = """apiVersion: v1
kind: Service
metadata: {name: broken}
spec:
  ports: [{port: 0, targetPort: 80}]
"""


async def netemu(cluster, *args: str, input: bytes | None = None) -> tuple[int, str, str]:
    """The real CLI, while this loop goes on serving the cluster."""
    proc = await asyncio.create_subprocess_exec(
        NETEMU, *args, env={**os.environ, "NETEMU_CLUSTER": cluster.name},
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(input)
    return proc.returncode, out.decode(), err.decode()


def _raw(cluster, method: str, path: str, token: str | None, body: bytes = b"{}",
         headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """One request to the cluster's API, with the given bearer token (or none)."""
    context = ssl.create_default_context(cadata=cluster.kube_api.credentials.ca_cert.decode())
    conn = http.client.HTTPSConnection("127.0.0.1", cluster.kube_api.port, context=context, timeout=30)
    try:
        sent = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


async def test_no_control_socket_and_every_verb_works_through_the_api(cluster, tmp_path):
    assert not any(p.is_socket() for p in cluster.state.directory.iterdir())
    manifest = tmp_path / "web.yaml"
    manifest.write_text(SERVICE + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: web, labels: {app: web}}\n"
                        "spec:\n  containers: [{name: web, image: nginx}]\n")
    assert await netemu(cluster, "apply", "-f", str(manifest)) == (0, "service/web created\npod/web created\n", "")
    assert await netemu(cluster, "apply", "-f", str(manifest)) == (0, "service/web unchanged\npod/web unchanged\n",
                                                                   "")
    assert await netemu(cluster, "wait", "--timeout", "30") == (0, "ready\n", "")
    code, out, err = await netemu(cluster, "describe", "svc/web")
    assert code == 0 and out.split()[:2] == ["Name:", "web"] and "\nConnections:" in out, out + err
    code, out, err = await netemu(cluster, "exec", "web", "--", "sh", "-c", "cat; exit 3", input=b"through the API\n")
    assert (code, out) == (3, "through the API\n"), err
    assert await netemu(cluster, "delete", "-f", str(manifest)) == (0, 'service "web" deleted\npod "web" deleted\n',
                                                                    "")


async def test_apply_stays_all_or_nothing(cluster, tmp_path):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(SERVICE)
    bad.write_text(BAD_SERVICE)
    code, out, err = await netemu(cluster, "apply", "-f", str(good), "-f", str(bad))
    assert (code, out) == (1, "") and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {bad}[doc 1] Service default/broken: spec.ports[0].port: Invalid value: 0"), err
    assert cluster.store.get("Service", "default", "web") is None  # the good one was not applied either


async def test_every_operation_needs_the_owners_credentials(cluster):
    for method, what in OPERATIONS:
        status, answer = await asyncio.to_thread(_raw, cluster, method, f"{PATH}/{what}", None)
        assert (status, answer.get("reason")) == (401, "Unauthorized"), (method, what)
    admin = ApiClient.for_cluster(cluster.name, cluster.state.directory)
    request = await asyncio.to_thread(admin.request, "POST", "/api/v1/namespaces/default/serviceaccounts/default/token",
                                      {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})
    pods_token = request["status"]["token"]  # what a pod of the cluster holds
    for method, what in OPERATIONS:
        status, answer = await asyncio.to_thread(_raw, cluster, method, f"{PATH}/{what}", pods_token)
        assert (status, answer.get("message")) == (
            403, "User \"system:serviceaccount:default:default\" cannot use netemu's operations"), (method, what)
    assert not cluster.kube_api.operations.down_requested.is_set()


async def test_down_of_a_cluster_a_program_started_says_so(cluster):
    code, out, err = await netemu(cluster, "down")
    assert (code, out) == (1, "")
    assert err == (f'error: cluster "{cluster.name}" was started by a program (netemu.Cluster, a test fixture): '
                   "it stops when that program stops it\n")
    assert not cluster.kube_api.operations.down_requested.is_set()


async def test_an_apply_over_the_size_limit_is_one_line_and_harms_nothing(cluster, tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_APPLY_BYTES + "\n")
    code, out, err = await netemu(cluster, "apply", "-f", str(big))
    assert (code, out, err) == (1, "", f"error: {big}: the apply request is 64.0 MiB, more than the cluster's limit "
                                       "of 64 MiB; apply the manifests in smaller files\n")
    # A client that does not check: refused by its declared length, before the body is read.
    token = cluster.kube_api.credentials.token
    status, answer = await asyncio.to_thread(_raw, cluster, "POST", f"{PATH}/apply", token, b"{}",
                                             {"Content-Length": str(MAX_APPLY_BYTES + 1)})
    assert (status, answer["message"]) == (413, "request refused: it is 64.0 MiB, more than the cluster's limit "
                                                "of 64 MiB for one apply")
    assert await netemu(cluster, "apply", "-f", "-", input=SERVICE.encode()) == (0, "service/web created\n", "")


async def test_wait_says_what_is_not_ready_when_its_time_is_up(cluster):
    never_ready = ("apiVersion: v1\nkind: Pod\nmetadata: {name: never}\nspec:\n  containers:\n"
                   "  - name: never\n    image: busybox\n    command: [sleep, '3600']\n"
                   "    readinessProbe: {exec: {command: [\"false\"]}, periodSeconds: 1}\n")
    assert await netemu(cluster, "apply", "-f", "-", input=never_ready.encode()) == (0, "pod/never created\n", "")
    assert await netemu(cluster, "wait", "--timeout", "1") == (
        1, "", "error: timed out after 1s waiting for pods to be ready: still waiting for pod default/never\n")
