"""``NetnsFabric``: a 2-node cluster network in namespaces, two pods per node, pod-to-pod traffic
on the same node and across nodes (host-gw over the userspace wire, no NAT).

Every namespace is the module's own cluster's (``netemu-t<random>-…``, recorded in a tmp state
directory's ledger and deleted by ``stop()``; ``collect`` of the ledger is the safety net), none
has a link to the namespace the tests run in, and the module checks that namespace (the host's
when pytest runs directly) is unchanged at the end. Traffic stays inside the test namespaces.
"""
from __future__ import annotations

import asyncio
import ipaddress
import secrets
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from test_netns_helpers import netns_ready, own_network_unchanged  # noqa: F401 - fixtures

from netemu.config import ClusterConfig
from netemu.errors import FabricError
from netemu.fabric.base import NodeNetwork, PodNetwork
from netemu.fabric.netns import NetnsFabric, namespaces
from netemu.fabric.netns.fabric import node_pod_cidr, pod_range
from netemu.state import ClusterState

on_module_loop = pytest.mark.asyncio(loop_scope="module")
PODS = {"a": "node-1", "b": "node-1", "c": "node-2", "d": "node-2"}


@dataclass
class Cluster:
    fabric: NetnsFabric
    state: ClusterState
    nodes: dict[str, NodeNetwork]
    pods: dict[str, PodNetwork]  # by container id
    ids: dict[str, str]          # short name ("a") -> container id

    def ip(self, pod: str) -> str:
        return self.pods[self.ids[pod]].ip


