"""The underlay ``Wire`` as a switch, with datagram socket pairs standing in for TAP devices.

Each node's port is one end of an AF_UNIX datagram pair (a frame per datagram, as a TAP gives);
the test holds the other end and sends or receives whole Ethernet frames. No privileges needed.
"""
from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable

import pytest

from netemu.errors import InvalidError
from netemu.fabric.netns.wire import LinkImpairment, Wire, as_groups

BROADCAST = b"\xff" * 6


def mac(n: int) -> bytes:
    return bytes([2, 0, 0, 0, 0, n])


def frame(dst: bytes, src: bytes, payload: bytes = b"x") -> bytes:
    return dst + src + b"\x08\x00" + payload.ljust(46, b"\0")


class Net:
    """The wire and the nodes' ends. Frames that reach a node are collected as they arrive (a reader
    on the node's end, with the loop time of arrival), so a test waits for what it expects instead
    of sleeping; ``take`` also reads what is queued right now, for asserting that nothing came."""

    def __init__(self, wire: Wire, ends: dict[str, socket.socket]):
        self.wire = wire
        self.ends = ends  # the node's side: what the node sends and receives
        self.arrivals: dict[str, list[tuple[float, bytes]]] = {node: [] for node in ends}
        for node, end in ends.items():
            wire.loop.add_reader(end.fileno(), self._collect, node)

    def send(self, node: str, data: bytes) -> None:
        self.ends[node].send(data)

    def close(self) -> None:
        for end in self.ends.values():
            self.wire.loop.remove_reader(end.fileno())
        self.wire.close()
        for end in self.ends.values():
            end.close()

    def _collect(self, node: str) -> None:
        now = self.wire.loop.time()
        while True:
            try:
                self.arrivals[node].append((now, self.ends[node].recv(65536)))
            except BlockingIOError:
                return

    def take(self, node: str) -> list[tuple[float, bytes]]:
        """Every frame that reached ``node`` and was not taken yet, with its arrival time."""
        self._collect(node)
        got, self.arrivals[node] = self.arrivals[node], []
        return got

    def received(self, node: str) -> list[bytes]:
        """The frames of ``take``: what reached ``node`` by now."""
        return [frame for _at, frame in self.take(node)]

    async def expect_timed(self, node: str, count: int, timeout: float = 5.0) -> list[tuple[float, bytes]]:
        """The first ``count`` frames to reach ``node`` with their arrival times, waiting for them
        (``timeout`` only guards against a hang); frames after them stay for the next call."""
        await poll(lambda: len(self.arrivals[node]) >= count, timeout, f"{count} frames at {node}")
        got, self.arrivals[node] = self.arrivals[node][:count], self.arrivals[node][count:]
        return got

    async def expect(self, node: str, count: int, timeout: float = 5.0) -> list[bytes]:
        """The frames of ``expect_timed``."""
        return [frame for _at, frame in await self.expect_timed(node, count, timeout)]

    async def learn(self, *nodes: str) -> None:
        """Each node broadcasts once, so the wire knows its port; every copy is collected."""
        for node in nodes:
            self.send(node, frame(BROADCAST, mac(int(node[1:]))))
            for other in self.ends:
                if other != node:
                    await self.expect(other, 1)
        for node in self.ends:
            assert self.received(node) == []

    async def accounted(self, lane: tuple[str, str], sent: int, timeout: float = 5.0) -> None:
        """Wait until the wire has dealt with ``sent`` frames on ``lane``: delivered, lost or cut."""
        def done() -> int:
            stats = self.wire.stats()[lane]
            return stats.frames + stats.lost + stats.cut + stats.overflow - stats.duplicated
        await poll(lambda: done() >= sent, timeout, f"{sent} frames on {lane}")


async def poll(condition: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)


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
        assert await net.expect("n2", 1) == [frame(BROADCAST, mac(1), b"who-has")]
        assert await net.expect("n3", 1) == [frame(BROADCAST, mac(1), b"who-has")]
        net.send("n2", frame(mac(1), mac(2), b"is-at"))
        assert await net.expect("n1", 1) == [frame(mac(1), mac(2), b"is-at")]
        # the wire sends a frame to every port it goes to at once: a copy for n3 would be there now
        assert net.received("n3") == [] and net.wire.stats()[("n2", "n3")].frames == 0
    finally:
        net.close()


