"""``proxyMode: nftables`` (netemu.proxy.nftables_render / nftables_proxier): the rules, pure and
applied by the real ``nft`` in a fresh namespace, and a netns cluster whose Services the node
kernels serve — balancing, the client's own address at the backend, NodePorts, refusal without
endpoints, endpoint changes in the kernel, ClientIP affinity and traffic policy Local."""
from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import subprocess
import sys

import pytest

from netemu.config import ClusterConfig
from netemu.errors import ClusterError, FabricError, NetemuError
from netemu.fabric import routes_outside_loopback
from netemu.fabric.netns import namespaces, nft
from netemu.proxy import nftables_render as render
from netemu.proxy.serviceport import EndpointInfo, ServicePortInfo, ServicePortName
from test_netns_helpers import netns_ready, new_names, own_network_unchanged  # noqa: F401 - fixtures

CTX = render.NodeContext(node="node-1", pod_cidr="10.244.0.0/16", service_cidr="10.96.0.0/12")
SPN = ServicePortName("default", "web", "", "TCP")


def view(*endpoints: EndpointInfo, **info: object) -> dict:
    port = ServicePortInfo(name=SPN, cluster_ip="10.96.0.20", port=80, **info)  # type: ignore[arg-type]
    return {SPN: (port, tuple(endpoints))}


A = EndpointInfo("10.244.1.5", 8080, node="node-1")
B = EndpointInfo("10.244.2.7", 8080, node="node-2")
C = EndpointInfo("10.244.2.8", 8080, node="node-2")


# ---------------------------------------------------------------------- render (pure)

def test_a_cluster_ip_balances_over_endpoint_chains_that_dnat() -> None:
    rules = render.render_service(view(A, B), CTX)
    pid = render.port_id(SPN)
    assert rules.elements == {render.SERVICE_IPS: {"10.96.0.20 . tcp . 80": f"goto svc-{pid}"}}
    assert rules.chains[f"svc-{pid}"] == (
        "ip daddr 10.96.0.20 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
        f"numgen random mod 2 vmap {{ 0 : goto ep-{pid}__10.244.1.5/8080, 1 : goto ep-{pid}__10.244.2.7/8080 }}")
    assert rules.chains[f"ep-{pid}__10.244.2.7/8080"] == ("ip saddr 10.244.2.7 jump mark-for-masquerade",
                                                          "meta l4proto tcp dnat to 10.244.2.7:8080")
    assert not rules.sets


def test_no_endpoints_reject_and_local_elsewhere_drops() -> None:
    rules = render.render_service(view(node_port=30080), CTX)
    assert rules.elements == {render.NO_ENDPOINT_SERVICES: {"10.96.0.20 . tcp . 80": "goto reject-chain"},
                              render.NO_ENDPOINT_NODEPORTS: {"tcp . 30080": "goto reject-chain"}}
    assert not rules.chains
    rules = render.render_service(view(B, node_port=30080, external_local=True), CTX)
    assert rules.elements[render.NO_ENDPOINT_NODEPORTS] == {"tcp . 30080": "drop"}
    assert render.SERVICE_IPS in rules.elements  # ClusterIP traffic still goes anywhere


def test_node_ports_masquerade_unless_local() -> None:
    pid = render.port_id(SPN)
    cluster = render.render_service(view(A, B, node_port=30080), CTX)
    assert cluster.elements[render.SERVICE_NODEPORTS] == {"tcp . 30080": f"goto ext-{pid}"}
    assert cluster.chains[f"ext-{pid}"] == ("jump mark-for-masquerade", f"goto svc-{pid}")
    local = render.render_service(view(A, B, node_port=30080, external_local=True), CTX)
    assert local.chains[f"ext-{pid}"] == ("fib saddr type local jump mark-for-masquerade",
                                          f"fib saddr type local goto svc-{pid}", f"goto local-{pid}")
    assert local.chains[f"local-{pid}"] == (f"goto ep-{pid}__10.244.1.5/8080",)
    internal = render.render_service(view(A, B, internal_local=True), CTX)
    assert internal.elements[render.SERVICE_IPS] == {"10.96.0.20 . tcp . 80": f"goto local-{pid}"}


