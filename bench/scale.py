"""Scale benchmark (issue 15): how bring-up, memory, ``kubectl get pods -A`` and shutdown grow.

Sizes 1,000, 2,000, 5,000 and 10,000 pods on 20 nodes (loopback backend): Deployments of the
built-in nginx image, 2 replicas each, with a ClusterIP Service in front of each. Each size runs in
a fresh child process (so its peak RSS is its own, from getrusage); the clock starts once netemu
and its API server are imported. Reported per size: time from an empty cluster to every pod Ready,
peak RSS, the median of 3 runs of the real kubectl ``get pods -A`` with the cluster's kubeconfig
(after one warm-up run that fills kubectl's discovery cache) and the cluster's shutdown. kubectl
reads the list in pages of 500 and its client (client-go) allows itself 5 requests a second after
a burst of 10, whatever the server: over 10,000 pods (21 pages) that alone is about 2.2 s of the
time. The table shows how much of the median run kubectl spent waiting for its own rate limiter
(``-v=3`` reports each wait) and the rest, which is the server's and kubectl's work; after the
goals, the median of the same list read in one request (``--chunk-size=0``: nothing to throttle),
which is what the server and kubectl themselves cost. Between
sizes, the growth exponent: the log-log slope of Ready time against pods (1 = linear). Then 1,000
pods that run a real process each (busybox, ``sleep 3600``) to Ready.

Each node gets a /23 of pod addresses (``node_cidr_mask_size: 23``, 510 pods) since 10,000 pods
on 20 nodes are 500 a node; the pod cap (``max_pods``) is raised above the default 10,000 because
the cluster's own pods (DNS, ingress controller) count too. Goals: 10,000 pods Ready in under 10 s
and under 2 GiB, 1,000 process pods in under 5 s, ``get pods -A`` over 10,000 pods in under
0.5 s, shutdown in under 3 s. Every child is bounded (120 s). Not a test: ``make bench`` prints it.
``--profile SIZE`` runs one size under cProfile and prints the top functions (cumulative and own
time); ``--process-only`` runs only the process pods (``--process-only profile``: under cProfile).
Run it inside scripts/isolated: it binds 127.x addresses only.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

NODES = 20
SIZES = [1000, 2000, 5000, 10000]        # pods, as SIZE/2 Deployments of 2 replicas + SIZE/2 Services
PROCESS_PODS = 1000
CHILD_TIMEOUT = 120.0
GOAL_READY_S, GOAL_RSS_MIB, GOAL_GET_S, GOAL_DOWN_S, GOAL_PROCESS_S = 10.0, 2048.0, 0.5, 3.0, 5.0
KUBECTL_RUNS = 3


def manifests(pods: int, process: bool) -> str:
    docs = []
    for i in range(pods // 2):
        name = f"app-{i}"
        container = ("{name: main, image: busybox, command: [sleep, \"3600\"]}" if process else
                     "{name: web, image: nginx, ports: [{containerPort: 8080}]}")
        docs.append(f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {container}""")
        if not process:
            docs.append(f"""apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: 80, targetPort: 8080}}]""")
    return "\n---\n".join(docs)


_THROTTLED = re.compile(r"Waited for ([0-9.]+)(ms|µs|us|s) due to client-side throttling")
_UNIT = {"ms": 1e-3, "µs": 1e-6, "us": 1e-6, "s": 1.0}


def throttled_seconds(log: str) -> float:
    """What client-go's rate limiter made kubectl wait, from its ``-v=3`` log."""
    return sum(float(n) * _UNIT[unit] for n, unit in _THROTTLED.findall(log))


async def kubectl_get_all(kubeconfig: str, home: str, *options: str) -> tuple[float, float]:
    """(seconds, of which waiting for kubectl's own client-side rate limit)."""
    env = dict(os.environ, KUBECONFIG=kubeconfig, HOME=home)
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec("kubectl", "get", "pods", "-A", "--request-timeout=60s", "-v=3",
                                                *options, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                env=env)
    out, err = await proc.communicate()
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl get pods -A: {err.decode().strip()}")
    if out.count(b"\n") <= 1:
        return math.nan, math.nan
    return elapsed, throttled_seconds(err.decode(errors="replace"))


