"""The underlay ``Wire`` as a switch, with datagram socket pairs standing in for TAP devices.

Each node's port is one end of an AF_UNIX datagram pair (a frame per datagram, as a TAP gives);
the test holds the other end and sends or receives whole Ethernet frames. No privileges needed.
"""
from __future__ import annotations

import asyncio
import random
import socket

import pytest

from netemu.errors import InvalidError
from netemu.fabric.netns.wire import LinkImpairment, Wire, as_groups

BROADCAST = b"\xff" * 6


def mac(n: int) -> bytes:
    return bytes([2, 0, 0, 0, 0, n])


def frame(dst: bytes, src: bytes, payload: bytes = b"x") -> bytes:
    return dst + src + b"\x08\x00" + payload.ljust(46, b"\0")


class Net:
    def __init__(self, wire: Wire, ends: dict[str, socket.socket]):
        self.wire = wire
        self.ends = ends  # the node's side: what the node sends and receives

    def send(self, node: str, data: bytes) -> None:
        self.ends[node].send(data)

    def close(self) -> None:
        self.wire.close()
        for end in self.ends.values():
            end.close()

    async def received(self, node: str, wait: float = 0.3) -> list[bytes]:
        """Frames that reached ``node`` within ``wait`` seconds."""
        await asyncio.sleep(wait)
        got = []
        while True:
            try:
                got.append(self.ends[node].recv(65536))
            except BlockingIOError:
                return got


async def make_net(nodes: tuple[str, ...] = ("n1", "n2", "n3"), seed: int = 7) -> Net:
    wire = Wire(rng=random.Random(seed))
    ends = {}
    for name in nodes:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        ours.setblocking(False)
        theirs.setblocking(False)
        wire.attach(name, theirs.detach())
        ends[name] = ours
    return Net(wire, ends)


async def test_broadcast_floods_then_unicast_goes_to_the_learned_port() -> None:
    net = await make_net()
    try:
        net.send("n1", frame(BROADCAST, mac(1), b"who-has"))
        assert await net.received("n2", 0.05) == [frame(BROADCAST, mac(1), b"who-has")]
        assert await net.received("n3", 0) == [frame(BROADCAST, mac(1), b"who-has")]
        net.send("n2", frame(mac(1), mac(2), b"is-at"))
        assert await net.received("n1", 0.05) == [frame(mac(1), mac(2), b"is-at")]
        assert await net.received("n3", 0) == []
    finally:
        net.close()


async def test_delay_holds_frames_and_keeps_their_order_under_jitter() -> None:
    net = await make_net()
    try:
        net.send("n2", frame(BROADCAST, mac(2)))  # learn n2
        await net.received("n1", 0.05)
        net.wire.impair(LinkImpairment(delay_ms=100, jitter_ms=40), link=("n1", "n2"))
        for i in range(20):
            net.send("n1", frame(mac(2), mac(1), bytes([i])))
        assert await net.received("n2", 0.03) == []  # still on the wire
        got = await net.received("n2", 0.3)
        assert [f[14] for f in got] == list(range(20))
    finally:
        net.close()


async def test_loss_drops_about_its_share_and_counts_it() -> None:
    net = await make_net(seed=1)
    try:
        net.send("n2", frame(BROADCAST, mac(2)))
        await net.received("n1", 0.05)
        net.wire.impair(LinkImpairment.parse(loss="25%"), link=("n1", "n2"))
        got = []
        for i in range(400):  # a few at a time: an AF_UNIX datagram queue holds only ten
            net.send("n1", frame(mac(2), mac(1), i.to_bytes(2, "big")))
            if i % 5 == 4:
                got += await net.received("n2", 0.001)
        got += await net.received("n2", 0.05)
        stats = net.wire.stats()[("n1", "n2")]
        assert stats.lost + len(got) == 400
        assert 60 <= stats.lost <= 140
    finally:
        net.close()


async def test_duplicate_delivers_twice() -> None:
    net = await make_net()
    try:
        net.send("n2", frame(BROADCAST, mac(2)))
        await net.received("n1", 0.05)
        net.wire.impair(LinkImpairment(duplicate=1.0), node="n2")
        net.send("n1", frame(mac(2), mac(1), b"once"))
        assert await net.received("n2", 0.05) == [frame(mac(2), mac(1), b"once")] * 2
    finally:
        net.close()


