"""Keeps every node's nftables (``nftables``) in step with the store's pods, namespaces and policies.

Store events name what changed; one task feeds just those objects to the incremental
``state.PolicyState`` (which recomputes only the sets and chains they touch) and sends each node
the difference from what it has, as one atomic ``nft -f -`` batch in the node's namespace, so a
burst of changes costs one pass. The first pass lists everything. A node joins with the base
table; a failed batch is logged and the node's table rebuilt a second later.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from netemu.errors import FabricError
from netemu.fabric.netns import namespaces
from netemu.fabric.netns.nft import run_nft

from . import nftables
from .model import pod_facts
from .state import Key, PolicyState

log = logging.getLogger(__name__)
KINDS = ("Pod", "Namespace", "NetworkPolicy")
RETRY_DELAY = 1.0  # seconds before a node whose batch failed is tried again


def _has_pod_network(pod: Any) -> bool:
    """Whether policies apply to the pod: running with an address of its own."""
    return (not pod.spec.host_network and bool(pod.status.pod_ip)
            and pod.status.phase not in ("Succeeded", "Failed"))


class PolicyEnforcer:
    """NetworkPolicy in the kernel of every node of a netns cluster."""

    def __init__(self, cluster: Any):
        self.cluster = cluster
        self.store = cluster.store
        self._applied: dict[str, nftables.NodeRules] = {}  # node name -> what its table holds
        self._state = PolicyState()
        self._node_of: dict[Key, str] = {}  # pod -> its node, for pods the state holds
        self._changed: set[tuple[str, str, str]] | None = None  # (kind, namespace, name); None: list all
        self._dirty = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Any = None
        self.passes = 0

    def start(self) -> None:
        self._unsubscribe = self.store.subscribe(self._on_event, kinds=KINDS)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="networkpolicy-enforcer")
        self.poke()

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _on_event(self, event: Any) -> None:
        if self._changed is not None:
            meta = event.obj.metadata
            self._changed.add((event.kind, meta.namespace or "", meta.name))
        self.poke()

    def poke(self) -> None:
        """Something changed: recompute soon."""
        self._idle.clear()
        self._dirty.set()

    async def synced(self, timeout: float = 30) -> None:
        """Returns once every change seen so far has reached the kernel."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._sync()
            except asyncio.CancelledError:
                raise
            except Exception:  # one failed pass must not end enforcement
                log.exception("networkpolicy: sync failed")
            self.passes += 1
            if not self._dirty.is_set():
                self._idle.set()

    def _feed(self, kind: str, namespace: str, name: str) -> None:
        """Tell the state what the store now holds for one object."""
        obj = self.store.get(kind, namespace, name)
        if kind == "Namespace":
            self._state.set_namespace(name, dict(obj.metadata.labels) if obj is not None else None)
        elif kind == "NetworkPolicy":
            self._state.set_policy((namespace, name), obj)
        else:
            enforced = obj is not None and _has_pod_network(obj)
            self._state.set_pod((namespace, name), pod_facts(obj) if enforced else None)
            if enforced:
                self._node_of[(namespace, name)] = obj.spec.node_name
            else:
                self._node_of.pop((namespace, name), None)

    def _take_changes(self) -> None:
        changed, self._changed = self._changed, set()
        if changed is None:  # the first pass: everything
            self._state = PolicyState()
            self._node_of.clear()
            changed = {(kind, obj.metadata.namespace or "", obj.metadata.name)
                       for kind in ("Namespace", "Pod", "NetworkPolicy") for obj in self.store.list(kind)}
        for order in ("Namespace", "Pod", "NetworkPolicy"):
            for kind, namespace, name in changed:
                if kind == order:
                    self._feed(kind, namespace, name)

    async def _sync(self) -> None:
        try:
            self._take_changes()
        except Exception:
            self._changed = None  # start over from a full list next pass
            raise
        local: dict[str, list[Key]] = {}
        for key, node in self._node_of.items():
            local.setdefault(node, []).append(key)
        nodes = list(self.cluster.nodes)
        for gone in [n for n in self._applied if n not in nodes]:
            del self._applied[gone]
        await asyncio.gather(*(self._sync_node(node, self._state.node_rules(local.get(node, [])))
                               for node in nodes))

    async def _sync_node(self, node: str, wanted: nftables.NodeRules) -> None:
        netns = namespaces.namespace_name(self.cluster.config.name, "node", node)
        old = self._applied.get(node)
        script = ""
        if old is None:  # a new node, or one whose last batch failed: start from the base table
            script = f"table {nftables.FAMILY} {nftables.TABLE}\ndelete table {nftables.FAMILY} {nftables.TABLE}\n"
            script += nftables.BASE
            old = nftables.NodeRules()
        script += nftables.transition(old, wanted)
        if not script:
            return
        try:
            await run_nft(netns, script)
        except FabricError as exc:  # e.g. a node namespace made anew: rebuild its table in a moment
            self._applied.pop(node, None)
            log.warning("networkpolicy: node %s: %s", node, exc)
            asyncio.get_running_loop().call_later(RETRY_DELAY, self.poke)
            return
        self._applied[node] = wanted
