"""What the benchmarks share: child processes that die with the driver, CPU accounting from /proc,
waiting for a listener, medians and ratios per round, and the goal lines ``make bench`` prints.

Not a benchmark itself: ``bench/proxy.py`` and ``bench/dns.py`` import it (``bench/`` is on
``sys.path`` when they run as scripts).
"""
from __future__ import annotations

import asyncio
import re
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- tools and children

def ensure_tools(script: str, pairs: dict[str, str]) -> None:
    """Install the Debian packages of missing commands (``scripts/ensure-tools``, root only);
    exit with one line naming what is still missing."""
    if all(shutil.which(cmd) for cmd in pairs):
        return
    subprocess.run([str(ROOT / "scripts" / "ensure-tools"), *(f"{c}:{p}" for c, p in pairs.items())], check=False)
    missing = sorted({pkg for cmd, pkg in pairs.items() if not shutil.which(cmd)})
    if missing:
        sys.exit(f"{script}: missing tools; install the Debian packages {' '.join(missing)}")


def die_with_parent() -> None:
    """In a child before exec: lead a session of its own, and get SIGTERM when the driver dies,
    however it dies (PR_SET_PDEATHSIG).

    Its own session, as a program started from another terminal or by a service manager has: with
    the kernel's autogroup scheduling (``/proc/sys/kernel/sched_autogroup_enabled``, on by
    default) the CPU is shared fairly between sessions first, so a load generator left in the
    driver's session would share one fair share with the cluster it measures (whose process is the
    driver) and with the reference server (HAProxy, dnsmasq), and take its CPU from them."""
    import ctypes
    os.setsid()
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)


def start(argv: list[str], **kwargs) -> subprocess.Popen:
    """A long-running child (a server, a relay) that ends with the driver."""
    kwargs.setdefault("stdout", subprocess.DEVNULL)
    kwargs.setdefault("stderr", subprocess.DEVNULL)
    return subprocess.Popen(argv, preexec_fn=die_with_parent, **kwargs)


def stop(children: list[subprocess.Popen]) -> None:
    """SIGTERM each child still running, by pid; SIGKILL any that is still there after 5 s."""
    for proc in children:
        if proc.poll() is None:
            proc.terminate()
    for proc in children:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def run_tool(argv: list[str], limit: float) -> str:
    """Run a load generator to its end (at most ``limit`` seconds, then it is killed) and return
    its standard output and error. The output goes to a file, not a pipe, so that a driver busy
    serving (the cluster runs in its event loop) never slows the tool down."""
    import tempfile
    with tempfile.TemporaryFile() as out:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=out, stderr=subprocess.STDOUT,
                                                    preexec_fn=die_with_parent)
        try:
            await asyncio.wait_for(proc.wait(), limit)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise SystemExit(f"{argv[0]} did not finish within {limit:g} s: {' '.join(argv)}") from None
        out.seek(0)
        return out.read().decode(errors="replace")


