"""The walkthrough, end to end on a real loopback cluster: every example comes up or is refused
exactly where the API server would refuse it; real curl reaches the nginx pods."""
from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from netemu import Cluster
from netemu.errors import ManifestErrors, NetemuError

FIXTURES = Path(__file__).parent / "fixtures" / "manifests"
EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NETEMU_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


async def curl(*args: str) -> subprocess.CompletedProcess:
    """Real curl, off the event loop that serves the cluster."""
    return await asyncio.to_thread(
        subprocess.run, ["curl", "-sS", "--max-time", "5", *args], capture_output=True, text=True)


ACCEPTED = [
    "walkthrough-single-port-service.yaml",
    "walkthrough-multi-port-service.yaml",
    "walkthrough-nodeport-service.yaml",
    "walkthrough-my-nginx-deployment.yaml",
    "walkthrough-my-nginx-service.yaml",
    "walkthrough-dns-example-pod.yaml",
]


@pytest.mark.parametrize("name", ACCEPTED, ids=lambda n: n[len("walkthrough-"):-len(".yaml")])
async def test_walkthrough_example_comes_up(state_dir, name):
    async with Cluster(nodes=2, name="wt") as cluster:
        lines = await cluster.apply(FIXTURES / name)
        assert lines and all(line.endswith(" created") for line in lines)
        await cluster.wait_ready(timeout=20)


async def test_external_name_needs_its_namespace_as_in_kubernetes(state_dir):
    async with Cluster(name="wt") as cluster:
        with pytest.raises(ManifestErrors, match='namespaces "prod" not found'):
            await cluster.apply(FIXTURES / "walkthrough-externalname-service.yaml")
        await cluster.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n")
        assert await cluster.apply(FIXTURES / "walkthrough-externalname-service.yaml") == ["service/my-service created"]
        svc = cluster.get("svc", "my-service", "prod")
        assert (svc.spec.type, svc.spec.external_name, svc.spec.cluster_ip) == (
            "ExternalName", "my.database.example.com", "")


async def test_load_balancer_example_refused_outside_the_service_range(state_dir):
    async with Cluster(name="wt") as cluster:
        with pytest.raises(ManifestErrors) as err:
            await cluster.apply(FIXTURES / "walkthrough-loadbalancer-service.yaml")
        text = str(err.value)
        assert "walkthrough-loadbalancer-service.yaml[doc 1] Service default/my-service: spec.clusterIPs" in text
        assert "10.0.171.239" in text and "127.96.0.0/16" in text
        assert cluster.store.get("Service", "default", "my-service") is None


def test_a_service_range_outside_loopback_is_refused_on_the_loopback_backend(state_dir):
    # The walkthrough's clusterIP 10.0.171.239 needs a service range that holds it; on the
    # loopback backend that range would route to the real network, so netemu refuses it up front.
    from netemu.errors import ClusterError
    with pytest.raises(ClusterError, match="service_cidr 10.0.0.0/16: the loopback backend needs ranges inside 127.0.0.0/8"):
        Cluster(name="wt", service_cidr="10.0.0.0/16")


async def test_load_balancer_example_accepted_when_the_range_holds_its_cluster_ip(state_dir):
    text = (FIXTURES / "walkthrough-loadbalancer-service.yaml").read_text().replace("10.0.171.239", "127.96.171.239")
    async with Cluster(name="wt") as cluster:
        await cluster.apply(text)
        svc = cluster.get("svc", "my-service")
        assert svc.spec.cluster_ip == "127.96.171.239"
        assert svc.status.load_balancer.ingress == ()  # the manifest's status is not taken: <pending>
        await cluster.wait_for(lambda: bool(cluster.get("svc", "my-service").status.load_balancer.ingress), 5, "LB")
        assert cluster.get("svc", "my-service").status.load_balancer.ingress[0].ip.startswith("127.200.")


async def test_verbatim_nodeport_example_is_refused_with_line_and_column(state_dir):
    async with Cluster(name="wt") as cluster:
        with pytest.raises(NetemuError, match=r"walkthrough-nodeport-service-verbatim\.yaml: line \d+, column \d+"):
            await cluster.apply(FIXTURES / "walkthrough-nodeport-service-verbatim.yaml")
        assert cluster.list("svc", "default") == [cluster.get("svc", "kubernetes")]


