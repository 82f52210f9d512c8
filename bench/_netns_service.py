"""The service path section of ``bench/netns.py``: C load generators against C servers through a
ClusterIP on a 2-node netns cluster, in ``proxyMode: nftables`` (the node kernels DNAT) and, as the
comparison, ``userspace`` (netemu's relay); then how fast an endpoint change reaches the kernels.

Each mode gets a cluster of its own (in the driver's process, on its event loop, as under
``netemu run``). Pod ``backend`` on node-1 runs ``iperf3 -s`` and nginx-light (one worker, a
3-byte keep-alive answer, the config of ``bench/proxy.py``) as host programs in its namespace;
Service ``backend`` in front of it. The load generators run inside a client pod's network
namespace (entered with the cluster's ``fabric.process_prefix``): ``client-local`` on node-1
(same node) and ``client-remote`` on node-2 (across the underlay).

The Service leads to a second iperf3 server and a second nginx port of the same pod. On one shared
port, a DNAT'd connection reaches the server with the 4-tuple a direct one from the same client
had a moment before, while the client's kernel derived its initial sequence number and timestamps
from the ClusterIP: its SYNs meet the direct run's TIME_WAIT sockets and are retried a second
later (measured: ClusterIP new connections fell from 7.6k/s to 1.1k/s over three runs while
direct held 13k/s; on separate ports both hold). The two iperf3 servers also take turns, so none
is still finishing the previous test when the next begins. The client pods reuse their own
TIME_WAIT ports (``net.ipv4.tcp_tw_reuse=1`` in their namespaces, as load generators are set up):
across nodes wrk closes first, and without it the client's ports ran out within a run, each
connect() then searching the whole range (new connections fell from 13k/s to 1k/s over four runs,
direct and ClusterIP alike; with it they hold).

Per round, four targets take turns (direct to the pod IP and through the ClusterIP, from each
client) for each of

- bulk: ``iperf3 -c -P1 -t N`` (Gbit/s the server received);
- keep-alive: ``wrk -t2 -c50`` (requests per second on 50 open connections);
- new connections: ``wrk -t2 -c50 -H 'Connection: close'`` (a TCP connection per request);

ratios ClusterIP / direct are taken within a round, medians printed. Each run at most 5 s.

Endpoint changes (nftables cluster only): Deployment ``churn`` (pause pods, Service ``churn``)
scaled 1 -> 2 -> 1 ... ``CHURN_CHANGES`` times; after each, once the EndpointSlice shows it, the
proxier's own record (``NftablesProxier.latencies``: from the first EndpointSlice event of a
batch to that batch applied in every node's kernel) is read.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import _tools

IPERF_PORT, HTTP_PORT = 5201, 8080               # what the pod IP is measured on
SERVED_IPERF_PORT, SERVED_HTTP_PORT = 5202, 8081  # the same programs' ports behind the Service
SERVICE_IPERF_PORT, SERVICE_HTTP_PORT = 5201, 80
PAUSE_IMAGE = "registry.k8s.io/pause:3.9"
TOOLS = {"iperf3": "iperf3", "wrk": "wrk", "nginx": "nginx-light", "nft": "nftables"}
MODES = ("nftables", "userspace")
PATHS = {"same node": "client-local", "across nodes": "client-remote"}
RATIO_GOAL = 0.95          # ClusterIP / direct, issue 15
LATENCY_GOAL_MS = 50.0     # an endpoint change in every node's kernel
CHURN_CHANGES = 20
CHANGE_TIMEOUT = 30.0      # per endpoint change, to show in the EndpointSlice



def manifests(directory: Path) -> str:
    """The server pod, two client pods, their Service, and the churn Deployment behind its own."""
    conf = directory / "nginx.conf"
    conf.write_text(_tools.nginx_conf(directory, [str(HTTP_PORT), str(SERVED_HTTP_PORT)]))
    nginx = f"exec nginx -p {directory} -e {directory}/error.log -c {conf}"
    clients = "".join(f"""---
apiVersion: v1
kind: Pod
metadata: {{name: {pod}}}
spec:
  nodeName: {node}
  containers:
  - {{name: pause, image: "{PAUSE_IMAGE}"}}
