"""Benchmark the userspace service proxy against a direct connection and HAProxy (``mode tcp``).

    .venv/bin/python bench/proxy.py [--seconds 2] [--rounds 3]     (or inside scripts/isolated)

Measures, each for a few seconds (never more than 5): bulk upload throughput, new connections
per second (connect, one byte each way, close; 16 clients), and keep-alive HTTP requests per
second with wrk (32 connections). Targets: the pod directly, the pod through the proxy's
ClusterIP (uvloop, one thread, as netemu runs it), and through HAProxy 2.x with one thread
(``apt-get install haproxy wrk`` if missing); for bulk also through a bare uvloop relay (the
smallest relay there is, in a process of its own): the ceiling for any userspace proxy on this
machine in this run, so ``proxy/direct`` can be read against ``bare/direct``. Each measurement is taken ``--rounds`` times, the
targets taking turns within a round so that a burst of other load on the machine hits them
alike; the table shows medians, and the range of proxy/direct over the rounds. It prints the
rates, the ratios, and the CPU time the proxy and HAProxy spent per unit of work: the fairer
figure, since the load generators and the pod share the same few cores (on a 2-core machine
a third busy process costs the other two their cores, so no relay reaches direct's rate).
Only 127.x addresses are used; the pod, the load generators
and HAProxy are child processes, stopped by pid at the end (and on their own should this
driver die).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POD_IP = "127.244.250.5"
CLUSTER_IP, HAPROXY_IP, NODE_IP, BARE_IP = "127.96.250.1", "127.96.250.2", "127.10.250.1", "127.96.250.3"
SINK, ECHO, HTTP = 9001, 9002, 9003
MAX_SECONDS = 5.0
HTTP_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


# ---------------------------------------------------------------------------- the pod (child)

class Sink(asyncio.Protocol):
    """Counts what it receives; at EOF answers with the count."""

    def connection_made(self, transport):
        self.transport, self.total = transport, 0

    def data_received(self, data):
        self.total += len(data)

    def eof_received(self):
        self.transport.write(str(self.total).encode())
        self.transport.close()


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class Http(asyncio.Protocol):
    """Answers each request (counted by its blank line) with a fixed keep-alive response."""

    def connection_made(self, transport):
        self.transport, self.tail = transport, b""

    def data_received(self, data):
        data = self.tail + data
        n = data.count(b"\r\n\r\n")
        self.tail = data[data.rfind(b"\r\n\r\n") + 4:] if n else data
        if n:
            self.transport.write(HTTP_RESPONSE * n)


async def pod_main() -> None:
    loop = asyncio.get_running_loop()
    for port, proto in ((SINK, Sink), (ECHO, Echo), (HTTP, Http)):
        await loop.create_server(proto, POD_IP, port, backlog=4096)
    print("ready", flush=True)
    await asyncio.Event().wait()


# ---------------------------------------------------------------------------- a bare relay (child)

class _Pipe(asyncio.Protocol):
    """One side of the bare relay: what it reads, the other side writes; backpressure by pausing
    the reader while the other side's buffer is full. The client side buffers until the upstream
    connection is open."""

    def __init__(self, peer: "_Pipe | None" = None):
        self.peer, self.transport, self.pending, self.eof = peer, None, [], False

    def connection_made(self, transport):
        self.transport = transport
        if self.peer is None:  # the client side: open the upstream
            asyncio.get_running_loop().create_task(self._connect())
        else:
            self.peer.peer = self
            for data in self.peer.pending:
                transport.write(data)
            if self.peer.eof and not transport.is_closing():
                transport.write_eof()

    async def _connect(self):
        try:
            await asyncio.get_running_loop().create_connection(lambda: _Pipe(self), POD_IP, self.port)
        except OSError:
            self.transport.close()

    def data_received(self, data):
        if self.peer is None or self.peer.transport is None:
            self.pending.append(data)
        elif not self.peer.transport.is_closing():
            self.peer.transport.write(data)

    def eof_received(self):
        if self.peer is None or self.peer.transport is None:
            self.eof = True
        elif not self.peer.transport.is_closing():
            self.peer.transport.write_eof()
        return True

    def pause_writing(self):
        if self.peer is not None and not self.peer.transport.is_closing():
            self.peer.transport.pause_reading()

    def resume_writing(self):
        if self.peer is not None and not self.peer.transport.is_closing():
            self.peer.transport.resume_reading()

    def connection_lost(self, exc):
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def bare_main() -> None:
    """The smallest uvloop relay: the ceiling any userspace proxy meets on this machine."""
    loop = asyncio.get_running_loop()
    for port in (SINK, ECHO, HTTP):
        factory = type(f"Client{port}", (_Pipe,), {"port": port})
        await loop.create_server(factory, BARE_IP, port, backlog=4096)
    print("ready", flush=True)
    await asyncio.Event().wait()


# ---------------------------------------------------------------------------- load generators (child)

def client_ip(run: int, worker: int) -> str:
    """A source address of its own for each worker of each run: thousands of short connections
    leave as many TIME_WAIT sockets, and bind() slows down as they fill an address's ports."""
    return f"127.246.{run}.{worker + 1}"


