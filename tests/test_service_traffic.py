"""Service traffic end to end on a real 3-node cluster (issue 3's acceptance): real curl and dig
through ClusterIPs, every node's NodePort and load-balancer ingress addresses reach the pods;
balancing, session affinity, refused and dropped traffic, the source address the backend sees,
scaling under load, cluster DNS through its Service.

The pods are the walkthrough's ``app: MyApp`` set: agnhost netexec on 9376 (HTTP: ``/hostname``
tells which pod answered, ``/clientip`` who it saw; UDP on 8081) and http-echo on 9377 answering
``https``, so each target port of the multi-port Service answers distinctly.
"""
from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncio_dgram
import pytest

from netemu.errors import NetemuError

FIXTURES = Path(__file__).parent / "fixtures" / "manifests"
OUTSIDE = "127.77.0.9"   # a client outside every node (its own address, in no cluster range)

APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: myapp}
spec:
  replicas: 3
  selector: {matchLabels: {app: MyApp}}
  template:
    metadata: {labels: {app: MyApp}}
    spec:
      containers:
      - name: netexec
        image: registry.k8s.io/e2e-test-images/agnhost:2.47
        args: ["netexec", "--http-port=9376", "--udp-port=8081"]
        ports: [{containerPort: 9376}, {containerPort: 8081, protocol: UDP}]
      - name: https
        image: hashicorp/http-echo
        args: ["-listen=:9377", "-text=https"]
        ports: [{containerPort: 9377}]
"""
MULTI_PORT = FIXTURES / "walkthrough-multi-port-service.yaml"   # my-service: http 80→9376, https 443→9377


def service(name: str, *, type: str = "ClusterIP", selector: str = "MyApp", port: int = 80,
            target: int = 9376, protocol: str = "TCP", **spec: str) -> str:
    extra = "".join(f"\n  {key}: {value}" for key, value in spec.items())
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  type: {type}
  selector: {{app: {selector}}}
  ports: [{{port: {port}, targetPort: {target}, protocol: {protocol}}}]{extra}
"""


CLIENT = """
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers: [{name: curl, image: "radial/busyboxplus:curl"}]
"""


async def start(make_cluster: Any, *manifests: Any) -> Any:
    cluster = await make_cluster(nodes=3, dns_upstreams=())
    await cluster.apply(*manifests)
    await cluster.wait_ready(timeout=20)
    return cluster


async def curl(*args: str, max_time: float = 5) -> subprocess.CompletedProcess:
    """Real curl, off the event loop that serves the cluster."""
    return await asyncio.to_thread(subprocess.run, ["curl", "-sS", "--max-time", f"{max_time:g}", *args],
                                   capture_output=True, text=True)


async def curl_ok(*args: str) -> str:
    r = await curl(*args)
    assert r.returncode == 0, f"curl {' '.join(args)}: exit {r.returncode}: {r.stderr}"
    return r.stdout


async def answers(url: str, count: int, *extra: str) -> collections.Counter:
    """``count`` requests to ``url`` from one curl, each on a connection of its own
    (``Connection: close``), counted by answer."""
    out = await curl_ok("-H", "Connection: close", "-w", "\\n", *extra, *[url] * count)
    return collections.Counter(out.splitlines())


def pod_names(cluster: Any, app: str = "MyApp") -> set[str]:
    return {p.metadata.name for p in cluster.pods(selector={"app": app})}


def node_port(cluster: Any, name: str) -> int:
    return cluster.get("Service", name).spec.ports[0].node_port


async def udp_ask(address: tuple[str, int], text: str) -> str:
    """One datagram from ``OUTSIDE`` and the reply."""
    client = await asyncio_dgram.bind((OUTSIDE, 0))
    try:
        await client.send(text.encode(), address)
        data, _ = await asyncio.wait_for(client.recv(), 5)
    finally:
        client.close()
    return data.decode()


# ---------------------------------------------------------------------------- reaching the pods


