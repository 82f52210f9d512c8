"""``proxyMode: nftables``, the rules: what one node's table ``ip netemu-proxy`` holds for one
service (``render_service``), the fixed part every node has (``base``), and the ``nft -f -`` lines
that turn one service's rules into another's (``transition``). Pure: no I/O.

The layout follows kube-proxy's nftables mode (pkg/proxy/nftables/proxier.go):

- maps keyed by destination: ``service-ips`` (``ip . proto . port``, ClusterIPs) and
  ``service-nodeports`` (``proto . port``, taken when the destination is one of the node's own
  addresses: ``fib daddr type local``, the service range and 127/8 excepted), whose elements
  ``goto`` a per-service-port chain; ``nat-prerouting`` (pods' traffic) and ``nat-output`` (the
  node's own) look them up through the ``services`` chain;
- ``svc-…`` (every usable endpoint) and ``local-…`` (this node's endpoints, for a traffic policy
  ``Local``) balance with ``numgen random mod N vmap`` over per-endpoint chains ``ep-…``, each
  ``dnat``-ing to its pod; ``ext-…`` is a NodePort's entry: it marks for masquerade (policy
  ``Cluster``; with ``Local`` only traffic from the node itself, which may use every endpoint) and
  goes on to ``svc-…`` or ``local-…``;
- ``sessionAffinity: ClientIP``: each endpoint chain records the client in its own set ``aff-…``
  (``update @set { ip saddr }``, timeout = the service's), and the balancing chain first sends a
  client found in one of those sets to that endpoint;
- masquerade where kube-proxy does it (mark 0x4000, ``masquerade fully-random`` at postrouting):
  ClusterIP traffic from outside the pod range, a pod reaching itself through its service
  (hairpin), and NodePort traffic with policy ``Cluster``. A pod's ClusterIP traffic keeps its
  address;
- no usable endpoint: the filter chains (before DNAT) send a new connection to ``reject``
  (``no-endpoint-services`` / ``no-endpoint-nodeports``): the client is refused at once (ICMP port
  unreachable); a ``Local`` policy with endpoints only on other nodes drops (the client times
  out), as kube-proxy does.

Names carry a hash of the service port so that per-service transitions never collide:
``svc-<hash>-<ns>/<name>/<proto>/<port>``; an endpoint chain appends ``__<ip>/<port>``.
Load-balancer ingress addresses are not rendered: on the netns backend they are 127.x addresses
in the host's network, where netemu adds no rules (the userspace listener serves them).
"""
from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Mapping

from .serviceport import EndpointInfo, ServicePortInfo, ServicePortName, Verdict, categorize
from .tracker import PortView

TABLE = "netemu-proxy"
FAMILY = "ip"
MASQ_MARK = "0x4000"
REJECT_CHAIN = "reject-chain"
SERVICE_IPS = "service-ips"
SERVICE_NODEPORTS = "service-nodeports"
NO_ENDPOINT_SERVICES = "no-endpoint-services"
NO_ENDPOINT_NODEPORTS = "no-endpoint-nodeports"
MAPS = (SERVICE_IPS, SERVICE_NODEPORTS, NO_ENDPOINT_SERVICES, NO_ENDPOINT_NODEPORTS)


@dataclass(frozen=True)
class NodeContext:
    """What the rules of one node depend on besides services."""
    node: str
    pod_cidr: str        # the cluster's pod range: ClusterIP traffic from outside it is masqueraded
    service_cidr: str    # never a NodePort destination


@dataclass(frozen=True)
class ServiceRules:
    """What one service (all its ports) adds to a node's table."""
    chains: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    sets: Mapping[str, int] = field(default_factory=dict)              # affinity set -> timeout (s)
    elements: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # map -> key -> verdict


EMPTY = ServiceRules()


