"""Benchmark netemu's cluster DNS against dnsmasq with dnsperf: the server, and the path pods use.

    scripts/isolated .venv/bin/python bench/dns.py [--seconds 3] [--rounds 3]

A one-node cluster (loopback backend, in this process, on uvloop, as ``netemu run`` runs it) holds
1,000 Services, so its DNS pod answers 1,000 names (A records, ``svc-N.default.svc.cluster.local``);
dnsmasq holds the same names with the same addresses. dnsperf queries three targets, which take
turns within each of ``--rounds`` rounds:

- ``server``: the DNS pod's own address (netemu's DNS server alone);
- ``ClusterIP``: the kube-dns Service's ClusterIP, the address every pod's resolv.conf names
  (netemu's userspace UDP proxy in front of the same server);
- ``dnsmasq``: the reference, in a process of its own.

Each round measures queries per second at full load (``dnsperf -l N``, 100 outstanding) and the
latency of every query at fixed rates (``-Q 5000`` and ``-Q 20000``, ``-v``, 2 s): p50/p99/p99.9
computed from dnsperf's per-query lines, a lost query counted at the timeout (1 s). Ratios to
dnsmasq are taken per round and their medians printed, with the server CPU per query (this
process, which runs the cluster, and dnsmasq from /proc/<pid>/stat), then the goals of issue 15
with ✓/✗. The servers (this process and dnsmasq) share one CPU and dnsperf gets the others, the
same for every target.

Only 127.x addresses are used. dnsmasq and dnsperf get SIGTERM if this driver dies and are
stopped by pid at the end; the temporary directory is removed.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _tools  # noqa: E402

SERVICES = 1000
DNSMASQ_HOST = "127.53.250.2"
RATES = (5000, 20000)         # queries per second of the latency runs
LATENCY_SECONDS = 2
TIMEOUT = 1.0                 # dnsperf -t in the latency runs; a lost query counts as this
MAX_SECONDS = 10.0
TOOLS = {"dnsperf": "dnsperf", "dnsmasq": "dnsmasq-base"}
# The servers on one CPU, dnsperf on the others, alike for every target: less noise.
CPUS = sorted(os.sched_getaffinity(0))
SERVER_CPUS = set(CPUS[:1])
CLIENT_CPUS = ["taskset", "-c", ",".join(map(str, CPUS[1:]))] if len(CPUS) > 1 and shutil.which("taskset") else []


def services_manifest() -> str:
    return "\n---\n".join(f"""apiVersion: v1
kind: Service
metadata: {{name: svc-{i}}}
spec:
  ports: [{{name: http, port: 80}}]""" for i in range(SERVICES))


def free_port(host: str) -> int:
    """A port free for both UDP and TCP on ``host``."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            u.bind((host, 0))
            port = u.getsockname()[1]
            try:
                t.bind((host, port))
            except OSError:
                continue
            return port
    raise SystemExit(f"no free port on {host}")


