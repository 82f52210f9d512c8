"""NetworkPolicy enforced in the kernel on the netns backend: a reachability matrix, as the upstream
network-policy e2e tests do it. Two nodes, namespaces x and y with pods a (node-1) and b (node-2)
each, every pod serving TCP 8080 and UDP 8081 (agnhost netexec, ports named serve-8080-tcp and
serve-8081-udp). From every pod, a short-lived probe (connect timeout 0.4 s) to every other pod on
both ports; the observed matrix must equal what ``netemu.networkpolicy.model`` computes from the
same policies, pods and namespaces."""
from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time

import pytest

from netemu import api
from netemu.fabric import routes_outside_loopback
from netemu.networkpolicy.model import Endpoint, allowed, pod_facts
from test_netns_helpers import netns_ready, own_network_unchanged  # noqa: F401 - fixtures

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(bool(routes_outside_loopback()),
                       reason="the netns backend runs only in a namespace without outside routes (make test)"),
]

NAMESPACES = ("x", "y")
PORTS = ((8080, "TCP"), (8081, "UDP"))


def _pods_yaml() -> str:
    docs = []
    for ns in NAMESPACES:
        docs.append(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{ns: {ns}}}}}\n")
        for name, node in (("a", "node-1"), ("b", "node-2")):
            docs.append(f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{pod: {name}}}}}
spec:
  nodeName: {node}
  containers:
  - name: netexec
    image: registry.k8s.io/e2e-test-images/agnhost:2.47
    args: ["netexec", "--http-port=8080", "--udp-port=8081"]
    ports:
    - {{name: serve-8080-tcp, containerPort: 8080}}
    - {{name: serve-8081-udp, containerPort: 8081, protocol: UDP}}
""")
    return "---\n".join(docs)


# Run in a pod with the host's python: probes every "ip port proto" target at once, prints JSON.
PROBE = r"""
import asyncio, json, socket, sys
TIMEOUT = 0.4
async def tcp(ip, port):
    try:
        _, w = await asyncio.wait_for(asyncio.open_connection(ip, port), TIMEOUT)
        w.close()
        return True
    except (OSError, asyncio.TimeoutError):
        return False
async def udp(ip, port):
    loop = asyncio.get_running_loop()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    try:
        await loop.sock_connect(s, (ip, port))
        for _ in range(2):
            await loop.sock_sendall(s, b"hostname")
            try:
                await asyncio.wait_for(loop.sock_recv(s, 512), TIMEOUT / 2)
                return True
            except asyncio.TimeoutError:
                pass
        return False
    except OSError:
        return False
    finally:
        s.close()
async def main():
    targets = [t.split(",") for t in sys.argv[1:]]
    results = await asyncio.gather(*((tcp if p == "TCP" else udp)(ip, int(port)) for ip, port, p in targets))
    print(json.dumps([",".join(t) for t, ok in zip(targets, results) if ok]))
asyncio.run(main())
"""


def policies(text: str) -> list:
    return [m.obj for m in api.load_text(text, source="<test>")]


async def observed(cluster) -> set[tuple[str, str, int, str]]:
    """(from, to, port, protocol) of every probe that got through."""
    pods = {f"{p.metadata.namespace}/{p.metadata.name}": p for ns in NAMESPACES for p in cluster.pods(ns)}
    by_ip = {p.status.pod_ip: key for key, p in pods.items()}
    got = set()
    for key, pod in pods.items():
        targets = [f"{o.status.pod_ip},{port},{proto}" for other, o in pods.items() if other != key
                   for port, proto in PORTS]
        result = await cluster.exec(pod.metadata.name, [sys.executable, "-c", PROBE, *targets],
                                    namespace=pod.metadata.namespace, timeout=20)
        assert result.returncode == 0, result.stderr
        for hit in json.loads(result.stdout):
            ip, port, proto = hit.split(",")
            got.add((key, by_ip[ip], int(port), proto))
    return got


def expected(cluster) -> set[tuple[str, str, int, str]]:
    pods = {f"{p.metadata.namespace}/{p.metadata.name}": pod_facts(p) for ns in NAMESPACES for p in cluster.pods(ns)}
    labels = {ns.metadata.name: dict(ns.metadata.labels) for ns in cluster.store.list("Namespace")}
    live = cluster.store.list("NetworkPolicy")
    return {(s, d, port, proto) for (s, sp), (d, dp) in itertools.permutations(pods.items(), 2) for port, proto in PORTS
            if allowed(live, labels, Endpoint(sp.ips[0], sp), Endpoint(dp.ips[0], dp), port, proto)}


CASES = {
    "deny all ingress in x": """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}}
""",
    "allow from the same namespace": """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: same-ns, namespace: x}
spec:
  podSelector: {}
  ingress: [{from: [{podSelector: {}}]}]
""",
    "allow from a labelled namespace to a named port": """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-y, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}]
    ports: [{port: serve-8080-tcp}]
