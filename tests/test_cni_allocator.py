"""host-local's pure logic: range defaults and checks, the round-robin order, the allocator over
a FakeStore (exhaustion, requested IPs, duplicates), with the reference plugin's wording."""
from __future__ import annotations

import ipaddress

import pytest

from netemu.cni.allocator import (IPAllocator, Range, RangeSet, allocation_order, canonical_range,
                                  canonical_range_sets)
from netemu.cni.store import FakeStore
from netemu.cni.types import ErrorCode, RangeSpec
from netemu.errors import CNIError

ip = ipaddress.ip_address


def spec(subnet: str, start: str = "", end: str = "", gateway: str = "") -> RangeSpec:
    return RangeSpec(ipaddress.ip_network(subnet, strict=False), ip(start) if start else None, ip(end) if end else None,
                     ip(gateway) if gateway else None)


def range_set(*specs: RangeSpec) -> RangeSet:
    return canonical_range_sets([specs])[0]


@pytest.mark.parametrize("given, start, end, gateway", [
    (spec("127.244.1.0/24"), "127.244.1.1", "127.244.1.254", "127.244.1.1"),
    (spec("127.244.1.0/24", start="127.244.1.10", end="127.244.1.20"), "127.244.1.10", "127.244.1.20",
     "127.244.1.1"),
    (spec("127.244.1.0/24", gateway="127.244.1.254"), "127.244.1.1", "127.244.1.254", "127.244.1.254"),
    (spec("127.244.1.7/30"), "127.244.1.5", "127.244.1.6", "127.244.1.5"),
    (spec("fd00::/120"), "fd00::1", "fd00::ff", "fd00::1"),
], ids=["defaults", "start-end", "gateway", "host-bits-masked", "ipv6-no-broadcast"])
def test_range_defaults(given: RangeSpec, start: str, end: str, gateway: str) -> None:
    r = canonical_range(given)
    assert (r.start, r.end, r.gateway) == (ip(start), ip(end), ip(gateway))


@pytest.mark.parametrize("sets, msg", [
    ([[spec("127.244.1.0/31")]], "invalid range set 0: Network 127.244.1.0/31 too small to allocate from"),
    ([[spec("127.244.1.0/24", gateway="127.244.2.1")]],
     "invalid range set 0: gateway 127.244.2.1 not in network 127.244.1.0/24"),
    ([[spec("127.244.1.0/24", start="127.244.2.1")]],
     "invalid range set 0: 127.244.2.1 not in network 127.244.1.0/24"),
    ([[spec("127.244.1.0/24", start="127.244.1.50", end="127.244.1.40")]],
     "invalid range set 0: 127.244.1.40 is in network 127.244.1.0/24 but before start 127.244.1.50"),
    ([[spec("127.244.1.0/24", start="fd00::1")]],
     "invalid range set 0: IP fd00::1 is not the same protocol as subnet 127.244.1.0/24"),
    ([[spec("127.244.1.0/24"), spec("fd00::/64")]], "invalid range set 0: mixed address families"),
    ([[spec("127.244.1.0/24"), spec("127.244.1.128/25")]],
     "invalid range set 0: subnets 127.244.1.1-127.244.1.254 and 127.244.1.129-127.244.1.254 overlap"),
    ([[spec("127.244.1.0/24")], [spec("127.244.1.0/25")]], "range set 0 overlaps with 1"),
    ([], "no IP ranges specified"),
    ([[]], "invalid range set 0: empty range set"),
], ids=["too-small", "gateway-outside", "start-outside", "end-before-start", "start-other-family",
        "mixed-families", "overlap-in-set", "overlap-between-sets", "no-ranges", "empty-set"])
def test_range_sets_rejected(sets: list[list[RangeSpec]], msg: str) -> None:
    with pytest.raises(CNIError) as caught:
        canonical_range_sets(sets)
    assert (caught.value.code, caught.value.msg) == (ErrorCode.INVALID_NETWORK_CONFIG, msg)


def addresses(rs: RangeSet, last: str | None) -> list[str]:
    return [str(a) for _, a in allocation_order(rs, ip(last) if last else None)]


@pytest.mark.parametrize("ranges, last, expected", [
    ([spec("127.244.1.0/29")], None, ["127.244.1.2", "127.244.1.3", "127.244.1.4", "127.244.1.5", "127.244.1.6"]),
    ([spec("127.244.1.0/29")], "127.244.1.3", ["127.244.1.4", "127.244.1.5", "127.244.1.6", "127.244.1.2",
                                                "127.244.1.3"]),
    ([spec("127.244.1.0/29")], "127.244.1.6", ["127.244.1.2", "127.244.1.3", "127.244.1.4", "127.244.1.5",
                                                "127.244.1.6"]),
    ([spec("127.244.1.0/29")], "127.9.9.9", ["127.244.1.2", "127.244.1.3", "127.244.1.4", "127.244.1.5",
                                              "127.244.1.6"]),
    ([spec("127.244.1.0/29", gateway="127.244.1.6")], None,
     ["127.244.1.1", "127.244.1.2", "127.244.1.3", "127.244.1.4", "127.244.1.5"]),
    ([spec("127.244.1.0/29", start="127.244.1.4")], None, ["127.244.1.4", "127.244.1.5", "127.244.1.6"]),
    ([spec("127.244.1.0/30"), spec("127.244.2.0/30")], "127.244.1.2", ["127.244.2.2", "127.244.1.2"]),
], ids=["from-start", "after-last", "wrap-after-end", "last-outside-set", "gateway-elsewhere",
        "range-start", "next-range"])
