"""ClusterIP and NodePort allocators: bands, exhaustion, release, ownership, rollback, error texts."""
from __future__ import annotations

import ipaddress
import random

import pytest

from netemu.allocators import (
    ClusterIPAllocator, NodePortAllocator, Transaction, ip_static_band_size, parse_port_range,
    port_static_band_size,
)
from netemu.errors import ConflictError, InvalidError


def ips(seed: int = 1, cidr: str = "10.96.0.0/12", **kw) -> ClusterIPAllocator:
    return ClusterIPAllocator(cidr, rng=random.Random(seed), **kw)


def ports(seed: int = 1, port_range: str = "30000-32767") -> NodePortAllocator:
    return NodePortAllocator(port_range, rng=random.Random(seed))


# --------------------------------------------------------------------------- cluster IPs


@pytest.mark.parametrize("cidr, static_band", [
    ("10.96.0.0/12", ("10.96.0.1", "10.96.1.0")),      # min(max(16, 2^20/16), 256) = 256
    ("127.96.0.0/16", ("127.96.0.1", "127.96.1.0")),   # 256
    ("10.0.0.0/24", ("10.0.0.1", "10.0.0.16")),        # 256/16 = 16
    ("10.0.0.0/27", ("10.0.0.1", "10.0.0.16")),        # max(16, 2) = 16
    ("10.0.0.0/28", None),                             # 16 addresses or fewer: no static band
], ids=["slash12", "slash16", "slash24", "slash27", "slash28"])
def test_ip_static_band(cidr, static_band):
    assert ips(cidr=cidr).static_band == static_band


def test_ip_band_size_formula():
    assert ip_static_band_size(ipaddress.ip_network("10.0.0.0/20")) == 256
    assert ip_static_band_size(ipaddress.ip_network("10.0.0.0/22")) == 64


@pytest.mark.parametrize("cidr", ["10.96.0.0/12", "127.96.0.0/16", "10.0.0.0/24"])
def test_automatic_ips_come_from_the_upper_band(cidr):
    alloc = ips(cidr=cidr)
    last_static = ipaddress.ip_address(alloc.static_band[1])
    got = [alloc.allocate(f"default/s{i}") for i in range(100)]
    assert len(set(got)) == 100
    assert all(ipaddress.ip_address(ip) > last_static for ip in got)
    assert all(ipaddress.ip_address(ip) in alloc.network for ip in got)


def test_lower_band_used_only_when_upper_is_full():
    alloc = ips(cidr="10.0.0.0/27")  # 30 usable: .1-.16 static, .17-.30 dynamic
    upper = {alloc.allocate(f"ns/u{i}") for i in range(14)}
    assert upper == {f"10.0.0.{i}" for i in range(17, 31)}
    lower = alloc.allocate("ns/lower")
    assert 1 <= int(lower.rsplit(".", 1)[1]) <= 16


def test_network_and_broadcast_never_handed_out_and_exhaustion():
    alloc = ips(cidr="10.0.0.0/29")
    got = {alloc.allocate(f"ns/s{i}") for i in range(6)}
    assert got == {str(h) for h in ipaddress.ip_network("10.0.0.0/29").hosts()}
    assert alloc.free == 0
    with pytest.raises(ConflictError, match="^range is full$"):
        alloc.allocate("ns/one-too-many")


@pytest.mark.parametrize("cidr, ip, message", [
    ("10.96.0.0/12", "10.0.171.239",
     "the provided IP (10.0.171.239) is not in the valid range. The range of valid IPs is 10.96.0.0/12"),
    ("127.96.0.0/16", "10.0.171.239",
     "the provided IP (10.0.171.239) is not in the valid range. The range of valid IPs is 127.96.0.0/16"),
    ("10.96.0.0/12", "10.96.0.0",
     "the provided IP (10.96.0.0) is not in the valid range. The range of valid IPs is 10.96.0.0/12"),
    ("10.96.0.0/12", "10.111.255.255",
     "the provided IP (10.111.255.255) is not in the valid range. The range of valid IPs is 10.96.0.0/12"),
], ids=["walkthrough-ip", "walkthrough-ip-loopback-range", "network-address", "broadcast"])
def test_explicit_ip_outside_range(cidr, ip, message):
    with pytest.raises(InvalidError) as err:
        ips(cidr=cidr).allocate("default/my-service", ip)
    assert str(err.value) == message


