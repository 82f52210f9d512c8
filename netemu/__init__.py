"""netemu: a packet-level Kubernetes-networking emulator with real sockets.

The public Python API is ``netemu.Cluster``; errors derive from ``netemu.NetemuError``.
"""
from __future__ import annotations

from typing import Any

from netemu.errors import ManifestError, ManifestErrors, NetemuError

__version__ = "0.1.0"
__all__ = ["Cluster", "NetemuError", "ManifestError", "ManifestErrors", "__version__"]


def __getattr__(name: str) -> Any:  # keep `import netemu` cheap: Cluster pulls in everything
    if name == "Cluster":
        from netemu.cluster import Cluster
        return Cluster
    raise AttributeError(name)