async def one(pods: int, process: bool, profile: bool) -> dict:
    t_import = time.perf_counter()
    from netemu import Cluster
    from netemu.kubeapi import KUBECONFIG
    import netemu.kubeapi.server  # noqa: F401
    t_import = time.perf_counter() - t_import
    text = manifests(pods, process)
    profiler = None
    if profile:
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
    t0 = time.perf_counter()
    cluster = Cluster(nodes=NODES, name=f"scale-{pods}", node_cidr_mask_size=23, max_pods=pods + 100,
                      max_objects=pods * 4 + 1000, max_request_bytes=64 * 1024 * 1024)
    await cluster.start()
    try:
        t_up = time.perf_counter() - t0
        await cluster.apply(text)
        await cluster.wait_ready(timeout=CHILD_TIMEOUT)
        t_ready = time.perf_counter() - t0
        if profiler is not None:
            profiler.disable()
        ready = len(cluster.pods(None))
        fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else -1
        gets: list[tuple[float, float]] = []
        singles: list[float] = []  # --chunk-size=0: the whole list in one request, so never throttled
        if shutil.which("kubectl") and not process:
            with tempfile.TemporaryDirectory() as home:
                kubeconfig = str(cluster.state.directory / KUBECONFIG)
                await kubectl_get_all(kubeconfig, home)  # fills kubectl's discovery cache
                for _ in range(KUBECTL_RUNS):
                    gets.append(await kubectl_get_all(kubeconfig, home))
                    singles.append((await kubectl_get_all(kubeconfig, home, "--chunk-size=0"))[0])
    finally:
        if profiler is not None and os.environ.get("SCALE_PROFILE_PHASE") == "down":
            profiler = __import__("cProfile").Profile()  # the shutdown alone
            profiler.enable()
        t_down = time.perf_counter()
        await cluster.stop()
        t_down = time.perf_counter() - t_down
        if profiler is not None:
            profiler.disable()
    result = {"pods": ready, "process": process, "import_s": round(t_import, 3), "up_s": round(t_up, 3),
              "ready_s": round(t_ready, 3), "get_s": round(statistics.median(g for g, _ in gets), 3) if gets else None,
              "get_throttled_s": round(sorted(gets)[len(gets) // 2][1], 3) if gets else None,
              "get_single_s": round(statistics.median(singles), 3) if singles else None,
              "down_s": round(t_down, 3), "open_fds": fds,
              "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if profiler is not None:
        import io
        import pstats
        for key in ("cumulative", "tottime"):
            buf = io.StringIO()
            pstats.Stats(profiler, stream=buf).sort_stats(key).print_stats(35)
            print(buf.getvalue(), file=sys.stderr)
        if os.environ.get("SCALE_PROFILE_OUT"):  # the raw profile, for pstats' callers and callees
            profiler.dump_stats(os.environ["SCALE_PROFILE_OUT"])
    return result


def child(pods: int, process: bool, profile: bool) -> None:
    try:
        import uvloop
        result = uvloop.run(one(pods, process, profile))
    except ImportError:
        result = asyncio.run(one(pods, process, profile))
    print(json.dumps(result))


def run_child(state: str, pods: int, process: bool, profile: bool = False) -> dict | None:
    env = {**os.environ, "NETEMU_STATE_DIR": state}
    args = [sys.executable, __file__, "--child", str(pods), "process" if process else "builtin"]
    if profile:
        args.append("profile")
    try:
        out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=CHILD_TIMEOUT + 60)
    except subprocess.TimeoutExpired:
        print(f"{pods} pods: no result within {CHILD_TIMEOUT + 60:.0f} s", file=sys.stderr)
        return None
    if profile:
        print(out.stderr[-60000:], file=sys.stderr)
    if out.returncode != 0:
        print(out.stderr[-4000:], file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def main() -> int:
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    results: list[dict] = []
    failed = 0
    print(f"{'pods':>6} {'nodes':>5} {'all Ready (s)':>14} {'exponent':>9} {'peak RSS (MiB)':>15} "
          f"{'get pods -A (s)':>16} {'throttled (s)':>14} {'down (s)':>9}")
    with tempfile.TemporaryDirectory(dir=shm) as state:
        for size in SIZES:
            r = run_child(state, size, process=False)
            if r is None:
                failed += 1
                continue
            slope = ""
            if results:
                prev = results[-1]
                slope = f"{math.log(r['ready_s'] / prev['ready_s']) / math.log(r['pods'] / prev['pods']):.2f}"
            results.append(r)
            get = f"{r['get_s']:.3f}" if r["get_s"] is not None else "-"
            throttled = f"{r['get_throttled_s']:.3f}" if r.get("get_throttled_s") is not None else "-"
            print(f"{r['pods']:>6} {NODES:>5} {r['ready_s']:>14.3f} {slope:>9} {r['peak_rss_mib']:>15.1f} "
                  f"{get:>16} {throttled:>14} {r['down_s']:>9.3f}", flush=True)
        proc = run_child(state, PROCESS_PODS, process=True)
    if proc is None:
        failed += 1
    else:
        print(f"{proc['pods']:>6} {NODES:>5} {proc['ready_s']:>14.3f} {'':>9} {proc['peak_rss_mib']:>15.1f} "
              f"{'-':>16} {'-':>14} {proc['down_s']:>9.3f}  (real processes: sleep 3600)")
    if len(results) >= 2:
        first, last = results[0], results[-1]
        overall = math.log(last["ready_s"] / first["ready_s"]) / math.log(last["pods"] / first["pods"])
        print(f"growth exponent of Ready time, {first['pods']} -> {last['pods']} pods: {overall:.2f} (1 = linear)")
    biggest = next((r for r in results if r["pods"] >= SIZES[-1]), None)
    print("goals:")
    if biggest is not None:
        print(f"  {mark(biggest['ready_s'] < GOAL_READY_S)} {biggest['pods']} pods Ready in "
              f"{biggest['ready_s']:.2f} s (goal < {GOAL_READY_S:.0f} s)")
        print(f"  {mark(biggest['peak_rss_mib'] < GOAL_RSS_MIB)} peak RSS {biggest['peak_rss_mib']:.0f} MiB "
              f"(goal < {GOAL_RSS_MIB:.0f} MiB)")
        if biggest["get_s"] is not None:
            print(f"  {mark(biggest['get_s'] < GOAL_GET_S)} kubectl get pods -A in {biggest['get_s']:.3f} s "
                  f"(goal < {GOAL_GET_S} s; {biggest['get_throttled_s']:.3f} s of it kubectl waiting for its own "
                  f"client-side rate limit, {biggest['get_s'] - biggest['get_throttled_s']:.3f} s the rest)")
            print(f"    (not a goal: the same list in one request, --chunk-size=0, so without client-go's rate limit: "
                  f"{biggest['get_single_s']:.3f} s)")
        print(f"  {mark(biggest['down_s'] < GOAL_DOWN_S)} shutdown in {biggest['down_s']:.2f} s "
              f"(goal < {GOAL_DOWN_S:.0f} s)")
    else:
        print(f"  ✗ {SIZES[-1]} pods: no result")
    if proc is not None:
        print(f"  {mark(proc['ready_s'] < GOAL_PROCESS_S)} {proc['pods']} process pods Ready in "
              f"{proc['ready_s']:.2f} s (goal < {GOAL_PROCESS_S:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), sys.argv[3] == "process", sys.argv[4:] == ["profile"])
    elif len(sys.argv) == 3 and sys.argv[1] == "--profile":
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        with tempfile.TemporaryDirectory(dir=shm) as state:
            print(run_child(state, int(sys.argv[2]), process=False, profile=True))
    elif sys.argv[1:2] == ["--process-only"]:  # the process pods alone (``--process-only profile``: under cProfile)
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        with tempfile.TemporaryDirectory(dir=shm) as state:
            print(run_child(state, PROCESS_PODS, process=True, profile=sys.argv[2:] == ["profile"]))
    else:
        sys.exit(main())
