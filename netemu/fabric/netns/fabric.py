"""``NetnsFabric``: nodes and pods in network namespaces, pods reachable across nodes (host-gw).

Owns the layout of one cluster's namespaces and the links between them:

- ``netemu-<cluster>-node-<name>``: ``lo``, the ``cni0`` bridge (``namespaces.setup_node``) and
  ``eth0`` at 172.18.0.(index+1)/24, a TAP device whose frames netemu's ``Wire`` carries to the
  other nodes (a userspace switch with per-link delay, jitter, loss, rate, duplication and
  partitions); IP forwarding on (inside the node namespace only); a route to every other node's
  pod /24 via that node's 172.18.0.x (host-gw, no encapsulation, no NAT);
- ``netemu-<cluster>-p<id>``: one per pod, ``eth0`` made by the CNI bridge plugin (run
  in-process on a thread switched into the node namespace), default route via the node's
  ``cni0`` address (``.1`` of the node's pod /24).

No namespace has a link to any other but through the wire, which lives in this process, and
nothing is added to the namespace this process runs in; every interface made here carries
an ``ifalias`` starting with ``netemu`` (the bridge plugin refuses foreign interfaces). Every
namespace is recorded in the cluster ledger before it exists (``namespaces.create``).

Sockets for a node or pod are made on a worker thread switched into its namespace and then handed
to asyncio; a socket stays in the namespace it was made in, so one event loop serves them all.
``where`` is a node name, a pod's container id, or "" for the host's network (the namespace the
process started in, which the event-loop thread leaves for a sealed one: ``seal``).

Addresses: the pod range is ``config.pod_cidr`` unless that lies in 127/8 (the loopback
backend's default), in which case it is ``DEFAULT_POD_CIDR`` (10.244.0.0/16); node N (0-based
index) gets the /24 number N+1 of it. Node addresses are ``UNDERLAY_CIDR``'s .N+1; each node
also has a host address, ``config.node_ip(N)`` (127.10.0.N+1), on which the service proxy opens
the node's NodePorts in the host's namespace (``NetnsNodeNetwork.host_ip``): pods and
ClusterIPs are not reachable from the host, node and load-balancer addresses are.

ClusterIPs: every node namespace has ``svc0``, a bridge with no ports (this kernel has no
``dummy`` driver; kube-proxy's IPVS mode uses ``kube-ipvs0`` the same way), holding each
ClusterIP as a /32 so that the node's proxy listeners can bind it and pods reach it through
their default route to the node. ``add_service_ip``/``remove_service_ip`` (idempotent, not
blocking) change the wanted set; one task applies it to every node (``settle_service_ips``
waits for it), and a node added later starts with the whole set.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import shutil
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

from netemu.cni import bridge, execplugin, skel
from netemu.config import ClusterConfig
from netemu.errors import CNIError, FabricError, InvalidError, NetemuError
from netemu.fabric.base import NodeNetwork, PodNetwork
from netemu.spawn import spawn
from netemu.state import ClusterState, list_clusters

from . import ipbatch, namespaces, seal
from .capture import Capture, Tap
from .wire import VNET_HDR_LEN, LinkImpairment, Wire, open_tap

log = logging.getLogger(__name__)

DEFAULT_POD_CIDR = "10.244.0.0/16"
UNDERLAY_CIDR = "172.18.0.0/24"
UPLINK = "eth0"          # a node's TAP device on the underlay wire
POD_IFNAME = "eth0"
NODE_BRIDGE = bridge.DEFAULT_BRIDGE
UNDERLAY_ALIAS = f"{namespaces.OWNED_ALIAS}-underlay"
SERVICE_BRIDGE = "svc0"  # holds the ClusterIPs in every node namespace
SERVICE_ALIAS = f"{namespaces.OWNED_ALIAS}-svc"
POD_ID_LENGTH = 12       # characters of the container id in a pod namespace's name
_PLAIN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


def pod_range(config: ClusterConfig) -> ipaddress.IPv4Network:
    """The cluster's pod range on this backend (see the module docstring)."""
    configured = ipaddress.IPv4Network(config.pod_cidr)
    return ipaddress.IPv4Network(DEFAULT_POD_CIDR) if configured.subnet_of(_LOOPBACK) else configured


def node_pod_cidr(pods: ipaddress.IPv4Network, index: int) -> str:
    return str(ipaddress.IPv4Network((int(pods.network_address) + (index + 1) * 256, 24)))