""" for pod, node in (("client-local", "node-1"), ("client-remote", "node-2")))
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: backend, labels: {{app: backend}}}}
spec:
  nodeName: node-1
  containers:
  - name: iperf3
    image: busybox
    command: [sh, -c, 'exec iperf3 -s -p {IPERF_PORT}']
    readinessProbe: {{tcpSocket: {{port: {IPERF_PORT}}}, periodSeconds: 1}}
  - name: iperf3-served
    image: busybox
    command: [sh, -c, 'exec iperf3 -s -p {SERVED_IPERF_PORT}']
    ports: [{{name: iperf, containerPort: {SERVED_IPERF_PORT}}}]
    readinessProbe: {{tcpSocket: {{port: {SERVED_IPERF_PORT}}}, periodSeconds: 1}}
  - name: nginx
    image: busybox
    command: [sh, -c, {json.dumps(nginx)}]
    ports: [{{name: http, containerPort: {SERVED_HTTP_PORT}}}]
    readinessProbe: {{tcpSocket: {{port: {HTTP_PORT}}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: backend}}
spec:
  selector: {{app: backend}}
  ports:
  - {{name: iperf, port: {SERVICE_IPERF_PORT}, targetPort: iperf}}
  - {{name: http, port: {SERVICE_HTTP_PORT}, targetPort: http}}
{clients}---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: churn}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: churn}}}}
  template:
    metadata: {{labels: {{app: churn}}}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - {{name: pause, image: "{PAUSE_IMAGE}"}}
---
apiVersion: v1
kind: Service
metadata: {{name: churn}}
spec:
  selector: {{app: churn}}
  ports: [{{port: 80}}]
"""


# ---------------------------------------------------------------------------- load generators

async def rate(measured) -> float:
    """The rate of a ``_tools.iperf3``/``wrk`` run (without its amount of work)."""
    return (await measured)[0]


MEASUREMENTS = (  # label, goal name, how to run it from `enter` against (host, iperf port, http port)
    ("bulk, Gbit/s", "bulk", lambda enter, host, ports, s: rate(_tools.iperf3(host, ports[0], s, enter))),
    ("keep-alive req/s", "keep-alive",
     lambda enter, host, ports, s: rate(_tools.wrk(host, ports[1], s, False, enter))),
    ("new connections/s", "new connections",
     lambda enter, host, ports, s: rate(_tools.wrk(host, ports[1], s, True, enter))),
)


def target_name(kind: str, path: str) -> str:
    return f"{kind}, {path}"


# ---------------------------------------------------------------------------- one cluster

def reuse_time_wait_ports(enter: list[str]) -> None:
    """Let the load generators in the namespace ``enter`` enters reuse their TIME_WAIT ports."""
    sysctl = shutil.which("sysctl", path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin") or "sysctl"
    subprocess.run([*enter, sysctl, "-qw", "net.ipv4.tcp_tw_reuse=1"], check=True, timeout=10)


def ready_endpoints(cluster, service: str) -> int:
    return sum(1 for s in cluster.list("EndpointSlice") if s.metadata.labels.get("kubernetes.io/service-name") == service
               for e in s.endpoints if e.addresses and e.conditions.ready is not False)


async def measure(cluster, seconds: float, rounds: int) -> list[_tools.Series]:
    def enter(pod: str) -> list[str]:
        return cluster.fabric.process_prefix(cluster.get("Pod", pod).metadata.uid)

    pod_ip, cluster_ip = cluster.pod_ip("backend"), cluster.service_ip("backend")
    targets = {}
    for path, client in PATHS.items():
        reuse_time_wait_ports(enter(client))
        targets[target_name("direct", path)] = (enter(client), pod_ip, (IPERF_PORT, HTTP_PORT))
        targets[target_name("ClusterIP", path)] = (enter(client), cluster_ip, (SERVICE_IPERF_PORT, SERVICE_HTTP_PORT))
    for prefix, host, ports in targets.values():  # each answers, and warm-up
        await _tools.wrk(host, ports[1], 1, False, prefix)
    print(f"  pod {pod_ip} on node-1 (iperf3 :{IPERF_PORT}, nginx :{HTTP_PORT}; behind ClusterIP {cluster_ip}: "
          f"iperf3 :{SERVED_IPERF_PORT}, nginx :{SERVED_HTTP_PORT})", flush=True)
    results = []
    for label, _, run in MEASUREMENTS:
        series = _tools.Series(label)
        for n in range(rounds):
            for name, (prefix, host, ports) in targets.items():
                series.add(name, await run(prefix, host, ports, seconds))
            print(f"  {label} round {n + 1}: " + "  ".join(
                f"{name} {series.rates[name][-1]:,.1f}" for name in targets), flush=True)
        results.append(series)
    return results


async def endpoint_changes(cluster, changes: int) -> tuple[list[float], int]:
    """Scale ``churn`` 1 <-> 2 ``changes`` times: the change-to-kernel latencies (ms) of every
    batch the changes caused, and how many changes caused none (should be 0)."""
    proxier = cluster.kernel_proxy
    latencies: list[float] = []
    silent = 0
    for i in range(changes):
        replicas = 2 if i % 2 == 0 else 1
        proxier.latencies.clear()
        await cluster.scale("churn", replicas)
        await cluster.wait_for(lambda: ready_endpoints(cluster, "churn") == replicas, CHANGE_TIMEOUT,
                               f"{replicas} ready churn endpoint(s)")
        await cluster.settle()
        if not proxier.latencies:
            silent += 1
        latencies += [seconds * 1000 for seconds in proxier.latencies]
    return latencies, silent


async def run_mode(mode: str, seconds: float, rounds: int, directory: Path) -> dict:
    from netemu import Cluster
    print(f"\n{mode} mode: 2-node netns cluster", flush=True)
    async with Cluster(nodes=2, name=f"bench{os.getpid()}-{mode[:2]}", backend="netns", proxy_mode=mode,
                       kube_api=False) as cluster:
        await cluster.apply(manifests(directory))
        await cluster.wait_ready(timeout=60)
        await cluster.wait_for(lambda: ready_endpoints(cluster, "backend") == 1, 30, "the backend's endpoint")
        await cluster.settle()
        began = time.monotonic()
        result: dict = {"series": await measure(cluster, seconds, rounds)}
        if cluster.kernel_proxy is not None:
            result["latencies"], result["silent"] = await endpoint_changes(cluster, CHURN_CHANGES)
        print(f"  ({time.monotonic() - began:.0f} s of measurements)", flush=True)
    return result


# ---------------------------------------------------------------------------- report

def fmt(value: float | None, label: str) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if "Gbit" in label else f"{value / 1000:.1f}k"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p * len(ordered)) - 1))]


