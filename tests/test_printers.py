"""Golden tests for netemu.printers: kubectl's tables, -o yaml/json and describe text.

Objects are built with codec.from_dict from the walkthrough's examples (the my-nginx Deployment
with two running pods, services of every type). In describe goldens a line ending in ``$`` has
trailing spaces that kubectl prints too; the ``$`` itself is not part of the output.
"""
from __future__ import annotations

import json
import re
import textwrap
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import yaml

from netemu import printers
from netemu.api import codec
from netemu.api.objects import DaemonSet, Deployment, EndpointSlice, Namespace, Node, Pod, ReplicaSet, Service, StatefulSet
from netemu.api.batch import CronJob, Job
from netemu.errors import InvalidError, NotFoundError
from netemu.printers import Event, describe, render_json, render_table, render_yaml

NOW = datetime(2024, 5, 1, 10, 5, 30, tzinfo=timezone.utc)


def golden(text: str) -> str:
    """Dedent, drop the first newline, and strip the ``$`` end-of-line markers."""
    lines = textwrap.dedent(text).removeprefix("\n").split("\n")
    return "\n".join(line[:-1] if line.endswith("$") else line for line in lines)


def make(cls: type, data: dict[str, Any]) -> Any:
    obj, problems = codec.from_dict(cls, data)
    assert not problems, problems
    return obj


def meta(name: str, created: str, namespace: str | None = "default", **extra: Any) -> dict[str, Any]:
    out = {"name": name, "creationTimestamp": created, **extra}
    if namespace:
        out["namespace"] = namespace
    return out


# --------------------------------------------------------------------------- fixtures


def nginx_pod(name: str, node: str, host_ip: str, pod_ip: str) -> Pod:
    return make(Pod, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": meta(name, "2024-05-01T10:00:01Z", uid=f"uid-{name}", resourceVersion="812",
                         labels={"run": "my-nginx", "pod-template-hash": "6b7d4f5c9d"},
                         ownerReferences=[{"apiVersion": "apps/v1", "kind": "Deployment", "name": "my-nginx",
                                           "uid": "uid-my-nginx", "controller": True, "blockOwnerDeletion": True}]),
        "spec": {"containers": [{"name": "my-nginx", "image": "nginx",
                                 "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                 "env": [{"name": "MY_POD_IP", "valueFrom": {
                                     "fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}}],
                                 "readinessProbe": {"httpGet": {"path": "/", "port": 80}}}],
                 "nodeName": node, "priority": 0, "serviceAccountName": "default"},
        "status": {"phase": "Running", "hostIP": host_ip, "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
                   "startTime": "2024-05-01T10:00:01Z", "qosClass": "BestEffort",
                   "conditions": [{"type": t, "status": "True"}
                                  for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")],
                   "containerStatuses": [{"name": "my-nginx", "ready": True, "started": True, "restartCount": 0,
                                          "image": "nginx", "imageID": "netemu://images/nginx",
                                          "containerID": f"netemu://{name}/my-nginx",
                                          "state": {"running": {"startedAt": "2024-05-01T10:00:02Z"}}}]},
    })


POD_A = nginx_pod("my-nginx-6b7d4f5c9d-2xkqp", "node-1", "172.18.0.2", "10.244.1.5")
POD_B = nginx_pod("my-nginx-6b7d4f5c9d-9hvzm", "node-2", "172.18.0.3", "10.244.2.7")

DEPLOYMENT = make(Deployment, {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": meta("my-nginx", "2024-05-01T10:00:00Z", generation=1,
                     annotations={"deployment.kubernetes.io/revision": "1"}),
    "spec": {"selector": {"matchLabels": {"run": "my-nginx"}}, "replicas": 2,
             "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
             "template": {"metadata": {"labels": {"run": "my-nginx"}},
                          "spec": {"containers": [{"name": "my-nginx", "image": "nginx",
                                                   "ports": [{"containerPort": 80}]}]}}},
    "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2,
               "availableReplicas": 2,
               "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                              {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]},
})


def service(name: str, created: str, spec: dict[str, Any], status: dict[str, Any] | None = None,
            labels: dict[str, str] | None = None) -> Service:
    data: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Service", "metadata": meta(name, created),
        "spec": {"sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", **spec}}
    if labels:
        data["metadata"]["labels"] = labels
    if status:
        data["status"] = status
    return make(Service, data)


