"""host-local's on-disk reservation store, compatible with the reference plugin's layout.

Owns ``<dataDir>/<network>/``: one file per reserved IP (named by the IP, holding
``<containerID>\\r\\n<ifname>`` as the reference writes it), ``last_reserved_ip.<range set
index>`` holding the last IP handed out, and a ``lock`` file whose ``flock`` serialises every
process (and every thread: each DiskStore opens its own file description) working on the network.
OSErrors become ``CNIError`` code 5.
"""
from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
from pathlib import Path
from typing import Iterator

from netemu.errors import CNIError

from .store import Allocation, Store, owned_by
from .types import ErrorCode, IPAddress

DEFAULT_DATA_DIR = "/var/lib/cni/networks"
LAST_IP_PREFIX = "last_reserved_ip."
LOCK_FILE = "lock"
LINE_BREAK = "\r\n"  # what the reference host-local writes between ID and ifname


# Reservations read back from disk, per network directory: (directory mtime, {file name: Allocation}).
# Every writer holds the network's flock, and this process updates the entry for its own
# writes, so a directory whose mtime is unchanged needs no rescan: ADD and DEL stay O(1) in the
# number of reservations instead of reading every file each time. (A foreign write landing in the
# same coarse timestamp tick as our last write could hide until the next change; reservations are
# still never handed out twice, since reserve() creates files with O_EXCL.)
# Each scan also indexes its reservations by container ID, so that finding what a container
# holds (every ADD asks) does not look at every reservation of the network.
_SCANS: dict[Path, _Scan] = {}


class _Scan:
    __slots__ = ("mtime", "entries", "by_owner")

    def __init__(self, mtime: int, allocations: list[Allocation]) -> None:
        self.mtime = mtime
        self.entries: dict[str, Allocation] = {}
        self.by_owner: dict[str, dict[str, Allocation]] = {}  # container ID → file name → allocation
        for a in allocations:
            self.note(str(a.ip), a)

    def note(self, name: str, allocation: Allocation | None) -> None:
        old = self.entries.pop(name, None)
        if old is not None:
            held = self.by_owner.get(old.container_id, {})
            held.pop(name, None)
            if not held:
                self.by_owner.pop(old.container_id, None)
        if allocation is not None:
            self.entries[name] = allocation
            self.by_owner.setdefault(allocation.container_id, {})[name] = allocation


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _io_error(what: str, exc: OSError) -> CNIError:
    return CNIError(ErrorCode.IO_FAILURE, f"host-local: {what}: {exc}")


class DiskStore:
    """The Store of one network under a data directory."""

    def __init__(self, network: str, data_dir: str = "") -> None:
        self.dir = Path(data_dir or DEFAULT_DATA_DIR) / network
        # Plain string paths and os calls below: a store is opened for every ADD and DEL, and
        # pathlib's objects and buffered files cost more than the few syscalls they wrap.
        self._prefix = os.path.join(self.dir, "")
        lock = self._prefix + LOCK_FILE
        try:
            try:
                self._lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:  # the first use of this network: make its directory
                os.makedirs(self.dir, mode=0o755, exist_ok=True)
                self._lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise _io_error(f"cannot open data dir {self.dir}", exc) from exc

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise _io_error(f"cannot lock {self.dir / LOCK_FILE}", exc) from exc
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def reserve(self, container_id: str, ifname: str, ip: IPAddress, range_id: str) -> bool:
        path = self._prefix + str(ip)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise _io_error(f"cannot reserve {ip}", exc) from exc
        try:
            try:
                _write_all(fd, (container_id.strip() + LINE_BREAK + ifname).encode())
            finally:
                os.close(fd)
            last = os.open(self._prefix + LAST_IP_PREFIX + range_id,
                           os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                _write_all(last, str(ip).encode())
            finally:
                os.close(last)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise _io_error(f"cannot reserve {ip}", exc) from exc
        self._note(str(ip), Allocation(ip, container_id.strip(), ifname))
        return True

    def _note(self, name: str, allocation: Allocation | None) -> None:
        """Keep the scan cache in step with a write of our own (made under the lock)."""
        scan = _SCANS.get(self.dir)
        if scan is None:
            return
        scan.note(name, allocation)  # in place: allocations() hands out copies
        try:
            scan.mtime = os.stat(self.dir).st_mtime_ns
        except OSError:
            _SCANS.pop(self.dir, None)

    def last_reserved_ip(self, range_id: str) -> IPAddress | None:
        try:
            fd = os.open(self._prefix + LAST_IP_PREFIX + range_id, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _io_error("cannot read the last reserved IP", exc) from exc
        try:
            data = b"".join(iter(lambda: os.read(fd, 4096), b""))
        except OSError as exc:
            raise _io_error("cannot read the last reserved IP", exc) from exc
        finally:
            os.close(fd)
        try:
            return ipaddress.ip_address(data.decode().strip())
        except (ValueError, UnicodeDecodeError):
            return None  # a damaged hint only costs round-robin once, as in the reference

    def allocations(self) -> list[Allocation]:
        return list(self._scan().entries.values())

    def _scan(self) -> _Scan:
        try:
            mtime = os.stat(self.dir).st_mtime_ns
            scan = _SCANS.get(self.dir)
            if scan is not None and scan.mtime == mtime:
                return scan
            entries = list(os.scandir(self.dir))
        except OSError as exc:
            raise _io_error(f"cannot list {self.dir}", exc) from exc
        found = []
        for entry in entries:
            try:
                ip = ipaddress.ip_address(entry.name)
            except ValueError:
                continue  # lock, last_reserved_ip.N, anything else
            try:
                lines = Path(entry.path).read_text().strip().splitlines()
            except OSError:
                continue  # released meanwhile by a holder of another lock? skip, like the reference
            container_id = lines[0].strip() if lines else ""
            ifname = lines[1].strip() if len(lines) > 1 else ""
            found.append(Allocation(ip, container_id, ifname))
        scan = _SCANS[self.dir] = _Scan(mtime, found)
        return scan

    def get_by_id(self, container_id: str, ifname: str) -> list[IPAddress]:
        held = self._scan().by_owner.get(container_id.strip(), {})
        return [a.ip for a in held.values() if owned_by(a, container_id, ifname)]

    def release_by_id(self, container_id: str, ifname: str) -> list[IPAddress]:
        released = self.get_by_id(container_id, ifname)
        for ip in released:
            self.release(ip)
        return released

    def release(self, ip: IPAddress) -> None:
        try:
            os.unlink(self._prefix + str(ip))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _io_error(f"cannot release {ip}", exc) from exc
        self._note(str(ip), None)

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> DiskStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_: type[Store] = DiskStore
