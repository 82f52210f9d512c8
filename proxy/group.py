"""``ProxyGroup``: the service proxy of one cluster — every node's ``Proxier`` and the listeners.

It is the proxy's whole interface to the rest of netemu, in the style of kube-proxy's
``ServiceHandler`` / ``EndpointSliceHandler``: ``on_service(old, new)``,
``on_endpointslice(old, new)`` (None for add or delete) and ``on_synced()``. Events only record
changes; one ``sync()``, on the next turn of the loop (or, within ``MIN_SYNC_INTERVAL`` of the
last one, once that has passed), applies them all to every node's proxier, and nothing is
applied before ``on_synced()``. The proxiers claim frontends; the group
then opens, filters and closes listeners to match, in one task (``settle()`` waits for it).

The group owns what is shared: the listeners (a ClusterIP listener exists once per cluster on a
shared-stack backend, see ``frontend``), load-balancer ingress listeners, which spread
connections over the NodePorts of the nodes that can serve (with ``externalTrafficPolicy:
Local`` only nodes with a ready local endpoint; with ClientIP affinity a client always goes to
the same node), the connection log, impairments and per-service errors. A listener that cannot
be opened (address in use, no permission) is logged and reported by ``service_errors``, and
tried again every ``listen_retry`` seconds while it is wanted.

The connection log holds one record per hop: a connection to a load-balancer ingress gives a
``load-balancer`` record (the NodePort it went to) and a ``node-port`` record (the pod).
A group is made, used and closed on one running event loop (uvloop in production).

With worker processes (``workers``: ``proxy_workers`` > 1 or ``auto``, loopback backend) the group
forwards each of its handler calls, nodes and impairments to them, its TCP listeners set
SO_REUSEPORT, ``settle`` waits for the workers too, and their connection records join this group's
log.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
import zlib
from dataclasses import dataclass
from typing import Any

from netemu.errors import InvalidError, ProxyError
from netemu.fabric.base import Fabric, NodeNetwork

from .balancer import MODES, ROUND_ROBIN
from .connlog import CLUSTER_IP, LOAD_BALANCER, NODE_PORT, ConnectionLog, ConnectionRecord
from .frontend import Frontend, FrontendKey, NodeRanges, describe, desired, is_shared_cluster_ip, shareable
from .impair import Impairment, Impairments
from .proxier import Proxier
from .route import RelayContext, Route
from .serviceport import EXTERNAL, INTERNAL, REJECT, SERVE, ServiceKey, ServicePortInfo, ServicePortName, Verdict
from .sockopts import attach_filter
from .splice import RELAY_CONGESTION
from .tcp import TCPListener
from .tracker import ChangeTracker
from .udp import UDPListener

log = logging.getLogger(__name__)
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
WORK_SLICE = 0.02  # seconds of sync or listener work before the loop gets a turn (big applies)
MIN_SYNC_INTERVAL = 0.05  # seconds between syncs while changes keep coming (kube-proxy's minSyncPeriod: 1 s)


@dataclass(frozen=True, kw_only=True)
class ProxyOptions:
    balance: str = ROUND_ROBIN                 # or "random"
    udp_idle_timeout: float = 30.0             # seconds without a datagram before a flow ends
    udp_max_flows: int = 4096                  # per UDP listener
    connection_log_size: int = 1000            # records kept per service
    dial_timeouts: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)  # one connect attempt each
    listen_backlog: int = 4096
    listen_retry: float = 1.0                  # seconds between attempts to open a failed listener
    kernel_data_path: bool = False             # proxyMode nftables: the kernel serves inside node
                                               # namespaces; only host-network listeners stay here
    reuse_port: bool = False                   # TCP listeners share their address with worker
                                               # processes (SO_REUSEPORT; proxy.workers)
    secondary: bool = False                    # a worker process: it opens only what may be shared
                                               # (``shareable``); the cluster's own group opens all


def _withdraws(old: Any, new: Any) -> bool:
    """Whether a slice update takes back an endpoint that could be served (gone, or no longer
    ready): the proxy applies that at once, before the pod behind it stops."""
    if old is None:
        return False
    if new is None:
        return bool(old.endpoints)
    ready = {address for e in new.endpoints if e.conditions.ready is not False for address in e.addresses}
    return any(address not in ready for e in old.endpoints if e.conditions.ready is not False
               for address in e.addresses)


class ProxyGroup:
    def __init__(self, fabric: Fabric, options: ProxyOptions | None = None) -> None:
        self.fabric = fabric
        self.options = options = options or ProxyOptions()
        if options.balance not in MODES:
            raise InvalidError(f"proxy balance {options.balance!r}: expected one of {', '.join(MODES)}")
        self.shared_stack: bool = fabric.shared_stack
        self.loop = asyncio.get_running_loop()
        self.ctx = RelayContext(self.loop, fabric, dial_timeouts=options.dial_timeouts,
                                udp_idle_timeout=options.udp_idle_timeout, udp_max_flows=options.udp_max_flows,
                                in_process_udp=self.shared_stack, shared_stack=self.shared_stack,
                                congestion=RELAY_CONGESTION if self.shared_stack else None)
        self.tracker = ChangeTracker()
        self.impairments = Impairments()
        self.log = ConnectionLog(options.connection_log_size)
        self.proxiers: dict[str, Proxier] = {}
        self.nodes: dict[str, NodeNetwork] = {}
        self.ranges = NodeRanges()
        self.default_node: str | None = None  # handles ClusterIP traffic from sources outside every node
        self._frontends: dict[FrontendKey, Frontend] = {}
        self._dirty: set[FrontendKey] = set()
        self._errors: dict[ServiceKey, dict[FrontendKey, str]] = {}
        self._synced = False
        self._closed = False
        self._sync_handle: asyncio.Handle | None = None
        self._last_sync = float("-inf")  # loop time of the last sync
        self._sync_later = False  # the planned sync waits for MIN_SYNC_INTERVAL
        self._unapplied: dict[ServiceKey, Any] = {}  # changes a sync slice left for the next turn
        self._reconcile_task: asyncio.Task | None = None
        self.workers: Any = None  # proxy.workers.ProxyWorkers: processes fed the same calls (none yet
                                  # with ``auto``: falsy, so nothing is encoded for them)

    # ------------------------------------------------------------------ nodes

    def add_node(self, node: NodeNetwork) -> Proxier:
        """Start proxying on ``node``; its proxier catches up with the services already synced."""
        if node.name in self.proxiers:
            return self.proxiers[node.name]
        if self.workers:
            self.workers.add_node(node)
        proxier = Proxier(self, node)
        self.proxiers[node.name] = proxier
        self.nodes[node.name] = node
        self._nodes_changed()
        if self._synced:
            for key, view in self.tracker.views().items():
                proxier.apply(key, view)
        return proxier

    async def remove_node(self, name: str) -> None:
        proxier = self.proxiers.pop(name, None)
        if proxier is None:
            return
        if self.workers:
            self.workers.remove_node(name)
        proxier.release_all()
        self.nodes.pop(name, None)
        self.ctx.close_all(node=name)
        self._nodes_changed()
        await self.settle()

    def _nodes_changed(self) -> None:
        self.default_node = next(iter(self.nodes), None)
        self.ranges.set_nodes(self.nodes.values())
        for key, fe in self._frontends.items():
            if is_shared_cluster_ip(fe):
                self._mark(key)

    # ------------------------------------------------------------------ handler interface

    @property
    def synced(self) -> bool:
        """``on_synced`` has been called: changes are being applied."""
        return self._synced

    def on_service(self, old: Any, new: Any) -> None:
        if self.tracker.service_update(old, new):
            self._schedule_sync()
            if self.workers:
                self.workers.on_service(old, new)

    def on_endpointslice(self, old: Any, new: Any) -> None:
        if self.tracker.slice_update(old, new):
            self._schedule_sync(at_once=_withdraws(old, new))
            if self.workers:
                self.workers.on_endpointslice(old, new)

    def on_synced(self) -> None:
        """Services and EndpointSlices have all been delivered once: start applying them."""
        self._synced = True
        self._schedule_sync()
        if self.workers:
            self.workers.on_synced()

    def _schedule_sync(self, *, at_once: bool = False) -> None:
        """Sync on the next turn, or, within ``MIN_SYNC_INTERVAL`` of the last sync, once that has
        passed: under churn (10,000 pods becoming ready) a service's changes are applied together,
        as kube-proxy's minSyncPeriod batches them. ``at_once``: the rest of a sliced sync, or an
        endpoint withdrawn (a pod about to stop must get no new connection meanwhile)."""
        if self._closed:
            return
        if at_once and self._sync_handle is not None and self._sync_later:
            self._sync_handle.cancel()  # a later sync was planned: this one cannot wait
            self._sync_handle = None
        if self._sync_handle is None:
            wait = 0.0 if at_once else self._last_sync + MIN_SYNC_INTERVAL - self.loop.time()
            self._sync_later = wait > 0
            self._sync_handle = (self.loop.call_later(wait, self.sync) if wait > 0
                                 else self.loop.call_soon(self.sync))

    def sync(self) -> None:
        """Apply every change recorded since the last sync to every node."""
        if self._sync_handle is not None:
            self._sync_handle.cancel()
            self._sync_handle = None
        if not self._synced or self._closed:
            return
        self._last_sync = self.loop.time()
        deadline = time.monotonic() + WORK_SLICE  # thousands of services: the rest next turn
        changes, self._unapplied = self._unapplied, {}
        changes.update(self.tracker.take_changes(deadline))  # a newer view of a waiting service replaces it
        items = iter(changes.items())
        for key, view in items:
            for proxier in self.proxiers.values():
                proxier.apply(key, view)
            if time.monotonic() > deadline:
                self._unapplied = dict(items)
                break
        if self._unapplied or self.tracker.pending:  # the slice ran out: the rest on the next turn
            self._schedule_sync(at_once=True)

    async def settle(self) -> None:
        """Apply pending changes now and wait until every listener matches them (the worker
        processes' listeners too)."""
        if self.workers:
            await self.workers.settle()
        while True:
            if self._sync_handle is not None:
                self.sync()
            task = self._reconcile_task
            if task is None:
                if self._sync_handle is None:
                    return
                await asyncio.sleep(0)  # a sliced sync goes on next turn
                continue
            await asyncio.shield(task)

    # ------------------------------------------------------------------ queries and settings

    def connection_log(self, namespace: str, name: str) -> list[ConnectionRecord]:
        """Recent connections and flows of one service on every node, oldest first."""
        return self.log.records((namespace, name))

    def service_errors(self, namespace: str, name: str) -> list[str]:
        """Why some listener of the service is not open (port conflicts, bind errors)."""
        return sorted(self._errors.get((namespace, name), {}).values())

    def listeners(self) -> list[dict[str, Any]]:
        """Every address the proxy keeps for a service port, and its state: ``open``,
        ``filtered`` (open, dropping some or all sources) or ``closed`` (refusing)."""
        out = []
        for key, fe in sorted(self._frontends.items()):
            state = "closed" if fe.listener is None else ("filtered" if fe.program is not None else "open")
            out.append({"address": describe(key), "network": key[0] or "host", "kind": fe.kind,
                        "service_port": str(fe.owner), "state": state})
        return out

    def set_impairment(self, impairment: Impairment | None, *, service: str | ServiceKey | None = None,
                       node: str | None = None) -> None:
        """Impair new connections and flows of a service (``"ns/name"`` or a tuple) or a node;
        None clears. Connections already running keep what they had."""
        if isinstance(service, str):
            namespace, _, name = service.rpartition("/")
            service = (namespace or "default", name)
        self.impairments.set(impairment, service=service, node=node)
        if self.workers:
            self.workers.set_impairment(impairment, service=service, node=node)

    # ------------------------------------------------------------------ claims (called by proxiers)

    def claim(self, key: FrontendKey, kind: str, info: ServicePortInfo, scope: str | None, node: str,
              verdict: Verdict) -> None:
        fe = self._frontends.get(key)
        owner = info.name
        if fe is None:
            fe = self._frontends[key] = Frontend(key=key, kind=kind, owner=owner, info=info, node=scope)
        elif fe.owner is not owner and fe.owner != owner and not fe.claims:
            # The owner has let go and its listener is not closed yet (the reconcile is pending, or
            # the release came earlier in this sync): the address is free, so take it over at once,
            # listener included, rather than wait for a release that has already happened.
            _, claims = fe.waiting.pop(info.name, (info, {}))
            fe.owner, fe.info, fe.claims, fe.kind, fe.node = info.name, info, claims, kind, scope
            self._clear_error(info.name.service, key)
        if fe.owner is not owner and fe.owner != owner:
            claims = fe.waiting.setdefault(info.name, (info, {}))[1]
            fe.waiting[info.name] = (info, claims)
            claims[node] = verdict
            self._set_error(info.name.service, key,
                            f"port conflict on {describe(key)}: held by service port {fe.owner}")
            return
        reshared = False
        if fe.info is not info:  # whether workers may share it follows the info
            shared_before = shareable(fe)
            fe.info = info
            reshared = shareable(fe) != shared_before
        if fe.claims.get(node) is not verdict or reshared:
            fe.claims[node] = verdict
            self._mark(key)

    def release(self, key: FrontendKey, spn: ServicePortName, node: str) -> None:
        fe = self._frontends.get(key)
        if fe is None:
            return
        if fe.owner != spn:
            waiting = fe.waiting.get(spn)
            if waiting is not None:
                waiting[1].pop(node, None)
                if not waiting[1]:
                    del fe.waiting[spn]
                    self._clear_error(spn.service, key)
            return
        fe.claims.pop(node, None)
        if not fe.claims and fe.waiting:  # the next claimant takes the address over
            owner, (info, claims) = next(iter(fe.waiting.items()))
            del fe.waiting[owner]
            fe.owner, fe.info, fe.claims = owner, info, claims
            self._clear_error(owner.service, key)
        self._mark(key)

    def drop_udp_endpoints(self, keys: set[FrontendKey], addresses: set[tuple[str, int]]) -> None:
        for key in keys:
            fe = self._frontends.get(key)
            if fe is not None and isinstance(fe.listener, UDPListener):
                for address in addresses:
                    fe.listener.drop_endpoint(address)

    def _set_error(self, service: ServiceKey, key: FrontendKey, message: str) -> None:
        errors = self._errors.setdefault(service, {})
        if errors.get(key) != message:
            log.warning("service %s/%s: %s", *service, message)
            errors[key] = message

    def _clear_error(self, service: ServiceKey, key: FrontendKey) -> None:
        errors = self._errors.get(service)
        if errors is not None and errors.pop(key, None) is not None and not errors:
            del self._errors[service]

    # ------------------------------------------------------------------ listeners

    def _mark(self, key: FrontendKey) -> None:
        self._dirty.add(key)
        if self._reconcile_task is None and not self._closed:
            self._reconcile_task = self.loop.create_task(self._reconcile())

    async def _reconcile(self) -> None:
        try:
            deadline = time.monotonic() + WORK_SLICE
            while self._dirty:
                dirty, self._dirty = self._dirty, set()
                for key in dirty:
                    fe = self._frontends.get(key)
                    if fe is not None:
                        await self._reconcile_one(fe)
                    if time.monotonic() > deadline:  # opening thousands of listeners: let the loop in
                        await asyncio.sleep(0)
                        deadline = time.monotonic() + WORK_SLICE
        finally:
            self._reconcile_task = None

    async def _reconcile_one(self, fe: Frontend) -> None:
        service = fe.owner.service
        try:
            want_open, program = desired(fe, self.ranges, self.default_node)
        except ProxyError as exc:
            self._set_error(service, fe.key, f"{describe(fe.key)}: {exc}")
            return
        if self.options.secondary and not shareable(fe):
            want_open = False  # the cluster's own process alone serves it
        if fe.kind == LOAD_BALANCER:
            fe.eligible = tuple(sorted(n for n, v in fe.claims.items() if v is Verdict.SERVE))
        if not want_open:
            if fe.listener is not None:
                fe.listener.close()
                fe.listener, fe.program = None, None
            if not fe.claims and not fe.waiting:
                del self._frontends[fe.key]
                self._clear_error(service, fe.key)
            return
        try:
            if fe.listener is None:
                fe.listener = await self._open_listener(fe, program)
            elif program != fe.program:
                fe.listener.set_filter(program)
        except OSError as exc:
            self._set_error(service, fe.key, f"cannot listen on {describe(fe.key)}: {exc.strerror or exc}")
            self.loop.call_later(self.options.listen_retry, self._retry_listener, fe.key)
            return
        fe.program = program
        self._clear_error(service, fe.key)

    def _retry_listener(self, key: FrontendKey) -> None:
        fe = self._frontends.get(key)
        if fe is not None and fe.listener is None and not self._closed:
            self._mark(key)

    async def _open_listener(self, fe: Frontend, program: bytes | None) -> Any:
        where, protocol, ip, port = fe.key
        kind = socket.SOCK_STREAM if protocol == "TCP" else socket.SOCK_DGRAM
        sock = self.fabric.socket(where, socket.AF_INET, kind)
        try:
            if protocol == "TCP":  # rebinding next to old connections; for UDP it would allow sharing
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if self.options.reuse_port:  # the kernel spreads new connections over the processes
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if program is not None:
                attach_filter(sock, program)  # before bind, so nothing slips through
            if not self.shared_stack and fe.kind == CLUSTER_IP:
                # the fabric adds the ClusterIP to the node's network as the Service appears,
                # possibly a moment after the proxy learns of it
                sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
            sock.bind((ip, port))
            dispatch = functools.partial(self._dispatch, fe)
            if protocol == "TCP":
                sock.listen(self.options.listen_backlog)
                return await TCPListener.open(self.ctx, sock, dispatch, self.options.listen_backlog)
            return UDPListener(self.ctx, sock, dispatch)
        except BaseException:
            sock.close()
            raise

    # ------------------------------------------------------------------ dispatch (per connection)

    def _dispatch(self, fe: Frontend, client: tuple[str, int]) -> Route:
        kind = fe.kind
        if kind == CLUSTER_IP:
            node, traffic = fe.node or self.ranges.node_of(client[0]) or self.default_node, INTERNAL
        elif kind == NODE_PORT:
            node, traffic = fe.node, EXTERNAL
        else:
            return self._balance(fe, client)
        claims = fe.claims
        if node not in claims:  # a node that has not caught up yet: any claimant answers
            node = next(iter(claims), None)
        proxier = self.proxiers.get(node)  # type: ignore[arg-type]
        if proxier is None:
            return self._unrouted(fe, client, kind)
        return proxier.route(fe.owner, traffic, client, kind)

    def _balance(self, fe: Frontend, client: tuple[str, int]) -> Route:
        """A load balancer's choice: one of the nodes that can serve, then its NodePort."""
        eligible, info = fe.eligible, fe.info
        if not eligible:
            return self._unrouted(fe, client, LOAD_BALANCER)
        if info.affinity_timeout:
            index = zlib.crc32(client[0].encode()) % len(eligible)
        else:
            index = fe.turn % len(eligible)
            fe.turn += 1
        node = eligible[index]
        if info.node_port is None:  # no node ports allocated: hand the connection to the node
            return self.proxiers[node].route(fe.owner, EXTERNAL, client, LOAD_BALANCER)
        address = (self.nodes[node].ip, info.node_port)
        where = "" if self.shared_stack else node  # a node's own IP is reachable inside its network only
        record = ConnectionRecord(client=client, service_port=info.label, frontend=LOAD_BALANCER, node=node,
                                  endpoint=f"{address[0]}:{address[1]}")
        self.log.add(fe.owner.service, record)

        def retry(tried: list[tuple[str, int]]) -> tuple[str, int] | None:
            for other in fe.eligible:
                candidate = (self.nodes[other].ip, info.node_port) if other in self.nodes else None
                if candidate is not None and candidate not in tried:
                    record.node, record.endpoint = other, f"{candidate[0]}:{candidate[1]}"
                    return candidate
            return None

        # On separate stacks a host client's 127.x address cannot leave the node's network: the
        # hop to the NodePort then comes from the node itself.
        source = client[0] if self.shared_stack else None
        return Route(SERVE, record, address=address, source_ip=source, where=where, retry=retry)

    def _unrouted(self, fe: Frontend, client: tuple[str, int], kind: str) -> Route:
        record = ConnectionRecord(client=client, service_port=fe.info.label, frontend=kind, node="")
        self.log.add(fe.owner.service, record)
        return Route(REJECT, record)

    # ------------------------------------------------------------------ shutdown

    async def close(self) -> None:
        """Close every listener and every relay, and stop the worker processes; the group
        cannot be used afterwards."""
        self._closed = True
        if self.workers:
            await self.workers.close()
        if self._sync_handle is not None:
            self._sync_handle.cancel()
            self._sync_handle = None
        task = self._reconcile_task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for fe in self._frontends.values():
            if fe.listener is not None:
                fe.listener.close()
                fe.listener = None
        self._frontends.clear()
        connecting = [t for item in self.ctx.live if (t := getattr(item, "task", None)) is not None and not t.done()]
        self.ctx.close_all()
        await asyncio.gather(*connecting, return_exceptions=True)
        await asyncio.sleep(0)  # let the transports just closed run their connection_lost
        self.ctx.close()