def test_explicit_ip_is_owned_and_idempotent():
    alloc = ips()
    assert alloc.allocate("default/a", "10.96.5.5") == "10.96.5.5"
    assert alloc.allocate("default/a", "10.96.5.5") == "10.96.5.5"  # same owner: no-op
    assert alloc.allocate("default/a") == "10.96.5.5"                # "any IP": the one it holds
    with pytest.raises(ConflictError) as err:
        alloc.allocate("default/b", "10.96.5.5")
    assert str(err.value) == "provided IP is already allocated"
    assert alloc.used == 1


def test_accepts_walkthrough_ip_when_range_holds_it():
    assert ips(cidr="10.0.0.0/16").allocate("default/my-service", "10.0.171.239") == "10.0.171.239"


def test_release():
    alloc = ips()
    ip = alloc.allocate("default/a")
    alloc.release(ip, owner="default/other")  # someone else's: no-op
    assert alloc.owner_of(ip) == "default/a"
    alloc.release(ip)
    assert alloc.owner_of(ip) is None and alloc.used == 0
    alloc.release(ip)  # already free: no-op
    assert alloc.allocate("default/b", ip) == ip


def test_reservation_keeps_dns_ip_for_its_owner():
    alloc = ips(cidr="10.96.0.0/28", reserved={"kube-system/kube-dns": "10.96.0.10"})
    with pytest.raises(ConflictError, match="provided IP is already allocated"):
        alloc.allocate("default/thief", "10.96.0.10")
    others = {alloc.allocate(f"ns/s{i}") for i in range(13)}  # 14 usable, one reserved
    assert "10.96.0.10" not in others
    with pytest.raises(ConflictError, match="range is full"):
        alloc.allocate("ns/more")
    assert alloc.allocate("kube-system/kube-dns") == "10.96.0.10"
    alloc.release("10.96.0.10")
    assert alloc.snapshot()["reserved"] == {"kube-system/kube-dns": "10.96.0.10"}


def test_nth_addresses():
    alloc = ips()
    assert (alloc.nth(1), alloc.nth(10)) == ("10.96.0.1", "10.96.0.10")
    with pytest.raises(InvalidError):
        ips(cidr="10.0.0.0/29").nth(7)


# --------------------------------------------------------------------------- node ports


@pytest.mark.parametrize("port_range, static_band", [
    ("30000-32767", (30000, 30085)),   # min(max(16, 2768/32), 128) = 86
    ("30000-30015", None),             # 16 ports: all dynamic
    ("30000-30127", (30000, 30015)),   # max(16, 4) = 16
    ("30000-34095", (30000, 30127)),   # min(128, 128)
    ("30000-38191", (30000, 30127)),   # capped at 128
], ids=["default", "tiny", "small", "large", "huge"])
def test_port_static_band(port_range, static_band):
    assert ports(port_range=port_range).static_band == static_band


def test_port_band_size_formula():
    assert [port_static_band_size(n) for n in (16, 17, 2768, 10000)] == [0, 16, 86, 128]


def test_automatic_ports_come_from_the_dynamic_band():
    alloc = ports()
    got = [alloc.allocate_next(f"default/s{i}") for i in range(300)]
    assert len(set(got)) == 300
    assert all(30086 <= p <= 32767 for p in got)