def node_address(index: int) -> ipaddress.IPv4Interface:
    underlay = ipaddress.IPv4Network(UNDERLAY_CIDR)
    if not 0 <= index < underlay.num_addresses - 3:
        raise FabricError(f"node index {index}: the underlay {underlay} has room for {underlay.num_addresses - 3} nodes")
    return ipaddress.IPv4Interface((int(underlay.network_address) + index + 1, underlay.prefixlen))


@dataclass(frozen=True)
class NetnsNodeNetwork(NodeNetwork):
    host_ip: str = ""  # where the host reaches the node (its NodePorts), in this process's namespace


class _Node:
    def __init__(self, net: NodeNetwork, index: int, netns: str, mac: str = ""):
        self.net = net
        self.index = index
        self.netns = netns
        self.mac = mac  # of eth0, its port on the wire
        self.lock = asyncio.Lock()  # one CNI call at a time: the plugin's guard must never see a half-made veth


class _Pod:
    def __init__(self, node: str, netns: str, label: str = ""):
        self.node = node
        self.netns = netns
        self.label = label  # namespace/name, for people
        self.ip = ""


class NetnsFabric:
    name = "netns"
    shared_stack = False

    def __init__(self, config: ClusterConfig, state: ClusterState):
        self.config = config
        self.state = state
        self.pod_range = pod_range(config)
        self.wire: Wire | None = None
        self.host: seal.Host | None = None  # the namespace this process started in, while sealed
        self.nodes: dict[str, NodeNetwork] = {}
        self._nodes: dict[str, _Node] = {}
        self._pods: dict[str, _Pod] = {}  # by container id
        self._made: list[str] = []  # every namespace this fabric asked for, in order
        self._cni_dir = state.path("cni")
        self._started = False
        self._service_ips: set[str] = set()                 # wanted on svc0 of every node
        self._applied: dict[str, set[str]] = {}             # node name -> addresses on its svc0
        self._service_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._started:
            return
        loop = asyncio.get_running_loop()
        self.host = seal.enter(loop)
        try:
            self._cni_dir.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(self._collect_dead_clusters)
            self.wire = Wire(header=VNET_HDR_LEN)
        except BaseException:
            self.host = None
            seal.leave(loop)
            raise
        self._started = True

    def _collect_dead_clusters(self) -> None:
        """Namespaces (and processes in them) of dead clusters under this state root, from their
        ledgers. ``Cluster`` claims its state directory before the fabric starts and, unless it
        passes ``namespaces.collect_cluster_garbage`` to ``ClusterState.create``, has removed
        those ledgers already; this catches the rest (a fabric used on its own, a race)."""
        for other in list_clusters(self.config.state_dir):
            if other.name == self.config.name or other.alive:
                continue
            try:
                removed = namespaces.collect_cluster_garbage(other.directory)
            except NetemuError as exc:
                log.warning("netns: collecting dead cluster %s: %s", other.name, exc)
                continue
            for line in removed:
                log.info("netns: removed %s of dead cluster %s", line, other.name)

    async def stop(self) -> None:
        """Deletes every namespace this fabric made (killing what still runs inside); safe to call
        twice and after a failed start."""
        made, self._made = self._made, []
        task, self._service_task = self._service_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.wire is not None:
            self.wire.close()  # closing a TAP's descriptor deletes the device
            self.wire = None
        self._applied.clear()
        self._pods.clear()
        self._nodes.clear()
        self.nodes.clear()
        self._started = False
        if made:
            await asyncio.to_thread(namespaces.collect, list(reversed(made)))
        if self.host is not None:
            self.host = None
            seal.leave(asyncio.get_running_loop())

    async def _create(self, name: str) -> None:
        self._made.append(name)  # before it exists: stop() cleans up whatever got made
        await namespaces.acreate([name], self.state)

    # ------------------------------------------------------------------ nodes

    async def add_node(self, name: str, index: int) -> NodeNetwork:
        if not self._started:
            raise FabricError("the netns fabric is not started")
        if name in self._nodes:
            raise FabricError(f'node "{name}" exists already')
        if any(node.index == index for node in self._nodes.values()):
            raise FabricError(f"node index {index} is taken")
        address = node_address(index)
        netns = namespaces.namespace_name(self.config.name, "node", name)
        await self._create(netns)
        await namespaces.asetup_node(netns, NODE_BRIDGE)
        tap = await namespaces.acall_in(netns, open_tap, UPLINK)
        mac = namespaces.random_mac()
        try:
            await ipbatch.abatch(netns, [
                f"link set {UPLINK} address {mac} alias {UNDERLAY_ALIAS}:{name[:200]}",
                f"addr add {address} dev {UPLINK}",
                f"link set {UPLINK} up",
            ])
            assert self.wire is not None
            self.wire.attach(name, tap)  # from here on the wire owns the descriptor
        except BaseException:
            os.close(tap)
            raise
        service_ips = sorted(self._service_ips)
        await ipbatch.abatch(netns, [
            f"link add name {SERVICE_BRIDGE} address {namespaces.random_mac()} type bridge",
            f"link set {SERVICE_BRIDGE} alias {SERVICE_ALIAS}",
            f"link set {SERVICE_BRIDGE} up",
            *(f"addr replace {ip}/32 dev {SERVICE_BRIDGE}" for ip in service_ips),
        ])
        await _setup_routing(netns)
        await ipbatch.abatch(netns, [
            f"rule add fwmark {TRANSPARENT_MARK} lookup {TRANSPARENT_TABLE} pref 100",
            f"route add local 0.0.0.0/0 dev lo table {TRANSPARENT_TABLE}",
        ])
        await _run_in(netns, [_tool("nft", "nftables"), "-f", "-"], stdin=_TRANSPARENT_RULES.encode())
        net = NetnsNodeNetwork(name=name, ip=str(address.ip), pod_cidr=node_pod_cidr(self.pod_range, index),
                               host_ip=self.config.node_ip(index))
        node = _Node(net, index, netns, mac)
        await self._add_routes(node)
        self._nodes[name] = node
        self.nodes[name] = node.net
        self._applied[name] = set(service_ips)
        self._service_ips_changed()  # any change made while the node was being set up
        return node.net

    async def _add_routes(self, new: _Node) -> None:
        """host-gw: the new node learns every other node's pod range, and they learn its."""
        others = list(self._nodes.values())
        to_others = [f"route replace {o.net.pod_cidr} via {o.net.ip} dev {UPLINK}" for o in others]
        to_new = f"route replace {new.net.pod_cidr} via {new.net.ip} dev {UPLINK}"
        await asyncio.gather(ipbatch.abatch(new.netns, to_others),
                             *(ipbatch.abatch(o.netns, [to_new]) for o in others))

    async def remove_node(self, name: str) -> None:
        node = self._nodes.pop(name, None)
        self.nodes.pop(name, None)
        self._applied.pop(name, None)
        if node is None:
            return
        if self.wire is not None:
            self.wire.detach(name)
        gone = [cid for cid, pod in self._pods.items() if pod.node == name]
        pod_namespaces = [self._pods.pop(cid).netns for cid in gone]
        route = f"route del {node.net.pod_cidr} via {node.net.ip} dev {UPLINK}"
        await asyncio.gather(*(ipbatch.abatch(o.netns, [route], force=True) for o in self._nodes.values()),
                             return_exceptions=True)
        names = [*pod_namespaces, node.netns]
        await asyncio.to_thread(namespaces.collect, names)
        self._made = [n for n in self._made if n not in names]

    # ------------------------------------------------------------------ the wire

    def impair(self, impairment: LinkImpairment | None, *, link: tuple[str, str] | None = None,
               node: str | None = None) -> None:
        """Impair every frame of a link (both directions) or of all a node's links; None clears."""
        self._wire().impair(impairment, link=link, node=node)

    def partition(self, groups: list[list[str]]) -> None:
        self._wire().partition(groups)

    def heal(self) -> None:
        self._wire().heal()

    def _wire(self) -> Wire:
        if self.wire is None:
            raise FabricError("the netns fabric is not started")
        return self.wire

    # ------------------------------------------------------------------ capture

    async def start_capture(self, path: Path, *, node: str | None = None, pod: str | None = None,
                            link: tuple[str, str] | None = None, filter: str = "", count: int = 0) -> Capture:
        """Start writing what crosses a pod's ``eth0`` (``pod``: its container id), a node's
        ``eth0`` on the underlay, or the link between two nodes (seen at the first one's
        ``eth0``) to ``path`` (pcapng); ``Capture.stop`` ends it."""
        if sum(t is not None for t in (node, pod, link)) != 1:
            raise InvalidError("capture: name exactly one of a node, a pod or a link")
        if pod is not None:
            where = self._pods.get(pod)
            if where is None:
                raise FabricError(f"pod sandbox {pod} is not part of cluster {self.config.name}")
            taps = [Tap(f"{where.label}:{POD_IFNAME}", where.netns, POD_IFNAME)]
        else:
            names = (node,) if node is not None else tuple(link)  # type: ignore[arg-type]
            nodes = []
            for name in names:
                if name not in self._nodes:
                    raise InvalidError(f'node "{name}" is not part of cluster {self.config.name}')
                nodes.append(self._nodes[name])
            if link is not None and link[0] == link[1]:
                raise InvalidError(f'capture: a link joins two different nodes, got "{link[0]}" twice')
            first = nodes[0]
            taps = ([Tap(f"{first.net.name}:{UPLINK}", first.netns, UPLINK)] if link is None else
                    [Tap(f"{link[0]}<->{link[1]}", first.netns, UPLINK, bpf=f"ether host {nodes[1].mac}")])
        capture = Capture(Path(path), taps, count=count)
        await capture.start(filter, namespaces.acall_in)
        return capture

    # ------------------------------------------------------------------ ClusterIPs

    def add_service_ip(self, ip: str) -> None:
        """Make ``ip`` (a ClusterIP) local in every node namespace, now and for nodes to come."""
        if ip and ip != "None" and ip not in self._service_ips:
            ipaddress.IPv4Address(ip)
            self._service_ips.add(ip)
            self._service_ips_changed()

    def remove_service_ip(self, ip: str) -> None:
        if ip in self._service_ips:
            self._service_ips.discard(ip)
            self._service_ips_changed()

    async def settle_service_ips(self) -> None:
        """Wait until every node's ``svc0`` holds exactly the wanted ClusterIPs."""
        while (task := self._service_task) is not None:
            await asyncio.shield(task)

    def _service_ips_changed(self) -> None:
        if self._service_task is None and self._started:
            self._service_task = asyncio.get_running_loop().create_task(self._apply_service_ips())

    async def _apply_service_ips(self) -> None:
        try:
            while True:
                work = []
                for name, node in self._nodes.items():
                    have = self._applied.setdefault(name, set())
                    add, remove = sorted(self._service_ips - have), sorted(have - self._service_ips)
                    if add or remove:
                        lines = [*(f"addr replace {ip}/32 dev {SERVICE_BRIDGE}" for ip in add),
                                 *(f"addr del {ip}/32 dev {SERVICE_BRIDGE}" for ip in remove)]
                        work.append((name, node.netns, lines, set(self._service_ips)))
                if not work:
                    return
                results = await asyncio.gather(*(ipbatch.abatch(netns, lines, force=True)
                                                 for _name, netns, lines, _want in work), return_exceptions=True)
                for (name, _netns, _lines, want), result in zip(work, results):
                    if isinstance(result, BaseException):
                        log.warning("netns: ClusterIPs on node %s: %s", name, result)
                    if name in self._applied:
                        self._applied[name] = want  # -force: every line was tried
        finally:
            self._service_task = None

    # ------------------------------------------------------------------ pods

    def _pod_netns(self, container_id: str) -> str:
        short = container_id[:POD_ID_LENGTH]
        taken = {pod.netns for pod in self._pods.values()}
        name = f"{bridge.NETNS_PREFIX}{self.config.name}-p{short}"
        if not _PLAIN_ID.match(short) or name in taken:
            name = f"{bridge.NETNS_PREFIX}{self.config.name}-p{sha256(container_id.encode()).hexdigest()[:POD_ID_LENGTH]}"
        return namespaces.check_name(name)

    def _netconf(self, node: _Node) -> dict[str, Any]:
        config = bridge.network_config(f"netemu-{node.net.name}", node.net.pod_cidr, str(self._cni_dir),
                                       bridge=NODE_BRIDGE, port_isolation=True)
        if self.config.cni_bin_dir:
            config["type"] = "bridge"  # the executable of that name in cni_bin_dir, as a runtime would run it
        return config

    async def _cni(self, command: str, node: _Node, container_id: str, pod_netns: str) -> Any:
        netns = str(namespaces.namespace_path(pod_netns))
        try:
            async with node.lock:
                if not self.config.cni_bin_dir:
                    return await namespaces.acall_in(
                        node.netns, skel.invoke, bridge.PLUGIN, command, self._netconf(node),
                        container_id=container_id, netns=netns, ifname=POD_IFNAME)
                result = await namespaces.acall_in(
                    node.netns, execplugin.exec_plugin, command, self._netconf(node), container_id=container_id,
                    netns=netns, ifname=POD_IFNAME, path=(self.config.cni_bin_dir,))
                if result is not None:
                    await self._isolate_ports(node, result)
                return result
        except CNIError as exc:
            raise FabricError(f"CNI {command} for pod sandbox {container_id[:8]} on {node.net.name}: {exc}") from exc

    async def _isolate_ports(self, node: _Node, result: Any) -> None:
        """What ``portIsolation`` does, for plugins older than that option (Debian 12 ships 1.1):
        the pod's port on the node's bridge talks only through the node (see ``_NODE_SYSCTLS``)."""
        ports = [i.name for i in result.interfaces if not i.sandbox and i.name != NODE_BRIDGE]
        await ipbatch.abatch(node.netns, [f"link set {name} type bridge_slave isolated on" for name in ports])

    async def add_pod(self, node: str, container_id: str, namespace: str, pod: str) -> PodNetwork:
        host = self._nodes.get(node)
        if host is None:
            raise FabricError(f'node "{node}" is not part of this cluster')
        if container_id in self._pods:
            raise FabricError(f"pod sandbox {container_id} exists already")
        netns = self._pod_netns(container_id)
        self._pods[container_id] = _Pod(node, netns, f"{namespace}/{pod}")
        try:
            await self._create(netns)
            result = await self._cni("ADD", host, container_id, netns)
        except BaseException:
            await self._forget_pod(container_id)
            raise
        ip = result.ips[0]
        self._pods[container_id].ip = str(ip.address.ip)
        return PodNetwork(ip=str(ip.address.ip), gateway=str(ip.gateway or ""),
                          sandbox=str(namespaces.namespace_path(netns)))

    async def remove_pod(self, node: str, container_id: str) -> None:
        pod = self._pods.get(container_id)
        if pod is None:
            return
        host = self._nodes.get(pod.node)
        if host is not None:
            await self._cni("DEL", host, container_id, pod.netns)
        await self._forget_pod(container_id)

    async def _forget_pod(self, container_id: str) -> None:
        pod = self._pods.pop(container_id, None)
        if pod is None:
            return
        await namespaces.acollect([pod.netns])
        self._made = [n for n in self._made if n != pod.netns]

    # ------------------------------------------------------------------ where things run

    def namespace_of(self, where: str) -> str | Path:
        """The namespace name of a pod (container id) or node (name); for "" the host's namespace
        (a path; "" before the fabric starts: this thread's own)."""
        if not where:
            return self.host.path if self.host is not None else ""
        pod = self._pods.get(where)
        if pod is not None:
            return pod.netns
        node = self._nodes.get(where)
        if node is not None:
            return node.netns
        raise FabricError(f'"{where}" is neither a node nor a pod sandbox of cluster {self.config.name}')

    def process_prefix(self, where: str) -> list[str]:
        netns = self.namespace_of(where)
        if isinstance(netns, Path):
            return [_nsenter(), f"--net={netns}", "--"]
        return namespaces.exec_prefix(netns) if netns else []

    def socket(self, where: str, family: int, type: int) -> socket.socket:
        return self.sockets(where, family, type, 1)[0]

    def sockets(self, where: str, family: int, type: int, count: int) -> list[socket.socket]:
        netns = self.namespace_of(where)
        if not netns:
            return _new_sockets(family, type | socket.SOCK_NONBLOCK, count)
        return namespaces.call_in(netns, _new_sockets, family, type | socket.SOCK_NONBLOCK, count)

    async def _bound_socket(self, where: str, type: int, address: tuple[Any, ...],
                            options: dict[str, Any]) -> socket.socket:
        """A socket bound in ``where``'s namespace. A server asked for a pod's own IP listens on
        all of the pod's addresses instead, as a container's server does: built-in images bind
        the pod IP (the loopback backend needs that), and in a pod namespace localhost must
        reach them too."""
        netns = self.namespace_of(where)
        pod = self._pods.get(where)
        if pod is not None and pod.ip and address[0] == pod.ip:
            address = ("0.0.0.0", *address[1:])
        family = _family(address[0])
        if netns:
            sock = await namespaces.acall_in(netns, socket.socket, family, type)
        else:
            sock = socket.socket(family, type)
        try:
            sock.setblocking(False)
            if options.pop("reuse_address", type == socket.SOCK_STREAM):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if options.pop("reuse_port", False):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if options.pop("allow_broadcast", False):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            options.pop("family", None)
            options.pop("flags", None)
            sock.bind((_host(address[0]), *address[1:]))
        except BaseException:
            sock.close()
            raise
        return sock

    async def start_server(self, where: str, client_connected_cb: Callable[..., Awaitable[None]],
                           host: str, port: int, **kw: Any) -> asyncio.AbstractServer:
        sock = await self._bound_socket(where, socket.SOCK_STREAM, (host, port), kw)
        try:
            return await asyncio.start_server(client_connected_cb, sock=sock, **kw)
        except BaseException:
            sock.close()
            raise

    async def datagram_socket(self, where: str, local_addr: tuple[str, int]) -> socket.socket:
        return await self._bound_socket(where, socket.SOCK_DGRAM, tuple(local_addr), {})

    async def create_datagram_endpoint(self, where: str, protocol_factory: Callable[[], asyncio.BaseProtocol],
                                       local_addr: tuple[str, int], **kw: Any) -> tuple[Any, Any]:
        remote = kw.pop("remote_addr", None)
        sock = await self._bound_socket(where, socket.SOCK_DGRAM, tuple(local_addr), kw)
        try:
            if remote is not None:
                sock.connect(remote)
            return await asyncio.get_running_loop().create_datagram_endpoint(protocol_factory, sock=sock, **kw)
        except BaseException:
            sock.close()
            raise


