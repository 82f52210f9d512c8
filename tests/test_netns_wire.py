"""Link impairments and partitions on the netns backend's underlay wire, measured from pods.

Three nodes, a pod on each (and a second on node-1): delay measured with ping and TCP connect
times, loss with 2,000 one-way UDP probes, duplication, and a partition that cuts cross-node
traffic until healed. Every namespace is the module's own (see test_netns_fabric.py) and the
namespace the tests run in is checked unchanged at the end.
"""
from __future__ import annotations

import asyncio
import random
import re
import secrets
import shutil
import socket
import statistics
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from test_netns_helpers import netns_ready, own_network_unchanged  # noqa: F401 - fixtures

from netemu.config import ClusterConfig
from netemu.fabric.netns import NetnsFabric, namespaces
from netemu.fabric.netns.wire import LinkImpairment
from netemu.state import ClusterState

pytestmark = [pytest.mark.netns, pytest.mark.asyncio(loop_scope="module")]
PODS = {"a": "node-1", "b": "node-1", "c": "node-2", "d": "node-3"}


@dataclass
class Net:
    fabric: NetnsFabric
    ids: dict[str, str]
    ips: dict[str, str]

    def socket(self, pod: str, kind: int) -> socket.socket:
        return self.fabric.socket(self.ids[pod], socket.AF_INET, kind)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def net(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Net]:
    request.getfixturevalue("netns_ready")
    config = ClusterConfig(name=f"t{secrets.token_hex(4)}", nodes=("node-1", "node-2", "node-3"), backend="netns",
                           state_dir=tmp_path_factory.mktemp("state"))
    state = ClusterState(config)
    state.create()
    fabric = NetnsFabric(config, state)
    try:
        await fabric.start()
        for index, name in enumerate(config.nodes):
            await fabric.add_node(name, index)
        ids = {short: f"{secrets.token_hex(6)}-pod-{short}" for short in PODS}
        ips = {short: (await fabric.add_pod(node, ids[short], "default", f"pod-{short}")).ip
               for short, node in PODS.items()}
        yield Net(fabric, ids, ips)
    finally:
        await fabric.stop()
        namespaces.collect_from_ledger(state.directory)
        state.remove()


@pytest.fixture(autouse=True)
def clean_wire(net: Net):
    yield
    for node in ("node-1", "node-2", "node-3"):
        net.fabric.impair(None, node=node)
    net.fabric.impair(None, link=("node-1", "node-2"))
    net.fabric.heal()


