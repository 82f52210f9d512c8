"""Container runtimes: a real process (``command:``) or a built-in image emulation.

Both offer the same small surface to the pod worker: ``start()``, ``wait()`` for the exit code,
``stop(grace)`` (SIGTERM, then SIGKILL after the grace period, for processes), and ``pids``.
Processes are started as session (and process-group) leaders, holding none of netemu's
descriptors (netemu.spawn), by the cluster's fork server when there is one (netemu.forkserver:
starting them from the large cluster process itself costs a fork of all of it each; its child
also makes the pod's namespaces, files and mounts itself: netemu.podsetup). Each
records itself in the cluster's ledger from the child, after the fork and before it runs the
program, so nothing it starts can outlive an unrecorded parent; it dies with the cluster process
(PR_SET_PDEATHSIG; through the fork server, which dies with the cluster) as a second line of
defence; ``netemu gc`` is the third (it finds what a container left by its session and by the
cluster's token in its environment).
"""
from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any, Callable, Mapping

from netemu.errors import NetemuError
from netemu.forkserver import ForkServer, ServedProcess
from netemu.podsetup import PodSetup
from netemu.spawn import cluster_child_setup, spawn

from . import podfiles

# Whether the fork server's child sets a container's process up itself (netemu.podsetup) rather
# than running the shell prefix that does (netemu.kubelet.podfiles.shell_prefix).
DIRECT_SETUP = True


def start_refusal(program: str, env: Mapping[str, str], cwd: str | None) -> str:
    """Why the runtime could not start ``program`` in a container (a container's command or an
    exec), in runc's words; "" when it can."""
    if cwd and not os.path.isdir(cwd):
        return f'chdir to cwd ("{cwd}") set in config.json failed: no such file or directory'
    if "/" in program:
        if not os.path.exists(program):
            return f'exec: "{program}": stat {program}: no such file or directory'
        if os.path.isdir(program):
            return f'exec: "{program}": is a directory'
        if not os.access(program, os.X_OK):
            return f'exec: "{program}": permission denied'
        return ""
    if shutil.which(program, path=env.get("PATH", os.defpath)) is None:
        return f'exec: "{program}": executable file not found in $PATH'
    return ""


def exec_failure(refusal: str) -> str:
    """The API server's message (as kubectl prints it) for an exec that the container runtime
    (containerd, runc) could not start, ``refusal`` being what ``start_refusal`` says."""
    exec_id = secrets.token_hex(32)
    return (f"Internal error occurred: error executing command in container: failed to exec in container: "
            f'failed to start exec "{exec_id}": OCI runtime exec failed: exec failed: unable to start container '
            f"process: {refusal}: unknown")