def _new_sockets(family: int, type: int, count: int) -> list[socket.socket]:
    """Up to ``count`` new sockets: as many as there are descriptors for, at least one (or the
    error)."""
    made: list[socket.socket] = []
    for _ in range(count):
        try:
            made.append(socket.socket(family, type))
        except OSError:
            if made:
                break
            raise
    return made


def _nsenter() -> str:
    found = shutil.which("nsenter", path=os.environ.get("PATH", "") + os.pathsep + "/usr/bin:/bin")
    if found is None:
        raise FabricError("the netns backend needs `nsenter` (Debian package util-linux)")
    return found


def _host(host: str | None) -> str:
    if not host:
        return "0.0.0.0"
    return "127.0.0.1" if host == "localhost" else host


def _family(host: str | None) -> int:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(_host(host)).version == 6 else socket.AF_INET
    except ValueError as exc:
        raise FabricError(f"{host!r}: the netns backend binds IP addresses only, not names") from exc


# Replies to the proxy's transparent sockets (which speak from the client's address) are
# addressed to the client, not to the node: a socket lookup in prerouting marks them, and the
# mark routes them to this node's own stack (the TPROXY recipe, without the TPROXY target).
TRANSPARENT_MARK = 1
TRANSPARENT_TABLE = 100
_TRANSPARENT_RULES = f"""table ip netemu {{
  chain prerouting {{
    type filter hook prerouting priority mangle; policy accept;
    socket transparent 1 meta mark set {TRANSPARENT_MARK}
  }}
}}
"""

