"""DaemonSets through the real kubectl on a 3-node cluster: ``get ds`` columns, ``rollout status``
across an image update, ``describe ds``, ``kubectl taint node`` moving daemon pods off and back,
node stop/start (daemon pods stay on their node and run again), a Service with
``internalTrafficPolicy: Local`` in front of a DaemonSet answering from each client's own node,
and cascading deletion.

One cluster for the module (netemu's pytest plugin); each test works in a namespace of its own
and leaves the nodes as it found them.
"""
from __future__ import annotations

import json
import os
from typing import Any

import pytest
from kubernetes import client, config

from kubeapi_support import KUBECTL, api_fixtures, poll
from netemu.kubeapi import KUBECONFIG

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")

NODES = ("node-1", "node-2", "node-3")

AGENT = """
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers:
      - name: netexec
        image: registry.k8s.io/e2e-test-images/agnhost:2.47
        args: ["netexec", "--http-port=8080"]
        ports: [{containerPort: 8080}]
        readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}
"""

CLIENTS = """
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: client
spec:
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec:
      containers: [{name: curl, image: "radial/busyboxplus:curl"}]
"""

LOCAL_SERVICE = """
apiVersion: v1
kind: Service
metadata:
  name: agent
spec:
  selector: {app: agent}
  internalTrafficPolicy: Local
  ports: [{port: 80, targetPort: 8080}]
"""

api, kubectl, namespace = api_fixtures("daemonset", nodes=3)


def pods(kubectl, namespace: str, app: str = "agent") -> list[dict[str, Any]]:
    found = json.loads(kubectl("get", "pods", "-n", namespace, "-l", f"app={app}", "-o", "json").stdout)["items"]
    return [p for p in found if not p["metadata"].get("deletionTimestamp")]


def ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def by_node(kubectl, namespace: str, app: str = "agent") -> dict[str, dict[str, Any]]:
    """node → the ready daemon pod there (only when every pod is ready)."""
    found = pods(kubectl, namespace, app)
    if not all(ready(p) for p in found):
        return {}
    return {p["spec"].get("nodeName", ""): p for p in found}


def rolled_out(kubectl, namespace: str, name: str = "agent") -> str:
    return kubectl("rollout", "status", f"ds/{name}", "-n", namespace, "--timeout=60s").stdout


