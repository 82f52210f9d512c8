"""Kubernetes defaulting (pkg/apis/core/v1/defaults.go, apps/v1, discovery/v1) as apply_defaults does it."""
from __future__ import annotations

import copy
from typing import Any, Callable

import pytest

from netemu import api
from netemu.api.defaults import default_pull_policy

SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"},
       "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}]}}
DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
              "spec": {"selector": {"matchLabels": {"app": "web"}},
                       "template": {"metadata": {"labels": {"app": "web"}},
                                    "spec": {"containers": [{"name": "app", "image": "nginx"}]}}}}


def merged(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def defaulted(base: dict[str, Any], patch: dict[str, Any]) -> Any:
    cls = api.KINDS[(base["apiVersion"], base["kind"])]
    obj, problems = api.from_dict(cls, merged(base, patch))
    assert problems == []
    return api.apply_defaults(obj)


Case = tuple[str, dict[str, Any], dict[str, Any], Callable[[Any], Any], Any]

SERVICE_CASES: list[Case] = [
    ("type", SERVICE, {}, lambda s: s.spec.type, "ClusterIP"),
    ("empty-type", SERVICE, {"spec": {"type": ""}}, lambda s: s.spec.type, "ClusterIP"),
    ("port-protocol", SERVICE, {}, lambda s: s.spec.ports[0].protocol, "TCP"),
    ("empty-port-protocol", SERVICE, {"spec": {"ports": [{"port": 80, "protocol": ""}]}},
     lambda s: s.spec.ports[0].protocol, "TCP"),
    ("target-port-is-port", SERVICE, {}, lambda s: s.spec.ports[0].target_port, 80),
    ("target-port-zero-is-port", SERVICE, {"spec": {"ports": [{"port": 80, "targetPort": 0}]}},
     lambda s: s.spec.ports[0].target_port, 80),
    ("named-target-port-kept", SERVICE, {"spec": {"ports": [{"port": 80, "targetPort": "http"}]}},
     lambda s: s.spec.ports[0].target_port, "http"),
    ("session-affinity", SERVICE, {}, lambda s: s.spec.session_affinity, "None"),
    ("affinity-config-dropped-for-none", SERVICE,
     {"spec": {"sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 5}}}},
     lambda s: s.spec.session_affinity_config, None),
    ("client-ip-timeout", SERVICE, {"spec": {"sessionAffinity": "ClientIP"}},
     lambda s: s.spec.session_affinity_config.client_ip.timeout_seconds, 10800),
    ("client-ip-timeout-kept", SERVICE,
     {"spec": {"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}},
     lambda s: s.spec.session_affinity_config.client_ip.timeout_seconds, 60),
    ("internal-policy", SERVICE, {}, lambda s: s.spec.internal_traffic_policy, "Cluster"),
    ("no-internal-policy-for-externalname", SERVICE, {"spec": {"type": "ExternalName", "externalName": "a.b"}},
     lambda s: s.spec.internal_traffic_policy, ""),
    ("no-external-policy-for-clusterip", SERVICE, {}, lambda s: s.spec.external_traffic_policy, ""),
    ("external-policy-for-nodeport", SERVICE, {"spec": {"type": "NodePort"}},
     lambda s: s.spec.external_traffic_policy, "Cluster"),
    ("external-policy-for-loadbalancer", SERVICE, {"spec": {"type": "LoadBalancer"}},
     lambda s: s.spec.external_traffic_policy, "Cluster"),
    ("external-policy-for-external-ips", SERVICE, {"spec": {"externalIPs": ["192.0.2.10"]}},
     lambda s: s.spec.external_traffic_policy, "Cluster"),
    ("external-policy-kept", SERVICE, {"spec": {"type": "NodePort", "externalTrafficPolicy": "Local"}},
     lambda s: s.spec.external_traffic_policy, "Local"),
    ("lb-node-ports", SERVICE, {"spec": {"type": "LoadBalancer"}},
     lambda s: s.spec.allocate_load_balancer_node_ports, True),
    ("lb-node-ports-kept", SERVICE, {"spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": False}},
     lambda s: s.spec.allocate_load_balancer_node_ports, False),
    ("no-lb-node-ports-for-nodeport", SERVICE, {"spec": {"type": "NodePort"}},
     lambda s: s.spec.allocate_load_balancer_node_ports, None),
    ("ip-families", SERVICE, {}, lambda s: (s.spec.ip_families, s.spec.ip_family_policy), (("IPv4",), "SingleStack")),
    ("ip-family-from-cluster-ip", SERVICE, {"spec": {"clusterIP": "fd00::10"}},
     lambda s: s.spec.ip_families, ("IPv6",)),
    ("headless-selectorless-dual", SERVICE, {"spec": {"clusterIP": "None", "selector": None}},
     lambda s: (s.spec.ip_families, s.spec.ip_family_policy), (("IPv4", "IPv6"), "RequireDualStack")),
    ("headless-with-selector", SERVICE, {"spec": {"clusterIP": "None"}},
     lambda s: (s.spec.ip_families, s.spec.ip_family_policy), (("IPv4",), "SingleStack")),
    ("no-ip-families-for-externalname", SERVICE, {"spec": {"type": "ExternalName", "externalName": "a.b"}},
     lambda s: (s.spec.ip_families, s.spec.ip_family_policy), ((), "")),
    ("cluster-ips-from-cluster-ip", SERVICE, {"spec": {"clusterIP": "10.96.0.10"}},
     lambda s: s.spec.cluster_ips, ("10.96.0.10",)),
    ("lb-ingress-ip-mode", SERVICE, {"spec": {"type": "LoadBalancer"},
                                     "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}, {"hostname": "lb"}]}}},
     lambda s: [i.ip_mode for i in s.status.load_balancer.ingress], ["VIP", None]),
]

POD_CASES: list[Case] = [
    ("restart-policy", POD, {}, lambda p: p.spec.restart_policy, "Always"),
    ("dns-policy", POD, {}, lambda p: p.spec.dns_policy, "ClusterFirst"),
    ("empty-dns-policy", POD, {"spec": {"dnsPolicy": ""}}, lambda p: p.spec.dns_policy, "ClusterFirst"),
    ("grace-period", POD, {}, lambda p: p.spec.termination_grace_period_seconds, 30),
    ("scheduler", POD, {}, lambda p: p.spec.scheduler_name, "default-scheduler"),
    ("service-links", POD, {"spec": {"enableServiceLinks": None}}, lambda p: p.spec.enable_service_links, True),
    ("service-links-kept", POD, {"spec": {"enableServiceLinks": False}}, lambda p: p.spec.enable_service_links, False),
    ("pull-policy-tagged", POD, {}, lambda p: p.spec.containers[0].image_pull_policy, "IfNotPresent"),
    ("termination-message", POD, {},
     lambda p: (p.spec.containers[0].termination_message_path, p.spec.containers[0].termination_message_policy),
     ("/dev/termination-log", "File")),
    ("container-port-protocol", POD,
     {"spec": {"containers": [{"name": "a", "image": "b", "ports": [{"containerPort": 80, "protocol": ""}]}]}},
     lambda p: p.spec.containers[0].ports[0].protocol, "TCP"),
    ("host-network-host-port", POD,
     {"spec": {"hostNetwork": True, "containers": [{"name": "a", "image": "b", "ports": [{"containerPort": 8080}]}]}},
     lambda p: p.spec.containers[0].ports[0].host_port, 8080),
    ("field-ref-api-version", POD,
     {"spec": {"containers": [{"name": "a", "image": "b", "env": [
         {"name": "N", "valueFrom": {"fieldRef": {"apiVersion": "", "fieldPath": "metadata.name"}}}]}]}},
     lambda p: p.spec.containers[0].env[0].value_from.field_ref.api_version, "v1"),
    ("probe-numbers", POD,
     {"spec": {"containers": [{"name": "a", "image": "b", "readinessProbe": {
         "tcpSocket": {"port": 80}, "timeoutSeconds": 0, "periodSeconds": 0, "successThreshold": 0,
         "failureThreshold": 0}}]}},
     lambda p: (lambda r: (r.timeout_seconds, r.period_seconds, r.success_threshold, r.failure_threshold))(
         p.spec.containers[0].readiness_probe), (1, 10, 1, 3)),
    ("http-get-path-and-scheme", POD,
     {"spec": {"containers": [{"name": "a", "image": "b", "livenessProbe": {
         "httpGet": {"port": 80, "path": "", "scheme": ""}}}]}},
     lambda p: (p.spec.containers[0].liveness_probe.http_get.path, p.spec.containers[0].liveness_probe.http_get.scheme),
     ("/", "HTTP")),
    ("init-container-defaults", POD,
     {"spec": {"initContainers": [{"name": "i", "image": "busybox"}]}},
     lambda p: p.spec.init_containers[0].image_pull_policy, "Always"),
]

DEPLOYMENT_CASES: list[Case] = [
    ("replicas", DEPLOYMENT, {}, lambda d: d.spec.replicas, 1),
    ("replicas-zero-kept", DEPLOYMENT, {"spec": {"replicas": 0}}, lambda d: d.spec.replicas, 0),
    ("strategy", DEPLOYMENT, {},
     lambda d: (d.spec.strategy.type, d.spec.strategy.rolling_update.max_unavailable,
                d.spec.strategy.rolling_update.max_surge), ("RollingUpdate", "25%", "25%")),
    ("strategy-partial", DEPLOYMENT, {"spec": {"strategy": {"rollingUpdate": {"maxSurge": 2}}}},
     lambda d: (d.spec.strategy.rolling_update.max_unavailable, d.spec.strategy.rolling_update.max_surge), ("25%", 2)),
    ("recreate-has-no-rolling-update", DEPLOYMENT, {"spec": {"strategy": {"type": "Recreate"}}},
     lambda d: d.spec.strategy.rolling_update, None),
    ("revision-history", DEPLOYMENT, {}, lambda d: d.spec.revision_history_limit, 10),
    ("progress-deadline", DEPLOYMENT, {}, lambda d: d.spec.progress_deadline_seconds, 600),
    ("template-pod-spec", DEPLOYMENT, {},
     lambda d: (d.spec.template.spec.restart_policy, d.spec.template.spec.dns_policy,
                d.spec.template.spec.containers[0].image_pull_policy), ("Always", "ClusterFirst", "Always")),
]

OTHER_CASES: list[Case] = [
    ("endpoint-port", {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                       "metadata": {"name": "e", "namespace": "default"}, "addressType": "IPv4"},
     {"ports": [{"port": 80}]}, lambda e: (e.ports[0].name, e.ports[0].protocol), ("", "TCP")),
    ("namespace-label-and-phase", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}, {},
     lambda n: (n.metadata.labels["kubernetes.io/metadata.name"], n.status.phase), ("shop", "Active")),
]

ALL_CASES = SERVICE_CASES + POD_CASES + DEPLOYMENT_CASES + OTHER_CASES


@pytest.mark.parametrize("base,patch,get,expected", [c[1:] for c in ALL_CASES], ids=[c[0] for c in ALL_CASES])
def test_defaults(base: dict[str, Any], patch: dict[str, Any], get: Callable[[Any], Any], expected: Any) -> None:
    assert get(defaulted(base, patch)) == expected


@pytest.mark.parametrize("base", [SERVICE, POD, DEPLOYMENT], ids=["service", "pod", "deployment"])
def test_defaults_are_idempotent_and_leave_the_input_alone(base: dict[str, Any]) -> None:
    cls = api.KINDS[(base["apiVersion"], base["kind"])]
    obj, _ = api.from_dict(cls, base)
    once = api.apply_defaults(obj)
    assert api.apply_defaults(once) == once
    assert api.to_dict(obj) == api.to_dict(api.from_dict(cls, base)[0])


def test_template_pod_spec_has_no_pod_only_defaults() -> None:
    d = defaulted(DEPLOYMENT, {"spec": {"template": {"spec": {"hostNetwork": True, "containers": [
        {"name": "a", "image": "b", "ports": [{"containerPort": 80}]}]}}}})
    assert d.spec.template.spec.containers[0].ports[0].host_port is None


PULL_POLICIES = [
    ("nginx", "Always"),
    ("nginx:latest", "Always"),
    ("nginx:1.25", "IfNotPresent"),
    ("registry.example.com:5000/team/app", "Always"),
    ("registry.example.com:5000/team/app:v2", "IfNotPresent"),
    ("localhost:5000/app@sha256:" + "a" * 64, "IfNotPresent"),
    ("app:latest@sha256:" + "a" * 64, "Always"),
    ("Not/A/Valid/Reference", "IfNotPresent"),
    ("", "IfNotPresent"),
]


@pytest.mark.parametrize("image,expected", PULL_POLICIES, ids=[p[0] or "empty" for p in PULL_POLICIES])
def test_default_pull_policy(image: str, expected: str) -> None:
    assert default_pull_policy(image) == expected
