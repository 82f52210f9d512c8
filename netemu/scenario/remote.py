"""``RemoteCluster``: the surface the scenario steps drive, on any cluster, through its API only.

The steps were written against ``netemu.Cluster``: synchronous reads (``get``, ``list``,
``pods``, ``node_ip``), coroutines for changes (``apply``, ``delete``, ``scale``, ``exec``) and
``wait_for(predicate)``. Here the reads come from a cache of the objects the scenario looks at,
decoded into netemu's types; the cache is refreshed by LISTs in a worker thread — before every
step, after every change, and on each turn of ``wait_for`` (which polls) — so the event loop is
never blocked by the network. A kind read for the first time is fetched at once (one blocking
LIST), then refreshed with the others.

One scenario, one namespace: ``netemu-<slug>-<5 chars>``, labelled ``netemu.dev/scenario=<slug>``.
The scenario's ``default`` namespace *is* that namespace (manifests without a namespace go
there, ``namespace: default`` in a step means it); namespaces the scenario's own manifests
declare are created with the same label and deleted with it. Nothing outside those namespaces is
written. The runner's client pod (``netemu-client``, agnhost ``pause``) lives in the namespace
too, for traffic "from the host"; it is hidden from the scenario's view of its pods.
"""
from __future__ import annotations

import asyncio
import re
import secrets
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from netemu import api
from netemu.api.kinds import resolve_kind
from netemu.api.objects import KIND_BY_NAME
from netemu.errors import ClusterError, NetemuError, NotFoundError, PodsStuckError, WaitTimeoutError
from netemu.readiness import stuck_pods
from netemu.scenario.remote_api import KubeTarget, qualified_name
from netemu.scenario.selectors import parse_selector
from netemu.scenario.step_objects import is_ready, pod_state

SCENARIO_LABEL = "netemu.dev/scenario"
ROLE_LABEL = "netemu.dev/role"
CLIENT_POD = "netemu-client"
DEFAULT_CLIENT_IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.53"
DEFAULT_WAIT_TIMEOUT = 120.0   # image pulls, scheduling and load balancers take their time on real clusters
POLL_INTERVAL = 0.2
PREFETCH = ("Pod", "Service", "EndpointSlice", "Deployment", "ReplicaSet", "StatefulSet")
_SERVER_FIELDS = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink")


def scenario_slug(name: str) -> str:
    """A label value (and namespace part) from a scenario name: ``clusterip-single-port-service``."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-")
    return slug or "scenario"


def namespace_name(slug: str) -> str:
    """``netemu-<slug>-<5 random chars>``, a DNS label of at most 63 characters."""
    suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
    return f"netemu-{slug[:50].strip('-')}-{suffix}"


def node_client_name(node: str) -> str:
    return f"netemu-node-{node}"[:253]


def node_client_manifest(image: str, node: str) -> dict[str, Any]:
    """A client pod on the node's own network (``hostNetwork``), for traffic "from node/NODE"."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": node_client_name(node), "labels": {ROLE_LABEL: "client"}},
            "spec": {"terminationGracePeriodSeconds": 0, "nodeName": node, "hostNetwork": True,
                     "dnsPolicy": "ClusterFirstWithHostNet", "tolerations": [{"operator": "Exists"}],
                     "containers": [{"name": "client", "image": image, "args": ["pause"]}]}}


