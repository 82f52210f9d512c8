"""Service ports and endpoints as the proxy sees them, derived from API objects (no I/O).

kube-proxy's ``ServicePortName`` / ``ServicePort`` / ``Endpoint`` reduced to what a userspace
proxy needs, and its ``CategorizeEndpoints`` (pkg/proxy/topology.go): which endpoints serve
cluster-wide and node-local traffic, and whether the service port has any usable endpoint at
all. The answer for one node and one kind of traffic is a ``Verdict``:

- ``REJECT``: no usable endpoint anywhere (iptables REJECTs: the client is refused at once);
- ``DROP``: the traffic policy is ``Local`` and this node has none (iptables DROPs: the client
  times out), while other nodes may have some;
- ``SERVE``: a list of endpoints to balance over.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterable

from netemu.api.objects import EndpointSlice, Service

ServiceKey = tuple[str, str]  # (namespace, name)

DEFAULT_AFFINITY_TIMEOUT = 10800  # seconds; Kubernetes' default for sessionAffinity: ClientIP
PROTOCOLS = ("TCP", "UDP")         # SCTP is accepted by the API but not proxied


class Verdict(enum.Enum):
    SERVE = "serve"
    DROP = "drop"
    REJECT = "reject"


class Traffic(enum.Enum):
    """Which traffic policy applies: ClusterIP traffic (internal) or NodePort/LB (external)."""

    INTERNAL = "internal"
    EXTERNAL = "external"


# A member read through its class costs an enum lookup (~75 ns on Python 3.11, several per
# connection); the per-connection path (routing, the listeners) reads these module names instead.
SERVE, DROP, REJECT = Verdict.SERVE, Verdict.DROP, Verdict.REJECT
INTERNAL, EXTERNAL = Traffic.INTERNAL, Traffic.EXTERNAL


@dataclass(frozen=True, slots=True)
class ServicePortName:
    """Identity of one service port: namespace, service name, port name ("" if unnamed), protocol.

    Looked up once per proxied connection: its hash and service key are computed once, when made
    (a new process, as unpickling makes, computes them again: string hashes differ per process)."""

    namespace: str
    name: str
    port: str
    protocol: str
    service: ServiceKey = field(init=False, repr=False, compare=False)  # (namespace, name)
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "service", (self.namespace, self.name))
        object.__setattr__(self, "_hash", hash((self.namespace, self.name, self.port, self.protocol)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple:
        return (ServicePortName, (self.namespace, self.name, self.port, self.protocol))

    def __str__(self) -> str:
        port = f":{self.port}" if self.port else ""
        return f"{self.namespace}/{self.name}{port}/{self.protocol}"


@dataclass(frozen=True, slots=True)
class ServicePortInfo:
    """What the proxy needs of one service port; equal infos mean nothing to do."""

    name: ServicePortName
    cluster_ip: str
    port: int
    node_port: int | None = None
    load_balancer_ips: tuple[str, ...] = ()
    affinity_timeout: float = 0.0   # seconds of ClientIP affinity; 0 = none
    internal_local: bool = False    # internalTrafficPolicy: Local
    external_local: bool = False    # externalTrafficPolicy: Local
    # ``ns/name:port/PROTO`` with the port number, for logs and connection records (made once)
    label: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        name = self.name
        object.__setattr__(self, "label", f"{name.namespace}/{name.name}:{self.port}/{name.protocol}")

    @property
    def protocol(self) -> str:
        return self.name.protocol


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    ip: str
    port: int
    node: str | None = None
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    # made once, not per connection: where to connect, and ``ip:port`` for connection records
    address: tuple[str, int] = field(init=False, repr=False, compare=False)
    text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", (self.ip, self.port))
        object.__setattr__(self, "text", f"{self.ip}:{self.port}")

    def __str__(self) -> str:
        return self.text


def service_ports(service: Service | None) -> dict[ServicePortName, ServicePortInfo]:
    """The proxied ports of ``service``: none for ExternalName, headless or unallocated services."""
    if service is None:
        return {}
    spec = service.spec
    if spec.type == "ExternalName" or not spec.cluster_ip or service.is_headless:
        return {}
    external = spec.type in ("NodePort", "LoadBalancer")
    lb_ips: tuple[str, ...] = ()
    if spec.type == "LoadBalancer":
        lb_ips = tuple(dict.fromkeys(i.ip for i in service.status.load_balancer.ingress if i.ip))
    affinity = 0.0
    if spec.session_affinity == "ClientIP":
        cfg = spec.session_affinity_config
        timeout = cfg.client_ip.timeout_seconds if cfg is not None and cfg.client_ip is not None else None
        affinity = float(timeout or DEFAULT_AFFINITY_TIMEOUT)
    out = {}
    for sp in spec.ports:
        if sp.protocol not in PROTOCOLS:
            continue
        spn = ServicePortName(service.metadata.namespace, service.metadata.name, sp.name, sp.protocol)
        out[spn] = ServicePortInfo(
            name=spn, cluster_ip=spec.cluster_ip, port=sp.port,
            node_port=sp.node_port if external else None,
            load_balancer_ips=lb_ips, affinity_timeout=affinity,
            internal_local=spec.internal_traffic_policy == "Local",
            external_local=external and spec.external_traffic_policy == "Local")
    return out


def slice_service(endpoint_slice: EndpointSlice) -> ServiceKey | None:
    """The service a slice belongs to (its ``kubernetes.io/service-name`` label)."""
    name = endpoint_slice.metadata.labels.get(EndpointSlice.SERVICE_NAME_LABEL)
    return (endpoint_slice.metadata.namespace, name) if name else None


def slice_endpoints(spn: ServicePortName, slices: Iterable[EndpointSlice]) -> tuple[EndpointInfo, ...]:
    """Endpoints of one service port: slice ports match by name and protocol; each slice port
    carries the target port already resolved per pod (a named targetPort). Sorted, deduplicated."""
    found: dict[tuple[str, int], EndpointInfo] = {}
    for es in slices:
        if es.address_type not in ("IPv4", ""):
            continue
        port = next((p.port for p in es.ports
                     if (p.name or "") == spn.port and p.protocol == spn.protocol and p.port), None)
        if port is None:
            continue
        for ep in es.endpoints:
            if not ep.addresses:
                continue
            cond = ep.conditions
            ready = cond.ready is None or cond.ready
            serving = cond.serving if cond.serving is not None else ready
            info = EndpointInfo(ip=ep.addresses[0], port=port, node=ep.node_name, ready=ready,
                                serving=serving, terminating=bool(cond.terminating))
            old = found.get(info.address)
            if old is None or (info.ready and not old.ready):
                found[info.address] = info
    return tuple(sorted(found.values(), key=lambda e: (e.ip, e.port)))


def categorize(endpoints: tuple[EndpointInfo, ...], node: str, local: bool) -> tuple[Verdict, tuple[EndpointInfo, ...]]:
    """kube-proxy's CategorizeEndpoints for one node and one traffic policy.

    Cluster policy: ready endpoints, else serving-and-terminating ones. Local policy: this node's
    ready endpoints, else its serving-and-terminating ones. No usable endpoint anywhere rejects;
    a Local policy with usable endpoints only elsewhere drops."""
    usable = [e for e in endpoints if e.ready or (e.serving and e.terminating)]
    if not usable:
        return Verdict.REJECT, ()
    if local:
        mine = [e for e in usable if e.node == node]
    else:
        mine = usable
    chosen = tuple(e for e in mine if e.ready) or tuple(e for e in mine if e.serving and e.terminating)
    if not chosen:
        return Verdict.DROP, ()
    return Verdict.SERVE, chosen
