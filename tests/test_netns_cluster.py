"""A whole cluster on the netns backend: pods in namespaces, Services through the per-node
proxies, cluster DNS in its pod, NodePorts from the host.

Two nodes; the walkthrough's my-nginx Deployment and Service, a curl pod on node-1, an agnhost
netexec pod on node-2 behind a NodePort Service. Every namespace is the cluster's own (named
after it, recorded in a tmp state directory) and gone after ``stop()``; the module checks that
the namespace the tests run in is unchanged. Traffic stays inside the cluster's namespaces, but
for the host side of NodePorts and the load balancer, which is on 127.10.0.1 and 127.200.x.
Pod IPs and ClusterIPs are not reachable from the host on this backend: the test never tries.
"""
from __future__ import annotations

import asyncio
import socket
import ipaddress
from pathlib import Path

import pytest

from netemu.fabric import routes_outside_loopback
from test_netns_helpers import netns_ready, own_network_unchanged  # noqa: F401 - fixtures

from netemu.fabric.netns import ipbatch, namespaces

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(bool(routes_outside_loopback()),
                       reason="the netns backend runs only in a namespace without outside routes (make test)"),
]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
WELCOME = "Welcome to nginx!"

CLIENTS = """
apiVersion: v1
kind: Pod
metadata: {name: curl}
spec:
  nodeName: node-1
  containers:
  - {name: curl, image: "radial/busyboxplus:curl"}
---
apiVersion: v1
kind: Pod
metadata: {name: netexec, labels: {app: netexec}}
spec:
  nodeName: node-2
  containers:
  - name: netexec
    image: registry.k8s.io/e2e-test-images/agnhost:2.47
    args: ["netexec", "--http-port=8080"]
---
apiVersion: v1
kind: Service
metadata: {name: netexec}
spec:
  type: NodePort
  selector: {app: netexec}
  ports:
  - {port: 80, targetPort: 8080, nodePort: 30007}
---
apiVersion: v1
kind: Service
metadata: {name: netexec-lb}
spec:
  type: LoadBalancer
  selector: {app: netexec}
  ports:
  - {port: 8080, targetPort: 8080}
"""


def _cluster_namespaces(name: str) -> list[str]:
    return sorted(p.name for p in namespaces.NETNS_RUN_DIR.glob(f"netemu-{name}-*"))