def client_pod_manifest(image: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": CLIENT_POD, "labels": {ROLE_LABEL: "client"}},
            "spec": {"terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "client", "image": image, "args": ["pause"]}]}}


@dataclass
class RemoteConfig:
    """What the references ``{{ cluster.* }}`` read; ranges the API does not tell are empty."""

    name: str
    dns_ip: str = ""
    cluster_domain: str = "cluster.local"
    backend: str = "remote"
    service_cidr: str = ""
    pod_cidr: str = ""
    node_cidr: str = ""
    lb_cidr: str = ""


def _strip_server_fields(data: dict[str, Any]) -> dict[str, Any]:
    """What to send with server-side apply: no status, no server-owned metadata."""
    data = {k: v for k, v in data.items() if k != "status"}
    meta = dict(data.get("metadata") or {})
    for key in _SERVER_FIELDS:
        meta.pop(key, None)
    data["metadata"] = meta
    template = (data.get("spec") or {}).get("template")
    if isinstance(template, dict) and isinstance(template.get("metadata"), dict):
        template["metadata"] = {k: v for k, v in template["metadata"].items() if k not in _SERVER_FIELDS}
    return data


class RemoteCluster:
    """One scenario's view of a cluster reached by its API (see the module's docstring)."""

    poll_interval = POLL_INTERVAL  # seconds between the reads of ``wait_for``

    def __init__(self, target: KubeTarget, namespace: str, slug: str, *, capabilities: frozenset[str] = frozenset(),
                 client_image: str = DEFAULT_CLIENT_IMAGE, wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
                 dns_ip: str = ""):
        self.target = target
        self.namespace = namespace
        self.slug = slug
        self.namespaces = [namespace]          # the scenario's own, then those its manifests declare
        self.capabilities = capabilities
        self.client_image = client_image
        self.wait_timeout = wait_timeout
        self.config = RemoteConfig(name=namespace, dns_ip=dns_ip)
        self._cache: dict[tuple[str, str], list[Any]] = {}
        self._node_clients: set[str] = set()

    @property
    def name(self) -> str:
        return self.namespace

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Create the namespace and the client pod; learn the cluster domain from the pod."""
        await asyncio.to_thread(self.target.apply, "Namespace", "", self.namespace, {
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": self.namespace, "labels": {SCENARIO_LABEL: self.slug}}})
        await asyncio.to_thread(self.target.apply, "Pod", self.namespace, CLIENT_POD,
                                client_pod_manifest(self.client_image))
        for kind in PREFETCH:
            self._cache[(kind, self.namespace)] = []
        self._cache[("Node", "")] = []
        self._cache[("Service", "kube-system")] = []
        await self.refresh()
        await self._client_ready(CLIENT_POD)
        resolv = await self.exec(CLIENT_POD, ["cat", "/etc/resolv.conf"], namespace=self.namespace, timeout=30)
        search = next((line.split()[1:] for line in resolv.stdout.splitlines() if line.startswith("search")), [])
        prefix = f"{self.namespace}.svc."
        domain = next((s[len(prefix):] for s in search if s.startswith(prefix)), "")
        if resolv.returncode == 0 and domain:
            self.config.cluster_domain = domain.rstrip(".")

    async def node_client(self, node: str) -> str:
        """The name of the client pod on ``node``'s network, started the first time it is asked for."""
        name = node_client_name(node)
        if name not in self._node_clients:
            await asyncio.to_thread(self.target.apply, "Pod", self.namespace, name,
                                    node_client_manifest(self.client_image, node))
            await self._client_ready(name)
            self._node_clients.add(name)
        return name

    async def _client_ready(self, name: str) -> None:
        deadline = time.monotonic() + self.wait_timeout
        state = "not created"
        while time.monotonic() < deadline:
            try:
                pod = await asyncio.to_thread(self.target.get, "Pod", self.namespace, name)
            except NotFoundError:
                pod = None
            if pod is not None:
                if is_ready(pod):
                    return
                state = pod_state(pod)
                if state in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName"):
                    break
            await asyncio.sleep(POLL_INTERVAL)
        raise ClusterError(f"the client pod {self.namespace}/{name} (image {self.client_image}) is not ready "
                           f"({state}); on a cluster that cannot pull it, give --client-image")

    async def close(self, timeout: float | None = None) -> list[str]:
        """Delete the scenario's namespaces (its declared ones first) and wait until they are gone."""
        lines = []
        for ns in reversed(self.namespaces):
            try:
                await asyncio.to_thread(self.target.delete, "Namespace", "", ns)
                lines.append(f'namespace "{ns}" deleted')
            except NotFoundError:
                pass
        deadline = time.monotonic() + (self.wait_timeout if timeout is None else timeout)
        left = list(self.namespaces)
        while left and time.monotonic() < deadline:
            left = [ns for ns in left if await asyncio.to_thread(self.target.namespace_labels, ns) is not None]
            if left:
                await asyncio.sleep(POLL_INTERVAL)
        if left:
            lines.append(f"still terminating: namespace {', '.join(left)} (`netemu run --kubeconfig ... --cleanup` "
                         "removes what is left)")
        return lines

    # ------------------------------------------------------------------ namespaces

    def ns(self, namespace: str | None) -> str:
        """The real namespace of a scenario namespace: ``default`` is the scenario's own."""
        return self.namespace if namespace in (None, "", "default") else namespace

    def _writable(self, kind: str, namespace: str, name: str) -> None:
        if not KIND_BY_NAME[kind].NAMESPACED:
            raise ClusterError(f"{kind} {name}: netemu run --kubeconfig changes only the scenario's namespaces, "
                               f"and a {kind} is cluster-wide")
        if namespace not in self.namespaces:
            raise ClusterError(f'{kind} {namespace}/{name}: namespace "{namespace}" is not one of this scenario\'s '
                               f"({', '.join(self.namespaces)}); netemu run --kubeconfig changes nothing else")

    # ------------------------------------------------------------------ reads (from the cache)

    def _fetch(self, key: tuple[str, str]) -> list[Any]:
        kind, ns = key
        objs = self.target.list(kind, ns or None)
        if kind == "Pod":
            objs = [p for p in objs if p.metadata.labels.get(ROLE_LABEL) != "client"]
        return sorted(objs, key=lambda o: (o.metadata.namespace, o.metadata.name))

    def _cached(self, kind: str, ns: str) -> list[Any]:
        key = (kind, ns)
        if key not in self._cache:
            self._cache[key] = self._fetch(key)  # first read of this kind here; refreshed with the rest from now on
        return self._cache[key]

    async def refresh(self) -> None:
        """LIST again every kind the scenario has looked at, in a worker thread."""
        keys = list(self._cache)
        fresh = await asyncio.to_thread(lambda: {key: self._fetch(key) for key in keys})
        self._cache.update(fresh)

    async def settle(self) -> None:
        await self.refresh()

    def list(self, kind: str, namespace: str | None = None, selector: Any = None) -> list[Any]:
        kind = resolve_kind(kind)
        if not KIND_BY_NAME[kind].NAMESPACED:
            objs = self._cached(kind, "")
        elif namespace is None:
            objs = [o for ns in self.namespaces for o in self._cached(kind, ns)]
        else:
            objs = self._cached(kind, self.ns(namespace))
        if selector is not None:
            match = parse_selector(selector)
            objs = [o for o in objs if match(o.metadata.labels)]
        return list(objs)

    def get(self, kind: str, name: str, namespace: str = "default") -> Any:
        """One object; in the scenario's ``default`` namespace, an object the scenario did not
        create (the ``kubernetes`` Service) is read from the cluster's real ``default``."""
        kind = resolve_kind(kind)
        namespaced = KIND_BY_NAME[kind].NAMESPACED
        for obj in self.list(kind, namespace if namespaced else None):
            if obj.metadata.name == name:
                return obj
        if namespaced and namespace in (None, "", "default"):
            for obj in self._cached(kind, "default"):
                if obj.metadata.name == name:
                    return obj
        from netemu.store import RESOURCE_NAMES
        raise NotFoundError(f'{RESOURCE_NAMES.get(kind, kind.lower())} "{name}" not found')

    def pods(self, namespace: str | None = "default", selector: Any = None) -> list[Any]:
        return self.list("Pod", namespace, selector)

    def pod_ip(self, name: str, namespace: str = "default") -> str:
        return self.get("Pod", name, namespace).status.pod_ip

    def service_ip(self, name: str, namespace: str = "default") -> str:
        return self.get("Service", name, namespace).spec.cluster_ip

    def node_ip(self, name: str) -> str:
        node = self.get("Node", name)
        addresses = {a.type: a.address for a in node.status.addresses}
        ip = addresses.get("InternalIP") or addresses.get("ExternalIP") or next(iter(addresses.values()), "")
        if not ip:
            raise NotFoundError(f'node "{name}" has no address')
        return ip

    @property
    def nodes(self) -> dict[str, str]:
        return {n.metadata.name: self.node_ip(n.metadata.name) for n in self.list("Node")}

    def not_ready(self) -> list[str]:
        """The scenario's pods that are not Ready, its deployments and statefulsets short of replicas."""
        out = []
        for pod in self.list("Pod"):
            if pod.status.phase == "Succeeded" or is_ready(pod):
                continue
            out.append(f"pod {pod.metadata.namespace}/{pod.metadata.name} ({pod_state(pod)})")
        for kind in ("Deployment", "StatefulSet"):
            for d in self.list(kind):
                want = d.spec.replicas if d.spec.replicas is not None else 1
                if d.status.ready_replicas != want or d.status.replicas != want:
                    out.append(f"{kind.lower()} {d.metadata.namespace}/{d.metadata.name} "
                               f"({d.status.ready_replicas}/{want} ready)")
        return out

    async def wait_ready(self, timeout: float) -> None:
        """Until every pod of the scenario is ready: a PodsStuckError as soon as one never will be
        (``readiness.stuck_pods``), a WaitTimeoutError naming what is pending, with the Warning events."""
        stuck: list[Any] = []

        def settled() -> bool:
            stuck[:] = stuck_pods(self.list("Pod"))
            return bool(stuck) or not self.not_ready()
        try:
            await self.wait_for(settled, timeout, "pods to be ready")
        except WaitTimeoutError as exc:
            pending = self.not_ready()
            events = await asyncio.to_thread(warning_events, self)
            lines = [f"{exc}: still waiting for {', '.join(pending[:10])}", *events]
            raise WaitTimeoutError("\n".join(lines)) from None
        if stuck:
            raise PodsStuckError("\n".join(["pods that will not become ready:", *(f"  {s}" for s in stuck)]))

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
        """Refresh and check ``predicate`` every ``poll_interval`` seconds until true or ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            await self.refresh()
            if predicate():
                return
            if time.monotonic() >= deadline:
                raise WaitTimeoutError(f"timed out after {timeout:g}s waiting for {what}")
            await asyncio.sleep(min(self.poll_interval, max(0.0, deadline - time.monotonic())))

    # ------------------------------------------------------------------ changes

    def _manifests(self, sources: Any, namespace: str | None = None) -> list[Any]:
        """Decoded manifests from what ``Cluster.apply`` takes: manifests, paths, YAML text, dicts."""
        out: list[Any] = []
        for src in sources:
            if isinstance(src, api.Manifest):
                out.append(src)
            elif isinstance(src, Path) or (isinstance(src, str) and "\n" not in src and Path(src).exists()):
                out += api.load_paths([str(src)], namespace=namespace)
            elif isinstance(src, dict):
                out += api.load_data(src, source="<dict>", namespace=namespace)
            elif isinstance(src, str):
                out += api.load_text(src, source="<text>", namespace=namespace)
            elif isinstance(src, (list, tuple)):
                out += self._manifests(src, namespace)
            else:
                raise TypeError(f"cannot apply {type(src).__name__}")
        return out

    def _apply_one(self, obj: Any) -> str:
        kind, name = obj.kind, obj.metadata.name
        data = _strip_server_fields(api.to_dict(obj))
        if kind == "Namespace":
            if name not in self.namespaces:
                if self.target.namespace_labels(name) is not None:
                    raise ClusterError(f'namespace "{name}" exists already: netemu run --kubeconfig creates the '
                                       "namespaces a scenario declares and changes no other (delete it, or use "
                                       "another name)")
                self.namespaces.append(name)
            data["metadata"].setdefault("labels", {})[SCENARIO_LABEL] = self.slug
            ns = ""
        else:
            ns = self.ns(obj.metadata.namespace)
            self._writable(kind, ns, name)
            data["metadata"]["namespace"] = ns
            for key in PREFETCH:
                self._cache.setdefault((key, ns), [])
        try:
            before = self.target.get(kind, ns, name).metadata.resource_version
        except NotFoundError:
            before = None
        after = self.target.apply(kind, ns, name, data).metadata.resource_version
        outcome = "created" if before is None else ("unchanged" if before == after else "configured")
        return f"{qualified_name(kind)}/{name} {outcome}"

    async def apply(self, *sources: Any, namespace: str | None = None) -> list[str]:
        """Server-side apply, namespaces first; the first refusal stops (and is the error)."""
        manifests = sorted(self._manifests(sources, namespace), key=lambda m: m.obj.kind != "Namespace")
        lines = []
        try:
            for m in manifests:
                lines.append(await asyncio.to_thread(self._apply_one, m.obj))
        finally:
            await self.refresh()
        return lines

    async def delete(self, kind: str, name: str, namespace: str = "default", *, wait: bool = False,
                     timeout: float = 60) -> str:
        kind = resolve_kind(kind)
        ns = self.ns(namespace)
        self._writable(kind, ns, name)
        await asyncio.to_thread(self.target.delete, kind, ns, name)
        if wait:
            await self.wait_for(lambda: not any(o.metadata.name == name for o in self.list(kind, ns)), timeout,
                                f"{kind} {name} to go")
        else:
            await self.refresh()
        return f'{qualified_name(kind)} "{name}" deleted'

    async def delete_manifests(self, *sources: Any, namespace: str | None = None) -> list[str]:
        lines = []
        for m in self._manifests(sources):
            if m.obj.kind == "Namespace":
                raise ClusterError(f'namespace "{m.obj.metadata.name}": the runner deletes the scenario\'s '
                                   "namespaces when it ends")
            lines.append(await self.delete(m.obj.kind, m.obj.metadata.name, m.obj.metadata.namespace))
        return lines

    async def scale(self, name: str, replicas: int, namespace: str = "default", *, kind: str = "Deployment") -> str:
        kind = resolve_kind(kind)
        ns = self.ns(namespace)
        self._writable(kind, ns, name)
        await asyncio.to_thread(self.target.scale, kind, ns, name, replicas)
        await self.refresh()
        return f"{qualified_name(kind)}/{name} scaled"

    # ------------------------------------------------------------------ pods

    async def exec(self, pod: str, argv: list[str], *, container: str | None = None, namespace: str = "default",
                   input: bytes | None = None, timeout: float = 30) -> Any:
        from netemu.cluster import ExecResult
        if container is None:
            container = self._default_container(pod, namespace)
        code, out, err = await asyncio.to_thread(self.target.exec, self.ns(namespace), pod, argv, container, input,
                                                 timeout)
        return ExecResult(code, out, err)

    def _default_container(self, pod: str, namespace: str) -> str | None:
        """kubectl's choice when none is given: the ``kubectl.kubernetes.io/default-container``
        annotation, else the first container (the API itself refuses to guess)."""
        try:
            obj = self.get("Pod", pod, namespace)
        except NotFoundError:
            return None   # the runner's own client pods have one container
        chosen = obj.metadata.annotations.get("kubectl.kubernetes.io/default-container")
        return chosen or (obj.spec.containers[0].name if len(obj.spec.containers) > 1 else None)

    async def logs(self, pod: str, container: str | None = None, namespace: str = "default") -> str:
        try:
            return await asyncio.to_thread(self.target.logs, self.ns(namespace), pod, container)
        except NetemuError as exc:
            if "waiting to start" in str(exc) or "ContainerCreating" in str(exc):
                return ""
            raise


def warning_events(cluster: RemoteCluster, limit: int = 10) -> list[str]:
    """The last Warning events of the scenario's namespaces, as ``kubectl get events`` shows them."""
    out = []
    for ns in cluster.namespaces:
        try:
            events = cluster.target.list_raw("Event", ns)
        except NetemuError:
            continue
        for event in events:
            if event.get("type") == "Warning":
                obj = event.get("involvedObject") or {}
                out.append(f"  event: {obj.get('kind', '').lower()}/{obj.get('name', '')}: "
                           f"{event.get('reason', '')}: {event.get('message', '')}")
    return out[-limit:]