def base(ctx: NodeContext) -> str:
    """The table with its maps and fixed chains (``nft -f`` syntax)."""
    own = f"fib daddr type local ip daddr != {{ 127.0.0.0/8, {ctx.service_cidr} }}"
    return f"""table {FAMILY} {TABLE} {{
  map {SERVICE_IPS} {{ type ipv4_addr . inet_proto . inet_service : verdict; }}
  map {SERVICE_NODEPORTS} {{ type inet_proto . inet_service : verdict; }}
  map {NO_ENDPOINT_SERVICES} {{ type ipv4_addr . inet_proto . inet_service : verdict; }}
  map {NO_ENDPOINT_NODEPORTS} {{ type inet_proto . inet_service : verdict; }}
  chain {REJECT_CHAIN} {{
    reject
  }}
  chain service-endpoints-check {{
    ip daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}
  }}
  chain nodeport-endpoints-check {{
    {own} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}
  }}
  chain filter-input {{
    type filter hook input priority -110; policy accept;
    ct state new jump nodeport-endpoints-check
    ct state new jump service-endpoints-check
  }}
  chain filter-forward {{
    type filter hook forward priority -110; policy accept;
    ct state new jump service-endpoints-check
  }}
  chain filter-output {{
    type filter hook output priority -110; policy accept;
    ct state new jump service-endpoints-check
  }}
  chain mark-for-masquerade {{
    meta mark set meta mark | {MASQ_MARK}
  }}
  chain masquerading {{
    meta mark & {MASQ_MARK} == 0 return
    meta mark set meta mark ^ {MASQ_MARK}
    masquerade fully-random
  }}
  chain services {{
    ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}
    {own} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}
  }}
  chain nat-prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    jump services
  }}
  chain nat-output {{
    type nat hook output priority -100; policy accept;
    jump services
  }}
  chain nat-postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    jump masquerading
  }}
}}
"""


def port_id(spn: ServicePortName) -> str:
    """``<hash>-<ns>/<name>/<proto>/<port>``: unique, readable, a valid nft identifier tail."""
    text = f"{spn.namespace}/{spn.name}/{spn.protocol.lower()}/{spn.port}"
    digest = base64.b32encode(hashlib.sha256(text.encode()).digest())[:8].decode()
    return f"{digest}-{text}"


def host_backed(endpoints: tuple[EndpointInfo, ...]) -> bool:
    """Endpoints in 127/8 live in the host's network (the cluster's API server behind
    ``kubernetes``): no node can DNAT to them, the userspace proxy serves such services."""
    return any(e.ip.startswith("127.") for e in endpoints)


def _balance(pid: str, endpoints: tuple[EndpointInfo, ...], affinity: bool) -> tuple[str, ...]:
    rules = []
    if affinity:
        rules += [f"ip saddr @{_affinity_set(pid, e)} goto {_endpoint_chain(pid, e)}" for e in endpoints]
    if len(endpoints) == 1:
        rules.append(f"goto {_endpoint_chain(pid, endpoints[0])}")
    else:
        choices = ", ".join(f"{i} : goto {_endpoint_chain(pid, e)}" for i, e in enumerate(endpoints))
        rules.append(f"numgen random mod {len(endpoints)} vmap {{ {choices} }}")
    return tuple(rules)


def _endpoint_chain(pid: str, e: EndpointInfo) -> str:
    return f"ep-{pid}__{e.ip}/{e.port}"


def _affinity_set(pid: str, e: EndpointInfo) -> str:
    return f"aff-{pid}__{e.ip}/{e.port}"


