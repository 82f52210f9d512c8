"""The IPAM store interface host-local allocates through, and its in-memory fake.

Owns the contract between the pure allocator and wherever reservations live: one reservation
per IP, owned by ``(container ID, interface name)``, plus the last reserved IP per range set
(for round-robin). Callers hold ``locked()`` around every read-modify-write sequence. The disk
implementation is ``disk_store.DiskStore``; ``FakeStore`` is for unit tests.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator, NamedTuple, Protocol

from .types import IPAddress


class Allocation(NamedTuple):
    ip: IPAddress
    container_id: str
    ifname: str  # empty for reservations written by old host-local versions (ID only)


class Store(Protocol):
    def locked(self) -> contextlib.AbstractContextManager[None]:
        """Exclusive access for the duration of the ``with`` block."""
        ...

    def reserve(self, container_id: str, ifname: str, ip: IPAddress, range_id: str) -> bool:
        """Claims ``ip``; False if someone holds it. Records it as range ``range_id``'s last."""
        ...

    def last_reserved_ip(self, range_id: str) -> IPAddress | None: ...

    def get_by_id(self, container_id: str, ifname: str) -> list[IPAddress]: ...

    def release_by_id(self, container_id: str, ifname: str) -> list[IPAddress]:
        """Frees every IP the owner holds and returns them; nothing held is not an error."""
        ...

    def allocations(self) -> list[Allocation]: ...

    def release(self, ip: IPAddress) -> None:
        """Frees one IP whoever holds it; already free is not an error."""
        ...

    def close(self) -> None: ...


def owned_by(allocation: Allocation, container_id: str, ifname: str) -> bool:
    """Old host-local versions wrote the ID alone; such a file belongs to every ifname."""
    return allocation.container_id == container_id.strip() and allocation.ifname in ("", ifname)


class FakeStore:
    """An in-memory Store for allocator tests."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.reserved: dict[IPAddress, Allocation] = {}
        self.last_reserved: dict[str, IPAddress] = {}

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with self._lock:
            yield

    def reserve(self, container_id: str, ifname: str, ip: IPAddress, range_id: str) -> bool:
        if ip in self.reserved:
            return False
        self.reserved[ip] = Allocation(ip, container_id.strip(), ifname)
        self.last_reserved[range_id] = ip
        return True

    def last_reserved_ip(self, range_id: str) -> IPAddress | None:
        return self.last_reserved.get(range_id)

    def get_by_id(self, container_id: str, ifname: str) -> list[IPAddress]:
        return [a.ip for a in self.reserved.values() if owned_by(a, container_id, ifname)]

    def release_by_id(self, container_id: str, ifname: str) -> list[IPAddress]:
        released = self.get_by_id(container_id, ifname)
        for ip in released:
            del self.reserved[ip]
        return released

    def allocations(self) -> list[Allocation]:
        return list(self.reserved.values())

    def release(self, ip: IPAddress) -> None:
        self.reserved.pop(ip, None)

    def close(self) -> None:
        pass


_: type[Store] = FakeStore  # FakeStore satisfies the protocol (checked by type checkers)
