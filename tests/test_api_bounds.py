"""Bad input bounds: integers too wide for their Go type refused in the API server's words, IP
families a single-stack cluster does not serve, and the cluster's caps (pods, objects, request
size) refusing work before memory is at risk, on the API server and on a running cluster."""
from __future__ import annotations

import asyncio

import pytest

from netemu.api import load_text
from netemu.apiserver import ApiServer
from netemu.config import DEFAULT_MAX_OBJECTS, DEFAULT_MAX_PODS, DEFAULT_MAX_REQUEST_BYTES, ClusterConfig
from netemu.errors import ClusterError, InvalidError, ManifestErrors
from netemu.store import Store

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: c, image: registry.k8s.io/e2e-test-images/agnhost:2.53, args: [netexec]}}]
"""


def deployment(name: str = "web", replicas: int = 1, **fields: str) -> str:
    text = DEPLOYMENT.format(name=name, replicas=replicas)
    for path, value in fields.items():
        text = text.replace(path, value)
    return text


def refusal(text: str) -> str:
    with pytest.raises(ManifestErrors) as caught:
        load_text(text)
    return str(caught.value)


# ---------------------------------------------------------------- integer widths, in the decoder's words

BIG = 2147483648  # 2^31: one past int32
HUGE = 9223372036854775808  # 2^63: one past int64
WIDTHS = [
    ("replicas", deployment(replicas=BIG), "DeploymentSpec.spec.replicas", "int32", BIG),
    ("negative-replicas", deployment(replicas=-BIG - 1), "DeploymentSpec.spec.replicas", "int32", -BIG - 1),
    ("revisionHistoryLimit", deployment().replace("  replicas: 1\n", f"  replicas: 1\n  revisionHistoryLimit: {BIG}\n"),
     "DeploymentSpec.spec.revisionHistoryLimit", "int32", BIG),
    ("minReadySeconds", deployment().replace("  replicas: 1\n", f"  replicas: 1\n  minReadySeconds: {BIG}\n"),
     "DeploymentSpec.spec.minReadySeconds", "int32", BIG),
    ("progressDeadlineSeconds",
     deployment().replace("  replicas: 1\n", f"  replicas: 1\n  progressDeadlineSeconds: {BIG}\n"),
     "DeploymentSpec.spec.progressDeadlineSeconds", "int32", BIG),
    ("maxSurge", deployment().replace("  replicas: 1\n", "  replicas: 1\n  strategy: {rollingUpdate: {maxSurge: "
                                      f"{BIG}}}}}\n"),
     "RollingUpdateDeployment.spec.strategy.rollingUpdate.maxSurge", "int32", BIG),
    ("containerPort", deployment().replace("args: [netexec]", f"ports: [{{containerPort: {BIG}}}]"),
     "ContainerPort.spec.template.spec.containers.ports.containerPort", "int32", BIG),
    ("periodSeconds", deployment().replace("args: [netexec]",
                                           f"readinessProbe: {{tcpSocket: {{port: 80}}, periodSeconds: {BIG}}}"),
     "Probe.spec.template.spec.containers.readinessProbe.periodSeconds", "int32", BIG),
    ("failureThreshold", deployment().replace("args: [netexec]",
                                              f"livenessProbe: {{tcpSocket: {{port: 80}}, failureThreshold: {BIG}}}"),
     "Probe.spec.template.spec.containers.livenessProbe.failureThreshold", "int32", BIG),
    ("terminationGracePeriodSeconds",
     deployment().replace("      containers:", f"      terminationGracePeriodSeconds: {HUGE}\n      containers:"),
     "PodSpec.spec.template.spec.terminationGracePeriodSeconds", "int64", HUGE),
]


@pytest.mark.parametrize("text, field, go_type, value", [w[1:] for w in WIDTHS], ids=[w[0] for w in WIDTHS])
def test_integers_too_wide_for_their_go_type_are_refused_as_the_decoder_does(
        text: str, field: str, go_type: str, value: int) -> None:
    assert refusal(text).endswith(
        'Deployment in version "v1" cannot be handled as a Deployment: json: cannot unmarshal number '
        f"{value} into Go struct field {field} of type {go_type}")


SERVICE = """\
apiVersion: v1
kind: Service
metadata: {{name: svc}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{port: {port}, targetPort: {target}, nodePort: {node_port}}}]
"""


@pytest.mark.parametrize("port, target, node_port, field", [
    (BIG, 80, 30080, "ServicePort.spec.ports.port"),
    (80, BIG, 30080, "ServicePort.spec.ports.targetPort"),
    (80, 80, BIG, "ServicePort.spec.ports.nodePort"),
], ids=["port", "targetPort", "nodePort"])
def test_service_ports_too_wide(port: int, target: int, node_port: int, field: str) -> None:
    text = SERVICE.format(port=port, target=target, node_port=node_port)
    assert refusal(text).endswith('Service in version "v1" cannot be handled as a Service: json: cannot unmarshal '
                                  f"number {BIG} into Go struct field {field} of type int32")


def test_the_widest_int32_decodes_and_range_checks_still_speak() -> None:
    (manifest,) = load_text(deployment(replicas=2**31 - 1))
    assert manifest.obj.spec.replicas == 2**31 - 1
    assert "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive" in refusal(
        SERVICE.format(port=70000, target=80, node_port=30080))


# ---------------------------------------------------------------- IP families on a single-stack cluster

def server(**caps: int) -> ApiServer:
    api = ApiServer(Store(), service_cidr="10.96.0.0/16", node_port_range="30000-32767", **caps)
    api.bootstrap()
    return api


def service(extra: str, selector: str = "selector: {app: web}") -> str:
    return f"""\
