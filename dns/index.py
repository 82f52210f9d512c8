"""DNSIndex: the read-only, slimmed view of Services, EndpointSlices, Pods and Namespaces that
record generation reads (CoreDNS's ``object/`` types behind its ``dnsController``).

Events arrive through a narrow handler interface, ``on_service(old, new)``,
``on_endpointslice(old, new)``, ``on_pod(old, new)`` and ``on_namespace(old, new)`` (``None`` for
add and delete); the DNS package never sees the store. Each object is slimmed to what DNS needs
before it is kept, and, as CoreDNS's ``detectChanges`` does, an event that leaves the slimmed
form equal (a status or label edit) is no change: only a real change bumps ``serial`` and calls
the listeners, synchronously, so an answer cache cleared there shows the change at once.

IP addresses are kept in canonical form (``ipaddress``'s ``str``), as Go's ``net.IP.String``.
"""
from __future__ import annotations

import functools
import ipaddress
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from netemu.api.objects import EndpointSlice, Namespace, Pod, Service

Key = tuple[str, str]  # (namespace, name)
NO_PORT = -1          # CoreDNS's sentinel port for a service or slice without ports


@dataclass(frozen=True, slots=True)
class SlimPort:
    name: str
    protocol: str
    port: int


@dataclass(frozen=True, slots=True)
class SlimService:
    """A stripped-down Service (CoreDNS ``object.Service``)."""

    namespace: str
    name: str
    type: str
    cluster_ips: tuple[str, ...]      # ("None",) when headless
    external_name: str
    ports: tuple[SlimPort, ...]       # never empty: (SlimPort("", "", NO_PORT),) without ports
    external_ips: tuple[str, ...]     # spec.externalIPs and load-balancer ingress IPs
    publish_not_ready: bool

    @property
    def headless(self) -> bool:
        return self.cluster_ips[:1] == ("None",)

    @property
    def external(self) -> bool:
        return self.type == "ExternalName"


@dataclass(frozen=True, slots=True)
class SlimAddress:
    ip: str
    hostname: str
    ready: bool


@dataclass(frozen=True, slots=True)
class SlimSlice:
    """A stripped-down EndpointSlice (CoreDNS ``object.Endpoints``): one subset."""

    namespace: str
    name: str
    service: str                      # the kubernetes.io/service-name label
    ports: tuple[SlimPort, ...]       # never empty, as SlimService.ports
    addresses: tuple[SlimAddress, ...]


@dataclass(frozen=True, slots=True)
class SlimPod:
    namespace: str
    name: str
    ips: tuple[str, ...]
    phase: str
    deleting: bool


@dataclass(frozen=True, slots=True)
class Subset:
    """The endpoints DNS publishes for one slice: its ports and its ready addresses."""

    ports: tuple[SlimPort, ...]
    addresses: tuple[SlimAddress, ...]