def test_client_ip_affinity_records_and_follows_clients() -> None:
    pid = render.port_id(SPN)
    rules = render.render_service(view(A, B, affinity_timeout=30.0), CTX)
    sets = {f"aff-{pid}__10.244.1.5/8080": 30, f"aff-{pid}__10.244.2.7/8080": 30}
    assert rules.sets == sets
    svc = rules.chains[f"svc-{pid}"]
    assert svc[1:3] == tuple(f"ip saddr @{name} goto ep-{name[4:]}" for name in sets)
    assert f"update @aff-{pid}__10.244.2.7/8080 {{ ip saddr }}" in rules.chains[f"ep-{pid}__10.244.2.7/8080"]


def test_services_backed_by_the_host_stay_userspace() -> None:
    assert render.render_service(view(EndpointInfo("127.0.0.1", 6443)), CTX) == render.ServiceRules()


def test_transition_names_only_what_changed() -> None:
    two, three = render.render_service(view(A, B), CTX), render.render_service(view(A, B, C), CTX)
    assert render.transition(two, two) == []
    lines = render.transition(two, three)
    pid = render.port_id(SPN)
    assert lines[0] == f"add chain ip netemu-proxy ep-{pid}__10.244.2.8/8080"
    assert f"flush chain ip netemu-proxy svc-{pid}" in lines
    assert not [line for line in lines if "element" in line or "delete" in line]  # same map elements
    gone = render.transition(three, render.render_service(view(), CTX))
    assert gone.index("delete element ip netemu-proxy service-ips { 10.96.0.20 . tcp . 80 }") \
        < gone.index(f"flush chain ip netemu-proxy svc-{pid}") < gone.index(f"delete chain ip netemu-proxy svc-{pid}")
    assert "add element ip netemu-proxy no-endpoint-services { 10.96.0.20 . tcp . 80 : goto reject-chain }" in gone


def test_udp_endpoints_that_go_are_stale() -> None:
    from netemu.proxy.nftables_proxier import stale_udp
    udp = ServicePortName("default", "dns", "", "UDP")
    info = ServicePortInfo(name=udp, cluster_ip="10.96.0.10", port=53)
    old = {udp: (info, (A, B)), SPN: view(A, B)[SPN]}
    assert stale_udp(old, {udp: (info, (A,)), SPN: view(A)[SPN]}) == [(info, frozenset({B.address}))]  # TCP: none
    assert stale_udp(old, {}) == [(info, frozenset({A.address, B.address}))]
    assert stale_udp(old, old) == []