SVC_KUBERNETES = service("kubernetes", "2024-04-26T10:00:00Z", {
    "type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
    "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]},
    labels={"component": "apiserver", "provider": "kubernetes"})
SVC_NGINX = service("my-nginx", "2024-05-01T10:02:00Z", {
    "type": "ClusterIP", "clusterIP": "10.96.112.34", "clusterIPs": ["10.96.112.34"],
    "selector": {"run": "my-nginx"}, "internalTrafficPolicy": "Cluster",
    "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]}, labels={"run": "my-nginx"})
SVC_NODEPORT = service("my-nodeport", "2024-05-01T07:01:00Z", {
    "type": "NodePort", "clusterIP": "10.96.45.6", "clusterIPs": ["10.96.45.6"],
    "selector": {"app.kubernetes.io/name": "MyApp"}, "externalTrafficPolicy": "Cluster",
    "internalTrafficPolicy": "Cluster",
    "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80, "nodePort": 30007}]})
SVC_LB_PENDING = service("my-lb", "2024-04-29T07:00:00Z", {
    "type": "LoadBalancer", "clusterIP": "10.96.200.7", "clusterIPs": ["10.96.200.7"], "selector": {"app": "MyApp"},
    "externalTrafficPolicy": "Cluster", "internalTrafficPolicy": "Cluster",
    "ports": [{"port": 80, "protocol": "TCP", "targetPort": 9376, "nodePort": 31234}]})
SVC_LB_READY = service("my-lb-ready", "2024-05-01T10:05:25Z", {
    "type": "LoadBalancer", "clusterIP": "10.0.171.239", "clusterIPs": ["10.0.171.239"],
    "selector": {"app": "MyApp"}, "externalTrafficPolicy": "Cluster", "internalTrafficPolicy": "Cluster",
    "ports": [{"port": 80, "protocol": "TCP", "targetPort": 9376, "nodePort": 32121}]},
    status={"loadBalancer": {"ingress": [{"ip": "192.0.2.127", "ipMode": "VIP"}]}})
SVC_HEADLESS = service("my-headless", "2024-05-01T10:03:20Z", {
    "type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"], "selector": {"run": "my-nginx"},
    "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80}]})
SVC_EXTERNAL = make(Service, {
    "apiVersion": "v1", "kind": "Service", "metadata": meta("my-database", "2024-04-01T10:05:30Z", "prod"),
    "spec": {"type": "ExternalName", "externalName": "my.database.example.com", "sessionAffinity": "None"}})
SERVICES = [SVC_KUBERNETES, SVC_HEADLESS, SVC_LB_PENDING, SVC_LB_READY, SVC_NGINX, SVC_NODEPORT]


def endpoint(ip: str, pod: str, node: str, ready: bool = True) -> dict[str, Any]:
    return {"addresses": [ip], "conditions": {"ready": ready, "serving": ready, "terminating": False},
            "nodeName": node, "targetRef": {"kind": "Pod", "namespace": "default", "name": pod, "uid": f"uid-{pod}"}}


def endpoint_slice(name: str, service_name: str, created: str, ports: list[dict[str, Any]],
                   endpoints: list[dict[str, Any]]) -> EndpointSlice:
    return make(EndpointSlice, {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": meta(name, created, labels={
            "kubernetes.io/service-name": service_name,
            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}),
        "addressType": "IPv4", "ports": ports, "endpoints": endpoints})


SLICE_NGINX = endpoint_slice("my-nginx-x7k2p", "my-nginx", "2024-05-01T10:02:00Z",
                             [{"name": "", "port": 80, "protocol": "TCP"}],
                             [endpoint("10.244.1.5", POD_A.metadata.name, "node-1"),
                              endpoint("10.244.2.7", POD_B.metadata.name, "node-2")])
SLICE_BIG = endpoint_slice("my-nodeport-q8w4n", "my-nodeport", "2024-05-01T07:01:00Z",
                           [{"name": "", "port": 80, "protocol": "TCP"}],
                           [endpoint(f"10.244.1.{i}", f"myapp-{i}", "node-1", ready=(i != 11)) for i in range(10, 15)])
SLICE_EMPTY = endpoint_slice("my-lb-5rtzc", "my-lb", "2024-04-29T07:00:00Z",
                             [{"name": "", "port": 9376, "protocol": "TCP"}], [])
SLICE_HEADLESS = endpoint_slice("my-headless-m2v9d", "my-headless", "2024-05-01T10:03:20Z",
                                [{"name": "http", "port": 80, "protocol": "TCP"}],
                                [endpoint("10.244.1.5", POD_A.metadata.name, "node-1")])


def node(name: str, ip: str, labels: dict[str, str]) -> Node:
    cidr = f"10.244.{name[-1]}.0/24"
    return make(Node, {
        "apiVersion": "v1", "kind": "Node",
        "metadata": meta(name, "2024-04-26T09:58:00Z", None,
                         labels={"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", **labels}),
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
                   "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                   "message": "kubelet is posting ready status",
                                   "lastHeartbeatTime": "2024-05-01T10:05:00Z",
                                   "lastTransitionTime": "2024-04-26T09:58:10Z"}]}})


NODE_1 = node("node-1", "172.18.0.2", {"node-role.kubernetes.io/control-plane": ""})
NODE_2 = node("node-2", "172.18.0.3", {})
NS_DEFAULT = make(Namespace, {
    "apiVersion": "v1", "kind": "Namespace",
    "metadata": meta("default", "2024-04-26T09:58:00Z", None, labels={"kubernetes.io/metadata.name": "default"}),
    "status": {"phase": "Active"}})

POD_EVENTS = [
    Event(type="Normal", reason="Scheduled", source="default-scheduler",
          message="Successfully assigned default/my-nginx-6b7d4f5c9d-2xkqp to node-1",
          first_timestamp="2024-05-01T10:00:01Z", last_timestamp="2024-05-01T10:00:01Z"),
    Event(type="Warning", reason="Unhealthy", source="kubelet", message="Readiness probe failed: connection refused",
          first_timestamp="2024-05-01T10:00:02Z", last_timestamp="2024-05-01T10:00:04Z", count=3),
    Event(type="Normal", reason="Pulled", source="kubelet", message='Container image "nginx" already present on machine',
          first_timestamp="2024-05-01T10:00:01Z", last_timestamp="2024-05-01T10:00:01Z"),
]

# --------------------------------------------------------------------------- building blocks


@pytest.mark.parametrize("seconds, expected", [
    (-5, "<invalid>"), (-1, "0s"), (0, "0s"), (5, "5s"), (119, "119s"), (130, "2m10s"), (300, "5m"),
    (599, "9m59s"), (600, "10m"), (179 * 60 + 59, "179m"), (3 * 3600 + 4 * 60 + 30, "3h4m"), (3 * 3600, "3h"),
    (8 * 3600 + 5, "8h"), (47 * 3600, "47h"), (2 * 86400 + 3 * 3600 + 59, "2d3h"), (2 * 86400, "2d"),
    (8 * 86400, "8d"), (729 * 86400, "729d"), (730 * 86400, "2y"), (3 * 365 * 86400 + 2 * 86400, "3y2d"),
    (9 * 365 * 86400, "9y"),
], ids=lambda v: str(v))
def test_human_duration(seconds: int, expected: str) -> None:
    assert printers.human_duration(timedelta(seconds=seconds)) == expected


@pytest.mark.parametrize("text, expected", [
    # Go's text/tabwriter "elastic" example, left-aligned: b's and d's are in different column blocks.
    ("a\tb\tc\naa\tbb\tcc\naaa\t\naaaa\tdddd\teeee\n", "a    b  c\naa   bb cc\naaa  \naaaa dddd eeee\n"),
    # a line without tabs ends every column block
    ("x\ty\nheading\nlonger\tz\n", "x y\nheading\nlonger z\n"),
    ("no tabs at all", "no tabs at all"),
], ids=["elastic", "block-break", "plain"])
def test_tabwrite_matches_go(text: str, expected: str) -> None:
    assert printers.tabwrite(text, minwidth=0, padding=1) == expected


def test_tabwrite_minimum_width() -> None:
    assert printers.tabwrite("IP\tX\n1\ty\n", minwidth=6, padding=3) == "IP    X\n1     y\n"


@pytest.mark.parametrize("name, kind", [
    ("po", Pod), ("pod", Pod), ("pods", Pod), ("Pod", Pod), ("svc", Service), ("services", Service),
    ("deploy", Deployment), ("deployments.apps", Deployment), ("deployment.apps", Deployment),
    ("endpointslices", EndpointSlice), ("endpointslice.discovery.k8s.io", EndpointSlice),
    ("no", Node), ("nodes", Node), ("ns", Namespace), ("namespace", Namespace),
], ids=lambda v: v if isinstance(v, str) else v.KIND)
def test_resolve_kind(name: str, kind: type) -> None:
    assert printers.resolve_kind(name) is kind


def test_resolve_kind_unknown() -> None:
    with pytest.raises(NotFoundError, match='the server doesn\'t have a resource type "gadgets"'):
        printers.resolve_kind("gadgets")


@pytest.mark.parametrize("request_, kinds, with_kind", [
    ("pods", [Pod], False), ("all", [Pod, Service, DaemonSet, Deployment, ReplicaSet, StatefulSet, CronJob, Job], True),
    ("svc,po", [Service, Pod], True), ("all,svc", [Pod, Service, DaemonSet, Deployment, ReplicaSet, StatefulSet, CronJob, Job], True),
], ids=["single", "all", "list", "all-and-more"])
def test_resolve_kinds(request_: str, kinds: list[type], with_kind: bool) -> None:
    assert printers.resolve_kinds(request_) == (kinds, with_kind)


@pytest.mark.parametrize("args, kwargs, expected", [
    (("default", False), {}, "No resources found in default namespace."),
    (("prod", False), {}, "No resources found in prod namespace."),
    (("default", True), {}, "No resources found"),
    (("default", False), {"namespaced": False}, "No resources found"),
], ids=["namespace", "other-namespace", "all-namespaces", "cluster-scoped"])
def test_no_resources_message(args: tuple[str, bool], kwargs: dict[str, bool], expected: str) -> None:
    assert printers.no_resources_message(*args, **kwargs) == expected


# --------------------------------------------------------------------------- pod STATUS


def pod_with(status: dict[str, Any], *, spec: dict[str, Any] | None = None,
             metadata: dict[str, Any] | None = None) -> Pod:
    return make(Pod, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {**meta("p", "2024-05-01T10:05:00Z"), **(metadata or {})},
        "spec": spec or {"containers": [{"name": "c", "image": "nginx"}]},
        "status": status})


