"""Benchmark netemu's userspace service proxy with C load generators against C servers.

    scripts/isolated .venv/bin/python bench/proxy.py [--seconds 3] [--rounds 5] [--proxy-workers N]

A one-node cluster (loopback backend, in this process, on uvloop, as ``netemu run`` runs it, with
the default ``proxy_workers: auto``, which starts more proxy processes while the load keeps the
proxy busy: the warm-up loads the ClusterIP until it has them, at most 10 s, and the number of
proxy processes is printed before and after the measurements) holds one pod whose two containers
are real programs: ``iperf3 -s`` and nginx-light (a minimal config in a temporary directory, one
worker, a 3-byte keep-alive answer). Three load generators, each run at most 5 s:

- bulk: ``iperf3 -c -P1 -t N`` (one TCP stream, Gbit/s the server received);
- keep-alive: ``wrk -t2 -c50`` (HTTP/1.1 requests per second on 50 open connections);
- new connections: ``wrk -t2 -c50 -H 'Connection: close'`` (nginx closes after each answer, so
  every request is a new TCP connection: connections per second).

Each against four targets, which take turns within each of ``--rounds`` rounds: the pod IP
directly; the Service's ClusterIP (netemu's proxy); HAProxy (``nbthread 2``, ``mode tcp``); and a
bare uvloop relay in a process of its own (``bench/_bare_relay.py``), the ceiling for a userspace
relay on this machine. With ``--proxy-workers N`` a second one-node cluster, started with
``proxy_workers: N`` (N processes from the start; 1: never more than one) and holding the same pod,
is a fifth target ("netemu ClusterIP, proxy_workers N"), measured in the same rounds. Ratios are
taken within a round and the medians printed, with the CPU time the proxy spent per GB and per
1,000 requests (this process and any helper process it starts, proxy workers included; HAProxy's
and the relay's from /proc/<pid>/stat). Then each goal of issue 15 with ✓/✗, for each proxy target.

Only 127.x addresses are used. Every child gets SIGTERM if this driver dies (PR_SET_PDEATHSIG)
and is stopped by pid at the end; the temporary directory is removed.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _tools  # noqa: E402

HAPROXY_IP, BARE_IP = "127.96.250.2", "127.96.250.3"
IPERF_PORT, HTTP_PORT, SERVICE_HTTP_PORT = 5201, 8080, 80
MAX_SECONDS = 5.0
WARM_UP = 10.0  # seconds of load at most before the rounds, for the proxy to reach its process count
TARGETS = ("direct", "proxy", "haproxy", "bare")
TITLES = {"direct": "direct", "proxy": "netemu ClusterIP", "haproxy": "HAProxy", "bare": "bare uvloop relay"}
POD_PROGRAMS = frozenset({"iperf3", "nginx", "sh"})     # the pod's processes: not the proxy's CPU
TOOLS = {"iperf3": "iperf3", "wrk": "wrk", "haproxy": "haproxy", "nginx": "nginx-light"}



def manifests(directory: Path) -> str:
    template, conf = directory / "nginx.conf.in", directory / "nginx.conf"
    template.write_text(_tools.nginx_conf(directory, [f"@POD_IP@:{HTTP_PORT}"]))
    nginx = (f'sed "s/@POD_IP@/$POD_IP/" {template} > {conf} && '
             f'exec nginx -p {directory} -e {directory}/error.log -c {conf}')
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: backend, labels: {{app: backend}}}}
spec:
  containers:
  - name: iperf3
    image: busybox
    command: [sh, -c, 'exec iperf3 -s -B "$POD_IP" -p {IPERF_PORT}']
    ports: [{{name: iperf, containerPort: {IPERF_PORT}}}]
    readinessProbe: {{tcpSocket: {{port: {IPERF_PORT}}}, periodSeconds: 1}}
  - name: nginx
    image: busybox
    command: [sh, -c, {json.dumps(nginx)}]
    ports: [{{name: http, containerPort: {HTTP_PORT}}}]
    readinessProbe: {{tcpSocket: {{port: {HTTP_PORT}}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: backend}}
spec:
  selector: {{app: backend}}
  ports:
  - {{name: iperf, port: {IPERF_PORT}}}
  - {{name: http, port: {SERVICE_HTTP_PORT}, targetPort: http}}
"""


