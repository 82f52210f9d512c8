"""The underlay wire: a userspace Ethernet switch joining the nodes' TAP devices.

Every node namespace has a TAP device ``eth0``; its file descriptor stays with netemu, and the
event loop moves each frame that a node sends to the node (or, for broadcasts and unknown
destinations, the nodes) it is for — a learning switch, as the bridge it replaces was. Because
every frame between nodes passes through here, the wire is where link impairments live (this
kernel has no netem): per directed link a one-way delay with jitter, loss, duplication and a
rate cap, and partitions that drop every frame between nodes in different groups. Frames on a
link keep their order (jitter never reorders them; netem's would).

With offload (``open_tap``) each frame starts with a virtio-net header the wire passes along
untouched (``header``), and TCP crosses in frames of up to 64 KiB; the two ends of a link set to
lose, rate-limit or duplicate turn the offload off while it lasts, so those act on MTU-sized
frames.

An unimpaired link forwards a frame as soon as it is read. An impaired one queues it: a lane
per (source node, destination node) holds frames with the time they are due, and one timer per
lane writes them out. With a rate the frame first waits for the lane to finish sending the ones
before it (serialization), then travels for the delay; a lane more than ``QUEUE_LIMIT`` frames
deep drops new ones, like tc's default queue limit.
"""
from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import random
import struct
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from netemu.errors import FabricError, InvalidError
from netemu.units import PERCENT_UNITS, RATE_UNITS, TIME_UNITS, parse_quantity

log = logging.getLogger(__name__)

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6 = 0x01, 0x02, 0x04
VNET_HDR_LEN = 10       # struct virtio_net_hdr, the TAP's default header size
MAX_FRAME = 65536 + 256
READ_BATCH = 256        # frames read per wake-up before the loop serves others
QUEUE_LIMIT = 1000      # frames waiting on one impaired lane


