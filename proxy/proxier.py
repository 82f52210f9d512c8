"""``Proxier``: one emulated node's kube-proxy.

It keeps, per service port, the node's verdict and balancer for internal (ClusterIP) and
external (NodePort, load balancer) traffic, claims the frontends those need from its group, and
routes each new connection or flow: which endpoint, from which source address, with which
impairment. The source address is what a real iptables-mode cluster shows the backend: the
client's own address for ClusterIP traffic and for NodePort/LB traffic with
``externalTrafficPolicy: Local``; the node's IP (SNAT) for NodePort/LB traffic with ``Cluster``.
Where nodes have their own network stacks (netns backend) the backend always sees the node's IP:
the proxy is a userspace relay there, and replies to the client's own address would bypass it.
A node with a ``host_ip`` (netns) also gets its NodePorts on that address in the host's network.

The group (``group.ProxyGroup``) feeds it the changed services at each sync and owns the
listeners; the proxier never touches a socket.
"""
from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING

from netemu.fabric.base import NodeNetwork

from .balancer import Balancer
from .connlog import CLUSTER_IP, LOAD_BALANCER, NODE_PORT, ConnectionRecord
from .frontend import FrontendKey
from .impair import Impairment
from .nftables_render import host_backed
from .route import Route
from .serviceport import (INTERNAL, REJECT, SERVE, EndpointInfo, ServiceKey, ServicePortInfo, ServicePortName,
                          Traffic, Verdict, categorize)
from .tracker import PortView

if TYPE_CHECKING:
    from .group import ProxyGroup


Categorized = tuple[Verdict, tuple[EndpointInfo, ...]]
_last_cluster_wide: tuple[tuple[EndpointInfo, ...], Categorized] | None = None  # (endpoints, answer)


def _categorized(endpoints: tuple[EndpointInfo, ...], node: str, local: bool) -> Categorized:
    """``categorize``, computed once per endpoint set for the Cluster policy: its answer does not
    depend on the node, and a sync hands the same endpoints to every node's proxier in turn."""
    global _last_cluster_wide
    if local:
        return categorize(endpoints, node, True)
    last = _last_cluster_wide
    if last is not None and last[0] is endpoints:
        return last[1]
    result = categorize(endpoints, node, False)
    _last_cluster_wide = (endpoints, result)
    return result


class _Lane:
    """One kind of traffic of one service port on this node.

    The balancer takes a new endpoint set when it is next asked for an endpoint (``route``
    calls ``follow`` first when one is ``pending``), not at once: a sync hands every service's
    changes to every node (20 of them while 10,000 pods start), and only the nodes whose clients
    connect need their balancer to follow. An unchanged set keeps its order and position either
    way; sets a node never routed with are skipped, as kube-proxy's batched syncs skip the states
    between two of them."""

    __slots__ = ("verdict", "balancer", "pending")

    def __init__(self, mode: str) -> None:
        self.verdict = Verdict.REJECT
        self.balancer = Balancer(mode)
        self.pending: tuple[tuple[EndpointInfo, ...], float] | None = None  # (endpoints, affinity timeout)

    def set(self, verdict: Verdict, endpoints: tuple[EndpointInfo, ...], affinity_timeout: float) -> None:
        self.verdict = verdict
        self.pending = (endpoints, affinity_timeout)

    def follow(self) -> None:
        """Give the balancer the ``pending`` endpoint set (there is one)."""
        endpoints, affinity_timeout = self.pending  # type: ignore[misc]
        self.pending = None
        self.balancer.update(endpoints, affinity_timeout)


class _PortState:
    __slots__ = ("info", "endpoints", "internal", "external", "frontends")

    def __init__(self, info: ServicePortInfo, mode: str) -> None:
        self.info = info
        self.endpoints: tuple[EndpointInfo, ...] = ()
        self.internal = _Lane(mode)
        self.external: _Lane | None = None  # made once the port has a NodePort or a load-balancer IP
        self.frontends: set[FrontendKey] = set()


