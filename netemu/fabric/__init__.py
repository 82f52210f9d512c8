"""Network backends ("fabrics"): loopback (default) and netns."""
from __future__ import annotations

from .base import Fabric, NodeNetwork, PodNetwork


def make_fabric(config, state) -> Fabric:  # noqa: ANN001 - config.ClusterConfig, state.ClusterState
    if config.backend == "loopback":
        from .loopback import LoopbackFabric
        return LoopbackFabric(config, state)
    from netemu.errors import ClusterError
    raise ClusterError(f'backend "{config.backend}" is not available yet; use "loopback"')


__all__ = ["Fabric", "NodeNetwork", "PodNetwork", "make_fabric"]
