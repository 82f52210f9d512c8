"""Starting throw-away clusters that never collide: unique names and distinct address slots.

Two loopback clusters at once need distinct names and non-overlapping ranges (netemu refuses to
start a cluster whose ranges overlap a running one). Slot ``k`` (0-11) adds ``k`` to the second
octet of every default range::

    slot 0: nodes 127.10.0.0/16  pods 127.244.0.0/16  services 127.96.0.0/16  LB 127.200.0.0/16
    slot 1: nodes 127.11.0.0/16  pods 127.245.0.0/16  services 127.97.0.0/16  LB 127.201.0.0/16
    ...
    slot 11: nodes 127.21.0.0/16 pods 127.255.0.0/16  services 127.107.0.0/16 LB 127.211.0.0/16

so the first cluster gets the familiar addresses and up to twelve can run side by side.
``start_cluster`` tries the slots in order and moves on when a running cluster holds one;
ranges the caller sets explicitly are left alone (and then an overlap is an error). Starts are
serialised through a lock file in the state root, so two processes starting clusters at the
same moment cannot both take the same slot.
"""
from __future__ import annotations

import ipaddress
import re
import secrets
from typing import Any

from netemu.errors import ClusterError, RangeConflictError

SLOTS = 12
_DEFAULTS = {"node_cidr": "127.10.0.0/16", "pod_cidr": "127.244.0.0/16",
             "service_cidr": "127.96.0.0/16", "lb_cidr": "127.200.0.0/16"}
RANGE_KEYS = tuple(_DEFAULTS)


def slot_ranges(slot: int) -> dict[str, str]:
    if not 0 <= slot < SLOTS:
        raise ValueError(f"slot must be 0-{SLOTS - 1}")
    out = {}
    for key, cidr in _DEFAULTS.items():
        net = ipaddress.IPv4Network(cidr)
        out[key] = str(ipaddress.IPv4Network((int(net.network_address) + (slot << 16), 16)))
    return out


def unique_name(hint: str, limit: int = 32) -> str:
    """A DNS-1123 label made from ``hint`` plus a random suffix: ``nodeport-3fa2c1``."""
    slug = re.sub(r"[^a-z0-9]+", "-", hint.lower()).strip("-") or "scenario"
    slug = slug[: limit - 7].rstrip("-") or "s"
    if not slug[0].isalnum():
        slug = "s" + slug
    return f"{slug}-{secrets.token_hex(3)}"


def _overlap(exc: ClusterError) -> bool:
    return isinstance(exc, RangeConflictError)


async def start_cluster(nodes: Any = 1, *, name: str, **options: Any) -> Any:
    """Start a ``netemu.Cluster`` in the first free address slot and return it (started).

    ``options`` are ``Cluster`` keyword arguments; range options given there win over the slot.
    """
    from netemu.cluster import Cluster
    fixed = {k for k in RANGE_KEYS if options.get(k)}
    last: ClusterError | None = None
    for slot in range(SLOTS):  # ClusterState.create checks and claims ranges under a lock
        ranges = {k: v for k, v in slot_ranges(slot).items() if k not in fixed}
        try:
            cluster = Cluster(nodes, name=name, **{**options, **ranges})
            await cluster.start()
        except ClusterError as exc:
            if not _overlap(exc) or len(fixed) == len(RANGE_KEYS):
                raise
            last = exc
            continue
        return cluster
    raise ClusterError(f"no free address slot for another cluster ({SLOTS} running?): {last}")
