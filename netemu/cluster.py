"""``Cluster``: wires store, API server, controllers, fabric and kubelets, and is the Python API.

    async with netemu.Cluster(nodes=3) as cluster:
        await cluster.apply("examples/my-nginx.yaml")
        await cluster.wait_ready()
        ip = cluster.pod_ip("my-nginx-…")

Start-up is ordered and undone in reverse on failure or exit (an ``AsyncExitStack``): state
directory, fabric, store and API server bootstrap, controllers, nodes with their kubelets, the
Kubernetes API. Nothing here parses command lines or prints.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import pickle
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from netemu import api
from netemu.api import objects as k8s
from netemu.api.kinds import resolve_kind
from netemu.clock import Clock
from netemu.config import AUTO, DEFAULT_NAME, ClusterConfig
from netemu.controllers import nodelifecycle
from netemu.errors import BackendUnavailableError, ClusterError, InvalidError, NetemuError, NotFoundError, WaitTimeoutError
from netemu.fabric import NodeNetwork, make_fabric
from netemu.forkserver import ForkServer
from netemu.sandbox import SandboxHelper, Unavailable
from netemu import system
from netemu.kubelet import mountns, podfiles
from netemu.kubelet.execrun import ExecResult, run_plan
from netemu.kubelet.kubelet import ExecPlan, Kubelet, PodDNS
from netemu.state import LEDGER, ClusterState
from netemu.store import Store, now_rfc3339

log = logging.getLogger(__name__)
BIG_APPLY = 1000  # objects in one apply from which the cycle collector waits for the cluster to be quiet
PARALLEL_READ = 1 << 20  # bytes of YAML from which an apply reads it in two processes
SANDBOX_START_AFTER = 150  # pieces of pod set-up (about three a pod) before the sandbox helper starts



class Cluster:
    def __init__(self, nodes: int | list[str] | tuple[str, ...] = 1, *, name: str | None = None,
                 backend: str = "loopback", manifests: Iterable[Any] = (), config: ClusterConfig | None = None,
                 kube_api: bool = True, **overrides: Any):
        if config is None:
            config = ClusterConfig(name=name or os.environ.get("NETEMU_CLUSTER", DEFAULT_NAME),
                                   nodes=ClusterConfig.node_names(nodes), backend=backend, **overrides)
        config.validate()
        self.config = config
        self.initial_manifests = list(manifests)
        self.kube_api_enabled = kube_api
        self.kube_api: Any = None  # netemu.kubeapi.KubeApiServer once started
        self.in_cluster: Any = None  # netemu.kubeapi.incluster.InClusterAccess once the API serves
        self.store = Store()
        self.clock = Clock()  # what Jobs and CronJobs go by; tests advance it (netemu.clock)
        self.state = ClusterState(config)
        # Writes pods' files (CNI, resolv.conf and hosts, volumes) in a process of its own once a
        # cluster has many pods to set up; the cluster does it itself until then.
        self.sandbox = SandboxHelper(record=self.state.record_process, log_path=self.state.path("sandbox.log"),
                                     start_after=SANDBOX_START_AFTER)
        self.fabric = make_fabric(config, self.state, self.sandbox)
        # Starts the containers' processes (on the first one's start): cheaper than forking this process.
        self.forkserver = ForkServer(self.state.path(LEDGER), env={**os.environ, **self.state.process_env},
                                     record=self.state.record_process, log_path=self.state.path("forkserver.log"))
        self.apiserver: Any = None
        self.kubelets: dict[str, Kubelet] = {}
        self.nodes: dict[str, NodeNetwork] = {}
        self._stack = contextlib.AsyncExitStack()
        self._started = False
        self.started_at = 0.0
        self.proxy: Any = None
        self.proxy_autoscaler: Any = None  # proxy_workers "auto": starts worker processes under load
        self.controllers: Any = None
        self.ingress_images: dict[str, Any] = {}  # the ingress controller's image (netemu.ingress)
        self._apply_lock = asyncio.Lock()
        self._cycles = _CyclePause(self.store)  # no cycle collection while a big apply is being built
        self._reads = 0  # texts read in two parts (netemu.sandbox), for their files' names
        self.dns_port = 53
        self.network_policy: Any = None  # netemu.networkpolicy's enforcer (netns backend)
        self.kernel_proxy: Any = None  # proxyMode nftables: netemu.proxy.nftables_proxier.NftablesProxier
        self.service_env: Any = None  # netemu.kubelet.serviceenv.ServiceEnvIndex, shared by the kubelets
        self.host_mounts: Any = None  # netemu.kubelet.mountns.HostMountTable, shared by the kubelets

    @property
    def name(self) -> str:
        return self.config.name

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> "Cluster":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._started:
            return
        t0 = time.monotonic()
        stack = self._stack
        try:
            self.state.create(collect_garbage=_collect_cluster_garbage)
            stack.callback(self.state.remove)
            await self.fabric.start()
            stack.push_async_callback(self.fabric.stop)
            from netemu.apiserver import ApiServer
            self.apiserver = ApiServer(self.store, service_cidr=self.config.service_cidr,
                                       node_port_range=self.config.node_port_range, max_pods=self.config.max_pods,
                                       max_objects=self.config.max_objects,
                                       max_request_bytes=self.config.max_request_bytes)
            self.apiserver.bootstrap()
            from netemu.controllers import start_controllers
            controllers = start_controllers(self.store, lb_pool=self.config.lb_cidr, lb_delay=self.config.lb_delay,
                                            clock=self.clock, job_backoff=self.config.job_backoff)
            stack.callback(controllers.stop)
            self.controllers = controllers
            await self._start_proxy()
            self._start_dns()
            self._start_ingress()
            for index, node in enumerate(self.config.nodes):
                await self._add_node(node, index)
            self.proxy.on_synced()
            if self.kernel_proxy is not None:
                self.kernel_proxy.on_synced()
            from netemu.chaos import Chaos
            chaos = Chaos(self)
            chaos.start()
            stack.callback(chaos.stop)
            from netemu.captures import Captures  # netemu.dev Capture objects
            captures = Captures(self)
            captures.start()
            stack.push_async_callback(captures.stop)
            from netemu import networkpolicy
            stack.callback(networkpolicy.attach(self))
            from netemu.ingress import system as ingress_system  # the default IngressClass "netemu"
            self.apiserver.apply(api.load_text(ingress_system.CLASS_MANIFEST, source="<netemu system>"))
            self.apiserver.apply(api.load_text(system.dns_manifests(self.config.dns_ip, self.dns_port),
                                               source="<netemu system>"))
            if self.kube_api_enabled:  # the Kubernetes API (netemu.kubeapi)
                from netemu.kubeapi import KubeApiServer
                kube_api = KubeApiServer(self)
                stack.push_async_callback(kube_api.stop)
                await kube_api.start()
                self.kube_api = kube_api
                from netemu.kubeapi.incluster import InClusterAccess  # tokens, CA, the kubernetes endpoint
                self.in_cluster = InClusterAccess(self, kube_api)
                stack.callback(self.in_cluster.stop)
                self.in_cluster.start()
            self._started = True
            self.started_at = time.time()
            if self.initial_manifests:
                await self.apply(*self.initial_manifests)
        except BaseException:
            await self.stop()
            raise
        log.info("cluster %s up in %.3f s", self.name, time.monotonic() - t0)

    async def _start_proxy(self) -> None:
        from netemu.proxy import ProxyGroup, ProxyOptions
        kernel = self.config.proxy_mode == "nftables"
        workers = self.config.proxy_workers
        auto = workers == AUTO and self.config.backend == "loopback"
        shared = auto or (workers != AUTO and workers > 1)  # TCP listeners open to worker processes
        self.proxy = ProxyGroup(self.fabric, ProxyOptions(kernel_data_path=kernel, reuse_port=shared))
        self._stack.push_async_callback(self.proxy.close)
        if shared:  # processes of their own sharing the TCP listeners (netemu.proxy.workers)
            from netemu.proxy.workers import ProxyWorkers
            self.proxy.workers = ProxyWorkers(self.proxy, env=self.state.process_env,
                                              record=self.state.record_process,
                                              log_path=self.state.path("proxy-workers.log"))
            if auto:  # more processes while the proxy is busy (netemu.proxy.autoscale)
                from netemu.proxy.autoscale import Autoscaler
                self.proxy_autoscaler = Autoscaler(self.proxy, self.proxy.workers)
                self._stack.push_async_callback(self.proxy_autoscaler.close)
            else:
                for _ in range(workers - 1):
                    await self.proxy.workers.add()
        proxies = [self.proxy]
        if kernel:  # Services as nftables DNAT in every node namespace (netemu.proxy.nftables_proxier)
            from netemu.fabric.netns.fabric import pod_range
            from netemu.proxy.nftables_proxier import NftablesProxier
            self.kernel_proxy = NftablesProxier(pod_cidr=str(pod_range(self.config)),
                                                service_cidr=self.config.service_cidr,
                                                netns_of=lambda node: str(self.fabric.namespace_of(node)))
            self._stack.push_async_callback(self.kernel_proxy.close)
            proxies.append(self.kernel_proxy)

        def on_event(event: Any) -> None:
            if event.kind == "Service":
                self._service_ips_changed(event.old, event.new)
                for proxy in proxies:
                    proxy.on_service(event.old, event.new)
            else:
                for proxy in proxies:
                    proxy.on_endpointslice(event.old, event.new)
        self._stack.callback(self.store.subscribe(on_event, kinds=["Service", "EndpointSlice"]))
        for svc in self.store.list("Service"):
            self._service_ips_changed(None, svc)
            for proxy in proxies:
                proxy.on_service(None, svc)
        for eps in self.store.list("EndpointSlice"):
            for proxy in proxies:
                proxy.on_endpointslice(None, eps)

    def _service_ips_changed(self, old: Any, new: Any) -> None:
        """Tell a fabric that places ClusterIPs (netns: on every node's ``svc0``) which exist."""
        add, remove = getattr(self.fabric, "add_service_ip", None), getattr(self.fabric, "remove_service_ip", None)
        if add is None or remove is None:
            return
        before, after = _cluster_ips(old), _cluster_ips(new)
        for ip in sorted(before - after):
            remove(ip)
        for ip in sorted(after - before):
            add(ip)

    def _start_ingress(self) -> None:
        """netemu's ingress controller (``netemu.ingress``): its index, and the image its pod runs."""
        from netemu.ingress import system as ingress_system
        from netemu.ingress.image import IngressControllerImage
        from netemu.ingress.index import IngressIndex

        def create_controller() -> None:
            self.apiserver.apply(api.load_text(ingress_system.controller_manifests(), source="<netemu ingress>"))
        self.ingress_index = IngressIndex(self.store, create_controller)
        self.ingress_index.start()
        self._stack.callback(self.ingress_index.stop)
        self.ingress_images = {ingress_system.IMAGE: IngressControllerImage(self.ingress_index)}

    def _start_dns(self) -> None:
        from netemu.dns import DNSConfig, DNSIndex
        cfg = self.config
        self.dns_config = DNSConfig(zone=cfg.cluster_domain, ttl=cfg.dns_ttl, dns_ip=cfg.dns_ip,
                                    reverse_cidrs=(cfg.service_cidr, cfg.pod_cidr), upstreams=tuple(cfg.dns_upstreams))
        self.dns_index = index = DNSIndex(watch_pods=True)  # the DNS pods serve from it
        handlers = {"Service": index.on_service, "EndpointSlice": index.on_endpointslice,
                    "Pod": index.on_pod, "Namespace": index.on_namespace}
        self._stack.callback(self.store.subscribe(lambda e: handlers[e.kind](e.old, e.new), kinds=list(handlers)))
        for kind, handler in handlers.items():
            for obj in self.store.list(kind):
                handler(None, obj)
        self.dns_port = system.dns_port()
        # Names outside the cluster are forwarded from the host's network, where the configured
        # upstreams are (on netns the DNS pod's namespace has no way out, by design).
        self.dns_image = system.ClusterDNSImage(self.dns_config, self.dns_index, self.dns_port,
                                                upstream_socket=lambda family, kind: self.fabric.socket("", family, kind))

    @property
    def capabilities(self) -> frozenset[str]:
        """What this cluster can do, for scenarios and tests that need a part ("service-proxy" …)."""
        caps = {"service-proxy", "cluster-dns", "kill", "node-lifecycle", "impair", "load-balancer", self.config.backend}
        if hasattr(self.fabric, "partition"):
            caps.add("partition")
        if hasattr(self.fabric, "start_capture"):
            caps.add("capture")
        if self.network_policy is not None:
            caps.add("network-policy")
        if os.geteuid() == 0:
            caps.add("root")
        if not podfiles.prefix_problem():
            caps.add("pod-resolv-conf")
            if not mountns.overlay_problem():
                caps.add("pod-volume-mounts")
        if self.dns_port == 53:
            caps.add("dns-port-53")
        return frozenset(caps)

    async def _add_node(self, name: str, index: int) -> None:
        net = await self.fabric.add_node(name, index)
        self.nodes[name] = net
        self.proxy.add_node(net)
        if self.kernel_proxy is not None:
            self.kernel_proxy.add_node(name)
        node = k8s.Node(
            metadata=k8s.ObjectMeta(name=name, labels={
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                "netemu.dev/cluster": self.name}),
            spec=k8s.NodeSpec(pod_cidr=net.pod_cidr, pod_cidrs=(net.pod_cidr,)),
            status=k8s.NodeStatus(
                addresses=(k8s.NodeAddress(type="InternalIP", address=net.ip),
                           k8s.NodeAddress(type="Hostname", address=name)),
                conditions=(k8s.NodeCondition(type="Ready", status="True", reason="KubeletReady",
                                              message="kubelet is posting ready status",
                                              last_heartbeat_time=now_rfc3339(), last_transition_time=now_rfc3339()),),
                extra={"nodeInfo": {"kubeletVersion": "v1.31.0-netemu", "containerRuntimeVersion": "netemu://0.1.0",
                                    "osImage": f"netemu ({self.config.backend} backend)",
                                    "kernelVersion": os.uname().release, "operatingSystem": "linux",
                                    "architecture": "amd64", "kubeProxyVersion": "",
                                    "machineID": "", "systemUUID": "", "bootID": ""}}))
        self.store.create(node)
        if not self.kubelets:
            self._stack.push_async_callback(self.forkserver.close)  # once the kubelets have stopped
            self._stack.push_async_callback(self.sandbox.close)
            self._stack.push_async_callback(self._stop_kubelets)
        self._start_kubelet(net)

    def _start_kubelet(self, net: NodeNetwork) -> None:
        if self.service_env is None:  # one index of service variables for every kubelet
            from netemu.kubelet.serviceenv import ServiceEnvIndex
            self.service_env = ServiceEnvIndex(self.store)
            self._stack.callback(self._close_service_env)
        if self.host_mounts is None:  # one look at the host's mounts for every kubelet
            from netemu.kubelet.mountns import HostMountTable
            self.host_mounts = HostMountTable()
            self._stack.callback(self._close_host_mounts)
        self.kubelets[net.name] = Kubelet(
            net, self.store, self.fabric, log_dir=self.state.path("logs"), record_process=self.state.record_process,
            process_env=self.state.process_env,
            restart_backoff=self.config.restart_backoff, restart_backoff_max=self.config.restart_backoff_max,
            pod_dir=self.state.path("pods"),
            dns=PodDNS(self.config.dns_ip, self.config.cluster_domain, _host_resolv_conf()),
            extra_images={system.DNS_IMAGE: self.dns_image, **self.ingress_images}, service_env=self.service_env,
            forkserver=self.forkserver, sandbox=self.sandbox, host_mounts=self.host_mounts)
        if self.in_cluster is not None:
            self.in_cluster.equip(self.kubelets[net.name])

    def _close_host_mounts(self) -> None:
        if self.host_mounts is not None:
            self.host_mounts.close()
            self.host_mounts = None

    def _close_service_env(self) -> None:
        if self.service_env is not None:
            self.service_env.close()
            self.service_env = None

    async def _stop_kubelets(self) -> None:
        kubelets = list(self.kubelets.values())
        self.kubelets.clear()
        # The fabric's stop and the state directory's removal (next on the stack) take every pod's
        # network and log at once: no CNI DEL per pod (10,000 of them were a second of a
        # shutdown), no last lines written into logs about to go.
        await asyncio.gather(*(k.stop(release_networks=False, keep_logs=False) for k in kubelets),
                             return_exceptions=True)

    # ------------------------------------------------------------------ nodes

    def _set_node_ready(self, name: str, ready: bool) -> None:
        now = now_rfc3339()
        condition = (k8s.NodeCondition(type="Ready", status="True", reason="KubeletReady",
                                       message="kubelet is posting ready status", last_heartbeat_time=now,
                                       last_transition_time=now) if ready else
                     k8s.NodeCondition(type="Ready", status="Unknown", reason="NodeStatusUnknown",
                                       message="Kubelet stopped posting node status.", last_transition_time=now))
        self.store.modify("Node", "", name, lambda n: nodelifecycle.with_reachability_taints(dataclasses.replace(
            n, status=dataclasses.replace(n.status, conditions=(condition,))), ready))

    async def stop_node(self, name: str) -> None:
        """Stop a node as if it went down: its kubelet and its containers stop, it turns NotReady
        (tainted unreachable), its NodePorts stop answering, and its pods are evicted (their
        endpoints withdrawn) so that their controllers replace them elsewhere. Kubernetes evicts
        only after 5 minutes (tolerationSeconds 300); netemu evicts at once. Pods that tolerate
        the unreachable taint forever (DaemonSet pods) stay, not ready, and run again when the
        node starts (``nodelifecycle``)."""
        if name not in self.nodes:
            raise NotFoundError(f'nodes "{name}" not found')
        kubelet = self.kubelets.pop(name, None)
        if kubelet is None:
            return  # already stopped
        await kubelet.stop()
        await self.proxy.remove_node(name)
        if self.kernel_proxy is not None:
            await self.kernel_proxy.remove_node(name)
        self._set_node_ready(name, False)
        nodelifecycle.node_unreachable(self.store, name)
        await self.settle()

    async def start_node(self, name: str) -> None:
        """Bring a stopped node back: Ready again, schedulable, answering on its NodePorts."""
        if name not in self.nodes:
            raise NotFoundError(f'nodes "{name}" not found')
        if name in self.kubelets:
            return
        self._set_node_ready(name, True)
        self.proxy.add_node(self.nodes[name])
        if self.kernel_proxy is not None:
            self.kernel_proxy.add_node(name)
        self._start_kubelet(self.nodes[name])
        await self.settle()

    async def kill_container(self, pod: str, container: str | None = None, namespace: str = "default",
                             signal: str = "KILL") -> None:
        """Kill a container's process (as the OOM killer or a crash would); the kubelet then
        restarts it according to the pod's restartPolicy."""
        kubelet = self._kubelet_for(pod, namespace)
        await kubelet.kill_container(namespace, pod, container, signal)

    async def stop(self) -> None:
        """Tear everything down in reverse order; safe to call twice."""
        self._started = False
        stack, self._stack = self._stack, contextlib.AsyncExitStack()
        try:
            await stack.aclose()
        finally:
            self._cycles.close()

    # ------------------------------------------------------------------ changes

    def _manifests(self, sources: Iterable[Any], namespace: str | None) -> list[Any]:
        out: list[Any] = []
        for src in sources:
            if isinstance(src, api.Manifest):
                out.append(src)
            elif isinstance(src, Path) or (isinstance(src, str) and "\n" not in src and Path(src).exists()):
                self.apiserver.check_request_size(Path(src), str(src))
                out += api.load_paths([str(src)], namespace=namespace)
            elif isinstance(src, str):
                self.apiserver.check_request_size(src, "<text>")
                out += api.load_text(src, source="<text>", namespace=namespace)
            elif isinstance(src, dict):
                out += api.load_data(src, source="<dict>", namespace=namespace)
            elif isinstance(src, (list, tuple)):
                out += self._manifests(src, namespace)
            else:
                raise TypeError(f"cannot apply {type(src).__name__}")
        return out

    async def _read(self, sources: tuple[Any, ...], namespace: str | None) -> list[Any]:
        """``_manifests`` in a worker thread; a big YAML text (``PARALLEL_READ`` bytes) is read in
        two parts side by side, the second by the sandbox helper (on the machine's other core),
        when it can be cut at a document marker and the helper is ready before the first part is
        read. A part with any problem makes it read the whole text here, for the usual errors."""
        text = sources[0] if len(sources) == 1 and isinstance(sources[0], str) else None
        parts = api.split_stream(text) if text is not None and len(text) >= PARALLEL_READ else None
        if parts is None:
            return await asyncio.to_thread(self._manifests, sources, namespace)
        self.apiserver.check_request_size(text, "<text>")
        head = asyncio.ensure_future(asyncio.to_thread(api.load_part, parts[0], "<text>", namespace))
        try:
            tail = await self._read_in_helper(parts[1], namespace, head)
            if tail is None:
                tail = await asyncio.to_thread(api.load_part, parts[1], "<text>", namespace)
            first = await head
        finally:
            head.cancel()
        if first is None or tail is None:
            return await asyncio.to_thread(self._manifests, sources, namespace)
        return api.join_parts(first, tail)

    async def _read_in_helper(self, text: str, namespace: str | None, head: asyncio.Future[Any]) -> Any:
        """The second part read by the sandbox helper, if it is ready before the first part is
        read (None otherwise, or when it had a problem)."""
        ready = asyncio.ensure_future(self.sandbox.wait_ready())
        await asyncio.wait([ready, head], return_when=asyncio.FIRST_COMPLETED)
        if not ready.done() or not ready.result():
            ready.cancel()
            return None
        self._reads += 1
        text_path, out_path = self.state.path(f"read-{self._reads}.yaml"), self.state.path(f"read-{self._reads}.pickle")
        try:
            await asyncio.to_thread(text_path.write_text, text)
            if not await self.sandbox.call("read_manifests", str(text_path), "<text>", namespace, str(out_path)):
                return None
            return await asyncio.to_thread(_load_pickle, out_path)
        except Unavailable:
            return None
        finally:
            text_path.unlink(missing_ok=True)
            out_path.unlink(missing_ok=True)

    async def apply(self, *sources: Any, namespace: str | None = None) -> list[str]:
        """Create or update objects from paths, YAML text, dicts or decoded manifests (all or nothing).

        However big the batch, the cluster keeps serving meanwhile: manifests are read and decoded
        in a worker thread, planned in slices (``ApiServer.apply_async``), and the resulting events
        reach controllers, DNS and the proxy in slices too; applies run one at a time."""
        async with self._apply_lock:
            self._cycles.hold()
            big = False
            try:
                manifests = await self._read(sources, namespace)
                big = len(manifests) >= BIG_APPLY
                lines = await self.apiserver.apply_async(manifests)
                await self.settle()
            finally:
                self._cycles.release(big=big)
        return lines

    async def delete(self, kind: str, name: str, namespace: str = "default", *, wait: bool = False,
                     timeout: float = 60) -> str:
        kind = resolve_kind(kind)
        ns = namespace if k8s.KIND_BY_NAME[kind].NAMESPACED else ""
        line = self.apiserver.delete(kind, ns, name)
        if wait:
            await self.wait_for(lambda: self.store.get(kind, ns, name) is None, timeout, f"{kind} {name} to go")
        return line

    async def delete_manifests(self, *sources: Any, namespace: str | None = None) -> list[str]:
        return self.apiserver.delete_manifests(self._manifests(sources, namespace))

    async def scale(self, name: str, replicas: int, namespace: str = "default", *, kind: str = "Deployment") -> str:
        line = self.apiserver.scale(resolve_kind(kind), namespace, name, replicas)
        await self.settle()
        return line

    # ------------------------------------------------------------------ reads

    def get(self, kind: str, name: str, namespace: str = "default") -> Any:
        kind = resolve_kind(kind)
        return self.store.must_get(kind, namespace if k8s.KIND_BY_NAME[kind].NAMESPACED else "", name)

    def list(self, kind: str, namespace: str | None = None, selector: Any = None) -> list[Any]:
        kind = resolve_kind(kind)
        return self.store.list(kind, namespace if k8s.KIND_BY_NAME[kind].NAMESPACED else None, selector)

    def pods(self, namespace: str | None = "default", selector: Any = None) -> list[k8s.Pod]:
        return self.store.list("Pod", namespace, selector)

    def pod_ip(self, name: str, namespace: str = "default") -> str:
        return self.get("Pod", name, namespace).status.pod_ip

    def service_ip(self, name: str, namespace: str = "default") -> str:
        return self.get("Service", name, namespace).spec.cluster_ip

    def node_ip(self, name: str) -> str:
        return self.nodes[name].ip

    # ------------------------------------------------------------------ waiting

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
        """Poll ``predicate`` after every store change (and every 50 ms) until true or ``timeout``."""
        deadline = time.monotonic() + timeout
        changed = asyncio.Event()
        unsubscribe = self.store.subscribe(lambda _e: changed.set())
        try:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeoutError(f"timed out after {timeout:g}s waiting for {what}")
                changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=min(left, 0.05))
        finally:
            unsubscribe()

    def not_ready(self) -> list[str]:
        """What keeps the cluster from being ready: pods not Ready, deployments short of replicas."""
        from netemu.readiness import pod_ready, workload_ready
        out = [f"pod {pod.metadata.namespace}/{pod.metadata.name}"
               for pod in self.store.list("Pod") if not pod_ready(pod)]
        for kind in ("Deployment", "StatefulSet"):
            for d in self.store.list(kind):
                if not workload_ready(d):
                    want = d.spec.replicas if d.spec.replicas is not None else 1
                    out.append(f"{kind.lower()} {d.metadata.namespace}/{d.metadata.name} "
                               f"({d.status.ready_replicas}/{want} ready)")
        return out

    async def wait_ready(self, timeout: float = 30) -> None:
        """Wait until every pod is Ready and every deployment has its replicas ready; fails at once
        (PodsStuckError) when a pod can never start (ErrImagePull, StartError, a refused bind)."""
        from netemu.readiness import require_ready
        await require_ready(self, timeout)

    async def settle(self) -> None:
        """Let every change so far reach the data plane (proxy listeners in step with services)."""
        await asyncio.sleep(0)
        await self._control_plane_settled()
        settle_service_ips = getattr(self.fabric, "settle_service_ips", None)
        if settle_service_ips is not None:
            await settle_service_ips()
        if self.proxy is not None:
            await self.proxy.settle()
        if self.kernel_proxy is not None:  # proxyMode nftables: services in every node's kernel
            await self.kernel_proxy.settle()
        if self.network_policy is not None:  # policies in every node's nftables
            await self.network_policy.synced()

    async def _control_plane_settled(self, limit: float = 60.0) -> None:
        """Wait until the store has delivered every event and no controller has work queued
        (both work in slices, so a big change takes several loop turns); gives up after ``limit``
        seconds of constant churn rather than wait forever."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            await self.store.settled()
            if self.controllers is None or self.controllers.idle:
                if self.store.idle:
                    return
            await asyncio.sleep(0)

    # ------------------------------------------------------------------ service traffic

    def impair(self, *, service: str | None = None, node: str | None = None,
               link: tuple[str, str] | list[str] | None = None, impairment: Any = None,
               namespace: str = "default", delay: float = 0.0, jitter: float = 0.0, rate_kbit: float = 0.0,
               loss: float = 0.0, reset: float = 0.0, duplicate: float = 0.0) -> str:
        """Impair traffic; all settings zero (or ``impairment`` None) clears; says what it did.

        Writes the netemu.dev ``Impairment`` for the target through the API server (or deletes
        it, to clear), as ``netemu impair`` and kubectl do, and returns once it is in force
        (netemu.chaos); a refusal is a ManifestErrors naming the field. Name one target:

        - ``service`` (``"name"`` or ``"ns/name"``): its new connections and UDP flows, at the
          service proxy (any backend), with a ``netemu.proxy.Impairment``;
        - ``node``: on the loopback backend all that the node proxies or serves, at the proxy;
          on the netns backend every frame of the node's links on the underlay wire;
        - ``link`` (two node names, netns only): every frame between the two, both directions.

        Delay and jitter are in seconds and act on each direction; ``rate_kbit`` caps each
        direction; ``loss`` is a fraction of datagrams (proxy) or frames (wire); ``reset``
        (proxy only) resets new TCP connections; ``duplicate`` (wire only) repeats frames.
        Connections open at the proxy keep what they started with; the wire applies at once."""
        if sum(t is not None for t in (service, node, link)) != 1:
            raise InvalidError("impair: name exactly one of a service, a node or a link")
        from netemu import chaos
        settings = chaos.spec_settings(impairment, delay=delay, jitter=jitter, rate_kbit=rate_kbit, loss=loss,
                                       reset=reset, duplicate=duplicate)
        if service is not None:
            ns, _, name = service.rpartition("/")
            self.get("Service", name, ns or namespace)  # it must exist
        return chaos.write_impairment(self, service=service, node=node, link=link, namespace=namespace,
                                      settings=settings)

    def put_impairment(self, impairment: Any, *, service: tuple[str, str] | None = None, node: str | None = None,
                       link: tuple[str, str] | None = None) -> None:
        """Put ``impairment`` (None clears) in force at once: a Service's (``(namespace, name)``;
        it need not exist yet) and a loopback node's at the proxy, a netns node's and a link's on
        the wire. What an admitted Impairment object asks for (netemu.chaos calls this)."""
        wire = getattr(self.fabric, "impair", None)
        if link is not None:
            wire(impairment, link=link)
        elif node is not None and wire is not None:
            wire(impairment, node=node)
        elif service is not None:
            self.proxy.set_impairment(impairment, service=service)
        else:
            self.proxy.set_impairment(impairment, node=node)

    def partition(self, groups: Any) -> str:
        """Cut the underlay between groups of nodes (netns backend): ``[["node-1"], ["node-2",
        "node-3"]]`` or ``["node-1", "node-2,node-3"]``. Nodes named in no group form one more
        group. Frames between groups are dropped (links stay up, as when a switch fails);
        replaces an earlier partition. Writes the cluster's netemu.dev ``Partition`` through the
        API server, as ``netemu partition`` and kubectl do, and returns once it is in force."""
        if not hasattr(self.fabric, "partition"):
            raise BackendUnavailableError(f"partition: needs the netns backend (this cluster uses "
                                          f"{self.config.backend}): on the loopback backend all pods share one "
                                          "network stack")
        from netemu import chaos
        from netemu.fabric.netns.wire import as_groups
        return chaos.write_partition(self, as_groups(groups))

    def heal(self) -> str:
        """Undo the partition: delete the cluster's Partition objects (netemu.chaos heals the wire)."""
        if not hasattr(self.fabric, "heal"):
            raise BackendUnavailableError(f"heal: needs the netns backend (this cluster uses {self.config.backend})")
        from netemu import chaos
        return chaos.delete_partitions(self)

    def put_partition(self, groups: Any) -> str:
        """Put a partition in force on the wire at once (netemu.chaos calls this; use ``partition``)."""
        fabric_partition = getattr(self.fabric, "partition", None)
        if fabric_partition is None:
            raise BackendUnavailableError(f"partition: needs the netns backend (this cluster uses {self.config.backend}): "
                                  "on the loopback backend all pods share one network stack")
        from netemu.fabric.netns.wire import as_groups
        chosen = as_groups(groups)
        for name in (n for g in chosen for n in g):
            if name not in self.nodes:
                raise NotFoundError(f'nodes "{name}" not found')
        fabric_partition(chosen)
        return "partitioned: " + " | ".join(",".join(g) for g in self.fabric.wire.partitions())

    def put_heal(self) -> str:
        """Make the wire whole at once (netemu.chaos calls this; use ``heal``)."""
        fabric_heal = getattr(self.fabric, "heal", None)
        if fabric_heal is None:
            raise BackendUnavailableError(f"heal: needs the netns backend (this cluster uses {self.config.backend})")
        fabric_heal()
        return "healed: every node hears every other"

    # ------------------------------------------------------------------ capture

    async def start_capture(self, path: str | os.PathLike[str], *, pod: str | None = None, node: str | None = None,
                            link: tuple[str, str] | list[str] | None = None, namespace: str = "default",
                            filter: str = "", count: int = 0) -> Any:
        """Start a packet capture to ``path`` (pcapng; netns backend): what crosses a pod's
        ``eth0``, a node's link to the underlay, or the link between two nodes, optionally
        narrowed by a tcpdump-style ``filter`` and stopped after ``count`` frames. Returns the
        running ``Capture``; ``stop()`` it, then ``capture_summary`` lists its flows."""
        start = getattr(self.fabric, "start_capture", None)
        if start is None:
            raise BackendUnavailableError(f"capture: needs the netns backend (this cluster uses {self.config.backend}): "
                                          "on the loopback backend packets never leave the host's own stack")
        sandbox = None
        if pod is not None:
            obj = self.store.must_get("Pod", namespace, pod)
            if not obj.status.pod_ip:
                raise ClusterError(f'pod "{pod}" has no network yet (status {obj.status.phase or "Pending"})')
            sandbox = obj.metadata.uid  # the kubelet's sandbox id
        for name in (tuple(link) if link is not None else (node,) if node is not None else ()):
            if name not in self.nodes:
                raise NotFoundError(f'nodes "{name}" not found')
        return await start(Path(path), pod=sandbox, node=node, link=tuple(link) if link is not None else None,
                           filter=filter, count=count)

    def capture_summary(self, capture: Any) -> list[str]:
        """A capture's flows, one line each, addresses named after pods, services and nodes."""
        from netemu.fabric.netns.capture import summary
        names: dict[str, str] = {}
        for obj in self.store.list("Node"):
            for address in obj.status.addresses:
                if address.type == "InternalIP":
                    names[address.address] = f"node/{obj.metadata.name}"
        for obj in self.store.list("Service"):
            for ip in obj.spec.cluster_ips or ((obj.spec.cluster_ip,) if obj.spec.cluster_ip else ()):
                if ip and ip != "None":
                    names[ip] = f"svc/{obj.metadata.namespace}/{obj.metadata.name}"
        for obj in self.store.list("Pod"):
            if obj.status.pod_ip and not obj.spec.host_network:
                names[obj.status.pod_ip] = f"{obj.metadata.namespace}/{obj.metadata.name}"
        return summary(capture.flows(), names)

    async def capture(self, path: str | os.PathLike[str], *, duration: float = 0.0, **target: Any) -> list[str]:
        """Capture for ``duration`` seconds (or until ``count`` frames); the flow summary."""
        running = await self.start_capture(path, **target)
        try:
            if target.get("count"):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(running.done.wait(), duration or None)
            else:
                await asyncio.sleep(duration)
        finally:
            running.stop()
        return self.capture_summary(running)

    def connection_log(self, service: str, namespace: str = "default") -> list[Any]:
        """The proxy's recent connections and UDP flows of a Service (``"name"`` or ``"ns/name"``),
        oldest first, as ``netemu.proxy.ConnectionRecord``s."""
        ns, _, name = service.rpartition("/")
        return self.proxy.connection_log(ns or namespace, name)

    # ------------------------------------------------------------------ pods

    def _kubelet_for(self, pod: str, namespace: str) -> Kubelet:
        obj = self.store.must_get("Pod", namespace, pod)
        kubelet = self.kubelets.get(obj.spec.node_name)
        if kubelet is None:
            raise ClusterError(f'pod "{pod}" is not running on a node yet (status {obj.status.phase or "Pending"})')
        return kubelet

    def exec_plan(self, pod: str, argv: list[str], *, container: str | None = None,
                  namespace: str = "default") -> ExecPlan:
        return self._kubelet_for(pod, namespace).exec_plan(namespace, pod, container, argv)

    async def exec(self, pod: str, argv: list[str], *, container: str | None = None, namespace: str = "default",
                   input: bytes | None = None, timeout: float = 30) -> ExecResult:
        """Run ``argv`` in the pod's container (its environment, its network) and collect the output."""
        plan = self.exec_plan(pod, argv, container=container, namespace=namespace)
        return await run_plan(plan.prefix, plan.argv, plan.env, plan.cwd, pod=pod, input=input, timeout=timeout)

    def log_path(self, pod: str, container: str | None = None, namespace: str = "default") -> Path:
        obj = self.store.must_get("Pod", namespace, pod)
        names = [c.name for c in obj.spec.containers]
        if container is None:
            if len(names) > 1:
                raise NetemuError(
                    f"a container name must be specified for pod {pod}, choose one of: [{' '.join(names)}]")
            container = names[0]
        elif container not in names + [c.name for c in obj.spec.init_containers]:
            raise NotFoundError(f"container {container} is not valid for pod {pod}")
        kubelet = self.kubelets.get(obj.spec.node_name)
        if kubelet is None:
            raise ClusterError(f'pod "{pod}" has not started yet')
        return kubelet.log_path(obj, container)

    def logs(self, pod: str, container: str | None = None, namespace: str = "default") -> str:
        path = self.log_path(pod, container, namespace)
        try:
            return path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def _collect_cluster_garbage(directory: Path) -> list[str]:
    """What a dead cluster left, its namespaces included; the netns modules (and pyroute2) are
    imported only when there is such a cluster, so a loopback start does not pay for them."""
    from netemu.fabric.netns.namespaces import collect_cluster_garbage
    return collect_cluster_garbage(directory)