async def bulk(host: str, port: int, seconds: float, run: int, conns: int = 2) -> dict:
    chunk = b"x" * 262144

    async def one(i: int) -> int:
        reader, writer = await asyncio.open_connection(host, port, local_addr=(client_ip(run, i), 0))
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()
        total = int(await reader.read())
        writer.close()
        return total

    started = time.monotonic()
    total = sum(await asyncio.gather(*(one(i) for i in range(conns))))
    return {"MB/s": total / (time.monotonic() - started) / 1e6}


async def connect_rate(host: str, port: int, seconds: float, run: int, workers: int = 16) -> dict:
    deadline = time.monotonic() + seconds
    done = 0

    async def worker(i: int) -> None:
        nonlocal done
        source = client_ip(run, i)
        while time.monotonic() < deadline:
            reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
            writer.write(b"x")
            await reader.readexactly(1)
            writer.close()
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(workers)))
    return {"conn/s": done / (time.monotonic() - started)}


def generator_main(kind: str, host: str, port: int, seconds: float, run: int) -> None:
    import uvloop
    fn = {"bulk": bulk, "connect": connect_rate}[kind]
    print(json.dumps(uvloop.run(fn(host, port, seconds, run))), flush=True)


# ---------------------------------------------------------------------------- driver

def die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the driver dies, however it dies."""
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


async def child(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, __file__, *args, stdout=asyncio.subprocess.PIPE,
                                                preexec_fn=die_with_parent)


_runs = iter(range(1, 255))


async def generate(kind: str, host: str, port: int, seconds: float) -> float:
    proc = await child("generate", kind, host, str(port), str(seconds), str(next(_runs)))
    out, _ = await asyncio.wait_for(proc.communicate(), MAX_SECONDS + 10)
    return next(iter(json.loads(out).values()))


async def wrk(host: str, port: int, seconds: float) -> float:
    proc = await asyncio.create_subprocess_exec(
        "wrk", "-t1", "-c32", f"-d{seconds:g}s", f"http://{host}:{port}/", stdout=asyncio.subprocess.PIPE,
        preexec_fn=die_with_parent)
    out, _ = await asyncio.wait_for(proc.communicate(), MAX_SECONDS + 10)
    line = next(x for x in out.decode().splitlines() if x.startswith("Requests/sec:"))
    return float(line.split()[1])


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def haproxy_config(directory: Path) -> Path:
    path = directory / "haproxy.cfg"
    lines = ["global", "  nbthread 1", "  maxconn 8000", "defaults", "  mode tcp", "  timeout connect 5s",
             "  timeout client 30s", "  timeout server 30s"]
    for port in (SINK, ECHO, HTTP):
        lines += [f"listen p{port}", f"  bind {HAPROXY_IP}:{port}", f"  server pod {POD_IP}:{port}"]
    path.write_text("\n".join(lines) + "\n")
    return path


async def start_proxy():
    from netemu.api.objects import (Endpoint, EndpointConditions, EndpointPort, EndpointSlice, ObjectMeta,
                                    Service, ServicePort, ServiceSpec)
    from netemu.config import ClusterConfig
    from netemu.fabric.base import NodeNetwork
    from netemu.fabric.loopback import LoopbackFabric
    from netemu.proxy import ProxyGroup, ProxyOptions
    from netemu.state import ClusterState
    config = ClusterConfig(state_dir=Path(tempfile.gettempdir()) / "netemu-bench-unused")  # never created
    group = ProxyGroup(LoopbackFabric(config, ClusterState(config)), ProxyOptions(connection_log_size=100))
    group.add_node(NodeNetwork("node-1", NODE_IP, "127.244.250.0/25"))
    names = {SINK: "sink", ECHO: "echo", HTTP: "http"}
    for port, name in names.items():
        group.on_service(None, Service(metadata=ObjectMeta(name=name, namespace="default"), spec=ServiceSpec(
            cluster_ip=CLUSTER_IP, ports=(ServicePort(name=name, port=port),))))
        group.on_endpointslice(None, EndpointSlice(
            metadata=ObjectMeta(name=f"{name}-x", namespace="default",
                                labels={EndpointSlice.SERVICE_NAME_LABEL: name}),
            address_type="IPv4", ports=(EndpointPort(name=name, port=port),),
            endpoints=(Endpoint(addresses=(POD_IP,), node_name="node-1", conditions=EndpointConditions(ready=True)),)))
    group.on_synced()
    await group.settle()
    for name in names.values():
        if group.service_errors("default", name):
            raise SystemExit(f"proxy: {group.service_errors('default', name)}")
    return group


async def main(seconds: float, rounds: int) -> None:
    seconds = min(seconds, MAX_SECONDS)
    missing = [tool for tool in ("haproxy", "wrk") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"missing {' and '.join(missing)}: apt-get install {' '.join(missing)}")
    pod = await child("pod")
    children: list[asyncio.subprocess.Process | subprocess.Popen] = [pod]
    group = None
    tmp = Path(tempfile.mkdtemp(prefix="netemu-bench-haproxy-"))
    try:
        assert (await pod.stdout.readline()).strip() == b"ready"
        group = await start_proxy()
        haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(haproxy_config(tmp))],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
        children.append(haproxy)
        await wait_listening(HAPROXY_IP, ECHO)
        bare = await child("bare")
        children.append(bare)
        assert (await bare.stdout.readline()).strip() == b"ready"
        targets = {"direct": POD_IP, "proxy": CLUSTER_IP, "haproxy": HAPROXY_IP, "bare": BARE_IP}
        cpu_of = {"proxy": own_cpu, "haproxy": lambda: process_cpu(haproxy.pid)}
        print(f"{'':28} {'direct':>9} {'proxy':>9} {'haproxy':>9} {'bare':>9}   proxy/direct (range)"
              f"  proxy/haproxy  bare/direct   CPU per unit: proxy  haproxy")
        # The bare relay is the bulk calibration only (uvloop aborts on it under the connection storm).
        for label, unit, run, bare_too in (("bulk MB/s", "MB", lambda h: generate("bulk", h, SINK, seconds), True),
                                           ("new connections/s", "conn",
                                            lambda h: generate("connect", h, ECHO, seconds), False),
                                           ("HTTP keep-alive req/s (wrk)", "req", lambda h: wrk(h, HTTP, seconds), False)):
            measured = {name: host for name, host in targets.items() if bare_too or name != "bare"}
            rates: dict[str, list[float]] = {name: [] for name in measured}
            cpus: dict[str, list[float]] = {name: [] for name in measured}
            for _ in range(rounds):
                for name, host in measured.items():
                    cpu_before, began = cpu_of.get(name, lambda: 0.0)(), time.monotonic()
                    rate = await run(host)
                    rates[name].append(rate)
                    cpus[name].append((cpu_of.get(name, lambda: 0.0)() - cpu_before) / (rate * (time.monotonic() - began)))
            rate = {name: statistics.median(v) for name, v in rates.items()}
            cpu = {name: statistics.median(v) for name, v in cpus.items()}
            ratios = [p / d for p, d in zip(rates["proxy"], rates["direct"])]
            spread = f"({min(ratios):.2f}-{max(ratios):.2f})"
            bare_rate = f"{rate['bare']:>9.0f}" if "bare" in rate else f"{'-':>9}"
            bare_ratio = f"{rate['bare'] / rate['direct']:>11.2f}" if "bare" in rate else f"{'-':>11}"
            print(f"{label:28} {rate['direct']:>9.0f} {rate['proxy']:>9.0f} {rate['haproxy']:>9.0f} {bare_rate}"
                  f"   {rate['proxy'] / rate['direct']:>12.2f} {spread:>11}  {rate['proxy'] / rate['haproxy']:>9.2f}"
                  f"  {bare_ratio}"
                  f"   {cpu['proxy'] * 1e6:>11.1f} µs {cpu['haproxy'] * 1e6:>5.1f} µs /{unit}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if group is not None:
            await group.close()
        for proc in children:
            if proc.returncode is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in children:
            result = proc.wait()
            if asyncio.iscoroutine(result):
                await result


async def wait_listening(ip: str, port: int) -> None:
    deadline = time.monotonic() + 5
    while True:
        try:
            with socket.create_connection((ip, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


if __name__ == "__main__":
    if sys.argv[1:2] == ["pod"]:
        import uvloop
        uvloop.run(pod_main())
    elif sys.argv[1:2] == ["bare"]:
        import uvloop
        uvloop.run(bare_main())
    elif sys.argv[1:2] == ["generate"]:
        generator_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]))
    else:
        parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
        parser.add_argument("--seconds", type=float, default=2.0, help="per measurement (at most 5)")
        parser.add_argument("--rounds", type=int, default=3, help="times each measurement is taken")
        options = parser.parse_args()
        import uvloop
        uvloop.run(main(options.seconds, max(1, options.rounds)))