""",
    "egress by port range, both directions needed": """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-range, namespace: y}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Egress]
  egress: [{ports: [{protocol: TCP, port: 8000, endPort: 8080}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-a, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}}
""",
}


def ip_block_case(cluster) -> str:
    xa = cluster.get("Pod", "a", "x").status.pod_ip
    return f"""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: block, namespace: y}}
spec:
  podSelector: {{}}
  ingress: [{{from: [{{ipBlock: {{cidr: 10.244.0.0/16, except: [{xa}/32]}}}}]}}]
"""


async def test_reachability_matrix_matches_the_model(netns_ready, make_cluster) -> None:  # noqa: F811
    cluster = await make_cluster(nodes=2, backend="netns")
    assert "network-policy" in cluster.capabilities
    await cluster.apply(_pods_yaml())
    await cluster.wait_ready(timeout=60)
    enforcer = cluster.network_policy
    everything = await observed(cluster)
    assert len(everything) == 4 * 3 * 2  # no policy: every pair, both protocols

    for name, text in [*CASES.items(), ("ip block with except", ip_block_case(cluster))]:
        await cluster.apply(text)
        await enforcer.synced()
        want = expected(cluster)
        assert want != everything, name  # the case restricts something
        assert await observed(cluster) == want, name
        for policy in policies(text):
            await cluster.delete("NetworkPolicy", policy.metadata.name, policy.metadata.namespace)
        await enforcer.synced()
    assert await observed(cluster) == everything  # every policy gone: all open again


LIVE_PROBE = r"""
import socket, sys, time
ip, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
end = time.time() + seconds
while time.time() < end:
    start = time.time()
    s = socket.socket()
    s.settimeout(0.3)
    try:
        s.connect((ip, port))
        ok = 1
    except OSError:
        ok = 0
    finally:
        s.close()
    print(f"{start:.3f} {ok}", flush=True)
    time.sleep(max(0.0, 0.05 - (time.time() - start)))
"""


async def test_a_policy_added_and_removed_under_live_traffic(netns_ready, make_cluster) -> None:  # noqa: F811
    cluster = await make_cluster(nodes=2, backend="netns")
    await cluster.apply(_pods_yaml())
    await cluster.wait_ready(timeout=60)
    enforcer = cluster.network_policy
    target = cluster.get("Pod", "b", "x").status.pod_ip
    live = asyncio.ensure_future(cluster.exec("a", [sys.executable, "-c", LIVE_PROBE, target, "8080", "6"],
                                              namespace="y", timeout=20))
    await cluster.apply(CASES["deny all ingress in x"])
    await enforcer.synced()
    added = time.time()
    deadline = time.monotonic() + 3
    while ("y/a", "x/b", 8080, "TCP") in await observed_pair(cluster, "y", "a", target):
        assert time.monotonic() < deadline, "the policy never took effect"
    await cluster.delete("NetworkPolicy", "deny", "x")
    await enforcer.synced()
    removed = time.time()
    result = await live
    samples = [(float(t), ok == "1") for t, ok in (line.split() for line in result.stdout.splitlines())]
    denied = [t for t, ok in samples if not ok]
    assert denied, "no probe was dropped while the policy was in place"
    assert all(added - 0.5 <= t <= removed for t in denied), (added, removed, samples)
    assert [ok for t, ok in samples if t > removed + 0.1] and all(ok for t, ok in samples if t > removed + 0.1)


async def observed_pair(cluster, namespace: str, pod: str, ip: str) -> set[tuple[str, str, int, str]]:
    result = await cluster.exec(pod, [sys.executable, "-c", PROBE, f"{ip},8080,TCP"], namespace=namespace, timeout=10)
    return {(f"{namespace}/{pod}", "x/b", 8080, "TCP")} if json.loads(result.stdout) else set()


SERVICE_AND_POLICY = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: x}
spec:
  selector: {pod: b}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-a, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress: [{from: [{podSelector: {matchLabels: {pod: a}}}]}]
"""


async def test_policies_apply_after_service_translation(netns_ready, make_cluster) -> None:  # noqa: F811
    cluster = await make_cluster(nodes=2, backend="netns")
    await cluster.apply(_pods_yaml())
    await cluster.apply(SERVICE_AND_POLICY)
    await cluster.wait_ready(timeout=60)
    await cluster.wait_for(lambda: any(e.addresses for s in cluster.list("EndpointSlice", "x")
                                       for e in s.endpoints), 30, "the Service's endpoint")
    await cluster.network_policy.synced()
    url = f"http://{cluster.service_ip('web', 'x')}/hostname"
    for namespace, ok in (("x", True), ("y", False)):
        result = await cluster.exec("a", ["curl", "-sS", "--max-time", "2", url], namespace=namespace, timeout=10)
        assert (result.returncode == 0 and result.stdout == "b") is ok, (namespace, result)