async def _curl(cluster, url: str) -> str:  # noqa: ANN001 - a netemu Cluster
    """Real curl from the host: the namespace the test started in, which the cluster's thread
    (this one) has left for a sealed namespace of its own."""
    proc = await asyncio.create_subprocess_exec(
        *cluster.fabric.process_prefix(""), "curl", "-sS", "--max-time", "10", url, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, f"curl {url}: {err.decode()}"
    return out.decode()


async def test_services_and_dns_work_on_the_netns_backend(netns_ready, make_cluster) -> None:  # noqa: F811
    interfaces_before = socket.if_nameindex()
    cluster = await make_cluster(nodes=2, backend="netns")
    name = cluster.name
    assert socket.if_nameindex() == [(1, "lo")]  # sealed: nothing sent from here can leave
    assert "netns" in cluster.capabilities
    assert cluster.config.pod_cidr == "10.244.0.0/16" and cluster.config.service_cidr == "10.96.0.0/12"
    await cluster.apply(str(EXAMPLES / "my-nginx-deployment.yaml"), str(EXAMPLES / "my-nginx-service.yaml"), CLIENTS)
    await cluster.wait_ready(timeout=30)

    nginx = cluster.pods(selector={"run": "my-nginx"})
    assert {p.spec.node_name for p in nginx} == {"node-1", "node-2"}
    pod_range = ipaddress.ip_network("10.244.0.0/16")
    assert all(ipaddress.ip_address(p.status.pod_ip) in pod_range for p in nginx)
    service_ip = cluster.service_ip("my-nginx")
    assert ipaddress.ip_address(service_ip) in ipaddress.ip_network("10.96.0.0/12")

    async def curl_in_pod(url: str) -> str:
        result = await cluster.exec("curl", ["curl", "-sS", "--max-time", "10", url])
        assert result.returncode == 0, f"curl {url} in pod curl: {result.stderr}"
        return result.stdout

    for url in [*(f"http://{p.status.pod_ip}/" for p in nginx), f"http://{service_ip}/", "http://my-nginx/"]:
        assert WELCOME in await curl_in_pod(url), url

    lookup = await cluster.exec("curl", ["nslookup", "my-nginx"])
    assert lookup.returncode == 0, lookup.stderr
    assert service_ip in lookup.stdout and cluster.config.dns_ip in lookup.stdout

    # NodePort from the host: node-1's host address, though the pod runs on node-2
    host_ip = cluster.config.node_ip(0)
    assert "netexec" in await _curl(cluster, f"http://{host_ip}:30007/hostname")
    # a LoadBalancer's ingress address (127.200.x) from the host, spread over the nodes' NodePorts
    await cluster.wait_for(lambda: cluster.get("Service", "netexec-lb").status.load_balancer.ingress, 10,
                           "the load balancer's ingress")
    ingress = cluster.get("Service", "netexec-lb").status.load_balancer.ingress[0].ip
    for _ in range(2):  # both nodes in turn
        assert "netexec" in await _curl(cluster, f"http://{ingress}:8080/hostname")

    # through the ClusterIP from node-1 to a pod on node-2: transparent, the server sees the client pod
    client_ip = await curl_in_pod(f"http://{cluster.service_ip('netexec')}/clientip")
    assert client_ip.rsplit(":", 1)[0] == cluster.get("Pod", "curl").status.pod_ip, client_ip

    # a ClusterIP lives on every node's svc0 exactly as long as its Service
    async def service_ips(node: str) -> set[str]:
        links = await ipbatch.aquery(cluster.fabric.namespace_of(node), "addr", "show", "dev", "svc0")
        return {a["local"] for link in links for a in link["addr_info"]}

    for node in ("node-1", "node-2"):
        assert {service_ip, cluster.config.dns_ip} <= await service_ips(node)
    await cluster.delete("Service", "my-nginx", wait=True)
    await cluster.settle()
    for node in ("node-1", "node-2"):
        assert service_ip not in await service_ips(node)

    await cluster.stop()
    assert _cluster_namespaces(name) == []
    assert socket.if_nameindex() == interfaces_before  # back where it started


async def test_probes_reach_pods_from_the_node(netns_ready, make_cluster) -> None:  # noqa: F811
    # The kubelet probes from the node's network: on netns a pod IP is reachable only from there.
    cluster = await make_cluster(nodes=1, backend="netns")
    await cluster.apply("""
apiVersion: v1
kind: Pod
metadata: {name: probed}
spec:
  containers:
  - name: web
    image: nginx
    ports: [{containerPort: 8080}]
    readinessProbe:
      httpGet: {path: /, port: 8080}
      periodSeconds: 1
    livenessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
""")
    await cluster.wait_ready(timeout=20)
    status = cluster.get("pod", "probed").status.container_statuses[0]
    assert status.ready and status.restart_count == 0


async def test_cluster_dns_forwards_from_the_hosts_network_to_a_configured_upstream(netns_ready, make_cluster) -> None:  # noqa: F811
    """The upstream (a stub on 127.x, in the namespace the test started in) is reachable only from
    the host's network: the DNS pod's own namespace has no way out."""
    import socketserver
    import threading

    from dnslib import QTYPE, RR, A, DNSRecord

    class Stub(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data, sock = self.request
            reply = DNSRecord.parse(data).reply()
            if reply.q.qtype == QTYPE.A:
                reply.add_answer(RR(reply.q.qname, QTYPE.A, rdata=A("192.0.2.99"), ttl=60))
            sock.sendto(reply.pack(), self.client_address)

    server = socketserver.UDPServer(("127.53.9.9", 0), Stub)  # made before the cluster seals this thread
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        cluster = await make_cluster(nodes=1, backend="netns", dns_upstreams=(f"127.53.9.9:{server.server_address[1]}",))
        await cluster.apply(CLIENTS.split("---")[0])
        await cluster.wait_ready(timeout=30)
        lookup = await cluster.exec("curl", ["nslookup", "example.com"])
        assert lookup.returncode == 0 and "192.0.2.99" in lookup.stdout, lookup.stdout + lookup.stderr
    finally:
        server.shutdown()
        server.server_close()
