"""netns backend benchmark: bring-up time, pod-to-pod TCP throughput against a bare veth pair, and
the service path (ClusterIP against direct, proxyMode nftables and userspace).

From the checkout, as ``make bench`` runs it:

    ./scripts/isolated .venv/bin/python bench/netns.py [--seconds 3] [--rounds N] [--only bringup|throughput|service]

Only ever inside scripts/isolated (a network namespace holding nothing but ``lo``): the script
refuses to run where the namespace has a route through another interface.

Bring-up: 3 nodes / 100 pods and 10 nodes / 500 pods on ``backend="netns"``, as Deployments of
the built-in ``pause`` image (2 replicas each, no Services), each size in a fresh process, timed
from nothing to every pod Ready; teardown time and peak memory beside. Goals: under 2 s and
under 10 s on a 2-core machine.

Throughput: iperf3 (``-t 3 -J``, one TCP stream) between two ``pause`` pods on the same node,
between pods on two nodes (across the underlay), and, as the reference measured in the same run,
between two bare namespaces joined by a veth pair that this script makes
(``netemu-bench-<pid>-a``/``-b``, 10.250.0.0/30) and deletes at the end, Ctrl-C included. The
three take turns within a round; the table shows medians over ``--rounds`` and the ratios to
the veth pair. The iperf3 processes are entered into the namespaces with ``ip netns exec`` (the
cluster's ``fabric.process_prefix``) and stopped by pid. The throughput cluster runs in this
process, so the underlay wire between its nodes shares this event loop, as under ``netemu run``.

Service path (``bench/_netns_service.py``): iperf3 and nginx-light as a pod on node-1, a ClusterIP
Service in front, iperf3 -P1 / wrk -t2 -c50 keep-alive / wrk with ``Connection: close`` from a
client pod on the same node and one on the other node, direct to the pod IP against through the
ClusterIP, targets taking turns, ratios per round, medians (``--rounds``, 5 unless given: with
3, a goal's median moved by more than the DNAT costs from one run to the next); in
``proxyMode: nftables`` and, as the comparison row, ``userspace``; then 20 endpoint changes and how
long each took to reach every node's kernel. Each goal of issue 15 with ✓/✗.

Not a test: no pass/fail (only a failed bring-up makes the exit status 1). About 7 minutes in all
on a 2-core machine.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _netns_service  # noqa: E402
import _tools  # noqa: E402

SIZES = [(3, 50), (10, 250)]  # (nodes, deployments); each deployment has 2 pause pods
GOALS = {(3, 50): 2.0, (10, 250): 10.0}
BRINGUP_TIMEOUT = 40.0        # per size, inside the child; the parent allows some more for teardown
MAX_SECONDS = 5.0             # per iperf3 run
IPERF_PORT = 5201
REF_SERVER, REF_CLIENT, REF_PREFIX = "10.250.0.1", "10.250.0.2", 30
PAUSE_IMAGE = "registry.k8s.io/pause:3.9"
TOOLS = ("iperf3", "ip", "ss")


# ---------------------------------------------------------------------------- bring-up (child)

def manifests(deployments: int) -> str:
    docs = []
    for i in range(deployments):
        name = f"pause-{i}"
        docs.append(f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - {{name: pause, image: "{PAUSE_IMAGE}"}}""")
    return "\n---\n".join(docs)