def haproxy_config(directory: Path, pod_ip: str) -> Path:
    path = directory / "haproxy.cfg"
    lines = ["global", "  nbthread 2", "  maxconn 8000", "defaults", "  mode tcp", "  timeout connect 5s",
             "  timeout client 30s", "  timeout server 30s"]
    for port in (IPERF_PORT, HTTP_PORT):
        lines += [f"listen p{port}", f"  bind {HAPROXY_IP}:{port}", f"  server pod {pod_ip}:{port}"]
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------------- load generators

# ---------------------------------------------------------------------------- the run

MEASUREMENTS = (  # label, unit of work for CPU, how to run it against (host, iperf port, http port)
    ("bulk, Gbit/s", "GB", lambda t, s: _tools.iperf3(t[0], t[1], s)),
    ("keep-alive req/s", "1k req", lambda t, s: _tools.wrk(t[0], t[2], s, close=False)),
    ("new connections/s", "1k conn", lambda t, s: _tools.wrk(t[0], t[2], s, close=True)),
)


async def measure(targets: dict[str, tuple[str, int, int]], cpu_of: dict, seconds: float, rounds: int) -> list:
    results = []
    for label, unit, run in MEASUREMENTS:
        series = _tools.Series(label)
        for n in range(rounds):
            for name, target in targets.items():
                before = cpu_of[name]()
                rate, work = await run(target, seconds)
                series.add(name, rate, (cpu_of[name]() - before) / work if work else None)
            print(f"  {label} round {n + 1}: " + "  ".join(
                f"{name} {series.rates[name][-1]:,.1f}" for name in targets), flush=True)
        results.append((series, unit))
    return results


def fmt_rate(value: float | None, label: str) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if "Gbit" in label else f"{value / 1000:.1f}k"


def report(results: list, seconds: float, rounds: int, titles: dict[str, str]) -> None:
    print(f"\nmedians of {rounds} rounds, {seconds:g} s each; ratios to direct taken per round "
          f"(README table, issue 15 format):\n")
    print("| | " + " | ".join(titles.values()) + " |")
    print("|---|" + "---|" * len(titles))
    for series, _ in results:
        cells = []
        for name in titles:
            ratio = 1.0 if name == "direct" else series.ratio(name, "direct")
            value = series.median(name)
            cells.append(f"{fmt_rate(value, series.label)} ({ratio:.2f})" if value is not None else "–")
        print(f"| {series.label} (ratio) | " + " | ".join(cells) + " |")
    print("\nCPU per unit of work (medians; the proxy: the cluster's process and its helpers):")
    for series, unit in results:
        parts = [f"{titles[name]} {series.cpu_median(name) * 1e3:.1f} ms" for name in titles
                 if name != "direct" and series.cpu_median(name) is not None]
        print(f"  {series.label:20} per {unit}: " + "   ".join(parts))
    bulk, keepalive, newconn = (series for series, _ in results)
    print("\ngoals (issue 15), ratios per round, medians:")
    for proxy in [name for name in titles if name.startswith("proxy")]:
        who = "netemu" if proxy == "proxy" else f"netemu ({titles[proxy].split(', ')[-1]})"
        for text, series, reference, threshold in (
                ("bulk: {} / bare relay", bulk, "bare", 0.95),
                ("bulk: {} / direct", bulk, "direct", 0.8),
                ("keep-alive: {} / HAProxy", keepalive, "haproxy", 1.0),
                ("new connections: {} / HAProxy", newconn, "haproxy", 0.8)):
            print("  " + _tools.goal_line(text.format(who), series.ratio(proxy, reference), threshold,
                                          spread=series.ratios(proxy, reference)))


def proxy_processes(cluster) -> int:
    return 1 + len(cluster.proxy.workers or ())


async def warm_up(cluster, target: tuple[str, int, int]) -> None:
    """Load the ClusterIP until the proxy has as many processes as ``auto`` gives this machine
    (it starts them while busy), at most WARM_UP seconds: the rounds then measure the steady state
    a sustained load reaches, not the first second of it."""
    scaler = cluster.proxy_autoscaler
    deadline = time.monotonic() + WARM_UP
    while scaler is not None and proxy_processes(cluster) < scaler.limit and time.monotonic() < deadline:
        await _tools.wrk(target[0], target[2], 1, close=False)


