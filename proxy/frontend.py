"""Frontends: the addresses the proxy listens on, who claims them, and what each should do.

A frontend is one (network, protocol, address, port) — a ClusterIP port, a node's NodePort or a
load-balancer ingress port. Every node's proxier claims the frontends of its service ports with
its verdict for that traffic; the group opens, filters and closes the listener to match all the
claims together (``desired``). The first service port to claim an address owns it: a claim by
another service port is a conflict, reported on that service and kept waiting until the owner
lets go. An owner that has let go (no claims left) no longer holds the address, even while its
listener is still open: the next claim takes the address and the listener over at once, so a
Service deleted and another created on the same NodePort in one sync (in either order) never
sees a conflict, and the port keeps listening. Claims by the same owner and node are idempotent.

Which node handles a ClusterIP connection matters for ``internalTrafficPolicy: Local``. Where
every node has its own network stack, each node has its own ClusterIP listener (``node`` set).
Where all nodes share one stack (loopback), a ClusterIP:port can be bound once per cluster, so
one shared listener serves every node and each connection is handled as if by the client's node,
found from the client's source address (``NodeRanges``: a node's pod range and its own IP).
Sources outside every node (the host itself) count as the first node's. When the policy drops
traffic from some nodes, a source filter on the shared listener drops exactly their SYNs and
datagrams, so their clients time out while other nodes' clients are served.
"""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any, Iterable

from netemu.fabric.base import NodeNetwork

from .connlog import CLUSTER_IP, LOAD_BALANCER
from .serviceport import ServicePortInfo, ServicePortName, Verdict
from .sockopts import Net, drop_all_filter, parse_nets, source_filter

FrontendKey = tuple[str, str, str, int]  # (where, protocol, ip, port)
_CACHE_SIZE = 65536


def describe(key: FrontendKey) -> str:
    return f"{key[2]}:{key[3]}/{key[1]}"


@dataclass(eq=False)
class Frontend:
    key: FrontendKey
    kind: str                       # cluster-ip, node-port or load-balancer
    owner: ServicePortName
    info: ServicePortInfo
    node: str | None = None         # the only node it serves; None when shared by all nodes
    claims: dict[str, Verdict] = field(default_factory=dict)
    waiting: dict[ServicePortName, tuple[ServicePortInfo, dict[str, Verdict]]] = field(default_factory=dict)
    listener: Any = None
    program: bytes | None = None    # the source filter in place
    eligible: tuple[str, ...] = ()  # load balancer: nodes to spread over
    turn: int = 0                   # load balancer: round-robin position


class NodeRanges:
    """Which node an IPv4 source address belongs to: its pod range or the node's own IP."""

    def __init__(self) -> None:
        self._nets: dict[str, list[Net]] = {}
        self._lookup: dict[int, dict[int, str]] = {}   # prefix length → network → node
        self._prefixes: list[int] = []                  # longest first
        self._cache: dict[str, str | None] = {}

    def set_nodes(self, nodes: Iterable[NodeNetwork]) -> None:
        self._nets.clear()
        self._lookup.clear()
        self._cache.clear()
        for node in nodes:
            cidrs = [c for c in (node.pod_cidr, f"{node.ip}/32" if node.ip else "") if c]
            self._nets[node.name] = parse_nets(cidrs)
            for cidr in cidrs:
                net = ipaddress.IPv4Network(cidr, strict=False)
                self._lookup.setdefault(net.prefixlen, {})[int(net.network_address)] = node.name
        self._prefixes = sorted(self._lookup, reverse=True)

    def node_of(self, ip: str) -> str | None:
        """Called for every ClusterIP connection, so answers are cached."""
        try:
            return self._cache[ip]
        except KeyError:
            pass
        try:
            value = int.from_bytes(socket.inet_aton(ip), "big")
        except OSError:
            return None
        found = None
        for prefix in self._prefixes:
            found = self._lookup[prefix].get(value >> (32 - prefix) << (32 - prefix))
            if found is not None:
                break
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[ip] = found
        return found

    def nets(self, nodes: Iterable[str]) -> list[Net]:
        return [n for node in nodes for n in self._nets.get(node, ())]

    @property
    def nodes(self) -> list[str]:
        return list(self._nets)


def desired(fe: Frontend, ranges: NodeRanges, default_node: str | None) -> tuple[bool, bytes | None]:
    """Whether ``fe``'s listener should be open, and with which source filter (None: none).

    Closed means the kernel refuses (TCP RST, UDP ICMP port unreachable): a service port with
    no usable endpoint anywhere. A node-scoped frontend whose node drops is open with a filter
    that drops everything. A load balancer is open while some node can serve."""
    claims = fe.claims
    if not claims:
        return False, None
    if fe.kind == LOAD_BALANCER:
        return any(v is Verdict.SERVE for v in claims.values()), None
    if fe.node is not None:
        verdict = claims.get(fe.node)
        if verdict is Verdict.SERVE:
            return True, None
        if verdict is Verdict.DROP:
            return True, drop_all_filter()
        return False, None
    if all(v is Verdict.REJECT for v in claims.values()):
        return False, None
    dropping = {node for node, v in claims.items() if v is Verdict.DROP}
    if not dropping:
        return True, None
    if default_node in dropping:  # unknown sources count as the default node's: list who may pass
        allowed = [n for n in ranges.nodes if n not in dropping]
        nets = ranges.nets(allowed)
        return True, source_filter(nets, drop_listed=False) if nets else drop_all_filter()
    return True, source_filter(ranges.nets(sorted(dropping)), drop_listed=True)


def is_shared_cluster_ip(fe: Frontend) -> bool:
    return fe.kind == CLUSTER_IP and fe.node is None


def shareable(fe: Frontend) -> bool:
    """Whether worker processes (proxy.workers) may listen on ``fe`` too, each taking a share of
    its new connections: TCP without ClientIP affinity. UDP flows stay in one process (the
    kernel would spread a flow's datagrams over the processes), and so do affinity services
    (the kernel spreads by the whole 4-tuple, not by the client's address alone)."""
    return fe.key[1] == "TCP" and not fe.info.affinity_timeout
