"""netemu.dev Impairment objects (netemu.chaos): written by kubectl or by ``netemu impair``, put in
force at the service proxy, shown by both, cleared when deleted; refused in the API server's words.

One loopback cluster for the module with its Kubernetes API; the real kubectl and the netemu CLI
talk to it from outside, as a user's would.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubeapi_support import KUBECTL, cluster_with_api, kubectl_runner, namespace_for, poll
from netemu.kubeapi import KUBECONFIG

NETEMU = str(Path(sys.executable).parent / "netemu")

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")

WEB = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx, ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
"""


def impairment(name: str, target: dict, **settings: str) -> str:
    return yaml.safe_dump({"apiVersion": "netemu.dev/v1", "kind": "Impairment", "metadata": {"name": name},
                           "spec": {"target": target, **settings}})


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    with cluster_with_api(state, "chaos") as handle:
        handle.state_root = state
        yield handle


@pytest.fixture
def kubectl(api, tmp_path):
    return kubectl_runner(api.cluster.state.directory / KUBECONFIG, tmp_path)


@pytest.fixture
def namespace(kubectl, request):
    ns = namespace_for(kubectl, request)
    kubectl("apply", "-n", ns, "-f", "-", input=WEB)
    kubectl("rollout", "status", "-n", ns, "deployment/web", "--timeout=60s")
    return ns


def netemu(api, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NETEMU_STATE_DIR=str(api.state_root), NETEMU_CLUSTER=api.name)
    return subprocess.run([NETEMU, *args], env=env, capture_output=True, text=True, timeout=60)


def seconds_for_one_request(url: str) -> float:
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{time_total}", url],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return float(r.stdout)


def service_impairment(api, namespace: str) -> str | None:
    found = api.cluster.proxy.impairments.by_service.get((namespace, "web"))
    return str(found) if found is not None else None


def test_kubectl_apply_impairs_a_service_until_it_is_deleted(api, kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=impairment("slow-web", {"service": "web"}, delay="150ms"))
    rows = poll(lambda: [line.split() for line in kubectl("get", "impairments", "-n", namespace).stdout.splitlines()
                          if "<pending>" not in line], "the impairment in force")
    assert rows == [["NAME", "TARGET", "SETTINGS", "APPLIED", "AGE"],
                    ["slow-web", "service/web", "delay", "150ms", "delay", "150ms", rows[1][-1]]]
    status = yaml.safe_load(kubectl("get", "impairment", "slow-web", "-n", namespace, "-o", "yaml").stdout)["status"]
    assert status == {"applied": "delay 150ms", "layer": "proxy", "observedGeneration": 1}
    ip = kubectl("get", "svc", "web", "-n", namespace, "-o", "jsonpath={.spec.clusterIP}").stdout
    assert seconds_for_one_request(f"http://{ip}/") >= 2 * 0.150  # the request and the answer each wait

    kubectl("patch", "impairment", "slow-web", "-n", namespace, "--type=merge", "-p", '{"spec":{"loss":"5%"}}')
    poll(lambda: service_impairment(api, namespace) == "delay 150ms loss 5%", "the patched impairment")
    kubectl("delete", "impairment", "slow-web", "-n", namespace)
    poll(lambda: service_impairment(api, namespace) is None, "the impairment cleared")


def test_the_cli_writes_the_object_kubectl_sees(api, kubectl, namespace):
    r = netemu(api, "impair", "--service", f"{namespace}/web", "--delay", "20ms")
    assert (r.returncode, r.stdout, r.stderr) == (0, f"service/{namespace}/web impaired: delay 20ms\n", "")
    made = yaml.safe_load(kubectl("get", "impairment", "service-web", "-n", namespace, "-o", "yaml").stdout)
    assert made["spec"] == {"target": {"service": "web"}, "delay": "20ms"}
    r = netemu(api, "impair", "--service", "web", "-n", namespace, "--rate", "1mbit")
    assert r.stdout == "service/web impaired: rate 1mbit\n", r.stderr
    changed = yaml.safe_load(kubectl("get", "impairment", "service-web", "-n", namespace, "-o", "yaml").stdout)
    assert changed["metadata"]["generation"] == 2 and changed["spec"] == {"target": {"service": "web"}, "rate": "1mbit"}
    assert service_impairment(api, namespace) == "rate 1mbit"
    r = netemu(api, "impair", "--service", "web", "-n", namespace, "--clear")
    assert r.stdout == "service/web: impairment cleared\n", r.stderr
    assert kubectl("get", "impairments", "-n", namespace, "-o", "name").stdout == ""
    assert service_impairment(api, namespace) is None