async def test_cluster_ip_every_node_port_and_the_load_balancer_reach_the_pods(make_cluster):
    cluster = await start(make_cluster, APP, MULTI_PORT, service("web-np", type="NodePort"),
                          service("web-lb", type="LoadBalancer"))
    await cluster.wait_for(lambda: cluster.get("Service", "web-lb").status.load_balancer.ingress, 10,
                           "the load balancer's ingress address")
    await cluster.settle()
    pods = pod_names(cluster)
    assert len(pods) == 3
    urls = {"cluster-ip": f"http://{cluster.service_ip('my-service')}/hostname",
            "load-balancer": f"http://{cluster.get('Service', 'web-lb').status.load_balancer.ingress[0].ip}/hostname"}
    for node in ("node-1", "node-2", "node-3"):
        urls[f"node-port on {node}"] = f"http://{cluster.node_ip(node)}:{node_port(cluster, 'web-np')}/hostname"
    for frontend, url in urls.items():
        seen = await answers(url, 3)
        if frontend == "load-balancer":  # spread over the nodes, each of which balances on its own
            assert set(seen) <= pods and sum(seen.values()) == 3, seen
            hops = collections.Counter(r.frontend for r in cluster.connection_log("web-lb"))
            assert hops == {"load-balancer": 3, "node-port": 3}   # client → LB → NodePort → pod
        else:
            assert set(seen) == pods, f"{frontend}: {seen}"   # round robin: each pod once


async def test_the_multi_port_service_routes_each_port_to_its_own_target(make_cluster):
    cluster = await start(make_cluster, APP, MULTI_PORT)
    ip = cluster.service_ip("my-service")
    assert await curl_ok(f"http://{ip}:80/hostname") in pod_names(cluster)
    assert await curl_ok(f"http://{ip}:443/") == "https\n"


async def test_a_udp_service_answers_through_its_cluster_ip(make_cluster):
    cluster = await start(make_cluster, APP, service("udp-echo", port=5353, target=8081, protocol="UDP"))
    address = (cluster.service_ip("udp-echo"), 5353)
    assert await udp_ask(address, "hostname") in pod_names(cluster)
    assert await udp_ask(address, "echo hello") == "hello"
    assert (await udp_ask(address, "clientip")).startswith(f"{OUTSIDE}:")


# ---------------------------------------------------------------------------- balancing


async def test_round_robin_spreads_99_connections_exactly_evenly(make_cluster):
    cluster = await start(make_cluster, APP, MULTI_PORT)
    seen = await answers(f"http://{cluster.service_ip('my-service')}/hostname", 99)
    assert sorted(seen.values()) == [33, 33, 33] and set(seen) == pod_names(cluster)
    records = cluster.connection_log("my-service")
    assert len(records) == 99 and {r.outcome for r in records} == {"ok"}


async def test_client_ip_session_affinity_pins_a_client_to_one_pod(make_cluster):
    cluster = await start(make_cluster, APP, service("sticky", sessionAffinity="ClientIP"))
    url = f"http://{cluster.service_ip('sticky')}/hostname"
    seen = await answers(url, 30, "--interface", OUTSIDE)
    assert len(seen) == 1 and sum(seen.values()) == 30
    others = await answers(url, 30, "--interface", "127.77.0.10")   # another client: pinned as well
    assert len(others) == 1


# ---------------------------------------------------------------------------- refused and dropped


async def test_a_service_without_endpoints_refuses_at_once(make_cluster):
    cluster = await start(make_cluster, service("empty", selector="nothing"))
    r = await curl(f"http://{cluster.service_ip('empty')}/")
    assert r.returncode == 7, r.stderr   # "Failed to connect ... Connection refused"


def port_service(name: str, target: int, node_port: int | None) -> str:
    """A Service of the MyApp pods on port 80: NodePort ``node_port``, or ClusterIP when None."""
    kind, extra = ("NodePort", f", nodePort: {node_port}") if node_port else ("ClusterIP", "")
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  type: {kind}
  selector: {{app: MyApp}}
  ports: [{{port: 80, targetPort: {target}{extra}}}]