def test_static_band_used_only_when_dynamic_is_full():
    alloc = ports(port_range="30000-30127")
    dynamic = {alloc.allocate_next("ns/a") for _ in range(112)}
    assert dynamic == set(range(30016, 30128))
    assert 30000 <= alloc.allocate_next("ns/a") <= 30015


def test_port_exhaustion():
    alloc = ports(port_range="30000-30003")
    assert {alloc.allocate_next("ns/a") for _ in range(4)} == {30000, 30001, 30002, 30003}
    with pytest.raises(ConflictError, match="^range is full$"):
        alloc.allocate_next("ns/a")


@pytest.mark.parametrize("port, message", [
    (8080, "provided port is not in the valid range. The range of valid ports is 30000-32767"),
    (29999, "provided port is not in the valid range. The range of valid ports is 30000-32767"),
    (32768, "provided port is not in the valid range. The range of valid ports is 30000-32767"),
], ids=["8080", "below", "above"])
def test_explicit_port_outside_range(port, message):
    with pytest.raises(InvalidError) as err:
        ports().allocate("default/s", port)
    assert str(err.value) == message


def test_explicit_port_owned_and_idempotent():
    alloc = ports()
    assert alloc.allocate("default/a", 30007) == 30007
    assert alloc.allocate("default/a", 30007) == 30007  # same service (its TCP and UDP port): no-op
    with pytest.raises(ConflictError) as err:
        alloc.allocate("default/b", 30007)
    assert str(err.value) == "provided port is already allocated"
    assert alloc.ports_of("default/a") == [30007]


def test_port_release():
    alloc = ports()
    alloc.allocate("default/a", 30007)
    alloc.release(30007, owner="default/b")
    assert alloc.owner_of(30007) == "default/a"
    alloc.release(30007)
    assert alloc.allocate("default/b", 30007) == 30007


@pytest.mark.parametrize("spec, expected", [
    ("30000-32767", (30000, 32767)), ("30000+2767", (30000, 32767)), ("31000", (31000, 31000)),
], ids=["dash", "plus", "single"])
def test_parse_port_range(spec, expected):
    assert parse_port_range(spec) == expected


@pytest.mark.parametrize("spec", ["abc", "32767-30000", "0-10", "30000-70000"])
def test_parse_port_range_refuses(spec):
    with pytest.raises(InvalidError):
        parse_port_range(spec)


# --------------------------------------------------------------------------- transactions


def test_transaction_rolls_back_claims_and_releases():
    ip_alloc, port_alloc = ips(), ports()
    ip_alloc.allocate("default/keep", "10.96.0.50")
    port_alloc.allocate("default/keep", 30050)
    before = (ip_alloc.snapshot(), port_alloc.snapshot())
    txn = Transaction()
    ip_alloc.allocate("default/new", txn=txn)
    ip_alloc.allocate("default/new2", "10.96.0.51", txn=txn)
    ip_alloc.allocate("default/keep", "10.96.0.50", txn=txn)  # no-op claim: nothing to undo
    ip_alloc.release("10.96.0.50", txn=txn)
    port_alloc.allocate_next("default/new", txn=txn)
    port_alloc.release(30050, txn=txn)
    ip_alloc.reserve("kube-system/kube-dns", "10.96.0.10", txn=txn)
    assert (ip_alloc.snapshot(), port_alloc.snapshot()) != before
    txn.rollback()
    assert (ip_alloc.snapshot(), port_alloc.snapshot()) == before


def test_child_transaction_commits_into_parent():
    alloc = ports()
    parent = Transaction()
    with parent.child() as child:
        alloc.allocate("ns/a", 30001, txn=child)
    with pytest.raises(ConflictError):
        with parent.child() as child:
            alloc.allocate("ns/b", 30002, txn=child)
            alloc.allocate("ns/b", 30001, txn=child)  # taken by ns/a: the child undoes 30002
    assert alloc.snapshot() == {30001: "ns/a"}
    parent.rollback()
    assert alloc.snapshot() == {}
