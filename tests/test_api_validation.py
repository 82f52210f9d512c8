"""Validation tables: every rule with Kubernetes' field path and wording, for create and update."""
from __future__ import annotations

import copy
import json
from dataclasses import replace
from typing import Any

import pytest

from netemu import api
from netemu.api import validation
from netemu.errors import ManifestErrors

# Kubernetes' own messages (apimachinery util/validation), spelled out once.
DNS1035 = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
           "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
           "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
DNS1123_LABEL = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
                 "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
                 "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS1123_SUBDOMAIN = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                     "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                     "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_VALUE = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and "
               "must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', "
               "regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
QUALIFIED_NAME = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
                  "an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
                  "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
PORT_RANGE = "must be between 1 and 65535, inclusive"
VALID_IP = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
DUP_PORT_80 = ('core.ServicePort{Name:"", Protocol:"TCP", AppProtocol:(*string)(nil), Port:80, '
               'TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:""}, NodePort:0}')

SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
       "spec": {"containers": [{"name": "app", "image": "nginx"}]}}
DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
              "spec": {"selector": {"matchLabels": {"app": "web"}},
                       "template": {"metadata": {"labels": {"app": "web"}},
                                    "spec": {"containers": [{"name": "app", "image": "nginx"}]}}}}
SLICE = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "web-abc"},
         "addressType": "IPv4", "endpoints": [{"addresses": ["10.244.1.5"]}], "ports": [{"name": "http", "port": 80}]}


def merged(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``patch`` merged in (dicts merge, anything else replaces; None deletes)."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def problems(base: dict[str, Any], patch: dict[str, Any]) -> list[str]:
    """What loading ``base`` + ``patch`` reports (empty when it loads)."""
    try:
        api.load_text(json.dumps(merged(base, patch)))
    except ManifestErrors as exc:
        (err,) = exc.errors
        return [str(p) for p in err.problems]
    return []


def ports(*items: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"ports": list(items)}}


def containers(*items: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"spec": {"containers": list(items), **spec}}


def app(**fields: Any) -> dict[str, Any]:
    return {"name": "app", "image": "nginx", **fields}


def table(cases: list[tuple[str, dict[str, Any], list[str]]]) -> Any:
    return pytest.mark.parametrize("patch,expected", [c[1:] for c in cases], ids=[c[0] for c in cases])


# --------------------------------------------------------------------------- services