# Inside a node namespace only: forward; send pod-to-pod traffic on one node through the node's
# routing (ports on cni0 are isolated, the node answers ARP for its pods at once and sends no
# redirects), so that a pod's reply to a proxied connection reaches the proxy, as it would the
# node's conntrack in a real cluster.
_NODE_SYSCTLS = ["net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0",
                 "net.ipv4.conf.default.send_redirects=0", f"net.ipv4.conf.{NODE_BRIDGE}.send_redirects=0",
                 f"net.ipv4.conf.{NODE_BRIDGE}.proxy_arp_pvlan=1", f"net.ipv4.neigh.{NODE_BRIDGE}.proxy_delay=0"]


def _tool(name: str, package: str) -> str:
    found = shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin")
    if found is None:
        raise FabricError(f"the netns backend needs `{name}` (Debian package {package})")
    return found


async def _run_in(netns: str, argv: list[str], stdin: bytes | None = None) -> None:
    """``argv`` inside ``netns`` (``ip netns exec`` remounts /proc/sys/net for the child, so a
    sysctl never touches the caller's namespace)."""
    argv = [*namespaces.exec_prefix(netns), *argv]
    try:
        proc = await spawn(
            *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _out, err = await asyncio.wait_for(proc.communicate(stdin), ipbatch.IP_TIMEOUT)
    except (TimeoutError, OSError) as exc:
        raise FabricError(f"{' '.join(argv)}: {exc!r}") from exc
    if proc.returncode != 0:
        raise FabricError(f"{' '.join(argv)} failed with status {proc.returncode}: {err.decode(errors='replace').strip()}")


async def _setup_routing(netns: str) -> None:
    await _run_in(netns, [_tool("sysctl", "procps"), "-q", "-w", *_NODE_SYSCTLS])
