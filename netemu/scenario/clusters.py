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
ranges the caller sets explicitly are left alone, and when one of them overlaps a running
cluster the error names that option and a free range to use instead (``fixed_range_conflict``).
Starts are serialised through a lock on the state root, so two processes starting clusters at
the same moment cannot both take the same slot.
"""
from __future__ import annotations

import ipaddress
import re
import secrets
from pathlib import Path
from typing import Any, Callable

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


RANGE_LABELS = {"node_cidr": "nodes", "pod_cidr": "pods", "service_cidr": "services", "lb_cidr": "load balancers"}


def slot_of(config: Any) -> int | None:
    """The slot whose node range ``config`` uses (every slot has its own), or None for other ranges."""
    for slot in range(SLOTS):
        if slot_ranges(slot)["node_cidr"] == config.node_cidr:
            return slot
    return None


def held_ranges(config: Any) -> dict[str, str]:
    """The ranges ``config`` holds in the host's network, by option name (what must not overlap)."""
    held = set(config.ranges())
    return {key: getattr(config, key) for key in RANGE_KEYS if getattr(config, key) in held}


def _live_ranges(state_dir: Path) -> list[tuple[str, int, ipaddress.IPv4Network]]:
    """(cluster name, pid, range) for every range a running cluster under ``state_dir`` holds."""
    from netemu.state import list_clusters
    out = []
    for other in list_clusters(state_dir):
        if other.alive:
            for cidr in other.info.get("ranges", []):
                out.append((other.name, other.info.get("pid", 0), ipaddress.IPv4Network(cidr)))
    return out


def fixed_range_conflict(nodes: Any, options: dict[str, Any],
                         option_name: Callable[[str], str] = lambda key: key) -> RangeConflictError | None:
    """The error to raise when a range given in ``options`` overlaps one a running cluster holds:
    it names the option (``option_name(key)``, e.g. ``--pod-cidr``) and a free range for it."""
    from netemu.config import ClusterConfig
    fixed = {k: options[k] for k in RANGE_KEYS if options.get(k)}
    if not fixed:
        return None
    config = ClusterConfig(nodes=ClusterConfig.node_names(nodes), backend=options.get("backend", "loopback"),
                           **{k: v for k, v in options.items() if k in RANGE_KEYS or k == "state_dir"})
    config.validate()  # a malformed range is its own error
    live = _live_ranges(config.state_dir)
    mine = held_ranges(config)
    for key, cidr in mine.items():
        if key not in fixed:
            continue
        net = ipaddress.IPv4Network(cidr)
        for other, pid, theirs in live:
            if net.overlaps(theirs):
                free = _free_range(key, live, [ipaddress.IPv4Network(v) for k, v in mine.items() if k != key])
                hint = (f"; choose a free range, e.g. {option_name(key)} {free}" if free else
                        "; no default slot for it is free: stop a cluster or give another range")
                return RangeConflictError(f'{option_name(key)} {net} overlaps {theirs}, which the running cluster '
                                          f'"{other}" (pid {pid}) uses{hint}')
    return None


def _free_range(key: str, live: list[tuple[str, int, ipaddress.IPv4Network]],
                mine: list[ipaddress.IPv4Network]) -> str | None:
    for slot in range(SLOTS):
        candidate = ipaddress.IPv4Network(slot_ranges(slot)[key])
        if not any(candidate.overlaps(net) for _, _, net in live) and not any(candidate.overlaps(m) for m in mine):
            return str(candidate)
    return None


async def start_cluster(nodes: Any = 1, *, name: str, **options: Any) -> Any:
    """Start a ``netemu.Cluster`` in the first free address slot and return it (started).

    ``options`` are ``Cluster`` keyword arguments; range options given there win over the slot,
    and when one of them is taken the error says which and what is free.
    """
    from netemu.cluster import Cluster
    fixed = {k for k in RANGE_KEYS if options.get(k)}
    last: ClusterError | None = None
    for slot in range(SLOTS):  # ClusterState.create checks and claims ranges under a lock
        ranges = {k: v for k, v in slot_ranges(slot).items() if k not in fixed}
        try:
            cluster = Cluster(nodes, name=name, **{**options, **ranges})
            await cluster.start()
        except RangeConflictError as exc:
            precise = fixed_range_conflict(nodes, options) if fixed else None
            if precise is not None:
                raise precise from None
            if len(fixed) == len(RANGE_KEYS):
                raise
            last = exc
            continue
        return cluster
    raise ClusterError(f"no free address slot for another cluster ({SLOTS} running?): {last}")