class ContainerStartError(NetemuError):
    """The container could not start (the reason goes into its status, as the kubelet reports)."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


class ProcessContainer:
    """A container whose program is a real process. With ``stdin`` (the container's ``stdin:
    true``) the process reads a pipe that ``pods/attach`` writes to, as a runtime keeps a
    container's stdin open; with ``stdin_once`` the pipe closes when the first attach ends."""

    def __init__(self, argv: list[str], env: Mapping[str, str], *, cwd: str | None, log_path: Path,
                 prefix: list[str], record: Callable[[int], None], stdin: bool = False, stdin_once: bool = False,
                 forkserver: ForkServer | None = None, setup: PodSetup | None = None):
        self.argv = argv
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self.prefix = prefix  # before the command (the pod's network namespace), then ``setup``
        self.setup = setup    # the pod's files, hostname and volumes (netemu.podsetup)
        self._record = record
        self.forkserver = forkserver  # starts the process when given (it records it in the ledger itself)
        self.proc: asyncio.subprocess.Process | ServedProcess | None = None
        self.keeps_stdin = stdin
        self.stdin_once = stdin_once
        self._stdin_fd: int | None = None   # the pipe's write end, while the container's stdin is open
        self.attached_once = False

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc and self.proc.returncode is None else []

    async def start(self) -> None:
        # Look the program up first: behind a prefix (unshare, nsenter) a missing binary would
        # otherwise show as the wrapper's exit status 127 instead of the runtime's StartError.
        refusal = start_refusal(self.argv[0], self.env, self.cwd)
        if refusal:
            raise ContainerStartError("StartError", refusal)
        read_end = None
        if self.keeps_stdin:
            read_end, self._stdin_fd = os.pipe()   # both close-on-exec here; the child gets read_end as 0
        with open(self.log_path, "ab") as logf:
            try:
                self.proc = await self._spawn(read_end, logf.fileno())
            except FileNotFoundError as exc:
                raise ContainerStartError(
                    "StartError", f'exec: "{self.argv[0]}": executable file not found in $PATH') from exc
            except PermissionError as exc:
                raise ContainerStartError("StartError", f'exec: "{self.argv[0]}": permission denied') from exc
            except (OSError, subprocess.SubprocessError) as exc:
                raise ContainerStartError("StartError", f"exec: {exc}") from exc
            finally:
                if read_end is not None:
                    os.close(read_end)
                    if self.proc is None:
                        self.close_stdin()

    async def _spawn(self, stdin: int | None, log: int) -> asyncio.subprocess.Process | ServedProcess:
        if self.forkserver is not None:
            # The fork server's child carries the setup out itself when nothing runs before the
            # command (no network prefix): no shell, no mount programs per start.
            direct = self.setup if DIRECT_SETUP and not self.prefix else None
            argv = [*self.prefix, *(podfiles.shell_prefix(self.setup) if direct is None else ()), *self.argv]
            if stdin is not None:
                return await self.forkserver.spawn(argv, env=self.env, cwd=self.cwd or None,
                                                   stdin=stdin, stdout=log, stderr=log, setup=direct)
            with open(os.devnull, "rb") as devnull:
                return await self.forkserver.spawn(argv, env=self.env, cwd=self.cwd or None,
                                                   stdin=devnull.fileno(), stdout=log, stderr=log, setup=direct)
        return await spawn(
            *self.prefix, *podfiles.shell_prefix(self.setup), *self.argv, env=self.env, cwd=self.cwd or None,
            stdin=stdin if stdin is not None else asyncio.subprocess.DEVNULL, stdout=log,
            stderr=asyncio.subprocess.STDOUT, setup=cluster_child_setup(os.getpid(), self._record))

    @property
    def stdin_open(self) -> bool:
        return self._stdin_fd is not None

    async def write_stdin(self, data: bytes) -> None:
        """Give ``data`` to the process's stdin (dropped once it is closed or the reader is gone)."""
        fd = self._stdin_fd
        if fd is None:
            return
        try:
            await asyncio.to_thread(_write_all, fd, data)
        except (BrokenPipeError, OSError):
            pass

    def close_stdin(self) -> None:
        fd, self._stdin_fd = self._stdin_fd, None
        if fd is not None:
            os.close(fd)

    async def wait(self) -> int:
        assert self.proc is not None
        code = await self.proc.wait()
        self.close_stdin()
        # When a container's main process ends, the runtime kills what it left behind (its PID
        # namespace goes); here that is the rest of its process group.
        self._kill_group()
        return 128 - code if code < 0 else code  # a signal shows as 128+N, as in a container

    def _kill_group(self) -> None:
        # The group's id stays reserved while any member lives, so it cannot name a stranger.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _signal(self, sig: int) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    async def stop(self, grace: float) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self._signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout=max(grace, 0.0))
            except asyncio.TimeoutError:
                self._signal(signal.SIGKILL)
                await self.proc.wait()
        # Children that outlived the leader still belong to the group.
        self._kill_group()
        self.close_stdin()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class EmulatedContainer:
    """A built-in image emulation running on the cluster's event loop."""

    def __init__(self, emulation: Any, context: Any):
        self.emulation = emulation
        self.context = context
        self.running: Any = None

    pids: list[int] = []

    async def start(self) -> None:
        try:
            self.running = await self.emulation.start(self.context)
        except NetemuError as exc:
            raise ContainerStartError("Error", str(exc)) from exc
        except OSError as exc:
            raise ContainerStartError("Error", f"{type(exc).__name__}: {exc}") from exc

    async def wait(self) -> int:
        return await asyncio.shield(self.running.exited)

    async def stop(self, grace: float) -> None:
        if self.running is not None:
            await self.running.stop()
