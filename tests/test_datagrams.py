"""Datagrams in batches (``netemu.proxy.datagrams``): one recvmmsg for what is waiting, answers
written in place and sent with one sendmmsg, on real sockets; and the two readers built on it,
the cluster DNS's UDP socket and the proxy's UDP listener."""
from __future__ import annotations

import asyncio
import socket

from dnslib import DNSRecord

from netemu.proxy.connlog import ConnectionRecord
from netemu.proxy.datagrams import ONE_BY_ONE, SLOT_SIZE, DatagramBatch, sender_name
from netemu.proxy.route import RelayContext, Route
from netemu.proxy.serviceport import Verdict
from netemu.proxy.udp import UDPListener
from netemu.proxy.worker import SharedStackSockets

from test_dns_helpers import free_loopback, question, running


def udp_socket(host: str = "127.0.0.1", family: int = socket.AF_INET) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    return sock


def test_a_batch_takes_what_is_waiting_and_answers_each_sender_in_place():
    server = udp_socket(free_loopback())
    clients = [udp_socket(free_loopback()) for _ in range(3)]
    try:
        sent = []
        for n in range(2):
            for c, client in enumerate(clients):
                data = bytes([c, n]) + b"query" * (c + 1)
                client.sendto(data, server.getsockname())
                sent.append((data, client.getsockname()))
        batch = DatagramBatch()
        lengths = batch.receive(server.fileno())
        assert [(batch.datagram(i, n), batch.address(i)) for i, n in enumerate(lengths)] == sent
        assert batch.sender(0) != batch.sender(1) and batch.sender(0) == batch.sender(3)
        assert [batch.sender(i) for i in range(len(sent))] == [sender_name(address) for _, address in sent]
        for i, (data, _) in enumerate(sent):
            batch.answer(i, b"answer to " + data[2:])
        batch.send_answers()
        for c, client in enumerate(clients):
            client.settimeout(5)
            # each client gets its answers, in order, from the server's address, each with its ID
            assert [client.recvfrom(100) for _ in range(2)] == [
                (bytes([c, n]) + b"answer to " + b"query" * (c + 1), server.getsockname()) for n in range(2)]
        assert batch.receive(server.fileno()) == []  # nothing waiting: an empty batch, no wait
    finally:
        for sock in (server, *clients):
            sock.close()


def test_a_batch_takes_at_most_its_slots_and_the_largest_datagram_whole():
    server, client = udp_socket(), udp_socket()
    try:
        big = bytes(range(256)) * 255 + b"end"  # 65,283 bytes
        client.sendto(big, server.getsockname())
        for n in range(5):
            client.sendto(b"%d" % n, server.getsockname())
        batch = DatagramBatch(slots=4)
        lengths = batch.receive(server.fileno())
        assert lengths == [len(big), 1, 1, 1] and len(big) < SLOT_SIZE
        assert batch.datagram(0, lengths[0]) == big
        assert [batch.datagram(i, 1) for i in range(1, 4)] == [b"0", b"1", b"2"]
        assert [batch.datagram(i, n) for i, n in enumerate(batch.receive(server.fileno()))] == [b"3", b"4"]
    finally:
        server.close()
        client.close()


def test_a_batch_names_ipv6_senders_as_recvfrom_does():
    server, client = udp_socket("::1", socket.AF_INET6), udp_socket("::1", socket.AF_INET6)
    try:
        client.sendto(b"\x00\x07hello", server.getsockname())
        batch = DatagramBatch(socket.AF_INET6)
        (length,) = batch.receive(server.fileno())
        assert batch.address(0) == client.getsockname()
        assert batch.sender(0) == sender_name(client.getsockname())
        batch.answer(0, b"hi")
        batch.send_answers()
        client.settimeout(5)
        assert client.recvfrom(100) == (b"\x00\x07hi", server.getsockname())
    finally:
        server.close()
        client.close()


