"""Packet capture on the netns backend: raw sockets in the cluster's namespaces, pcapng out.

A ``Capture`` reads frames from AF_PACKET sockets, each made inside the namespace of what it
watches (a pod's ``eth0``, a node's ``eth0`` on the underlay) and filtered in the kernel by a
BPF program compiled from a tcpdump-style expression (scapy, through libpcap). The event loop
reads them and scapy's ``PcapNgWriter`` writes them, each under an interface named after the pod
or node it was seen on, with its direction, so tshark, Wireshark and tcpdump read the file as
any other capture. Parsing every frame with scapy suits the modest rates of an emulated cluster
(some ten thousand frames a second); the kernel filter keeps the rest away.

``flows`` sums a capture up per flow (protocol, source, destination), with addresses shown as
the names the caller knows them by (pods, services, nodes).
"""
from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netemu.errors import FabricError, InvalidError

log = logging.getLogger(__name__)

ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4
DLT_EN10MB = 1
READ_BATCH = 256


@dataclass(frozen=True)
class Tap:
    """One place to watch: an interface in a namespace, and its name in the capture file."""
    label: str                 # e.g. "default/client:eth0", "node-1:eth0"
    netns: Any                 # a namespace name (or Path) for namespaces.call_in
    ifname: str
    bpf: str = ""              # extra filter for this tap, ANDed with the user's


def compile_filter(expression: str) -> Any:
    """A classic BPF program for Ethernet frames; InvalidError naming the expression if it is not one."""
    try:
        from scapy.arch.common import compile_filter as scapy_compile
        return scapy_compile(expression, linktype=DLT_EN10MB)
    except ImportError as exc:
        raise FabricError("packet capture needs scapy with libpcap (Debian package libpcap0.8 or tcpdump)") from exc
    except Exception as exc:  # noqa: BLE001 - scapy raises its own Scapy_Exception
        text = str(exc)
        reason = text[text.rfind("(") + 1:].rstrip(")") if text.endswith(")") else text
        raise InvalidError(f'capture filter "{expression}": {reason}') from exc


def combine(*expressions: str) -> str:
    parts = [f"({e})" for e in expressions if e and e.strip()]
    return " and ".join(parts)


def open_packet_socket(ifname: str, program: Any | None) -> socket.socket:
    """An AF_PACKET socket on ``ifname`` of the calling thread's namespace, filter attached before
    bind so nothing unfiltered is queued."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        if program is not None:
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(program))
        sock.bind((ifname, ETH_P_ALL))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass
class Flow:
    protocol: str
    src: str
    dst: str
    packets: int = 0
    bytes: int = 0


@dataclass
class Capture:
    """Frames from ``taps`` into ``path`` until ``stop`` (or ``count`` frames)."""
    path: Path
    taps: Sequence[Tap]
    count: int = 0
    frames: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    _sockets: list[socket.socket] = field(default_factory=list)
    _writer: Any = None
    _flows: dict[tuple[str, str, str], Flow] = field(default_factory=dict)

    async def start(self, filter_expression: str, call_in: Callable[..., Any]) -> None:
        from scapy.layers import inet, inet6, l2  # noqa: F401 - their bindings must exist before the first frame
        from scapy.utils import PcapNgWriter
        if filter_expression.strip():
            compile_filter(filter_expression)  # its own mistakes named as the user wrote it
        programs = [compile_filter(combine(tap.bpf, filter_expression)) if combine(tap.bpf, filter_expression)
                    else None for tap in self.taps]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = PcapNgWriter(str(self.path))
        except OSError as exc:
            raise InvalidError(f"capture file {self.path}: {exc.strerror or exc}") from exc
        loop = asyncio.get_running_loop()
        try:
            for tap, program in zip(self.taps, programs):
                sock = await call_in(tap.netns, open_packet_socket, tap.ifname, program)
                self._sockets.append(sock)
                loop.add_reader(sock.fileno(), self._on_readable, sock, tap)
        except BaseException:
            self.stop()
            raise

    def _on_readable(self, sock: socket.socket, tap: Tap) -> None:
        from scapy.layers.l2 import Ether
        for _ in range(READ_BATCH):
            try:
                frame, address = sock.recvfrom(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("capture on %s: %s", tap.label, exc)
                return
            packet = Ether(frame)
            packet.time = time.time()
            packet.sniffed_on = tap.label
            packet.direction = 2 if address[2] == PACKET_OUTGOING else 1
            self._writer.write(packet)
            self._count_flow(packet, len(frame))
            self.frames += 1
            if self.count and self.frames >= self.count:
                self.stop()
                return

    def _count_flow(self, packet: Any, size: int) -> None:
        from scapy.layers.inet import IP, TCP, UDP, ICMP
        from scapy.layers.l2 import ARP
        if IP in packet:
            ip = packet[IP]
            layer = TCP if TCP in packet else UDP if UDP in packet else None
            if layer is not None:
                protocol = layer.__name__
                src, dst = f"{ip.src}:{packet[layer].sport}", f"{ip.dst}:{packet[layer].dport}"
            else:
                protocol = "ICMP" if ICMP in packet else f"IP/{ip.proto}"
                src, dst = ip.src, ip.dst
        elif ARP in packet:
            protocol, src, dst = "ARP", packet[ARP].psrc, packet[ARP].pdst
        else:
            protocol, src, dst = f"ether/{packet.type:#06x}", packet.src, packet.dst
        flow = self._flows.setdefault((protocol, src, dst), Flow(protocol, src, dst))
        flow.packets += 1
        flow.bytes += size

    def stop(self) -> None:
        """Stop reading and close the file; idempotent."""
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets.clear()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.done.set()

    def flows(self) -> list[Flow]:
        return sorted(self._flows.values(), key=lambda f: (-f.packets, f.protocol, f.src, f.dst))


def summary(flows: Sequence[Flow], names: Mapping[str, str]) -> list[str]:
    """One line per flow: ``TCP  default/client:40312 -> svc default/web:80  12 packets  1.9 kB``,
    addresses replaced by ``names`` (address -> name) where known."""
    def shown(endpoint: str) -> str:
        host, sep, port = endpoint.rpartition(":") if endpoint.count(":") == 1 else (endpoint, "", "")
        if not sep:
            host, port = endpoint, ""
        name = names.get(host, host)
        return f"{name}:{port}" if port else name

    rows = [(f.protocol, shown(f.src), shown(f.dst), f.packets, f.bytes) for f in flows]
    if not rows:
        return ["no packets"]
    width_src = max(len(r[1]) for r in rows)
    width_dst = max(len(r[2]) for r in rows)
    return [f"{proto:<5} {src:<{width_src}} -> {dst:<{width_dst}}  {packets} packets  {size} bytes"
            for proto, src, dst, packets, size in rows]


__all__ = ["Capture", "Flow", "Tap", "combine", "compile_filter", "summary"]
