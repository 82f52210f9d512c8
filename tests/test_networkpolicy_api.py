"""NetworkPolicy through the API: defaults and validation in kube-apiserver's words, the real
kubectl's ``get netpol`` and ``describe``, and the loopback backend's warning that it does not
enforce them."""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone

import pytest
import yaml

from kubeapi_support import KUBECTL, api_fixtures
from netemu import printers
from netemu.api import codec
from netemu.api.defaults import apply_defaults
from netemu.api.networkpolicy import NetworkPolicy
from netemu.api.validation import validate, validate_update
from netemu.networkpolicy import NOT_ENFORCED

api, kubectl, namespace = api_fixtures("netpol")

DOCS_EXAMPLE = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: test-network-policy
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes:
  - Ingress
  - Egress
  ingress:
  - from:
    - ipBlock:
        cidr: 172.17.0.0/16
        except:
        - 172.17.1.0/24
    - namespaceSelector:
        matchLabels:
          project: myproject
    - podSelector:
        matchLabels:
          role: frontend
    ports:
    - protocol: TCP
      port: 6379
  egress:
  - to:
    - ipBlock:
        cidr: 10.0.0.0/24
    ports:
    - protocol: TCP
      port: 5978
"""

DENY_ALL = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-ingress}
spec:
  podSelector: {}
"""


def decoded(spec: dict, name: str = "p") -> NetworkPolicy:
    obj, problems = codec.from_dict(NetworkPolicy, {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                                    "metadata": {"name": name, "namespace": "default"}, "spec": spec})
    assert problems == []
    return apply_defaults(obj)


def problems(spec: dict) -> list[str]:
    return [str(p) for p in validate(decoded(spec))]


def test_defaults_policy_types_from_the_rules_and_protocol_tcp() -> None:
    assert decoded({"podSelector": {}}).spec.policy_types == ("Ingress",)
    egress = decoded({"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]})
    assert egress.spec.policy_types == ("Ingress", "Egress")
    assert egress.spec.egress[0].ports[0].protocol == "TCP"
    only_egress = decoded({"podSelector": {}, "policyTypes": ["Egress"]})
    assert only_egress.spec.policy_types == ("Egress",)


def test_empty_selectors_and_rules_survive_a_round_trip() -> None:
    policy = decoded({"podSelector": {}, "ingress": [{}, {"from": [{"podSelector": {}}]}]})
    out = codec.to_dict(policy)["spec"]
    assert out["podSelector"] == {}
    assert out["ingress"] == [{}, {"from": [{"podSelector": {}}]}]


@pytest.mark.parametrize("spec, expected", [
    ({"podSelector": {}, "ingress": [{"from": [{}]}]}, "spec.ingress[0].from[0]: Required value: must specify a peer"),
    ({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}, "ipBlock": {"cidr": "10.0.0.0/8"}}]}]},
     "spec.ingress[0].from[0]: Forbidden: may not specify both ipBlock and another peer"),
    ({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}]},
     'spec.egress[0].to[0].ipBlock.except[0]: Invalid value: "11.0.0.0/16": must be a strict subset of `cidr`'),
    ({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}]}]},
     'spec.egress[0].to[0].ipBlock.except[0]: Invalid value: "10.0.0.0/8": must be a strict subset of `cidr`'),
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]},
     'spec.ingress[0].from[0].ipBlock.cidr: Invalid value: "10.0.0.0/33": must be a valid CIDR value, '
     '(e.g. 10.9.8.0/24 or 2001:db8::/64)'),
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {}}]}]},
     "spec.ingress[0].from[0].ipBlock.cidr: Required value"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 90}]}]},
     "spec.ingress[0].ports[0].endPort: Invalid value: 90: may not be specified when `port` is non-numeric"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]},
     "spec.ingress[0].ports[0].endPort: Invalid value: 80: must be greater than or equal to `port`"),
    ({"podSelector": {}, "ingress": [{"ports": [{"endPort": 80}]}]},
     "spec.ingress[0].ports[0].endPort: Invalid value: 80: may not be specified when `port` is not specified"),
    ({"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP", "port": 1}]}]},
     'spec.ingress[0].ports[0].protocol: Unsupported value: "ICMP": supported values: "TCP", "UDP", "SCTP"'),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]},
     "spec.ingress[0].ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"),
    ({"podSelector": {}, "policyTypes": ["Ingress", "Sideways"]},
     'spec.policyTypes[1]: Unsupported value: "Sideways": supported values: "Ingress", "Egress"'),
])
def test_validation_in_kube_apiservers_words(spec: dict, expected: str) -> None:
    assert expected in problems(spec)


def test_an_update_may_keep_a_cidr_the_policy_already_had() -> None:
    bad = {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}
    old = decoded(bad)
    assert validate_update(old, decoded({**bad, "egress": []})) == []


