"""Cluster configuration: node names, backend, address plan, timings.

One frozen dataclass with the defaults of design.md's address plan; every range is configurable.
Nothing here does I/O.
"""
from __future__ import annotations

import ipaddress
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from netemu.errors import ClusterError

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DEFAULT_NAME = "netemu"
DEFAULT_MAX_PODS = 10_000
DEFAULT_MAX_OBJECTS = 100_000
DEFAULT_MAX_REQUEST_BYTES = 3 * 1024 * 1024
NAME_MAX = 32
PROXY_MODES = ("userspace", "nftables")
MAX_PROXY_WORKERS = 16  # processes accepting service connections on the loopback backend
AUTO = "auto"          # proxy_workers: one process, more while the proxy is busy (netemu.proxy.autoscale)


def check_cluster_name(name: str, what: str = "cluster name") -> str:
    """``name`` when it can name a cluster (it becomes a directory and socket name), else a ClusterError."""
    if not NAME_RE.match(name) or len(name) > NAME_MAX:
        raise ClusterError(f"{what} {name!r}: must be a DNS-1123 label of at most {NAME_MAX} characters "
                           "(lowercase letters, digits and '-', starting and ending with a letter or digit)")
    return name


def state_root() -> Path:
    """Where clusters keep their state: $NETEMU_STATE_DIR, else a runtime (memory) file system —
    $XDG_RUNTIME_DIR/netemu or /dev/shm/netemu-<uid> — else /tmp/netemu-<uid>.

    Run-time state belongs in memory: creating a file costs microseconds on tmpfs and can cost a
    millisecond on a journalled disk, and a cluster writes a few per pod. $XDG_RUNTIME_DIR counts
    only when it is ours and closed to others (after ``sudo`` it may still name the caller's).
    The path is only chosen here; netemu.statedir verifies it before any use.
    """
    env = os.environ.get("NETEMU_STATE_DIR")
    if env:
        return Path(env)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and _is_own_private_dir(runtime):
        return Path(runtime) / "netemu"
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return Path(f"/dev/shm/netemu-{os.getuid()}")
    return Path(f"/tmp/netemu-{os.getuid()}")


