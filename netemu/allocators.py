"""ClusterIP and NodePort allocation, as kube-apiserver's service allocators do it.

Owns which service (the *owner*, ``namespace/name``) holds which cluster IP and which node port.
Pure and synchronous: no store, no sockets. Every claim is owned and idempotent: claiming what the
same owner already holds is a no-op, claiming what another owner holds is a ConflictError. Every
mutating call accepts a ``Transaction`` that records how to undo it, so a batch of claims can be
rolled back completely.

Strategy (imitating ``pkg/registry/core/service/ipallocator`` and ``portallocator``):
- Automatic allocation is *random*: a random start in the upper (dynamic) band, scanning forward
  with wrap-around; only when that band is full, the same in the lower (static) band. The lower band
  is kept for explicit requests, so a user asking for a fixed IP or port rarely collides.
  Pass ``rng=random.Random(seed)`` for reproducible choices.
- Cluster IPs: the network and (IPv4) broadcast addresses are never in the range. Static band size
  ``min(max(16, size/16), 256)`` addresses, 0 when the CIDR has at most 16 addresses
  (10.96.0.0/12 → 10.96.0.1-10.96.1.0 static).
- Node ports: static band size ``min(max(16, size/32), 128)``, 0 for ranges of at most 16 ports
  (30000-32767 → 30000-30085 static, 30086-32767 dynamic).
- Error texts are the allocators' own (``err.Error()`` in Go); the API server wraps them with the
  field path (see ``netemu.apiserver``).
"""
from __future__ import annotations

import ipaddress
import random
from typing import Callable, Mapping

from netemu.errors import ConflictError, InvalidError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Texts of kube-apiserver's allocator errors (ipallocator/interfaces.go, portallocator/allocator.go).
IP_ALREADY_ALLOCATED = "provided IP is already allocated"
PORT_ALREADY_ALLOCATED = "provided port is already allocated"
RANGE_FULL = "range is full"


class Transaction:
    """An undo list for a batch of claims and releases.

    ``rollback()`` undoes every recorded step in reverse order; ``commit()`` forgets them (or, for a
    child transaction, hands them to the parent so the parent can still roll them back). As a
    context manager it commits on success and rolls back on an exception.
    """

    def __init__(self, parent: Transaction | None = None) -> None:
        self._undo: list[Callable[[], None]] = []
        self._parent = parent

    def on_rollback(self, undo: Callable[[], None]) -> None:
        self._undo.append(undo)

    def child(self) -> Transaction:
        return Transaction(parent=self)

    def rollback(self) -> None:
        while self._undo:
            self._undo.pop()()

    def commit(self) -> None:
        if self._parent is not None:
            self._parent._undo.extend(self._undo)
        self._undo = []

    def __len__(self) -> int:
        return len(self._undo)

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.rollback()


class _Bands:
    """Offsets 0..size-1 split at ``static``: random scan of [static, size) first, then [0, static)."""

    def __init__(self, size: int, static: int, rng: random.Random) -> None:
        self.size = size
        self.static = static
        self._rng = rng

    def pick(self, taken: Callable[[int], bool], used: int) -> int | None:
        if used >= self.size:
            return None
        for lo, hi in ((self.static, self.size), (0, self.static)):
            span = hi - lo
            if span <= 0:
                continue
            start = self._rng.randrange(span)
            for i in range(span):
                offset = lo + (start + i) % span
                if not taken(offset):
                    return offset
        return None