def running(name: str = "c", ready: bool = True, restarts: int = 0) -> dict[str, Any]:
    return {"name": name, "ready": ready, "restartCount": restarts, "state": {"running": {"startedAt": "x"}}}


def waiting(reason: str, name: str = "c", restarts: int = 0, **extra: Any) -> dict[str, Any]:
    return {"name": name, "ready": False, "restartCount": restarts, "state": {"waiting": {"reason": reason}}, **extra}


def terminated(reason: str, exit_code: int, name: str = "c", signal: int | None = None) -> dict[str, Any]:
    term: dict[str, Any] = {"reason": reason, "exitCode": exit_code}
    if signal:
        term["signal"] = signal
    return {"name": name, "ready": False, "restartCount": 0, "state": {"terminated": term}}


READY_CONDITIONS = [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}]
TWO_CONTAINERS = {"containers": [{"name": "web", "image": "nginx"}, {"name": "job", "image": "busybox"}]}
WITH_INIT = {"initContainers": [{"name": "init", "image": "busybox"}], "containers": [{"name": "c", "image": "nginx"}]}
WITH_SIDECAR = {"initContainers": [{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}],
                "containers": [{"name": "c", "image": "nginx"}]}
DELETING = {"deletionTimestamp": "2024-05-01T10:05:20Z", "deletionGracePeriodSeconds": 30}


@pytest.mark.parametrize("pod, ready, status, restarts", [
    (pod_with({"phase": "Pending"}), "0/1", "Pending", "0"),
    (pod_with({"phase": "Pending", "containerStatuses": [waiting("ContainerCreating")]}),
     "0/1", "ContainerCreating", "0"),
    (pod_with({"phase": "Running", "containerStatuses": [running()]}), "1/1", "Running", "0"),
    (pod_with({"phase": "Running", "containerStatuses": [running(ready=False)]}), "0/1", "Running", "0"),
    (pod_with({"phase": "Pending", "containerStatuses": [waiting("UnknownImage")]}), "0/1", "UnknownImage", "0"),
    (pod_with({"phase": "Running", "containerStatuses": [waiting(
        "CrashLoopBackOff", restarts=4,
        lastState={"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2024-05-01T10:04:50Z"}})]}),
     "0/1", "CrashLoopBackOff", "4 (40s ago)"),
    (pod_with({"phase": "Succeeded", "containerStatuses": [terminated("Completed", 0)]}), "0/1", "Completed", "0"),
    (pod_with({"phase": "Failed", "containerStatuses": [terminated("Error", 1)]}), "0/1", "Error", "0"),
    (pod_with({"phase": "Failed", "containerStatuses": [terminated("", 137)]}), "0/1", "ExitCode:137", "0"),
    (pod_with({"phase": "Failed", "containerStatuses": [terminated("", 137, signal=9)]}), "0/1", "Signal:9", "0"),
    (pod_with({"phase": "Running", "containerStatuses": [running()]}, metadata=DELETING), "1/1", "Terminating", "0"),
    (pod_with({"phase": "Succeeded", "containerStatuses": [terminated("Completed", 0)]}, metadata=DELETING),
     "0/1", "Completed", "0"),
    (pod_with({"phase": "Running", "reason": "NodeLost", "containerStatuses": [running()]}, metadata=DELETING),
     "1/1", "Unknown", "0"),
    (pod_with({"phase": "Running", "conditions": READY_CONDITIONS,
               "containerStatuses": [running("web"), terminated("Completed", 0, name="job")]}, spec=TWO_CONTAINERS),
     "1/2", "Running", "0"),
    (pod_with({"phase": "Running", "containerStatuses": [running("web"), terminated("Completed", 0, name="job")]},
              spec=TWO_CONTAINERS), "1/2", "NotReady", "0"),
    (pod_with({"phase": "Pending", "initContainerStatuses": [waiting("PodInitializing", name="init")]},
              spec=WITH_INIT), "0/1", "Init:0/1", "0"),
    (pod_with({"phase": "Pending", "initContainerStatuses": [waiting("UnknownImage", name="init")]},
              spec=WITH_INIT), "0/1", "Init:UnknownImage", "0"),
    (pod_with({"phase": "Pending", "initContainerStatuses": [terminated("Error", 2, name="init")]},
              spec=WITH_INIT), "0/1", "Init:Error", "0"),
    (pod_with({"phase": "Running", "conditions": READY_CONDITIONS,
               "initContainerStatuses": [{**running("proxy"), "started": True}],
               "containerStatuses": [running()]}, spec=WITH_SIDECAR), "2/2", "Running", "0"),
], ids=["pending", "container-creating", "running", "running-not-ready", "unknown-image", "crash-loop",
        "completed", "error", "exit-code", "signal", "terminating", "terminating-but-done", "node-lost",
        "sidecar-done-ready", "sidecar-done-not-ready", "init-running", "init-waiting", "init-error",
        "native-sidecar"])