async def test_one_clients_answers_keep_their_order_around_a_query_not_in_the_cache():
    """Ten queries waiting together: the first few read the plain way, the rest in a batch, where
    one not in the cache is answered on its own between answers from the cache written in their
    slots; the client gets them in the order it asked."""
    async with running() as server:
        client = udp_socket(free_loopback())
        client.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            cached = question("my-service.default.svc.cluster.local").pack()
            client.sendto(cached, (server.host, server.port))
            await asyncio.wait_for(loop.sock_recv(client, 65535), 30)  # now in the cache
            queries = [bytes([0x10 + n]) + cached[1:] for n in range(10)]
            assert ONE_BY_ONE < 7
            queries[7] = bytes([0x17]) + question("other.default.svc.cluster.local", "AAAA").pack()[1:]
            for query in queries:  # all ten wait in the socket before the server reads
                client.sendto(query, (server.host, server.port))
            answers = [await asyncio.wait_for(loop.sock_recv(client, 65535), 30) for _ in queries]
            assert [DNSRecord.parse(a).header.id for a in answers] == [DNSRecord.parse(q).header.id for q in queries]
        finally:
            client.close()


async def test_a_relayed_flow_carries_the_largest_datagram_and_keeps_one_flow_per_client():
    """The proxy's UDP listener reads in batches: a relayed flow still carries any datagram whole,
    and each client address gets its own flow, named by its address."""
    loop = asyncio.get_running_loop()
    echo = udp_socket(free_loopback())
    echo.setblocking(False)

    def reflect() -> None:
        while True:
            try:
                data, peer = echo.recvfrom(65535)
            except BlockingIOError:
                return
            echo.sendto(data, peer)
    loop.add_reader(echo.fileno(), reflect)
    ctx = RelayContext(loop, SharedStackSockets())
    service = udp_socket(free_loopback())
    service.setblocking(False)
    record = lambda client: ConnectionRecord(client=client, service_port="default/echo:7/UDP",  # noqa: E731
                                             frontend="cluster-ip", node="node-1")
    listener = UDPListener(ctx, service, lambda client: Route(Verdict.SERVE, record(client),
                                                             address=echo.getsockname()))
    clients = [udp_socket(free_loopback()) for _ in range(2)]
    try:
        big = b"x" * 65000
        for client in clients:
            client.setblocking(False)
            client.sendto(big, service.getsockname())
            client.sendto(b"small", service.getsockname())
        for client in clients:
            got = [await asyncio.wait_for(loop.sock_recv(client, 65535), 30) for _ in range(2)]
            assert got == [big, b"small"]
        assert sorted(flow.client for flow in listener.flows.values()) == sorted(c.getsockname() for c in clients)
        assert all(flow.up == len(big) + 5 and flow.down == len(big) + 5 for flow in listener.flows.values())
    finally:
        loop.remove_reader(echo.fileno())
        for sock in (echo, *clients):
            sock.close()
        ctx.close_all()
        listener.close()
        ctx.close()


async def test_queries_waiting_at_a_service_address_are_answered_in_order_and_counted():
    """Queries that wait together at the proxy's listener for an in-process DNS server: the first
    read the plain way, the rest in a batch (answers from the cache written in their slots, one
    not in the cache answered on its own); the client gets every answer in order, from the
    service address, and the flow counts every byte."""
    async with running() as server:
        loop = asyncio.get_running_loop()
        ctx = RelayContext(loop, SharedStackSockets(), in_process_udp=True)
        service = udp_socket(free_loopback())
        service.setblocking(False)
        record = lambda client: ConnectionRecord(client=client, service_port="kube-system/kube-dns:53/UDP",  # noqa: E731
                                                 frontend="cluster-ip", node="node-1")
        listener = UDPListener(ctx, service, lambda client: Route(Verdict.SERVE, record(client),
                                                                 address=(server.host, server.port)))
        client = udp_socket(free_loopback())
        client.setblocking(False)
        try:
            cached = question("my-service.default.svc.cluster.local").pack()
            client.sendto(cached, service.getsockname())
            first = await asyncio.wait_for(loop.sock_recv(client, 65535), 30)
            queries = [bytes([n]) + cached[1:] for n in range(40)]
            queries[20] = bytes([20]) + question("other.default.svc.cluster.local", "AAAA").pack()[1:]
            for query in queries:
                client.sendto(query, service.getsockname())
            answers = []
            for _ in queries:
                data, source = await asyncio.wait_for(loop.sock_recvfrom(client, 65535), 30)
                answers.append(data)
                assert source == service.getsockname()
            assert [a[0] for a in answers] == list(range(40))
            assert {a[1:] for n, a in enumerate(answers) if n != 20} == {first[1:]}
            (flow,) = listener.flows.values()
            assert flow.up == len(cached) + sum(map(len, queries))
            assert flow.down == len(first) + sum(map(len, answers))
        finally:
            client.close()
            ctx.close_all()
            listener.close()
            ctx.close()