async def main(seconds: float, rounds: int, workers: int) -> None:
    from netemu import Cluster
    from netemu.scenario.clusters import slot_ranges
    _tools.ensure_tools("bench/proxy.py", TOOLS)
    tmp = Path(tempfile.mkdtemp(prefix="netemu-bench-proxy-"))
    children = []
    titles = {name: TITLES[name] for name in TARGETS}
    try:
        async with contextlib.AsyncExitStack() as stack:
            cluster = await stack.enter_async_context(Cluster(nodes=1, name="bench-proxy", kube_api=False,
                                                              state_dir=tmp / "state"))
            await cluster.apply(manifests(tmp))
            await cluster.wait_ready(timeout=30)
            pod_ip, cluster_ip = cluster.pod_ip("backend"), cluster.service_ip("backend")
            more = {}
            if workers:  # the same pod behind a cluster whose proxy runs in `workers` processes
                (tmp / "n").mkdir()
                cluster_n = await stack.enter_async_context(Cluster(
                    nodes=1, name="bench-proxy-n", kube_api=False, state_dir=tmp / "state", proxy_workers=workers,
                    **slot_ranges(1)))
                await cluster_n.apply(manifests(tmp / "n"))
                await cluster_n.wait_ready(timeout=30)
                more = {"proxy-n": (cluster_n.service_ip("backend"), IPERF_PORT, SERVICE_HTTP_PORT)}
                titles = {"direct": TITLES["direct"], "proxy": TITLES["proxy"],
                          "proxy-n": f"{TITLES['proxy']}, proxy_workers {workers}",
                          **{name: TITLES[name] for name in TARGETS[2:]}}
            haproxy = _tools.start(["haproxy", "-db", "-f", str(haproxy_config(tmp, pod_ip))])
            bare = _tools.start([sys.executable, str(Path(__file__).with_name("_bare_relay.py")), BARE_IP, pod_ip,
                                 str(IPERF_PORT), str(HTTP_PORT)], stdout=-1)
            children += [haproxy, bare]
            await asyncio.get_running_loop().run_in_executor(None, bare.stdout.readline)
            targets = {"direct": (pod_ip, IPERF_PORT, HTTP_PORT),
                       "proxy": (cluster_ip, IPERF_PORT, SERVICE_HTTP_PORT), **more,
                       "haproxy": (HAPROXY_IP, IPERF_PORT, HTTP_PORT),
                       "bare": (BARE_IP, IPERF_PORT, HTTP_PORT)}
            for host, _, port in targets.values():
                await _tools.wait_listening(host, port)
                await _tools.wrk(host, port, 1, close=False)  # each answers, and warm-up
            await warm_up(cluster, targets["proxy"])
            helpers = {haproxy.pid, bare.pid}
            cpu_of = {"direct": lambda: 0.0,
                      "proxy": lambda: _tools.cluster_cpu(helpers, POD_PROGRAMS | set(TOOLS)),
                      "proxy-n": lambda: _tools.cluster_cpu(helpers, POD_PROGRAMS | set(TOOLS)),
                      "haproxy": lambda: _tools.process_cpu(haproxy.pid),
                      "bare": lambda: _tools.process_cpu(bare.pid)}
            print(f"pod {pod_ip} (iperf3 :{IPERF_PORT}, nginx :{HTTP_PORT}), ClusterIP {cluster_ip}, "
                  f"HAProxy {HAPROXY_IP} (2 threads, mode tcp), bare relay {BARE_IP}", flush=True)
            if more:
                print(f"and a cluster with proxy_workers {workers} (ClusterIP {more['proxy-n'][0]}, its own pod "
                      f"{cluster_n.pod_ip('backend')})", flush=True)
            print(f"proxy processes after the warm-up: {proxy_processes(cluster)}", flush=True)
            began = time.monotonic()
            results = await measure(targets, cpu_of, seconds, rounds)
            print(f"proxy processes after the measurements: {proxy_processes(cluster)}", flush=True)
        report(results, seconds, rounds, titles)
        print(f"\n({time.monotonic() - began:.0f} s of measurements)")
    finally:
        _tools.stop(children)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement (at most 5)")
    parser.add_argument("--rounds", type=int, default=5, help="times each measurement is taken")
    parser.add_argument("--proxy-workers", type=int, default=0, metavar="N",
                        help="also measure a cluster whose proxy runs in N processes, next to the default (auto)")
    options = parser.parse_args()
    import uvloop
    uvloop.run(main(min(options.seconds, MAX_SECONDS), max(1, options.rounds), max(0, options.proxy_workers)))
