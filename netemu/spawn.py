"""Starting child processes that get none of netemu's descriptors.

Every process netemu starts (containers, probes, ``exec``, ``ip`` and other host tools, CNI
plugin executables) must hold only its standard input, output and error: an inherited descriptor
keeps a pipe or socket of netemu's open for as long as that process lives (``up --detach`` would
wait forever for its ready pipe to close, a container would keep a listener alive). Python opens
its own descriptors close-on-exec, and ``subprocess`` closes the rest in the child (``close_fds``),
but uvloop's process spawning does not: it hands the child every descriptor that is not
close-on-exec, such as those netemu itself inherited. So the child marks every descriptor above 2
close-on-exec before it executes the program (``close_range(3, ~0, CLOSE_RANGE_CLOEXEC)``, or one
``fcntl`` per entry of ``/proc/self/fd`` on kernels older than 5.11). Marking instead of closing
leaves the runtime's own error pipe working until the ``exec``, so a missing program is still
reported as such.

``spawn`` is ``asyncio.create_subprocess_exec`` with that step (and any ``setup`` of the caller's)
run in the child; ``close_inherited_fds`` (netemu.childproc) is the step itself, for a process
about to ``exec``.
That forks the whole cluster process, which costs milliseconds per start once it is large;
containers are therefore started by a small fork server instead (netemu.forkserver).
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from netemu.childproc import close_inherited_fds, set_parent_death_signal

log = logging.getLogger(__name__)


def cluster_child_setup(parent: int, record: Callable[[int], None]) -> Callable[[], None]:
    """The ``setup`` of a process the cluster runs (a container's, a proxy worker): lead a new
    session, die with the cluster's process ``parent`` (or at once, should it be gone already),
    and record its pid in the cluster's ledger (``record``)."""
    def setup() -> None:
        os.setsid()
        set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)
        record(os.getpid())
    return setup


def child_setup(setup: Callable[[], None] | None = None) -> Callable[[], None]:
    """The function to run in a child between fork and exec: ``setup`` (if any), then
    ``close_inherited_fds``."""
    if setup is None:
        return close_inherited_fds

    def run() -> None:
        setup()
        close_inherited_fds()
    return run


async def spawn(*argv: str, setup: Callable[[], None] | None = None, **kwargs: Any) -> asyncio.subprocess.Process:
    """``asyncio.create_subprocess_exec(*argv, **kwargs)``, the child holding only 0, 1 and 2."""
    return await asyncio.create_subprocess_exec(*argv, close_fds=True, preexec_fn=child_setup(setup), **kwargs)


_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
HELPER_EXIT_WAIT = 5.0  # seconds for a helper to exit once its socket is closed


def start_helper(module: str, *args: str, record: Callable[[int], None], log_path: Path | None,
                 env: Mapping[str, str] | None = None,
                 site: bool = True) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """One of the cluster's helper processes (the fork server, the sandbox helper): ``main()`` of
    ``module`` in a fresh interpreter (``-I``) with ``args``, its standard input a SOCK_SEQPACKET
    socket to this process (returned, non-blocking), its standard error appended to ``log_path``,
    started as a process of the cluster (``cluster_child_setup``: its own session, dead with the
    cluster, in the ledger through ``record``). ``site`` False: without the site packages (``-S``),
    for a helper that needs only the standard library and netemu (found through its own path).

    Done in this call, without the event loop (OSError when it cannot start): the fork and exec
    take milliseconds and the helper can be sent requests once it returns. Awaiting asyncio's
    subprocess instead waits for turns of the loop, which take seconds while a thousand pods
    are set up, and everything waiting for the helper meanwhile waits with it."""
    code = f"import sys; sys.path.insert(0, {_PACKAGE_ROOT!r}); from {module} import main; main()"
    argv = [sys.executable, *(["-I"] if site else ["-I", "-S"]), "-c", code, *args]
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        with open(log_path or os.devnull, "ab") as log:
            process = subprocess.Popen(argv, stdin=theirs.fileno(),
                                       stdout=subprocess.DEVNULL, stderr=log, close_fds=True,
                                       env=dict(env) if env is not None else None,
                                       preexec_fn=child_setup(cluster_child_setup(os.getpid(), record)))
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    ours.setblocking(False)
    return process, ours


async def end_helper(process: asyncio.subprocess.Process | subprocess.Popen[bytes],
                     wait: float = HELPER_EXIT_WAIT) -> None:
    """Wait for a helper whose socket has been closed to exit (it reads the end of its input),
    killing it by pid after ``wait`` seconds."""
    try:
        await asyncio.wait_for(_exit_of(process), wait)
    except asyncio.TimeoutError:
        log.warning("helper process %s did not end in %g s; killing it", process.pid, wait)
        if process.returncode is None:
            process.kill()
        await _exit_of(process)


async def _exit_of(process: asyncio.subprocess.Process | subprocess.Popen[bytes]) -> None:
    """Until ``process`` has exited (and been reaped): a Popen's through a pidfd, which becomes
    readable when the process exits."""
    if not isinstance(process, subprocess.Popen):
        await process.wait()
        return
    if process.poll() is not None:
        return
    pidfd = os.pidfd_open(process.pid)
    try:
        loop = asyncio.get_running_loop()
        exited = loop.create_future()
        loop.add_reader(pidfd, lambda: exited.done() or exited.set_result(None))
        try:
            await exited
        finally:
            loop.remove_reader(pidfd)
    finally:
        os.close(pidfd)
    process.wait()