def open_tap(name: str, offload: bool = True) -> int:
    """Create TAP device ``name`` in the calling thread's network namespace; the non-blocking
    descriptor that carries its frames. The device disappears when the descriptor is closed.

    With ``offload`` every frame comes with a virtio-net header (``VNET_HDR_LEN`` bytes) and the
    device takes TCP segmentation and checksum offload: a node hands the wire TCP data in frames
    of up to 64 KiB, which the receiving node's kernel takes as they are (as between two VMs on a
    virtio bridge), instead of one Python step per 1,500 bytes. The wire passes the header along."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if offload else 0)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
        if offload:
            fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
    except OSError:
        os.close(fd)
        raise
    return fd


@dataclass(frozen=True)
class LinkImpairment:
    """What a link does to the frames crossing it, in one direction."""
    delay_ms: float = 0.0    # one-way delay
    jitter_ms: float = 0.0   # uniform variation of the delay, ± this much
    loss: float = 0.0        # probability that a frame is lost
    rate_kbit: float = 0.0   # bandwidth in kbit/s; 0 = unlimited
    duplicate: float = 0.0   # probability that a frame arrives twice

    def __post_init__(self) -> None:
        problems = [f"{name} must be >= 0, got {getattr(self, name):g}"
                    for name in ("delay_ms", "jitter_ms", "rate_kbit") if getattr(self, name) < 0]
        problems += [f"{name} must be between 0 and 1, got {getattr(self, name):g}"
                     for name in ("loss", "duplicate") if not 0 <= getattr(self, name) <= 1]
        if problems:
            raise InvalidError("link impairment: " + "; ".join(problems))

    @classmethod
    def parse(cls, *, delay: str | None = None, jitter: str | None = None, loss: str | None = None,
              rate: str | None = None, duplicate: str | None = None) -> "LinkImpairment":
        """From tc-netem-style text: ``50ms``, ``10%``, ``1mbit`` (see ``netemu.units``)."""
        return cls(delay_ms=parse_quantity(delay, TIME_UNITS, "ms", "delay"),
                   jitter_ms=parse_quantity(jitter, TIME_UNITS, "ms", "jitter"),
                   loss=parse_quantity(loss, PERCENT_UNITS, "%", "loss"),
                   rate_kbit=parse_quantity(rate, RATE_UNITS, "bit", "rate"),
                   duplicate=parse_quantity(duplicate, PERCENT_UNITS, "%", "duplicate"))

    @property
    def active(self) -> bool:
        return any((self.delay_ms, self.jitter_ms, self.loss, self.rate_kbit, self.duplicate))

    def then(self, other: "LinkImpairment") -> "LinkImpairment":
        """Both in a row: delays add, losses and duplications compound, the slower rate wins."""
        rates = [r for r in (self.rate_kbit, other.rate_kbit) if r]
        return LinkImpairment(delay_ms=self.delay_ms + other.delay_ms, jitter_ms=self.jitter_ms + other.jitter_ms,
                              loss=1 - (1 - self.loss) * (1 - other.loss), rate_kbit=min(rates) if rates else 0.0,
                              duplicate=1 - (1 - self.duplicate) * (1 - other.duplicate))

    def __str__(self) -> str:
        parts = [f"delay {self.delay_ms:g}ms" if self.delay_ms else "",
                 f"jitter {self.jitter_ms:g}ms" if self.jitter_ms else "",
                 f"loss {self.loss * 100:g}%" if self.loss else "",
                 f"rate {self.rate_kbit:g}kbit" if self.rate_kbit else "",
                 f"duplicate {self.duplicate * 100:g}%" if self.duplicate else ""]
        return " ".join(p for p in parts if p) or "none"


@dataclass
class LaneStats:
    frames: int = 0        # handed to the destination
    lost: int = 0          # dropped by the loss setting
    duplicated: int = 0
    cut: int = 0           # dropped by a partition
    overflow: int = 0      # dropped because the lane's queue was full

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Port:
    node: str
    fd: int
    offloading: bool = True  # the TAP takes (and hands out) frames larger than the MTU


@dataclass
class _Lane:
    """One direction of one link."""
    dst: _Port
    impairment: LinkImpairment | None = None
    queue: deque[tuple[float, bytes]] = field(default_factory=deque)
    timer: asyncio.TimerHandle | None = None
    busy_until: float = 0.0
    last_due: float = 0.0
    stats: LaneStats = field(default_factory=LaneStats)


_NONE = LinkImpairment()


class Wire:
    """Joins TAP descriptors of nodes; impairments and partitions change at any time."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, rng: random.Random | None = None,
                 header: int = 0):
        self.loop = loop or asyncio.get_running_loop()
        self.header = header  # bytes before the Ethernet header in every frame (VNET_HDR_LEN with offload)
        self.rng = rng or random.Random()
        self._ports: dict[str, _Port] = {}
        self._by_mac: dict[bytes, _Port] = {}
        self._lanes: dict[tuple[str, str], _Lane] = {}
        self._link_impairments: dict[tuple[str, str], LinkImpairment] = {}
        self._node_impairments: dict[str, LinkImpairment] = {}
        self._group: dict[str, int] = {}   # node -> partition group; absent: the group of the unnamed

    # ------------------------------------------------------------------ ports

    def attach(self, node: str, fd: int) -> None:
        if node in self._ports:
            raise FabricError(f'the wire has node "{node}" already')
        port = _Port(node, fd)
        self._ports[node] = port
        for other in self._ports.values():
            if other is not port:
                self._lanes[(node, other.node)] = _Lane(other)
                self._lanes[(other.node, node)] = _Lane(port)
        self._refresh()
        self.loop.add_reader(fd, self._on_readable, port)

    def detach(self, node: str) -> None:
        port = self._ports.pop(node, None)
        if port is None:
            return
        self.loop.remove_reader(port.fd)
        for key in [k for k in self._lanes if node in k]:
            lane = self._lanes.pop(key)
            if lane.timer is not None:
                lane.timer.cancel()
        self._by_mac = {mac: p for mac, p in self._by_mac.items() if p is not port}
        self._link_impairments = {k: v for k, v in self._link_impairments.items() if node not in k}
        self._node_impairments.pop(node, None)
        self._group.pop(node, None)
        os.close(port.fd)

    def close(self) -> None:
        for node in list(self._ports):
            self.detach(node)

    @property
    def nodes(self) -> list[str]:
        return list(self._ports)

    # ------------------------------------------------------------------ settings

    def impair(self, impairment: LinkImpairment | None, *, link: tuple[str, str] | None = None,
               node: str | None = None) -> None:
        """Set (None or an inactive one: clear) the impairment of a link, both directions, or of
        every link of a node. A frame's impairment is its link's, then its nodes' in a row."""
        if (link is None) == (node is None):
            raise InvalidError("impair: name exactly one of a link or a node")
        for name in (link or (node,)):
            self._known(name)
        if link is not None and link[0] == link[1]:
            raise InvalidError(f'impair: a link joins two different nodes, got "{link[0]}" twice')
        keep = impairment is not None and impairment.active
        if link is not None:
            for key in (link, (link[1], link[0])):
                if keep:
                    self._link_impairments[key] = impairment  # type: ignore[assignment]
                else:
                    self._link_impairments.pop(key, None)
        elif keep:
            self._node_impairments[node] = impairment  # type: ignore[index,assignment]
        else:
            self._node_impairments.pop(node, None)  # type: ignore[arg-type]
        self._refresh()

    def partition(self, groups: Sequence[Iterable[str]]) -> None:
        """Nodes in different groups stop hearing each other (nodes named in no group form one
        more group together). Replaces any earlier partition."""
        assignment: dict[str, int] = {}
        for number, group in enumerate(groups, start=1):
            for name in group:
                self._known(name)
                if name in assignment:
                    raise InvalidError(f'partition: node "{name}" is named in two groups')
                assignment[name] = number
        self._group = assignment

    def heal(self) -> None:
        self._group = {}

    def impairments(self) -> dict[str, str]:
        """What is set, for people: ``{"link a<->b": "delay 50ms", "node a": "loss 10%"}``."""
        shown = {f"node {n}": str(i) for n, i in sorted(self._node_impairments.items())}
        for (a, b), imp in sorted(self._link_impairments.items()):
            if a < b:
                shown[f"link {a}<->{b}"] = str(imp)
        return shown

    def partitions(self) -> list[list[str]]:
        """The groups as given, then the nodes named in none; [] when there is no partition."""
        groups: dict[int, list[str]] = {}
        for name in self._ports:
            groups.setdefault(self._group.get(name, 0), []).append(name)
        last = len(self._group) + 1
        return [sorted(g) for _n, g in sorted(groups.items(), key=lambda item: item[0] or last)] if self._group else []

    def stats(self) -> dict[tuple[str, str], LaneStats]:
        return {key: replace(lane.stats) for key, lane in self._lanes.items()}

    def _known(self, name: str) -> None:
        if name not in self._ports:
            raise InvalidError(f'node "{name}" is not on the wire (nodes: {", ".join(sorted(self._ports))})')

    def _refresh(self) -> None:
        per_frame: set[str] = set()
        for (src, dst), lane in self._lanes.items():
            combined: LinkImpairment | None = None
            for part in (self._link_impairments.get((src, dst)), self._node_impairments.get(src),
                         self._node_impairments.get(dst)):
                if part is not None:
                    combined = part if combined is None else combined.then(part)
            lane.impairment = combined
            if combined is not None and (combined.loss or combined.rate_kbit or combined.duplicate):
                per_frame |= {src, dst}
        if self.header:
            for port in self._ports.values():
                self._set_offload(port, port.node not in per_frame)

    def _set_offload(self, port: _Port, on: bool) -> None:
        """Loss, rate and duplication act on each frame as a real link's would only if frames are
        what a real link carries: the two ends of such a link stop taking TCP segmentation offload
        (their kernels then cut 64 KiB frames into MTU-sized ones), and take it back when cleared."""
        if port.offloading == on:
            return
        try:
            fcntl.ioctl(port.fd, TUNSETOFFLOAD, (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) if on else 0)
        except OSError as exc:
            log.warning("wire: %s offload on node %s: %s", "enabling" if on else "disabling", port.node, exc)
            return
        port.offloading = on

    # ------------------------------------------------------------------ frames

    def _on_readable(self, port: _Port) -> None:
        for _ in range(READ_BATCH):
            try:
                frame = os.read(port.fd, MAX_FRAME)
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("wire: reading node %s: %s", port.node, exc)
                return
            h = self.header
            if len(frame) < h + 14:
                continue
            src_mac, dst_mac = frame[h + 6:h + 12], frame[h:h + 6]
            if self._by_mac.get(src_mac) is not port:
                self._by_mac[src_mac] = port
            if dst_mac[0] & 1:
                targets = [p for p in self._ports.values() if p is not port]
            else:
                target = self._by_mac.get(dst_mac)
                if target is port:
                    continue
                targets = [target] if target is not None else [p for p in self._ports.values() if p is not port]
            for target in targets:
                self._send(self._lanes[(port.node, target.node)], port.node, target.node, frame)

    def _send(self, lane: _Lane, src: str, dst: str, frame: bytes) -> None:
        if self._group and self._group.get(src, 0) != self._group.get(dst, 0):
            lane.stats.cut += 1
            return
        imp = lane.impairment
        if imp is None:
            if not lane.queue:
                self._write(lane, frame)
                return
            imp = _NONE  # frames of a just-cleared impairment are still on their way: queue behind them
        rng = self.rng
        if imp.loss and rng.random() < imp.loss:
            lane.stats.lost += 1
            return
        if len(lane.queue) >= QUEUE_LIMIT:
            lane.stats.overflow += 1
            return
        now = self.loop.time()
        due = now
        if imp.rate_kbit:
            start = max(now, lane.busy_until)
            lane.busy_until = start + len(frame) * 8 / (imp.rate_kbit * 1000)
            due = lane.busy_until
        due += imp.delay_ms / 1000
        if imp.jitter_ms:
            due += rng.uniform(-imp.jitter_ms, imp.jitter_ms) / 1000
        due = max(due, lane.last_due)  # never reorder
        lane.last_due = due
        lane.queue.append((due, frame))
        if imp.duplicate and rng.random() < imp.duplicate:
            lane.stats.duplicated += 1
            lane.queue.append((due, frame))
        if lane.timer is None:
            self._flush(lane)

    def _flush(self, lane: _Lane) -> None:
        lane.timer = None
        queue = lane.queue
        now = self.loop.time()
        while queue and queue[0][0] <= now:
            self._write(lane, queue.popleft()[1])
        if queue:
            lane.timer = self.loop.call_at(queue[0][0], self._flush, lane)

    def _write(self, lane: _Lane, frame: bytes) -> None:
        try:
            os.write(lane.dst.fd, frame)
        except OSError as exc:  # the device is going away, or its queue is full: the frame is lost
            lane.stats.overflow += 1
            log.debug("wire: writing to node %s: %s", lane.dst.node, exc)
            return
        lane.stats.frames += 1


def as_groups(groups: Any) -> list[list[str]]:
    """Partition groups from a caller: a list of lists (or comma-separated strings) of node names."""
    result = []
    for group in groups:
        names = group.split(",") if isinstance(group, str) else list(group)
        names = [n.strip() for n in names if n.strip()]
        if not names:
            raise InvalidError("partition: a group names no node")
        result.append(names)
    if not result:
        raise InvalidError("partition: name at least one group of nodes")
    return result


__all__ = ["LinkImpairment", "LaneStats", "Wire", "open_tap", "as_groups"]