"""


async def node_port_serves(cluster: Any, port: int, serves: Any) -> None:
    """Poll every node's ``port`` until each answers as ``serves`` approves (a port that never
    listens, or keeps serving the old Service, fails at the deadline)."""
    deadline = time.monotonic() + 15
    for node in ("node-1", "node-2", "node-3"):
        while not serves((r := await curl(f"http://{cluster.node_ip(node)}:{port}/hostname", max_time=2)).stdout):
            assert time.monotonic() < deadline, (f"{node}:{port}: {r.stderr or r.stdout!r}; conflicts: "
                                                 f"{cluster.proxy.service_errors('default', 'svc-a')} "
                                                 f"{cluster.proxy.service_errors('default', 'svc-b')}")
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("how", ["delete-then-create", "one-apply"])
async def test_a_node_port_freed_and_taken_at_once_serves_the_new_service(make_cluster, how):
    """A NodePort moves from one Service to another and back: by deleting one Service and at once
    creating the other, or in one apply that gives the port up and takes it. Each time every
    node's port serves the new Service (svc-a: netexec, whose /hostname is a pod name; svc-b:
    http-echo, "https"). Rounds repeat because the order in which the proxy meets the two
    changes of one sync is not fixed."""
    port = 30123
    targets = {"svc-a": 9376, "svc-b": 9377}
    cluster = await start(make_cluster, APP, port_service("svc-a", targets["svc-a"], port))
    pods = pod_names(cluster)
    serves = {"svc-a": lambda out: out in pods, "svc-b": lambda out: out == "https\n"}
    old, new = "svc-a", "svc-b"
    for _ in range(4):
        if how == "delete-then-create":
            await cluster.delete("Service", old)
            await cluster.apply(port_service(new, targets[new], port))
        else:
            await cluster.apply(port_service(old, targets[old], None) + "---" + port_service(new, targets[new], port))
        await node_port_serves(cluster, port, serves[new])
        old, new = new, old


async def test_taking_a_node_port_before_its_owner_gives_it_up_is_refused(make_cluster):
    """In one apply, documents are applied in order, as kubectl does: the Service that asks for a
    NodePort before its owner lets go of it is refused with the API server's words, nothing of
    the apply is kept, and the port goes on serving its owner."""
    port = 30124
    cluster = await start(make_cluster, APP, port_service("svc-a", 9376, port))
    with pytest.raises(NetemuError, match=f"spec.ports\\[0\\].nodePort: Invalid value: {port}: "
                                                  "provided port is already allocated"):
        await cluster.apply(port_service("svc-b", 9377, port) + "---" + port_service("svc-a", 9376, None))
    pods = pod_names(cluster)
    await node_port_serves(cluster, port, lambda out: out in pods)


async def test_local_policy_node_port_answers_on_the_pods_node_and_drops_elsewhere(make_cluster):
    cluster = await start(make_cluster, APP.replace("replicas: 3", "replicas: 1"),
                          service("local", type="NodePort", externalTrafficPolicy="Local"))
    (pod,) = cluster.pods(selector={"app": "MyApp"})
    port = node_port(cluster, "local")
    home = pod.spec.node_name
    seen = await curl_ok("--interface", OUTSIDE, f"http://{cluster.node_ip(home)}:{port}/clientip")
    assert seen.startswith(f"{OUTSIDE}:")   # Local keeps the client's address
    others = [n for n in cluster.nodes if n != home]
    results = await asyncio.gather(*(curl(f"http://{cluster.node_ip(n)}:{port}/hostname", max_time=2) for n in others))
    assert [r.returncode for r in results] == [28, 28]   # dropped: the client times out


# ---------------------------------------------------------------------------- source addresses


@pytest.mark.parametrize("frontend", ["cluster-ip-from-a-pod", "node-port-cluster-policy", "node-port-local-policy"])
async def test_the_backend_sees_the_source_address_kube_proxy_would_give(make_cluster, frontend):
    policy = "Local" if frontend == "node-port-local-policy" else "Cluster"
    cluster = await start(make_cluster, APP, CLIENT, MULTI_PORT,
                          service("np", type="NodePort", externalTrafficPolicy=policy))
    if frontend == "cluster-ip-from-a-pod":
        url = f"http://{cluster.service_ip('my-service')}/clientip"
        result = await cluster.exec("client", ["sh", "-c", f'curl -sS --max-time 5 --interface "$POD_IP" {url}'])
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"{cluster.pod_ip('client')}:")
        return
    node = cluster.pods(selector={"app": "MyApp"})[0].spec.node_name   # a node with an endpoint
    seen = await curl_ok("--interface", OUTSIDE, f"http://{cluster.node_ip(node)}:{node_port(cluster, 'np')}/clientip")
    expected = cluster.node_ip(node) if policy == "Cluster" else OUTSIDE   # SNAT to the node, or none
    assert seen.startswith(f"{expected}:")


# ---------------------------------------------------------------------------- scaling under load


async def test_scaling_3_to_1_to_3_under_a_request_loop_fails_no_request(make_cluster):
    cluster = await start(make_cluster, APP, MULTI_PORT)
    ip = cluster.service_ip("my-service")
    done: list[str] = []
    failed: list[str] = []
    stop = asyncio.Event()

    async def get_hostname() -> str:
        reader, writer = await asyncio.open_connection(ip, 80)
        try:
            writer.write(b"GET /hostname HTTP/1.1\r\nHost: my-service\r\nConnection: close\r\n\r\n")
            response = await reader.read()
        finally:
            writer.close()
        head, _, body = response.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise ValueError(f"unexpected answer {response[:80]!r}")
        return body.decode()

    async def request_loop() -> None:
        while not stop.is_set():
            try:
                done.append(await asyncio.wait_for(get_hostname(), 5))
            except (OSError, ValueError, TimeoutError) as exc:
                failed.append(repr(exc))

    def endpoints() -> int:
        (es,) = cluster.list("EndpointSlice", selector={"kubernetes.io/service-name": "my-service"})
        return sum(1 for e in es.endpoints if e.conditions.ready)

    async def more_requests(count: int) -> None:
        mark = len(done) + len(failed)
        await cluster.wait_for(lambda: len(done) + len(failed) >= mark + count, 20, f"{count} more requests")

    loop_task = asyncio.create_task(request_loop())
    try:
        await more_requests(20)
        await cluster.scale("myapp", 1)
        await cluster.wait_for(lambda: len(pod_names(cluster)) == 1 and endpoints() == 1, 20, "one pod left")
        await more_requests(20)
        await cluster.scale("myapp", 3)
        await cluster.wait_for(lambda: endpoints() == 3, 20, "three endpoints again")
        # every phase is served: three first pods, then new ones (once the proxy has them: the
        # EndpointSlice is written first, and on a slow machine 20 requests can come before)
        await cluster.wait_for(lambda: len(set(done)) >= 4, 20, "a request served by a new pod")
        await more_requests(20)
    finally:
        stop.set()
        await loop_task
    assert failed == []


# ---------------------------------------------------------------------------- cluster DNS


@pytest.mark.parametrize("transport", ["+notcp", "+tcp"], ids=["udp", "tcp"])
async def test_the_kube_dns_service_is_proxied(make_cluster, transport):
    cluster = await start(make_cluster, APP, MULTI_PORT)
    dns_ip = cluster.service_ip("kube-dns", "kube-system")
    r = await asyncio.to_thread(subprocess.run, [
        "dig", f"@{dns_ip}", "-p", str(cluster.dns_port), transport, "+short", "+time=2", "+tries=1",
        "my-service.default.svc.cluster.local"], capture_output=True, text=True)
    assert (r.returncode, r.stdout) == (0, f"{cluster.service_ip('my-service')}\n"), r.stderr
    protocol = "UDP" if transport == "+notcp" else "TCP"
    assert [r.frontend for r in cluster.connection_log("kube-system/kube-dns")
            if r.service_port.endswith(f"/{protocol}")] == ["cluster-ip"]


# ---------------------------------------------------------------------------- netemu impair (CLI)

NETEMU = str(Path(sys.executable).parent / "netemu")


def netemu(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([NETEMU, *args], env=env, capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"netemu {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return r


@pytest.fixture(scope="module")
def cli_cluster(tmp_path_factory):
    """A cluster run by ``netemu up --detach``, shared by the CLI tests."""
    tmp_path = tmp_path_factory.mktemp("cli")
    env = {**os.environ, "NETEMU_STATE_DIR": str(tmp_path / "state"), "NETEMU_CLUSTER": "impair"}
    manifest = tmp_path / "app.yaml"
    manifest.write_text(APP + "---\n" + MULTI_PORT.read_text())
    netemu(env, "up", "--detach", "--dns-upstream", "none", "--nodes", "3", "-f", str(manifest))
    yield env
    netemu(env, "down", check=False)


def described_until(env: dict[str, str], predicate: Any, timeout: float = 10) -> str:
    """``netemu describe svc my-service`` once ``predicate`` holds for it."""
    deadline = time.monotonic() + timeout
    while not predicate(text := netemu(env, "describe", "svc", "my-service").stdout):
        assert time.monotonic() < deadline, f"timed out waiting for the description to change:\n{text}"
        time.sleep(0.05)
    return text


def timed_get(url: str) -> tuple[subprocess.CompletedProcess, float]:
    r = subprocess.run(["curl", "-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{time_total}", url],
                       capture_output=True, text=True)
    return r, float(r.stdout or 0)


def test_impair_through_the_cli_delays_resets_and_clears(cli_cluster):
    env = cli_cluster
    ip = netemu(env, "get", "svc", "my-service").stdout.splitlines()[1].split()[2]
    url = f"http://{ip}/hostname"

    r = netemu(env, "impair", "--service", "my-service", "--delay", "50ms")
    assert r.stdout == "service/my-service impaired: delay 50ms\n"
    result, seconds = timed_get(url)
    assert result.returncode == 0, result.stderr
    assert seconds >= 2 * 0.050   # the request and the answer each wait the delay
    described = described_until(env, lambda text: " ok " in text.split("Connections:")[-1])  # it ends after curl
    assert "Impairment:\n  delay 50ms\n" in described
    connections = described.split("Connections:\n", 1)[1].splitlines()
    assert connections[0].split() == ["Client", "Frontend", "Node", "Endpoint", "Bytes", "(up/down)", "Outcome", "Age"]
    _client, frontend, node, endpoint, nbytes, outcome = connections[2].split()[:6]
    assert (frontend, node, outcome) == ("cluster-ip", "node-1", "ok") and endpoint.endswith(":9376")
    assert all(int(n) > 0 for n in nbytes.split("/"))

    assert netemu(env, "impair", "--service", "my-service", "--clear").stdout == \
        "service/my-service: impairment cleared\n"
    assert "Impairment:" not in netemu(env, "describe", "svc", "my-service").stdout

    assert netemu(env, "impair", "--service", "default/my-service", "--reset", "100%").stdout == \
        "service/default/my-service impaired: reset 100%\n"
    result, _ = timed_get(url)
    assert result.returncode in (7, 55, 56), result.stderr   # reset during or just after the handshake
    described = described_until(env, lambda text: " reset " in text)
    assert described.split("Events:")[0].splitlines()[-1].split()[5] == "reset"
    netemu(env, "impair", "--service", "my-service", "--clear")
    result, _ = timed_get(url)
    assert result.returncode == 0, result.stderr

    assert netemu(env, "impair", "--node", "node-2", "--rate", "1mbit", "--jitter", "5ms").stdout == \
        "node/node-2 impaired: jitter 5ms rate 1mbit\n"


@pytest.mark.parametrize("args, message", [
    (["--service", "nope", "--delay", "5ms"], 'error: services "nope" not found'),
    (["--node", "node-9", "--delay", "5ms"],
     'error: The Impairment "node-node-9" is invalid: spec.target.node: Not found: "node-9"'),
    (["--service", "my-service", "--delay", "fast"], 'error: The Impairment "service-my-service" is invalid: '
                                                     'spec.delay: Invalid value: "fast": expected a number'),
    (["--service", "my-service", "--loss", "150%"], 'error: The Impairment "service-my-service" is invalid: '
                                                    'spec.loss: Invalid value: "150%": must be between 0% and 100%'),
    (["--service", "my-service", "--clear", "--delay", "5ms"], "error: --clear takes no settings (got --delay)"),
    (["--service", "my-service"], "error: say what to impair"),
], ids=["unknown-service", "unknown-node", "bad-delay", "loss-over-100", "clear-with-settings", "nothing"])
def test_impair_mistakes_are_one_line_errors(cli_cluster, args, message):
    r = netemu(cli_cluster, "impair", *args, check=False)
    assert r.returncode == 1 and r.stderr.startswith(message) and len(r.stderr.splitlines()) == 1, r.stderr