SERVICE_CASES = [
    ("valid", {}, []),
    ("name-uppercase", {"metadata": {"name": "Web"}}, [f'metadata.name: Invalid value: "Web": {DNS1035}']),
    ("name-leading-digit", {"metadata": {"name": "1web"}}, [f'metadata.name: Invalid value: "1web": {DNS1035}']),
    ("name-with-dot", {"metadata": {"name": "web.svc"}}, [f'metadata.name: Invalid value: "web.svc": {DNS1035}']),
    ("name-too-long", {"metadata": {"name": "a" * 64}},
     [f'metadata.name: Invalid value: "{"a" * 64}": must be no more than 63 characters']),
    ("name-missing", {"metadata": {"name": None}}, ["metadata.name: Required value: name or generateName is required"]),
    ("generate-name-only", {"metadata": {"name": None, "generateName": "web-"}}, []),
    ("ports-missing", {"spec": {"ports": []}}, ["spec.ports: Required value"]),
    ("ports-missing-headless", {"spec": {"ports": [], "clusterIP": "None"}}, []),
    ("ports-missing-externalname", {"spec": {"ports": [], "type": "ExternalName", "externalName": "db.example.com"}},
     []),
    ("second-port-unnamed", ports({"name": "http", "port": 80}, {"port": 443}), ["spec.ports[1].name: Required value"]),
    ("both-ports-unnamed", ports({"port": 80}, {"port": 443}),
     ["spec.ports[0].name: Required value", "spec.ports[1].name: Required value"]),
    ("single-port-may-be-unnamed", ports({"port": 80}), []),
    ("port-name-uppercase", ports({"name": "HTTP", "port": 80}),
     [f'spec.ports[0].name: Invalid value: "HTTP": {DNS1123_LABEL}']),
    ("port-name-duplicate", ports({"name": "http", "port": 80}, {"name": "http", "port": 81}),
     ['spec.ports[1].name: Duplicate value: "http"']),
    ("protocol-and-port-duplicate", ports({"name": "a", "port": 80}, {"name": "b", "port": 80}),
     [f"spec.ports[1]: Duplicate value: {DUP_PORT_80}"]),
    ("same-port-other-protocol", ports({"name": "a", "port": 53}, {"name": "b", "port": 53, "protocol": "UDP"}), []),
    ("port-too-big", ports({"port": 70000}),
     [f"spec.ports[0].port: Invalid value: 70000: {PORT_RANGE}",
      f"spec.ports[0].targetPort: Invalid value: 70000: {PORT_RANGE}"]),
    ("port-missing", ports({"targetPort": 8080}), [f"spec.ports[0].port: Invalid value: 0: {PORT_RANGE}"]),
    ("target-port-too-big", ports({"port": 80, "targetPort": 65536}),
     [f"spec.ports[0].targetPort: Invalid value: 65536: {PORT_RANGE}"]),
    ("target-port-name", ports({"port": 80, "targetPort": "http-alt"}), []),
    ("target-port-name-too-long", ports({"port": 80, "targetPort": "http-web-service"}),
     ['spec.ports[0].targetPort: Invalid value: "http-web-service": must be no more than 15 characters']),
    ("target-port-digits-string", ports({"port": 80, "targetPort": "8080"}),
     ['spec.ports[0].targetPort: Invalid value: "8080": must contain at least one letter (a-z)']),
    ("target-port-uppercase", ports({"port": 80, "targetPort": "Http"}),
     ['spec.ports[0].targetPort: Invalid value: "Http": must contain only alpha-numeric characters (a-z, 0-9), '
      'and hyphens (-)']),
    ("target-port-leading-hyphen", ports({"port": 80, "targetPort": "-http"}),
     ['spec.ports[0].targetPort: Invalid value: "-http": must not begin or end with a hyphen']),
    ("target-port-double-hyphen", ports({"port": 80, "targetPort": "ht--tp"}),
     ['spec.ports[0].targetPort: Invalid value: "ht--tp": must not contain consecutive hyphens']),
    ("protocol-unsupported", ports({"port": 80, "protocol": "HTTP"}),
     ['spec.ports[0].protocol: Unsupported value: "HTTP": supported values: "SCTP", "TCP", "UDP"']),
    ("sctp", ports({"port": 80, "protocol": "SCTP"}), []),
    ("app-protocol-invalid", ports({"port": 80, "appProtocol": "h2 c"}),
     [f'spec.ports[0].appProtocol: Invalid value: "h2 c": {QUALIFIED_NAME}']),
    ("node-port-on-cluster-ip", ports({"port": 80, "nodePort": 30007}),
     ["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]),
    ("node-port-on-node-port", {"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30007}]}}, []),
    ("node-port-duplicate", {"spec": {"type": "NodePort", "ports": [{"name": "a", "port": 80, "nodePort": 30007},
                                                                    {"name": "b", "port": 81, "nodePort": 30007}]}},
     ["spec.ports[1].nodePort: Duplicate value: 30007"]),
    ("headless-node-port", {"spec": {"type": "NodePort", "clusterIP": "None"}},
     ["spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services"]),
    ("headless-load-balancer", {"spec": {"type": "LoadBalancer", "clusterIP": "None"}},
     ["spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for LoadBalancer services"]),
    ("cluster-ip-invalid", {"spec": {"clusterIP": "10.0.0.300"}},
     [f'spec.clusterIPs[0]: Invalid value: "10.0.0.300": {VALID_IP}']),
    ("cluster-ip-word", {"spec": {"clusterIP": "auto"}}, [f'spec.clusterIPs[0]: Invalid value: "auto": {VALID_IP}']),
    ("cluster-ip-any-address", {"spec": {"clusterIP": "192.168.5.5"}}, []),  # the range is the allocator's
    ("cluster-ip-leading-zeros", {"spec": {"clusterIP": "10.096.0.010"}}, []),  # Go's ParseIPSloppy accepts it
    ("cluster-ips-mismatch", {"spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.11"]}},
     ['spec.clusterIPs: Invalid value: []string{"10.96.0.11"}: first value must match `clusterIP`']),
    ("cluster-ip-family-mismatch", {"spec": {"clusterIP": "fd00::10", "ipFamilies": ["IPv4"]}},
     ['spec.clusterIPs[0]: Invalid value: "fd00::10": expected an IPv4 value as indicated by `ipFamilies[0]`']),
    ("ip-family-unsupported", {"spec": {"ipFamilies": ["IPv5"]}},
     ['spec.ipFamilies[0]: Unsupported value: "IPv5": supported values: "IPv4", "IPv6"']),
    ("ip-family-policy-unsupported", {"spec": {"ipFamilyPolicy": "Dual"}},
     ['spec.ipFamilyPolicy: Unsupported value: "Dual": supported values: "PreferDualStack", "RequireDualStack", '
      '"SingleStack"']),
    ("externalname-missing", {"spec": {"type": "ExternalName", "ports": []}}, ["spec.externalName: Required value"]),
    ("externalname-uppercase", {"spec": {"type": "ExternalName", "externalName": "My.DB"}},
     [f'spec.externalName: Invalid value: "My.DB": {DNS1123_SUBDOMAIN}']),
    ("externalname-underscore", {"spec": {"type": "ExternalName", "externalName": "_db.example.com"}},
     [f'spec.externalName: Invalid value: "_db.example.com": {DNS1123_SUBDOMAIN}']),
    ("externalname-trailing-dot", {"spec": {"type": "ExternalName", "externalName": "db.example.com."}}, []),
    ("externalname-ip-looking", {"spec": {"type": "ExternalName", "externalName": "10.1.2.3"}}, []),
    ("externalname-with-cluster-ip", {"spec": {"type": "ExternalName", "externalName": "db.example.com",
                                               "clusterIP": "10.96.0.5"}},
     ["spec.clusterIPs: Forbidden: may not be set for ExternalName services"]),
    ("externalname-with-ip-families", {"spec": {"type": "ExternalName", "externalName": "db.example.com",
                                                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"}},
     ["spec.ipFamilies: Forbidden: may not be set for ExternalName services",
      "spec.ipFamilyPolicy: Forbidden: may not be set for ExternalName services"]),
    ("session-affinity-unsupported", {"spec": {"sessionAffinity": "Sticky"}},
     ['spec.sessionAffinity: Unsupported value: "Sticky": supported values: "ClientIP", "None"']),
    ("client-ip-timeout-zero", {"spec": {"sessionAffinity": "ClientIP",
                                         "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}}},
     ["spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 0: must be greater than 0 and less "
      "than 86400"]),
    ("client-ip-timeout-too-long", {"spec": {"sessionAffinity": "ClientIP",
                                             "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 86401}}}},
     ["spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 86401: must be greater than 0 and less "
      "than 86400"]),
    ("client-ip-timeout-one-day", {"spec": {"sessionAffinity": "ClientIP",
                                            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 86400}}}}, []),
    # Kubernetes' defaulting drops sessionAffinityConfig when the affinity is None (see the direct test below).
    ("affinity-config-with-none-is-dropped", {"spec": {"sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 5}}}},
     []),
    ("external-policy-on-cluster-ip", {"spec": {"externalTrafficPolicy": "Local"}},
     ['spec.externalTrafficPolicy: Invalid value: "Local": may only be set for externally-accessible services']),
    ("external-policy-unsupported", {"spec": {"type": "NodePort", "externalTrafficPolicy": "Nearest"}},
     ['spec.externalTrafficPolicy: Unsupported value: "Nearest": supported values: "Cluster", "Local"']),
    ("external-policy-local-nodeport", {"spec": {"type": "NodePort", "externalTrafficPolicy": "Local"}}, []),
    ("internal-policy-unsupported", {"spec": {"internalTrafficPolicy": "Node"}},
     ['spec.internalTrafficPolicy: Unsupported value: "Node": supported values: "Cluster", "Local"']),
    ("internal-policy-local", {"spec": {"internalTrafficPolicy": "Local"}}, []),
    ("health-check-port-on-cluster-ip", {"spec": {"healthCheckNodePort": 30100}},
     ["spec.healthCheckNodePort: Invalid value: 30100: may only be set when `type` is 'LoadBalancer' and "
      "`externalTrafficPolicy` is 'Local'"]),
    ("lb-class-on-cluster-ip", {"spec": {"loadBalancerClass": "example.com/lb"}},
     ["spec.loadBalancerClass: Forbidden: may only be used when `type` is 'LoadBalancer'"]),
    ("lb-class-on-lb", {"spec": {"type": "LoadBalancer", "loadBalancerClass": "example.com/lb"}}, []),
    ("lb-class-invalid", {"spec": {"type": "LoadBalancer", "loadBalancerClass": "my lb"}},
     [f'spec.loadBalancerClass: Invalid value: "my lb": {QUALIFIED_NAME}']),
    ("lb-node-ports-on-node-port", {"spec": {"type": "NodePort", "allocateLoadBalancerNodePorts": False}},
     ["spec.allocateLoadBalancerNodePorts: Forbidden: may only be used when `type` is 'LoadBalancer'"]),
    ("lb-source-ranges-on-cluster-ip", {"spec": {"loadBalancerSourceRanges": ["10.0.0.0/8"]}},
     ["spec.LoadBalancerSourceRanges: Forbidden: may only be used when `type` is 'LoadBalancer'"]),
    ("lb-source-range-invalid", {"spec": {"type": "LoadBalancer", "loadBalancerSourceRanges": ["10.0.0.0/33"]}},
     ['spec.LoadBalancerSourceRanges[0]: Invalid value: "10.0.0.0/33": must be a valid CIDR value, '
      '(e.g. 10.9.8.0/24 or 2001:db8::/64)']),
    ("type-unsupported", {"spec": {"type": "Internal"}},
     ['spec.type: Unsupported value: "Internal": supported values: "ClusterIP", "ExternalName", "LoadBalancer", '
      '"NodePort"']),
    ("selector-value-invalid", {"spec": {"selector": {"app": "My App"}}},
     [f'spec.selector: Invalid value: "My App": {LABEL_VALUE}']),
    ("selector-key-invalid", {"spec": {"selector": {"my app": "web"}}},
     [f'spec.selector: Invalid value: "my app": {QUALIFIED_NAME}']),
    ("no-selector", {"spec": {"selector": None}}, []),
    ("external-ip-invalid", {"spec": {"externalIPs": ["1.2.3"]}},
     [f'spec.externalIPs[0]: Invalid value: "1.2.3": {VALID_IP}']),
    ("external-ip-loopback", {"spec": {"externalIPs": ["127.0.0.1"]}},
     ['spec.externalIPs[0]: Invalid value: "127.0.0.1": may not be in the loopback range (127.0.0.0/8, ::1/128)']),
    ("traffic-distribution", {"spec": {"trafficDistribution": "PreferClose"}}, []),
    ("traffic-distribution-unsupported", {"spec": {"trafficDistribution": "Nearby"}},
     ['spec.trafficDistribution: Unsupported value: "Nearby": supported values: "PreferClose", "PreferSameNode", '
      '"PreferSameZone"']),
    ("namespace-invalid", {"metadata": {"namespace": "Prod"}},
     [f'metadata.namespace: Invalid value: "Prod": {DNS1123_LABEL}']),
    ("label-key-invalid", {"metadata": {"labels": {"-app": "web"}}},
     [f'metadata.labels: Invalid value: "-app": {QUALIFIED_NAME}']),
    ("label-prefix-invalid", {"metadata": {"labels": {"Example.com/app": "web"}}},
     [f'metadata.labels: Invalid value: "Example.com/app": prefix part {DNS1123_SUBDOMAIN}']),
    ("annotation-key-any-case", {"metadata": {"annotations": {"Example.COM/Owner": "me"}}}, []),
    ("annotation-key-invalid", {"metadata": {"annotations": {"a/b/c": "x"}}},
     ['metadata.annotations: Invalid value: "a/b/c": a valid label key must consist of alphanumeric characters, '
      "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or "
      "'123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS "
      "subdomain prefix and '/' (e.g. 'example.com/MyName')"]),
    ("finalizer-not-qualified", {"metadata": {"finalizers": ["cleanup"]}},
     ['metadata.finalizers[0]: Invalid value: "cleanup": name is neither a standard finalizer name nor is it '
      "fully qualified"]),
    ("many-problems-at-once", {"metadata": {"name": "Web"},
                               "spec": {"type": "NodePort", "clusterIP": "None", "sessionAffinity": "Sticky",
                                        "ports": [{"port": 80, "protocol": "ICMP"}, {"port": 0}]}},
     [f'metadata.name: Invalid value: "Web": {DNS1035}',
      "spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services",
      "spec.ports[0].name: Required value",
      'spec.ports[0].protocol: Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"',
      "spec.ports[1].name: Required value",
      f"spec.ports[1].port: Invalid value: 0: {PORT_RANGE}",
      f"spec.ports[1].targetPort: Invalid value: 0: {PORT_RANGE}",
      'spec.sessionAffinity: Unsupported value: "Sticky": supported values: "ClientIP", "None"']),
]


@table(SERVICE_CASES)
def test_service_validation(patch: dict[str, Any], expected: list[str]) -> None:
    assert problems(SERVICE, patch) == expected


def test_session_affinity_config_with_none_is_forbidden_when_not_defaulted() -> None:
    svc, _ = api.from_dict(api.Service, merged(SERVICE, {"metadata": {"namespace": "default"}, "spec": {
        "sessionAffinity": "None", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 5}},
        "internalTrafficPolicy": "Cluster", "ports": [{"port": 80, "targetPort": 80}]}}))
    assert [str(p) for p in api.validate(svc)] == [
        "spec.sessionAffinityConfig: Forbidden: must not be set when session affinity is None"]


def test_validate_expects_defaulted_objects() -> None:
    svc, _ = api.from_dict(api.Service, merged(SERVICE, {"metadata": {"namespace": "default"},
                                                        "spec": {"type": "LoadBalancer"}}))
    assert [str(p) for p in api.validate(svc)] == [
        f"spec.ports[0].targetPort: Invalid value: 0: {PORT_RANGE}",
        "allocateLoadBalancerNodePorts: Required value",  # sic: Kubernetes' path has no "spec."
        "spec.externalTrafficPolicy: Required value",
        "spec.internalTrafficPolicy: Required value",
    ]
    assert api.validate(api.apply_defaults(svc)) == []


# --------------------------------------------------------------------------- pods

FIELD_PATHS = ('"metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName", "spec.serviceAccountName", '
               '"status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs"')


def env(*items: dict[str, Any]) -> dict[str, Any]:
    return containers(app(env=list(items)))


def field_ref(path: str) -> dict[str, Any]:
    return {"name": "X", "valueFrom": {"fieldRef": {"fieldPath": path}}}


def probe(kind: str = "readinessProbe", **fields: Any) -> dict[str, Any]:
    return containers(app(**{kind: fields}))


def dns(policy: str | None = None, **config: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"dnsConfig": config} if config else {}
    if policy:
        spec["dnsPolicy"] = policy
    return {"spec": spec}


POD_CASES = [
    ("valid", {}, []),
    ("name-subdomain", {"metadata": {"name": "web.v1"}}, []),
    ("name-invalid", {"metadata": {"name": "Web_1"}}, [f'metadata.name: Invalid value: "Web_1": {DNS1123_SUBDOMAIN}']),
    ("no-containers", containers(), ["spec.containers: Required value"]),
    ("container-name-missing", containers({"image": "nginx"}), ["spec.containers[0].name: Required value"]),
    ("container-name-invalid", containers(app(name="App_1")),
     [f'spec.containers[0].name: Invalid value: "App_1": {DNS1123_LABEL}']),
    ("container-name-duplicate", containers(app(), app()), ['spec.containers[1].name: Duplicate value: "app"']),
    ("init-container-name-clash", {"spec": {"initContainers": [app()]}},
     ['spec.initContainers[0].name: Duplicate value: "app"']),
    ("image-missing", containers({"name": "app"}), ["spec.containers[0].image: Required value"]),
    ("image-whitespace", containers(app(image=" nginx")),
     ['spec.containers[0].image: Invalid value: " nginx": must not have leading or trailing whitespace']),
    ("pull-policy-unsupported", containers(app(imagePullPolicy="Sometimes")),
     ['spec.containers[0].imagePullPolicy: Unsupported value: "Sometimes": supported values: "Always", '
      '"IfNotPresent", "Never"']),
    ("container-port-missing", containers(app(ports=[{"name": "http"}])),
     ["spec.containers[0].ports[0].containerPort: Required value"]),
    ("container-port-too-big", containers(app(ports=[{"containerPort": 70000}])),
     [f"spec.containers[0].ports[0].containerPort: Invalid value: 70000: {PORT_RANGE}"]),
    ("container-port-name-invalid", containers(app(ports=[{"name": "HTTP", "containerPort": 80}])),
     ['spec.containers[0].ports[0].name: Invalid value: "HTTP": must contain only alpha-numeric characters '
      '(a-z, 0-9), and hyphens (-)',
      'spec.containers[0].ports[0].name: Invalid value: "HTTP": must contain at least one letter (a-z)']),
    ("container-port-name-long", containers(app(ports=[{"name": "very-long-port-name", "containerPort": 80}])),
     ['spec.containers[0].ports[0].name: Invalid value: "very-long-port-name": must be no more than 15 characters']),
    ("container-port-name-duplicate", containers(app(ports=[{"name": "http", "containerPort": 80},
                                                            {"name": "http", "containerPort": 81}])),
     ['spec.containers[0].ports[1].name: Duplicate value: "http"']),
    ("same-port-name-in-two-containers", containers(app(ports=[{"name": "http", "containerPort": 80}]),
                                                    app(name="b", ports=[{"name": "http", "containerPort": 81}])), []),
    ("container-port-protocol", containers(app(ports=[{"containerPort": 80, "protocol": "ICMP"}])),
     ['spec.containers[0].ports[0].protocol: Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"']),
    ("host-port-conflict", containers(app(ports=[{"containerPort": 80, "hostPort": 8080}]),
                                      app(name="b", ports=[{"containerPort": 81, "hostPort": 8080}])),
     ['spec.containers[1].ports[0].hostPort: Duplicate value: "TCP//8080"']),
    ("host-network-port-mismatch", containers(app(ports=[{"containerPort": 80, "hostPort": 8080}]), hostNetwork=True),
     ["spec.containers[0].ports[0].hostPort: Invalid value: 8080: must match `containerPort` when `hostNetwork` is "
      "true"]),
    ("env-name-relaxed", env({"name": "my.env-name", "value": "x"}, {"name": "1st var", "value": "y"}), []),
    ("env-name-with-equals", env({"name": "A=B", "value": "x"}),
     ['spec.containers[0].env[0].name: Invalid value: "A=B": a valid environment variable name must consist only '
      "of printable ASCII characters other than '='"]),
    ("env-name-missing", env({"value": "x"}), ["spec.containers[0].env[0].name: Required value"]),
    ("env-field-refs", env(*(field_ref(p) for p in (
        "metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName", "spec.serviceAccountName",
        "status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs", "metadata.labels['app']",
        "metadata.annotations['Example.com/Owner']"))), []),
    ("env-field-ref-unsupported", env(field_ref("status.phase")),
     [f'spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: Unsupported value: "status.phase": supported '
      f"values: {FIELD_PATHS}"]),
    ("env-field-ref-whole-labels", env(field_ref("metadata.labels")),
     [f'spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: Unsupported value: "metadata.labels": supported '
      f"values: {FIELD_PATHS}"]),
    ("env-field-ref-unknown", env(field_ref("status.foo")),
     ['spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: Invalid value: "status.foo": error converting '
      "fieldPath: field label not supported: status.foo"]),
    ("env-field-ref-bad-subscript", env(field_ref("spec.nodeName['x']")),
     ['spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: Invalid value: "spec.nodeName[\'x\']": error '
      "converting fieldPath: field label does not support subscript: spec.nodeName['x']"]),
    ("env-field-ref-bad-label-key", env(field_ref("metadata.labels['my key']")),
     [f'spec.containers[0].env[0].valueFrom.fieldRef: Invalid value: "my key": {QUALIFIED_NAME}']),
    ("env-field-ref-api-version", env({"name": "X", "valueFrom": {"fieldRef": {"apiVersion": "v2",
                                                                               "fieldPath": "metadata.name"}}}),
     ['spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: Invalid value: "metadata.name": error converting '
      "fieldPath: unsupported pod version: v2"]),
    ("env-value-and-value-from", env({**field_ref("metadata.name"), "value": "x"}),
     ['spec.containers[0].env[0].valueFrom: Invalid value: "": may not be specified when `value` is not empty']),
    ("env-value-from-empty", env({"name": "X", "valueFrom": {}}),
     ['spec.containers[0].env[0].valueFrom: Invalid value: "": must specify one of: `fieldRef`, '
      "`resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"]),
    ("env-value-from-two-sources", env({"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"},
                                                                   "secretKeyRef": {"name": "s", "key": "k"}}}),
     ['spec.containers[0].env[0].valueFrom: Invalid value: "": may not have more than one field specified at a '
      "time"]),
    ("restart-policy", {"spec": {"restartPolicy": "Sometimes"}},
     ['spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"']),
    ("restart-policy-never", {"spec": {"restartPolicy": "Never"}}, []),
    ("dns-policy", dns("Cluster"),
     ['spec.dnsPolicy: Unsupported value: "Cluster": supported values: "ClusterFirstWithHostNet", "ClusterFirst", '
      '"Default", "None"']),
    ("dns-none-without-config", dns("None"),
     ["spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None"]),
    ("dns-none-without-nameservers", dns("None", searches=["a.example"]),
     ["spec.dnsConfig.nameservers: Required value: must provide at least one DNS nameserver when `dnsPolicy` is "
      "None"]),
    ("dns-too-many-nameservers", dns("None", nameservers=["1.1.1.1", "8.8.8.8", "9.9.9.9", "1.0.0.1"]),
     ['spec.dnsConfig.nameservers: Invalid value: []string{"1.1.1.1", "8.8.8.8", "9.9.9.9", "1.0.0.1"}: must not '
      "have more than 3 nameservers"]),
    ("dns-nameserver-invalid", dns("None", nameservers=["1.2.3"]),
     [f'spec.dnsConfig.nameservers[0]: Invalid value: "1.2.3": {VALID_IP}']),
    ("dns-too-many-searches", dns(searches=[f"s{i}.example" for i in range(33)]),
     ["spec.dnsConfig.searches: Invalid value: []string{" + ", ".join(f'"s{i}.example"' for i in range(33))
      + "}: must not have more than 32 search paths"]),
    ("dns-search-list-too-long", dns(searches=["a" * 63 + "." + "b" * 63 + "." + "c" * 63 + f".d{i}" for i in range(11)]),
     ["spec.dnsConfig.searches: Invalid value: []string{"
      + ", ".join(f'"{"a" * 63}.{"b" * 63}.{"c" * 63}.d{i}"' for i in range(11))
      + "}: must not have more than 2048 characters (including spaces) in the search list"]),
    ("dns-search-invalid", dns(searches=["Bad Domain"]),
     ['spec.dnsConfig.searches[0]: Invalid value: "Bad Domain": a lowercase RFC 1123 subdomain must consist of '
      "lower case alphanumeric characters, '_', '-' or '.', and must start and end with an alphanumeric character "
      "(e.g. 'example.com', regex used for validation is "
      "'_?[a-z0-9]([-_a-z0-9]*[a-z0-9])?(\\._?[a-z0-9]([-_a-z0-9]*[a-z0-9])?)*')"]),
    ("dns-search-relaxed", dns(searches=["_sip._tcp.example.com", "corp.example.", "."]), []),
    ("dns-option-without-name", dns(options=[{"value": "2"}]),
     ["spec.dnsConfig.options[0]: Required value: must not be empty"]),
    ("hostname-invalid", {"spec": {"hostname": "web.1"}}, ['spec.hostname: Invalid value: "web.1": must not contain dots']),
    ("subdomain-invalid", {"spec": {"subdomain": "Web"}}, [f'spec.subdomain: Invalid value: "Web": {DNS1123_LABEL}']),
    ("node-name-invalid", {"spec": {"nodeName": "Node_1"}},
     [f'spec.nodeName: Invalid value: "Node_1": {DNS1123_SUBDOMAIN}']),
    ("active-deadline-zero", {"spec": {"activeDeadlineSeconds": 0}},
     ["spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive"]),
    ("node-selector-invalid", {"spec": {"nodeSelector": {"disk": "fast ssd"}}},
     [f'spec.nodeSelector: Invalid value: "fast ssd": {LABEL_VALUE}']),
    ("probe-without-handler", probe(periodSeconds=5),
     ["spec.containers[0].readinessProbe: Required value: must specify a handler type"]),
    ("probe-two-handlers", probe(httpGet={"port": 80}, tcpSocket={"port": 80}),
     ["spec.containers[0].readinessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type"]),
    ("probe-named-port", probe(httpGet={"port": "http"}), []),
    ("probe-port-name-invalid", probe(tcpSocket={"port": "HTTP"}),
     ['spec.containers[0].readinessProbe.tcpSocket.port: Invalid value: "HTTP": must contain only alpha-numeric '
      "characters (a-z, 0-9), and hyphens (-)",
      'spec.containers[0].readinessProbe.tcpSocket.port: Invalid value: "HTTP": must contain at least one letter '
      "(a-z)"]),
    ("probe-port-zero", probe(httpGet={"path": "/"}),
     [f"spec.containers[0].readinessProbe.httpGet.port: Invalid value: 0: {PORT_RANGE}"]),
    ("probe-scheme", probe(httpGet={"port": 80, "scheme": "FTP"}),
     ['spec.containers[0].readinessProbe.httpGet.scheme: Unsupported value: "FTP": supported values: "HTTP", '
      '"HTTPS"']),
    ("probe-header-name", probe(httpGet={"port": 80, "httpHeaders": [{"name": "X Y", "value": "1"}]}),
     ["spec.containers[0].readinessProbe.httpGet.httpHeaders: Invalid value: \"X Y\": a valid HTTP header must "
      "consist of alphanumeric characters or '-' (e.g. 'X-Header-Name', regex used for validation is "
      "'[-A-Za-z0-9]+')"]),
    ("probe-exec-empty", probe(exec={"command": []}),
     ["spec.containers[0].readinessProbe.exec.command: Required value"]),
    ("probe-negative-period", probe(tcpSocket={"port": 80}, periodSeconds=-1),
     ["spec.containers[0].readinessProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 0"]),
    ("liveness-success-threshold", probe("livenessProbe", tcpSocket={"port": 80}, successThreshold=2),
     ["spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1"]),
    ("readiness-success-threshold", probe(tcpSocket={"port": 80}, successThreshold=2), []),
    ("readiness-grace-period", probe(tcpSocket={"port": 80}, terminationGracePeriodSeconds=5),
     ["spec.containers[0].readinessProbe.terminationGracePeriodSeconds: Invalid value: 5: must not be set for "
      "readinessProbes"]),
    ("grpc-probe", probe(grpc={"port": 9090}), []),
    ("container-restart-policy", containers(app(restartPolicy="Always")),
     ["spec.containers[0].restartPolicy: Forbidden: may not be set for non-init containers"]),
    ("init-container-probe", {"spec": {"initContainers": [{"name": "init", "image": "busybox",
                                                           "readinessProbe": {"tcpSocket": {"port": 80}}}]}},
     ["spec.initContainers[0].readinessProbe: Forbidden: may not be set for init containers without "
      "restartPolicy=Always"]),
    ("sidecar-probe", {"spec": {"initContainers": [{"name": "side", "image": "busybox", "restartPolicy": "Always",
                                                    "readinessProbe": {"tcpSocket": {"port": 80}}}]}}, []),
    ("init-restart-policy", {"spec": {"initContainers": [{"name": "init", "image": "busybox",
                                                          "restartPolicy": "Never"}]}},
     ['spec.initContainers[0].restartPolicy: Unsupported value: "Never": supported values: "Always"']),
    ("termination-message-policy", containers(app(terminationMessagePolicy="Logs")),
     ['spec.containers[0].terminationMessagePolicy: Unsupported value: "Logs": supported values: "File", '
      '"FallbackToLogsOnError"']),
]


@table(POD_CASES)
def test_pod_validation(patch: dict[str, Any], expected: list[str]) -> None:
    assert problems(POD, patch) == expected


def test_pod_dns_search_list_of_2048_characters_is_fine() -> None:
    searches = ["a" * 63 + "." + "b" * 63 + "." + "c" * 63 + f".d{i}" for i in range(10)]
    searches.append("e" * (2048 - len(" ".join(searches)) - 1))
    assert len(" ".join(searches)) == 2048
    assert problems(POD, dns(searches=searches)) == []


# --------------------------------------------------------------------------- deployments

MISMATCH = "`selector` does not match template `labels`"

DEPLOYMENT_CASES = [
    ("valid", {}, []),
    ("name-invalid", {"metadata": {"name": "Web"}}, [f'metadata.name: Invalid value: "Web": {DNS1123_SUBDOMAIN}']),
    ("selector-missing", {"spec": {"selector": None}},
     ["spec.selector: Required value",
      f'spec.template.metadata.labels: Invalid value: map[string]string{{"app":"web"}}: {MISMATCH}']),
    ("selector-mismatch", {"spec": {"selector": {"matchLabels": {"app": "api"}}}},
     [f'spec.template.metadata.labels: Invalid value: map[string]string{{"app":"web"}}: {MISMATCH}']),
    ("selector-mismatch-no-labels", {"spec": {"template": {"metadata": {"labels": None}}}},
     [f"spec.template.metadata.labels: Invalid value: map[string]string(nil): {MISMATCH}"]),
    ("selector-empty", {"spec": {"selector": {"matchLabels": None}}},
     ["spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), "
      "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment"]),
    ("selector-expressions", {"spec": {"selector": {"matchLabels": None, "matchExpressions": [
        {"key": "app", "operator": "In", "values": ["web", "api"]},
        {"key": "canary", "operator": "DoesNotExist"},
        {"key": "tier", "operator": "NotIn", "values": ["db"]}]}}}, []),
    ("selector-expression-exists-mismatch", {"spec": {"selector": {"matchExpressions": [
        {"key": "tier", "operator": "Exists"}]}}},
     [f'spec.template.metadata.labels: Invalid value: map[string]string{{"app":"web"}}: {MISMATCH}']),
    ("selector-operator-invalid", {"spec": {"selector": {"matchExpressions": [
        {"key": "app", "operator": "Equals", "values": ["web"]}]}}},
     ['spec.selector.matchExpressions[0].operator: Invalid value: "Equals": not a valid selector operator',
      'spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"app":"web"}, '
      'MatchExpressions:[]v1.LabelSelectorRequirement{v1.LabelSelectorRequirement{Key:"app", Operator:"Equals", '
      'Values:[]string{"web"}}}}: invalid label selector']),
    ("selector-in-without-values", {"spec": {"selector": {"matchLabels": None, "matchExpressions": [
        {"key": "app", "operator": "In"}]}}},
     ["spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or "
      "'NotIn'",
      "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), "
      'MatchExpressions:[]v1.LabelSelectorRequirement{v1.LabelSelectorRequirement{Key:"app", Operator:"In", '
      "Values:[]string(nil)}}}: invalid label selector"]),
    ("selector-exists-with-values", {"spec": {"selector": {"matchExpressions": [
        {"key": "app", "operator": "Exists", "values": ["web"]}]}}},
     ["spec.selector.matchExpressions[0].values: Forbidden: may not be specified when `operator` is 'Exists' or "
      "'DoesNotExist'",
      'spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"app":"web"}, '
      'MatchExpressions:[]v1.LabelSelectorRequirement{v1.LabelSelectorRequirement{Key:"app", Operator:"Exists", '
      'Values:[]string{"web"}}}}: invalid label selector']),
    ("replicas-negative", {"spec": {"replicas": -1}},
     ["spec.replicas: Invalid value: -1: must be greater than or equal to 0"]),
    ("replicas-zero", {"spec": {"replicas": 0}}, []),
    ("template-restart-policy", {"spec": {"template": {"spec": {"restartPolicy": "Never"}}}},
     ['spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always"']),
    ("template-container-paths", {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "ports": [{"containerPort": 0}]}]}}}},
     ["spec.template.spec.containers[0].image: Required value",
      "spec.template.spec.containers[0].ports[0].containerPort: Required value"]),
    ("template-labels-invalid", {"spec": {"template": {"metadata": {"labels": {"app": "web", "my key": "x"}}}}},
     [f'spec.template.labels: Invalid value: "my key": {QUALIFIED_NAME}']),
    ("template-host-network-port", {"spec": {"template": {"spec": {"hostNetwork": True, "containers": [
        app(ports=[{"containerPort": 80}])]}}}}, []),
    ("template-active-deadline", {"spec": {"template": {"spec": {"activeDeadlineSeconds": 10}}}},
     ["spec.template.spec.activeDeadlineSeconds: Invalid value: 10: activeDeadlineSeconds in ReplicaSet is not "
      "Supported"]),
    ("recreate-with-rolling-update", {"spec": {"strategy": {"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}}},
     ["spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"]),
    ("strategy-unsupported", {"spec": {"strategy": {"type": "BlueGreen"}}},
     ['spec.strategy: Unsupported value: apps.DeploymentStrategy{Type:"BlueGreen", '
      'RollingUpdate:(*apps.RollingUpdateDeployment)(nil)}: supported values: "Recreate", "RollingUpdate"']),
    ("max-surge-not-percent", {"spec": {"strategy": {"rollingUpdate": {"maxSurge": "abc"}}}},
     ["spec.strategy.rollingUpdate.maxSurge: Invalid value: abc: a valid percent string must be a numeric string "
      "followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"]),
    ("max-surge-negative", {"spec": {"strategy": {"rollingUpdate": {"maxSurge": -1}}}},
     ["spec.strategy.rollingUpdate.maxSurge: Invalid value: -1: must be greater than or equal to 0"]),
    ("both-zero", {"spec": {"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}}},
     ["spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0%: may not be 0 when `maxSurge` is 0"]),
    ("max-unavailable-over-100", {"spec": {"strategy": {"rollingUpdate": {"maxUnavailable": "150%"}}}},
     ["spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 150%: must not be greater than 100%"]),
    ("progress-deadline", {"spec": {"minReadySeconds": 30, "progressDeadlineSeconds": 30}},
     ["spec.progressDeadlineSeconds: Invalid value: 30: must be greater than minReadySeconds"]),
    ("revision-history-negative", {"spec": {"revisionHistoryLimit": -1}},
     ["spec.revisionHistoryLimit: Invalid value: -1: must be greater than or equal to 0"]),
]


@table(DEPLOYMENT_CASES)
def test_deployment_validation(patch: dict[str, Any], expected: list[str]) -> None:
    assert problems(DEPLOYMENT, patch) == expected


# --------------------------------------------------------------------------- endpoint slices, namespaces, nodes

SLICE_CASES = [
    ("valid", {}, []),
    ("loopback-endpoints-allowed", {"endpoints": [{"addresses": ["127.244.1.5"]}]}, []),
    ("address-type-missing", {"addressType": None}, ["addressType: Required value"]),
    ("address-type-unsupported", {"addressType": "IP"},
     ['addressType: Unsupported value: "IP": supported values: "FQDN", "IPv4", "IPv6"']),
    ("ipv6-in-ipv4-slice", {"endpoints": [{"addresses": ["fd00::5"]}]},
     ['endpoints[0].addresses[0]: Invalid value: "fd00::5": must be a valid IPv4 address']),
    ("ipv4-in-ipv6-slice", {"addressType": "IPv6"},
     ['endpoints[0].addresses[0]: Invalid value: "10.244.1.5": must be a valid IPv6 address']),
    ("no-addresses", {"endpoints": [{"addresses": []}]},
     ["endpoints[0].addresses: Required value: must contain at least 1 address"]),
    ("fqdn", {"addressType": "FQDN", "endpoints": [{"addresses": ["db.example.com"]}]}, []),
    ("fqdn-single-label", {"addressType": "FQDN", "endpoints": [{"addresses": ["db"]}]},
     ['endpoints[0].addresses[0]: Invalid value: "db": should be a domain with at least two segments separated '
      "by dots"]),
    ("hostname-invalid", {"endpoints": [{"addresses": ["10.244.1.5"], "hostname": "Web"}]},
     [f'endpoints[0].hostname: Invalid value: "Web": {DNS1123_LABEL}']),
    ("node-name-invalid", {"endpoints": [{"addresses": ["10.244.1.5"], "nodeName": "Node_1"}]},
     [f'endpoints[0].nodeName: Invalid value: "Node_1": {DNS1123_SUBDOMAIN}']),
    ("port-protocol", {"ports": [{"port": 80, "protocol": "HTTP"}]},
     ['ports[0].protocol: Unsupported value: "HTTP": supported values: "SCTP", "TCP", "UDP"']),
    ("port-names-duplicate", {"ports": [{"port": 80}, {"port": 81}]}, ['ports[1].name: Duplicate value: ""']),
    ("port-name-invalid", {"ports": [{"name": "HTTP", "port": 80}]},
     [f'ports[0].name: Invalid value: "HTTP": {DNS1123_LABEL}']),
]


@table(SLICE_CASES)
def test_endpoint_slice_validation(patch: dict[str, Any], expected: list[str]) -> None:
    assert problems(SLICE, patch) == expected


NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}
NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1.example"}}

CLUSTER_SCOPED_CASES = [
    ("namespace-valid", NAMESPACE, {}, []),
    ("namespace-uppercase", NAMESPACE, {"metadata": {"name": "Shop"}},
     [f'metadata.name: Invalid value: "Shop": {DNS1123_LABEL}']),
    ("namespace-dots", NAMESPACE, {"metadata": {"name": "shop.eu"}},
     ['metadata.name: Invalid value: "shop.eu": must not contain dots']),
    ("namespace-finalizer", NAMESPACE, {"spec": {"finalizers": ["kubernetes", "example.com/x", "x"]}},
     ['spec.finalizers: Invalid value: "x": name is neither a standard finalizer name nor is it fully qualified']),
    ("node-valid", NODE, {"spec": {"podCIDRs": ["10.244.1.0/24"]}}, []),
    ("node-cidr-invalid", NODE, {"spec": {"podCIDRs": ["10.244.1.0"]}},
     ['spec.podCIDRs[0]: Invalid value: "10.244.1.0": must be a valid CIDR value, (e.g. 10.9.8.0/24 or '
      '2001:db8::/64)']),
]


@pytest.mark.parametrize("base,patch,expected", [c[1:] for c in CLUSTER_SCOPED_CASES],
                         ids=[c[0] for c in CLUSTER_SCOPED_CASES])
def test_cluster_scoped_validation(base: dict[str, Any], patch: dict[str, Any], expected: list[str]) -> None:
    assert problems(base, patch) == expected


def test_namespace_on_cluster_scoped_object_is_forbidden_when_not_cleared() -> None:
    ns, _ = api.from_dict(api.Namespace, merged(NAMESPACE, {"metadata": {"namespace": "x"}}))
    assert [str(p) for p in api.validate(ns)] == ["metadata.namespace: Forbidden: not allowed on this type"]


# --------------------------------------------------------------------------- updates


def loaded(base: dict[str, Any], patch: dict[str, Any] | None = None) -> Any:
    (m,) = api.load_text(json.dumps(merged(base, patch or {})))
    return m.obj


def allocated(svc: Any, cluster_ip: str = "10.96.0.10", node_ports: dict[str, int] | None = None) -> Any:
    """``svc`` as the API server stores it after allocation."""
    node_ports = node_ports or {}
    spec = replace(svc.spec, cluster_ip=cluster_ip, cluster_ips=(cluster_ip,),
                   ports=tuple(replace(p, node_port=p.node_port or node_ports.get(p.name)) for p in svc.spec.ports))
    return replace(svc, spec=spec)


NODE_PORT_SVC = merged(SERVICE, {"spec": {"type": "NodePort", "ports": [{"name": "http", "port": 80},
                                                                         {"name": "https", "port": 443}]}})


def test_reapplying_a_service_keeps_allocations() -> None:
    old = allocated(loaded(NODE_PORT_SVC), node_ports={"http": 30080, "https": 30443})
    new = api.merge_service_allocations(old, loaded(NODE_PORT_SVC))
    assert new.spec.cluster_ip == "10.96.0.10" and new.spec.cluster_ips == ("10.96.0.10",)
    assert [p.node_port for p in new.spec.ports] == [30080, 30443]
    assert new == old
    assert api.validate_update(old, new) == []


def test_node_ports_follow_port_names_not_positions() -> None:
    old = allocated(loaded(NODE_PORT_SVC), node_ports={"http": 30080, "https": 30443})
    swapped = merged(NODE_PORT_SVC, {"spec": {"ports": [{"name": "https", "port": 443}, {"name": "http", "port": 80}]}})
    new = api.merge_service_allocations(old, loaded(swapped))
    assert [(p.name, p.node_port) for p in new.spec.ports] == [("https", 30443), ("http", 30080)]


def test_node_port_taken_explicitly_is_not_copied_to_another_port() -> None:
    old = allocated(loaded(NODE_PORT_SVC), node_ports={"http": 30080, "https": 30443})
    explicit = merged(NODE_PORT_SVC, {"spec": {"ports": [{"name": "http", "port": 80, "nodePort": 30443},
                                                         {"name": "https", "port": 443}]}})
    new = api.merge_service_allocations(old, loaded(explicit))
    assert [p.node_port for p in new.spec.ports] == [30443, None]


def test_node_ports_are_not_copied_to_a_cluster_ip_service() -> None:
    old = allocated(loaded(NODE_PORT_SVC), node_ports={"http": 30080, "https": 30443})
    new = api.merge_service_allocations(old, loaded(NODE_PORT_SVC, {"spec": {"type": "ClusterIP"}}))
    assert [p.node_port for p in new.spec.ports] == [None, None]
    assert new.spec.cluster_ip == "10.96.0.10"
    assert api.validate_update(old, new) == []


def test_externalname_gets_no_cluster_ip_from_the_old_service() -> None:
    old = allocated(loaded(SERVICE))
    new = api.merge_service_allocations(old, loaded(SERVICE, {"spec": {"type": "ExternalName",
                                                                       "externalName": "db.example.com"}}))
    assert (new.spec.cluster_ip, new.spec.cluster_ips) == ("", ())
    assert api.validate_update(old, new) == []


def test_health_check_node_port_is_kept() -> None:
    lb_local = merged(SERVICE, {"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"}})
    old = replace(allocated(loaded(lb_local)), spec=replace(allocated(loaded(lb_local)).spec, health_check_node_port=31000))
    new = api.merge_service_allocations(old, loaded(lb_local))
    assert new.spec.health_check_node_port == 31000
    assert api.validate_update(old, new) == []


UPDATE_CASES = [
    ("cluster-ip-changed", SERVICE, {"spec": {"clusterIP": "10.96.0.20"}},
     ['spec.clusterIPs[0]: Invalid value: []string{"10.96.0.20"}: may not change once set']),
    ("cluster-ip-to-headless", SERVICE, {"spec": {"clusterIP": "None"}},
     ['spec.clusterIPs[0]: Invalid value: []string{"None"}: may not change once set']),
    ("same-cluster-ip", SERVICE, {"spec": {"clusterIP": "10.96.0.10"}}, []),
    ("lb-class-changed", merged(SERVICE, {"spec": {"type": "LoadBalancer", "loadBalancerClass": "a.io/x"}}),
     {"spec": {"loadBalancerClass": "a.io/y"}},
     ['spec.loadBalancerClass: Invalid value: "a.io/y": may not change once set']),
    ("selector-changed", DEPLOYMENT,
     {"spec": {"selector": {"matchLabels": {"app": "api"}}, "template": {"metadata": {"labels": {"app": "api"}}}}},
     ['spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"app":"api"}, '
      "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"]),
    ("replicas-changed", DEPLOYMENT, {"spec": {"replicas": 5}}, []),
    ("pod-image-changed", POD, containers(app(image="nginx:1.27")), []),
    ("pod-container-added", POD, containers(app(), app(name="b")),
     ["spec.containers: Forbidden: pod updates may not add or remove containers"]),
    ("slice-address-type", SLICE, {"addressType": "IPv6", "endpoints": [{"addresses": ["fd00::5"]}]},
     ['addressType: Invalid value: "IPv6": field is immutable']),
]


@pytest.mark.parametrize("base,patch,expected", [c[1:] for c in UPDATE_CASES], ids=[c[0] for c in UPDATE_CASES])
def test_update_validation(base: dict[str, Any], patch: dict[str, Any], expected: list[str]) -> None:
    old = loaded(base)
    if isinstance(old, api.Service) and old.spec.type != "ExternalName":
        old = allocated(old)
    new = api.merge_server_fields(old, loaded(base, patch))
    assert [str(p) for p in api.validate_update(old, new)] == expected


def test_pod_spec_change_is_forbidden_with_kubernetes_wording() -> None:
    old = loaded(POD)
    new = loaded(POD, {"spec": {"dnsPolicy": "Default"}})
    (problem,) = api.validate_update(old, new)
    assert problem.path == "spec"
    first, *diff = problem.message.splitlines()
    assert first == (
        "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
        "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
        "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously "
        "negative)")
    assert '- "dnsPolicy": "ClusterFirst",' in diff and '+ "dnsPolicy": "Default",' in diff


def test_reapplying_a_scheduled_pod_keeps_its_node() -> None:
    old = replace(loaded(POD), spec=replace(loaded(POD).spec, node_name="node-1"))
    new = api.merge_server_fields(old, loaded(POD))
    assert new.spec.node_name == "node-1"
    assert api.validate_update(old, new) == []


def test_active_deadline_may_only_shrink() -> None:
    old = loaded(POD, {"spec": {"activeDeadlineSeconds": 60}})
    assert api.validate_update(old, loaded(POD, {"spec": {"activeDeadlineSeconds": 30}})) == []
    assert [str(p) for p in api.validate_update(old, loaded(POD, {"spec": {"activeDeadlineSeconds": 90}}))] == [
        "spec.activeDeadlineSeconds: Invalid value: 90: must be less than or equal to previous value"]


def test_update_of_another_kind_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        api.validate_update(loaded(POD), loaded(SERVICE))


# --------------------------------------------------------------------------- value rendering

GO_VALUES = [
    ("string", "a\"b", '"a\\"b"'),
    ("control", "a\tb\x01", '"a\\tb\\x01"'),
    ("int", 8080, "8080"),
    ("bool", True, "true"),
    ("none", None, "null"),
    ("list", ("a", "b"), '[]string{"a", "b"}'),
    ("map-sorted", {"b": "2", "a": "1"}, 'map[string]string{"a":"1", "b":"2"}'),
]


@pytest.mark.parametrize("value,expected", [c[1:] for c in GO_VALUES], ids=[c[0] for c in GO_VALUES])
def test_go_repr(value: Any, expected: str) -> None:
    assert validation.go_repr(value) == expected


def test_image_change_keeps_the_live_pull_policy_but_an_explicit_policy_change_is_forbidden() -> None:
    old = loaded(POD)  # nginx → imagePullPolicy Always
    new = api.merge_server_fields(old, loaded(POD, containers(app(image="nginx:1.27"))))
    assert new.spec.containers[0].image_pull_policy == "Always"
    changed = api.merge_server_fields(old, loaded(POD, containers(app(imagePullPolicy="Never"))))
    (problem,) = api.validate_update(old, changed)
    assert problem.path == "spec" and problem.message.startswith("Forbidden: pod updates may not change fields")