async def _run(*argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode, out.decode()


async def ping_times(net: Net, src: str, dst: str, count: int) -> list[float]:
    """Round-trip times in ms; the first probe (it may wait for ARP) is left out."""
    code, out = await _run(*net.fabric.process_prefix(net.ids[src]), "ping", "-n", "-c", str(count + 1),
                           "-i", "0.05", "-W", "2", net.ips[dst])
    assert code == 0, out
    return [float(t) for t in re.findall(r"time=([\d.]+) ms", out)][1:]


async def connect_time(net: Net, src: str, dst: str, port: int, timeout: float = 2.0) -> float:
    """Milliseconds for one TCP handshake from ``src`` to ``dst``:``port``."""
    loop = asyncio.get_running_loop()
    with net.socket(src, socket.SOCK_STREAM) as sock:
        start = loop.time()
        await asyncio.wait_for(loop.sock_connect(sock, (net.ips[dst], port)), timeout)
        return (loop.time() - start) * 1000


async def listener(net: Net, pod: str) -> tuple[asyncio.AbstractServer, int]:
    async def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await net.fabric.start_server(net.ids[pod], close, net.ips[pod], 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.skipif(shutil.which("ping") is None, reason="needs ping (iputils-ping)")
async def test_a_50ms_link_delays_ping_and_tcp_by_50ms_each_way(net: Net) -> None:
    await ping_times(net, "a", "c", 1)  # neighbours known before the clock starts
    net.fabric.impair(LinkImpairment.parse(delay="50ms"), link=("node-1", "node-2"))
    rtts = await ping_times(net, "a", "c", 10)
    server, port = await listener(net, "c")
    try:
        connects = [await connect_time(net, "a", "c", port) for _ in range(10)]
    finally:
        server.close()
    assert 96 <= statistics.median(rtts) <= 104, rtts  # 50 ms ± 2 ms per direction
    assert 96 <= statistics.median(connects) <= 104, connects  # SYN there, SYN-ACK back
    assert net.fabric.wire._lanes[("node-1", "node-3")].impairment is None  # other links keep their speed


async def test_ten_percent_loss_over_2000_udp_probes(net: Net) -> None:
    loop = asyncio.get_running_loop()
    received = 0

    class Count(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            nonlocal received
            received += 1

    transport, _ = await net.fabric.create_datagram_endpoint(net.ids["c"], Count, (net.ips["c"], 0))
    port = transport.get_extra_info("sockname")[1]
    sock = net.socket("a", socket.SOCK_DGRAM)
    try:
        await loop.sock_sendto(sock, b"warm-up", (net.ips["c"], port))
        await poll(lambda: received == 1)
        net.fabric.wire.rng = random.Random(10)  # the same draws, hence the same losses, every run
        net.fabric.impair(LinkImpairment.parse(loss="10%"), link=("node-1", "node-2"))
        for i in range(2000):
            await loop.sock_sendto(sock, i.to_bytes(4, "big"), (net.ips["c"], port))
            if i % 20 == 19:  # a pace the sockets keep up with: each 20 received or lost first
                await poll(lambda: received - 1 + stats_lost(net) >= i + 1)
        await poll(lambda: received - 1 + stats_lost(net) >= 2000)
    finally:
        sock.close()
        transport.close()
    lost = 2000 - (received - 1)
    assert 0.07 <= lost / 2000 <= 0.13, lost
    # The wire counts every frame it drops on the link: the probes, and on a busy machine now and
    # then a neighbour (ARP) probe of the nodes' own, which the same 10% may drop.
    assert lost <= stats_lost(net) <= lost + 2


def stats_lost(net: Net) -> int:
    return net.fabric.wire.stats()[("node-1", "node-2")].lost


async def test_duplication_delivers_every_datagram_twice(net: Net) -> None:
    loop = asyncio.get_running_loop()
    got: list[bytes] = []

    class Keep(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            got.append(data)

    transport, _ = await net.fabric.create_datagram_endpoint(net.ids["d"], Keep, (net.ips["d"], 0))
    port = transport.get_extra_info("sockname")[1]
    sock = net.socket("a", socket.SOCK_DGRAM)
    try:
        await loop.sock_sendto(sock, b"warm-up", (net.ips["d"], port))
        await poll(lambda: got == [b"warm-up"])
        net.fabric.impair(LinkImpairment.parse(duplicate="100%"), node="node-3")
        for word in (b"one", b"two"):
            await loop.sock_sendto(sock, word, (net.ips["d"], port))
        await poll(lambda: len(got) >= 5)
    finally:
        sock.close()
        transport.close()
    assert got == [b"warm-up", b"one", b"one", b"two", b"two"]


async def test_a_partition_cuts_across_groups_and_heal_restores(net: Net) -> None:
    servers = [await listener(net, pod) for pod in ("b", "c", "d")]
    port = {pod: p for pod, (_s, p) in zip(("b", "c", "d"), servers)}
    try:
        for pod in ("c", "d"):
            await connect_time(net, "a", pod, port[pod])
        net.fabric.partition([["node-1"], ["node-2"]])  # node-3, named nowhere, is a group too
        for pod in ("c", "d"):
            with pytest.raises(TimeoutError):
                await connect_time(net, "a", pod, port[pod], timeout=1.0)
        await connect_time(net, "a", "b", port["b"])  # same node: not on the wire
        net.fabric.heal()
        for pod in ("c", "d"):
            await connect_time(net, "a", pod, port[pod], timeout=5.0)  # SYN retransmission may wait 1 s
    finally:
        for server, _port in servers:
            server.close()


async def poll(check, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------- capture

async def _exchange(net: Net, src: str, dst: str) -> int:
    """One TCP connection from ``src`` to a listener in ``dst``, which it closes; the port. When it
    returns, the SYN and SYN-ACK have crossed every interface on their way (the handshake is done)."""
    server, port = await listener(net, dst)
    try:
        await connect_time(net, src, dst, port)
    finally:
        server.close()
    return port


async def test_a_pod_capture_is_pcapng_with_the_pods_name_and_the_clients_own_address(net: Net, tmp_path) -> None:
    from scapy.layers.inet import IP, TCP
    from scapy.utils import rdpcap
    path = tmp_path / "c.pcapng"
    capture = await net.fabric.start_capture(path, pod=net.ids["c"], filter="tcp")
    try:
        port = await _exchange(net, "a", "c")
        await poll(lambda: capture.frames >= 2)  # the SYN in and the SYN-ACK out, read from the socket
    finally:
        capture.stop()
    packets = rdpcap(str(path))
    assert {p.sniffed_on for p in packets} == {"default/pod-c:eth0"}
    syn = next(p for p in packets if TCP in p and p[TCP].flags == "S")
    assert (syn[IP].src, syn[IP].dst, syn[TCP].dport) == (net.ips["a"], net.ips["c"], port)  # no NAT
    assert {p.direction for p in packets} == {1, 2}  # both ways
    assert all(TCP in p for p in packets)  # the filter ran
    if shutil.which("tcpdump"):
        code, out = await _run("tcpdump", "-nn", "-r", str(path))
        assert code == 0 and f"{net.ips['a']}." in out, out


async def test_a_link_capture_sees_only_that_link_and_stops_at_its_count(net: Net, tmp_path) -> None:
    from scapy.layers.inet import IP
    from scapy.utils import rdpcap
    path = tmp_path / "link.pcapng"
    capture = await net.fabric.start_capture(path, link=("node-1", "node-2"), filter="tcp", count=3)
    await _exchange(net, "a", "d")  # node-1 <-> node-3: not this link; had it been seen, it came first
    await _exchange(net, "a", "c")
    await asyncio.wait_for(capture.done.wait(), 5)
    packets = rdpcap(str(path))
    assert len(packets) == 3 and {p.sniffed_on for p in packets} == {"node-1<->node-2"}
    assert {frozenset((p[IP].src, p[IP].dst)) for p in packets} == {frozenset((net.ips["a"], net.ips["c"]))}
    from netemu.fabric.netns.capture import summary
    lines = summary(capture.flows(), {net.ips["a"]: "default/pod-a", net.ips["c"]: "default/pod-c"})
    assert any(line.startswith("TCP") and "default/pod-a:" in line and "-> default/pod-c:" in line
               for line in lines), lines


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"pod": "nope"}, "pod sandbox nope is not part"),
    ({"node": "node-9"}, 'node "node-9" is not part'),
    ({"link": ("node-1", "node-1")}, "two different nodes"),
    ({"node": "node-1", "filter": "tcp prot 80"}, 'capture filter "tcp prot 80"'),
], ids=["unknown-pod", "unknown-node", "self-link", "bad-filter"])
async def test_capture_mistakes_are_refused(net: Net, tmp_path, kwargs, message: str) -> None:
    from netemu.errors import NetemuError
    with pytest.raises(NetemuError, match=message):
        await net.fabric.start_capture(tmp_path / "x.pcapng", **kwargs)


async def _largest_frame_on_the_link(net: Net, tmp_path, name: str) -> int:
    """Send 512 KiB from a (node-1) to c (node-2); the largest frame seen crossing the link."""
    from scapy.utils import rdpcap
    got = bytearray()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.extend(await reader.read())
        writer.close()

    server = await net.fabric.start_server(net.ids["c"], sink, net.ips["c"], 0)
    port = server.sockets[0].getsockname()[1]
    capture = await net.fabric.start_capture(tmp_path / name, link=("node-1", "node-2"), filter="tcp")
    try:
        loop = asyncio.get_running_loop()
        with net.socket("a", socket.SOCK_STREAM) as sock:
            await loop.sock_connect(sock, (net.ips["c"], port))
            await loop.sock_sendall(sock, b"x" * 524288)
            sock.shutdown(socket.SHUT_WR)
            await poll(lambda: len(got) == 524288)
    finally:
        capture.stop()
        server.close()
    return max(len(p) for p in rdpcap(str(tmp_path / name)))


async def test_tcp_crosses_in_large_frames_unless_a_link_drops_frames(net: Net, tmp_path) -> None:
    assert await _largest_frame_on_the_link(net, tmp_path, "offload.pcapng") > 1514  # TSO between nodes
    net.fabric.impair(LinkImpairment(loss=0.0001), link=("node-1", "node-2"))
    assert await _largest_frame_on_the_link(net, tmp_path, "frames.pcapng") <= 1514  # loss acts per real frame
    net.fabric.impair(None, link=("node-1", "node-2"))
    assert await _largest_frame_on_the_link(net, tmp_path, "again.pcapng") > 1514