def test_pod_ready_status_restarts(pod: Pod, ready: str, status: str, restarts: str) -> None:
    lines = render_table("pods", [pod], now=NOW).splitlines()
    assert re.split(r" {3,}", lines[1]) == ["p", ready, status, restarts, "30s"]
    assert printers.pod_status(pod) == status


# --------------------------------------------------------------------------- get


def test_get_pods() -> None:
    assert render_table("pods", [POD_A, POD_B], now=NOW) == golden("""
        NAME                        READY   STATUS    RESTARTS   AGE
        my-nginx-6b7d4f5c9d-2xkqp   1/1     Running   0          5m29s
        my-nginx-6b7d4f5c9d-9hvzm   1/1     Running   0          5m29s
        """)


def test_get_pods_wide() -> None:
    assert render_table("po", [POD_A, POD_B], wide=True, now=NOW) == golden("""
        NAME                        READY   STATUS    RESTARTS   AGE     IP           NODE     NOMINATED NODE   READINESS GATES
        my-nginx-6b7d4f5c9d-2xkqp   1/1     Running   0          5m29s   10.244.1.5   node-1   <none>           <none>
        my-nginx-6b7d4f5c9d-9hvzm   1/1     Running   0          5m29s   10.244.2.7   node-2   <none>           <none>
        """)


def test_get_pods_wide_unscheduled() -> None:
    pod = pod_with({"phase": "Pending"})
    lines = render_table("pods", [pod], wide=True, now=NOW).splitlines()
    assert re.split(r" {3,}", lines[1]) == ["p", "0/1", "Pending", "0", "30s", "<none>", "<none>", "<none>", "<none>"]


def test_get_pods_all_namespaces() -> None:
    other = make(Pod, {**codec.to_dict(POD_A), "metadata": {**codec.to_dict(POD_A)["metadata"], "namespace": "prod"}})
    assert render_table("pods", [POD_A, POD_B, other], all_namespaces=True, now=NOW) == golden("""
        NAMESPACE   NAME                        READY   STATUS    RESTARTS   AGE
        default     my-nginx-6b7d4f5c9d-2xkqp   1/1     Running   0          5m29s
        default     my-nginx-6b7d4f5c9d-9hvzm   1/1     Running   0          5m29s
        prod        my-nginx-6b7d4f5c9d-2xkqp   1/1     Running   0          5m29s
        """)


def test_get_services_of_every_type() -> None:
    assert render_table("svc", SERVICES, now=NOW) == golden("""
        NAME          TYPE           CLUSTER-IP     EXTERNAL-IP   PORT(S)        AGE
        kubernetes    ClusterIP      10.96.0.1      <none>        443/TCP        5d
        my-headless   ClusterIP      None           <none>        80/TCP         2m10s
        my-lb         LoadBalancer   10.96.200.7    <pending>     80:31234/TCP   2d3h
        my-lb-ready   LoadBalancer   10.0.171.239   192.0.2.127   80:32121/TCP   5s
        my-nginx      ClusterIP      10.96.112.34   <none>        80/TCP         3m30s
        my-nodeport   NodePort       10.96.45.6     <none>        80:30007/TCP   3h4m
        """)


def test_get_services_wide() -> None:
    assert render_table("services", [SVC_KUBERNETES, SVC_NGINX, SVC_NODEPORT], wide=True, now=NOW) == golden("""
        NAME          TYPE        CLUSTER-IP     EXTERNAL-IP   PORT(S)        AGE     SELECTOR
        kubernetes    ClusterIP   10.96.0.1      <none>        443/TCP        5d      <none>
        my-nginx      ClusterIP   10.96.112.34   <none>        80/TCP         3m30s   run=my-nginx
        my-nodeport   NodePort    10.96.45.6     <none>        80:30007/TCP   3h4m    app.kubernetes.io/name=MyApp
        """)


def test_get_services_all_namespaces_with_external_name() -> None:
    assert render_table("svc", [SVC_EXTERNAL, SVC_KUBERNETES, SVC_NGINX], all_namespaces=True, now=NOW) == golden("""
        NAMESPACE   NAME          TYPE           CLUSTER-IP     EXTERNAL-IP               PORT(S)   AGE
        prod        my-database   ExternalName   <none>         my.database.example.com   <none>    30d
        default     kubernetes    ClusterIP      10.96.0.1      <none>                    443/TCP   5d
        default     my-nginx      ClusterIP      10.96.112.34   <none>                    80/TCP    3m30s
        """)


@pytest.mark.parametrize("spec, ingress, wide, expected", [
    ({"type": "ClusterIP", "externalIPs": ["198.51.100.7"]}, [], False, "198.51.100.7"),
    ({"type": "NodePort"}, [], False, "<none>"),
    ({"type": "LoadBalancer"}, [], False, "<pending>"),
    ({"type": "LoadBalancer"}, [{"ip": "192.0.2.128"}, {"ip": "192.0.2.127"}], True, "192.0.2.127,192.0.2.128"),
    ({"type": "LoadBalancer"}, [{"ip": "192.0.2.128"}, {"ip": "192.0.2.127"}], False, "192.0.2.127,1..."),
    ({"type": "LoadBalancer"}, [{"hostname": "lb.example.com"}], False, "lb.example.com"),
    ({"type": "LoadBalancer", "externalIPs": ["198.51.100.7"]}, [{"ip": "192.0.2.127"}], False,
     "192.0.2.127,198.51.100.7"),
], ids=["cluster-ip-external-ips", "node-port", "lb-pending", "lb-two-ips-wide", "lb-two-ips-clipped",
        "lb-hostname", "lb-and-external-ips"])
