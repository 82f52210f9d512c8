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


def _io_error(what: str, exc: OSError) -> CNIError:
    return CNIError(ErrorCode.IO_FAILURE, f"host-local: {what}: {exc}")


class DiskStore:
    """The Store of one network under a data directory."""

    def __init__(self, network: str, data_dir: str = "") -> None:
        self.dir = Path(data_dir or DEFAULT_DATA_DIR) / network
        try:
            self.dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            self._lock_fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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
        path = self.dir / str(ip)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise _io_error(f"cannot reserve {ip}", exc) from exc
        try:
            with os.fdopen(fd, "w") as file:
                file.write(container_id.strip() + LINE_BREAK + ifname)
            (self.dir / f"{LAST_IP_PREFIX}{range_id}").write_text(str(ip))
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise _io_error(f"cannot reserve {ip}", exc) from exc
        return True

    def last_reserved_ip(self, range_id: str) -> IPAddress | None:
        try:
            text = (self.dir / f"{LAST_IP_PREFIX}{range_id}").read_text().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _io_error("cannot read the last reserved IP", exc) from exc
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            return None  # a damaged hint only costs round-robin once, as in the reference

    def allocations(self) -> list[Allocation]:
        found = []
        try:
            entries = list(os.scandir(self.dir))
        except OSError as exc:
            raise _io_error(f"cannot list {self.dir}", exc) from exc
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
        return found

    def get_by_id(self, container_id: str, ifname: str) -> list[IPAddress]:
        return [a.ip for a in self.allocations() if owned_by(a, container_id, ifname)]

    def release_by_id(self, container_id: str, ifname: str) -> list[IPAddress]:
        released = self.get_by_id(container_id, ifname)
        for ip in released:
            self.release(ip)
        return released

    def release(self, ip: IPAddress) -> None:
        try:
            (self.dir / str(ip)).unlink(missing_ok=True)
        except OSError as exc:
            raise _io_error(f"cannot release {ip}", exc) from exc

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> DiskStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_: type[Store] = DiskStore