def test_get_rollout_status_and_describe(kubectl, namespace):
    assert kubectl("apply", "-n", namespace, "-f", "-", input=AGENT).stdout == "daemonset.apps/agent created\n"
    assert rolled_out(kubectl, namespace).splitlines()[-1] == 'daemon set "agent" successfully rolled out'
    assert sorted(by_node(kubectl, namespace)) == list(NODES)
    lines = kubectl("get", "ds", "-n", namespace).stdout.splitlines()
    assert lines[0].split() == ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE",
                                "SELECTOR", "AGE"]
    assert lines[1].split()[:7] == ["agent", "3", "3", "3", "3", "3", "<none>"]
    wide = kubectl("get", "daemonsets.apps", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-4:] == ["AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    assert wide[1].split()[-3:] == ["netexec", "registry.k8s.io/e2e-test-images/agnhost:2.47", "app=agent"]

    described = kubectl("describe", "ds", "agent", "-n", namespace).stdout
    for line in ("Selector:       app=agent", "Node-Selector:  <none>",
                 "Annotations:    deprecated.daemonset.template.generation: 1",
                 "Desired Number of Nodes Scheduled: 3", "Current Number of Nodes Scheduled: 3",
                 "Number of Nodes Scheduled with Up-to-date Pods: 3",
                 "Number of Nodes Scheduled with Available Pods: 3", "Number of Nodes Misscheduled: 0",
                 "Pods Status:  3 Running / 0 Waiting / 0 Succeeded / 0 Failed"):
        assert line in described.splitlines(), (line, described.splitlines())
    assert described.count("SuccessfulCreate") == 3 and "daemonset-controller" in described

    pod = pods(kubectl, namespace)[0]
    terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchFields"][0]["values"] == [pod["spec"]["nodeName"]]

    old = {p["metadata"]["name"] for p in pods(kubectl, namespace)}
    kubectl("set", "image", "ds/agent", "-n", namespace, "netexec=registry.k8s.io/e2e-test-images/agnhost:2.48")
    assert rolled_out(kubectl, namespace).splitlines()[-1] == 'daemon set "agent" successfully rolled out'
    now = pods(kubectl, namespace)
    assert len(now) == 3 and not old & {p["metadata"]["name"] for p in now}
    assert {p["metadata"]["labels"]["pod-template-generation"] for p in now} == {"2"}
    assert {p["spec"]["containers"][0]["image"] for p in now} == {"registry.k8s.io/e2e-test-images/agnhost:2.48"}


def test_kubectl_taint_moves_daemon_pods_off_a_node_and_back(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=AGENT)
    rolled_out(kubectl, namespace)
    assert kubectl("taint", "node", "node-3", "dedicated=db:NoExecute").stdout == "node/node-3 tainted\n"
    try:
        poll(lambda: sorted(by_node(kubectl, namespace)) == ["node-1", "node-2"], "the pod leaving node-3")
        assert kubectl("get", "ds", "agent", "-n", namespace, "-o", "jsonpath={.status.desiredNumberScheduled}"
                       ).stdout == "2"
        taints = json.loads(kubectl("get", "node", "node-3", "-o", "jsonpath={.spec.taints}").stdout)
        assert taints == [{"key": "dedicated", "value": "db", "effect": "NoExecute"}]
    finally:
        kubectl("taint", "node", "node-3", "dedicated=db:NoExecute-")
    poll(lambda: sorted(by_node(kubectl, namespace)) == list(NODES), "a pod back on node-3")


def test_daemon_pods_stay_on_a_stopped_node_and_run_again_when_it_starts(api, kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=AGENT)
    rolled_out(kubectl, namespace)
    before = {node: p["metadata"]["name"] for node, p in by_node(kubectl, namespace).items()}
    api.run(api.cluster.stop_node("node-2"))
    try:
        on_node_2 = [p for p in pods(kubectl, namespace) if p["spec"]["nodeName"] == "node-2"]
        assert [p["metadata"]["name"] for p in on_node_2] == [before["node-2"]]
        assert not ready(on_node_2[0])
        node = json.loads(kubectl("get", "node", "node-2", "-o", "json").stdout)
        assert {(t["key"], t["effect"]) for t in node["spec"]["taints"]} == {
            ("node.kubernetes.io/unreachable", "NoSchedule"), ("node.kubernetes.io/unreachable", "NoExecute")}
        poll(lambda: kubectl("get", "ds", "agent", "-n", namespace, "-o", "jsonpath={.status.numberReady}"
                             ).stdout == "2", "status counting the stopped node's pod not ready")
    finally:
        api.run(api.cluster.start_node("node-2"))
    after = poll(lambda: by_node(kubectl, namespace) if len(by_node(kubectl, namespace)) == 3 else None,
                 "every daemon pod ready again")
    assert {node: p["metadata"]["name"] for node, p in after.items()} == before
    assert "taints" not in json.loads(kubectl("get", "node", "node-2", "-o", "json").stdout)["spec"]


def test_internal_traffic_policy_local_answers_from_the_clients_node(api, kubectl, namespace):
    for text in (AGENT, CLIENTS, LOCAL_SERVICE):
        kubectl("apply", "-n", namespace, "-f", "-", input=text)
    rolled_out(kubectl, namespace)
    rolled_out(kubectl, namespace, "client")
    agents = by_node(kubectl, namespace)
    clients = poll(lambda: by_node(kubectl, namespace, "client"), "a ready client on every node")
    ip = kubectl("get", "svc", "agent", "-n", namespace, "-o", "jsonpath={.spec.clusterIP}").stdout
    for node in NODES:
        client = clients[node]["metadata"]["name"]
        for _ in range(3):
            result = api.run(api.cluster.exec(client, ["sh", "-c", f'curl -sS --max-time 5 --interface "$POD_IP" '
                                                                   f"http://{ip}/hostname"], namespace=namespace))
            assert result.returncode == 0, result.stderr
            assert result.stdout == agents[node]["metadata"]["name"], node


def test_deleting_the_daemon_set_deletes_its_pods(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=AGENT)
    rolled_out(kubectl, namespace)
    assert kubectl("delete", "ds", "agent", "-n", namespace).stdout == 'daemonset.apps "agent" deleted\n'
    poll(lambda: not json.loads(kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"],
         "the daemon pods gone")


def test_the_official_client_reads_daemon_sets_and_status(api, kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=AGENT)
    rolled_out(kubectl, namespace)
    with config.new_client_from_config(config_file=str(api.cluster.state.directory / KUBECONFIG)) as api_client:
        apps = client.AppsV1Api(api_client)
        (ds,) = apps.list_namespaced_daemon_set(namespace).items
        assert (ds.status.desired_number_scheduled, ds.status.number_ready, ds.status.number_misscheduled) == (3, 3, 0)
        assert ds.spec.update_strategy.rolling_update.max_unavailable == 1
        status = apps.read_namespaced_daemon_set_status("agent", namespace).status
        assert status.updated_number_scheduled == 3


def test_a_cordoned_node_keeps_and_gets_daemon_pods(kubectl, namespace):
    assert kubectl("cordon", "node-1").stdout == "node/node-1 cordoned\n"
    try:
        assert "SchedulingDisabled" in kubectl("get", "node", "node-1").stdout
        kubectl("apply", "-n", namespace, "-f", "-", input=AGENT)
        rolled_out(kubectl, namespace)
        assert sorted(by_node(kubectl, namespace)) == list(NODES)
    finally:
        kubectl("uncordon", "node-1")