def test_service_external_ip(spec: dict[str, Any], ingress: list[dict[str, str]], wide: bool, expected: str) -> None:
    svc = service("s", "2024-05-01T10:05:00Z", {"clusterIP": "10.96.0.9", "ports": [{"port": 80}], **spec},
                  status={"loadBalancer": {"ingress": ingress}} if ingress else None)
    cells = re.split(r" {3,}", render_table("svc", [svc], wide=wide, now=NOW).splitlines()[1])
    assert cells[3] == expected


def test_get_deployments() -> None:
    assert render_table("deploy", [DEPLOYMENT], now=NOW) == golden("""
        NAME       READY   UP-TO-DATE   AVAILABLE   AGE
        my-nginx   2/2     2            2           5m30s
        """)
    assert render_table("deployments", [DEPLOYMENT], wide=True, now=NOW) == golden("""
        NAME       READY   UP-TO-DATE   AVAILABLE   AGE     CONTAINERS   IMAGES   SELECTOR
        my-nginx   2/2     2            2           5m30s   my-nginx     nginx    run=my-nginx
        """)


def test_deployment_selector_expressions() -> None:
    data = codec.to_dict(DEPLOYMENT)
    data["spec"]["selector"] = {"matchLabels": {"run": "my-nginx"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["web", "api"]},
        {"key": "canary", "operator": "DoesNotExist"}, {"key": "zone", "operator": "NotIn", "values": ["b"]}]}
    line = render_table("deploy", [make(Deployment, data)], wide=True, now=NOW).splitlines()[1]
    assert line.endswith("   !canary,run=my-nginx,tier in (api,web),zone notin (b)")


def test_get_endpointslices() -> None:
    nameless = endpoint_slice("odd-p3k9v", "odd", "2024-05-01T10:05:00Z",
                              [{"name": "http", "protocol": "TCP"}, {"protocol": "TCP"}], [])
    assert render_table("endpointslices", [SLICE_NGINX, SLICE_BIG, SLICE_EMPTY, nameless], now=NOW) == golden("""
        NAME                ADDRESSTYPE   PORTS    ENDPOINTS                                         AGE
        my-nginx-x7k2p      IPv4          80       10.244.1.5,10.244.2.7                             3m30s
        my-nodeport-q8w4n   IPv4          80       10.244.1.10,10.244.1.11,10.244.1.12 + 2 more...   3h4m
        my-lb-5rtzc         IPv4          9376     <unset>                                           2d3h
        odd-p3k9v           IPv4          http,*   <unset>                                           30s
        """)


def test_get_nodes() -> None:
    assert render_table("nodes", [NODE_1, NODE_2], now=NOW) == golden("""
        NAME     STATUS   ROLES           AGE   VERSION
        node-1   Ready    control-plane   5d    v1.31.0-netemu
        node-2   Ready    <none>          5d    v1.31.0-netemu
        """)


def test_get_nodes_wide_and_all_namespaces() -> None:
    # -A adds no NAMESPACE column for cluster-scoped kinds.
    assert render_table("no", [NODE_1, NODE_2], wide=True, all_namespaces=True, now=NOW) == golden("""
        NAME     STATUS   ROLES           AGE   VERSION          INTERNAL-IP   EXTERNAL-IP   OS-IMAGE    KERNEL-VERSION   CONTAINER-RUNTIME
        node-1   Ready    control-plane   5d    v1.31.0-netemu   172.18.0.2    <none>        <unknown>   <unknown>        netemu://0.1.0
        node-2   Ready    <none>          5d    v1.31.0-netemu   172.18.0.3    <none>        <unknown>   <unknown>        netemu://0.1.0
        """)


def test_node_status_column() -> None:
    data = codec.to_dict(NODE_2)
    data["spec"]["unschedulable"] = True
    data["status"]["conditions"][0]["status"] = "False"
    cordoned = make(Node, data)
    data["status"]["conditions"] = []
    unknown = make(Node, data)
    rows = render_table("nodes", [cordoned, unknown], now=NOW).splitlines()
    assert [re.split(r" {3,}", r)[1] for r in rows[1:]] == ["NotReady,SchedulingDisabled", "Unknown,SchedulingDisabled"]


def test_get_namespaces() -> None:
    assert render_table("ns", [NS_DEFAULT], now=NOW) == golden("""
        NAME      STATUS   AGE
        default   Active   5d
        """)


def test_get_all() -> None:
    objs = [POD_A, POD_B, SVC_KUBERNETES, SVC_NGINX, DEPLOYMENT]
    assert render_table("all", objs, now=NOW) == golden("""
        NAME                            READY   STATUS    RESTARTS   AGE
        pod/my-nginx-6b7d4f5c9d-2xkqp   1/1     Running   0          5m29s
        pod/my-nginx-6b7d4f5c9d-9hvzm   1/1     Running   0          5m29s

        NAME                 TYPE        CLUSTER-IP     EXTERNAL-IP   PORT(S)   AGE
        service/kubernetes   ClusterIP   10.96.0.1      <none>        443/TCP   5d
        service/my-nginx     ClusterIP   10.96.112.34   <none>        80/TCP    3m30s

        NAME                       READY   UP-TO-DATE   AVAILABLE   AGE
        deployment.apps/my-nginx   2/2     2            2           5m30s
        """)


def test_get_all_namespaces_skips_empty_kinds() -> None:
    assert render_table("all", [SVC_KUBERNETES], all_namespaces=True, now=NOW) == golden("""
        NAMESPACE   NAME                 TYPE        CLUSTER-IP   EXTERNAL-IP   PORT(S)   AGE
        default     service/kubernetes   ClusterIP   10.96.0.1    <none>        443/TCP   5d
        """)


def test_get_nothing_prints_nothing() -> None:
    assert render_table("all", [], now=NOW) == ""
    assert render_table("pods", [], now=NOW) == ""


def test_get_rejects_objects_of_another_kind() -> None:
    with pytest.raises(TypeError):
        render_table("pods", [SVC_NGINX], now=NOW)


