"""The service proxy on real sockets: ClusterIP, NodePort and load-balancer listeners, TCP and UDP
relays, traffic policies, balancing, impairments, and clean shutdown.

Pods are tiny asyncio servers on 127.244.B.x addresses (B is a block of addresses for each test,
so tests never share an address); Services and EndpointSlices are built directly from the API
dataclasses and fed to a ``ProxyGroup`` on the loopback fabric. HTTP checks use real curl. Tests
that exercise the data path run on both asyncio's loop and uvloop (what netemu runs on).
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import random
import socket
import struct
import time
from pathlib import Path
from typing import Any, AsyncIterator

import asyncio_dgram
import pytest
import uvloop

from netemu.api.objects import (Endpoint, EndpointConditions, EndpointPort, EndpointSlice, LoadBalancerIngress,
                                LoadBalancerStatus, ObjectMeta, Service, ServicePort, ServiceSpec, ServiceStatus)
from netemu.config import ClusterConfig
from netemu.fabric.base import NodeNetwork
from netemu.fabric.loopback import LoopbackFabric
from netemu.proxy import Impairment, ProxyGroup, ProxyOptions
from netemu.proxy import workers as workers_module
from netemu.proxy.autoscale import Autoscaler
from netemu.proxy.workers import ProxyWorkers
from netemu.state import ClusterState

FIREHOSE = 64 * 1024 * 1024
LOOPS = pytest.mark.parametrize("loop_factory", [None, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
_blocks = itertools.count(random.Random(os.getpid()).randrange(150))


def run(loop_factory: Any, main: Any) -> Any:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())


async def poll(predicate: Any, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------------------- addresses

class Block:
    """The addresses of one test: node k is 127.10.B.k with pods in 127.244.B.(64k)/26;
    127.244.B.1-63 belong to no node (they count as the first node's)."""

    def __init__(self) -> None:
        self.b = 100 + next(_blocks) % 150

    def node_ip(self, k: int) -> str:
        return f"127.10.{self.b}.{k}"

    def pod(self, k: int, i: int) -> str:
        return f"127.244.{self.b}.{64 * k + i}"

    def outside(self, i: int = 9) -> str:
        return f"127.244.{self.b}.{i}"

    def cluster_ip(self, i: int = 1) -> str:
        return f"127.96.{self.b}.{i}"

    def lb_ip(self, i: int = 1) -> str:
        return f"127.200.{self.b}.{i}"


# ---------------------------------------------------------------------------- pods

class TCPPod:
    """A TCP server playing a pod; ``mode``: echo, ident (says ip:port and closes), http, count
    (reads to EOF, then says how many bytes it got), firehose (sends FIREHOSE bytes as fast as
    the connection takes them, counting them in ``sent``)."""

    def __init__(self, ip: str, port: int, mode: str) -> None:
        self.ip, self.port, self.mode = ip, port, mode
        self.peers: list[str] = []
        self.server: Any = None
        self.sent = 0

    async def start(self) -> "TCPPod":
        self.server = await asyncio.start_server(self._serve, self.ip, self.port, backlog=2048)
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.peers.append(writer.get_extra_info("peername")[0])
        try:
            if self.mode == "echo":
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            elif self.mode == "ident":
                writer.write(f"{self.ip}:{self.port}\n".encode())
            elif self.mode == "count":
                total = len(await reader.read(-1))
                writer.write(f"got {total}".encode())
            elif self.mode == "firehose":
                chunk = b"z" * 65536
                while self.sent < FIREHOSE:
                    writer.write(chunk)
                    await writer.drain()
                    self.sent += len(chunk)
            elif self.mode == "http":
                await reader.readuntil(b"\r\n\r\n")
                body = f"{self.ip}:{self.port} saw {self.peers[-1]}\n".encode()
                head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
                writer.write(head + body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        self.server.close()


class UDPPod(asyncio.DatagramProtocol):
    """A UDP echo server playing a pod: replies ``ip:port|`` + the datagram."""

    def __init__(self, ip: str, port: int) -> None:
        self.ip, self.port = ip, port
        self.peers: list[str] = []
        self.transport: Any = None

    async def start(self) -> "UDPPod":
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: self, local_addr=(self.ip, self.port))
        return self

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.peers.append(addr[0])
        self.transport.sendto(f"{self.ip}:{self.port}|".encode() + data, addr)

    def close(self) -> None:
        self.transport.close()


# ---------------------------------------------------------------------------- objects

def service(block: Block, name: str = "web", *, ports: tuple[ServicePort, ...] = (ServicePort(port=80),),
            type: str = "ClusterIP", lb_ips: tuple[str, ...] = (), **spec: Any) -> Service:
    status = ServiceStatus(load_balancer=LoadBalancerStatus(ingress=tuple(LoadBalancerIngress(ip=i) for i in lb_ips)))
    return Service(metadata=ObjectMeta(name=name, namespace="default"),
                   spec=ServiceSpec(type=type, cluster_ip=spec.pop("cluster_ip", block.cluster_ip()), ports=ports,
                                    **spec),
                   status=status)


def slice_port(port: int = 9376, protocol: str = "TCP", name: str = "") -> EndpointPort:
    return EndpointPort(name=name, protocol=protocol, port=port)


def endpoint_slice(endpoints: list[tuple[str, str]], *, ports: tuple[EndpointPort, ...] = (slice_port(),),
                   service_name: str = "web", name: str = "web-abcde", ready: bool = True) -> EndpointSlice:
    return EndpointSlice(
        metadata=ObjectMeta(name=name, namespace="default", labels={EndpointSlice.SERVICE_NAME_LABEL: service_name}),
        address_type="IPv4", ports=ports,
        endpoints=tuple(Endpoint(addresses=(ip,), node_name=node, conditions=EndpointConditions(ready=ready))
                        for ip, node in endpoints))


# ---------------------------------------------------------------------------- harness

class Harness:
    """A proxy group on the loopback fabric with ``nodes`` nodes, and the pods of one test."""

    def __init__(self, tmp_path: Any, nodes: int = 1, shared_stack: bool = True, **options: Any) -> None:
        self.block = Block()
        self.shared_stack = shared_stack
        self.tmp_path = tmp_path
        self.node_count = nodes
        options.setdefault("udp_idle_timeout", 0.3)
        options.setdefault("listen_retry", 0.05)
        self.options = ProxyOptions(**options)
        self.pods: list[Any] = []
        self.services: dict[str, Service] = {}
        self.slices: dict[str, EndpointSlice] = {}

    async def __aenter__(self) -> "Harness":
        config = ClusterConfig(state_dir=self.tmp_path)
        self.fabric = LoopbackFabric(config, ClusterState(config))
        self.fabric.shared_stack = self.shared_stack  # False: one ClusterIP listener per node
        self.group = ProxyGroup(self.fabric, self.options)
        for k in range(1, self.node_count + 1):
            self.group.add_node(NodeNetwork(f"node-{k}", self.block.node_ip(k), self.block.pod(k, 0) + "/26"))
        self.group.on_synced()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.group.close()
        for pod in self.pods:
            pod.close()

    async def tcp_pod(self, ip: str, port: int = 9376, mode: str = "echo") -> TCPPod:
        pod = await TCPPod(ip, port, mode).start()
        self.pods.append(pod)
        return pod

    async def udp_pod(self, ip: str, port: int = 5353) -> UDPPod:
        pod = await UDPPod(ip, port).start()
        self.pods.append(pod)
        return pod

    async def apply(self, *objects: Any) -> None:
        for obj in objects:
            if isinstance(obj, Service):
                self.group.on_service(self.services.get(obj.metadata.name), obj)
                self.services[obj.metadata.name] = obj
            else:
                self.group.on_endpointslice(self.slices.get(obj.metadata.name), obj)
                self.slices[obj.metadata.name] = obj
        await self.group.settle()

    async def delete(self, kind: str, name: str) -> None:
        if kind == "Service":
            self.group.on_service(self.services.pop(name), None)
        else:
            self.group.on_endpointslice(self.slices.pop(name), None)
        await self.group.settle()

    def log(self, name: str = "web") -> list[Any]:
        return self.group.connection_log("default", name)


async def exchange(ip: str, port: int, source: str, data: bytes = b"ping") -> bytes:
    reader, writer = await asyncio.open_connection(ip, port, local_addr=(source, 0))
    try:
        writer.write(data)
        if data:
            writer.write_eof()
        return await reader.read(-1)
    finally:
        writer.close()


async def curl(url: str, interface: str, *extra: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--noproxy", "*", "--max-time", "5", "--interface", interface, *extra, url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode, out.decode() + err.decode()


@contextlib.asynccontextmanager
async def udp_client(source: str) -> AsyncIterator[Any]:
    """A UDP client bound to ``source``: it sends anywhere and sees where each reply comes from
    (its socket is not connected, so it is not told of ICMP refusals: see ``udp_connected``)."""
    client = await asyncio_dgram.bind((source, 0))
    try:
        yield client
    finally:
        client.close()


async def udp_ask(client: Any, address: tuple[str, int], data: bytes, timeout: float = 5) -> tuple[bytes, Any]:
    """Send one datagram; the first reply and where it came from."""
    await client.send(data, address)
    return await asyncio.wait_for(client.recv(), timeout)


def udp_connected(address: tuple[str, int], source: str, data: bytes) -> bytes:
    """One datagram and its reply on a connected socket, which is told of an ICMP port unreachable
    (ConnectionRefusedError). Blocking: run it in a thread."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.bind((source, 0))
        sock.connect(address)
        sock.send(data)
        return sock.recv(65535)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# ============================================================================ ClusterIP

@LOOPS
def test_cluster_ip_relays_and_backend_sees_the_client_pod(loop_factory, tmp_path):
    async def main():
        async with Harness(tmp_path) as h:
            b = h.block
            await h.tcp_pod(b.pod(1, 5), mode="http")
            await h.apply(service(b), endpoint_slice([(b.pod(1, 5), "node-1")]))
            rc, out = await curl(f"http://{b.cluster_ip()}:80/", b.outside(9))
            assert (rc, out) == (0, f"{b.pod(1, 5)}:9376 saw {b.outside(9)}\n")
            await poll(lambda: h.log() and h.log()[-1].outcome == "ok", "the connection record")
            record = h.log()[-1]
            assert (record.client[0], record.frontend, record.node, record.endpoint) == (
                b.outside(9), "cluster-ip", "node-1", f"{b.pod(1, 5)}:9376")
            assert record.bytes_up > 0 and record.bytes_down > 0
    run(loop_factory, main)


@pytest.mark.parametrize("shared_stack", [True, False], ids=["shared-stack", "stack-per-node"])
async def test_relayed_sockets_use_reno_inside_one_stack_and_the_systems_choice_across(tmp_path, shared_stack):
    system = Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip().encode()
    async with Harness(tmp_path, shared_stack=shared_stack) as h:
        b = h.block
        await h.tcp_pod(b.pod(1, 5))
        await h.apply(service(b), endpoint_slice([(b.pod(1, 5), "node-1")]))
        reader, writer = await asyncio.open_connection(b.cluster_ip(), 80, local_addr=(b.outside(), 0))
        try:
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            (relay,) = [item for item in h.group.ctx.live if hasattr(item, "upstream")]
            used = {sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0")
                    for sock in (relay.client, relay.upstream)}
            assert used == ({b"reno"} if shared_stack else {system})
        finally:
            writer.close()


async def test_a_worker_that_starts_late_is_caught_up_and_then_gets_what_changed_meanwhile(tmp_path, monkeypatch):
    monkeypatch.setattr(workers_module, "WORK_SLICE", 0.0)  # the catch-up yields after every message
    async with Harness(tmp_path, reuse_port=True) as h:
        b = h.block
        await h.tcp_pod(b.pod(1, 5), mode="ident")
        await h.tcp_pod(b.pod(1, 6), mode="ident")
        fillers = [service(b, f"filler-{i}", cluster_ip=b.cluster_ip(10 + i)) for i in range(200)]
        await h.apply(service(b), endpoint_slice([(b.pod(1, 5), "node-1")]), *fillers)
        workers = h.group.workers = ProxyWorkers(h.group, env={}, record=lambda pid: None,
                                                 log_path=tmp_path / "proxy-workers.log")
        adding = asyncio.create_task(workers.add())
        while not workers.workers or workers.workers[0].backlog is None:
            assert not adding.done(), "the catch-up ended before it could be watched"
            await asyncio.sleep(0)
        worker = workers.workers[0]
        moved = endpoint_slice([(b.pod(1, 6), "node-1")])  # the endpoint moves during the catch-up
        h.group.on_endpointslice(h.slices["web-abcde"], moved)
        h.slices["web-abcde"] = moved
        assert worker.backlog, "the change did not wait for the catch-up"
        await adding  # sent after the catch-up, so the worker's last word on "web" is the moved endpoint
        await h.group.settle()
        seen = collections.Counter([await exchange(b.cluster_ip(), 80, b.outside(), b"") for _ in range(60)])
        assert seen == {f"{b.pod(1, 6)}:9376\n".encode(): 60}
        await h.group.settle()
        assert workers.connections()[worker.pid] > 0, "the worker took none of the connections"


async def test_the_autoscaler_starts_workers_up_to_its_limit_and_no_more(tmp_path):
    async with Harness(tmp_path, reuse_port=True) as h:
        workers = h.group.workers = ProxyWorkers(h.group, env={}, record=lambda pid: None,
                                                 log_path=tmp_path / "proxy-workers.log")
        scaler = Autoscaler(h.group, workers, limit=2)
        scaler.busy_cpu = scaler.busy_events = 0  # every check finds the proxy busy
        scaler.check_interval = 0.01
        checks = 0
        check = scaler._check

        def counted() -> None:
            nonlocal checks
            checks += 1
            check()
        scaler._check = counted  # type: ignore[method-assign]
        try:
            await poll(lambda: len(workers) == 1 and not scaler.starting, "a worker started", timeout=30)
            since = checks
            await poll(lambda: checks >= since + 50, "50 more checks", timeout=30)
            assert not scaler.starting and len(workers) == 1  # busy at every one of them, but at the limit
        finally:
            await scaler.close()


async def test_multi_port_service_routes_each_port_to_its_target(tmp_path):
    """80 → 9376 and 443 → 9377; slice ports carry the per-pod numbers of named targetPorts."""
    async with Harness(tmp_path) as h:
        b = h.block
        for port in (9376, 9377):
            await h.tcp_pod(b.pod(1, 5), port, mode="ident")
        ports = (ServicePort(name="http", port=80, target_port="web"),
                 ServicePort(name="https", port=443, target_port=9377))
        await h.apply(service(b, ports=ports), endpoint_slice(
            [(b.pod(1, 5), "node-1")], ports=(slice_port(9376, name="http"), slice_port(9377, name="https"))))
        assert await exchange(b.cluster_ip(), 80, b.outside(), b"") == f"{b.pod(1, 5)}:9376\n".encode()
        assert await exchange(b.cluster_ip(), 443, b.outside(), b"") == f"{b.pod(1, 5)}:9377\n".encode()


@LOOPS
def test_udp_via_cluster_ip_replies_from_the_service_address(loop_factory, tmp_path):
    async def main():
        async with Harness(tmp_path) as h:
            b = h.block
            pod = await h.udp_pod(b.pod(1, 5))
            await h.apply(service(b, ports=(ServicePort(name="dns", protocol="UDP", port=53, target_port=5353),)),
                          endpoint_slice([(b.pod(1, 5), "node-1")],
                                         ports=(EndpointPort(name="dns", protocol="UDP", port=5353),)))
            async with udp_client(b.outside()) as client:
                for i in range(3):
                    data, addr = await udp_ask(client, (b.cluster_ip(), 53), b"q%d" % i)
                    assert (data, addr) == (f"{b.pod(1, 5)}:5353|q{i}".encode(), (b.cluster_ip(), 53))
            assert pod.peers == [b.outside()] * 3
            await poll(lambda: h.log() and h.log()[-1].outcome is not None, "the flow to expire")
            record = h.log()[-1]
            assert (record.outcome, len(h.log()), record.bytes_up) == ("ok", 1, 6)
    run(loop_factory, main)


# ============================================================================ NodePort and load balancer

@pytest.mark.parametrize("policy, expected", [
    ("Cluster", {1: "node-ip", 2: "node-ip"}),
    ("Local", {1: "client", 2: "timeout"}),
], ids=["cluster", "local"])
async def test_node_port_on_every_node(tmp_path, policy, expected):
    async with Harness(tmp_path, nodes=2) as h:
        b = h.block
        await h.tcp_pod(b.pod(1, 5), mode="http")
        await h.apply(service(b, type="NodePort", ports=(ServicePort(port=80, target_port=9376, node_port=30080),),
                              external_traffic_policy=policy),
                      endpoint_slice([(b.pod(1, 5), "node-1")]))
        for k, want in expected.items():
            rc, out = await curl(f"http://{b.node_ip(k)}:30080/", b.outside(), "--connect-timeout", "0.5")
            if want == "timeout":
                assert rc == 28, out
            else:
                source = b.node_ip(k) if want == "node-ip" else b.outside()
                assert (rc, out) == (0, f"{b.pod(1, 5)}:9376 saw {source}\n")


@pytest.mark.parametrize("policy, nodes_used, source", [
    ("Cluster", {"node-1", "node-2"}, "node-ip"),
    ("Local", {"node-2"}, "client"),
], ids=["cluster", "local"])
async def test_load_balancer_ingress_goes_through_node_ports(tmp_path, policy, nodes_used, source):
    async with Harness(tmp_path, nodes=2) as h:
        b = h.block
        pod = await h.tcp_pod(b.pod(2, 5), mode="http")
        await h.apply(service(b, type="LoadBalancer", lb_ips=(b.lb_ip(),), external_traffic_policy=policy,
                              ports=(ServicePort(port=80, target_port=9376, node_port=30081),)),
                      endpoint_slice([(b.pod(2, 5), "node-2")]))
        for _ in range(4):
            rc, out = await curl(f"http://{b.lb_ip()}:80/", b.outside())
            assert rc == 0 and out.startswith(f"{b.pod(2, 5)}:9376 saw"), out
        await poll(lambda: all(r.outcome for r in h.log()), "records to complete")
        hops = [r for r in h.log() if r.frontend == "load-balancer"]
        assert {r.node for r in hops} == nodes_used
        assert {r.endpoint for r in hops} == {f"{b.node_ip(int(n[-1]))}:30081" for n in nodes_used}
        assert {r.endpoint for r in h.log() if r.frontend == "node-port"} == {f"{b.pod(2, 5)}:9376"}
        expected = {b.node_ip(int(n[-1])) for n in nodes_used} if source == "node-ip" else {b.outside()}
        assert set(pod.peers) == expected


# ============================================================================ balancing

async def test_round_robin_spreads_99_connections_evenly(tmp_path):
    async with Harness(tmp_path) as h:
        b = h.block
        ips = [b.pod(1, i) for i in (5, 6, 7)]
        for ip in ips:
            await h.tcp_pod(ip, mode="ident")
        await h.apply(service(b), endpoint_slice([(ip, "node-1") for ip in ips]))
        answers = [await exchange(b.cluster_ip(), 80, b.outside(), b"") for _ in range(99)]
        assert {a: answers.count(a) for a in set(answers)} == {f"{ip}:9376\n".encode(): 33 for ip in ips}


async def test_client_ip_affinity_pins_each_client(tmp_path):
    async with Harness(tmp_path) as h:
        b = h.block
        ips = [b.pod(1, i) for i in (5, 6, 7)]
        for ip in ips:
            await h.tcp_pod(ip, mode="ident")
        await h.apply(service(b, session_affinity="ClientIP"), endpoint_slice([(ip, "node-1") for ip in ips]))
        seen = {}
        for client in (b.outside(9), b.outside(10), b.outside(11)):
            seen[client] = {await exchange(b.cluster_ip(), 80, client, b"") for _ in range(10)}
        assert all(len(answers) == 1 for answers in seen.values()), seen
        assert len(set.union(*seen.values())) == 3  # three clients, round robin: three endpoints


# ============================================================================ what clients see

@pytest.mark.parametrize("protocol", ["TCP", "UDP"])
async def test_no_endpoints_refuses_at_once_and_endpoints_reopen(tmp_path, protocol):
    async with Harness(tmp_path) as h:
        b = h.block
        udp = protocol == "UDP"
        await (h.udp_pod(b.pod(1, 5), 9376) if udp else h.tcp_pod(b.pod(1, 5)))
        ports = (ServicePort(port=80, protocol=protocol, target_port=9376),)
        slice_ports = (EndpointPort(name="", protocol=protocol, port=9376),)

        async def ask() -> bytes:
            if not udp:
                return await exchange(b.cluster_ip(), 80, b.outside())
            return await asyncio.to_thread(udp_connected, (b.cluster_ip(), 80), b.outside(), b"ping")

        await h.apply(service(b, ports=ports), endpoint_slice([], ports=slice_ports))
        with pytest.raises(ConnectionRefusedError):
            await ask()
        await h.apply(endpoint_slice([(b.pod(1, 5), "node-1")], ports=slice_ports))
        assert (await ask()).endswith(b"ping")
        await h.apply(endpoint_slice([(b.pod(1, 5), "node-1")], ports=slice_ports, ready=False))
        with pytest.raises(ConnectionRefusedError):
            await ask()


async def test_local_internal_policy_drops_clients_of_nodes_without_endpoint(tmp_path):
    async with Harness(tmp_path, nodes=2) as h:
        b = h.block
        await h.tcp_pod(b.pod(1, 5))
        await h.apply(service(b, internal_traffic_policy="Local"), endpoint_slice([(b.pod(1, 5), "node-1")]))
        assert await exchange(b.cluster_ip(), 80, b.pod(1, 50)) == b"ping"   # node-1's pod
        assert await exchange(b.cluster_ip(), 80, b.outside()) == b"ping"    # the host counts as node-1
        with pytest.raises(TimeoutError):                                     # node-2's pod: SYN dropped
            await asyncio.wait_for(asyncio.open_connection(b.cluster_ip(), 80, local_addr=(b.pod(2, 50), 0)), 0.3)
        rc, out = await curl(f"http://{b.cluster_ip()}:80/", b.pod(2, 51), "--connect-timeout", "0.3")
        assert rc == 28, out
        await h.tcp_pod(b.pod(2, 5))
        await h.apply(endpoint_slice([(b.pod(1, 5), "node-1"), (b.pod(2, 5), "node-2")]))
        assert await exchange(b.cluster_ip(), 80, b.pod(2, 50)) == b"ping"
        assert h.group.proxiers["node-2"].connection_log("default", "web")[-1].endpoint == f"{b.pod(2, 5)}:9376"


# ============================================================================ relay behaviour

@LOOPS
def test_half_close_lets_the_reply_flow_back(loop_factory, tmp_path):
    async def main():
        async with Harness(tmp_path) as h:
            b = h.block
            await h.tcp_pod(b.pod(1, 5), mode="count")
            await h.apply(service(b), endpoint_slice([(b.pod(1, 5), "node-1")]))
            reader, writer = await asyncio.open_connection(b.cluster_ip(), 80, local_addr=(b.outside(), 0))
            writer.write(b"x" * 300_000)
            writer.write_eof()                    # the pod only answers after EOF
            assert await reader.read(-1) == b"got 300000"
            writer.close()
            await poll(lambda: h.log()[-1].outcome == "ok", "the relay to end")
            assert (h.log()[-1].bytes_up, h.log()[-1].bytes_down) == (300_000, 10)
    run(loop_factory, main)


@LOOPS
def test_endpoint_changes_never_cut_established_connections(loop_factory, tmp_path):
    async def main():
        async with Harness(tmp_path) as h:
            b = h.block
            first, second = await h.tcp_pod(b.pod(1, 5)), await h.tcp_pod(b.pod(1, 6), mode="ident")
            await h.apply(service(b), endpoint_slice([(b.pod(1, 5), "node-1")]))
            reader, writer = await asyncio.open_connection(b.cluster_ip(), 80, local_addr=(b.outside(), 0))
            writer.write(b"one")
            assert await reader.readexactly(3) == b"one"
            await h.apply(endpoint_slice([(b.pod(1, 6), "node-1")]))       # the first pod is withdrawn
            assert await exchange(b.cluster_ip(), 80, b.outside(), b"") == f"{b.pod(1, 6)}:9376\n".encode()
            writer.write(b"two")                                           # ...its connection still works
            assert await reader.readexactly(3) == b"two"
            await h.apply(endpoint_slice([]))                              # no endpoints: listener closed
            with pytest.raises(ConnectionRefusedError):
                await exchange(b.cluster_ip(), 80, b.outside())
            writer.write(b"three")                                         # established ones carry on
            assert await reader.readexactly(5) == b"three"
            writer.close()
            assert first.peers == [b.outside()] and second.peers == [b.outside()]
    run(loop_factory, main)


@LOOPS
def test_a_thousand_long_lived_connections_then_every_fd_is_released(loop_factory, tmp_path):
    async def main():
        async with Harness(tmp_path) as h:
            b = h.block
            await h.tcp_pod(b.pod(1, 5))
            await h.apply(service(b), endpoint_slice([(b.pod(1, 5), "node-1")]))
            before = open_fds()
            conns = await asyncio.gather(*(asyncio.open_connection(b.cluster_ip(), 80, local_addr=(b.outside(), 0))
                                           for _ in range(1000)))
            for i, (_, writer) in enumerate(conns):
                writer.write(b"%06d" % i)
            answers = await asyncio.gather(*(reader.readexactly(6) for reader, _ in conns))
            assert answers == [b"%06d" % i for i in range(1000)]
            assert len(h.log()) == 1000 and all(r.outcome is None for r in h.log())  # all open at once
            for _, writer in conns:
                writer.close()
            await poll(lambda: all(r.outcome == "ok" for r in h.log()), "every relay to end")
            await poll(lambda: open_fds() == before, f"file descriptors back to {before} (now {open_fds()})")
    run(loop_factory, main)


async def test_closing_the_group_closes_relays_and_listeners(tmp_path):
    async with Harness(tmp_path) as h:
        b = h.block
        await h.tcp_pod(b.pod(1, 5))
        await h.apply(service(b), endpoint_slice([(b.pod(1, 5), "node-1")]))
        reader, writer = await asyncio.open_connection(b.cluster_ip(), 80, local_addr=(b.outside(), 0))
        writer.write(b"hi")
        assert await reader.readexactly(2) == b"hi"
        await h.group.close()
        with contextlib.suppress(ConnectionResetError):
            assert await reader.read() == b""
        writer.close()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(b.cluster_ip(), 80)


# ============================================================================ impairments

@LOOPS
def test_delay_impairment_delays_each_direction_and_keeps_order(loop_factory, tmp_path):
    async def main():
        async with Harness(tmp_path) as h:
            b = h.block
            await h.tcp_pod(b.pod(1, 5))
            await h.apply(service(b), endpoint_slice([(b.pod(1, 5), "node-1")]))
            h.group.set_impairment(Impairment(delay_ms=40), service="default/web")
            reader, writer = await asyncio.open_connection(b.cluster_ip(), 80, local_addr=(b.outside(), 0))
            started = time.monotonic()
            writer.write(b"a")
            assert await reader.readexactly(1) == b"a"
            assert time.monotonic() - started >= 2 * 0.040 - 0.002   # at least the configured delay, both ways
            for i in range(20):
                writer.write(b"%02d" % i)
            assert await reader.readexactly(40) == b"".join(b"%02d" % i for i in range(20))
            writer.close()
            h.group.set_impairment(None, service="default/web")
            assert h.group.impairments.lookup(("default", "web"), ("node-1",)) is None
    run(loop_factory, main)


async def test_reset_and_loss_impairments(tmp_path):
    async with Harness(tmp_path) as h:
        b = h.block
        await h.tcp_pod(b.pod(1, 5))
        await h.udp_pod(b.pod(1, 5), 5353)
        await h.apply(service(b, ports=(ServicePort(name="tcp", port=80, target_port=9376),
                                        ServicePort(name="udp", port=53, protocol="UDP", target_port=5353))),
                      endpoint_slice([(b.pod(1, 5), "node-1")],
                                     ports=(slice_port(9376, name="tcp"), slice_port(5353, "UDP", "udp"))))
        h.group.proxiers["node-1"].set_impairment(Impairment(tcp_reset=1.0, udp_loss=1.0))
        with pytest.raises(ConnectionResetError):
            await exchange(b.cluster_ip(), 80, b.outside())
        async with udp_client(b.outside()) as client:
            with pytest.raises(TimeoutError):
                await udp_ask(client, (b.cluster_ip(), 53), b"lost", timeout=0.3)
        assert [r.outcome for r in h.log() if r.service_port.endswith("80/TCP")] == ["reset"]
        h.group.proxiers["node-1"].set_impairment(None)
        assert await exchange(b.cluster_ip(), 80, b.outside()) == b"ping"


# ============================================================================ claims and errors

async def test_busy_address_is_reported_and_retried(tmp_path):
    async with Harness(tmp_path) as h:
        b = h.block
        await h.tcp_pod(b.pod(1, 5))
        squatter = socket.socket()
        squatter.bind((b.node_ip(1), 30090))
        squatter.listen()
        await h.apply(service(b, type="NodePort", ports=(ServicePort(port=80, target_port=9376, node_port=30090),)),
                      endpoint_slice([(b.pod(1, 5), "node-1")]))
        assert h.group.service_errors("default", "web") == [
            f"cannot listen on {b.node_ip(1)}:30090/TCP: Address already in use"]
        assert await exchange(b.cluster_ip(), 80, b.outside()) == b"ping"   # the rest works
        squatter.close()
        await poll(lambda: not h.group.service_errors("default", "web"), "the retry to succeed")
        assert await exchange(b.node_ip(1), 30090, b.outside()) == b"ping"


async def test_an_address_claimed_twice_belongs_to_the_first_service_until_it_goes(tmp_path):
    async with Harness(tmp_path) as h:
        b = h.block
        for i in (5, 6):
            await h.tcp_pod(b.pod(1, i), mode="ident")
        for name, cip, pod in (("first", 1, 5), ("second", 2, 6)):
            await h.apply(service(b, name, type="LoadBalancer", lb_ips=(b.lb_ip(),), cluster_ip=b.cluster_ip(cip),
                                  ports=(ServicePort(port=80, target_port=9376, node_port=30090 + cip),)),
                          endpoint_slice([(b.pod(1, pod), "node-1")], service_name=name, name=f"{name}-x"))
        assert h.group.service_errors("default", "second") == [
            f"port conflict on {b.lb_ip()}:80/TCP: held by service port default/first/TCP"]
        assert await exchange(b.lb_ip(), 80, b.outside(), b"") == f"{b.pod(1, 5)}:9376\n".encode()
        await h.delete("Service", "first")
        assert h.group.service_errors("default", "second") == []
        assert await exchange(b.lb_ip(), 80, b.outside(), b"") == f"{b.pod(1, 6)}:9376\n".encode()


@pytest.mark.parametrize("order", ["release-first", "claim-first"])
async def test_a_node_port_freed_and_taken_before_the_listener_closes_keeps_listening(tmp_path, order):
    """One Service goes and another takes its NodePort before the group has closed the listener
    (both in one sync, in either order): the new Service gets the port and the listener at once."""
    async with Harness(tmp_path, nodes=2) as h:
        b = h.block
        for i in (5, 6):
            await h.tcp_pod(b.pod(1, i), mode="ident")
        ports = (ServicePort(port=80, target_port=9376, node_port=30070),)
        old = service(b, "old", type="NodePort", cluster_ip=b.cluster_ip(1), ports=ports)
        new = service(b, "new", type="NodePort", cluster_ip=b.cluster_ip(2), ports=ports)
        await h.apply(old, endpoint_slice([(b.pod(1, 5), "node-1")], service_name="old", name="old-x"),
                      endpoint_slice([(b.pod(1, 6), "node-1")], service_name="new", name="new-x"))
        assert await exchange(b.node_ip(2), 30070, b.outside(), b"") == f"{b.pod(1, 5)}:9376\n".encode()
        events = [(old, None), (None, new)] if order == "release-first" else [(None, new), (old, None)]
        for before, after in events:
            h.group.on_service(before, after)
            h.group.sync()  # each event on its own, the listener untouched until settle
        await h.group.settle()
        assert h.group.service_errors("default", "new") == []
        for k in (1, 2):
            assert await exchange(b.node_ip(k), 30070, b.outside(), b"") == f"{b.pod(1, 6)}:9376\n".encode()
        assert {x["service_port"] for x in h.group.listeners() if x["kind"] == "node-port"} == {"default/new/TCP"}


@LOOPS
def test_backpressure_stops_a_fast_pod_while_the_client_does_not_read(loop_factory, tmp_path):
    async def main():
        async with Harness(tmp_path) as h:
            b = h.block
            pod = await h.tcp_pod(b.pod(1, 5), mode="firehose")
            await h.apply(service(b), endpoint_slice([(b.pod(1, 5), "node-1")]))
            reader, writer = await asyncio.open_connection(b.cluster_ip(), 80, local_addr=(b.outside(), 0))
            seen = []

            def stalled() -> bool:
                seen.append(pod.sent)
                return len(seen) > 5 and 0 < seen[-1] == seen[-6]

            await poll(stalled, "the pod to be held back")
            assert pod.sent < FIREHOSE // 4       # buffers hold a few MB, not the whole stream
            total = 0
            while chunk := await reader.read(1 << 20):
                total += len(chunk)
            assert total == FIREHOSE
            writer.close()
    run(loop_factory, main)


@LOOPS
def test_udp_flows_follow_withdrawn_endpoints(loop_factory, tmp_path):
    async def main():
        async with Harness(tmp_path) as h:
            b = h.block
            ports = (ServicePort(protocol="UDP", port=53, target_port=5353),)
            slice_ports = (EndpointPort(name="", protocol="UDP", port=5353),)
            for i in (5, 6):
                await h.udp_pod(b.pod(1, i))
            await h.apply(service(b, ports=ports), endpoint_slice([(b.pod(1, 5), "node-1")], ports=slice_ports))
            async with udp_client(b.outside()) as client:
                address = (b.cluster_ip(), 53)
                assert (await udp_ask(client, address, b"a"))[0] == f"{b.pod(1, 5)}:5353|a".encode()
                await h.apply(endpoint_slice([(b.pod(1, 6), "node-1")], ports=slice_ports))
                # the same client address: a new flow, to the new endpoint
                assert (await udp_ask(client, address, b"b"))[0] == f"{b.pod(1, 6)}:5353|b".encode()
    run(loop_factory, main)


@LOOPS
def test_a_udp_flow_refused_by_its_endpoint_gets_the_replies_once_it_answers(loop_factory, tmp_path):
    """An ICMP port unreachable on a flow's socket (nothing listens on the endpoint yet) leaves
    the flow working: once the endpoint answers, its replies reach the client. (uvloop stops
    watching a descriptor for good at its first error: the proxy must not depend on that.)"""
    async def main():
        async with Harness(tmp_path, udp_idle_timeout=30) as h:
            b = h.block
            await h.apply(service(b, ports=(ServicePort(protocol="UDP", port=53, target_port=5353),)),
                          endpoint_slice([(b.pod(1, 5), "node-1")], ports=(slice_port(5353, "UDP"),)))
            address = (b.cluster_ip(), 53)
            async with udp_client(b.outside()) as client:
                with pytest.raises(TimeoutError):  # the flow's datagram is refused by the endpoint
                    await udp_ask(client, address, b"early", timeout=0.3)
                await h.udp_pod(b.pod(1, 5))
                deadline = time.monotonic() + 5
                while True:  # the same flow: the first datagram after a refusal may meet its error
                    try:
                        data, _ = await udp_ask(client, address, b"late", timeout=0.2)
                        break
                    except TimeoutError:
                        assert time.monotonic() < deadline, "the flow never passed a reply on"
            assert data == f"{b.pod(1, 5)}:5353|late".encode()
            assert len(h.log()) == 1  # one flow throughout
    run(loop_factory, main)


@LOOPS
def test_a_held_connection_that_resets_is_let_go(loop_factory, tmp_path):
    async def main():
        async with Harness(tmp_path, nodes=2) as h:
            b = h.block
            await h.tcp_pod(b.pod(1, 5))
            await h.apply(service(b, internal_traffic_policy="Local"), endpoint_slice([(b.pod(1, 5), "node-1")]))
            (fe,) = h.group._frontends.values()
            fe.listener.set_filter(None)  # let a dropped client through, to be held
            before = open_fds()
            sock = socket.create_connection((b.cluster_ip(), 80), source_address=(b.pod(2, 50), 0))
            sock.sendall(b"ping")
            await poll(lambda: h.log() and h.log()[-1].client[0] == b.pod(2, 50), "the connection to be held")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            await poll(lambda: h.log()[-1].outcome == "timeout", "the held connection to end")
            await poll(lambda: open_fds() == before, f"file descriptors back to {before} (now {open_fds()})")
    run(loop_factory, main)


async def test_local_internal_policy_drops_udp_from_nodes_without_endpoint(tmp_path):
    async with Harness(tmp_path, nodes=2) as h:
        b = h.block
        await h.udp_pod(b.pod(1, 5))
        await h.apply(service(b, ports=(ServicePort(protocol="UDP", port=53, target_port=5353),),
                              internal_traffic_policy="Local"),
                      endpoint_slice([(b.pod(1, 5), "node-1")], ports=(slice_port(5353, "UDP"),)))
        for source, answered in ((b.pod(1, 50), True), (b.pod(2, 50), False)):
            async with udp_client(source) as client:
                if answered:
                    assert (await udp_ask(client, (b.cluster_ip(), 53), b"q"))[0].endswith(b"|q")
                else:
                    with pytest.raises(TimeoutError):
                        await udp_ask(client, (b.cluster_ip(), 53), b"q", timeout=0.3)


@pytest.mark.parametrize("protocol, node_port", [("TCP", None), ("UDP", 30082)], ids=["tcp-no-node-ports", "udp"])
async def test_load_balancer_variants(tmp_path, protocol, node_port):
    """Without node ports the balancer hands connections to the node directly; UDP goes the
    same way as TCP (ingress → NodePort → pod)."""
    async with Harness(tmp_path, nodes=2) as h:
        b = h.block
        udp = protocol == "UDP"
        await (h.udp_pod(b.pod(2, 5), 9376) if udp else h.tcp_pod(b.pod(2, 5)))
        await h.apply(service(b, type="LoadBalancer", lb_ips=(b.lb_ip(),),
                              allocate_load_balancer_node_ports=node_port is not None,
                              ports=(ServicePort(port=80, protocol=protocol, target_port=9376, node_port=node_port),)),
                      endpoint_slice([(b.pod(2, 5), "node-2")], ports=(slice_port(9376, protocol),)))
        if udp:
            async with udp_client(b.outside()) as client:
                data, addr = await udp_ask(client, (b.lb_ip(), 80), b"ping")
            assert (data, addr) == (f"{b.pod(2, 5)}:9376|ping".encode(), (b.lb_ip(), 80))
        else:
            assert await exchange(b.lb_ip(), 80, b.outside()) == b"ping"
        frontends = {r.frontend for r in h.log()}
        assert frontends == ({"load-balancer", "node-port"} if node_port else {"load-balancer"})


async def test_a_connection_that_slips_past_the_drop_filter_is_held(tmp_path):
    """Should a source filter be missing, a dropped client is held unanswered, never relayed."""
    async with Harness(tmp_path, nodes=2) as h:
        b = h.block
        await h.tcp_pod(b.pod(1, 5))
        await h.apply(service(b, internal_traffic_policy="Local"), endpoint_slice([(b.pod(1, 5), "node-1")]))
        assert [(x["kind"], x["state"]) for x in h.group.listeners()] == [("cluster-ip", "filtered")]
        (fe,) = h.group._frontends.values()
        fe.listener.set_filter(None)
        reader, writer = await asyncio.open_connection(b.cluster_ip(), 80, local_addr=(b.pod(2, 50), 0))
        writer.write(b"ping")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.3)
        writer.close()
        await poll(lambda: h.log()[-1].outcome == "timeout", "the held connection to end")
        assert h.log()[-1].endpoint is None


async def test_per_node_stacks_get_a_cluster_ip_listener_per_node(tmp_path):
    """On a backend where nodes have their own stacks, each node listens on the ClusterIP itself
    and a Local policy without a local endpoint drops everything arriving there."""
    async with Harness(tmp_path, nodes=1, shared_stack=False) as h:
        b = h.block
        await h.tcp_pod(b.pod(1, 5))
        await h.apply(service(b, internal_traffic_policy="Local"), endpoint_slice([(b.pod(1, 5), "node-1")]))
        assert [(x["network"], x["state"]) for x in h.group.listeners()] == [("node-1", "open")]
        assert await exchange(b.cluster_ip(), 80, b.outside()) == b"ping"
        await h.apply(endpoint_slice([(b.pod(1, 5), "node-9")]))
        assert [x["state"] for x in h.group.listeners()] == ["filtered"]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.open_connection(b.cluster_ip(), 80, local_addr=(b.outside(), 0)), 0.3)


async def test_udp_delay_impairment(tmp_path):
    async with Harness(tmp_path) as h:
        b = h.block
        await h.udp_pod(b.pod(1, 5))
        await h.apply(service(b, ports=(ServicePort(protocol="UDP", port=53, target_port=5353),)),
                      endpoint_slice([(b.pod(1, 5), "node-1")], ports=(slice_port(5353, "UDP"),)))
        h.group.set_impairment(Impairment(delay_ms=30), node="node-1")
        async with udp_client(b.outside()) as client:
            started = time.monotonic()
            assert (await udp_ask(client, (b.cluster_ip(), 53), b"slow"))[0].endswith(b"|slow")
            assert time.monotonic() - started >= 2 * 0.030 - 0.002