async def bringup(nodes: int, deployments: int, cluster_name: str) -> dict:
    from netemu import Cluster
    text = manifests(deployments)
    t0 = time.perf_counter()
    async with Cluster(nodes=nodes, name=cluster_name, backend="netns") as cluster:
        t_up = time.perf_counter() - t0
        await cluster.apply(text)
        await cluster.wait_ready(timeout=BRINGUP_TIMEOUT)
        t_ready = time.perf_counter() - t0
        pods = len(cluster.pods(None))
        t_down = time.perf_counter()
    t_down = time.perf_counter() - t_down
    return {"nodes": nodes, "pods": pods, "cluster_up_s": t_up, "all_ready_s": t_ready, "down_s": t_down,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def bringup_child(nodes: int, deployments: int, cluster_name: str) -> None:
    import uvloop
    print(json.dumps(uvloop.run(bringup(nodes, deployments, cluster_name))), flush=True)


def run_bringup_child(nodes: int, deployments: int, cluster_name: str, env: dict[str, str]) -> dict | str:
    """The result of one size, or why there is none. The child tears its cluster down itself,
    also when it gives up (Cancelled via SIGINT); SIGKILL only as the last resort."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(nodes), str(deployments), cluster_name],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = proc.communicate(timeout=BRINGUP_TIMEOUT + 30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        return "timed out"
    except KeyboardInterrupt:  # the child got the SIGINT too: let it clean up
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        raise
    if proc.returncode != 0:
        return f"failed (status {proc.returncode}): {err.strip().splitlines()[-1] if err.strip() else ''}"
    return json.loads(out.strip().splitlines()[-1])


def collect_leftovers(state_dir: Path) -> None:
    """Backstop: namespaces and processes of a child that died before its teardown."""
    from netemu.fabric.netns.namespaces import collect_cluster_garbage
    from netemu.state import gc_all
    removed = gc_all(state_dir, collect_cluster_garbage)
    if removed:
        print(f"  (removed what a dead child left: {len(removed)} objects)", flush=True)


def report_bringup(state_dir: Path) -> int:
    print("bring-up on netns: Deployments of pause, 2 pods each, + the cluster DNS pod (each size in a fresh process)")
    print(f"{'nodes':>5} {'pods':>5} {'up (s)':>8} {'all Ready (s)':>14} {'goal (s)':>9} {'down (s)':>9} "
          f"{'peak RSS (MiB)':>15}", flush=True)
    failed = 0
    env = {**os.environ, "NETEMU_STATE_DIR": str(state_dir)}
    for nodes, deployments in SIZES:
        goal = GOALS[(nodes, deployments)]
        try:
            r = run_bringup_child(nodes, deployments, f"bench{os.getpid()}-{nodes}", env)
        finally:
            collect_leftovers(state_dir)
        if isinstance(r, str):
            print(f"{nodes:>5} {deployments * 2:>5} {'':>8} {r:>14} {goal:>9.1f}", flush=True)
            failed += 1
            continue
        mark = "ok" if r["all_ready_s"] < goal else "SLOW"
        print(f"{r['nodes']:>5} {r['pods']:>5} {r['cluster_up_s']:>8.3f} {r['all_ready_s']:>14.3f} {goal:>9.1f} "
              f"{r['down_s']:>9.3f} {r['peak_rss_mib']:>15.1f}  {mark}", flush=True)
    return failed


# ---------------------------------------------------------------------------- iperf3

async def wait_listening(prefix: list[str], port: int) -> None:
    deadline = time.monotonic() + 5
    while True:
        proc = await asyncio.create_subprocess_exec(*prefix, "ss", "-Hltn", f"sport = :{port}",
                                                    stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        if out.strip():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"iperf3 server not listening on port {port} after 5 s")
        await asyncio.sleep(0.02)


async def iperf(server: list[str], client: list[str], server_ip: str, seconds: float) -> tuple[float, int]:
    """One single-stream TCP run from ``client``'s namespace to ``server``'s (argv prefixes that
    enter them): received Gbit/s and the sender's retransmits."""
    server_proc = await asyncio.create_subprocess_exec(
        *server, "iperf3", "-s", "-1", "-B", server_ip, "-p", str(IPERF_PORT),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, preexec_fn=_tools.die_with_parent)
    client_proc = None
    try:
        await wait_listening(server, IPERF_PORT)
        client_proc = await asyncio.create_subprocess_exec(
            *client, "iperf3", "-c", server_ip, "-p", str(IPERF_PORT), "-t", f"{seconds:g}", "-J",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, preexec_fn=_tools.die_with_parent)
        out, err = await asyncio.wait_for(client_proc.communicate(), seconds + 10)
        result = json.loads(out or b"{}")
        if client_proc.returncode != 0 or "error" in result:
            raise RuntimeError(f"iperf3 client: {result.get('error') or err.decode(errors='replace').strip()}")
        await asyncio.wait_for(server_proc.wait(), 5)
        end = result["end"]
        return end["sum_received"]["bits_per_second"] / 1e9, int(end["sum_sent"].get("retransmits", 0))
    finally:
        for proc in (client_proc, server_proc):
            if proc is not None and proc.returncode is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except asyncio.TimeoutError:
                    os.kill(proc.pid, signal.SIGKILL)
                    await proc.wait()


# ---------------------------------------------------------------------------- the reference veth pair

def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def make_veth_pair(a: str, b: str) -> None:
    """Two bare namespaces joined by a veth pair. The two ends get distinct ifindexes: a veth
    whose index equals its peer's gets its carrier late (see netemu/fabric/netns/fabric.py)."""
    ip("netns", "add", a)
    ip("netns", "add", b)
    ip("-n", a, "link", "add", "veth-a", "index", "10", "type", "veth", "peer", "name", "veth-b", "index", "11",
       "netns", b)
    for ns, dev, addr in ((a, "veth-a", REF_SERVER), (b, "veth-b", REF_CLIENT)):
        ip("-n", ns, "addr", "add", f"{addr}/{REF_PREFIX}", "dev", dev)
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "link", "set", dev, "up")
    deadline = time.monotonic() + 5
    while True:
        states = [json.loads(subprocess.run(["ip", "-n", ns, "-j", "link", "show", dev], capture_output=True,
                                            text=True, timeout=10).stdout or "[{}]")[0].get("operstate")
                  for ns, dev in ((a, "veth-a"), (b, "veth-b"))]
        if states == ["UP", "UP"]:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"veth pair not up after 5 s: {states}")
        time.sleep(0.02)


