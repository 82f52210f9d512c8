"""Upstream sockets made in a node's own network in batches (``RelayContext.spare_socket``).

On the netns backend every node has a namespace of its own, and a socket for a relay's upstream
must be made inside it: a trip by a thread into the namespace and back. The proxy makes them in
batches that double (1, 2, 4, ... 64) and keeps the rest as spares. Here a real socket maker
that notes each batch it is asked for stands in for the namespaces; the netns cluster test below
drives the real one through a ClusterIP.
"""
from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from netemu.fabric import routes_outside_loopback
from netemu.proxy.route import SPARE_BATCH, SPARE_LIMIT, RelayContext
from test_netns_cluster import CLIENTS  # a curl pod on node-1, netexec behind a Service on node-2
from test_netns_helpers import netns_ready  # noqa: F401 - fixture


class NotingSockets:
    """Real non-blocking sockets; every batch asked for is noted as (where, type, count)."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, int, int]] = []

    def socket(self, where: str, family: int, type: int) -> socket.socket:
        return socket.socket(family, type | socket.SOCK_NONBLOCK)

    def sockets(self, where: str, family: int, type: int, count: int) -> list[socket.socket]:
        self.batches.append((where, type, count))
        return [self.socket(where, family, type) for _ in range(count)]


def context(maker: Any) -> RelayContext:
    return RelayContext(asyncio.new_event_loop(), maker, shared_stack=False)


def test_sockets_are_made_in_batches_that_double_up_to_the_limit() -> None:
    maker = NotingSockets()
    ctx = context(maker)
    try:
        taken = [ctx.stream_socket("node-1") for _ in range(200)]
        counts = [count for _, _, count in maker.batches]
        assert counts == [1, 2, 4, 8, 16, 32, 64, 64, 64]  # 255 made for 200: 9 trips, not 200
        assert SPARE_BATCH == 64
        assert all(where == "node-1" and kind == socket.SOCK_STREAM for where, kind, _ in maker.batches)
        assert len({s.fileno() for s in taken}) == 200
        assert all(s.type == socket.SOCK_STREAM and not s.getblocking() for s in taken)
        assert sum(len(spares) for spares in ctx.spares.values()) == 55
        for sock in taken:
            sock.close()
    finally:
        ctx.close()
        ctx.loop.close()


def test_spares_are_kept_per_node_and_kind_and_closed_with_their_node_and_the_proxy() -> None:
    maker = NotingSockets()
    ctx = context(maker)
    try:
        made = [ctx.stream_socket("node-1") for _ in range(2)] + [ctx.datagram_socket("node-1")]
        made += [ctx.stream_socket("node-2") for _ in range(2)]
        assert [(where, kind) for where, kind, _ in maker.batches] == [
            ("node-1", socket.SOCK_STREAM), ("node-1", socket.SOCK_STREAM), ("node-1", socket.SOCK_DGRAM),
            ("node-2", socket.SOCK_STREAM), ("node-2", socket.SOCK_STREAM)]
        assert made[2].type == socket.SOCK_DGRAM
        node1 = list(ctx.spares[("node-1", socket.SOCK_STREAM)])
        node2 = list(ctx.spares[("node-2", socket.SOCK_STREAM)])
        assert node1 and node2
        ctx.close_all(node="node-1")  # node-1 went away: its spares with it, node-2's stay
        assert all(s.fileno() == -1 for s in node1)
        assert all(s.fileno() != -1 for s in node2)
        made.append(ctx.stream_socket("node-1"))  # a node added again under the name starts from one
        assert maker.batches[-1] == ("node-1", socket.SOCK_STREAM, 1)
    finally:
        ctx.close()
        ctx.loop.close()
    assert all(s.fileno() == -1 for s in node2)
    assert ctx.spares == {}
    for sock in made:
        sock.close()


def test_all_nodes_together_keep_at_most_the_spare_limit() -> None:
    maker = NotingSockets()
    ctx = context(maker)
    try:
        for node in range(1, 8):  # each node busy enough for batches of 64
            for _ in range(128):
                ctx.stream_socket(f"node-{node}").close()  # taken and done with: only spares stay open
            assert sum(len(spares) for spares in ctx.spares.values()) <= SPARE_LIMIT
        assert all(count >= 1 for _, _, count in maker.batches)
        assert maker.batches[-1][2] < SPARE_BATCH  # cut to what the limit leaves
        assert sum(count for _, _, count in maker.batches) == 7 * 128 + sum(len(s) for s in ctx.spares.values())
    finally:
        ctx.close()
        ctx.loop.close()


def test_a_shared_stack_makes_each_socket_when_asked() -> None:
    maker = NotingSockets()
    ctx = RelayContext(asyncio.new_event_loop(), maker, shared_stack=True)
    try:
        ctx.stream_socket("node-1").close()
        ctx.datagram_socket("node-1").close()
        assert maker.batches == [] and ctx.spares == {}
    finally:
        ctx.close()
        ctx.loop.close()


@pytest.mark.netns
@pytest.mark.skipif(bool(routes_outside_loopback()),
                    reason="the netns backend runs only in a namespace without outside routes (make test)")
async def test_a_netns_node_proxy_makes_its_upstream_sockets_in_its_namespace_in_batches(
        netns_ready, make_cluster) -> None:  # noqa: F811
    cluster = await make_cluster(nodes=2, backend="netns")
    await cluster.apply(CLIENTS)
    await cluster.wait_ready(timeout=30)
    await cluster.settle()
    ctx = cluster.proxy.ctx
    url = f"http://{cluster.service_ip('netexec')}/clientip"
    connections = 40  # each curl its own connection: 1 + 2 + 4 + 8 + 16 + 32 sockets made, 6 trips
    script = f'for i in $(seq {connections}); do curl -sS --max-time 10 {url} || exit 1; echo; done'
    result = await cluster.exec("curl", ["sh", "-c", script])
    assert result.returncode == 0, result.stderr
    client_ip = cluster.get("Pod", "curl").status.pod_ip
    answers = result.stdout.split()
    assert len(answers) == connections
    assert all(a.rsplit(":", 1)[0] == client_ip for a in answers)  # transparent: the backend sees the pod
    spares = list(ctx.spares[("node-1", socket.SOCK_STREAM)])  # the client's node made them
    assert len(spares) == 63 - connections
    await cluster.stop()
    assert all(s.fileno() == -1 for s in spares)


# ---------------------------------------------------------------------------- out of descriptors

OUT_OF_DESCRIPTORS = r"""
import asyncio, os, resource, socket, sys
sys.path.insert(0, sys.argv[1])
from test_proxy_spare_sockets import NotingSockets
from netemu.fabric.netns.fabric import _new_sockets
from netemu.proxy.route import RelayContext, Route
from netemu.proxy.tcp import TCPListener