def ip_static_band_size(network: IPNetwork) -> int:
    """Kubernetes' ``calculateRangeOffset`` for service CIDRs: min(max(16, size/16), 256)."""
    size = network.num_addresses
    if size <= 16:
        return 0
    return min(max(16, size // 16), 256)


def port_static_band_size(size: int) -> int:
    """Kubernetes' node-port static band: min(max(16, size/32), 128), 0 for at most 16 ports."""
    if size <= 16:
        return 0
    return min(max(16, size // 32), 128)


def parse_cidr(cidr: str | IPNetwork) -> IPNetwork:
    if isinstance(cidr, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return cidr
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError as exc:
        raise InvalidError(f"invalid service CIDR {cidr!r}: {exc}") from exc


class ClusterIPAllocator:
    """Cluster IPs of one service CIDR, each held by one owner (``namespace/name``).

    ``reserved`` maps owner → IP: that IP is kept for that owner (the cluster DNS IP for
    ``kube-system/kube-dns``); nobody else can claim it, and the owner gets it when it asks for
    any IP. Reservations survive ``release``; ``unreserve`` drops one.
    """

    def __init__(self, cidr: str | IPNetwork, reserved: Mapping[str, str] | None = None, *,
                 rng: random.Random | None = None) -> None:
        self.network = parse_cidr(cidr)
        self._base = int(self.network.network_address) + 1  # offset 0: the first usable address
        size = self.network.num_addresses - 1  # never the network address
        if self.network.version == 4:
            size -= 1  # never the broadcast address
        else:
            size = min(size, 65536)  # Kubernetes caps IPv6 ranges the same way
        self._bands = _Bands(max(size, 0), ip_static_band_size(self.network), rng or random.Random())
        self._owner_by_ip: dict[str, str] = {}
        self._ips_by_owner: dict[str, dict[str, None]] = {}  # the inverse, so ip_of is O(1)
        self._reserved: dict[str, str] = {}  # owner -> ip
        for owner, ip in (reserved or {}).items():
            self.reserve(owner, ip)

    # ----------------------------------------------------------------- queries

    @property
    def size(self) -> int:
        """How many addresses can be handed out."""
        return self._bands.size

    @property
    def static_band(self) -> tuple[str, str] | None:
        """First and last address of the lower band kept for explicit requests."""
        if not self._bands.static:
            return None
        return self._ip(0), self._ip(self._bands.static - 1)

    @property
    def used(self) -> int:
        return len(self._owner_by_ip)

    @property
    def free(self) -> int:
        return self.size - self.used

    @property
    def family(self) -> str:
        return "IPv4" if self.network.version == 4 else "IPv6"

    def nth(self, n: int) -> str:
        """The n-th usable address (1 → .1, the ``kubernetes`` service; 10 → .10, cluster DNS)."""
        if not 1 <= n <= self.size:
            raise InvalidError(f"address #{n} is outside {self.network}")
        return self._ip(n - 1)

    def contains(self, ip: str) -> bool:
        return self._offset(ip) is not None

    def owner_of(self, ip: str) -> str | None:
        return self._owner_by_ip.get(self._canonical(ip) or ip)

    def ip_of(self, owner: str) -> str | None:
        """The IP ``owner`` holds (or has reserved), if any."""
        held = self._ips_by_owner.get(owner)
        if held:
            return next(iter(held))
        return self._reserved.get(owner)

    def snapshot(self) -> dict[str, object]:
        """A comparable copy of the whole state (claims and reservations)."""
        return {"allocated": dict(self._owner_by_ip), "reserved": dict(self._reserved)}

    # ----------------------------------------------------------------- claims

    def allocate(self, owner: str, ip: str | None = None, txn: Transaction | None = None) -> str:
        """Claim ``ip`` for ``owner`` (or any free IP when None); returns the IP held.

        Idempotent per owner: an owner that already holds an IP gets it back when asking for any
        IP. Raises InvalidError (outside the range) or ConflictError (held by someone else).
        """
        if ip is None or ip == "":
            held = self.ip_of(owner)
            if held is not None and self._owner_by_ip.get(held, owner) == owner:
                return self._claim(held, owner, txn)
            offset = self._bands.pick(self._is_taken, self.used)
            if offset is None:
                raise ConflictError(RANGE_FULL)
            return self._claim(self._ip(offset), owner, txn)
        canonical = self._canonical(ip)
        if canonical is None or self._offset(canonical) is None:
            raise InvalidError(
                f"the provided IP ({ip}) is not in the valid range. The range of valid IPs is {self.network}")
        holder = self._owner_by_ip.get(canonical)
        if holder is not None and holder != owner:
            raise ConflictError(IP_ALREADY_ALLOCATED)
        reserved_for = self._reserved_owner(canonical)
        if reserved_for is not None and reserved_for != owner:
            raise ConflictError(IP_ALREADY_ALLOCATED)
        return self._claim(canonical, owner, txn)

    def release(self, ip: str, owner: str | None = None, txn: Transaction | None = None) -> None:
        """Free ``ip``; a no-op when it is not held (or, with ``owner``, held by someone else)."""
        canonical = self._canonical(ip) or ip
        holder = self._owner_by_ip.get(canonical)
        if holder is None or (owner is not None and holder != owner):
            return
        self._drop_owner(canonical)
        if txn is not None:
            txn.on_rollback(lambda: self._set_owner(canonical, holder))

    def reserve(self, owner: str, ip: str, txn: Transaction | None = None) -> str:
        """Keep ``ip`` for ``owner`` without claiming it yet (refused when another owner has it)."""
        canonical = self._canonical(ip)
        if canonical is None or self._offset(canonical) is None:
            raise InvalidError(
                f"the provided IP ({ip}) is not in the valid range. The range of valid IPs is {self.network}")
        holder = self._owner_by_ip.get(canonical)
        other = self._reserved_owner(canonical)
        if (holder is not None and holder != owner) or (other is not None and other != owner):
            raise ConflictError(IP_ALREADY_ALLOCATED)
        previous = self._reserved.get(owner)
        self._reserved[owner] = canonical
        if txn is not None:
            txn.on_rollback(lambda: self._restore_reservation(owner, previous))
        return canonical

    def unreserve(self, owner: str, txn: Transaction | None = None) -> None:
        previous = self._reserved.pop(owner, None)
        if txn is not None and previous is not None:
            txn.on_rollback(lambda: self._restore_reservation(owner, previous))

    # ----------------------------------------------------------------- internals

    def _restore_reservation(self, owner: str, ip: str | None) -> None:
        if ip is None:
            self._reserved.pop(owner, None)
        else:
            self._reserved[owner] = ip

    def _claim(self, ip: str, owner: str, txn: Transaction | None) -> str:
        if self._owner_by_ip.get(ip) == owner:
            return ip  # already ours: nothing to undo either
        self._set_owner(ip, owner)
        if txn is not None:
            txn.on_rollback(lambda: self._drop_owner(ip))
        return ip

    def _set_owner(self, ip: str, owner: str) -> None:
        self._drop_owner(ip)
        self._owner_by_ip[ip] = owner
        self._ips_by_owner.setdefault(owner, {})[ip] = None

    def _drop_owner(self, ip: str) -> None:
        owner = self._owner_by_ip.pop(ip, None)
        held = self._ips_by_owner.get(owner) if owner is not None else None
        if held is not None:
            held.pop(ip, None)
            if not held:
                del self._ips_by_owner[owner]  # type: ignore[arg-type]

    def _reserved_owner(self, ip: str) -> str | None:
        for owner, reserved_ip in self._reserved.items():
            if reserved_ip == ip:
                return owner
        return None

    def _is_taken(self, offset: int) -> bool:
        ip = self._ip(offset)
        return ip in self._owner_by_ip or self._reserved_owner(ip) is not None

    def _ip(self, offset: int) -> str:
        return str(ipaddress.ip_address(self._base + offset))

    def _canonical(self, ip: str) -> str | None:
        try:
            return str(ipaddress.ip_address(ip))
        except ValueError:
            return None

    def _offset(self, ip: str) -> int | None:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        if addr.version != self.network.version or addr not in self.network:
            return None
        offset = int(addr) - self._base
        return offset if 0 <= offset < self.size else None


def parse_port_range(spec: str) -> tuple[int, int]:
    """``"30000-32767"``, ``"30000+2767"`` or ``"30000"`` → (first, last), as Kubernetes' PortRange."""
    text = spec.strip()
    try:
        if "-" in text:
            first_s, last_s = text.split("-", 1)
            first, last = int(first_s), int(last_s)
        elif "+" in text:
            first_s, extra_s = text.split("+", 1)
            first = int(first_s)
            last = first + int(extra_s)
        else:
            first = last = int(text)
    except ValueError as exc:
        raise InvalidError(f"invalid port range {spec!r}: expected FIRST-LAST") from exc
    if not (0 < first <= last <= 65535):
        raise InvalidError(f"invalid port range {spec!r}: ports must be 1-65535, first <= last")
    return first, last


class NodePortAllocator:
    """Node ports of one range, each held by one owner (``namespace/name``).

    A port is held once per owner whatever the protocol: a service may expose the same node port
    for TCP and UDP (its DNS-style ports share it), another service may not.
    """

    def __init__(self, port_range: str = "30000-32767", *, rng: random.Random | None = None) -> None:
        self.first, self.last = parse_port_range(port_range)
        size = self.last - self.first + 1
        self._bands = _Bands(size, port_static_band_size(size), rng or random.Random())
        self._owner_by_port: dict[int, str] = {}

    @property
    def range_text(self) -> str:
        """The range as Kubernetes prints it: ``30000-32767``."""
        return f"{self.first}-{self.last}"

    @property
    def size(self) -> int:
        return self._bands.size

    @property
    def static_band(self) -> tuple[int, int] | None:
        if not self._bands.static:
            return None
        return self.first, self.first + self._bands.static - 1

    @property
    def used(self) -> int:
        return len(self._owner_by_port)

    @property
    def free(self) -> int:
        return self.size - self.used

    def contains(self, port: int) -> bool:
        return self.first <= port <= self.last

    def owner_of(self, port: int) -> str | None:
        return self._owner_by_port.get(port)

    def ports_of(self, owner: str) -> list[int]:
        return sorted(p for p, who in self._owner_by_port.items() if who == owner)

    def snapshot(self) -> dict[int, str]:
        return dict(self._owner_by_port)

    def allocate(self, owner: str, port: int, txn: Transaction | None = None) -> int:
        """Claim ``port`` for ``owner``; a no-op when ``owner`` holds it already."""
        if not self.contains(port):
            raise InvalidError(
                f"provided port is not in the valid range. The range of valid ports is {self.range_text}")
        holder = self._owner_by_port.get(port)
        if holder == owner:
            return port
        if holder is not None:
            raise ConflictError(PORT_ALREADY_ALLOCATED)
        return self._claim(port, owner, txn)

    def allocate_next(self, owner: str, txn: Transaction | None = None) -> int:
        """Claim a free port for ``owner``: dynamic (upper) band first, then the static band."""
        offset = self._bands.pick(lambda o: self.first + o in self._owner_by_port, self.used)
        if offset is None:
            raise ConflictError(RANGE_FULL)
        return self._claim(self.first + offset, owner, txn)

    def release(self, port: int, owner: str | None = None, txn: Transaction | None = None) -> None:
        """Free ``port``; a no-op when it is not held (or, with ``owner``, held by someone else)."""
        holder = self._owner_by_port.get(port)
        if holder is None or (owner is not None and holder != owner):
            return
        del self._owner_by_port[port]
        if txn is not None:
            txn.on_rollback(lambda: self._owner_by_port.__setitem__(port, holder))

    def _claim(self, port: int, owner: str, txn: Transaction | None) -> int:
        self._owner_by_port[port] = owner
        if txn is not None:
            txn.on_rollback(lambda: self._owner_by_port.pop(port, None))
        return port