def test_describe_in_kubectls_format() -> None:
    obj, _ = codec.from_dict(NetworkPolicy, yaml.safe_load(DOCS_EXAMPLE))
    obj = apply_defaults(obj)
    text = printers.describe(obj, events=None, now=datetime.now(timezone.utc))
    assert ("Spec:\n"
            "  PodSelector:     role=db\n"
            "  Allowing ingress traffic:\n"
            "    To Port: 6379/TCP\n"
            "    From:\n"
            "      IPBlock:\n"
            "        CIDR: 172.17.0.0/16\n"
            "        Except: 172.17.1.0/24\n"
            "    From:\n"
            "      NamespaceSelector: project=myproject\n"
            "    From:\n"
            "      PodSelector: role=frontend\n"
            "  Allowing egress traffic:\n"
            "    To Port: 5978/TCP\n"
            "    To:\n"
            "      IPBlock:\n"
            "        CIDR: 10.0.0.0/24\n"
            "        Except: \n"
            "  Policy Types: Ingress, Egress\n") in text


pytestmark_kubectl = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")


@pytestmark_kubectl
def test_kubectl_apply_warns_that_loopback_does_not_enforce(kubectl, namespace) -> None:
    applied = kubectl("apply", "-n", namespace, "-f", "-", input=DENY_ALL)
    assert "networkpolicy.networking.k8s.io/default-deny-ingress created" in applied.stdout
    assert f"Warning: {NOT_ENFORCED}" in applied.stderr


@pytestmark_kubectl
def test_kubectl_get_and_describe_netpol(kubectl, namespace) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=DOCS_EXAMPLE + "---\n" + DENY_ALL)
    table = kubectl("get", "netpol", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "POD-SELECTOR", "AGE"]
    rows = {line.split()[0]: line.split()[1] for line in table[1:]}
    assert rows == {"default-deny-ingress": "<none>", "test-network-policy": "role=db"}
    text = kubectl("describe", "networkpolicy", "default-deny-ingress", "-n", namespace).stdout
    assert ("  PodSelector:     <none> (Allowing the specific traffic to all pods in this namespace)\n"
            "  Allowing ingress traffic:\n"
            "    <none> (Selected pods are isolated for ingress connectivity)\n"
            "  Not affecting egress traffic\n"
            "  Policy Types: Ingress\n") in text
    live = json.loads(kubectl("get", "netpol", "default-deny-ingress", "-n", namespace, "-o", "json").stdout)
    assert live["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}


@pytestmark_kubectl
def test_kubectl_refuses_an_invalid_policy(kubectl, namespace) -> None:
    bad = DENY_ALL.replace("podSelector: {}", "podSelector: {}\n  ingress: [{from: [{}]}]")
    result = kubectl("apply", "-n", namespace, "-f", "-", input=bad, check=False)
    assert result.returncode == 1
    assert 'The NetworkPolicy "default-deny-ingress" is invalid: spec.ingress[0].from[0]: Required value: ' \
           'must specify a peer' in result.stderr


def test_netemu_apply_prints_the_warning_line(api, namespace) -> None:
    lines = api.apply(DENY_ALL, namespace=namespace)
    assert lines == ["networkpolicy.networking.k8s.io/default-deny-ingress created", f"Warning: {NOT_ENFORCED}"]
    assert "network-policy" not in api.capabilities


@pytestmark_kubectl
def test_the_official_client_and_kubectl_explain(api, kubectl, namespace) -> None:
    from kubernetes import client, config

    from netemu.kubeapi import KUBECONFIG
    kubectl("apply", "-n", namespace, "-f", "-", input=DOCS_EXAMPLE)
    with config.new_client_from_config(config_file=str(api.cluster.state.directory / KUBECONFIG)) as api_client:
        policy = client.NetworkingV1Api(api_client).read_namespaced_network_policy("test-network-policy", namespace)
    rule = policy.spec.ingress[0]
    assert rule.ports[0].port == 6379 and rule.ports[0].protocol == "TCP"
    assert rule._from[0].ip_block._except == ["172.17.1.0/24"]
    assert policy.spec.policy_types == ["Ingress", "Egress"]
    explained = kubectl("explain", "networkpolicy.spec.ingress.from.ipBlock").stdout
    assert "KIND:       NetworkPolicy" in explained and "except" in explained and "cidr" in explained


async def _describe(api, kind: str, name: str, namespace: str) -> str:
    """What `netemu describe` answers (netemu.kubeapi.describing), made in the cluster's loop."""
    from netemu.kubeapi.describing import describe
    return describe(api.cluster, kind, [name], namespace)


def test_netemu_describe_says_loopback_does_not_enforce(api, namespace, tmp_path) -> None:
    api.apply(DENY_ALL, namespace=namespace)
    text = api.run(_describe(api, "netpol", "default-deny-ingress", namespace))
    assert f"Enforcement:\n  {NOT_ENFORCED}\n" in text


def test_netemu_describe_pod_names_the_policies_selecting_it(api, namespace, tmp_path) -> None:
    api.apply(DENY_ALL + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n"
              "  containers: [{name: web, image: nginx}]\n", namespace=namespace)
    text = api.run(_describe(api, "pod", "web", namespace))
    assert "NetworkPolicies:\n  default-deny-ingress  Ingress\n" in text
    api.delete("NetworkPolicy", "default-deny-ingress", namespace)
    text = api.run(_describe(api, "pod", "web", namespace))
    assert "NetworkPolicies" not in text
