"""Kubernetes API benchmark: requests per second and latency of netemu's API server, with wrk.

A cluster (6 nodes, loopback backend) runs in a child process holding 1,000 running pods (a
Deployment) and a small Service; this process drives it with real clients only, so none of them
shares the server's interpreter:

- GET of one pod, LIST of the 1,000 pods as JSON and as a server-side Table
  (``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``, what ``kubectl get`` asks), each a
  few seconds of wrk (bearer token over HTTPS): requests per second at 8 connections, and the
  latency of one request at a time (1 connection), the number the goal is about.
- A watch storm: 10 watchers (curl, chunked JSON streams) on a namespace while pods there are
  created and then updated through the API; events per second delivered to all of them together.
  Meanwhile the data plane is probed: cluster DNS (dig to the kube-dns ClusterIP) and the
  service proxy (curl to a ClusterIP), every 50 ms; the worst latency and any failure are shown.

Goals (issue 11): a LIST of 1,000 pods in under 50 ms, and the data plane answering throughout
the storm. Not a test: ``make bench`` prints the numbers. Everything is bounded in time and
talks to 127.x only (run it inside scripts/isolated).
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
PODS = 1000
NODES = 6                   # 254 pod addresses per node: room for the 1,000, the storm's and echo's
NAMESPACE = "bench"
STORM_NAMESPACE = "storm"
WATCHERS = 10
STORM_PODS = 100            # created, then each updated twice
PROBE_INTERVAL = 0.05       # seconds between data-plane probes
WRK_SECONDS = 5
LIST_GOAL_MS = 50.0
TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io"
# What kube-apiserver publishes: no requests-per-second figures for these exact requests, only the
# scalability SLOs (kubernetes/community, sig-scalability/slos): 99th percentile per cluster-day of
# read-only calls <= 1 s for one object, <= 5 s for a namespace's LIST, <= 30 s cluster-wide.
REFERENCE = ("kube-apiserver reference: no published req/s for these requests was found; its published "
             "scalability SLOs are p99 <= 1 s (GET one object), <= 5 s (LIST in a namespace), "
             "<= 30 s (LIST cluster-wide)")


# ------------------------------------------------------------------ the cluster (child process)


def manifests() -> str:
    return f"""apiVersion: v1