async def test_delay_holds_frames_and_keeps_their_order_under_jitter() -> None:
    net = await make_net()
    loop = asyncio.get_running_loop()
    try:
        await net.learn("n2")
        net.wire.impair(LinkImpairment(delay_ms=100, jitter_ms=40), link=("n1", "n2"))
        sent_at = loop.time()
        for i in range(20):
            net.send("n1", frame(mac(2), mac(1), bytes([i])))
        got = await net.expect_timed("n2", 20)
        assert [f[14] for _at, f in got] == list(range(20))
        assert got[0][0] - sent_at >= 0.060  # on the wire for at least the delay less the jitter
    finally:
        net.close()


async def test_loss_drops_about_its_share_and_counts_it() -> None:
    net = await make_net(seed=1)
    try:
        await net.learn("n2")
        net.wire.impair(LinkImpairment.parse(loss="25%"), link=("n1", "n2"))
        for i in range(400):  # a few at a time: an AF_UNIX datagram queue holds only ten
            net.send("n1", frame(mac(2), mac(1), i.to_bytes(2, "big")))
            if i % 5 == 4:
                await net.accounted(("n1", "n2"), i + 1)
        stats = net.wire.stats()[("n1", "n2")]
        await poll(lambda: len(net.arrivals["n2"]) == stats.frames, 5, "the delivered frames")
        got = net.received("n2")
        assert stats.overflow == 0 and stats.lost + len(got) == 400
        assert 60 <= stats.lost <= 140
        assert sorted(int.from_bytes(f[14:16], "big") for f in got) == [int.from_bytes(f[14:16], "big") for f in got]
    finally:
        net.close()


async def test_duplicate_delivers_twice() -> None:
    net = await make_net()
    try:
        await net.learn("n2")
        net.wire.impair(LinkImpairment(duplicate=1.0), node="n2")
        net.send("n1", frame(mac(2), mac(1), b"once"))
        assert await net.expect("n2", 2) == [frame(mac(2), mac(1), b"once")] * 2
        assert net.received("n2") == [] and net.wire.stats()[("n1", "n2")].duplicated == 1  # no third copy
    finally:
        net.close()


async def test_rate_spaces_frames_by_their_serialization_time() -> None:
    net = await make_net()
    loop = asyncio.get_running_loop()
    try:
        await net.learn("n2")
        net.wire.impair(LinkImpairment(rate_kbit=800), link=("n1", "n2"))  # 1000-byte frame: 10 ms
        start = loop.time()
        for _ in range(5):
            net.send("n1", frame(mac(2), mac(1), b"r" * 986))
        arrivals = [at for at, _f in await net.expect_timed("n2", 5)]
        assert arrivals[-1] - start >= 0.045  # five frames cannot leave faster than the rate
    finally:
        net.close()


async def test_partition_cuts_between_groups_only_and_heal_restores() -> None:
    net = await make_net(("n1", "n2", "n3", "n4"))
    try:
        await net.learn("n1", "n2", "n3", "n4")
        net.wire.partition(as_groups(["n1,n2", ["n3"]]))  # n4, named nowhere, is a group of its own
        assert net.wire.partitions() == [["n1", "n2"], ["n3"], ["n4"]]
        net.send("n1", frame(BROADCAST, mac(1), b"hello"))
        assert len(await net.expect("n2", 1)) == 1
        # the wire decides for every port at once: what n3 and n4 would get is there now
        assert net.received("n3") == [] and net.received("n4") == []
        assert net.wire.stats()[("n1", "n3")].cut == 1 and net.wire.stats()[("n1", "n4")].cut == 1
        net.wire.heal()
        net.send("n1", frame(mac(3), mac(1), b"again"))
        assert await net.expect("n3", 1) == [frame(mac(3), mac(1), b"again")]
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
