"""A cluster's state directory and the ledger of every OS object it made.

``<state root>/<cluster>/`` holds ``state.json`` (owner pid and its start time, backend, address
ranges), the control socket, container logs, CNI data and ``ledger``: one line per OS object the
cluster made (``process PID STARTTIME``, later ``netns NAME`` …). Clean shutdown removes the
directory; after a crash, ``gc`` reads the ledger and removes exactly what is listed there —
processes are signalled only when pid *and* start time still match, so a recycled pid is never
hit. Nothing is ever found by pattern.
"""
from __future__ import annotations

import fcntl
import ipaddress
import json
import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from netemu.config import ClusterConfig
from netemu.errors import ClusterError, RangeConflictError

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
LEDGER = "ledger"


def proc_start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, or None when it is not running."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields resume after the last ')'.
    fields = data[data.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):  # a zombie has finished; only its exit status waits to be read
        return None
    return int(fields[19])


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

    @property
    def control_socket(self) -> Path:
        return self.directory / "control.sock"


def list_clusters(root: Path) -> list[RunningCluster]:
    out = []
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        try:
            info = json.loads((d / STATE_FILE).read_text())
        except (OSError, ValueError):
            continue
        out.append(RunningCluster(d.name, d, info))
    return out


class ClusterState:
    """The state directory of one running cluster, owned by this process."""

    def __init__(self, config: ClusterConfig):
        self.config = config
        self.directory = config.cluster_dir
        self._ledger = None

    @property
    def control_socket(self) -> Path:
        return self.directory / "control.sock"

    def path(self, *parts: str) -> Path:
        return self.directory.joinpath(*parts)

    def create(self, *, collect_garbage: Callable[[Path], list[str]] | None = None) -> None:
        """Claim the directory: refuse a live cluster of that name or overlapping ranges."""
        root = self.config.state_dir
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        # One start at a time per state root: checking for overlapping ranges and claiming ours
        # must not interleave with another process doing the same.
        # The lock is on the directory itself, so it leaves no file behind.
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
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
        if self.directory.exists():
            shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(mode=0o700)
        (self.directory / "logs").mkdir()
        pid = os.getpid()
        info = {
            "name": self.config.name, "pid": pid, "start_time": proc_start_time(pid),
            "backend": self.config.backend, "ranges": self.config.ranges(),
            "nodes": list(self.config.nodes), "dns_ip": self.config.dns_ip,
            "created": time.time(),
        }
        tmp = self.directory / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(info, indent=1))
        tmp.rename(self.directory / STATE_FILE)
        self._ledger = open(self.directory / LEDGER, "a", buffering=1)

    def update_info(self, **values: object) -> None:
        path = self.directory / STATE_FILE
        info = json.loads(path.read_text())
        info.update(values)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=1))
        tmp.rename(path)

    def record(self, kind: str, *values: object) -> None:
        """Append one OS object to the ledger (before it is needed for cleanup)."""
        if self._ledger is not None:
            self._ledger.write(" ".join([kind, *map(str, values)]) + "\n")

    def record_process(self, pid: int) -> None:
        self.record("process", pid, proc_start_time(pid))

    def remove(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
        shutil.rmtree(self.directory, ignore_errors=True)


def _session_members(sid: int) -> list[int]:
    """Processes whose session id is ``sid`` (containers start as session and group leaders)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2:].split()
        if int(fields[3]) == sid and fields[0] not in (b"Z", b"X"):
            members.append(int(entry))
    return members


def _kill_recorded(pid: int, start_time: int | None) -> bool:
    """Kill a recorded container process and everything left in its session.

    Linux never hands out a pid while it still names a live session or process group, so when
    the leader is gone, processes whose session id is its pid are the leader's own leftovers
    (a ``sleep`` it started in the background); when the pid now belongs to a newer process
    (another start time), nothing of ours can be left and nothing is signalled.
    """
    current = proc_start_time(pid)
    if current is not None and current != start_time:
        return False  # recycled pid: not ours
    targets = _session_members(pid)
    for target in targets:
        try:
            os.kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return bool(targets)


def gc_cluster(directory: Path) -> list[str]:
    """Remove what a dead cluster left, from its ledger; returns one line per thing removed."""
    removed = []
    try:
        info = json.loads((directory / STATE_FILE).read_text())
    except (OSError, ValueError):
        info = {}
    if info and is_alive(info.get("pid", -1), info.get("start_time")):
        raise ClusterError(f'cluster "{directory.name}" is running (pid {info["pid"]}); use `netemu down`')
    try:
        lines = (directory / LEDGER).read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        kind, *values = line.split()
        if kind == "process" and len(values) == 2:
            pid, start = int(values[0]), (int(values[1]) if values[1] != "None" else None)
            if _kill_recorded(pid, start):
                removed.append(f"process {pid}")
    shutil.rmtree(directory, ignore_errors=True)
    removed.append(f"state directory {directory}")
    detached_log = directory.parent / f"{directory.name}.up.log"  # written by `netemu up --detach`
    if detached_log.exists():
        detached_log.unlink()
        removed.append(f"log {detached_log}")
    return removed


def gc_all(root: Path, collect: Callable[[Path], list[str]] = gc_cluster) -> list[str]:
    """Collect every dead cluster under ``root`` with ``collect``; live ones are left alone."""
    out = []
    for c in list_clusters(root):
        if not c.alive:
            out += [f"{c.name}: {line}" for line in collect(c.directory)]
    return out