async def test_rate_spaces_frames_by_their_serialization_time() -> None:
    net = await make_net()
    loop = asyncio.get_running_loop()
    try:
        net.send("n2", frame(BROADCAST, mac(2)))
        await net.received("n1", 0.05)
        net.wire.impair(LinkImpairment(rate_kbit=800), link=("n1", "n2"))  # 1000-byte frame: 10 ms
        start = loop.time()
        for _ in range(5):
            net.send("n1", frame(mac(2), mac(1), b"r" * 986))
        arrivals = []
        while len(arrivals) < 5 and loop.time() - start < 2:
            await asyncio.sleep(0.002)
            arrivals += [loop.time() for _ in await net.received("n2", 0)]
        assert len(arrivals) == 5
        assert arrivals[-1] - start >= 0.045  # five frames cannot leave faster than the rate
    finally:
        net.close()


async def test_partition_cuts_between_groups_only_and_heal_restores() -> None:
    net = await make_net(("n1", "n2", "n3", "n4"))
    try:
        for n in (1, 2, 3, 4):
            net.send(f"n{n}", frame(BROADCAST, mac(n)))
        await net.received("n1", 0.05)
        for n in ("n2", "n3", "n4"):
            await net.received(n, 0)
        net.wire.partition(as_groups(["n1,n2", ["n3"]]))  # n4, named nowhere, is a group of its own
        assert net.wire.partitions() == [["n1", "n2"], ["n3"], ["n4"]]
        net.send("n1", frame(BROADCAST, mac(1), b"hello"))
        assert len(await net.received("n2", 0.05)) == 1
        assert await net.received("n3", 0) == [] and await net.received("n4", 0) == []
        assert net.wire.stats()[("n1", "n3")].cut == 1
        net.wire.heal()
        net.send("n1", frame(mac(3), mac(1), b"again"))
        assert await net.received("n3", 0.05) == [frame(mac(3), mac(1), b"again")]
    finally:
        net.close()


async def test_node_and_link_impairments_add_up_and_clear() -> None:
    net = await make_net()
    try:
        net.wire.impair(LinkImpairment(delay_ms=10), node="n1")
        net.wire.impair(LinkImpairment(delay_ms=5, loss=0.5), link=("n1", "n2"))
        assert net.wire.impairments() == {"node n1": "delay 10ms", "link n1<->n2": "delay 5ms loss 50%"}
        lanes = net.wire._lanes  # the combined setting each direction uses
        assert lanes[("n2", "n1")].impairment == LinkImpairment(delay_ms=15, loss=0.5)
        assert lanes[("n2", "n3")].impairment is None
        net.wire.impair(None, node="n1")
        net.wire.impair(LinkImpairment(), link=("n2", "n1"))
        assert net.wire.impairments() == {} and lanes[("n1", "n2")].impairment is None
    finally:
        net.close()


@pytest.mark.parametrize(("call", "message"), [
    (lambda w: w.impair(LinkImpairment(delay_ms=1), node="n9"), 'node "n9" is not on the wire'),
    (lambda w: w.impair(LinkImpairment(delay_ms=1), link=("n1", "n1")), "two different nodes"),
    (lambda w: w.impair(LinkImpairment(delay_ms=1)), "exactly one of a link or a node"),
    (lambda w: w.partition([["n1"], ["n1", "n2"]]), 'node "n1" is named in two groups'),
    (lambda w: w.partition(as_groups([[]])), "names no node"),
    (lambda w: LinkImpairment(loss=2), "loss must be between 0 and 1"),
    (lambda w: LinkImpairment.parse(delay="fast"), "delay 'fast'"),
], ids=["unknown-node", "self-link", "no-target", "node-twice", "empty-group", "loss-range", "bad-delay"])
async def test_mistakes_are_refused_with_the_reason(call, message: str) -> None:
    net = await make_net()
    try:
        with pytest.raises(InvalidError, match=message):
            call(net.wire)
    finally:
        net.close()


def test_parse_reads_tc_style_text() -> None:
    imp = LinkImpairment.parse(delay="50ms", jitter="2ms", loss="10%", rate="1mbit", duplicate="1%")
    assert imp == LinkImpairment(delay_ms=50, jitter_ms=2, loss=0.1, rate_kbit=1000, duplicate=0.01)
    assert str(imp) == "delay 50ms jitter 2ms loss 10% rate 1000kbit duplicate 1%"
