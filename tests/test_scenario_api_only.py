"""`netemu run` starts the cluster in its own process, yet its steps reach it only through the
cluster's Kubernetes API: nothing a step can see leads to the in-process ``netemu.Cluster``."""
from __future__ import annotations

import asyncio
import gc
import io
import textwrap
import types
from pathlib import Path

import pytest

from netemu.cluster import Cluster
from netemu.scenario import run_files, runner
from netemu.scenario.api_cluster import ApiCluster

SCENARIO = """
    name: api only
    cluster: {nodes: 2}
    manifests:
      - |
        apiVersion: v1
        kind: Pod
        metadata: {name: shell, labels: {app: shell}}
        spec:
          nodeName: node-1
          containers: [{name: shell, image: busybox, command: [sh, -c, "echo started; sleep 3600"]}]
    steps:
      - expect: {object: pod/shell, field: spec.nodeName, equals: node-1}
      - exec: {pod: shell, command: "echo {{ pod.shell.ip }} {{ node.node-2.ip }} {{ cluster.dns }}"}
        expect:
          stdout: {matches: "^127\\\\.244\\\\.[0-9.]+ 127\\\\.10\\\\.0\\\\.[0-9]+ 127\\\\.96\\\\.0\\\\.10\\\\n$"}
      - logs: {pod: shell}
        expect: {contains: started}
      - kill: {pod: shell}
      - wait: {for: condition, object: pod/shell, field: "status.containerStatuses[0].restartCount", equals: 1}
      - stop: {node: node-2}
      - wait: {for: condition, object: node/node-2, field: "status.conditions[0].status", equals: Unknown}
      - start: {node: node-2}
      - impair: {node: node-2, delay: 5ms}
        expect: {output: {contains: node/node-2 impaired}}
      - scale: {deployment: nothing, replicas: 1}
        expect: {error: {contains: nothing}}
      - delete: pod/shell
"""

_OPAQUE = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType, types.CodeType,
           asyncio.AbstractEventLoop)


def reaches(start: object, wanted: type) -> list[str]:
    """A chain of type names from ``start`` to an instance of ``wanted`` (empty: none), following
    what objects hold (not modules, classes, functions or event loops, which lead everywhere)."""
    seen = {id(start)}
    queue: list[tuple[object, list[str]]] = [(start, [type(start).__name__])]
    while queue:
        obj, chain = queue.pop(0)
        for ref in gc.get_referents(obj):
            if id(ref) in seen or isinstance(ref, _OPAQUE):
                continue
            seen.add(id(ref))
            if isinstance(ref, wanted):
                return [*chain, type(ref).__name__]
            queue.append((ref, [*chain, type(ref).__name__]))
    return []


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("NETEMU_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_steps_reach_the_cluster_only_through_its_api(state, monkeypatch):
    seen: list[object] = []
    run_step = runner.run_step

    async def watched(ctx, scenario, step):
        seen.append(type(ctx.cluster))
        chain = reaches(ctx, Cluster)
        assert not chain, " -> ".join(chain)
        return await run_step(ctx, scenario, step)
    monkeypatch.setattr(runner, "run_step", watched)
    Path("api.yaml").write_text(textwrap.dedent(SCENARIO))
    out = io.StringIO()
    assert run_files(["api.yaml"], out) == 0, out.getvalue()
    assert seen and set(seen) == {ApiCluster}


def test_the_walk_finds_a_cluster_it_can_reach():
    """The check above can fail: a context holding the cluster is caught."""
    cluster = Cluster(1, name="walk")
    holder = types.SimpleNamespace(inner={"deep": [cluster]})
    assert reaches(holder, Cluster)[-1] == "Cluster"


NEW_OPERATIONS = [("GET", "cluster"), ("POST", "settle"), ("POST", "kill"), ("POST", "stop-node"),
                  ("POST", "start-node"), ("POST", "host-prefix")]


def _request(cluster, method: str, path: str, token: str | None) -> tuple[int, dict]:
    """One request to the cluster's API with the given bearer token (or none)."""
    import http.client
    import json
    import ssl
    context = ssl.create_default_context(cadata=cluster.kube_api.credentials.ca_cert.decode())
    conn = http.client.HTTPSConnection("127.0.0.1", cluster.kube_api.port, context=context, timeout=30)
    try:
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        conn.request(method, path, body=b"{}" if method != "GET" else None, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


async def test_the_operations_the_runner_added_are_the_owners_only(cluster):
    from netemu.kubeapi.client import ApiClient
    from netemu.kubeapi.operations import PATH
    for method, what in NEW_OPERATIONS:
        status, answer = await asyncio.to_thread(_request, cluster, method, f"{PATH}/{what}", None)
        assert (status, answer.get("reason")) == (401, "Unauthorized"), (method, what)
    admin = ApiClient.for_cluster(cluster.name, cluster.state.directory)
    request = await asyncio.to_thread(admin.request, "POST", "/api/v1/namespaces/default/serviceaccounts/default/token",
                                      {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})
    pods_token = request["status"]["token"]
    for method, what in NEW_OPERATIONS:
        status, answer = await asyncio.to_thread(_request, cluster, method, f"{PATH}/{what}", pods_token)
        assert status == 403, (method, what, answer)
    assert await asyncio.to_thread(admin.get, f"{PATH}/cluster") == {
        "name": cluster.name, "backend": "loopback", "clusterDomain": "cluster.local",
        "serviceCIDR": cluster.config.service_cidr, "podCIDR": cluster.config.pod_cidr,
        "nodeCIDR": cluster.config.node_cidr, "lbCIDR": cluster.config.lb_cidr}
    assert "node-1" in cluster.kubelets
    await asyncio.to_thread(admin.request, "POST", f"{PATH}/stop-node", {"node": "node-1"})
    assert "node-1" not in cluster.kubelets
    await asyncio.to_thread(admin.request, "POST", f"{PATH}/start-node", {"node": "node-1"})
    assert "node-1" in cluster.kubelets
