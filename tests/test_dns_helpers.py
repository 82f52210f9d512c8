"""Shared pieces of the DNS tests: a cluster fixture (objects fed to a DNSIndex), a server on a
127.x address, and small UDP/TCP clients built on dnslib. No tests here."""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
from collections.abc import AsyncIterator, Iterable

import asyncio_dgram
from dnslib import EDNS0, QTYPE, RR, DNSRecord

from netemu.api.objects import (Endpoint, EndpointConditions, EndpointPort, EndpointSlice, Namespace, ObjectMeta, Pod,
                                PodIP, PodSpec, PodStatus, Service, ServicePort, ServiceSpec)
from netemu.dns import ClusterDNS, DNSConfig, DNSIndex

DNS_IP = "10.96.0.10"
REVERSE_CIDRS = ("10.96.0.0/12", "10.244.0.0/16", "fd00:10:96::/112")
NAMESPACES = ("default", "kube-system", "prod", "empty")
_hosts = itertools.count(2)


def free_loopback() -> str:
    """A fresh 127.53.x.y address for one server, so tests never share a port."""
    n = next(_hosts)
    return f"127.53.{n // 250}.{n % 250 + 1}"


def service(ns: str, name: str, cluster_ip: str = "", ports: Iterable[tuple[str, str, int]] = (), *,
            type: str = "ClusterIP", external_name: str = "", publish: bool = False,
            cluster_ips: tuple[str, ...] = (), external_ips: tuple[str, ...] = (), rv: str = "1") -> Service:
    ips = cluster_ips or ((cluster_ip,) if cluster_ip else ())
    return Service(metadata=ObjectMeta(name=name, namespace=ns, resource_version=rv),
                   spec=ServiceSpec(type=type, cluster_ip=ips[0] if ips else "", cluster_ips=ips,
                                    ports=tuple(ServicePort(name=n, protocol=p, port=port) for n, p, port in ports),
                                    external_name=external_name, publish_not_ready_addresses=publish,
                                    external_ips=external_ips))


def endpoint_slice(ns: str, svc: str, ports: Iterable[tuple[str, str, int]],
                   endpoints: Iterable[tuple[str, str | None, bool]], name: str = "", rv: str = "1") -> EndpointSlice:
    return EndpointSlice(
        metadata=ObjectMeta(name=name or f"{svc}-abcde", namespace=ns, resource_version=rv,
                            labels={EndpointSlice.SERVICE_NAME_LABEL: svc}),
        address_type="IPv4",
        endpoints=tuple(Endpoint(addresses=(ip,), hostname=host, conditions=EndpointConditions(ready=ready))
                        for ip, host, ready in endpoints),
        ports=tuple(EndpointPort(name=n, protocol=p, port=port) for n, p, port in ports))


def namespace(name: str) -> Namespace:
    return Namespace(metadata=ObjectMeta(name=name))


def pod(ns: str, name: str, ip: str, hostname: str = "", subdomain: str = "") -> Pod:
    return Pod(metadata=ObjectMeta(name=name, namespace=ns),
               spec=PodSpec(hostname=hostname, subdomain=subdomain),
               status=PodStatus(phase="Running", pod_ip=ip, pod_ips=(PodIP(ip=ip),)))


HTTP = [("http", "TCP", 80)]
BIG_ENDPOINTS = [(f"10.244.3.{i}", None, True) for i in range(1, 41)]


def cluster_objects() -> tuple[list[Service], list[EndpointSlice], list[Pod]]:
    """The fixture cluster of the DNS tests (names follow the walkthrough where it has them)."""
    services = [
        service("kube-system", "kube-dns", DNS_IP, [("dns", "UDP", 53), ("dns-tcp", "TCP", 53)]),
        service("default", "my-nginx", "10.96.0.20", [("", "TCP", 80)]),
        service("default", "my-service", "10.96.0.11", [("http", "TCP", 80), ("https", "TCP", 443)]),
        service("default", "svc-empty", "10.96.0.12", HTTP),
        service("default", "dual", cluster_ips=("10.96.0.30", "fd00:10:96::30"), ports=HTTP),
        service("default", "hdls", "None", HTTP),
        service("default", "hdls-unready", "None", HTTP),
        service("default", "hdls-publish", "None", HTTP, publish=True),
        service("default", "hdls-portless", "None"),
        service("default", "busybox-subdomain", "None", [("foo", "TCP", 1234)]),
        service("default", "big", "None", HTTP),
        service("prod", "my-service", type="ExternalName", external_name="my.database.example.com"),
        service("prod", "ext-ip", type="ExternalName", external_name="1.2.3.4"),
        service("prod", "ext-internal", type="ExternalName", external_name="my-service.default.svc.cluster.local"),
    ]
    slices = [
        endpoint_slice("kube-system", "kube-dns", [("dns", "UDP", 53), ("dns-tcp", "TCP", 53)],
                       [("10.244.0.2", None, True)]),
        endpoint_slice("default", "my-nginx", [("", "TCP", 80)],
                       [("10.244.1.5", None, True), ("10.244.2.6", None, True)]),
        endpoint_slice("default", "my-service", [("http", "TCP", 9376), ("https", "TCP", 9377)],
                       [("10.244.1.7", None, True)]),
        endpoint_slice("default", "hdls", HTTP,
                       [("10.244.1.10", "web-0", True), ("10.244.1.11", None, True), ("10.244.2.12", None, False)]),
        endpoint_slice("default", "hdls-unready", HTTP, [("10.244.2.13", None, False)]),
        endpoint_slice("default", "hdls-publish", HTTP, [("10.244.2.14", None, False)]),
        endpoint_slice("default", "hdls-portless", [], [("10.244.1.15", None, True)]),
        endpoint_slice("default", "busybox-subdomain", [("foo", "TCP", 1234)],
                       [("10.244.1.20", "busybox-1", True)]),
        endpoint_slice("default", "big", HTTP, BIG_ENDPOINTS),
    ]
    pods = [pod("default", "busybox1", "10.244.1.20", hostname="busybox-1", subdomain="busybox-subdomain")]
    return services, slices, pods