class Proxier:
    def __init__(self, group: "ProxyGroup", node: NodeNetwork) -> None:
        self.group = group
        self.node = node
        self.name = node.name
        self.shared_stack = group.shared_stack
        self.impairments = group.impairments
        self._services: dict[ServiceKey, dict[ServicePortName, _PortState]] = {}
        self._ports: dict[ServicePortName, _PortState] = {}

    # ------------------------------------------------------------------ public

    def connection_log(self, namespace: str, name: str) -> list[ConnectionRecord]:
        """Recent connections and flows of one service that this node proxied, oldest first."""
        return self.group.log.records((namespace, name), node=self.name)

    def service_errors(self, namespace: str, name: str) -> list[str]:
        return self.group.service_errors(namespace, name)

    def set_impairment(self, impairment: Impairment | None) -> None:
        """Impair (or with None, stop impairing) new connections this node proxies or serves."""
        self.group.set_impairment(impairment, node=self.name)

    async def close(self) -> None:
        """Stop proxying for this node: release its listeners and close its relays."""
        await self.group.remove_node(self.name)

    # ------------------------------------------------------------------ sync (called by the group)

    def apply(self, key: ServiceKey, view: PortView) -> None:
        """Bring one service in line with ``view`` (empty: the service is gone)."""
        states = self._services.get(key)
        if states is None:
            if not view:
                return
            states = {}
        else:
            for spn in [s for s in states if s not in view]:
                self._remove(spn, states.pop(spn))
        for spn, (info, endpoints) in view.items():
            state = states.get(spn)
            if state is None:
                state = states[spn] = self._ports[spn] = _PortState(info, self.group.options.balance)
            self._update(state, info, endpoints)
        if states:
            self._services[key] = states
        else:
            self._services.pop(key, None)

    def release_all(self) -> None:
        for states in self._services.values():
            for spn, state in states.items():
                self._remove(spn, state)
        self._services.clear()

    def _remove(self, spn: ServicePortName, state: _PortState) -> None:
        for key in state.frontends:
            self.group.release(key, spn, self.name)
        state.frontends = set()
        self._ports.pop(spn, None)

    def _update(self, state: _PortState, info: ServicePortInfo, endpoints: tuple[EndpointInfo, ...]) -> None:
        spn = info.name
        protocol = spn.protocol
        gone = ({e.address for e in state.endpoints} - {e.address for e in endpoints}
                if protocol == "UDP" else None)
        state.info, state.endpoints = info, endpoints
        group, name = self.group, self.name
        verdict, usable = _categorized(endpoints, name, info.internal_local)
        state.internal.set(verdict, usable, info.affinity_timeout)
        wanted: dict[FrontendKey, tuple[str, Verdict, str | None]]
        if group.shared_stack:
            wanted = {("", protocol, info.cluster_ip, info.port): (CLUSTER_IP, verdict, None)}
        else:
            wanted = {(name, protocol, info.cluster_ip, info.port): (CLUSTER_IP, verdict, name)}
        if info.node_port is not None or info.load_balancer_ips:
            verdict, usable = _categorized(endpoints, name, info.external_local)
            if state.external is None:
                state.external = _Lane(group.options.balance)
            state.external.set(verdict, usable, info.affinity_timeout)
            if info.node_port is not None and self.node.ip:
                wanted[(name, protocol, self.node.ip, info.node_port)] = (NODE_PORT, verdict, name)
            host_ip = getattr(self.node, "host_ip", "")  # netns: the node's address as the host sees it
            if info.node_port is not None and host_ip and host_ip != self.node.ip:
                wanted[("", protocol, host_ip, info.node_port)] = (NODE_PORT, verdict, name)
            for ip in info.load_balancer_ips:
                wanted[("", protocol, ip, info.port)] = (LOAD_BALANCER, verdict, None)
        if group.options.kernel_data_path and not host_backed(endpoints):
            # proxyMode nftables (nftables_proxier): inside node namespaces the kernel serves
            wanted = {key: claim for key, claim in wanted.items() if not key[0]}
        frontends = state.frontends
        if frontends:
            for key in frontends - wanted.keys():
                group.release(key, spn, name)
        for key, (kind, verdict, scope) in wanted.items():
            group.claim(key, kind, info, scope, name, verdict)
        if frontends != wanted.keys():  # unchanged (every sync after the first, mostly): kept
            state.frontends = set(wanted)
        if gone:
            group.drop_udp_endpoints(state.frontends, gone)

    # ------------------------------------------------------------------ routing (per connection)

    def route(self, spn: ServicePortName, traffic: Traffic, client: tuple[str, int], frontend: str) -> Route:
        """Decide one new connection or flow from ``client`` to service port ``spn``.

        Called once per connection: what does not depend on the client (the usable endpoints,
        the service's label and key, an endpoint's address and text) was made when the service
        port or its endpoints changed."""
        state = self._ports.get(spn)
        if state is None:
            record = ConnectionRecord(client, str(spn), frontend, self.name)
            self.group.log.add(spn.service, record)
            return Route(REJECT, record)
        record = ConnectionRecord(client, state.info.label, frontend, self.name)
        self.group.log.add(spn.service, record)
        lane = state.internal if traffic is INTERNAL else state.external
        if lane is None:  # external traffic to a port that no longer has an external frontend
            return Route(REJECT, record)
        if lane.verdict is not SERVE:
            return Route(lane.verdict, record)
        client_ip = client[0]
        if lane.pending is not None:  # the first connection since the endpoints changed
            lane.follow()
        balancer = lane.balancer
        endpoint = balancer.pick(client_ip)
        if endpoint is None:
            return Route(REJECT, record)
        record.endpoint = endpoint.text
        source = client_ip if traffic is INTERNAL or state.info.external_local else self.node.ip
        where = self.name
        if not self.shared_stack:
            if endpoint.ip.startswith("127."):
                # Separate stacks: a 127.x endpoint is in the host's network (the cluster's own API
                # server behind ``kubernetes``, netemu.kubeapi.incluster): connect from there.
                source, where = None, ""
            elif source == endpoint.ip or self.group.ranges.node_of(source) is None:
                # Separate stacks (netns): the backend's reply must come back here. It does for a
                # pod's or a node's address (the node routes it to this relay's transparent socket),
                # but not for a pod reaching itself through its Service, nor for a ClusterIP (which
                # every node holds) or a host client's 127.x (which means nothing inside the
                # cluster): those speak from the node, as kube-proxy masquerades them.
                source = self.node.ip
        impairments = self.impairments
        impairment = (impairments.lookup(spn.service, (self.name, endpoint.node))
                      if impairments.by_service or impairments.by_node else None)
        return Route(SERVE, record, endpoint.address, source, where, impairment,
                     functools.partial(self._retry, balancer, client_ip, record))

    @staticmethod
    def _retry(balancer: Balancer, client_ip: str, record: ConnectionRecord,
               tried: list[tuple[str, int]]) -> tuple[str, int] | None:
        endpoint = balancer.pick(client_ip, time.monotonic(), exclude=set(tried))
        if endpoint is None:
            return None
        record.endpoint = endpoint.text
        return endpoint.address

