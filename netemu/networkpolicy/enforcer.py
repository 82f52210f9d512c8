"""Keeps every node's nftables (``nftables``) in step with the store's pods, namespaces and policies.

Store events only mark the enforcer dirty; one task recomputes what each node should hold and sends
each node just the difference from what it has, as one atomic ``nft -f -`` batch in the node's
namespace, so a burst of changes costs one pass. A node joins with the base table; a failed batch
is logged and the node's table rebuilt a second later.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
from typing import Any

from netemu.errors import FabricError
from netemu.fabric.netns import namespaces
from netemu.spawn import spawn

from . import nftables
from .model import PodFacts, pod_facts

log = logging.getLogger(__name__)
KINDS = ("Pod", "Namespace", "NetworkPolicy")
NFT_TIMEOUT = 10.0
RETRY_DELAY = 1.0  # seconds before a node whose batch failed is tried again


def nft_binary() -> str:
    found = shutil.which("nft", path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin")
    if found is None:
        raise FabricError("NetworkPolicy on the netns backend needs `nft` (Debian package nftables)")
    return found


async def run_nft(netns: str, script: str) -> None:
    """``nft -f -`` with ``script`` inside the node namespace ``netns``."""
    argv = [*namespaces.exec_prefix(netns), nft_binary(), "-f", "-"]
    try:
        proc = await spawn(*argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                           stderr=asyncio.subprocess.PIPE)
        _out, err = await asyncio.wait_for(proc.communicate(script.encode()), NFT_TIMEOUT)
    except (TimeoutError, OSError) as exc:
        raise FabricError(f"nft in {netns}: {exc!r}") from exc
    if proc.returncode != 0:
        raise FabricError(f"nft in {netns} failed with status {proc.returncode}: "
                          f"{err.decode(errors='replace').strip()}")


class PolicyEnforcer:
    """NetworkPolicy in the kernel of every node of a netns cluster."""

    def __init__(self, cluster: Any):
        self.cluster = cluster
        self.store = cluster.store
        self._applied: dict[str, nftables.NodeRules] = {}  # node name -> what its table holds
        self._dirty = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Any = None
        self.passes = 0

    def start(self) -> None:
        self._unsubscribe = self.store.subscribe(lambda _event: self.poke(), kinds=KINDS)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="networkpolicy-enforcer")
        self.poke()

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._task is not None:
            self._task.cancel()
            self._task = None

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

    def _facts(self) -> tuple[dict[str, list[PodFacts]], list[PodFacts], dict[str, dict[str, str]], list[Any]]:
        by_node: dict[str, list[PodFacts]] = {}
        pods: list[PodFacts] = []
        for pod in self.store.list("Pod"):
            if pod.spec.host_network or not pod.status.pod_ip or pod.status.phase in ("Succeeded", "Failed"):
                continue
            facts = pod_facts(pod)
            pods.append(facts)
            by_node.setdefault(pod.spec.node_name, []).append(facts)
        labels = {ns.metadata.name: dict(ns.metadata.labels) for ns in self.store.list("Namespace")}
        return by_node, pods, labels, self.store.list("NetworkPolicy")

    async def _sync(self) -> None:
        by_node, pods, labels, policies = self._facts()
        nodes = list(self.cluster.nodes)
        for gone in [n for n in self._applied if n not in nodes]:
            del self._applied[gone]
        await asyncio.gather(*(self._sync_node(node, by_node.get(node, []), pods, labels, policies)
                               for node in nodes))

    async def _sync_node(self, node: str, local: list[PodFacts], pods: list[PodFacts],
                         labels: dict[str, dict[str, str]], policies: list[Any]) -> None:
        netns = namespaces.namespace_name(self.cluster.config.name, "node", node)
        wanted = nftables.render(local, pods, labels, policies)
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