def delete_veth_pair(names: list[str]) -> None:
    for name in names:
        if os.path.exists(f"/run/netns/{name}"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


# ---------------------------------------------------------------------------- throughput (this process)

def throughput_pods() -> str:
    docs = []
    for name, node in (("iperf-server", "node-1"), ("iperf-local", "node-1"), ("iperf-remote", "node-2")):
        docs.append(f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node}
  containers:
  - {{name: pause, image: "{PAUSE_IMAGE}"}}""")
    return "\n---\n".join(docs)


async def throughput(seconds: float, rounds: int, reference: list[str]) -> None:
    from netemu import Cluster
    async with Cluster(nodes=2, name=f"bench{os.getpid()}-tput", backend="netns") as cluster:
        await cluster.apply(throughput_pods())
        await cluster.wait_ready(timeout=30)

        def enter(pod: str) -> list[str]:
            return cluster.fabric.process_prefix(cluster.get("Pod", pod).metadata.uid)

        server_ip = cluster.pod_ip("iperf-server")
        ref_a, ref_b = (["ip", "netns", "exec", name] for name in reference)
        runs = {"veth": lambda: iperf(ref_a, ref_b, REF_SERVER, seconds),
                "same node": lambda: iperf(enter("iperf-server"), enter("iperf-local"), server_ip, seconds),
                "across nodes": lambda: iperf(enter("iperf-server"), enter("iperf-remote"), server_ip, seconds)}
        labels = {"veth": "veth pair, bare namespaces (reference)", "same node": "pod to pod, same node",
                  "across nodes": "pod to pod, across the underlay"}
        rates: dict[str, list[float]] = {name: [] for name in runs}
        retransmits: dict[str, list[int]] = {name: [] for name in runs}
        for _ in range(rounds):
            for name, run in runs.items():
                rate, retrans = await run()
                rates[name].append(rate)
                retransmits[name].append(retrans)
        print(f"\nTCP throughput, iperf3 -t {seconds:g}, one stream, median of {rounds} round(s)")
        for name, label in labels.items():
            spread = f"({min(rates[name]):.2f}-{max(rates[name]):.2f})" if rounds > 1 else ""
            print(f"{label:42} {statistics.median(rates[name]):>7.2f} Gbit/s {spread:>13}"
                  f"   (sender retransmits {statistics.median(retransmits[name]):.0f})")
        ref = statistics.median(rates["veth"])
        for name, label in (("same node", "same node / veth pair"), ("across nodes", "across nodes / veth pair")):
            ratios = [r / v for r, v in zip(rates[name], rates["veth"])]
            spread = f"({min(ratios):.2f}-{max(ratios):.2f})" if rounds > 1 else ""
            print(f"{label:42} {statistics.median(rates[name]) / ref:>7.2f}        {spread:>13}".rstrip())


def report_throughput(seconds: float, rounds: int) -> None:
    import uvloop
    reference = [f"netemu-bench-{os.getpid()}-a", f"netemu-bench-{os.getpid()}-b"]
    try:
        make_veth_pair(*reference)
        uvloop.run(throughput(seconds, rounds, reference))
    finally:
        delete_veth_pair(reference)


# ---------------------------------------------------------------------------- the service path

def report_service_path(seconds: float, rounds: int) -> None:
    import uvloop
    _tools.ensure_tools("bench/netns.py", _netns_service.TOOLS)
    with tempfile.TemporaryDirectory(prefix="netemu-bench-service-") as directory:
        uvloop.run(_netns_service.service_path(seconds, rounds, Path(directory)))


# ---------------------------------------------------------------------------- driver

def refuse_outside_isolation() -> None:
    from netemu.fabric import routes_outside_loopback
    outside = routes_outside_loopback()
    if outside:
        sys.exit(f"bench/netns.py: this network namespace has routes via {', '.join(sorted(set(outside))[:3])}; "
                 "run it only inside an isolated namespace, from the checkout: ./scripts/isolated "
                 ".venv/bin/python bench/netns.py")
    if os.geteuid() != 0:
        sys.exit("bench/netns.py: the netns backend needs root")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        sys.exit(f"bench/netns.py: missing {', '.join(missing)} (Debian packages iperf3, iproute2)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement (at most 5)")
    parser.add_argument("--rounds", type=int, help="times each throughput is measured (default: 1 for the "
                        "veth comparison, 5 for the service path)")
    parser.add_argument("--only", choices=("bringup", "throughput", "service"), help="run one part")
    options = parser.parse_args()
    refuse_outside_isolation()
    seconds = min(max(options.seconds, 1.0), MAX_SECONDS)
    failed = 0
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(dir=shm, prefix="netemu-bench-netns-") as state:
        os.environ["NETEMU_STATE_DIR"] = state  # the throughput cluster's, in this process
        try:
            if options.only in (None, "bringup"):
                failed += report_bringup(Path(state))
            if options.only in (None, "throughput"):
                report_throughput(seconds, max(1, options.rounds or 1))
            if options.only in (None, "service"):
                report_service_path(seconds, max(1, options.rounds or 5))
        finally:
            collect_leftovers(Path(state))
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        refuse_outside_isolation()
        bringup_child(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        try:
            sys.exit(main())
        except KeyboardInterrupt:
            sys.exit("bench/netns.py: interrupted (everything it made is removed)")
