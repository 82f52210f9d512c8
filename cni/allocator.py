"""host-local's pure allocation logic: ranges, range sets, the round-robin order, and the
allocator that claims addresses through a ``Store``.

Owns the rules of the reference plugin (``plugins/ipam/host-local/backend/allocator``): a range
defaults to ``network+1`` .. ``broadcast-1`` (IPv4) with gateway ``network+1``, the gateway is
never handed out, allocation starts after the range set's last reserved IP and wraps around, one
IP per ``(container, ifname)`` per range set, and the reference's error wording. No I/O besides
the Store it is given; the caller holds ``store.locked()``.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterator, Sequence

from netemu.errors import CNIError

from .store import Store
from .types import ErrorCode, IPAddress, IPConfig, IPNetwork, RangeSpec


def _invalid(msg: str) -> CNIError:
    return CNIError(ErrorCode.INVALID_NETWORK_CONFIG, msg)


def _failed(msg: str) -> CNIError:
    # The reference reports allocation failures as untyped errors, which libcni turns into 999.
    return CNIError(ErrorCode.INTERNAL, msg)


def last_ip(subnet: IPNetwork) -> IPAddress:
    """The default range end: the broadcast address minus one for IPv4, the last one for IPv6."""
    return subnet.broadcast_address - 1 if subnet.version == 4 else subnet.broadcast_address


@dataclass(frozen=True)
class Range:
    """A range with every bound filled in (``start`` and ``end`` inclusive)."""

    subnet: IPNetwork
    start: IPAddress
    end: IPAddress
    gateway: IPAddress

    def in_range_error(self, ip: IPAddress) -> str | None:
        """Why ``ip`` is not allocatable from this range, or None when it is."""
        if ip.version != self.subnet.version:
            return f"IP {ip} is not the same protocol as subnet {self.subnet}"
        if ip not in self.subnet:
            return f"{ip} not in network {self.subnet}"
        if ip < self.start:
            return f"{ip} is in network {self.subnet} but before start {self.start}"
        if ip > self.end:
            return f"{ip} is in network {self.subnet} but after end {self.end}"
        return None

    def contains(self, ip: IPAddress) -> bool:
        return self.in_range_error(ip) is None

    def overlaps(self, other: Range) -> bool:
        if self.subnet.version != other.subnet.version:
            return False
        return (self.contains(other.start) or self.contains(other.end)
                or other.contains(self.start) or other.contains(self.end))

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"


def canonical_range(spec: RangeSpec) -> Range:
    """Fills in a range's defaults and checks them, in the reference's words."""
    subnet = spec.subnet
    if subnet.prefixlen > subnet.max_prefixlen - 2:
        raise _invalid(f"Network {subnet} too small to allocate from")
    first = subnet.network_address + 1
    gateway = spec.gateway if spec.gateway is not None else first
    if gateway.version != subnet.version or gateway not in subnet:
        raise _invalid(f"gateway {gateway} not in network {subnet}")
    bare = Range(subnet, subnet.network_address, subnet.broadcast_address, gateway)
    start = spec.range_start if spec.range_start is not None else first
    if (problem := bare.in_range_error(start)) is not None:
        raise _invalid(problem)
    end = spec.range_end if spec.range_end is not None else last_ip(subnet)
    if (problem := Range(subnet, start, subnet.broadcast_address, gateway).in_range_error(end)) is not None:
        raise _invalid(problem)
    return Range(subnet, start, end, gateway)


RangeSet = tuple[Range, ...]


def range_set_str(range_set: RangeSet) -> str:
    return ",".join(str(r) for r in range_set)


def canonical_range_set(specs: Sequence[RangeSpec]) -> RangeSet:
    """Canonicalises every range; one address family per set, no overlaps inside it."""
    if not specs:
        raise _invalid("empty range set")
    ranges = tuple(canonical_range(spec) for spec in specs)
    if len({r.subnet.version for r in ranges}) > 1:
        raise _invalid("mixed address families")
    for i, first in enumerate(ranges):
        for second in ranges[i + 1:]:
            if first.overlaps(second):
                raise _invalid(f"subnets {first} and {second} overlap")
    return ranges


def canonical_range_sets(sets: Sequence[Sequence[RangeSpec]]) -> tuple[RangeSet, ...]:
    """All range sets of a config; at least one, none overlapping another."""
    if not sets:
        raise _invalid("no IP ranges specified")
    canonical = []
    for i, specs in enumerate(sets):
        try:
            canonical.append(canonical_range_set(specs))
        except CNIError as exc:
            raise _invalid(f"invalid range set {i}: {exc.msg}") from exc
    for i, first in enumerate(canonical):
        for j in range(i + 1, len(canonical)):
            if any(a.overlaps(b) for a in first for b in canonical[j]):
                raise _invalid(f"range set {i} overlaps with {j}")
    return tuple(canonical)


def range_for(range_set: RangeSet, ip: IPAddress) -> Range | None:
    return next((r for r in range_set if r.contains(ip)), None)


def allocation_order(range_set: RangeSet, last_reserved: IPAddress | None) -> Iterator[tuple[Range, IPAddress]]:
    """Every allocatable address once, in the order host-local tries them: from the one after
    ``last_reserved`` (when it lies in the set) through the end of its range, on through the
    following ranges, wrapping round to ``last_reserved`` itself; gateways skipped."""
    index, first = 0, range_set[0].start
    owner = range_for(range_set, last_reserved) if last_reserved is not None else None
    if owner is not None and last_reserved is not None:
        index = range_set.index(owner)
        if last_reserved == owner.end:
            index = (index + 1) % len(range_set)
            first = range_set[index].start
        else:
            first = last_reserved + 1
    current_index, current = index, first
    while True:
        current_range = range_set[current_index]
        if current != current_range.gateway:
            yield current_range, current
        if current == current_range.end:
            current_index = (current_index + 1) % len(range_set)
            current = range_set[current_index].start
        else:
            current = current + 1
        if current_index == index and current == first:
            return


class IPAllocator:
    """Hands out addresses of one range set (``range_id`` is its index in the config)."""

    def __init__(self, range_set: RangeSet, store: Store, range_id: int) -> None:
        self.range_set = range_set
        self.store = store
        self.range_id = str(range_id)

    def get(self, container_id: str, ifname: str, requested: IPAddress | None = None) -> IPConfig:
        """Reserves ``requested`` if given and free, else the next free address."""
        if requested is not None:
            return self._get_requested(container_id, ifname, requested)
        for held in self.store.get_by_id(container_id, ifname):
            if range_for(self.range_set, held) is not None:
                raise _failed(f"{held} has been allocated to {container_id}, duplicate allocation is not allowed")
        last = self.store.last_reserved_ip(self.range_id)
        for candidate_range, candidate in allocation_order(self.range_set, last):
            if self.store.reserve(container_id, ifname, candidate, self.range_id):
                return self._config(candidate_range, candidate)
        raise _failed(f"no IP addresses available in range set: {range_set_str(self.range_set)}")

    def _get_requested(self, container_id: str, ifname: str, requested: IPAddress) -> IPConfig:
        owner = range_for(self.range_set, requested)
        if owner is None:
            raise _failed(f"{requested} not in range set {range_set_str(self.range_set)}")
        if requested == owner.gateway:
            raise _failed(f"requested ip {requested} is subnet's gateway")
        if not self.store.reserve(container_id, ifname, requested, self.range_id):
            raise _failed(f"requested IP address {requested} is not available in range set "
                          f"{range_set_str(self.range_set)}")
        return self._config(owner, requested)

    @staticmethod
    def _config(owner: Range, ip: IPAddress) -> IPConfig:
        interface = ipaddress.IPv4Interface if ip.version == 4 else ipaddress.IPv6Interface
        return IPConfig(interface((int(ip), owner.subnet.prefixlen)), owner.gateway)  # no text to parse