def _nft_in_fresh_namespace(batches: list[str]) -> str:
    """Apply each batch with the real ``nft`` in a new network namespace; the table at the end."""
    nft = shutil.which("nft", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    script = "".join(f"printf '%s' '{b}' | {nft} -f - || exit 1\n" for b in batches)
    script += f"{nft} list table {render.FAMILY} {render.TABLE}\n"
    out = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_every_transition_is_a_batch_the_kernel_takes(netns_ready) -> None:  # noqa: F811
    steps = [view(), view(A, B, node_port=30080), view(A, B, C, node_port=30080, affinity_timeout=60.0),
             view(A, B, C, node_port=30080, affinity_timeout=90.0, external_local=True),
             view(C, node_port=30080, internal_local=True), view(), {}]
    batches, before = [render.base(CTX)], render.EMPTY
    for step in steps:
        after = render.render_service(step, CTX)
        batches.append("".join(line + "\n" for line in render.transition(before, after)))
        before = after
    table = _nft_in_fresh_namespace([b for b in batches if b])
    assert "ep-" not in table and "aff-" not in table and "10.96.0.20" not in table  # all gone again
    middle = _nft_in_fresh_namespace([b for b in batches[:5] if b])
    assert "timeout 1m30s" in middle and "numgen random mod 3" in middle and "goto local-" in middle


async def test_batches_go_to_the_named_namespace_and_failures_say_why(new_names) -> None:  # noqa: F811
    (name,) = new_names(1)
    namespaces.create([name])
    await nft.run_nft(name, render.base(CTX))
    listed = subprocess.run([*namespaces.exec_prefix(name), "nft", "list", "tables"], capture_output=True, text=True)
    assert listed.stdout == "table ip netemu-proxy\n"
    assert "netemu-proxy" not in subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    with pytest.raises(FabricError, match=f"^nft in {name} failed: .*No such file or directory"):
        await nft.run_nft(name, "add rule ip netemu-proxy no-such-chain accept\n")


def test_proxy_mode_is_checked() -> None:
    with pytest.raises(ClusterError, match="^proxyMode nftables: needs the netns backend"):
        ClusterConfig(proxy_mode="nftables").validate()
    with pytest.raises(ClusterError, match="^proxyMode 'ipvs': supported values"):
        ClusterConfig(proxy_mode="ipvs", backend="netns").validate()
    assert ClusterConfig().proxy_mode == "userspace"


def test_a_scenario_chooses_the_proxy_mode(tmp_path) -> None:
    from netemu.scenario.model import load_scenarios
    (tmp_path / "kernel.yaml").write_text("name: k\ncluster: {nodes: 1, backend: netns, proxyMode: nftables}\nsteps: []\n")
    assert load_scenarios([str(tmp_path / "kernel.yaml")])[0].overrides == {"proxy_mode": "nftables"}
    (tmp_path / "loop.yaml").write_text("name: l\ncluster: {nodes: 1, proxyMode: nftables}\nsteps: []\n")
    with pytest.raises(NetemuError, match="cluster: proxyMode nftables: needs the netns backend"):
        load_scenarios([str(tmp_path / "loop.yaml")])


def test_up_refuses_nftables_on_loopback_in_one_line(tmp_path) -> None:
    netemu = os.path.join(os.path.dirname(sys.executable), "netemu")
    env = {**os.environ, "NETEMU_STATE_DIR": str(tmp_path)}
    out = subprocess.run([netemu, "up", "--proxy-mode", "nftables"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == ("error: proxyMode nftables: needs the netns backend (the loopback backend's service "
                          "proxy runs in userspace only)\n")


# ---------------------------------------------------------------------- a netns cluster

netns_only = pytest.mark.skipif(bool(routes_outside_loopback()),
                                reason="the netns backend runs only in a namespace without outside routes (make test)")


def _pods(**policy: str) -> str:
    docs = [f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {app}}}}}
spec:
  nodeName: {node}
  containers:
  - name: netexec
    image: registry.k8s.io/e2e-test-images/agnhost:2.47
    args: ["netexec", "--http-port=8080", "--udp-port=8081"]
""" for name, app, node in (("a", "web", "node-1"), ("b", "web", "node-2"), ("client", "client", "node-1"))]
    for name, spec in (("web", "type: NodePort"), ("empty", "type: NodePort"), *policy.items()):
        selector = "nothing" if name == "empty" else "web"
        docs.append(f"""apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  {spec}
  selector: {{app: {selector}}}
  ports: [{{name: http, port: 80, targetPort: 8080}}, {{name: udp, port: 81, targetPort: 8081, protocol: UDP}}]