# --------------------------------------------------------------------------- -o yaml / -o json


def test_yaml_single_object_round_trip() -> None:
    text = render_yaml([POD_A])
    assert text.startswith("apiVersion: v1\nkind: Pod\nmetadata:\n")
    assert yaml.safe_load(text) == codec.to_dict(POD_A)
    assert make(Pod, yaml.safe_load(text)) == POD_A


def test_yaml_list_round_trip() -> None:
    objs = [SVC_LB_READY, SVC_EXTERNAL, DEPLOYMENT, SLICE_NGINX, NODE_1]
    text = render_yaml(objs)
    assert text.startswith("apiVersion: v1\nitems:\n- apiVersion: v1\n  kind: Service\n")
    assert text.endswith('kind: List\nmetadata:\n  resourceVersion: ""\n')
    assert yaml.safe_load(text) == {"apiVersion": "v1", "items": [codec.to_dict(o) for o in objs],
                                    "kind": "List", "metadata": {"resourceVersion": ""}}


@pytest.mark.parametrize("objs, as_list, kind", [
    ([POD_A], None, "Pod"), ([POD_A], True, "List"), ([POD_A, POD_B], None, "List"), ([], None, "List"),
], ids=["one", "one-as-list", "two", "none"])
def test_yaml_and_json_shape(objs: list[Any], as_list: bool | None, kind: str) -> None:
    assert yaml.safe_load(render_yaml(objs, as_list=as_list))["kind"] == kind
    assert json.loads(render_json(objs, as_list=as_list))["kind"] == kind


def test_yaml_quotes_like_kubectl() -> None:
    text = render_yaml([POD_A])
    assert '  creationTimestamp: "2024-05-01T10:00:01Z"\n' in text
    assert '  resourceVersion: "812"\n' in text
    assert '  - status: "True"\n    type: Ready\n' in text
    assert "  containers:\n  - env:\n    - name: MY_POD_IP\n" in text  # lists not indented under their key


def test_yaml_multiline_string_is_a_literal_block() -> None:
    data = codec.to_dict(SVC_NGINX)
    data["metadata"]["annotations"] = {"note": "line one\nline two"}
    text = render_yaml([make(Service, data)])
    assert "  annotations:\n    note: |-\n      line one\n      line two\n" in text


def test_json_round_trip_and_format() -> None:
    objs = [POD_A, SVC_NODEPORT]
    text = render_json(objs)
    assert json.loads(text) == {"apiVersion": "v1", "items": [codec.to_dict(o) for o in objs],
                                "kind": "List", "metadata": {"resourceVersion": ""}}
    assert text.startswith('{\n    "apiVersion": "v1",\n    "items": [\n        {\n')
    assert text.endswith('    "kind": "List",\n    "metadata": {\n        "resourceVersion": ""\n    }\n}\n')
    assert json.loads(render_json([SVC_NGINX])) == codec.to_dict(SVC_NGINX)


def test_json_escapes_html_like_go() -> None:
    data = codec.to_dict(SVC_NGINX)
    data["metadata"]["annotations"] = {"note": "<b>&"}
    text = render_json([make(Service, data)])
    assert '"note": "\\u003cb\\u003e\\u0026"' in text
    assert json.loads(text)["metadata"]["annotations"]["note"] == "<b>&"


# --------------------------------------------------------------------------- describe


def test_describe_pod_with_events_and_extra_section() -> None:
    connections = [("Connections", ["10.244.2.7:41234\t-> 10.244.1.5:80\tOK",
                                    "10.244.2.7:41240\t-> 10.244.1.5:80\tRESET"])]
    text = describe(POD_A, events=POD_EVENTS, related={"sections": connections}, now=NOW)
    assert text == golden("""
        Name:             my-nginx-6b7d4f5c9d-2xkqp
        Namespace:        default
        Priority:         0
        Service Account:  default
        Node:             node-1/172.18.0.2
        Start Time:       Wed, 01 May 2024 10:00:01 +0000
        Labels:           pod-template-hash=6b7d4f5c9d
                          run=my-nginx
        Annotations:      <none>
        Status:           Running
        IP:               10.244.1.5
        IPs:
          IP:           10.244.1.5
        Controlled By:  Deployment/my-nginx
        Containers:
          my-nginx:
            Container ID:   netemu://my-nginx-6b7d4f5c9d-2xkqp/my-nginx
            Image:          nginx
            Image ID:       netemu://images/nginx
            Port:           80/TCP
            Host Port:      0/TCP
            State:          Running
              Started:      Wed, 01 May 2024 10:00:02 +0000
            Ready:          True
            Restart Count:  0
            Readiness:      http-get http://:80/ delay=0s timeout=1s period=10s #success=1 #failure=3
            Environment:
              MY_POD_IP:  10.244.1.5 (v1:status.podIP)
            Mounts:       <none>
        Conditions:
          Type              Status
          Initialized       True $
          Ready             True $
          ContainersReady   True $
          PodScheduled      True $
        Volumes:            <none>
        QoS Class:          BestEffort
        Node-Selectors:     <none>
        Tolerations:        <none>
        Connections:
          10.244.2.7:41234  -> 10.244.1.5:80  OK
          10.244.2.7:41240  -> 10.244.1.5:80  RESET
        Events:
          Type     Reason     Age                    From               Message
          ----     ------     ----                   ----               -------
          Normal   Scheduled  5m29s                  default-scheduler  Successfully assigned default/my-nginx-6b7d4f5c9d-2xkqp to node-1
          Normal   Pulled     5m29s                  kubelet            Container image "nginx" already present on machine
          Warning  Unhealthy  5m26s (x3 over 5m28s)  kubelet            Readiness probe failed: connection refused
        """)


