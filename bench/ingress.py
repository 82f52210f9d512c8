"""Benchmark netemu's ingress controller against HAProxy in HTTP mode with the same route.

    .venv/bin/python bench/ingress.py [--seconds 5] [--rounds 3]     (inside scripts/isolated)

Starts a one-node cluster (loopback backend, uvloop, one thread, as netemu runs), a backend pod
whose container is a small fixed-answer HTTP/1.1 server in a process of its own (so that both
proxies reach the same, equally fast backend), and an Ingress routing host ``bench.test`` path
``/api`` (Prefix) to its Service. HAProxy 2.x (``mode http``, one thread) routes the same host and
path (``hdr(host)`` + ``path_beg``) to the same pod. wrk (``-t2 -c50``, keep-alive, ``Host:
bench.test``) measures requests per second through each: the ingress controller pod directly (its
pod IP and port, the L7 hop alone, as HAProxy is measured), through the Ingress's LoadBalancer
address (adding netemu's L4 service proxy, as clients reach it), and HAProxy. Each round runs the
targets in turn; the table shows medians over ``--rounds`` rounds and the ratio ingress/HAProxy
measured in this run (goal: at least 0.7). Only 127.x addresses are used; HAProxy and wrk are child
processes, stopped by pid.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import _tools  # bench/, the script's directory, is on the path

HAPROXY_IP, HAPROXY_PORT = "127.96.251.2", 8080
BACKEND_PORT = 8080
MAX_SECONDS = 5.0
GOAL = 0.7

# The backend pod's program: answers each request with a fixed keep-alive response.
BACKEND = r"""
import asyncio, os
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
class Http(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.tail = transport, b""
    def data_received(self, data):
        data = self.tail + data
        n = data.count(b"\r\n\r\n")
        self.tail = data[data.rfind(b"\r\n\r\n") + 4:] if n else data
        if n:
            self.transport.write(RESPONSE * n)
async def main():
    await asyncio.get_running_loop().create_server(Http, os.environ["POD_IP"], 8080, backlog=4096)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def manifests() -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: api}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: api}}}}
  template:
    metadata: {{labels: {{app: api}}}}
    spec:
      containers:
      - name: main
        image: python
        command: [{json.dumps(sys.executable)}, -c, {json.dumps(BACKEND)}]
        ports: [{{name: http, containerPort: {BACKEND_PORT}}}]
        readinessProbe: {{tcpSocket: {{port: {BACKEND_PORT}}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: api}}
spec:
  selector: {{app: api}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: bench}}
spec:
  rules:
  - host: bench.test
    http: {{paths: [{{path: /api, pathType: Prefix, backend: {{service: {{name: api, port: {{number: 80}}}}}}}}]}}
"""


def haproxy_config(directory: Path, pod_ip: str) -> Path:
    path = directory / "haproxy.cfg"
    path.write_text("\n".join([
        "global", "  nbthread 1", "  maxconn 8000",
        "defaults", "  mode http", "  option http-keep-alive", "  timeout connect 5s", "  timeout client 30s",
        "  timeout server 30s", "  timeout http-keep-alive 30s",
        "frontend ingress", f"  bind {HAPROXY_IP}:{HAPROXY_PORT}",
        "  acl bench_host hdr(host) -i bench.test", "  acl api_path path_beg /api",
        "  use_backend api if bench_host api_path", "  http-request deny deny_status 404 unless bench_host api_path",
        "backend api", "  http-reuse always", f"  server pod {pod_ip}:{BACKEND_PORT}",
    ]) + "\n")
    return path


def cpu_seconds(pid: int | None = None) -> float:
    """User and system CPU time of this process (``pid`` None) or of child ``pid``."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wrk(host: str, port: int, seconds: float, pid: int | None = None) -> tuple[float, float]:
    """Requests per second, and CPU microseconds per request spent by the proxy (this process, or ``pid``)."""
    before = cpu_seconds(pid)
    proc = await asyncio.create_subprocess_exec(
        "wrk", "-t2", "-c50", f"-d{seconds:g}s", "-H", "Host: bench.test", f"http://{host}:{port}/api/items",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, preexec_fn=_tools.die_with_parent)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), seconds + 30)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise SystemExit(f"wrk against {host}:{port} did not finish")
    text = out.decode()
    if "Non-2xx or 3xx responses" in text or "Socket errors" in text:
        print(f"  note: wrk against {host}:{port}: " + " / ".join(
            line.strip() for line in text.splitlines() if "Non-2xx" in line or "Socket errors" in line), flush=True)
    found = re.search(r"Requests/sec:\s*([\d.]+)", text)
    count = re.search(r"(\d+) requests in", text)
    if found is None or count is None:
        raise SystemExit(f"wrk against {host}:{port} printed no rate: {text} {err.decode()}")
    return float(found.group(1)), (cpu_seconds(pid) - before) * 1e6 / max(1, int(count.group(1)))