""")
    return "---\n".join(docs)


async def _start(make_cluster, **policy: str):
    cluster = await make_cluster(nodes=2, backend="netns", proxy_mode="nftables")
    await cluster.apply(_pods(**policy))
    await cluster.wait_ready(timeout=60)
    await cluster.wait_for(lambda: _endpoints(cluster, "web") == 2, 30, "both endpoints")
    await cluster.settle()
    return cluster


def _endpoints(cluster, service: str) -> int:
    return sum(1 for s in cluster.list("EndpointSlice") if s.metadata.labels.get("kubernetes.io/service-name") == service
               for e in s.endpoints if e.addresses and e.conditions.ready is not False)


async def _curl(cluster, url: str, times: int) -> list[str]:
    """What ``url`` answered to ``times`` new connections from the client pod (on node-1)."""
    loop = f"for i in $(seq {times}); do curl -sS --max-time 2 {url}; echo; done"
    result = await cluster.exec("client", ["sh", "-c", loop], timeout=60)
    assert result.returncode == 0, result
    return result.stdout.split()


def _table(cluster, node: str) -> str:
    netns = str(cluster.fabric.namespace_of(node))
    out = subprocess.run([*namespaces.exec_prefix(netns), "nft", "list", "table", "ip", "netemu-proxy"],
                         capture_output=True, text=True, check=True)
    return out.stdout


async def _host_curl(cluster, url: str) -> str:
    """curl from the host's network (the namespace the test started in; this thread has left it)."""
    proc = await asyncio.create_subprocess_exec(
        *cluster.fabric.process_prefix(""), "curl", "-sS", "--max-time", "5", url, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, f"curl {url}: {err.decode()}"
    return out.decode()


UDP_FROM = r"""
import socket, sys
ip, ports, want = sys.argv[1], [int(p) for p in sys.argv[2].split(",")], sys.argv[3]
for port in ports:  # the first source port whose flow the kernel sent to pod `want` ("" any)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("", port))
    s.settimeout(2)
    s.sendto(b"hostname", (ip, 81))
    try:
        answer = s.recv(100).decode()
    except OSError:
        answer = "timeout"
    s.close()
    if not want or answer == want:
        print(port, answer)
        break
"""


CONNECT = r"""
import socket, sys
s = socket.socket()
s.settimeout(5)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("connected")
except OSError as exc:
    print(type(exc).__name__)
"""


@netns_only
async def test_services_in_the_kernel(netns_ready, make_cluster) -> None:  # noqa: F811
    cluster = await _start(make_cluster)
    ip, client_ip = cluster.service_ip("web"), cluster.get("Pod", "client").status.pod_ip
    # the userspace proxy opens nothing inside node namespaces for it
    assert not [entry for entry in cluster.proxy.listeners()
                if entry["service_port"].startswith("default/web") and entry["network"] != "host"]
    assert "numgen random mod 2" in _table(cluster, "node-1")

    assert set(await _curl(cluster, f"http://{ip}/hostname", 30)) == {"a", "b"}
    seen = {answer.rsplit(":", 1)[0] for answer in await _curl(cluster, f"http://{ip}/clientip", 10)}
    assert seen == {client_ip}  # no masquerade for a pod's ClusterIP traffic, on either node
    # hairpin: a pod reaching itself through its service is masqueraded (else its own address
    # would come back to it as a martian and be dropped)
    loop = f"for i in $(seq 20); do curl -sS --max-time 2 http://{ip}/clientip; echo; done"
    result = await cluster.exec("a", ["sh", "-c", loop], timeout=60)
    answers = result.stdout.split()
    assert len(answers) == 20, result  # every connection answered
    a_ip = cluster.get("Pod", "a").status.pod_ip
    gateway = str(ipaddress.ip_network(cluster.nodes["node-1"].pod_cidr)[1])  # node-1's address on cni0
    assert {answer.rsplit(":", 1)[0] for answer in answers} == {a_ip, gateway}  # b sees a; a sees its node

    node_port = cluster.get("Service", "web").spec.ports[0].node_port
    for node in ("node-1", "node-2"):  # a NodePort on each node's address, from a pod
        assert set(await _curl(cluster, f"http://{cluster.nodes[node].ip}:{node_port}/hostname", 20)) == {"a", "b"}
    # from the host (where netemu adds no rules): the userspace listener on the node's host address
    assert await _host_curl(cluster, f"http://{cluster.nodes['node-2'].host_ip}:{node_port}/hostname") in ("a", "b")

    empty = cluster.service_ip("empty")
    empty_port = cluster.get("Service", "empty").spec.ports[0].node_port
    for target in ((empty, 80), (cluster.nodes["node-2"].ip, empty_port)):
        result = await cluster.exec("client", [sys.executable, "-c", CONNECT, target[0], str(target[1])])
        assert result.stdout.strip() == "ConnectionRefusedError", (target, result)

    # a UDP flow (one source port) that the kernel sent to b
    found = await cluster.exec("client", [sys.executable, "-c", UDP_FROM, ip, ",".join(map(str, range(41000, 41040))), "b"])
    port, answer = found.stdout.split()
    assert answer == "b", found

    # endpoints come and go: the kernel follows (measured from the change to the kernel)
    proxier = cluster.kernel_proxy
    proxier.latencies.clear()
    await cluster.delete("Pod", "b", wait=True)
    await cluster.wait_for(lambda: _endpoints(cluster, "web") == 1, 30, "one endpoint")
    await cluster.settle()
    # the flow's conntrack entry went with b (kube-proxy's UDP cleanup): the same flow reaches a
    again = await cluster.exec("client", [sys.executable, "-c", UDP_FROM, ip, port, ""])
    assert again.stdout.split() == [port, "a"], again
    assert "numgen" not in _table(cluster, "node-2") and "10.244.2." not in _table(cluster, "node-2")
    assert set(await _curl(cluster, f"http://{ip}/hostname", 10)) == {"a"}
    await cluster.apply(_pods().split("---")[1].replace("name: b,", "name: c,"))
    await cluster.wait_for(lambda: _endpoints(cluster, "web") == 2, 30, "the new endpoint")
    await cluster.settle()
    assert "numgen random mod 2" in _table(cluster, "node-1")
    assert set(await _curl(cluster, f"http://{ip}/hostname", 30)) == {"a", "c"}
    latencies = sorted(proxier.latencies)
    assert latencies
    print(f"change to kernel: {len(latencies)} passes, median {latencies[len(latencies) // 2] * 1000:.1f} ms, "
          f"max {latencies[-1] * 1000:.1f} ms")

    with pytest.raises(NetemuError, match="spec.target.service: Forbidden: this cluster's proxyMode is nftables"):
        await cluster.apply(json.dumps({"apiVersion": "netemu.dev/v1", "kind": "Impairment",
                                        "metadata": {"name": "slow"},
                                        "spec": {"target": {"service": "web"}, "delay": "10ms"}}))


@netns_only
async def test_affinity_and_local_policies(netns_ready, make_cluster) -> None:  # noqa: F811
    cluster = await _start(make_cluster, sticky="sessionAffinity: ClientIP",
                           internal="internalTrafficPolicy: Local",
                           external="type: NodePort\n  externalTrafficPolicy: Local")
    answers = await _curl(cluster, f"http://{cluster.service_ip('sticky')}/hostname", 20)
    assert len(set(answers)) == 1 and len(answers) == 20
    assert "flags dynamic,timeout" in _table(cluster, "node-1") and "timeout 3h" in _table(cluster, "node-1")
    assert set(await _curl(cluster, f"http://{cluster.service_ip('internal')}/hostname", 20)) == {"a"}
    node_port = cluster.get("Service", "external").spec.ports[0].node_port
    assert set(await _curl(cluster, f"http://{cluster.nodes['node-2'].ip}:{node_port}/hostname", 10)) == {"b"}
    assert set(await _curl(cluster, f"http://{cluster.nodes['node-1'].ip}:{node_port}/hostname", 10)) == {"a"}
    client_ip = cluster.get("Pod", "client").status.pod_ip
    seen = await _curl(cluster, f"http://{cluster.nodes['node-2'].ip}:{node_port}/clientip", 5)
    assert {s.rsplit(":", 1)[0] for s in seen} == {client_ip}  # Local keeps the client's address