async def _run(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


def _cluster_namespaces(cluster_name: str) -> list[str]:
    prefix = f"netemu-{cluster_name}-"
    return sorted(p.name for p in namespaces.NETNS_RUN_DIR.glob(f"{prefix}*"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def net(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    request.getfixturevalue("netns_ready")
    config = ClusterConfig(name=f"t{secrets.token_hex(4)}", nodes=("node-1", "node-2"), backend="netns",
                           state_dir=tmp_path_factory.mktemp("state"))
    state = ClusterState(config)
    state.create()
    fabric = NetnsFabric(config, state)
    try:
        await fabric.start()
        nodes = {name: await fabric.add_node(name, index) for index, name in enumerate(config.nodes)}
        ids = {short: f"{secrets.token_hex(6)}-pod-{short}" for short in PODS}
        pods = {}
        for short, node in PODS.items():
            pods[ids[short]] = await fabric.add_pod(node, ids[short], "default", f"pod-{short}")
        yield Cluster(fabric, state, nodes, pods, ids)
    finally:
        await fabric.stop()
        namespaces.collect_from_ledger(state.directory)  # safety net: whatever the ledger lists
        state.remove()


# ---------------------------------------------------------------- addresses (no privileges)

@pytest.mark.parametrize(("configured", "expected"), [
    ("127.244.0.0/16", "10.244.0.0/16"),
    ("10.100.0.0/16", "10.100.0.0/16"),
], ids=["loopback-default-replaced", "configured-kept"])
def test_pod_range(configured: str, expected: str) -> None:
    assert str(pod_range(ClusterConfig(pod_cidr=configured))) == expected


def test_node_pod_cidr_is_the_index_plus_one_slash_24() -> None:
    pods = ipaddress.IPv4Network("10.244.0.0/16")
    assert [node_pod_cidr(pods, i) for i in range(3)] == ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"]


# ---------------------------------------------------------------- the fabric

@pytest.mark.netns
@on_module_loop
async def test_nodes_sit_on_the_underlay_with_their_pod_ranges(net: Cluster) -> None:
    assert {n.name: (n.ip, n.pod_cidr) for n in net.nodes.values()} == {
        "node-1": ("172.18.0.1", "10.244.1.0/24"), "node-2": ("172.18.0.2", "10.244.2.0/24")}
    assert net.fabric.shared_stack is False


@pytest.mark.netns
@on_module_loop
async def test_pod_ips_come_from_their_nodes_ranges(net: Cluster) -> None:
    for short, node in PODS.items():
        pod = net.pods[net.ids[short]]
        assert ipaddress.ip_address(pod.ip) in ipaddress.ip_network(net.nodes[node].pod_cidr)
        assert pod.gateway == str(ipaddress.ip_network(net.nodes[node].pod_cidr).network_address + 1)
        assert pod.sandbox == str(namespaces.namespace_path(net.fabric.namespace_of(net.ids[short])))
    assert len({pod.ip for pod in net.pods.values()}) == len(PODS)


@pytest.mark.netns
@on_module_loop
@pytest.mark.parametrize("client", ["b", "c"], ids=["same-node", "other-node"])
async def test_tcp_from_a_pod_reaches_a_server_in_another_pod_without_nat(net: Cluster, client: str) -> None:
    peers: list[str] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername")[0])
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await net.fabric.start_server(net.ids["a"], echo, net.ip("a"), 0)
    port = server.sockets[0].getsockname()[1]
    sock = net.fabric.socket(net.ids[client], socket.AF_INET, socket.SOCK_STREAM)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (net.ip("a"), port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"hello\n")
        assert await reader.readline() == b"hello\n"
        writer.close()
        await writer.wait_closed()
    except BaseException:
        sock.close()
        raise
    finally:
        server.close()
        await server.wait_closed()
    assert peers == [net.ip(client)]


@pytest.mark.netns
@on_module_loop
@pytest.mark.parametrize("client", ["b", "c"], ids=["same-node", "other-node"])
async def test_udp_round_trip_between_pods(net: Cluster, client: str) -> None:
    peers: list[str] = []

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            peers.append(addr[0])
            self.transport.sendto(data, addr)

    transport, _ = await net.fabric.create_datagram_endpoint(net.ids["a"], Echo, (net.ip("a"), 0))
    port = transport.get_extra_info("sockname")[1]
    loop = asyncio.get_running_loop()
    sock = net.fabric.socket(net.ids[client], socket.AF_INET, socket.SOCK_DGRAM)
    try:
        await loop.sock_sendto(sock, b"ping", (net.ip("a"), port))
        data, addr = await loop.sock_recvfrom(sock, 100)
    finally:
        sock.close()
        transport.close()
    assert (data, addr) == (b"ping", (net.ip("a"), port))
    assert peers == [net.ip(client)]


@pytest.mark.netns
@on_module_loop
async def test_sockets_of_a_node_live_in_its_namespace(net: Cluster) -> None:
    """A node's own address is bindable only in that node's namespace."""
    sock = net.fabric.socket("node-1", socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.bind((net.nodes["node-1"].ip, 0))
    sock = net.fabric.socket("node-2", socket.AF_INET, socket.SOCK_STREAM)
    with sock, pytest.raises(OSError):
        sock.bind((net.nodes["node-1"].ip, 0))


@pytest.mark.netns
@on_module_loop
@pytest.mark.parametrize("short", ["a", "d"])
async def test_process_prefix_runs_inside_the_pod(net: Cluster, short: str) -> None:
    code, out, err = await _run(*net.fabric.process_prefix(net.ids[short]), "ip", "-4", "-o", "addr", "show", "dev", "eth0")
    assert code == 0, err
    assert f"inet {net.ip(short)}/24" in out


@pytest.mark.netns
@on_module_loop
async def test_process_prefix_of_a_node_and_of_an_unknown_name(net: Cluster) -> None:
    code, out, err = await _run(*net.fabric.process_prefix("node-2"), "ip", "-4", "-o", "addr", "show", "dev", "eth0")
    assert code == 0, err
    assert "inet 172.18.0.2/24" in out
    host = net.fabric.process_prefix("")  # the host: the namespace the test started in, not the sealed one
    assert host[0].endswith("nsenter") and host[1].startswith("--net=/proc/")
    code, out, err = await _run(*host, "ip", "-o", "link", "show")
    assert code == 0 and "cni0" not in out, out + err
    with pytest.raises(FabricError, match="neither a node nor a pod"):
        net.fabric.process_prefix("no-such-thing")


@pytest.mark.netns
@on_module_loop
@pytest.mark.skipif(shutil.which("ping") is None, reason="needs ping")
async def test_ping_across_nodes(net: Cluster) -> None:
    code, out, err = await _run(*net.fabric.process_prefix(net.ids["a"]), "ping", "-c1", "-W5", net.ip("d"))
    assert code == 0, out + err


@pytest.mark.netns
@on_module_loop
async def test_every_interface_is_marked_as_netemus(net: Cluster) -> None:
    from netemu.cni.bridge import foreign_interfaces

    from netemu.fabric.netns import ipbatch
    for name in _cluster_namespaces(net.fabric.config.name):
        assert foreign_interfaces(await ipbatch.aquery(name, "link", "show")) == [], name


@pytest.mark.netns
@on_module_loop
async def test_remove_pod_is_idempotent_and_frees_the_address(net: Cluster) -> None:
    container_id = f"{secrets.token_hex(6)}-pod-e"
    pod = await net.fabric.add_pod("node-2", container_id, "default", "pod-e")
    netns = net.fabric.namespace_of(container_id)
    reservation = net.state.path("cni", "netemu-node-2", pod.ip)  # host-local's file for the address
    assert namespaces.exists(netns) and reservation.exists()
    await net.fabric.remove_pod("node-2", container_id)
    await net.fabric.remove_pod("node-2", container_id)
    assert not namespaces.exists(netns) and not reservation.exists()
    with pytest.raises(FabricError, match="neither a node nor a pod"):
        net.fabric.namespace_of(container_id)


@pytest.mark.netns
@on_module_loop
async def test_pods_added_and_removed_at_once_get_distinct_addresses(net: Cluster) -> None:
    ids = [f"{secrets.token_hex(6)}-many-{i}" for i in range(6)]
    nodes = ["node-1", "node-2"] * 3
    made = await asyncio.gather(*(net.fabric.add_pod(node, cid, "default", cid) for node, cid in zip(nodes, ids)))
    try:
        assert len({pod.ip for pod in made}) == len(ids)
        for node, pod in zip(nodes, made):
            assert ipaddress.ip_address(pod.ip) in ipaddress.ip_network(net.nodes[node].pod_cidr)
    finally:
        await asyncio.gather(*(net.fabric.remove_pod(node, cid) for node, cid in zip(nodes, ids)))
    assert not any(namespaces.exists(pod.sandbox.rsplit("/", 1)[1]) for pod in made)


@pytest.mark.netns
@on_module_loop
async def test_add_pod_on_an_unknown_node_is_refused(net: Cluster) -> None:
    with pytest.raises(FabricError, match="not part of this cluster"):
        await net.fabric.add_pod("node-9", "x" * 12, "default", "pod-x")


# ---------------------------------------------------------------- stop

@pytest.mark.netns
@pytest.mark.usefixtures("netns_ready")
async def test_stop_leaves_no_namespace_and_is_idempotent(tmp_path: Path) -> None:
    config = ClusterConfig(name=f"t{secrets.token_hex(4)}", nodes=("node-1",), backend="netns",
                           state_dir=tmp_path / "state")
    state = ClusterState(config)
    state.create()
    fabric = NetnsFabric(config, state)
    try:
        await fabric.start()
        await fabric.add_node("node-1", 0)
        await fabric.add_pod("node-1", "0123456789ab-stop", "default", "p")
        assert len(_cluster_namespaces(config.name)) == 2  # the node and the pod: the wire between nodes lives in this process
    finally:
        await fabric.stop()
        await fabric.stop()
        leftover = _cluster_namespaces(config.name)
        namespaces.collect_from_ledger(state.directory)
        state.remove()
    assert leftover == []


@pytest.mark.netns
@pytest.mark.usefixtures("netns_ready")
async def test_a_failed_cni_add_leaves_no_pod_namespace(tmp_path: Path) -> None:
    config = ClusterConfig(name=f"t{secrets.token_hex(4)}", nodes=("node-1",), backend="netns",
                           state_dir=tmp_path / "state")
    state = ClusterState(config)
    state.create()
    fabric = NetnsFabric(config, state)
    try:
        await fabric.start()
        await fabric.add_node("node-1", 0)
        before = _cluster_namespaces(config.name)
        with pytest.raises(FabricError, match="CNI ADD"):
            await fabric.add_pod("node-1", "-not a container id", "default", "p")
        assert _cluster_namespaces(config.name) == before
        with pytest.raises(FabricError, match="exists already"):
            await fabric.add_node("node-1", 1)
    finally:
        await fabric.stop()
        namespaces.collect_from_ledger(state.directory)
        state.remove()


@pytest.mark.netns
@pytest.mark.usefixtures("netns_ready")
async def test_remove_node_takes_its_pods_and_routes(tmp_path: Path) -> None:
    from netemu.fabric.netns import ipbatch
    config = ClusterConfig(name=f"t{secrets.token_hex(4)}", nodes=("node-1", "node-2"), backend="netns",
                           state_dir=tmp_path / "state")
    state = ClusterState(config)
    state.create()
    fabric = NetnsFabric(config, state)
    try:
        await fabric.start()
        one, two = await fabric.add_node("node-1", 0), await fabric.add_node("node-2", 1)
        await fabric.add_pod("node-2", "0123456789ab-gone", "default", "p")
        routes = {r["dst"] for r in await ipbatch.aquery(fabric.namespace_of("node-1"), "-4", "route", "show")}
        assert two.pod_cidr in routes
        ledger = (state.directory / "ledger").read_text().split()
        assert set(_cluster_namespaces(config.name)) <= set(ledger)  # recorded before they were made
        await fabric.remove_node("node-2")
        await fabric.remove_node("node-2")
        routes = {r["dst"] for r in await ipbatch.aquery(fabric.namespace_of("node-1"), "-4", "route", "show")}
        assert two.pod_cidr not in routes
        assert _cluster_namespaces(config.name) == [fabric.namespace_of("node-1")]
        assert one.name in fabric.nodes and "node-2" not in fabric.nodes
    finally:
        await fabric.stop()
        namespaces.collect_from_ledger(state.directory)
        state.remove()


@pytest.mark.netns
@pytest.mark.usefixtures("netns_ready")
async def test_start_collects_the_namespaces_of_a_dead_cluster(tmp_path: Path) -> None:
    root = tmp_path / "state"
    dead = root / f"t{secrets.token_hex(4)}"
    leftover = f"netemu-{dead.name}-node-node-1"
    dead.mkdir(parents=True)
    (dead / "state.json").write_text('{"pid": 1, "start_time": -1}')  # pid 1 never started at -1: dead
    (dead / "ledger").write_text(f"netns {leftover}\n")
    namespaces.create([leftover])
    config = ClusterConfig(name=f"t{secrets.token_hex(4)}", nodes=("node-1",), backend="netns", state_dir=root)
    state = ClusterState(config)
    fabric = NetnsFabric(config, state)
    try:
        state.create(collect_garbage=lambda directory: [])  # leave the dead cluster for the fabric to find
        await fabric.start()
        assert not namespaces.exists(leftover) and not dead.exists()
    finally:
        await fabric.stop()
        namespaces.delete([leftover])
        state.remove()
