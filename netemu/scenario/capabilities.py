"""What this machine and a cluster can do, as named in a scenario's ``requires:``.

Host capabilities (``root``, ``privileged-ports``) are known before any cluster starts; the
others come from the cluster: ``Cluster.capabilities`` (a frozenset) when it has one, otherwise
they are inferred from what the object offers (a ``proxy`` attribute, a ``dns`` attribute,
methods such as ``kill_container``), so a scenario is skipped — not failed — until the feature
it needs is wired in.
"""
from __future__ import annotations

import os
from typing import Any, Iterable

KNOWN: dict[str, str] = {
    "root": "running as root",
    "privileged-ports": "binding ports below 1024: run as root, or lower net.ipv4.ip_unprivileged_port_start",
    "loopback": "the loopback backend",
    "netns": "the netns backend, pods in their own network namespaces",
    "pod-resolv-conf": "a resolv.conf of its own for every pod",
    "pod-volume-mounts": "volumes at their mountPath in a pod's processes (root, in a private mount namespace)",
    "dns-port-53": "the cluster DNS on port 53, where pods' resolvers look",
    "service-proxy": "the service proxy, traffic to ClusterIPs, NodePorts and load-balancer addresses",
    "cluster-dns": "the cluster DNS server",
    "kill": "killing a container's process, Cluster.kill_container",
    "node-lifecycle": "stopping and starting nodes, Cluster.stop_node and start_node",
    "impair": "link impairments (delay, jitter, loss, rate), Cluster.impair",
    "partition": "network partitions between nodes, Cluster.partition and heal",
    "capture": "packet capture to pcapng, Cluster.start_capture (netns backend)",
    "load-balancer": "LoadBalancer Services that get an ingress address",
    "network-policy": ("NetworkPolicy enforced by the network plugin (netns backend; on loopback pods share "
                       "the host's stack and policies are stored without effect)"),
}
HOST = frozenset({"root", "privileged-ports"})

# capability -> the Cluster attributes whose presence implies it (when Cluster.capabilities is absent)
_INFERRED = {
    "service-proxy": ("proxy",),
    "cluster-dns": ("dns",),
    "kill": ("kill_container",),
    "node-lifecycle": ("stop_node", "start_node"),
    "impair": ("impair",),
    "partition": ("partition", "heal"),
    "capture": ("start_capture",),
}


def _unprivileged_port_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 1024


def host_capabilities() -> frozenset[str]:
    caps = set()
    if os.geteuid() == 0:
        caps |= {"root", "privileged-ports"}
    elif _unprivileged_port_start() <= 80:
        caps.add("privileged-ports")
    return frozenset(caps)


def cluster_capabilities(cluster: Any) -> frozenset[str]:
    """Everything ``cluster`` (a ``netemu.Cluster``) and this host offer."""
    declared = getattr(cluster, "capabilities", None)
    if callable(declared):
        declared = declared()
    if declared is not None:
        caps = set(declared)
    else:
        caps = {cap for cap, attrs in _INFERRED.items()
                if all(getattr(cluster, attr, None) is not None for attr in attrs)}
        config = getattr(cluster, "config", None)
        if getattr(config, "backend", None) == "netns":
            caps.add("netns")
    return frozenset(caps) | host_capabilities()


def missing(requires: Iterable[str], available: Iterable[str]) -> list[str]:
    have = set(available)
    return [r for r in requires if r not in have]


def explain(missing_caps: list[str], where: str = "this cluster") -> str:
    """``needs service-proxy (the service proxy, …), which this cluster lacks``."""
    parts = [f"{cap} ({KNOWN.get(cap, 'unknown capability')})" for cap in missing_caps]
    return "needs " + " and ".join(parts) + f", which {where} lacks"