class _CyclePause:
    """The cluster's hold on the cycle collector while it builds many objects.

    A full collection walks every live object: with the millions a big apply and what it brings
    about make (ReplicaSets, pods, statuses, events), that is a second or more with the loop, DNS
    and the proxy stopped, again and again while they keep coming. An apply makes no cyclic
    garbage, and a cluster's objects live as long as it does. So no collection runs during an
    apply (``hold``); after a small one the collector resumes at once, after a big one
    (``release(big=True)``) once the cluster has been quiet for ``QUIET`` seconds (no store change:
    the pods it started are up) or ``LONGEST`` seconds have passed, and what was built is then
    frozen (``gc.freeze``), so from then on a collection walks only what is newer. ``close`` (the
    cluster stops) gives the collector back at once. Only a collector this hold disabled is
    enabled again."""

    QUIET = 0.5
    LONGEST = 60.0

    def __init__(self, store: Store) -> None:
        self._store = store
        self._held = False
        self._resume: asyncio.Task[None] | None = None

    def hold(self) -> None:
        if not self._held and gc.isenabled():
            gc.disable()
            self._held = True

    def release(self, *, big: bool) -> None:
        if not self._held:
            return
        if self._resume is not None:  # a big apply's wait goes on through later applies
            return
        if big:
            self._resume = asyncio.ensure_future(self._resume_when_quiet())
        else:
            self._give_back(freeze=False)

    async def _resume_when_quiet(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.LONGEST
        seen = self._store.resource_version
        try:
            while loop.time() < deadline:
                await asyncio.sleep(self.QUIET)
                if self._store.resource_version == seen:
                    break
                seen = self._store.resource_version
        finally:  # quiet, or cancelled (the loop ending with the cluster never stopped): back either way
            self._resume = None
            self._give_back(freeze=True)

    def _give_back(self, *, freeze: bool) -> None:
        if self._held:
            if freeze:
                gc.freeze()
            gc.enable()
            self._held = False

    def close(self) -> None:
        if self._resume is not None:  # a big apply's objects: frozen, or the first young
            self._resume.cancel()     # collection would walk them all
            self._resume = None
            self._give_back(freeze=True)
        self._give_back(freeze=False)


def _load_pickle(path: Path) -> Any:
    """What the cluster's own sandbox helper pickled into a file of the cluster's state directory."""
    with open(path, "rb") as f:
        return pickle.load(f)


def _cluster_ips(svc: Any) -> set[str]:
    if svc is None:
        return set()
    return {ip for ip in (*svc.spec.cluster_ips, svc.spec.cluster_ip) if ip and ip != "None"}


def _host_resolv_conf() -> str | None:
    """The node's resolv.conf (for dnsPolicy Default), as the kubelet's --resolv-conf."""
    try:
        with open("/etc/resolv.conf") as f:
            return f.read()
    except OSError:
        return None
