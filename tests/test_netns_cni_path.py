"""Pods wired by CNI plugin executables from a directory (``cni_bin_dir``), as a container runtime
runs them: Debian's reference ``bridge`` + ``host-local`` against netemu's own in-process plugin.

The same two-node cluster comes up once with each; what a pod sees (its addresses, routes,
gateway, the isolation of its port on the node's bridge) is the same, and so is what works:
pod to pod across nodes, and a ClusterIP whose backend sees the client pod's own address.
"""
from __future__ import annotations

import os
from typing import Any

import pytest
from test_netns_helpers import netns_ready, own_network_unchanged  # noqa: F401 - fixtures

from netemu.errors import ClusterError
from netemu.fabric import routes_outside_loopback
from netemu.fabric.netns import ipbatch

REFERENCE = "/usr/lib/cni"
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(bool(routes_outside_loopback()),
                       reason="netns cluster tests run inside a namespace without outside routes (make test)"),
]

PODS = """
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: node-1
  containers: [{name: curl, image: "radial/busyboxplus:curl"}]
---
apiVersion: v1
kind: Pod
metadata: {name: server, labels: {app: server}}
spec:
  nodeName: node-2
  containers:
  - {name: netexec, image: registry.k8s.io/e2e-test-images/agnhost:2.53, args: [netexec, --http-port=8080]}
---
apiVersion: v1
kind: Pod
metadata: {name: neighbour, labels: {app: server}}
spec:
  nodeName: node-1
  containers:
  - {name: netexec, image: registry.k8s.io/e2e-test-images/agnhost:2.53, args: [netexec, --http-port=8080]}
---
apiVersion: v1
kind: Service
metadata: {name: server}
spec:
  selector: {app: server}
  ports: [{port: 80, targetPort: 8080}]
"""


async def _what_a_pod_sees(cluster: Any, pod: str) -> dict[str, Any]:
    obj = cluster.get("Pod", pod)
    netns = cluster.fabric.namespace_of(obj.metadata.uid)
    node_ns = cluster.fabric.namespace_of(obj.spec.node_name)
    links = {link["ifname"]: link for link in await ipbatch.aquery(netns, "link", "show")}
    addresses = [f'{a["local"]}/{a["prefixlen"]}' for link in await ipbatch.aquery(netns, "-4", "addr", "show", "dev", "eth0")
                 for a in link["addr_info"]]
    routes = sorted((r["dst"], r.get("gateway", "")) for r in await ipbatch.aquery(netns, "-4", "route", "show"))
    ports = [link for link in await ipbatch.aquery(node_ns, "-d", "link", "show", "master", "cni0")]
    isolated = {p["linkinfo"]["info_slave_data"].get("isolated") for p in ports}
    return {"links": sorted(links), "addresses": addresses, "routes": routes, "isolated": isolated,
            "mtu": links["eth0"]["mtu"]}


async def _curl(cluster: Any, url: str) -> str:
    result = await cluster.exec("client", ["curl", "-sS", "--max-time", "10", url])
    assert result.returncode == 0, f"curl {url}: {result.stderr}"
    return result.stdout


@pytest.mark.skipif(not os.access(f"{REFERENCE}/bridge", os.X_OK), reason="needs containernetworking-plugins")
async def test_reference_plugins_and_netemus_wire_pods_alike(netns_ready, make_cluster) -> None:  # noqa: F811
    seen = {}
    for plugins in ("netemu", "reference"):
        extra = {"cni_bin_dir": REFERENCE} if plugins == "reference" else {}
        cluster = await make_cluster(nodes=2, backend="netns", **extra)
        await cluster.apply(PODS)
        await cluster.wait_ready(timeout=30)
        client, server = cluster.get("Pod", "client").status.pod_ip, cluster.get("Pod", "server").status.pod_ip
        assert client.startswith("10.244.1.") and server.startswith("10.244.2.")
        assert (await _curl(cluster, f"http://{server}:8080/clientip")).startswith(f"{client}:")  # across nodes, no NAT
        service = cluster.service_ip("server")
        for _ in range(4):  # both endpoints in turn: on the other node and on the client's own
            assert (await _curl(cluster, f"http://{service}/clientip")).startswith(f"{client}:")
        seen[plugins] = {pod: await _what_a_pod_sees(cluster, pod) for pod in ("client", "server")}
        await cluster.stop()
    assert seen["reference"] == seen["netemu"]
    assert seen["netemu"]["client"]["isolated"] == {True}
    assert ("default", "10.244.1.1") in seen["netemu"]["client"]["routes"]


def test_a_directory_without_the_plugins_is_refused(tmp_path) -> None:
    from netemu.config import ClusterConfig
    with pytest.raises(ClusterError, match="no executable bridge or host-local there"):
        ClusterConfig(backend="netns", cni_bin_dir=str(tmp_path)).validate()
    with pytest.raises(ClusterError, match="netns backend only"):
        ClusterConfig(cni_bin_dir=REFERENCE).validate()