apiVersion: v1
kind: Service
metadata: {{name: svc}}
spec:
  {selector}
  ports: [{{port: 80}}]
{extra}"""


DUAL = 'spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services'
FAMILIES = [
    ("require-dual-stack", "  ipFamilyPolicy: RequireDualStack\n", [DUAL]),
    ("ipv6-only", "  ipFamilies: [IPv6]\n", ['spec.ipFamilies[0]: Invalid value: "IPv6": not configured on this cluster']),
    ("ipv6-cluster-ip", "  clusterIP: fd00::10\n",
     ['spec.ipFamilies[0]: Invalid value: "IPv6": not configured on this cluster']),
    ("both-implied", "  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv6]\n",
     [DUAL, 'spec.ipFamilies[1]: Invalid value: "IPv6": not configured on this cluster']),
]


@pytest.mark.parametrize("extra, messages", [f[1:] for f in FAMILIES], ids=[f[0] for f in FAMILIES])
def test_a_single_stack_cluster_refuses_what_it_cannot_serve(extra: str, messages: list[str]) -> None:
    api = server()
    with pytest.raises(ManifestErrors) as caught:
        api.apply(load_text(service(extra)))
    assert [str(p) for e in caught.value.errors for p in e.problems] == messages
    assert api.store.get("Service", "default", "svc") is None


@pytest.mark.parametrize("extra, selector", [
    ("  ipFamilyPolicy: PreferDualStack\n", "selector: {app: web}"),
    ("  ipFamilies: [IPv4]\n", "selector: {app: web}"),
    ("  clusterIP: None\n  ipFamilyPolicy: RequireDualStack\n", "selector: {}"),  # headless, no selector: exempt
], ids=["prefer-dual-stack", "ipv4", "headless-selectorless"])
def test_what_a_single_stack_cluster_accepts(extra: str, selector: str) -> None:
    api = server()
    assert api.apply(load_text(service(extra, selector))) == ["service/svc created"]


def test_an_update_to_require_dual_stack_is_refused() -> None:
    api = server()
    api.apply(load_text(service("")))
    with pytest.raises(ManifestErrors, match="this cluster is not configured for dual-stack services"):
        api.apply(load_text(service("  ipFamilyPolicy: RequireDualStack\n")))
    assert api.store.get("Service", "default", "svc").spec.ip_family_policy == "SingleStack"


# ---------------------------------------------------------------- the caps on the API server

def test_caps_have_defaults_and_must_be_positive() -> None:
    config = ClusterConfig()
    assert (config.max_pods, config.max_objects, config.max_request_bytes) == (
        DEFAULT_MAX_PODS, DEFAULT_MAX_OBJECTS, DEFAULT_MAX_REQUEST_BYTES) == (10_000, 100_000, 3 * 1024 * 1024)
    with pytest.raises(ClusterError, match="max_pods: must be a positive integer, got 0"):
        ClusterConfig(max_pods=0).validate()


def test_a_deployment_over_the_pod_cap_is_refused_whole() -> None:
    api = server(max_pods=10)
    with pytest.raises(ManifestErrors) as caught:
        api.apply(load_text(deployment(replicas=1_000_000)))
    assert str(caught.value).endswith(
        'deployments.apps "web" is forbidden: exceeded the cluster\'s pod cap: requested: pods=1000000, '
        "used: pods=0, limited: pods=10 (max_pods in the cluster configuration)")
    assert api.store.get("Deployment", "default", "web") is None


def test_the_pod_cap_counts_every_workload_and_bare_pod() -> None:
    api = server(max_pods=10)
    api.apply(load_text(deployment("a", 6)))
    pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: x}]}\n"
    api.apply(load_text(pod))
    with pytest.raises(ManifestErrors, match="requested: pods=4, used: pods=7, limited: pods=10"):
        api.apply(load_text(deployment("b", 4)))
    assert api.apply(load_text(deployment("b", 3))) == ["deployment.apps/b created"]
    assert api.apply(load_text(deployment("a", 5))) == ["deployment.apps/a configured"]  # going down is fine
    with pytest.raises(InvalidError, match="requested: pods=7, used: pods=4, limited: pods=10"):
        api.scale("Deployment", "default", "a", 7)
    with pytest.raises(InvalidError, match=f"cannot unmarshal number {BIG} into Go struct field "
                                           "ScaleSpec.spec.replicas of type int32"):
        api.scale("Deployment", "default", "a", BIG)
    assert api.scale("Deployment", "default", "a", 6) == "deployment.apps/a scaled"


def test_the_object_cap() -> None:
    api = server(max_objects=api_objects_after_bootstrap() + 1)
    api.apply(load_text(service("")))
    with pytest.raises(ManifestErrors, match='services "other" is forbidden: exceeded the cluster\'s object cap: '
                                             r"limited: objects=\d+ \(max_objects in the cluster configuration\)"):
        api.apply(load_text(service("").replace("name: svc", "name: other")))
    api.apply(load_text(service("  ipFamilies: [IPv4]\n")))  # an update adds no object


def api_objects_after_bootstrap() -> int:
    return server().objects_held()


def test_the_request_size_cap(tmp_path) -> None:
    api = server(max_request_bytes=1000)
    api.check_request_size("x" * 1000)
    with pytest.raises(InvalidError, match="<text>: Request entity too large: limit is 1000 bytes "
                                           r"\(max_request_bytes in the cluster configuration\), got 1001"):
        api.check_request_size("x" * 1001, "<text>")
    (tmp_path / "a.yaml").write_text("y" * 600)
    (tmp_path / "b.yaml").write_text("y" * 600)
    with pytest.raises(InvalidError, match="got 1200"):
        api.check_request_size(tmp_path)


# ---------------------------------------------------------------- a running cluster

async def test_a_running_cluster_refuses_a_million_replicas_and_keeps_answering(make_cluster) -> None:
    cluster = await make_cluster(nodes=1, max_pods=20)
    await cluster.apply(deployment("small", 2))
    await cluster.wait_ready(timeout=30)
    for replicas in (1_000_000, BIG):
        with pytest.raises(ManifestErrors):
            await cluster.apply(deployment("big", replicas))
    with pytest.raises(InvalidError, match="exceeded the cluster's pod cap"):
        await cluster.scale("small", 1_000_000)
    assert [p.metadata.name.startswith("small-") for p in cluster.list("Pod", namespace="default")] == [True, True]
    assert cluster.get("Deployment", "small").spec.replicas == 2
    assert cluster.apiserver.pods_demanded() == 3  # small's 2 and cluster DNS: nothing of "big" was stored
    with pytest.raises(InvalidError, match="Request entity too large"):
        await cluster.apply(deployment("padded", 1) + "#" * (3 * 1024 * 1024))
    await asyncio.wait_for(cluster.settle(), 10)
