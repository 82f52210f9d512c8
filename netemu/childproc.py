"""What a child process of netemu does between fork and exec, with nothing but the standard library.

The cluster's own children (``netemu.spawn``) and the fork server's (``netemu.forkserverd``) take
the same steps: die with their parent (``set_parent_death_signal``), write their ledger line
(``process_line``, read back by ``netemu.reaper.parse_ledger``) and hold only descriptors 0, 1
and 2 once they run their program (``close_inherited_fds``). This module imports no more than
those steps need: the fork server imports it, and every module a forking process has loaded
makes each fork and each child cost more (page tables to copy, pages to copy on first write).
"""
from __future__ import annotations

import ctypes
import fcntl
import os

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_CLOSE_RANGE = 436  # x86-64, arm64 and every other architecture of the unified table
_CLOSE_RANGE_CLOEXEC = 1 << 2
_ALL = 0xFFFFFFFF
_PR_SET_PDEATHSIG = 1


def close_inherited_fds() -> None:
    """Mark every descriptor above 2 of this process close-on-exec."""
    if _libc.syscall(_SYS_CLOSE_RANGE, 3, _ALL, _CLOSE_RANGE_CLOEXEC) == 0:
        return
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd > 2:
            try:
                fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.fcntl(fd, fcntl.F_GETFD) | fcntl.FD_CLOEXEC)
            except OSError:
                pass  # the descriptor listing the directory itself, closed by now


def set_parent_death_signal(sig: int) -> None:
    """Have the kernel send ``sig`` to this process when its parent (the thread that forked it) ends."""
    _libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/PID/stat`` after the command name (the state is the first), or None
    when ``pid`` is gone."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, 4096)
        finally:
            os.close(fd)
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields resume after the last ')'.
    return data[data.rindex(b")") + 2:].split()


def process_line(pid: int) -> str | None:
    """The ledger line of a process, ``process PID STARTTIME SID`` (what ``netemu.reaper``'s
    ``parse_ledger`` reads), or None when ``pid`` is gone."""
    fields = stat_fields(pid)
    return None if fields is None else f"process {pid} {int(fields[19])} {int(fields[3])}\n"
