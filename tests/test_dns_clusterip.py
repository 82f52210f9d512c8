"""Cluster DNS through the kube-dns ClusterIP on the loopback backend: the proxy hands queries to
the in-process server (``netemu.proxy.local``) instead of relaying them, and clients, captures,
impairments and the connection log see what they saw through the relay."""
from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from collections.abc import Iterator

import pytest
from dnslib import DNSRecord

from netemu.dns.server import ClusterDNS
from netemu.proxy import local
from netemu.proxy.connlog import ConnectionRecord
from netemu.proxy.route import RelayContext, Route
from netemu.proxy.serviceport import Verdict
from netemu.proxy.udp import UDPListener
from netemu.proxy.worker import SharedStackSockets

from test_dns_helpers import config, fill, free_loopback, question, running, udp_exchange

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="port 53 and packet capture need root")

SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
"""
ETH_P_IP = 0x0800


class Capture:
    """Every UDP/IPv4 datagram on ``lo`` while open, once each (as tcpdump shows them)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        self.sock.bind(("lo", 0))
        self.sock.setblocking(False)

    def udp(self) -> list[tuple[tuple[str, int], tuple[str, int]]]:
        """(source, destination) of the UDP datagrams captured so far."""
        seen = []
        while True:
            try:
                packet, (_, _, pkttype, *_rest) = self.sock.recvfrom(65535)
            except BlockingIOError:
                return seen
            if pkttype == socket.PACKET_OUTGOING or packet[9] != socket.IPPROTO_UDP:
                continue
            header = (packet[0] & 0x0F) * 4
            sport, dport = struct.unpack_from("!HH", packet, header)
            seen.append(((socket.inet_ntoa(packet[12:16]), sport), (socket.inet_ntoa(packet[16:20]), dport)))

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def capture() -> Iterator[Capture]:
    cap = Capture()
    try:
        yield cap
    finally:
        cap.close()


def exchange(server: tuple[str, int], name: str, client_ip: str,
             timeout: float = 3.0) -> tuple[DNSRecord, tuple[str, int], tuple[str, int], float]:
    """One UDP query from a fresh socket on ``client_ip``: the answer, who sent it, the client's
    address and the seconds it took."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((client_ip, 0))
        sock.settimeout(timeout)
        started = time.monotonic()
        sock.sendto(question(name).pack(), server)
        data, source = sock.recvfrom(65535)
        return DNSRecord.parse(data), source, sock.getsockname(), time.monotonic() - started


async def dns_cluster(make_cluster):
    cluster = await make_cluster(nodes=1)
    await cluster.apply(SERVICE)
    await cluster.wait_ready(timeout=20)
    return cluster


@root_only
async def test_the_cluster_ip_answers_itself_with_no_hop_to_the_pod(make_cluster):
    cluster = await dns_cluster(make_cluster)
    dns = (cluster.config.dns_ip, cluster.dns_port)
    pod_ip = cluster.pods("kube-system")[0].status.pod_ip
    client_ip = free_loopback()
    with capture() as cap:
        answer, source, client, _ = await asyncio.to_thread(exchange, dns, "web.default.svc.cluster.local", client_ip)
        seen = cap.udp()
    assert [str(rr.rdata) for rr in answer.rr] == [cluster.service_ip("web")]
    assert source == dns  # as a DNAT'd answer: from the ClusterIP:53 to the client's address and port
    assert seen == [(client, dns), (dns, client)]  # relayed, the query would also go to the pod and back
    records = [r for r in cluster.connection_log("kube-system/kube-dns") if r.client == client]
    assert [(r.frontend, r.endpoint, r.outcome, r.service_port) for r in records] == [
        ("cluster-ip", f"{pod_ip}:{cluster.dns_port}", None, f"kube-system/kube-dns:{cluster.dns_port}/UDP")]


@root_only
async def test_an_impairment_on_kube_dns_still_delays_its_answers(make_cluster):
    cluster = await dns_cluster(make_cluster)
    dns = (cluster.config.dns_ip, cluster.dns_port)
    cluster.impair(service="kube-system/kube-dns", delay=0.15)
    answer, source, _, took = await asyncio.to_thread(exchange, dns, "web.default.svc.cluster.local",
                                                      free_loopback())
    assert [str(rr.rdata) for rr in answer.rr] == [cluster.service_ip("web")]
    assert source == dns
    assert took >= 0.3  # 150 ms each way


async def test_the_server_is_an_in_process_endpoint_while_its_socket_is_open():
    async with running() as server:
        address = (server.host, server.port)
        registered = local.lookup(address)
        assert registered is not None
        handler = registered.handler
        later: list[tuple[bytes, tuple[str, int]]] = []
        reply = lambda data, addr: later.append((data, addr))  # noqa: E731
        query = bytes(question("my-service.default.svc.cluster.local").pack())
        assert handler(query, ("127.0.0.9", 4444), reply) is None  # not cached yet: through reply
        direct = await udp_exchange(*address, query)
        assert later == [(direct, ("127.0.0.9", 4444))]
        assert handler(query, ("127.0.0.9", 4444), reply) == direct  # from the cache
        assert registered.ready is not None and query[:2] + registered.ready(query[2:]) == direct
        assert not registered.closing()

        server.udp_transport.close()  # as the container's stop closes it: no more answers at once
        later.clear()
        assert handler(query, ("127.0.0.9", 4444), reply) is None and later == []
        assert registered.closing()
        for _ in range(100):
            if local.lookup(address) is None:
                break
            await asyncio.sleep(0.01)
        assert local.lookup(address) is None


def test_only_loopback_addresses_are_registered():
    unregister = local.register(("10.244.0.5", 53), local.Server(lambda *a: None))
    assert local.lookup(("10.244.0.5", 53)) is None
    unregister()


async def test_a_flow_follows_a_server_restarted_at_the_same_address():
    """A flow keeps the server it found while that server answers; once it closes, the flow's
    datagrams go to a server started since at the same address (as relayed datagrams would reach
    whatever listens at the endpoint), and are lost while there is none."""
    async with running() as first:
        endpoint = (first.host, first.port)
        ctx = RelayContext(asyncio.get_running_loop(), SharedStackSockets(), in_process_udp=True)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((free_loopback(), 0))
        sock.setblocking(False)
        record = lambda client: ConnectionRecord(client=client, service_port="kube-system/kube-dns:53/UDP",  # noqa: E731
                                                 frontend="cluster-ip", node="node-1")
        listener = UDPListener(ctx, sock, lambda client: Route(Verdict.SERVE, record(client), address=endpoint))
        service = sock.getsockname()
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.bind((free_loopback(), 0))
        client.setblocking(False)
        loop = asyncio.get_running_loop()
        query = question("my-service.default.svc.cluster.local").pack()

        async def ask(wait: float = 30.0) -> bytes | None:
            client.sendto(query, service)
            try:
                return await asyncio.wait_for(loop.sock_recv(client, 65535), wait)
            except TimeoutError:
                return None
        try:
            answer = await ask()   # a miss: through the handler
            assert answer is not None and DNSRecord.parse(answer).rr
            assert await ask() == answer  # at hand, from the cache
            (flow,) = listener.flows.values()
            await first.close()
            assert await ask(wait=0.3) is None  # no server: lost
            second = ClusterDNS(config())
            fill(second)
            await second.start(host=endpoint[0], port=endpoint[1])
            try:
                assert await ask() == answer
                assert list(listener.flows.values()) == [flow]  # the same flow, now to the new server
            finally:
                await second.close()
        finally:
            client.close()
            ctx.close_all()
            listener.close()
            ctx.close()
