"""``ApiCluster``: the cluster ``netemu run`` started, as its steps see it — through its API only.

``netemu run`` starts each scenario's cluster in its own process (it is the server), but the
steps never touch that ``netemu.Cluster`` object: they drive the cluster the way any client
does, through its HTTPS Kubernetes API, with the CA and admin token of its state directory.

It is ``RemoteCluster`` (the issue-14 runner's view of any cluster: reads from a cache of
LISTs refreshed off the event loop, ``pods/log``, REST deletes and ``scale``) without the
scenario-namespace mapping — the scenario owns the whole throw-away cluster — plus netemu's own
operations where Kubernetes has no resource for them:

- apply and delete of manifests: ``POST operations/apply`` (the admission, result lines and
  error messages of ``netemu apply``); readiness: ``POST operations/wait``;
- exec: ``POST operations/exec`` gives the plan (prefix, argv, env, cwd) that this process runs,
  as ``netemu exec`` does; traffic from the host or a node on the netns backend:
  ``POST operations/host-prefix``;
- impair, partition, heal: the netemu.dev ``Impairment`` and ``Partition`` objects, written as
  ``netemu impair/partition/heal`` write them (``netemu.cli_chaos``);
- kill, stop/start a node, settle: ``POST operations/kill``, ``stop-node``, ``start-node``,
  ``settle``; capture: ``operations/captures``;
- ``config`` (backend, domain, ranges): ``GET operations/cluster``; the DNS address: the
  ``kube-system/kube-dns`` Service; node addresses: Node status.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import yaml

from netemu import api
from netemu.api.kinds import resolve_kind
from netemu.api.objects import KIND_BY_NAME
from netemu.errors import BackendUnavailableError, ClusterError, NotFoundError
from netemu.kubeapi.operations import PATH as OPERATIONS
from netemu.kubelet.execrun import run_plan
from netemu.scenario.remote import RemoteCluster, RemoteConfig
from netemu.scenario.remote_api import KubeTarget
from netemu.scenario.selectors import parse_selector

PREFETCHED = ("Pod", "Service", "EndpointSlice", "Deployment", "ReplicaSet", "StatefulSet", "Node", "Namespace")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")


def _documents(manifests: list[Any]) -> list[dict[str, str]]:
    """Decoded manifests as ``operations/apply`` documents: one per source, its objects in order,
    so the server names a problem's file and document as a local apply would."""
    documents: list[dict[str, str]] = []
    for m in manifests:
        source = m.ref.source or "<input>"
        text = yaml.safe_dump(api.to_dict(m.obj), sort_keys=False)
        if documents and documents[-1]["source"] == source:
            documents[-1]["text"] += "---\n" + text
        else:
            documents.append({"source": source, "text": text})
    return documents


class ClientNamespace:
    """The network namespace the runner's thread is in before it starts a cluster (the host's).

    On the netns backend the cluster moves the event loop's thread, and the threads it makes
    later, into a sealed namespace of their own; the API listens in the host's. A client reaches
    it from there, so the client's threads enter this namespace first."""

    def __init__(self) -> None:
        self.fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    def enter(self) -> None:
        """Move the calling thread here (nothing to do when it is here already)."""
        if os.stat("/proc/thread-self/ns/net").st_ino != os.fstat(self.fd).st_ino:
            from netemu.cni.netlink import setns
            setns(self.fd)

    def close(self) -> None:
        os.close(self.fd)


class ClientThreads:
    """Worker threads in the client's namespace, for the blocking API client."""

    def __init__(self, host: ClientNamespace) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="netemu-api-client",
                                                          initializer=host.enter)

    async def call(self, func: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, functools.partial(func, *args))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class ApiCapture:
    """A packet capture running in the cluster, started and stopped through ``operations/captures``."""

    def __init__(self, cluster: "ApiCluster", number: int, path: Path, on: str) -> None:
        self.cluster, self.number, self.path = cluster, number, path
        self.taps = [SimpleNamespace(label=label) for label in on.split(", ") if label]
        self.frames = 0
        self.summary: list[str] = []
        self.stopped = False

    async def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        answer = await self.cluster.operation("DELETE", f"captures/{self.number}")
        self.frames, self.summary = answer["frames"], list(answer["summary"])