kind: Namespace
metadata: {{name: {NAMESPACE}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {STORM_NAMESPACE}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {NAMESPACE}}}
spec:
  replicas: {PODS}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - {{name: web, image: nginx, ports: [{{containerPort: 80}}]}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: echo, namespace: default}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: echo}}}}
  template:
    metadata: {{labels: {{app: echo}}}}
    spec:
      containers:
      - {{name: echo, image: nginx, ports: [{{containerPort: 80}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: default}}
spec:
  selector: {{app: echo}}
  ports: [{{port: 80, targetPort: 80}}]
"""


async def serve() -> None:
    """Start the cluster, print where it is (one JSON line), serve until stdin closes."""
    from netemu import Cluster
    async with Cluster(nodes=NODES, name="bench-api") as cluster:
        await cluster.apply(manifests())
        await cluster.wait_ready(timeout=180)
        pod = cluster.pods(NAMESPACE)[0].metadata.name
        print(json.dumps({"url": cluster.kube_api.url, "token": (cluster.state.directory / "token").read_text(),
                          "ca": str(cluster.state.directory / "ca.crt"),
                          "pod": pod, "dns_ip": cluster.config.dns_ip, "dns_port": cluster.dns_port,
                          "service_ip": cluster.service_ip("echo", "default")}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def child() -> None:
    try:
        import uvloop
        uvloop.run(serve())
    except ImportError:
        asyncio.run(serve())


# ------------------------------------------------------------------ load generators (this process)


@dataclass
class WrkResult:
    rps: float
    mean_ms: float
    p50_ms: float
    p99_ms: float
    errors: str = ""


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(url: str, token: str, connections: int, accept: str = "application/json") -> WrkResult:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{WRK_SECONDS}s", "--latency", "--timeout", "5s",
                          "-H", f"Authorization: Bearer {token}", "-H", f"Accept: {accept}", url],
                         capture_output=True, text=True, timeout=WRK_SECONDS + 30, check=True).stdout
    mean = re.search(r"Latency\s+(\S+)", out)
    p50 = re.search(r"50%\s+(\S+)", out)
    p99 = re.search(r"99%\s+(\S+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = " ".join(line.strip() for line in out.splitlines()
                      if "Non-2xx" in line or "Socket errors" in line)
    if not (mean and p50 and p99 and rps):
        raise SystemExit(f"bench/api.py: cannot read wrk's output:\n{out}")
    return WrkResult(float(rps.group(1)), _ms(mean.group(1)), _ms(p50.group(1)), _ms(p99.group(1)), errors)


@dataclass
class Probe:
    """One data-plane check repeated every PROBE_INTERVAL: its worst latency and failures."""
    name: str
    argv: list[str]
    answered: Callable[[str], bool]  # the output of a good answer
    worst_ms: float = 0.0
    count: int = 0
    failures: list[str] = field(default_factory=list)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            result = subprocess.run(self.argv, capture_output=True, text=True, timeout=10)
            elapsed = (time.perf_counter() - t0) * 1000
            self.count += 1
            self.worst_ms = max(self.worst_ms, elapsed)
            if result.returncode != 0 or not self.answered(result.stdout.strip()):
                self.failures.append((result.stderr or result.stdout).strip()[:200] or f"exit {result.returncode}")
            stop.wait(PROBE_INTERVAL)


class Watcher:
    """A curl watch on the storm namespace, counting the events it is sent."""

    def __init__(self, base: str, ca: str, token: str, resource_version: str) -> None:
        url = f"{base}/api/v1/namespaces/{STORM_NAMESPACE}/pods?watch=true&resourceVersion={resource_version}"
        self.proc = subprocess.Popen(["curl", "-sN", "--cacert", ca, "--max-time", "120", "-H", f"Authorization: Bearer {token}",
                                      url], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.events = 0
        self.last = 0.0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for _line in self.proc.stdout:
            self.events += 1
            self.last = time.perf_counter()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.thread.join(timeout=5)


def storm_writes(api_client: Any) -> int:
    """Create STORM_PODS pods, then update each twice; returns the number of writes."""
    from kubernetes import client
    core = client.CoreV1Api(api_client)
    writes = 0
    for i in range(STORM_PODS):
        core.create_namespaced_pod(STORM_NAMESPACE, {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"s-{i}", "labels": {"round": "0"}},
            "spec": {"containers": [{"name": "web", "image": "nginx"}]}})
        writes += 1
    for round_ in (1, 2):
        for i in range(STORM_PODS):
            core.patch_namespaced_pod(f"s-{i}", STORM_NAMESPACE, {"metadata": {"labels": {"round": str(round_)}}})
            writes += 1
    return writes


def storm(where: dict) -> dict:
    from kubernetes import client
    base, token = where["url"], where["token"]
    configuration = client.Configuration()
    configuration.host = base
    configuration.ssl_ca_cert = where["ca"]
    configuration.api_key = {"authorization": f"Bearer {token}"}
    with client.ApiClient(configuration) as api_client:
        rv = client.CoreV1Api(api_client).list_namespaced_pod(STORM_NAMESPACE).metadata.resource_version
        probes = [Probe("DNS (dig kube-dns ClusterIP)", ["dig", f"@{where['dns_ip']}", "-p", str(where["dns_port"]),
                                                         "+time=2", "+tries=1", "+short",
                                                         "echo.default.svc.cluster.local"],
                        lambda out: out == where["service_ip"]),
                  Probe("proxy (curl ClusterIP)", ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                                                   "--max-time", "2", f"http://{where['service_ip']}/"],
                        lambda out: out == "200")]
        stop = threading.Event()
        threads = [threading.Thread(target=p.run, args=(stop,), daemon=True) for p in probes]
        for t in threads:
            t.start()
        watchers = [Watcher(base, where["ca"], token, rv) for _ in range(WATCHERS)]
        try:
            time.sleep(0.5)  # every watch is open before the first write
            t0 = time.perf_counter()
            writes = storm_writes(api_client)
            t_writes = time.perf_counter() - t0
            deadline = time.perf_counter() + 30
            while time.perf_counter() < deadline:  # until the streams have been quiet for 2 s
                before = sum(w.events for w in watchers)
                time.sleep(2)
                if sum(w.events for w in watchers) == before:
                    break
            last = max((w.last for w in watchers), default=t0)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=15)
            for w in watchers:
                w.stop()
    events = sum(w.events for w in watchers)
    elapsed = max(last - t0, 1e-9)
    return {"writes": writes, "writes_per_s": writes / t_writes, "events": events, "events_per_s": events / elapsed,
            "per_watcher": sorted({w.events for w in watchers}), "probes": probes}


# ------------------------------------------------------------------ main


def ensure_tools() -> None:
    if not shutil.which("wrk"):
        subprocess.run([str(ROOT / "scripts" / "ensure-tools"), "wrk:wrk"], check=False)
    missing = [t for t in ("wrk", "curl", "dig") if not shutil.which(t)]
    if missing:
        sys.exit(f"bench/api.py: missing {', '.join(missing)} (Debian packages wrk, curl, bind9-dnsutils)")


def report(name: str, rps: WrkResult, one: WrkResult, goal_ms: float | None = None) -> None:
    mark = ""
    if one.rps == 0:
        mark = f"  no answer within wrk's 5 s timeout{'  goal < %.0f ms: SLOW' % goal_ms if goal_ms else ''}"
    elif goal_ms is not None:
        mark = f"  goal < {goal_ms:.0f} ms: {'ok' if one.mean_ms < goal_ms else 'SLOW'} ({one.mean_ms / goal_ms:.2f}x)"
    errors = f"  [{rps.errors or one.errors}]" if rps.errors or one.errors else ""
    print(f"{name:<28} {rps.rps:>9.0f} {one.rps:>9.0f} {one.mean_ms:>9.2f} {one.p50_ms:>9.2f} {one.p99_ms:>9.2f}"
          f"{mark}{errors}")


def main() -> int:
    ensure_tools()
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(dir=shm) as state:
        env = {**os.environ, "NETEMU_STATE_DIR": state}
        server = subprocess.Popen([sys.executable, __file__, "--child"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, env=env)
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            if not line:
                print("bench/api.py: the cluster did not start", file=sys.stderr)
                return 1
            where = json.loads(line)
            base, token = where["url"], where["token"]
            pods = f"{base}/api/v1/namespaces/{NAMESPACE}/pods"
            print(f"netemu API server, {PODS} running pods; wrk {WRK_SECONDS} s per column")
            print(f"{'request':<28} {'req/s c8':>9} {'req/s c1':>9} {'mean ms':>9} {'p50 ms':>9} {'p99 ms':>9}")
            for name, url, accept, goal in (
                    ("GET one pod", f"{pods}/{where['pod']}", "application/json", None),
                    (f"LIST {PODS} pods (JSON)", pods, "application/json", LIST_GOAL_MS),
                    (f"LIST {PODS} pods (Table)", pods, TABLE_ACCEPT, LIST_GOAL_MS)):
                report(name, wrk(url, token, 8, accept), wrk(url, token, 1, accept), goal)
            print(REFERENCE)
            result = storm(where)
            print(f"watch storm: {WATCHERS} watchers, {result['writes']} writes ({result['writes_per_s']:.0f}/s) "
                  f"-> {result['events']} events delivered, {result['events_per_s']:.0f} events/s "
                  f"(per watcher: {result['per_watcher']})")
            for probe in result["probes"]:
                status = "ok" if not probe.failures else f"FAILED {len(probe.failures)}x: {probe.failures[0]}"
                print(f"  data plane during the storm, {probe.name}: {probe.count} probes, "
                      f"worst {probe.worst_ms:.1f} ms, {status}")
        finally:
            if server.stdin is not None:
                server.stdin.close()
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        child()
    else:
        sys.exit(main())