async def wait_for(check, what: str, timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def main(seconds: float, rounds: int) -> None:
    seconds = min(seconds, MAX_SECONDS)
    missing = [tool for tool in ("haproxy", "wrk") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"missing {' and '.join(missing)}: apt-get install {' '.join(missing)}")
    with tempfile.TemporaryDirectory(prefix="netemu-bench-ingress-") as directory:
        await measure(Path(directory), seconds, rounds)


async def measure(tmp: Path, seconds: float, rounds: int) -> None:
    """The rounds, on a cluster whose state (and HAProxy's configuration) goes in ``tmp``."""
    from netemu import Cluster
    from netemu.ingress import system

    async with Cluster(nodes=1, name="bench-ingress", state_dir=tmp / "state") as cluster:
        await cluster.apply(manifests())
        await cluster.wait_ready(timeout=60)

        def controller_pod():
            pods = [p for p in cluster.pods(system.NAMESPACE) if p.status.pod_ip]
            return pods[0] if pods else None
        await wait_for(lambda: controller_pod() is not None and cluster.store.get(
            "Ingress", "default", "bench").status.load_balancer.ingress, "the ingress controller")
        await cluster.wait_ready(timeout=60)
        backend_ip = cluster.pods("default")[0].status.pod_ip
        controller_ip = controller_pod().status.pod_ip
        lb_ip = cluster.store.get("Ingress", "default", "bench").status.load_balancer.ingress[0].ip
        haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(haproxy_config(tmp, backend_ip))],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   preexec_fn=_tools.die_with_parent)
        try:
            targets = {"ingress (pod)": (controller_ip, system.container_port(), None),
                       "ingress (LB)": (lb_ip, 80, None), "haproxy": (HAPROXY_IP, HAPROXY_PORT, haproxy.pid)}
            for host, port, _ in targets.values():   # one check request each, and warm-up
                await wrk(host, port, 1)
            rates: dict[str, list[float]] = {name: [] for name in targets}
            costs: dict[str, list[float]] = {name: [] for name in targets}
            ratios: list[float] = []
            for n in range(rounds):
                for name, (host, port, pid) in targets.items():
                    rate, cost = await wrk(host, port, seconds, pid)
                    rates[name].append(rate)
                    costs[name].append(cost)
                ratios.append(rates["ingress (pod)"][-1] / rates["haproxy"][-1])
                print(f"round {n + 1}: " + "  ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items())
                      + f"  ratio {ratios[-1]:.2f}", flush=True)
        finally:
            haproxy.terminate()
            haproxy.wait(timeout=10)
        median = {name: statistics.median(v) for name, v in rates.items()}
        cost = {name: statistics.median(v) for name, v in costs.items()}
        print(f"\nkeep-alive req/s, wrk -t2 -c50 -d{seconds:g}s, medians of {rounds} rounds "
              f"(backend pod {backend_ip}:{BACKEND_PORT}, route bench.test /api):")
        print(f"  {'':15} {'req/s':>9}  {'CPU us/req':>10}  (the ingress: netemu's whole process; LB adds its L4 proxy)")
        for name, value in median.items():
            print(f"  {name:15} {value:>9.0f}  {cost[name]:>10.1f}")
        ratio = statistics.median(ratios)
        print(f"  ingress(pod)/haproxy: {ratio:.2f} (rounds {min(ratios):.2f}-{max(ratios):.2f})  "
              f"{'✓' if ratio >= GOAL else '✗'} goal >= {GOAL}")
        print(f"  ingress(LB)/haproxy: {median['ingress (LB)'] / median['haproxy']:.2f} "
              "(through netemu's userspace L4 proxy as well: issue 15's proxy goals)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    try:
        import uvloop
        uvloop.run(main(args.seconds, args.rounds))
    except ImportError:
        asyncio.run(main(args.seconds, args.rounds))
