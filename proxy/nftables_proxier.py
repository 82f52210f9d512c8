"""``NftablesProxier``: ``proxyMode: nftables`` on the netns backend — kube-proxy's nftables mode,
the Services of a cluster as DNAT rules in every node namespace's table ``ip netemu-proxy``.

It takes the same events as the userspace ``ProxyGroup`` (``on_service``, ``on_endpointslice``,
``on_synced``) into its own ``ChangeTracker``, so it learns exactly the services whose view
changed. One task applies them: it renders just those services for every node
(``nftables_render.render_service``) and sends each node the difference from what its table
holds (``nftables_render.transition``) as one atomic ``nft -f -`` batch in the node's namespace;
a burst of changes costs one batch per node. A node joins with the base table and every service;
a failed batch is logged and the node's table rebuilt from scratch a second later.

The split with the userspace proxy (which keeps running, with ``ProxyOptions.kernel_data_path``):

- in the node namespaces the kernel does the work: ClusterIPs (pods' traffic at prerouting, the
  node's own at output) and NodePorts on the node's address, so the userspace proxy opens no
  listener there;
- in the host's network (where netemu never adds rules or addresses) the userspace listeners stay:
  the NodePorts on each node's host address (127.10.0.N) and load-balancer ingress addresses, which
  relay into the node namespace as before;
- services whose endpoints are in the host's network (127/8: the cluster's API server behind
  ``kubernetes``) stay userspace everywhere: no node can DNAT to a host address;
- what only the userspace relay does does not happen for kernel traffic: per-service impairments
  (refused by the chaos admission), the connection log, and dial retries to another endpoint.

As kube-proxy, when a UDP endpoint goes, the conntrack entries DNAT'd to it are deleted in every
node (``conntrack.delete_udp``) once the rules are in: else a client that keeps its source port
keeps sending to the removed pod until the entry expires.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import shutil
import time
from typing import Any, Callable

from netemu.errors import FabricError
from netemu.fabric.netns import conntrack, namespaces
from netemu.fabric.netns.nft import run_nft
from netemu.spawn import spawn

from . import nftables_render as render
from .serviceport import ServiceKey, ServicePortInfo
from .tracker import ChangeTracker, PortView

log = logging.getLogger(__name__)
RETRY_DELAY = 1.0  # seconds before a node whose batch failed is built again


async def _no_bridged_dnat(netns: str) -> None:
    """Turn ``br_netfilter`` off in the node namespace (where it is loaded: the setting is per
    namespace). With it on, a packet DNAT'd to a pod on the same bridge is bridged straight to that
    pod's port, which the netns backend isolates (pods talk only through the node): pod to
    ClusterIP to a pod on the same node would time out. Pods' traffic is routed by the node anyway,
    so its nftables see it without br_netfilter."""
    sysctl = shutil.which("sysctl", path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin")
    if sysctl is None or not os.path.exists("/proc/sys/net/bridge"):
        return
    proc = await spawn(*namespaces.exec_prefix(netns), sysctl, "-q", "-w", "net.bridge.bridge-nf-call-iptables=0",
                       stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _out, err = await proc.communicate()
    if proc.returncode != 0:
        log.warning("nftables proxy: %s: cannot turn bridge-nf-call-iptables off: %s", netns, err.decode().strip())


Stale = list[tuple[ServicePortInfo, frozenset[tuple[str, int]]]]


def stale_udp(old: PortView, new: PortView) -> Stale:
    """UDP service ports of one service whose endpoints (address, port) in ``old`` are gone
    from ``new``, with those endpoints: their conntrack entries must go."""
    out = []
    for spn, (info, endpoints) in old.items():
        if info.protocol != "UDP":
            continue
        kept = {e.address for e in new[spn][1]} if spn in new else set()
        gone = frozenset(e.address for e in endpoints if e.address not in kept)
        if gone:
            out.append((info, gone))
    return out


def _flows_to(stale: Stale) -> Callable[[conntrack.Entry], bool]:
    """Matches a UDP conntrack entry that a stale port's ClusterIP or NodePort DNAT'd to a gone endpoint."""
    def match(entry: conntrack.Entry) -> bool:
        to = (entry.reply.src, entry.reply.sport)
        for info, gone in stale:
            if to in gone and ((entry.orig.dst, entry.orig.dport) == (info.cluster_ip, info.port)
                               or entry.orig.dport == info.node_port):
                return True
        return False
    return match


class _NodeTable:
    """What one node's table holds, per service (None before the base table is there)."""

    def __init__(self, ctx: render.NodeContext, netns: str) -> None:
        self.ctx = ctx
        self.netns = netns
        self.applied: dict[ServiceKey, render.ServiceRules] | None = None