def report(results: dict[str, dict], seconds: float, rounds: int) -> None:
    print(f"\nservice path on netns: medians of {rounds} rounds, {seconds:g} s each; "
          "ratios ClusterIP / direct taken per round (README table):\n")
    print("| | same node: direct | same node: ClusterIP | across nodes: direct | across nodes: ClusterIP |")
    print("|---|---|---|---|---|")
    for index, (label, _, _) in enumerate(MEASUREMENTS):
        for mode, result in results.items():
            series, cells = result["series"][index], []
            for path in PATHS:
                direct, via = target_name("direct", path), target_name("ClusterIP", path)
                cells += [fmt(series.median(direct), label),
                          f"{fmt(series.median(via), label)} ({series.ratio(via, direct):.2f})"]
            print(f"| {label}, {mode} | " + " | ".join(cells) + " |")
    kernel = results.get("nftables")
    if kernel is None:
        return
    latencies = kernel["latencies"]
    print(f"\nendpoint change to the kernel of every node (nftables, {CHURN_CHANGES} scalings of a Deployment, "
          f"{len(latencies)} batches" + (f", {kernel['silent']} changes with no batch" if kernel["silent"] else "")
          + "):")
    if latencies:
        print(f"  median {statistics.median(latencies):.1f} ms   p90 {percentile(latencies, 0.9):.1f} ms   "
              f"max {max(latencies):.1f} ms")
    print("\ngoals (issue 15, proxyMode nftables), ratios per round, medians:")
    for index, (_, name, _) in enumerate(MEASUREMENTS):
        series = kernel["series"][index]
        for path in PATHS:
            direct, via = target_name("direct", path), target_name("ClusterIP", path)
            text = f"{name}, {path}: ClusterIP / direct"
            print("  " + _tools.goal_line(text, series.ratio(via, direct), RATIO_GOAL, spread=series.ratios(via, direct)))
    print("  " + _tools.goal_line("endpoint change in every node's kernel, max ms",
                                  max(latencies) if latencies else None,
                                  LATENCY_GOAL_MS, at_most=True))


async def service_path(seconds: float, rounds: int, directory: Path) -> None:
    results = {}
    for mode in MODES:
        (directory / mode).mkdir()
        results[mode] = await run_mode(mode, seconds, rounds, directory / mode)
    report(results, seconds, rounds)