async def test_my_nginx_on_three_nodes(state_dir):
    async with Cluster(nodes=3, name="wt") as cluster:
        await cluster.apply(EXAMPLES / "my-nginx-deployment.yaml")
        await cluster.wait_ready(timeout=20)
        pods = cluster.pods(selector={"run": "my-nginx"})
        assert len(pods) == 2
        assert all(p.status.phase == "Running" for p in pods)
        assert len({p.spec.node_name for p in pods}) == 2
        assert len({p.status.pod_ip for p in pods}) == 2
        for p in pods:
            r = await curl(f"http://{p.status.pod_ip}/")
            assert r.returncode == 0, r.stderr
            assert "<title>Welcome to nginx!</title>" in r.stdout

        await cluster.apply(EXAMPLES / "my-nginx-service.yaml")
        svc = cluster.get("svc", "my-nginx")
        before = (await cluster.exec(pods[0].metadata.name, ["printenv"])).stdout
        assert "KUBERNETES_SERVICE_HOST=" in before
        assert "MY_NGINX_SERVICE_HOST" not in before

        await cluster.apply(EXAMPLES / "curl-pod.yaml")
        await cluster.wait_ready(timeout=20)
        after = (await cluster.exec("curl", ["printenv"])).stdout.splitlines()
        assert f"MY_NGINX_SERVICE_HOST={svc.spec.cluster_ip}" in after
        assert "MY_NGINX_SERVICE_PORT=80" in after
        assert f"MY_NGINX_PORT_80_TCP=tcp://{svc.spec.cluster_ip}:80" in after

        slices = cluster.list("endpointslice", "default", {"kubernetes.io/service-name": "my-nginx"})
        addresses = sorted(a for s in slices for e in s.endpoints for a in e.addresses)
        assert addresses == sorted(p.status.pod_ip for p in pods)


async def test_node_ports_and_load_balancer_allocation(state_dir):
    async with Cluster(name="wt") as cluster:
        await cluster.apply(FIXTURES / "walkthrough-nodeport-service.yaml")
        assert cluster.get("svc", "my-service").spec.ports[0].node_port == 30007
        with pytest.raises(ManifestErrors, match=r"spec\.ports\[0\]\.nodePort: Invalid value: 30007: "
                                                 r"provided port is already allocated"):
            await cluster.apply("""
apiVersion: v1
kind: Service
metadata: {name: other}
spec:
  type: NodePort
  ports: [{port: 80, nodePort: 30007}]
""")
        with pytest.raises(ManifestErrors, match=r"Invalid value: 8080: provided port is not in the valid range. "
                                                 r"The range of valid ports is 30000-32767"):
            await cluster.apply("""
apiVersion: v1
kind: Service
metadata: {name: other}
spec:
  type: NodePort
  ports: [{port: 80, nodePort: 8080}]
""")
        await cluster.apply("""
apiVersion: v1
kind: Service
metadata: {name: auto}
spec:
  type: LoadBalancer
  selector: {app: x}
  ports: [{name: a, port: 80}, {name: b, port: 81}]
""")
        auto = cluster.get("svc", "auto")
        ports = [p.node_port for p in auto.spec.ports]
        assert all(30000 <= p <= 32767 for p in ports) and len(set(ports)) == 2
        assert auto.status.load_balancer.ingress == ()  # provisioning is asynchronous
        await cluster.wait_for(lambda: bool(cluster.get("svc", "auto").status.load_balancer.ingress), 5, "LB ingress")


async def test_failed_apply_changes_nothing(state_dir):
    async with Cluster(name="wt") as cluster:
        await cluster.wait_ready()  # the system pods (cluster DNS) have settled
        rv = cluster.store.resource_version
        with pytest.raises(ManifestErrors) as err:
            await cluster.apply(EXAMPLES / "my-nginx-deployment.yaml", """
apiVersion: v1
kind: Service
metadata: {name: bad}
spec:
  selector: {app: x}
  ports: [{port: 80}, {port: 81}]
""")
        assert "spec.ports[1].name: Required value" in str(err.value)
        await asyncio.sleep(0)
        assert cluster.store.resource_version == rv
        assert cluster.list("deploy", "default") == []