async def wait_listening(ip: str, port: int, timeout: float = 10.0) -> None:
    """Poll until a TCP listener accepts on ip:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((ip, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"nothing listens on {ip}:{port} after {timeout:g} s") from None
            await asyncio.sleep(0.05)


# ---------------------------------------------------------------------------- CPU time

def process_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads), from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def cluster_cpu(exclude: set[int], foreign: frozenset[str]) -> float:
    """CPU seconds of this process (it runs the cluster: control plane, proxy, DNS) plus any helper
    processes it started (e.g. proxy workers): all its descendants except the subtrees of
    ``exclude`` (the bench's own tools) and of programs named in ``foreign`` (the pods')."""
    times = os.times()
    total = times.user + times.system
    tree, todo = _children(), [os.getpid()]
    while todo:
        for pid in tree.get(todo.pop(), []):
            if pid in exclude:
                continue
            try:
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except FileNotFoundError:
                continue
            if name in foreign:
                continue
            total += process_cpu(pid)
            todo.append(pid)
    return total


# ---------------------------------------------------------------------------- rounds and goals

@dataclass
class Series:
    """One measurement (e.g. bulk Gbit/s) of several targets over rounds; the targets take turns
    within a round, so ratios are taken per round and then their median."""
    label: str
    rates: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)  # CPU seconds per unit of work

    def add(self, target: str, rate: float, cpu_per_unit: float | None = None) -> None:
        self.rates.setdefault(target, []).append(rate)
        if cpu_per_unit is not None:
            self.cpu.setdefault(target, []).append(cpu_per_unit)

    def median(self, target: str) -> float | None:
        values = self.rates.get(target)
        return statistics.median(values) if values else None

    def ratios(self, target: str, reference: str) -> list[float]:
        return [a / b for a, b in zip(self.rates.get(target, []), self.rates.get(reference, [])) if b]

    def ratio(self, target: str, reference: str) -> float | None:
        values = self.ratios(target, reference)
        return statistics.median(values) if values else None

    def cpu_median(self, target: str) -> float | None:
        values = self.cpu.get(target)
        return statistics.median(values) if values else None


def goal_line(text: str, ratio: float | None, threshold: float, *, at_most: bool = False,
              spread: list[float] | None = None) -> str:
    """``✓ text: 0.97 (0.95-0.99 over rounds; goal ≥ 0.95)``: the line ``make bench`` shows per goal."""
    if ratio is None:
        return f"? {text}: not measured"
    met = ratio <= threshold if at_most else ratio >= threshold
    # two decimals, three where two would round a miss up to the goal (0.949 is not 0.95)
    digits = 3 if f"{ratio:.2f}" == f"{threshold:.2f}" else 2
    rounds = f"{min(spread):.2f}-{max(spread):.2f} over rounds; " if spread else ""
    return (f"{'✓' if met else '✗'} {text}: {ratio:.{digits}f} ({rounds}goal {'≤' if at_most else '≥'} "
            f"{threshold:g})")


# ---------------------------------------------------------------------------- servers and load generators

_NGINX_CONF = """daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log crit;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    keepalive_requests 10000000;
    keepalive_timeout 60s;
    server {{
{listens}        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def nginx_conf(directory: Path, listens: list[str]) -> str:
    """nginx-light's configuration for the benches: one worker, a keep-alive "ok" on each of
    ``listens`` (``8080``, ``@POD_IP@:8080``), its files in ``directory``."""
    return _NGINX_CONF.format(dir=directory, listens="".join(f"        listen {where} backlog=4096;\n"
                                                             for where in listens))


async def iperf3(host: str, port: int, seconds: float, enter: list[str] = ()) -> tuple[float, float]:
    """(Gbit/s received, GB received) of one ``iperf3 -c -P1`` run (from the namespace ``enter`` enters)."""
    out = await run_tool([*enter, "iperf3", "-c", host, "-p", str(port), "-P1", "-t", f"{seconds:g}", "-J"],
                         seconds + 15)
    try:
        received = json.loads(out)["end"]["sum_received"]
    except (ValueError, KeyError) as exc:
        raise SystemExit(f"iperf3 against {host}:{port} gave no result ({exc}): {out[-500:]}") from None
    return received["bits_per_second"] / 1e9, received["bytes"] / 1e9


async def wrk(host: str, port: int, seconds: float, close: bool, enter: list[str] = ()) -> tuple[float, float]:
    """(requests/s, thousands of requests) of one ``wrk -t2 -c50`` run (from the namespace ``enter``
    enters); every request on a new connection if ``close``."""
    argv = ["wrk", "-t2", "-c50", f"-d{max(1, round(seconds))}s", f"http://{host}:{port}/"]
    if close:
        argv[1:1] = ["-H", "Connection: close"]
    out = await run_tool([*enter, *argv], seconds + 15)
    rate, total = re.search(r"Requests/sec:\s*([\d.]+)", out), re.search(r"(\d+) requests in", out)
    if rate is None or total is None:
        raise SystemExit(f"wrk against {host}:{port} printed no rate: {out}")
    problems = [line.strip() for line in out.splitlines() if "Non-2xx" in line or "Socket errors" in line]
    if problems:
        print(f"  note: wrk against {host}:{port}: {' / '.join(problems)}", flush=True)
    return float(rate.group(1)), int(total.group(1)) / 1000
