"""Network backends ("fabrics"): loopback (default) and netns."""
from __future__ import annotations

from .base import Fabric, NodeNetwork, PodNetwork


def routes_outside_loopback() -> list[str]:
    """Routes of this process's network namespace that leave through an interface other than lo."""
    found = []
    for path, iface_field in (("/proc/net/route", 0), ("/proc/net/ipv6_route", 9)):
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines[1:] if path.endswith("/route") else lines:
            fields = line.split()
            if len(fields) > iface_field and fields[iface_field] != "lo":
                found.append(f"{fields[iface_field]} ({path})")
    return found


def make_fabric(config, state, sandbox=None) -> Fabric:  # noqa: ANN001 - ClusterConfig, ClusterState, SandboxHelper
    """The backend's fabric; ``sandbox`` (netemu.sandbox) runs the loopback backend's CNI plugin."""
    from netemu.errors import ClusterError
    if config.backend == "loopback":
        from .loopback import LoopbackFabric
        return LoopbackFabric(config, state, sandbox)
    if config.backend == "netns":
        from .netns import NetnsFabric
        return NetnsFabric(config, state)
    raise ClusterError(f'backend "{config.backend}" is not available; use "loopback" or "netns"')


__all__ = ["Fabric", "NodeNetwork", "PodNetwork", "make_fabric", "routes_outside_loopback"]