class NftablesProxier:
    def __init__(self, *, pod_cidr: str, service_cidr: str, netns_of: Callable[[str], str]) -> None:
        self.pod_cidr = pod_cidr
        self.service_cidr = service_cidr
        self.netns_of = netns_of  # node name -> its namespace
        self.tracker = ChangeTracker()
        self._views: dict[ServiceKey, PortView] = {}
        self._nodes: dict[str, _NodeTable] = {}
        self._synced = False
        self._dirty = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.passes = 0
        self._pending_since: float | None = None  # time.monotonic() of the oldest change not yet applied
        self.latencies: collections.deque[float] = collections.deque(maxlen=1000)  # change -> kernel, s

    # ------------------------------------------------------------------ handler interface

    def on_service(self, old: Any, new: Any) -> None:
        if self.tracker.service_update(old, new):
            self._poke()

    def on_endpointslice(self, old: Any, new: Any) -> None:
        if self.tracker.slice_update(old, new):
            self._poke()

    def on_synced(self) -> None:
        """Services and EndpointSlices have all been delivered once: start programming nodes."""
        self._synced = True
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="nftables-proxier")
        self._poke()

    def add_node(self, name: str) -> None:
        if name not in self._nodes:
            ctx = render.NodeContext(node=name, pod_cidr=self.pod_cidr, service_cidr=self.service_cidr)
            self._nodes[name] = _NodeTable(ctx, self.netns_of(name))
            self._poke()

    async def remove_node(self, name: str) -> None:
        """Stop serving on ``name``: its table goes (a stopped node answers no service)."""
        table = self._nodes.pop(name, None)
        if table is not None and table.applied is not None:
            try:
                await run_nft(table.netns, f"delete table {render.FAMILY} {render.TABLE}\n")
            except FabricError as exc:
                log.warning("nftables proxy: node %s: %s", name, exc)

    def _poke(self) -> None:
        if self._pending_since is None:
            self._pending_since = time.monotonic()
        self._idle.clear()
        self._dirty.set()

    async def settle(self, timeout: float = 30) -> None:
        """Returns once every change seen so far is in every node's kernel."""
        if self._synced:
            await asyncio.wait_for(self._idle.wait(), timeout)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    # ------------------------------------------------------------------ queries

    def table(self, node: str) -> dict[ServiceKey, render.ServiceRules]:
        """What the kernel of ``node`` holds, per service (as last applied)."""
        table = self._nodes.get(node)
        return dict(table.applied or {}) if table is not None else {}

    # ------------------------------------------------------------------ applying

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            since, self._pending_since = self._pending_since, None
            try:
                if await self._sync() and since is not None:
                    self.latencies.append(time.monotonic() - since)
            except asyncio.CancelledError:
                raise
            except Exception:  # one failed pass must not end the proxy
                log.exception("nftables proxy: sync failed")
            self.passes += 1
            if not self._dirty.is_set():
                self._idle.set()

    async def _sync(self) -> bool:
        """One pass; True if some node's kernel changed."""
        changes = self.tracker.take_changes()
        stale = [item for key, view in changes.items() for item in stale_udp(self._views.get(key, {}), view)]
        for key, view in changes.items():
            if view:
                self._views[key] = view
            else:
                self._views.pop(key, None)
        sent = await asyncio.gather(*(self._sync_node(table, changes, stale) for table in list(self._nodes.values())))
        return any(sent)

    async def _sync_node(self, table: _NodeTable, changes: dict[ServiceKey, PortView], stale: Stale) -> bool:
        lines: list[str] = []
        applied = table.applied
        if applied is None:  # new, or its last batch failed: the base table and every service
            await _no_bridged_dnat(table.netns)
            lines.append(f"table {render.FAMILY} {render.TABLE}\ndelete table {render.FAMILY} {render.TABLE}\n"
                         + render.base(table.ctx))
            applied, keys = {}, list(self._views)
        else:
            applied, keys = dict(applied), list(changes)
        for key in keys:
            view = self._views.get(key)
            new = render.render_service(view, table.ctx) if view else render.EMPTY
            lines += render.transition(applied.get(key, render.EMPTY), new)
            if new.chains or new.elements:
                applied[key] = new
            else:
                applied.pop(key, None)
        if lines:
            try:
                await run_nft(table.netns, "".join(line + "\n" for line in lines))
            except FabricError as exc:
                table.applied = None
                log.warning("nftables proxy: node %s: %s", table.ctx.node, exc)
                asyncio.get_running_loop().call_later(RETRY_DELAY, self._poke)
                return False
        if self._nodes.get(table.ctx.node) is table:
            table.applied = applied
        if stale:
            try:
                await conntrack.delete_udp(table.netns, _flows_to(stale))
            except FabricError as exc:
                log.warning("nftables proxy: node %s: %s", table.ctx.node, exc)
        return bool(lines)