def open_fds():
    return len(os.listdir("/proc/self/fd")) - 1  # less the listing's own

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
# a batch of 64 with room for 5 more descriptors: the 5, not an error
resource.setrlimit(resource.RLIMIT_NOFILE, (open_fds() + 5, hard))
made = _new_sockets(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK, 64)
print("batch", len(made))
for s in made:
    s.close()
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

async def main():
    ctx = RelayContext(asyncio.get_running_loop(), NotingSockets(), shared_stack=False)
    taken = [ctx.stream_socket("node-1") for _ in range(8)]  # batches of 1, 2, 4 and 8: 7 spares
    print("spares", len(ctx.spares[("node-1", socket.SOCK_STREAM)]))
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listener = await TCPListener.open(ctx, listening, lambda peer: Route(None, None), 16)
    client = socket.socket()
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_fds(), hard))  # no descriptor left to accept with
    client.connect(listening.getsockname())
    watch = ctx.poller._watches[listener._fd]
    while watch.reader is not None:  # until the listener pauses accepting
        await asyncio.sleep(0.01)
    print("spares", sum(len(spares) for spares in ctx.spares.values()))
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    for s in taken + [client]:
        s.close()
    ctx.close_all()
    ctx.close()

asyncio.run(main())
"""


def test_out_of_descriptors_a_batch_is_what_can_be_made_and_a_listener_releases_the_spares() -> None:
    """A batch made with few descriptors left is as many sockets as fit (not an error), and a
    listener that cannot accept for want of descriptors closes every spare at once."""
    result = subprocess.run([sys.executable, "-c", OUT_OF_DESCRIPTORS, str(Path(__file__).parent)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["batch 5", "spares 7", "spares 0"], result.stdout