def test_describe_pod_states() -> None:
    pod = pod_with({"phase": "Running", "containerStatuses": [{
        **waiting("CrashLoopBackOff", restarts=4),
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": "2024-05-01T10:04:40Z",
                                     "finishedAt": "2024-05-01T10:04:50Z"}}}]},
        metadata=DELETING,
        spec={"containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c"], "args": ["sleep 1; exit 1"],
                              "livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]}},
                              "env": [{"name": "GREETING", "value": "hello\nworld"}]}]})
    assert describe(pod, events=None, now=NOW) == golden("""
        Name:                      p
        Namespace:                 default
        Node:                      <none>
        Labels:                    <none>
        Annotations:               <none>
        Status:                    Terminating (lasts 10s)
        Termination Grace Period:  30s
        IP:                        $
        IPs:                       <none>
        Containers:
          c:
            Container ID:  $
            Image:         busybox
            Image ID:      $
            Port:          <none>
            Host Port:     <none>
            Command:
              sh
              -c
            Args:
              sleep 1; exit 1
            State:          Waiting
              Reason:       CrashLoopBackOff
            Last State:     Terminated
              Reason:       Error
              Exit Code:    1
              Started:      Wed, 01 May 2024 10:04:40 +0000
              Finished:     Wed, 01 May 2024 10:04:50 +0000
            Ready:          False
            Restart Count:  4
            Liveness:       exec [cat /tmp/healthy] delay=0s timeout=1s period=10s #success=1 #failure=3
            Environment:
              GREETING:  hello
                         world
            Mounts:      <none>
        Volumes:         <none>
        QoS Class:       BestEffort
        Node-Selectors:  <none>
        Tolerations:     <none>
        """)


def test_describe_pending_pod_has_no_node_and_no_ips() -> None:
    text = describe(pod_with({"phase": "Pending"}), now=NOW)
    assert "Node:         <none>\n" in text
    assert "IP:           \nIPs:          <none>\n" in text
    assert text.endswith("Tolerations:      <none>\nEvents:           <none>\n")


def test_describe_deployment() -> None:
    assert describe(DEPLOYMENT, now=NOW) == golden("""
        Name:                   my-nginx
        Namespace:              default
        CreationTimestamp:      Wed, 01 May 2024 10:00:00 +0000
        Labels:                 <none>
        Annotations:            deployment.kubernetes.io/revision: 1
        Selector:               run=my-nginx
        Replicas:               2 desired | 2 updated | 2 total | 2 available | 0 unavailable
        StrategyType:           RollingUpdate
        MinReadySeconds:        0
        RollingUpdateStrategy:  25% max unavailable, 25% max surge
        Pod Template:
          Labels:  run=my-nginx
          Containers:
           my-nginx:
            Image:         nginx
            Port:          80/TCP
            Host Port:     0/TCP
            Environment:   <none>
            Mounts:        <none>
          Volumes:         <none>
          Node-Selectors:  <none>
          Tolerations:     <none>
        Conditions:
          Type          Status  Reason
          ----          ------  ------
          Available     True    MinimumReplicasAvailable
          Progressing   True    NewReplicaSetAvailable
        Events:         <none>
        """)


def test_describe_cluster_ip_service_with_endpoint_slices() -> None:
    assert describe(SVC_NGINX, related={"endpoint_slices": [SLICE_NGINX]}, now=NOW) == golden("""
        Name:                     my-nginx
        Namespace:                default
        Labels:                   run=my-nginx
        Annotations:              <none>
        Selector:                 run=my-nginx
        Type:                     ClusterIP
        IP Family Policy:         SingleStack
        IP Families:              IPv4
        IP:                       10.96.112.34
        IPs:                      10.96.112.34
        Port:                     <unset>  80/TCP
        TargetPort:               80/TCP
        Endpoints:                10.244.1.5:80,10.244.2.7:80
        Session Affinity:         None
        Internal Traffic Policy:  Cluster
        Events:                   <none>
        """)


def test_describe_node_port_service() -> None:
    # 10.244.1.11 is not ready; past three addresses kubectl counts the rest as "more".
    assert describe(SVC_NODEPORT, related={"endpoint_slices": [SLICE_BIG]}, now=NOW) == golden("""
        Name:                     my-nodeport
        Namespace:                default
        Labels:                   <none>
        Annotations:              <none>
        Selector:                 app.kubernetes.io/name=MyApp
        Type:                     NodePort
        IP Family Policy:         SingleStack
        IP Families:              IPv4
        IP:                       10.96.45.6
        IPs:                      10.96.45.6
        Port:                     <unset>  80/TCP
        TargetPort:               80/TCP
        NodePort:                 <unset>  30007/TCP
        Endpoints:                10.244.1.10:80,10.244.1.12:80,10.244.1.13:80 + 1 more...
        Session Affinity:         None
        External Traffic Policy:  Cluster
        Internal Traffic Policy:  Cluster
        Events:                   <none>
        """)


def test_describe_pending_load_balancer_without_ready_endpoints() -> None:
    assert describe(SVC_LB_PENDING, related={"endpoint_slices": [SLICE_EMPTY]}, now=NOW) == golden("""
        Name:                     my-lb
        Namespace:                default
        Labels:                   <none>
        Annotations:              <none>
        Selector:                 app=MyApp
        Type:                     LoadBalancer
        IP Family Policy:         SingleStack
        IP Families:              IPv4
        IP:                       10.96.200.7
        IPs:                      10.96.200.7
        Port:                     <unset>  80/TCP
        TargetPort:               9376/TCP
        NodePort:                 <unset>  31234/TCP
        Endpoints:                $
        Session Affinity:         None
        External Traffic Policy:  Cluster
        Internal Traffic Policy:  Cluster
        Events:                   <none>
        """)


def test_describe_load_balancer_with_ingress_and_given_endpoints() -> None:
    events = [Event(type="Normal", reason="EnsuredLoadBalancer", source="service-controller",
                    message="Ensured load balancer", first_timestamp="2024-05-01T10:05:27Z",
                    last_timestamp="2024-05-01T10:05:27Z")]
    related: printers.Related = {"endpoints": ["10.244.1.5:9376", "10.244.2.7:9376"]}
    assert describe(SVC_LB_READY, events=events, related=related, now=NOW) == golden("""
        Name:                     my-lb-ready
        Namespace:                default
        Labels:                   <none>
        Annotations:              <none>
        Selector:                 app=MyApp
        Type:                     LoadBalancer
        IP Family Policy:         SingleStack
        IP Families:              IPv4
        IP:                       10.0.171.239
        IPs:                      10.0.171.239
        LoadBalancer Ingress:     192.0.2.127 (VIP)
        Port:                     <unset>  80/TCP
        TargetPort:               9376/TCP
        NodePort:                 <unset>  32121/TCP
        Endpoints:                10.244.1.5:9376,10.244.2.7:9376
        Session Affinity:         None
        External Traffic Policy:  Cluster
        Internal Traffic Policy:  Cluster
        Events:
          Type    Reason               Age   From                Message
          ----    ------               ----  ----                -------
          Normal  EnsuredLoadBalancer  3s    service-controller  Ensured load balancer
        """)