def _is_own_private_dir(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


_NETNS_DEFAULTS = (("pod_cidr", "10.244.0.0/16"), ("service_cidr", "10.96.0.0/12"))


def _in_loopback(cidr: str) -> bool:
    try:
        return ipaddress.ip_network(cidr, strict=False).subnet_of(ipaddress.ip_network("127.0.0.0/8"))
    except (ValueError, TypeError):
        return False  # validation below names the problem


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    name: str = DEFAULT_NAME
    nodes: tuple[str, ...] = ("node-1",)
    backend: str = "loopback"
    proxy_mode: str = "userspace"             # or "nftables" (netns only): Services as DNAT in node kernels
    proxy_workers: int | str = AUTO           # loopback: processes accepting TCP service connections
                                              # (SO_REUSEPORT): N, or "auto" (1, more under load)
    node_cidr: str = "127.10.0.0/16"          # node N gets .N
    pod_cidr: str = "127.244.0.0/16"          # node N gets the /24 number N
    node_cidr_mask_size: int = 24             # each node's share of pod_cidr (kube-controller-manager's
                                              # --node-cidr-mask-size); loopback only, netns nodes get a /24
    service_cidr: str = "127.96.0.0/16"       # kubernetes .1, kube-dns .10
    lb_cidr: str = "127.200.0.0/16"
    node_port_range: str = "30000-32767"
    cluster_domain: str = "cluster.local"
    dns_ttl: int = 5
    dns_upstreams: tuple[str, ...] = ()       # where names outside the cluster go; none: REFUSED
    cni_bin_dir: str = ""                     # netns: run the CNI plugins "bridge" and "host-local" found
                                              # here (e.g. /usr/lib/cni) instead of netemu's in-process ones
    restart_backoff: float = 10.0             # kubelet's initial CrashLoopBackOff delay
    restart_backoff_max: float = 300.0
    job_backoff: float = 10.0                 # Job controller's first back-off after a failed pod (doubling, max 6 min)
    lb_delay: float = 0.5                     # LoadBalancer provisioning is asynchronous (a cloud
                                              # takes seconds): long enough to see <pending>
    state_dir: Path = field(default_factory=state_root)
    # Caps that refuse work, with a message, before memory is at risk (see README "Limits"):
    max_pods: int = DEFAULT_MAX_PODS          # pods the workloads and bare pods may ask for, all together
    max_objects: int = DEFAULT_MAX_OBJECTS    # API objects of every kind the cluster holds
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES  # one apply's manifests (kube-apiserver: 3 MiB)

    def __post_init__(self) -> None:
        """On the netns backend pods and services get real-looking ranges (10.244.0.0/16,
        10.96.0.0/12) unless given outside 127/8 (a pod's 127.x is its own loopback); node and
        load-balancer addresses stay in 127/8, where the host reaches them."""
        if self.backend == "netns":
            for attr, netns_default in _NETNS_DEFAULTS:
                if _in_loopback(getattr(self, attr)):
                    object.__setattr__(self, attr, netns_default)

    @staticmethod
    def node_names(nodes: int | list[str] | tuple[str, ...]) -> tuple[str, ...]:
        if isinstance(nodes, int):
            if not 1 <= nodes <= 250:
                raise ClusterError(f"nodes: must be 1-250, got {nodes}")
            return tuple(f"node-{i}" for i in range(1, nodes + 1))
        names = tuple(nodes)
        bad = [n for n in names if not NAME_RE.match(n) or len(n) > 63]
        if not names or bad or len(set(names)) != len(names):
            raise ClusterError(f"nodes: need distinct DNS-1123 labels, got {list(names)}")
        return names

    def validate(self) -> None:
        check_cluster_name(self.name)
        if self.backend not in ("loopback", "netns"):
            raise ClusterError(f'backend {self.backend!r}: supported values: "loopback", "netns"')
        if self.proxy_mode not in PROXY_MODES:
            raise ClusterError(f"proxyMode {self.proxy_mode!r}: supported values: "
                               + ", ".join(f'"{m}"' for m in PROXY_MODES))
        if self.proxy_mode == "nftables" and self.backend != "netns":
            raise ClusterError(f"proxyMode nftables: needs the netns backend (the {self.backend} backend's "
                               "service proxy runs in userspace only)")
        workers = self.proxy_workers
        if workers != AUTO and (not isinstance(workers, int) or isinstance(workers, bool)
                                or not 1 <= workers <= MAX_PROXY_WORKERS):
            raise ClusterError(f'proxyWorkers {workers!r}: must be 1-{MAX_PROXY_WORKERS} or "auto"')
        if workers != AUTO and workers > 1 and self.backend != "loopback":
            raise ClusterError(f"proxyWorkers {self.proxy_workers}: needs the loopback backend (the {self.backend} "
                               "backend's proxy runs in one process)")
        if self.cni_bin_dir:
            if self.backend != "netns":
                raise ClusterError("cni_bin_dir: CNI plugin executables wire pods on the netns backend only")
            missing = [p for p in ("bridge", "host-local") if not os.access(os.path.join(self.cni_bin_dir, p), os.X_OK)]
            if missing:
                raise ClusterError(f"cni_bin_dir {self.cni_bin_dir}: no executable {' or '.join(missing)} there "
                                   "(Debian: containernetworking-plugins, in /usr/lib/cni)")
        nets = {}
        for attr in ("node_cidr", "pod_cidr", "service_cidr", "lb_cidr"):
            try:
                nets[attr] = ipaddress.IPv4Network(getattr(self, attr))
            except ValueError as exc:
                raise ClusterError(f"{attr}: {exc}") from exc
        if self.backend == "loopback":
            loop = ipaddress.IPv4Network("127.0.0.0/8")
            for attr, net in nets.items():
                if not net.subnet_of(loop):
                    raise ClusterError(f"{attr} {net}: the loopback backend needs ranges inside 127.0.0.0/8")
        names = list(nets)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if nets[a].overlaps(nets[b]):
                    raise ClusterError(f"{a} {nets[a]} overlaps {b} {nets[b]}")
        if nets["pod_cidr"].prefixlen > 16:
            raise ClusterError(f"pod_cidr {nets['pod_cidr']}: needs a /16 or larger (one /24 per node)")
        if len(self.nodes) > 250:
            raise ClusterError("at most 250 nodes")
        self._validate_node_cidr_mask_size(nets["pod_cidr"])
        for cap in ("max_pods", "max_objects", "max_request_bytes"):
            value = getattr(self, cap)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ClusterError(f"{cap}: must be a positive integer, got {value!r}")
        lo, _, hi = self.node_port_range.partition("-")
        if not (lo.isdigit() and hi.isdigit() and 1 <= int(lo) <= int(hi) <= 65535):
            raise ClusterError(f"node_port_range {self.node_port_range!r}: expected LOW-HIGH")

    def node_ip(self, index: int) -> str:
        """Address of the node at 0-based ``index``."""
        return str(ipaddress.IPv4Network(self.node_cidr).network_address + index + 1)

    def _validate_node_cidr_mask_size(self, pods: ipaddress.IPv4Network) -> None:
        mask = self.node_cidr_mask_size
        if isinstance(mask, bool) or not isinstance(mask, int) or not pods.prefixlen <= mask <= 30:
            raise ClusterError(f"node_cidr_mask_size: must be an integer from {pods.prefixlen} to 30, got {mask!r}")
        if self.backend == "netns" and mask != 24:
            raise ClusterError("node_cidr_mask_size: the netns backend gives each node a /24")
        if 2 ** (mask - pods.prefixlen) < len(self.nodes) + 1:
            raise ClusterError(f"node_cidr_mask_size {mask}: pod_cidr {pods} holds {2 ** (mask - pods.prefixlen) - 1} "
                               f"node ranges of that size, not {len(self.nodes)}")

    def node_pod_cidr(self, index: int) -> str:
        base = ipaddress.IPv4Network(self.pod_cidr).network_address
        block = 2 ** (32 - self.node_cidr_mask_size)
        return f"{base + (index + 1) * block}/{self.node_cidr_mask_size}"

    def service_ip(self, offset: int) -> str:
        return str(ipaddress.IPv4Network(self.service_cidr).network_address + offset)

    @property
    def dns_ip(self) -> str:
        return self.service_ip(10)

    @property
    def cluster_dir(self) -> Path:
        return self.state_dir / self.name

    def ranges(self) -> list[str]:
        """The ranges this cluster holds in the host's network, which no other cluster may
        overlap (on netns pods and services live inside the cluster's own namespaces)."""
        if self.backend == "netns":
            return [self.node_cidr, self.lb_cidr]
        return [self.node_cidr, self.pod_cidr, self.service_cidr, self.lb_cidr]