def fill(index_or_server: DNSIndex | ClusterDNS) -> None:
    services, slices, pods = cluster_objects()
    for name in NAMESPACES:
        index_or_server.on_namespace(None, namespace(name))
    for s in services:
        index_or_server.on_service(None, s)
    for es in slices:
        index_or_server.on_endpointslice(None, es)
    for p in pods:
        index_or_server.on_pod(None, p)


def config(**overrides: object) -> DNSConfig:
    values: dict[str, object] = {"dns_ip": DNS_IP, "reverse_cidrs": REVERSE_CIDRS}
    values.update(overrides)
    return DNSConfig(**values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running(**overrides: object) -> AsyncIterator[ClusterDNS]:
    """A filled ClusterDNS serving UDP and TCP on a fresh 127.53.x.y, port 0."""
    server = ClusterDNS(config(**overrides))
    fill(server)
    await server.start(host=free_loopback(), port=0)
    try:
        yield server
    finally:
        await server.close()


# ---------------------------------------------------------------------------- clients


def question(qname: str, qtype: str | int = "A", *, edns: int | None = None, do: bool = False) -> DNSRecord:
    q = DNSRecord.question(qname, "A")
    q.q.qtype = qtype if isinstance(qtype, int) else getattr(QTYPE, qtype)
    if edns is not None or do:
        q.add_ar(EDNS0(udp_len=edns or 1232, flags="do" if do else ""))
    return q


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.queue.put_nowait(data)


@contextlib.asynccontextmanager
async def udp_client(host: str, port: int) -> AsyncIterator[tuple[asyncio.DatagramTransport, asyncio.Queue[bytes]]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_Collector, remote_addr=(host, port))
    try:
        yield transport, protocol.queue
    finally:
        transport.close()


async def udp_exchange(host: str, port: int, payload: bytes, timeout: float = 2.0) -> bytes:
    """One query and its reply, from a connected UDP client."""
    client = await asyncio_dgram.connect((host, port))
    try:
        await client.send(payload)
        data, _ = await asyncio.wait_for(client.recv(), timeout)
    finally:
        client.close()
    return data


async def tcp_exchange(host: str, port: int, *payloads: bytes, timeout: float = 2.0) -> list[bytes]:
    """Send every payload on one connection, then read as many replies."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"".join(struct.pack("!H", len(p)) + p for p in payloads))
        await writer.drain()
        replies = []
        for _ in payloads:
            (size,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), timeout))
            replies.append(await asyncio.wait_for(reader.readexactly(size), timeout))
        return replies
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def ask(server: ClusterDNS, q: DNSRecord, transport: str = "udp") -> DNSRecord:
    if transport == "udp":
        return DNSRecord.parse(await udp_exchange(server.host, server.port, q.pack()))
    (reply,) = await tcp_exchange(server.host, server.port, q.pack())
    return DNSRecord.parse(reply)


def zone_rrs(lines: Iterable[str], serial: int) -> list[RR]:
    out: list[RR] = []
    for line in lines:
        out.extend(RR.fromZone(line.replace("{serial}", str(serial))))
    return out


def canon(rrs: Iterable[RR]) -> list[str]:
    """Records as sorted zone lines (lowercase: names compare case-insensitively)."""
    return sorted(" ".join(rr.toZone().split()).lower() for rr in rrs)


def loopback_v4_ok() -> bool:
    try:
        with socket.socket() as s:
            s.bind(("127.53.0.1", 0))
        return True
    except OSError:
        return False