def test_the_cli_changes_and_clears_what_kubectl_made(api, kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=impairment("mine", {"service": "web"}, delay="5ms"))
    poll(lambda: service_impairment(api, namespace) == "delay 5ms", "kubectl's impairment in force")
    r = netemu(api, "impair", "--service", "web", "-n", namespace, "--delay", "7ms")
    assert r.stdout == "service/web impaired: delay 7ms\n", r.stderr
    assert kubectl("get", "impairments", "-n", namespace, "-o", "name").stdout.split() == ["impairment.netemu.dev/mine"]
    assert netemu(api, "impair", "--service", "web", "-n", namespace, "--clear").returncode == 0
    assert kubectl("get", "impairments", "-n", namespace, "-o", "name").stdout == ""
    assert service_impairment(api, namespace) is None


@pytest.mark.parametrize(("target", "settings", "message"), [
    pytest.param({"link": ["node-1", "node-2"]}, {"delay": "1ms"},
                 "spec.target.link: Forbidden: links are impaired on the netns backend's wire; this cluster uses the "
                 "loopback backend", id="link-on-loopback"),
    pytest.param({"service": "web"}, {"duplicate": "1%"},
                 "spec.duplicate: Forbidden: duplicate acts on frames on the netns backend's wire", id="duplicate"),
    pytest.param({"node": "node-9"}, {"delay": "1ms"}, 'spec.target.node: Not found: "node-9"', id="unknown-node"),
    pytest.param({"service": "web", "node": "node-1"}, {"delay": "1ms"},
                 'spec.target: Invalid value: ["service", "node"]: name exactly one of service, node or link',
                 id="two-targets"),
    pytest.param({"service": "web"}, {"delay": "soon"},
                 'spec.delay: Invalid value: "soon": expected a number with one of the units', id="bad-unit"),
    pytest.param({"service": "web"}, {}, "spec: Required value: at least one of delay", id="no-setting"),
])
def test_kubectl_gets_the_api_servers_refusal(kubectl, namespace, target, settings, message):
    r = kubectl("apply", "-n", namespace, "-f", "-", input=impairment("bad", target, **settings), check=False)
    assert r.returncode == 1 and r.stderr.startswith('The Impairment "bad" is invalid: ') and message in r.stderr, \
        r.stderr
    assert kubectl("get", "impairments", "-n", namespace, "-o", "name").stdout == ""


def test_one_impairment_per_target(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=impairment("first", {"service": "web"}, delay="1ms"))
    r = kubectl("apply", "-n", namespace, "-f", "-", input=impairment("second", {"service": "web"}, loss="1%"),
                check=False)
    assert r.returncode == 1 and ('spec.target: Duplicate value: "service/web": already impaired by Impairment '
                                  f"{namespace}/first") in r.stderr, r.stderr


def test_served_and_explained_in_the_netemu_dev_group(kubectl):
    resources = kubectl("api-resources", "--api-group=netemu.dev").stdout.splitlines()
    assert [line.split() for line in resources[1:]] == [["captures", "netemu.dev/v1", "true", "Capture"],
                                                        ["impairments", "netemu.dev/v1", "true", "Impairment"],
                                                        ["partitions", "netemu.dev/v1", "false", "Partition"]]
    explained = kubectl("explain", "impairment.spec.target").stdout
    assert all(field in explained for field in ("service", "node", "link"))
    assert "One-way delay of each direction" in kubectl("explain", "impairment.spec.delay").stdout


def test_the_python_api_writes_the_same_object(api, kubectl, namespace):
    said = api.call(api.cluster.impair, service="web", namespace=namespace, delay=0.03, loss=0.5)
    assert said == "service/web impaired: delay 30ms loss 50%"
    made = yaml.safe_load(kubectl("get", "impairment", "service-web", "-n", namespace, "-o", "yaml").stdout)
    assert made["spec"] == {"target": {"service": "web"}, "delay": "30ms", "loss": "50%"}
    assert made["status"]["applied"] == "delay 30ms loss 50%"
    assert api.call(api.cluster.impair, service="web", namespace=namespace) == "service/web: impairment cleared"
    assert kubectl("get", "impairments", "-n", namespace, "-o", "name").stdout == ""
    assert service_impairment(api, namespace) is None