@functools.lru_cache(maxsize=1 << 16)
def canonical_ip(text: str) -> str:
    """``ipaddress`` canonical form, or the text unchanged when it is not an IP (remembered: a
    pod's and an endpoint's address come back in every update of the pod, slice and service)."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def _ports(items: Iterable[tuple[str | None, str | None, int | None]]) -> tuple[SlimPort, ...]:
    ports = tuple(SlimPort(name or "", protocol or "", NO_PORT if port is None else port)
                  for name, protocol, port in items)
    return ports or (SlimPort("", "", NO_PORT),)


def slim_service(svc: Service) -> SlimService:
    spec = svc.spec
    ips = spec.cluster_ips or ((spec.cluster_ip,) if spec.cluster_ip else ())
    externals = tuple(spec.external_ips) + tuple(
        i.ip or i.hostname for i in svc.status.load_balancer.ingress if i.ip or i.hostname)
    return SlimService(
        namespace=svc.metadata.namespace, name=svc.metadata.name, type=spec.type,
        cluster_ips=tuple(ip if ip == "None" else canonical_ip(ip) for ip in ips),
        external_name=spec.external_name,
        ports=_ports((p.name, p.protocol, p.port) for p in spec.ports),
        external_ips=tuple(canonical_ip(ip) for ip in externals),
        publish_not_ready=spec.publish_not_ready_addresses)


def slim_slice(es: EndpointSlice) -> SlimSlice:
    addresses = []
    for ep in es.endpoints:
        ready = ep.conditions.ready is None or ep.conditions.ready  # nil means ready
        for ip in ep.addresses:
            addresses.append(SlimAddress(canonical_ip(ip), ep.hostname or "", bool(ready)))
    return SlimSlice(
        namespace=es.metadata.namespace, name=es.metadata.name,
        service=es.metadata.labels.get(EndpointSlice.SERVICE_NAME_LABEL, ""),
        ports=_ports((p.name, p.protocol, p.port) for p in es.ports),
        addresses=tuple(addresses))


def slim_pod(pod: Pod) -> SlimPod:
    ips = tuple(canonical_ip(p.ip) for p in pod.status.pod_ips if p.ip)
    if not ips and pod.status.pod_ip:
        ips = (canonical_ip(pod.status.pod_ip),)
    return SlimPod(namespace=pod.metadata.namespace, name=pod.metadata.name, ips=ips,
                   phase=pod.status.phase, deleting=pod.metadata.deletion_timestamp is not None)


class DNSIndex:
    """Services, slices and pods by name and by IP, plus which namespaces exist.

    ``watch_pods`` mirrors CoreDNS's ``initPodCache``: pod details only matter to ``pods
    verified``; otherwise a pod event changes answers only when it makes a namespace appear or
    disappear. A namespace exists when ``on_namespace`` added it or while any object lives in it.
    """

    def __init__(self, watch_pods: bool = False) -> None:
        self.watch_pods = watch_pods
        self.serial = int(time.time())
        self._listeners: list[Callable[[], None]] = []
        self._services: dict[Key, SlimService] = {}
        self._slices: dict[Key, SlimSlice] = {}                      # by (ns, slice name)
        self._slices_by_service: dict[Key, dict[str, SlimSlice]] = {}
        self._pods: dict[Key, SlimPod] = {}
        self._svc_by_ip: dict[str, set[Key]] = defaultdict(set)
        self._slice_by_ip: dict[str, set[Key]] = defaultdict(set)
        self._pod_by_ip: dict[str, set[Key]] = defaultdict(set)
        self._namespaces: set[str] = set()
        self._population: dict[str, int] = defaultdict(int)        # objects per namespace
        self._pod_namespaces: dict[Key, str] = {}                   # pods counted for namespaces

    # ------------------------------------------------------------------ listeners

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every real change (synchronously, in the handler)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _changed(self) -> bool:
        self.serial = max(self.serial + 1, int(time.time())) & 0xFFFFFFFF
        for listener in list(self._listeners):
            listener()
        return True

    # ------------------------------------------------------------------ handlers

    def on_service(self, old: Service | None, new: Service | None) -> bool:
        """A Service was added (old None), updated or deleted (new None); True if DNS changed."""
        if _same_version(old, new):
            return False
        obj = new if new is not None else old
        if obj is None:
            return False
        key = (obj.metadata.namespace, obj.metadata.name)
        slim = slim_service(new) if new is not None else None
        current = self._services.get(key)
        if slim == current:
            return False
        if current is not None:
            for ip in current.cluster_ips + current.external_ips:
                _discard(self._svc_by_ip, ip, key)
            del self._services[key]
            self._count(key[0], -1)
        if slim is not None:
            self._services[key] = slim
            for ip in slim.cluster_ips + slim.external_ips:
                if ip != "None":
                    self._svc_by_ip[ip].add(key)
            self._count(key[0], +1)
        return self._changed()

    def on_endpointslice(self, old: EndpointSlice | None, new: EndpointSlice | None) -> bool:
        if _same_version(old, new):
            return False
        obj = new if new is not None else old
        if obj is None:
            return False
        key = (obj.metadata.namespace, obj.metadata.name)
        slim = slim_slice(new) if new is not None else None
        current = self._slices.get(key)
        if slim == current:
            return False
        if current is not None:
            owned = self._slices_by_service.get((current.namespace, current.service), {})
            owned.pop(current.name, None)
            if not owned:
                self._slices_by_service.pop((current.namespace, current.service), None)
            for a in current.addresses:
                _discard(self._slice_by_ip, a.ip, key)
            del self._slices[key]
            self._count(key[0], -1)
        if slim is not None:
            self._slices[key] = slim
            self._slices_by_service.setdefault((slim.namespace, slim.service), {})[slim.name] = slim
            for a in slim.addresses:
                self._slice_by_ip[a.ip].add(key)
            self._count(key[0], +1)
        return self._changed()

    def on_pod(self, old: Pod | None, new: Pod | None) -> bool:
        if _same_version(old, new):
            return False
        obj = new if new is not None else old
        if obj is None:
            return False
        key = (obj.metadata.namespace, obj.metadata.name)
        existed = self.namespace_exists(key[0])
        if new is None:
            if self._pod_namespaces.pop(key, None) is not None:
                self._count(key[0], -1)
        elif key not in self._pod_namespaces:
            self._pod_namespaces[key] = key[0]
            self._count(key[0], +1)
        namespace_changed = existed != self.namespace_exists(key[0])
        if not self.watch_pods:
            return self._changed() if namespace_changed else False
        current = self._pods.get(key)
        if current is not None and old is not None and new is not None and not namespace_changed \
                and _same_dns_facts(old, new):
            return False  # most pod updates (conditions, container statuses) change nothing here
        slim = slim_pod(new) if new is not None else None
        if slim is not None and not slim.ips:
            slim = None  # no address yet: nothing to look up by (most new pods, until the kubelet's IP)
        if slim == current and not namespace_changed:
            return False
        if current is not None:
            for ip in current.ips:
                _discard(self._pod_by_ip, ip, key)
            del self._pods[key]
        if slim is not None:
            self._pods[key] = slim
            for ip in slim.ips:
                self._pod_by_ip[ip].add(key)
        return self._changed()

    def on_namespace(self, old: Namespace | None, new: Namespace | None) -> bool:
        obj = new if new is not None else old
        if obj is None:
            return False
        name = obj.metadata.name
        existed = self.namespace_exists(name)
        if new is None:
            self._namespaces.discard(name)
        else:
            self._namespaces.add(name)
        return self._changed() if existed != self.namespace_exists(name) else False

    def _count(self, namespace: str, delta: int) -> None:
        self._population[namespace] += delta
        if self._population[namespace] <= 0:
            del self._population[namespace]

    # ------------------------------------------------------------------ reads

    def namespace_exists(self, namespace: str) -> bool:
        return namespace in self._namespaces or namespace in self._population

    def service(self, namespace: str, name: str) -> SlimService | None:
        return self._services.get((namespace, name))

    def subsets(self, svc: SlimService) -> list[Subset]:
        """Per slice of ``svc`` (by slice name): its ports and the addresses DNS publishes —
        the ready ones, or all with ``publishNotReadyAddresses``."""
        owned = self._slices_by_service.get((svc.namespace, svc.name), {})
        out = []
        for name in sorted(owned):
            s = owned[name]
            addresses = s.addresses if svc.publish_not_ready else tuple(a for a in s.addresses if a.ready)
            out.append(Subset(s.ports, addresses))
        return out

    def services_by_ip(self, ip: str) -> list[SlimService]:
        """Services whose ClusterIPs or external IPs include ``ip`` (canonical form)."""
        return [self._services[k] for k in sorted(self._svc_by_ip.get(ip, ()))]

    def endpoints_by_ip(self, ip: str) -> list[tuple[str, str, SlimAddress]]:
        """(namespace, service name, address) of every published endpoint address ``ip``."""
        out = []
        for key in sorted(self._slice_by_ip.get(ip, ())):
            s = self._slices[key]
            svc = self._services.get((s.namespace, s.service))
            publish = svc is not None and svc.publish_not_ready
            out.extend((s.namespace, s.service, a) for a in s.addresses if a.ip == ip and (a.ready or publish))
        return out

    def pods_by_ip(self, ip: str) -> list[SlimPod]:
        return [self._pods[k] for k in sorted(self._pod_by_ip.get(ip, ()))]

    def published_ips(self) -> list[str]:
        """Every address with a PTR record: service IPs and published endpoint addresses."""
        return [ip for ip in self._svc_by_ip] + [ip for ip in self._slice_by_ip
                                                 if ip not in self._svc_by_ip and self.endpoints_by_ip(ip)]


def _same_dns_facts(old: Pod, new: Pod) -> bool:
    """Whether ``slim_pod`` reads the same from both versions of a pod."""
    o, n = old.status, new.status
    return (o.pod_ips == n.pod_ips and o.pod_ip == n.pod_ip and o.phase == n.phase
            and (old.metadata.deletion_timestamp is None) == (new.metadata.deletion_timestamp is None)
            and old.metadata.namespace == new.metadata.namespace and old.metadata.name == new.metadata.name)


def _same_version(old: object | None, new: object | None) -> bool:
    """CoreDNS's first filter: an update that keeps the resourceVersion is no update."""
    if old is None or new is None:
        return False
    rv = old.metadata.resource_version  # type: ignore[attr-defined]
    return bool(rv) and rv == new.metadata.resource_version  # type: ignore[attr-defined]


def _discard(index: dict[str, set[Key]], ip: str, key: Key) -> None:
    keys = index.get(ip)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del index[ip]
