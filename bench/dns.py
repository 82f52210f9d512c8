"""DNS benchmark: netemu's cluster DNS against dnsmasq, with dnsperf, on 127.x only.

Both servers hold the same 100 service names (A records); dnsperf replays them for a few seconds
against each, alternating, for a few rounds (each dnsperf run at most 10 s). Reported per server:
the best queries per second, dnsperf's average latency at full load, and latency percentiles
from a separate run at a fixed moderate rate (dnsperf -v). The goal: netemu at least 0.9 of
dnsmasq's QPS (the cache of wire answers is what makes that possible).

netemu's server runs in this process on uvloop; dnsmasq runs as a child (killed by pid).
Tools missing are installed with scripts/ensure-tools when running as root. Not a test: run
``python bench/dns.py`` (``make bench``).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import uvloop
from dnslib import DNSRecord

from netemu.api.objects import ObjectMeta, Service, ServicePort, ServiceSpec
from netemu.dns import ClusterDNS, DNSConfig

ROOT = Path(__file__).resolve().parent.parent
NETEMU_HOST = "127.53.250.1"
DNSMASQ_HOST = "127.53.250.2"
SERVICES = 100
GOAL = 0.9
LATENCY_RATE = 20000  # queries per second for the percentile run
# Servers on one CPU, dnsperf on the others, the same for both servers: less noise.
CPUS = sorted(os.sched_getaffinity(0))
SERVER_CPUS = set(CPUS[:1])
CLIENT_CPU = ["taskset", "-c", ",".join(map(str, CPUS[1:]))] if len(CPUS) > 1 and shutil.which("taskset") else []


def names() -> list[tuple[str, str]]:
    return [(f"svc-{i}.default.svc.cluster.local", f"10.96.{i // 250}.{i % 250 + 1}") for i in range(SERVICES)]


def ensure_tools() -> None:
    if shutil.which("dnsperf") and shutil.which("dnsmasq"):
        return
    subprocess.run([str(ROOT / "scripts" / "ensure-tools"), "dnsperf:dnsperf", "dnsmasq:dnsmasq-base"], check=False)
    missing = [t for t in ("dnsperf", "dnsmasq") if not shutil.which(t)]
    if missing:
        sys.exit(f"bench/dns.py: missing {', '.join(missing)} (Debian packages dnsperf, dnsmasq-base)")


def free_port(host: str) -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            u.bind((host, 0))
            port = u.getsockname()[1]
            try:
                t.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on {host}")


async def wait_answering(host: str, port: int, name: str, deadline: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = time.monotonic() + deadline
    query = DNSRecord.question(name).pack()
    while time.monotonic() < end:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            try:
                await loop.sock_connect(s, (host, port))
                await loop.sock_sendall(s, query)
                await asyncio.wait_for(loop.sock_recv(s, 4096), 0.2)
                return
            except (TimeoutError, OSError):
                await asyncio.sleep(0.05)
    raise RuntimeError(f"{host}:{port} does not answer")


async def dnsperf(host: str, port: int, datafile: str, seconds: float, extra: list[str]) -> str:
    """One dnsperf run; its output goes to a file, not a pipe this process would have to drain
    while it serves (netemu's server shares this process)."""
    with tempfile.TemporaryFile() as out:
        proc = await asyncio.create_subprocess_exec(
            *CLIENT_CPU, "dnsperf", "-s", host, "-p", str(port), "-d", datafile, "-l", str(seconds), *extra,
            stdout=out, stderr=subprocess.STDOUT)
        await asyncio.wait_for(proc.wait(), seconds + 10)
        out.seek(0)
        return out.read().decode(errors="replace")


@dataclass
class Run:
    qps: float
    completed: int
    avg_latency: float
    lost: float
    cpu: float = 0.0  # server CPU seconds (user + system) during the run

    @property
    def cpu_us_per_query(self) -> float:
        return self.cpu / self.completed * 1e6 if self.completed else 0.0


def parse_throughput(out: str) -> Run:
    def grab(pattern: str) -> str:
        match = re.search(pattern, out)
        if match is None:
            raise RuntimeError(f"unexpected dnsperf output:\n{out}")
        return match.group(1)
    return Run(qps=float(grab(r"Queries per second:\s+([\d.]+)")),
               completed=int(grab(r"Queries completed:\s+(\d+)")),
               avg_latency=float(grab(r"Average Latency \(s\):\s+([\d.]+)")),
               lost=float(grab(r"Queries lost:\s+\d+ \(([\d.]+)%\)")))


def percentiles(out: str) -> dict[str, float]:
    lat = sorted(float(line.rsplit(None, 1)[1]) for line in out.splitlines() if line.startswith("> "))
    if not lat:
        return {}
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "p99.9": pick(0.999)}


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU of this process (pid None: netemu's server runs here) or of ``pid``."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(seconds: float, rounds: int) -> int:
    ensure_tools()
    if CLIENT_CPU:
        os.sched_setaffinity(0, SERVER_CPUS)
    records = names()
    services = [Service(metadata=ObjectMeta(name=name.split(".")[0], namespace="default"),
                        spec=ServiceSpec(cluster_ip=ip, cluster_ips=(ip,), ports=(ServicePort(name="http", port=80),)))
                for name, ip in records]
    server = ClusterDNS(DNSConfig(dns_ip="10.96.0.10", reverse_cidrs=("10.96.0.0/12",)))
    for svc in services:
        server.on_service(None, svc)
    await server.start(host=NETEMU_HOST, port=0)

    tmp = tempfile.mkdtemp(prefix="netemu-bench-dns-")
    datafile = os.path.join(tmp, "queries.txt")
    Path(datafile).write_text("".join(f"{name} A\n" for name, _ in records))
    conf = os.path.join(tmp, "dnsmasq.conf")
    dnsmasq_port = free_port(DNSMASQ_HOST)
    Path(conf).write_text("\n".join(
        ["no-resolv", "no-hosts", "bind-interfaces", f"listen-address={DNSMASQ_HOST}", f"port={dnsmasq_port}",
         "cache-size=1000", *(f"host-record={name},{ip}" for name, ip in records)]) + "\n")
    dnsmasq = await asyncio.create_subprocess_exec("dnsmasq", "--no-daemon", "-C", conf,
                                                   stdout=asyncio.subprocess.DEVNULL,
                                                   stderr=asyncio.subprocess.DEVNULL)
    if CLIENT_CPU:
        os.sched_setaffinity(dnsmasq.pid, SERVER_CPUS)
    targets = {"netemu": (NETEMU_HOST, server.port, None), "dnsmasq": (DNSMASQ_HOST, dnsmasq_port, dnsmasq.pid)}
    results: dict[str, list[Run]] = {k: [] for k in targets}
    latency: dict[str, dict[str, float]] = {}
    try:
        for host, port, _ in targets.values():
            await wait_answering(host, port, records[0][0])
        for host, port, _ in targets.values():  # warm up (fills netemu's cache)
            await dnsperf(host, port, datafile, 1, [])
        order = list(targets)
        for _ in range(rounds):
            for label in order:
                host, port, pid = targets[label]
                before = cpu_seconds(pid)
                result = parse_throughput(await dnsperf(host, port, datafile, seconds, []))
                result.cpu = cpu_seconds(pid) - before
                results[label].append(result)
            order.reverse()  # alternate who goes first
        for label, (host, port, _) in targets.items():
            latency[label] = percentiles(await dnsperf(host, port, datafile, 2, ["-Q", str(LATENCY_RATE), "-v"]))
    finally:
        if dnsmasq.returncode is None:
            dnsmasq.terminate()
            await dnsmasq.wait()
        await server.close()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"dnsperf, {SERVICES} names, {rounds} rounds of {seconds:g} s per server, "
          f"servers on CPU {sorted(SERVER_CPUS)}, dnsperf on the others ({len(CPUS)} CPUs)")
    for label, runs in results.items():
        qps = [r.qps for r in runs]
        pct = "  ".join(f"{k} {v * 1e3:.3f} ms" for k, v in latency.get(label, {}).items())
        print(f"  {label:8} median {statistics.median(qps):>9,.0f} qps  best {max(qps):>9,.0f} qps  "
              f"server CPU {statistics.median(r.cpu_us_per_query for r in runs):.1f} us/query  "
              f"avg latency at full load {statistics.median(r.avg_latency for r in runs) * 1e3:.3f} ms  "
              f"lost {max(r.lost for r in runs):.2f}%")
        print(f"  {'':8} latency at {LATENCY_RATE:,} qps: {pct}")
    median = {label: statistics.median(r.qps for r in runs) for label, runs in results.items()}
    best = {label: max(r.qps for r in runs) for label, runs in results.items()}
    ratio = median["netemu"] / median["dnsmasq"] if median["dnsmasq"] else 0.0
    verdict = "meets" if ratio >= GOAL else "below"
    print(f"  netemu / dnsmasq = {ratio:.2f} by median qps, {best['netemu'] / best['dnsmasq']:.2f} by best "
          f"({verdict} the goal of {GOAL})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one dnsperf run (max 10)")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    return uvloop.run(run(min(args.seconds, 10.0), max(1, args.rounds)))


if __name__ == "__main__":
    sys.exit(main())