def test_allocation_order(ranges: list[RangeSpec], last: str | None, expected: list[str]) -> None:
    assert addresses(range_set(*ranges), last) == expected


def allocator(*specs: RangeSpec, store: FakeStore | None = None) -> IPAllocator:
    return IPAllocator(range_set(*specs), store or FakeStore(), 0)


def test_first_addresses_and_gateway() -> None:
    alloc = allocator(spec("127.244.1.0/24"))
    first = alloc.get("c1", "eth0")
    second = alloc.get("c2", "eth0")
    assert (str(first.address), str(first.gateway)) == ("127.244.1.2/24", "127.244.1.1")
    assert str(second.address) == "127.244.1.3/24"
    assert first.interface is None


def test_round_robin_does_not_reuse_a_released_address_at_once() -> None:
    store = FakeStore()
    alloc = allocator(spec("127.244.1.0/24"), store=store)
    alloc.get("c1", "eth0")
    alloc.get("c2", "eth0")
    store.release_by_id("c1", "eth0")
    assert str(alloc.get("c3", "eth0").address.ip) == "127.244.1.4"


def test_wraps_to_freed_addresses() -> None:
    store = FakeStore()
    alloc = allocator(spec("127.244.1.0/29"), store=store)
    for n in range(5):
        alloc.get(f"c{n}", "eth0")
    store.release_by_id("c1", "eth0")  # 127.244.1.3
    assert str(alloc.get("c9", "eth0").address.ip) == "127.244.1.3"


@pytest.mark.parametrize("given, capacity, msg", [
    (spec("127.244.1.0/24"), 253, "no IP addresses available in range set: 127.244.1.1-127.244.1.254"),
    (spec("127.244.1.0/29", start="127.244.1.3", end="127.244.1.4"), 2,
     "no IP addresses available in range set: 127.244.1.3-127.244.1.4"),
], ids=["slash-24", "start-end"])
def test_exhaustion(given: RangeSpec, capacity: int, msg: str) -> None:
    alloc = allocator(given)
    handed = {alloc.get(f"c{n}", "eth0").address.ip for n in range(capacity)}
    assert len(handed) == capacity
    with pytest.raises(CNIError) as caught:
        alloc.get("one-too-many", "eth0")
    assert (caught.value.code, caught.value.msg) == (ErrorCode.INTERNAL, msg)


@pytest.mark.parametrize("requested, taken, msg", [
    ("127.244.1.77", False, None),
    ("127.244.1.77", True, "requested IP address 127.244.1.77 is not available in range set "
                           "127.244.1.1-127.244.1.254"),
    ("127.244.1.1", False, "requested ip 127.244.1.1 is subnet's gateway"),
    ("127.244.2.5", False, "127.244.2.5 not in range set 127.244.1.1-127.244.1.254"),
], ids=["free", "taken", "gateway", "outside"])
def test_requested_ip(requested: str, taken: bool, msg: str | None) -> None:
    store = FakeStore()
    alloc = allocator(spec("127.244.1.0/24"), store=store)
    if taken:
        store.reserve("other", "eth0", ip(requested), "0")
    if msg is None:
        assert str(alloc.get("c1", "eth0", ip(requested)).address) == f"{requested}/24"
        assert store.get_by_id("c1", "eth0") == [ip(requested)]
    else:
        with pytest.raises(CNIError) as caught:
            alloc.get("c1", "eth0", ip(requested))
        assert caught.value.msg == msg


@pytest.mark.parametrize("second_ifname, duplicate", [("eth0", True), ("eth1", False)], ids=["same-if", "other-if"])
def test_one_address_per_container_and_ifname(second_ifname: str, duplicate: bool) -> None:
    alloc = allocator(spec("127.244.1.0/24"))
    alloc.get("c1", "eth0")
    if duplicate:
        with pytest.raises(CNIError, match="127.244.1.2 has been allocated to c1, duplicate allocation is not allowed"):
            alloc.get("c1", second_ifname)
    else:
        assert str(alloc.get("c1", second_ifname).address.ip) == "127.244.1.3"


def test_range_str_and_contains() -> None:
    r: Range = canonical_range(spec("127.244.1.0/24", start="127.244.1.10"))
    assert str(r) == "127.244.1.10-127.244.1.254"
    assert r.contains(ip("127.244.1.10")) and not r.contains(ip("127.244.1.9"))
