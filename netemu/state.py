"""A cluster's state directory and the ledger of every OS object it made.

``<state root>/<cluster>/`` holds ``state.json`` (owner pid and its start time, backend, address
ranges), the control socket, container logs, CNI data and ``ledger``: one line per OS object the
cluster made (``process PID STARTTIME SID``, written by each container's child before it runs
the program; ``netns NAME`` before the namespace exists …). Clean shutdown removes the directory;
after a crash, ``gc`` removes what is listed there. No line is trusted on its own: a process is
signalled only when it is proven the cluster's — by the secret token ``state.json`` holds and
every pod process carries in its environment, or by its session (netemu.reaper) — so neither a
recycled pid nor a forged line can hit a stranger. Nothing is ever found by name pattern.
"""
from __future__ import annotations

import errno
import fcntl
import ipaddress
import json
import logging
import os
import secrets
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from netemu import reaper, statedir
from netemu.childproc import process_line
from netemu.config import ClusterConfig
from netemu.errors import ClusterError, RangeConflictError
from netemu.treeremoval import remove_tree

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
LEDGER = "ledger"


def proc_start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, or None when it is not running (a
    zombie has finished; only its exit status waits to be read)."""
    st = reaper.read_stat(pid)
    return None if st is None or st.zombie else st.start_time


def is_alive(pid: int, start_time: int | None) -> bool:
    return start_time is not None and proc_start_time(pid) == start_time


@dataclass
class RunningCluster:
    name: str
    directory: Path
    info: dict

    @property
    def alive(self) -> bool:
        return is_alive(self.info.get("pid", -1), self.info.get("start_time"))


def list_clusters(root: Path) -> list[RunningCluster]:
    """The clusters under ``root`` that have a state file. The root, each cluster directory and
    each state file are verified first (netemu.statedir): one another user could have planted or
    redirected raises UnsafeStateError rather than being skipped or used."""
    out: list[RunningCluster] = []
    if not statedir.check_root(root):
        return out
    for d in sorted(root.iterdir()):
        if not d.is_symlink() and not d.is_dir():
            continue  # the logs of `up --detach`
        if not statedir.check_cluster_dir(d):
            continue  # removed meanwhile
        data = statedir.read_file(d, STATE_FILE)
        try:
            info = json.loads(data) if data is not None else None
        except ValueError:
            continue
        if isinstance(info, dict):
            out.append(RunningCluster(d.name, d, info))
    return out


class ClusterState:
    """The state directory of one running cluster, owned by this process."""

    def __init__(self, config: ClusterConfig):
        self.config = config
        self.directory = config.cluster_dir
        self._ledger = None
        self.token = secrets.token_hex(16)  # in state.json and every pod process's environment

    def path(self, *parts: str) -> Path:
        return self.directory.joinpath(*parts)

    @property
    def process_env(self) -> dict[str, str]:
        """Variables every process of a pod gets: the token that proves it is this cluster's."""
        return {reaper.TOKEN_VARIABLE: self.token}

    def create(self, *, collect_garbage: Callable[[Path], list[str]] | None = None) -> None:
        """Claim the directory: refuse a live cluster of that name or overlapping ranges."""
        root = statedir.ensure_root(self.config.state_dir)
        # One start at a time per state root: checking for overlapping ranges and claiming ours
        # must not interleave with another process doing the same.
        # The lock is on the directory itself, so it leaves no file behind.
        fd = statedir.open_dir(root, "state directory")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._claim(root, collect_garbage)
        finally:
            os.close(fd)

    def _claim(self, root: Path, collect_garbage: Callable[[Path], list[str]] | None) -> None:
        for other in list_clusters(root):
            if not other.alive:
                (collect_garbage or gc_cluster)(other.directory)
                continue
            if other.name == self.config.name:
                raise ClusterError(
                    f'cluster "{other.name}" is already running (pid {other.info["pid"]}); '
                    f"stop it with `netemu down --name {other.name}` or choose another --name")
            mine = [ipaddress.IPv4Network(r) for r in self.config.ranges()]
            for r in other.info.get("ranges", []):
                theirs = ipaddress.IPv4Network(r)
                for m in mine:
                    if m.overlaps(theirs):
                        raise RangeConflictError(
                            f'cluster "{other.name}" (pid {other.info["pid"]}) already uses {theirs}, which '
                            f"overlaps {m}; give this cluster distinct ranges")
        if self.config.backend == "loopback":
            ip = self.config.service_ip(1)  # the `kubernetes` Service, which every cluster serves
            if _listened_on(ip, 443):
                raise RangeConflictError(
                    f"{self.config.service_cidr} is in use on this machine: a cluster of another state "
                    f"directory or user listens on {ip}:443; give this cluster distinct ranges")
        if statedir.check_cluster_dir(self.directory):  # a dead start's leftovers, without state.json
            shutil.rmtree(self.directory, ignore_errors=True)
        statedir.make_cluster_dir(self.directory)
        (self.directory / "logs").mkdir()
        pid = os.getpid()
        info = {
            "name": self.config.name, "pid": pid, "start_time": proc_start_time(pid),
            "backend": self.config.backend, "ranges": self.config.ranges(),
            "nodes": list(self.config.nodes), "dns_ip": self.config.dns_ip,
            "created": time.time(), "token": self.token,
        }
        statedir.write_file(self.directory, STATE_FILE, json.dumps(info, indent=1).encode())
        self._ledger = os.fdopen(os.open(self.directory / LEDGER, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
                                         | os.O_CLOEXEC, 0o600), "a", buffering=1)

    def update_info(self, **values: object) -> None:
        data = statedir.read_file(self.directory, STATE_FILE)
        if data is None:
            raise ClusterError(f"cluster directory {self.directory} has no {STATE_FILE}: the cluster was removed")
        info = json.loads(data)
        info.update(values)
        statedir.write_file(self.directory, STATE_FILE, json.dumps(info, indent=1).encode())

    def record(self, kind: str, *values: object) -> None:
        """Append one OS object to the ledger before it exists: one ``write`` of one line to a
        file opened for appending, so lines never interleave, even from a forked child."""
        self._append(" ".join([kind, *map(str, values)]) + "\n")

    def _append(self, line: str) -> None:
        if self._ledger is not None and not self._ledger.closed:
            os.write(self._ledger.fileno(), line.encode())

    def record_process(self, pid: int) -> None:
        """``process PID STARTTIME SID``. Containers call it from the child itself, between fork
        and exec (ProcessContainer), so the line is there before the program can start anything."""
        line = process_line(pid)
        if line is not None:
            self._append(line)

    def remove(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
        remove_tree(self.directory)  # a stopped cluster's directory: 100,000 entries for 10,000 pods


def gc_cluster(directory: Path) -> list[str]:
    """Remove what a dead cluster left, from its ledger; returns one line per thing removed."""
    removed = []
    try:
        info = json.loads(statedir.read_file(directory, STATE_FILE) or b"{}")
    except ValueError:
        info = {}
    if not isinstance(info, dict):
        info = {}
    if info and is_alive(info.get("pid", -1), info.get("start_time")):
        raise ClusterError(f'cluster "{directory.name}" is running (pid {info["pid"]}); use `netemu down`')
    recorded = reaper.parse_ledger((statedir.read_file(directory, LEDGER) or b"").decode(errors="replace").splitlines())
    token = info.get("token") if isinstance(info.get("token"), str) else None
    removed += [f"process {pid}" for pid in reaper.reap(token, recorded)]
    removed += [f"process {pid} left alone: not provably the cluster's" for pid in reaper.unproven(token, recorded)]
    shutil.rmtree(directory, ignore_errors=True)
    removed.append(f"state directory {directory}")
    detached_log = directory.parent / f"{directory.name}.up.log"  # written by `netemu up --detach`
    if detached_log.exists():
        detached_log.unlink()
        removed.append(f"log {detached_log}")
    return removed


def held_cluster_dirs() -> list[Path]:
    """The directories of the clusters running anywhere, under any state root (each test and
    user may have a NETEMU_STATE_DIR of their own): a running cluster holds its ledger open, so
    they are the directories of the ledgers some process has open. Only read to protect what
    they list, never to remove anything."""
    found: set[Path] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{entry}/fd/{fd}")
            except OSError:
                continue
            if target.endswith("/" + LEDGER):  # a removed one reads "… (deleted)"
                found.add(Path(target).parent)
    return sorted(found)


def gc_all(root: Path, collect: Callable[[Path], list[str]] = gc_cluster) -> list[str]:
    """Collect every dead cluster under ``root`` with ``collect``; live ones are left alone."""
    out = []
    for c in list_clusters(root):
        if not c.alive:
            out += [f"{c.name}: {line}" for line in collect(c.directory)]
    return out


def _listened_on(ip: str, port: int) -> bool:
    """Whether some process listens on ``ip:port`` (TCP): another cluster's ranges on this machine,
    which the state directories of other users or roots cannot show."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # lingering connections do not count
        try:
            probe.bind((ip, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False