class ApiCluster(RemoteCluster):
    """The steps' cluster on ``netemu run``: every read and change goes through the API."""

    poll_interval = 0.05  # the cluster is local: reading it often is cheap

    def __init__(self, target: KubeTarget, client: Any, threads: ClientThreads, directory: Path,
                 info: dict[str, Any], dns_ip: str = "") -> None:
        super().__init__(target, "default", info["name"], wait_timeout=60.0, dns_ip=dns_ip)
        self.client = client
        self.threads = threads
        self.config = RemoteConfig(name=info["name"], dns_ip=dns_ip, cluster_domain=info["clusterDomain"],
                                   backend=info["backend"], service_cidr=info["serviceCIDR"],
                                   pod_cidr=info["podCIDR"], node_cidr=info["nodeCIDR"], lb_cidr=info["lbCIDR"])
        # where a capture's file goes when the step names none: the cluster's state directory
        self.state = SimpleNamespace(path=lambda file: Path(directory) / file)
        self._prefixes: dict[str, list[str]] = {}
        self._version = ""                          # the cluster's resourceVersion at the last refresh
        self._fresh: set[tuple[str, str]] = set()   # the kinds that refresh read

    @property
    def name(self) -> str:
        return self.config.name

    @classmethod
    async def connect(cls, name: str, directory: Path, host: "ClientNamespace") -> "ApiCluster":
        """The API client of the running cluster ``name`` (state in ``directory``), and the facts
        a step needs that the Kubernetes resources do not say; its requests leave from ``host``."""
        from netemu.kubeapi import KUBECONFIG
        from netemu.kubeapi.client import ApiClient
        threads = ClientThreads(host)
        try:
            client = await threads.call(ApiClient.for_cluster, name, directory)
            target = await threads.call(KubeTarget, str(Path(directory) / KUBECONFIG))
            info = await threads.call(client.get, f"{OPERATIONS}/cluster")
            try:
                dns = await threads.call(client.get, "/api/v1/namespaces/kube-system/services/kube-dns")
                dns_ip = dns["spec"].get("clusterIP", "")
            except NotFoundError:
                dns_ip = ""
        except BaseException:
            threads.close()
            raise
        return cls(target, client, threads, Path(directory), info, dns_ip)

    async def operation(self, method: str, what: str, body: Any = None) -> Any:
        """One of netemu's operations (``netemu.kubeapi.operations``), off the event loop."""
        return await self.call(self.client.request, method, f"{OPERATIONS}/{what}", body)

    async def call(self, func: Callable[..., Any], *args: Any) -> Any:
        """``func(*args)`` in one of the client's threads (in the host's network)."""
        return await self.threads.call(func, *args)

    def close_client(self) -> None:
        self.target.close()
        self.threads.close()

    async def refresh(self) -> None:
        """LIST again every kind the scenario reads, unless nothing in the cluster changed since the
        last time (its resourceVersion, which every write moves, is the one it had then)."""
        keys = list(self._cache)

        def fetch() -> tuple[str, dict[tuple[str, str], list[Any]]]:
            version = self.target.request("GET", "/api/v1/namespaces", query={"limit": "1"})["metadata"]
            version = str(version.get("resourceVersion", ""))
            if version and version == self._version and set(keys) <= self._fresh:
                return version, {}
            return version, {key: self._fetch(key) for key in keys}
        version, fresh = await self.call(fetch)
        if fresh or not keys:
            self._fresh = set(keys)
        self._version = version
        self._cache.update(fresh)

    # ------------------------------------------------------------------ the whole cluster is the scenario's

    def ns(self, namespace: str | None) -> str:
        return namespace or "default"

    def _writable(self, kind: str, namespace: str, name: str) -> None:
        return None

    def follow_kinds(self, text: str) -> None:
        """Keep every kind that ``text`` (a scenario, its manifests) names in the cache from now on.

        The steps read synchronously, on the event loop that also serves the API: a kind met for
        the first time could not be fetched there (the server would wait for the loop the read
        blocks). So the runner names, before the steps run, every kind they can read: the
        usual ones, and any word of the scenario that is a kind or one of its names."""
        for word in {*PREFETCHED, *_WORD.findall(text)}:
            try:
                kind = resolve_kind(word)
            except NotFoundError:
                continue
            self._cache.setdefault((kind, ""), [])

    def _fetch(self, key: tuple[str, str]) -> list[Any]:
        kind, _ = key
        return sorted(self.target.list(kind, None), key=lambda o: (o.metadata.namespace, o.metadata.name))

    def _cached(self, kind: str, ns: str) -> list[Any]:
        if (kind, "") not in self._cache:
            raise ClusterError(f"{kind}: the scenario reads a kind it does not name, which netemu run cannot fetch "
                               "during a step; name it in the scenario (a comment will do)")
        objs = self._cache[(kind, "")]
        return objs if not ns else [o for o in objs if o.metadata.namespace == ns]

    def list(self, kind: str, namespace: str | None = None, selector: Any = None) -> list[Any]:
        kind = resolve_kind(kind)
        namespaced = KIND_BY_NAME[kind].NAMESPACED
        objs = self._cached(kind, self.ns(namespace) if namespaced and namespace is not None else "")
        if selector is not None:
            match = parse_selector(selector)
            objs = [o for o in objs if match(o.metadata.labels)]
        return list(objs)

    def get(self, kind: str, name: str, namespace: str = "default") -> Any:
        kind = resolve_kind(kind)
        for obj in self.list(kind, namespace if KIND_BY_NAME[kind].NAMESPACED else None):
            if obj.metadata.name == name:
                return obj
        from netemu.store import RESOURCE_NAMES
        raise NotFoundError(f'{RESOURCE_NAMES.get(kind, kind.lower())} "{name}" not found')

    @property
    def nodes(self) -> dict[str, str]:
        return {n.metadata.name: self.node_ip(n.metadata.name) for n in self.list("Node")}

    # ------------------------------------------------------------------ waiting

    async def settle(self) -> None:
        await self.operation("POST", "settle", {})
        await self.refresh()

    async def wait_ready(self, timeout: float = 30) -> None:
        """Every pod ready (``readiness.require_ready`` in the server: its errors, its words)."""
        await self.operation("POST", "wait", {"timeout": timeout})
        await self.refresh()

    # ------------------------------------------------------------------ changes

    async def apply(self, *sources: Any, namespace: str | None = None) -> list[str]:
        manifests = await self.call(self._manifests, sources, namespace)
        try:
            answer = await self.operation("POST", "apply", {"documents": _documents(manifests)})
        finally:
            await self.refresh()
        return list(answer["lines"])

    async def delete_manifests(self, *sources: Any, namespace: str | None = None) -> list[str]:
        manifests = await self.call(self._manifests, sources, namespace)
        try:
            answer = await self.operation("POST", "apply", {"documents": _documents(manifests), "delete": True})
        finally:
            await self.refresh()
        return list(answer["lines"])

    async def delete(self, kind: str, name: str, namespace: str = "default", *, wait: bool = False,
                     timeout: float = 60) -> str:
        from netemu.scenario.remote_api import qualified_name
        kind = resolve_kind(kind)
        namespaced = KIND_BY_NAME[kind].NAMESPACED
        ns = self.ns(namespace) if namespaced else ""
        await self.call(self.target.delete, kind, ns, name)
        if wait:
            await self.wait_for(lambda: not any(o.metadata.name == name for o in self.list(kind, ns or None)),
                                timeout, f"{kind} {name} to go")
        await self.settle()
        return f'{qualified_name(kind)} "{name}" deleted'

    async def scale(self, name: str, replicas: int, namespace: str = "default", *, kind: str = "Deployment") -> str:
        from netemu.scenario.remote_api import qualified_name
        kind = resolve_kind(kind)
        await self.call(self.target.scale, kind, self.ns(namespace), name, replicas)
        await self.settle()
        return f"{qualified_name(kind)}/{name} scaled"

    # ------------------------------------------------------------------ pods

    async def exec(self, pod: str, argv: list[str], *, container: str | None = None, namespace: str = "default",
                   input: bytes | None = None, timeout: float = 30) -> Any:
        """The server's exec plan, run here, as ``netemu exec`` runs it."""
        plan = SimpleNamespace(**await self.operation("POST", "exec", {
            "pod": pod, "argv": [str(a) for a in argv], "container": container, "namespace": namespace}))
        return await run_plan(plan.prefix, plan.argv, plan.env, plan.cwd, pod=pod, input=input, timeout=timeout)

    async def logs(self, pod: str, container: str | None = None, namespace: str = "default") -> str:
        return await self.call(self.target.logs, self.ns(namespace), pod, container)

    async def process_prefix(self, node: str) -> list[str]:
        """The prefix that runs a process in ``node``'s network namespace ("": the host side)."""
        if node not in self._prefixes:
            self._prefixes[node] = list((await self.operation("POST", "host-prefix", {"node": node}))["prefix"])
        return self._prefixes[node]

    # ------------------------------------------------------------------ netemu's own operations

    async def kill_container(self, pod: str, container: str | None = None, namespace: str = "default",
                             signal: str = "KILL") -> None:
        await self.operation("POST", "kill", {"pod": pod, "container": container, "namespace": namespace,
                                               "signal": signal})
        await self.refresh()

    async def stop_node(self, name: str) -> None:
        await self.operation("POST", "stop-node", {"node": name})
        await self.refresh()

    async def start_node(self, name: str) -> None:
        await self.operation("POST", "start-node", {"node": name})
        await self.refresh()

    async def impair(self, *, service: str | None = None, node: str | None = None, link: Any = None,
                     namespace: str = "default", **numbers: float) -> str:
        from netemu import chaos, cli_chaos
        settings = chaos.spec_settings(None, **numbers)
        args = SimpleNamespace(service=service, node=node, link=tuple(link) if link else None, namespace=namespace)
        return await self.call(cli_chaos.impair, self.client, args, settings or None)

    async def partition(self, groups: Any) -> str:
        from netemu import cli_chaos
        if self.config.backend != "netns":  # the words of ``Cluster.partition``
            raise BackendUnavailableError(f"partition: needs the netns backend (this cluster uses "
                                          f"{self.config.backend}): on the loopback backend all pods share one "
                                          "network stack")
        spelled = [",".join(g) if isinstance(g, (list, tuple)) else str(g) for g in groups]
        return await self.call(cli_chaos.partition, self.client, spelled)

    async def heal(self) -> str:
        from netemu import cli_chaos
        return await self.call(cli_chaos.heal, self.client, self.config.backend)

    async def start_capture(self, path: Any, *, pod: str | None = None, node: str | None = None, link: Any = None,
                            namespace: str = "default", filter: str = "", count: int = 0) -> ApiCapture:
        await self.settle()
        answer = await self.operation("POST", "captures", {
            "path": str(path), "pod": pod, "node": node, "link": list(link) if link else None,
            "namespace": namespace, "filter": filter, "count": count})
        return ApiCapture(self, answer["id"], Path(path), answer["on"])

    def capture_summary(self, capture: ApiCapture) -> list[str]:
        return capture.summary