async def wait_answering(host: str, port: int, datafile: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        out = await dnsperf(host, port, datafile, ["-n", "1", "-t", "0.5"], 1)
        if re.search(r"Queries completed:\s+[1-9]", out):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{host}:{port} does not answer DNS: {out}")
        await asyncio.sleep(0.1)


async def dnsperf(host: str, port: int, datafile: str, extra: list[str], seconds: float) -> str:
    return await _tools.run_tool([*CLIENT_CPUS, "dnsperf", "-s", host, "-p", str(port), "-d", datafile, *extra],
                                 seconds + 15)


def grab(pattern: str, out: str) -> str:
    match = re.search(pattern, out)
    if match is None:
        raise SystemExit(f"unexpected dnsperf output:\n{out}")
    return match.group(1)


def latencies(out: str) -> dict[str, float]:
    """p50/p99/p99.9 in seconds over every query sent (``-v`` lines ``> RCODE name type latency``;
    lost queries count as the timeout), and the share lost."""
    values = sorted(float(line.rsplit(None, 1)[1]) for line in out.splitlines() if line.startswith("> "))
    lost = int(grab(r"Queries lost:\s+(\d+)", out))
    values += [TIMEOUT] * lost
    if not values:
        raise SystemExit(f"dnsperf reported no queries:\n{out}")
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return {"p50": pick(0.50), "p99": pick(0.99), "p99.9": pick(0.999), "lost": lost / len(values)}


async def measure(targets: dict, cpu_of: dict, datafile: str, seconds: float, rounds: int) -> dict:
    """{"qps": Series, "cpu": ..., f"p99@{rate}": Series, ...} over the rounds."""
    qps, lost = _tools.Series("QPS"), _tools.Series("lost at full load")
    pct = {(rate, q): _tools.Series(f"{q} at {rate} qps") for rate in RATES for q in ("p50", "p99", "p99.9", "lost")}
    order = list(targets)
    for n in range(rounds):
        for name in order:
            host, port = targets[name]
            before = cpu_of[name]()
            out = await dnsperf(host, port, datafile, ["-l", f"{seconds:g}"], seconds)
            completed = int(grab(r"Queries completed:\s+(\d+)", out))
            qps.add(name, float(grab(r"Queries per second:\s+([\d.]+)", out)),
                    (cpu_of[name]() - before) / completed if completed else None)
            lost.add(name, float(grab(r"Queries lost:\s+\d+ \(([\d.]+)%\)", out)) / 100)
            for rate in RATES:
                out = await dnsperf(host, port, datafile, ["-l", str(LATENCY_SECONDS), "-Q", str(rate), "-v",
                                                           "-t", f"{TIMEOUT:g}"], LATENCY_SECONDS)
                for q, value in latencies(out).items():
                    pct[rate, q].add(name, value)
        p99 = pct[RATES[-1], "p99"]
        print(f"  round {n + 1}: " + "  ".join(
            f"{name} {qps.rates[name][-1]:,.0f} qps, p99 at {RATES[-1]:,} {p99.rates[name][-1] * 1e3:.2f} ms"
            for name in targets), flush=True)
        order.reverse()  # alternate who goes first
    return {"qps": qps, "lost": lost, **{f"{q}@{rate}": s for (rate, q), s in pct.items()}}


def report(results: dict, targets: list[str], seconds: float, rounds: int) -> None:
    qps = results["qps"]
    print(f"\ndnsperf, {SERVICES:,} names, medians of {rounds} rounds ({seconds:g} s at full load, "
          f"{LATENCY_SECONDS} s at each fixed rate); servers on CPU {sorted(SERVER_CPUS)}, dnsperf on the others "
          f"({len(CPUS)} CPUs):\n")
    head = "| | QPS (ratio to dnsmasq) | server CPU µs/query | " + " | ".join(
        f"p50 / p99 / p99.9 at {rate // 1000}k qps, ms" for rate in RATES) + " |"
    print(head)
    print("|---|---|---|" + "---|" * len(RATES))
    for name in targets:
        full_lost = results["lost"].median(name)
        cells = [f"{qps.median(name):,.0f} ({qps.ratio(name, 'dnsmasq'):.2f})"
                 + (f" ({full_lost:.2%} lost)" if full_lost else ""), f"{qps.cpu_median(name) * 1e6:.1f}"]
        for rate in RATES:
            p = [results[f"{q}@{rate}"].median(name) * 1e3 for q in ("p50", "p99", "p99.9")]
            lost = results[f"lost@{rate}"].median(name)
            cells.append(" / ".join(f"{v:.3f}" for v in p) + (f" ({lost:.2%} lost)" if lost else ""))
        print(f"| {name} | " + " | ".join(cells) + " |")
    p99 = results[f"p99@{RATES[-1]}"]
    print("\ngoals (issue 15), ratios to dnsmasq per round, medians:")
    for text, series, target, threshold, at_most in (
            ("through the kube-dns ClusterIP: QPS / dnsmasq", qps, "ClusterIP", 1.0, False),
            (f"through the kube-dns ClusterIP: p99 at {RATES[-1]:,} qps / dnsmasq", p99, "ClusterIP", 3.0, True),
            ("the server directly: QPS / dnsmasq", qps, "server", 1.0, False),
            (f"the server directly: p99 at {RATES[-1]:,} qps / dnsmasq", p99, "server", 1.5, True)):
        print("  " + _tools.goal_line(text, series.ratio(target, "dnsmasq"), threshold, at_most=at_most,
                                      spread=series.ratios(target, "dnsmasq")))


async def main(seconds: float, rounds: int) -> None:
    from netemu import Cluster
    _tools.ensure_tools("bench/dns.py", TOOLS)
    if CLIENT_CPUS:
        os.sched_setaffinity(0, SERVER_CPUS)
    tmp = Path(tempfile.mkdtemp(prefix="netemu-bench-dns-"))
    children = []
    try:
        async with Cluster(nodes=1, name="bench-dns", kube_api=False,
                           state_dir=tmp / "state") as cluster:
            began = time.monotonic()
            await cluster.apply(services_manifest())
            await cluster.wait_ready(timeout=60)
            print(f"{SERVICES:,} Services applied and DNS ready in {time.monotonic() - began:.1f} s", flush=True)
            records = [(f"svc-{i}.default.svc.{cluster.config.cluster_domain}", cluster.service_ip(f"svc-{i}"))
                       for i in range(SERVICES)]
            datafile = str(tmp / "queries.txt")
            Path(datafile).write_text("".join(f"{name} A\n" for name, _ in records))
            dnsmasq_port = free_port(DNSMASQ_HOST)
            conf = tmp / "dnsmasq.conf"
            conf.write_text("\n".join(
                ["no-resolv", "no-hosts", "bind-interfaces", f"listen-address={DNSMASQ_HOST}", f"port={dnsmasq_port}",
                 "cache-size=1000", *(f"host-record={name},{ip}" for name, ip in records)]) + "\n")
            dnsmasq = _tools.start(["dnsmasq", "--no-daemon", "-C", str(conf)])
            children.append(dnsmasq)
            if CLIENT_CPUS:
                os.sched_setaffinity(dnsmasq.pid, SERVER_CPUS)
            dns_pod = next(p for p in cluster.pods("kube-system") if p.metadata.labels.get("k8s-app") == "kube-dns")
            targets = {"server": (dns_pod.status.pod_ip, cluster.dns_port),
                       "ClusterIP": (cluster.config.dns_ip, cluster.dns_port),
                       "dnsmasq": (DNSMASQ_HOST, dnsmasq_port)}
            for host, port in targets.values():
                await wait_answering(host, port, datafile)
                await dnsperf(host, port, datafile, ["-l", "1"], 1)  # warm-up (fills netemu's answer cache)
            netemu_cpu = lambda: _tools.cluster_cpu({dnsmasq.pid}, frozenset({"dnsperf", "taskset"}))  # noqa: E731
            cpu_of = {"server": netemu_cpu, "ClusterIP": netemu_cpu, "dnsmasq": lambda: _tools.process_cpu(dnsmasq.pid)}
            print("targets: " + ", ".join(f"{name} {host}:{port}" for name, (host, port) in targets.items()),
                  flush=True)
            results = await measure(targets, cpu_of, datafile, seconds, rounds)
        report(results, list(targets), seconds, rounds)
    finally:
        _tools.stop(children)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one full-load dnsperf run (max 10)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import uvloop
    uvloop.run(main(min(args.seconds, MAX_SECONDS), max(1, args.rounds)))
