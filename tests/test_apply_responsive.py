"""A big apply never stalls the data plane: cluster DNS and the service proxy keep answering
while 10,000 Services are applied, and the control plane's slices (store delivery, controller
work queues) leave the loop free between them."""
from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

import pytest
from dnslib import RCODE, DNSRecord

from netemu.api.objects import Namespace, ObjectMeta
from netemu.controllers.workqueue import WorkQueue
from netemu.store import Store

SERVICES = 10_000
PROBE_EVERY = 0.1
PROBE_TIMEOUT = 1.0


@dataclass
class Probes:
    """DNS queries to the kube-dns ClusterIP (through the proxy to the DNS pod), over UDP and TCP
    in turn, every PROBE_EVERY seconds from a thread of their own (the cluster's loop cannot
    delay the prober, only its answers)."""

    host: str
    port: int
    qname: str
    sent: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            started = time.monotonic()
            transport = "tcp" if n % 2 else "udp"
            n += 1
            try:
                reply = self._ask(transport)
                if RCODE[reply.header.rcode] != "NOERROR" or not reply.rr:
                    self.failures.append(f"{transport} probe {n}: {RCODE[reply.header.rcode]} {reply.rr}")
            except OSError as exc:
                self.failures.append(f"{transport} probe {n}: no answer within {PROBE_TIMEOUT}s ({exc!r})")
            self.sent += 1
            self.stop.wait(max(0.0, PROBE_EVERY - (time.monotonic() - started)))

    def _ask(self, transport: str) -> DNSRecord:
        query = DNSRecord.question(self.qname, "A")
        if transport == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(PROBE_TIMEOUT)
                s.sendto(query.pack(), (self.host, self.port))
                return DNSRecord.parse(s.recv(4096))
        with socket.create_connection((self.host, self.port), timeout=PROBE_TIMEOUT) as s:
            payload = query.pack()
            s.sendall(struct.pack("!H", len(payload)) + payload)
            deadline = time.monotonic() + PROBE_TIMEOUT
            data = b""
            while len(data) < 2 or len(data) < 2 + struct.unpack("!H", data[:2])[0]:
                s.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionResetError("closed before the answer")
                data += chunk
            return DNSRecord.parse(data[2:])


def _services(count: int) -> str:
    return "".join(f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: bulk-{i}}}\n"
                   f"spec:\n  ports: [{{name: http, port: 80}}]\n" for i in range(count))


@pytest.mark.slow
async def test_dns_and_proxy_answer_every_probe_while_10000_services_are_applied(make_cluster):
    cluster = await make_cluster()
    await cluster.wait_ready(timeout=20)
    probes = Probes(cluster.config.dns_ip, cluster.dns_port, "kubernetes.default.svc.cluster.local")
    prober = threading.Thread(target=probes.run, daemon=True)
    prober.start()
    try:
        started = time.monotonic()
        lines = await cluster.apply(_services(SERVICES))
        applying = time.monotonic() - started
        sent_during_apply = probes.sent
    finally:
        probes.stop.set()
        await asyncio.to_thread(prober.join)
    assert len(lines) == SERVICES
    assert probes.failures == [], (f"{len(probes.failures)} of {probes.sent} probes failed "
                                   f"during a {applying:.1f}s apply")
    assert sent_during_apply >= 3  # the apply lasted long enough for the probes to mean something
    last = cluster.service_ip(f"bulk-{SERVICES - 1}")
    reply = await asyncio.to_thread(
        Probes(cluster.config.dns_ip, cluster.dns_port, f"bulk-{SERVICES - 1}.default.svc.cluster.local")._ask, "udp")
    assert [str(rr.rdata) for rr in reply.rr] == [last]


# ---------------------------------------------------------------------------- the slices


def _namespace(name: str) -> Namespace:
    return Namespace(metadata=ObjectMeta(name=name))


async def test_store_delivers_a_burst_in_slices_and_settled_waits_for_all(monkeypatch):
    monkeypatch.setattr("netemu.store.DRAIN_SLICE", 0.0)  # one event per loop turn
    store = Store()
    delivered: list[str] = []
    store.subscribe(lambda e: delivered.append(e.obj.metadata.name))
    for i in range(50):
        store.create(_namespace(f"ns-{i}"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert 0 < len(delivered) < 50  # the loop got turns in between
    await store.settled()
    assert delivered == [f"ns-{i}" for i in range(50)]  # all of them, in order
    assert store.idle


async def test_store_events_caused_by_delivery_are_waited_for_too():
    store = Store()
    seen: list[str] = []

    def cascade(event) -> None:
        seen.append(event.obj.metadata.name)
        if event.type == "ADDED" and event.obj.metadata.name.count("-") < 3:
            store.create(_namespace(event.obj.metadata.name + "-x"))
    store.subscribe(cascade)
    store.create(_namespace("a"))
    await store.settled()
    assert seen == ["a", "a-x", "a-x-x", "a-x-x-x"]


async def test_work_queue_processes_a_burst_over_several_turns_in_order(monkeypatch):
    monkeypatch.setattr("netemu.controllers.workqueue.SLICE", 0.0)
    done: list[int] = []
    queue: WorkQueue[int] = WorkQueue(done.append, "test")
    for key in range(20):
        queue.add(key)
    await asyncio.sleep(0)
    assert 0 < len(done) < 20 and not queue.idle
    queue.add(0)  # already processed: runs again, after the keys still waiting
    while not queue.idle:
        await asyncio.sleep(0)
    assert done == list(range(20)) + [0]
