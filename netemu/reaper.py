"""Finding the processes a dead cluster left, and killing only those proven to be its own.

A ledger line is never trusted on its own: it could be forged, or name a pid the kernel has since
given to another program. A process is the cluster's only when one of these holds:

- its environment (``/proc/PID/environ``, what it was started with) carries the cluster's secret
  token, ``NETEMU_CLUSTER_TOKEN=<token from state.json>``, which netemu gives every process of a
  pod (containers, probes, ``exec``) and which everything they start inherits;
- it is in the session of a container the ledger records (``process PID STARTTIME SID``), and that
  session is proven: a member carries the token, and the recorded leader is either gone (Linux
  keeps a session id reserved while any member lives, so the members are the leader's own
  descendants, even those that cleared their environment) or is still the recorded process (same
  start time) and carries the token itself.

Either way the process must run as the current user. Processes are signalled through a pidfd
after their start time is checked again on that very process, so a pid recycled in between is
never hit, and ``reap`` repeats until a scan finds nothing more (a shell may fork while its
relatives are being killed). This process and its ancestors are never signalled.
"""
from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from netemu.childproc import stat_fields

TOKEN_VARIABLE = "NETEMU_CLUSTER_TOKEN"
ROUNDS = 20  # scans at most: each kills what the previous one found, and what they forked meanwhile
EXIT_WAIT = 5.0  # seconds to wait for killed processes to be gone


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    session: int
    start_time: int
    zombie: bool


@dataclass(frozen=True)
class RecordedProcess:
    """A ``process`` line of a ledger: a container's leader as it was started."""

    pid: int
    start_time: int | None
    session: int


def read_stat(pid: int) -> ProcStat | None:
    fields = stat_fields(pid)
    if fields is None:
        return None
    return ProcStat(pid, int(fields[1]), int(fields[3]), int(fields[19]), fields[0] in (b"Z", b"X"))


def parse_ledger(lines: Iterable[str]) -> list[RecordedProcess]:
    """The ``process PID STARTTIME [SID]`` lines (SID defaults to PID: containers lead their own
    session); malformed lines are skipped."""
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) not in (3, 4) or parts[0] != "process":
            continue
        try:
            pid = int(parts[1])
            start = None if parts[2] == "None" else int(parts[2])
            session = int(parts[3]) if len(parts) == 4 else pid
        except ValueError:
            continue
        if pid > 0 and session > 0:
            out.append(RecordedProcess(pid, start, session))
    return out


def _environ_has(pid: int, entry: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return entry in f.read().split(b"\0")
    except OSError:
        return False


def _owner(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _scan() -> Iterator[ProcStat]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = read_stat(int(entry))
            if st is not None and not st.zombie:
                yield st


def _protected() -> set[int]:
    """This process and its ancestors: never signalled, whatever they carry."""
    out, pid = set(), os.getpid()
    while pid > 0 and pid not in out:
        out.add(pid)
        st = read_stat(pid)
        pid = st.ppid if st is not None else 0
    return out


def owned_processes(token: str | None, recorded: Iterable[RecordedProcess]) -> dict[int, int]:
    """pid -> start time of every live process proven to be the cluster's (see the module doc)."""
    if not token:
        return {}  # nothing can be proven without the token
    entry = f"{TOKEN_VARIABLE}={token}".encode()
    me, protected = os.geteuid(), _protected()
    mine = [st for st in _scan() if st.pid not in protected and _owner(st.pid) == me]
    carriers = {st.pid for st in mine if _environ_has(st.pid, entry)}
    by_pid = {st.pid: st for st in mine}
    sessions_with_carrier = {st.session for st in mine if st.pid in carriers}
    proven_sessions = set()
    for rec in recorded:
        if rec.session not in sessions_with_carrier:
            continue
        leader = read_stat(rec.session)
        if leader is not None and not leader.zombie:
            same = rec.session == rec.pid and leader.start_time == rec.start_time
            if not (same and rec.session in carriers):
                continue  # the session's leader is not the recorded container: not provably ours
        proven_sessions.add(rec.session)
    return {st.pid: st.start_time for st in by_pid.values()
            if st.pid in carriers or st.session in proven_sessions}


def kill_checked(pid: int, still_the_one: Callable[[int], bool]) -> int | None:
    """SIGKILL ``pid`` through a pidfd once ``still_the_one(pid)`` holds with the pidfd open (so
    the check is on that very process, never on a recycled pid); the pidfd to wait on, or None
    when it is gone or is not the one."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        if not still_the_one(pid):
            os.close(pidfd)
            return None
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:
        os.close(pidfd)
        return None
    return pidfd


def _kill(pid: int, start_time: int) -> int | None:
    def same_start(p: int) -> bool:
        st = read_stat(p)
        return st is not None and st.start_time == start_time
    return kill_checked(pid, same_start)


def wait_exited(pidfds: list[int], timeout: float) -> None:
    """Wait (up to ``timeout`` in all) for each pidfd to report its process's exit; closes them."""
    deadline = time.monotonic() + timeout
    for pidfd in pidfds:
        try:
            select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))
        finally:
            os.close(pidfd)


def reap(token: str | None, recorded: Iterable[RecordedProcess]) -> list[int]:
    """Kill every process proven to be the cluster's, again until none is left; the pids killed."""
    recorded = list(recorded)
    killed: list[int] = []
    for _ in range(ROUNDS):
        found = owned_processes(token, recorded)
        pidfds = []
        for pid, start in sorted(found.items()):
            pidfd = _kill(pid, start)
            if pidfd is not None:
                pidfds.append(pidfd)
                killed.append(pid)
        wait_exited(pidfds, EXIT_WAIT)
        if not pidfds:
            break
    return killed


def unproven(token: str | None, recorded: Iterable[RecordedProcess]) -> list[int]:
    """Processes a ledger names that are still there but could not be proven the cluster's: a
    recorded pid running with its recorded start time, or a member of a recorded session. A
    forged line shows up here, and so does a container's descendant that cleared its environment
    once no member of its session carries the token any more: both are left alone."""
    recorded = list(recorded)
    owned = owned_processes(token, recorded)
    sessions = set()
    out = set()
    for rec in recorded:
        st = read_stat(rec.pid)
        running = st is not None and not st.zombie
        if running and st.start_time == rec.start_time:
            out.add(rec.pid)
        if not running or (rec.session == rec.pid and st.start_time == rec.start_time):
            sessions.add(rec.session)  # still the recorded session (not one under a recycled pid)
    if sessions:
        out.update(st.pid for st in _scan() if st.session in sessions)
    return sorted(out - owned.keys() - _protected())