def test_describe_headless_service() -> None:
    assert describe(SVC_HEADLESS, related={"endpoint_slices": [SLICE_HEADLESS]}, now=NOW) == golden("""
        Name:              my-headless
        Namespace:         default
        Labels:            <none>
        Annotations:       <none>
        Selector:          run=my-nginx
        Type:              ClusterIP
        IP Family Policy:  SingleStack
        IP Families:       IPv4
        IP:                None
        IPs:               None
        Port:              http  80/TCP
        TargetPort:        80/TCP
        Endpoints:         10.244.1.5:80
        Session Affinity:  None
        Events:            <none>
        """)


def test_describe_external_name_service() -> None:
    assert describe(SVC_EXTERNAL, now=NOW) == golden("""
        Name:              my-database
        Namespace:         prod
        Labels:            <none>
        Annotations:       <none>
        Selector:          <none>
        Type:              ExternalName
        IP Families:       <none>
        IP:                $
        IPs:               <none>
        External Name:     my.database.example.com
        Session Affinity:  None
        Events:            <none>
        """)


def test_describe_node() -> None:
    assert describe(NODE_1, related={"pods": [POD_A]}, now=NOW) == golden("""
        Name:               node-1
        Roles:              control-plane
        Labels:             kubernetes.io/hostname=node-1
                            kubernetes.io/os=linux
                            node-role.kubernetes.io/control-plane=
        Annotations:        <none>
        CreationTimestamp:  Fri, 26 Apr 2024 09:58:00 +0000
        Taints:             <none>
        Unschedulable:      false
        Lease:
          HolderIdentity:  node-1
          AcquireTime:     <unset>
          RenewTime:       Wed, 01 May 2024 10:05:00 +0000
        Conditions:
          Type    Status  LastHeartbeatTime                 LastTransitionTime                Reason         Message
          ----    ------  -----------------                 ------------------                ------         -------
          Ready   True    Wed, 01 May 2024 10:05:00 +0000   Fri, 26 Apr 2024 09:58:10 +0000   KubeletReady   kubelet is posting ready status
        Addresses:
          InternalIP:  172.18.0.2
          Hostname:    node-1
        System Info:
          Machine ID:                 $
          System UUID:                $
          Boot ID:                    $
          Kernel Version:             $
          OS Image:                   $
          Operating System:           $
          Architecture:               $
          Container Runtime Version:  netemu://0.1.0
          Kubelet Version:            v1.31.0-netemu
          Kube-Proxy Version:         $
        PodCIDR:                      10.244.1.0/24
        PodCIDRs:                     10.244.1.0/24
        Non-terminated Pods:          (1 in total)
          Namespace                   Name                         CPU Requests  CPU Limits  Memory Requests  Memory Limits  Age
          ---------                   ----                         ------------  ----------  ---------------  -------------  ---
          default                     my-nginx-6b7d4f5c9d-2xkqp    0 (0%)        0 (0%)      0 (0%)           0 (0%)         5m29s
        Allocated resources:
          (Total limits may be over 100 percent, i.e., overcommitted.)
          Resource           Requests  Limits
          --------           --------  ------
          cpu                0 (0%)    0 (0%)
          memory             0 (0%)    0 (0%)
          ephemeral-storage  0 (0%)    0 (0%)
        Events:              <none>
        """)


def test_describe_namespace() -> None:
    assert describe(NS_DEFAULT, now=NOW) == golden("""
        Name:         default
        Labels:       kubernetes.io/metadata.name=default
        Annotations:  <none>
        Status:       Active

        No resource quota.

        No LimitRange resource.
        """)


def test_describe_endpoint_slice() -> None:
    assert describe(SLICE_NGINX, now=NOW) == golden("""
        Name:         my-nginx-x7k2p
        Namespace:    default
        Labels:       endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io
                      kubernetes.io/service-name=my-nginx
        Annotations:  <none>
        AddressType:  IPv4
        Ports:
          Name     Port  Protocol
          ----     ----  --------
          <unset>  80    TCP
        Endpoints:
          - Addresses:  10.244.1.5
            Conditions:
              Ready:    true
            Hostname:   <unset>
            TargetRef:  Pod/my-nginx-6b7d4f5c9d-2xkqp
            NodeName:   node-1
            Zone:       <unset>
          - Addresses:  10.244.2.7
            Conditions:
              Ready:    true
            Hostname:   <unset>
            TargetRef:  Pod/my-nginx-6b7d4f5c9d-9hvzm
            NodeName:   node-2
            Zone:       <unset>
        Events:         <none>
        """)


def test_describe_annotations_skip_last_applied_and_wrap_long_values() -> None:
    data = codec.to_dict(SVC_NGINX)
    data["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": '{"apiVersion":"v1"}\n',
        "example.com/long": "x" * 150, "example.com/short": "yes"}
    text = describe(make(Service, data), now=NOW)
    assert ("Annotations:              example.com/long:\n"
            f"                            {'x' * 138}...\n"
            "                          example.com/short: yes\n") in text


def test_describe_extra_section_without_lines() -> None:
    text = describe(SVC_NGINX, related={"sections": [("Connections", [])]}, now=NOW)
    assert "Internal Traffic Policy:  Cluster\nConnections:              <none>\nEvents:" in text


def test_describe_times_follow_the_zone_of_now() -> None:
    local_now = NOW.astimezone(timezone(timedelta(hours=2)))
    assert "CreationTimestamp:      Wed, 01 May 2024 12:00:00 +0200\n" in describe(DEPLOYMENT, now=local_now)


def test_naive_now_is_utc() -> None:
    naive = NOW.replace(tzinfo=None)
    assert render_table("deploy", [DEPLOYMENT], now=naive) == render_table("deploy", [DEPLOYMENT], now=NOW)
    assert describe(POD_A, events=POD_EVENTS, now=naive) == describe(POD_A, events=POD_EVENTS, now=NOW)


def test_describe_refuses_unknown_types() -> None:
    with pytest.raises(InvalidError, match="no description has been implemented for str"):
        describe("pod", now=NOW)