def _render_port(info: ServicePortInfo, endpoints: tuple[EndpointInfo, ...], ctx: NodeContext,
                 chains: dict[str, tuple[str, ...]], sets: dict[str, int],
                 elements: dict[str, dict[str, str]]) -> None:
    pid = port_id(info.name)
    proto = info.protocol.lower()
    affinity = int(info.affinity_timeout)
    cluster_verdict, cluster_eps = categorize(endpoints, ctx.node, False)
    needed: dict[str, tuple[EndpointInfo, ...]] = {}  # balancing chain -> its endpoints

    def target(local: bool) -> tuple[Verdict, str]:
        verdict, usable = categorize(endpoints, ctx.node, local)
        if verdict is not Verdict.SERVE:
            return verdict, ""
        name = f"{'local' if local else 'svc'}-{pid}"
        needed[name] = usable
        return verdict, name

    cluster_ip_key = f"{info.cluster_ip} . {proto} . {info.port}"
    verdict, chain = target(info.internal_local)
    if verdict is Verdict.SERVE:
        elements[SERVICE_IPS][cluster_ip_key] = f"goto {chain}"
    else:
        elements[NO_ENDPOINT_SERVICES][cluster_ip_key] = "drop" if verdict is Verdict.DROP else f"goto {REJECT_CHAIN}"
    if info.node_port is not None:
        node_port_key = f"{proto} . {info.node_port}"
        verdict, chain = target(info.external_local)
        if verdict is Verdict.SERVE:
            ext = f"ext-{pid}"
            if info.external_local:
                rules: tuple[str, ...] = ("fib saddr type local jump mark-for-masquerade",)
                if cluster_verdict is Verdict.SERVE:  # the node's own traffic may use every endpoint
                    needed[f"svc-{pid}"] = cluster_eps
                    rules += (f"fib saddr type local goto svc-{pid}",)
                chains[ext] = rules + (f"goto {chain}",)
            else:
                chains[ext] = ("jump mark-for-masquerade", f"goto {chain}")
            elements[SERVICE_NODEPORTS][node_port_key] = f"goto {ext}"
        else:
            elements[NO_ENDPOINT_NODEPORTS][node_port_key] = ("drop" if verdict is Verdict.DROP
                                                              else f"goto {REJECT_CHAIN}")
    for name, usable in needed.items():
        masq: tuple[str, ...] = ()
        if name.startswith("svc-"):  # kube-proxy: ClusterIP traffic from outside the pod range
            masq = (f"ip daddr {info.cluster_ip} {proto} dport {info.port} ip saddr != {ctx.pod_cidr} "
                    "jump mark-for-masquerade",)
        chains[name] = masq + _balance(pid, usable, bool(affinity))
        for e in usable:
            rules = (f"ip saddr {e.ip} jump mark-for-masquerade",)  # hairpin
            if affinity:
                sets[_affinity_set(pid, e)] = affinity
                rules += (f"update @{_affinity_set(pid, e)} {{ ip saddr }}",)
            chains[_endpoint_chain(pid, e)] = rules + (f"meta l4proto {proto} dnat to {e.ip}:{e.port}",)


def render_service(view: PortView, ctx: NodeContext) -> ServiceRules:
    """What one service (``view``: the change tracker's ports and endpoints) adds to node ``ctx``."""
    chains: dict[str, tuple[str, ...]] = {}
    sets: dict[str, int] = {}
    elements: dict[str, dict[str, str]] = {name: {} for name in MAPS}
    for info, endpoints in view.values():
        if host_backed(endpoints):
            continue
        _render_port(info, endpoints, ctx, chains, sets, elements)
    return ServiceRules(chains, sets, {k: v for k, v in elements.items() if v})


def transition(old: ServiceRules, new: ServiceRules) -> list[str]:
    """``nft -f -`` lines that turn one service's rules ``old`` into ``new`` in the table (empty:
    nothing to do). Every chain and set exists before a rule or map element names it and is
    removed only after nothing names it any more."""
    t = f"{FAMILY} {TABLE}"
    renewed = [name for name in new.sets if name in old.sets and old.sets[name] != new.sets[name]]
    changed = [name for name, rules in new.chains.items() if old.chains.get(name) != rules
               or any(f"@{s} " in rule for s in renewed for rule in rules)]
    lines = [f"add chain {t} {name}" for name in changed if name not in old.chains]
    lines += [f"flush chain {t} {name}" for name in changed if name in old.chains]
    lines += [f"delete set {t} {name}" for name in renewed]  # a new timeout: the set is made anew
    lines += [f"add set {t} {name} {{ type ipv4_addr; flags dynamic,timeout; timeout {timeout}s; }}"
              for name, timeout in new.sets.items() if old.sets.get(name) != timeout]
    for name in changed:
        lines += [f"add rule {t} {name} {rule}" for rule in new.chains[name]]
    for map_name in MAPS:
        before, after = old.elements.get(map_name, {}), new.elements.get(map_name, {})
        gone = [key for key, verdict in before.items() if after.get(key) != verdict]
        if gone:
            lines.append(f"delete element {t} {map_name} {{ {', '.join(gone)} }}")
        added = [f"{key} : {verdict}" for key, verdict in after.items() if before.get(key) != verdict]
        if added:
            lines.append(f"add element {t} {map_name} {{ {', '.join(added)} }}")
    removed = [name for name in old.chains if name not in new.chains]
    lines += [f"flush chain {t} {name}" for name in removed]
    lines += [f"delete chain {t} {name}" for name in removed]
    lines += [f"delete set {t} {name}" for name in old.sets if name not in new.sets]
    return lines
