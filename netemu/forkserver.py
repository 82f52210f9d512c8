"""Starting containers' processes through a small fork server.

``spawn`` (asyncio's subprocess with a ``preexec_fn``, netemu.spawn) forks the whole cluster
process for every container, and uvloop holds the event loop until the child has run its
program: with 1,000 pods (130 MiB) that is 10-30 ms of the loop per start, one after another,
and the kernel time of copying the process each time. A fork server is a helper process, started
once (on the first container's start) and kept small (netemu.forkserverd imports little):
forking it costs a millisecond or two, in its own process, while the cluster's loop goes on.

Why a fork server rather than vfork/posix_spawn with the setup moved into an exec wrapper
(``setpriv --pdeathsig KILL``): the wrapper sets the death signal only once it runs, so a cluster
killed in between leaves an orphan no ledger line names, and nothing can check that the parent
is still there; the ledger line would be written by the parent after the start, not by the
child before its program runs. The fork server's child does exactly what the cluster's own
children do (netemu.spawn.cluster_child_setup): new session, PR_SET_PDEATHSIG SIGKILL and the
"parent already gone" check, its ledger line, only fds 0/1/2, then exec. The death chain holds:
the server dies with the cluster (it is started as a cluster child) and each container with the
server, so killing either takes the containers along. The server reports each child's wait status,
so the runtime still gets exit codes; each child leads its own session and process group, as
before, so the runtime signals its group directly. If the server dies, every process it
ran is reported as killed (they die with it) and the next start brings up a new server.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Callable, Mapping

from netemu.podsetup import PodSetup
from netemu.spawn import end_helper, start_helper

MAX_MESSAGE = 1 << 20


class ServedProcess:
    """A process the fork server started: ``pid``, ``returncode`` (None while it runs, -N for
    signal N) and ``wait()``, like asyncio's Process."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None
        self._exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def _set_exited(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self._exited.set_result(code)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)


class ForkServer:
    """The cluster's fork server: ``spawn`` a process, ``close`` (the server exits)."""

    def __init__(self, ledger: Path, *, env: Mapping[str, str], record: Callable[[int], None],
                 log_path: Path | None = None):
        self.ledger = ledger
        self.env = dict(env)          # the server's own environment (it carries the cluster's token)
        self.record = record          # records the server itself in the ledger (from its child)
        self.log_path = log_path
        self._send_lock: asyncio.Lock | None = None
        self._server: subprocess.Popen[bytes] | None = None
        self._ending: set[asyncio.Future[None]] = set()  # servers that went away, being reaped
        self._sock: socket.socket | None = None
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[ServedProcess | dict]] = {}
        self._running: dict[int, ServedProcess] = {}

    @property
    def pid(self) -> int | None:
        """The server's pid, while it runs."""
        return self._server.pid if self._server is not None and self._server.poll() is None else None

    async def spawn(self, argv: list[str], *, env: Mapping[str, str], cwd: str | None, stdin: int, stdout: int,
                    stderr: int, setup: PodSetup | None = None) -> ServedProcess:
        """Run ``argv`` with these descriptors as 0, 1 and 2, after ``setup`` (a pod's namespaces,
        files and mounts, made in the child: netemu.podsetup); OSError (FileNotFoundError, ...)
        when the program cannot be run."""
        sock = await self._connection()
        loop = asyncio.get_running_loop()
        self._next_id += 1
        request_id = self._next_id
        answer: asyncio.Future[ServedProcess | dict] = loop.create_future()
        self._pending[request_id] = answer
        message = json.dumps({"id": request_id, "argv": list(argv), "env": dict(env), "cwd": cwd,
                              "setup": setup.to_json() if setup is not None else None}).encode()
        try:
            await self._send(sock, message, [stdin, stdout, stderr])
            reply = await answer
        finally:
            self._pending.pop(request_id, None)
        if isinstance(reply, ServedProcess):
            return reply
        raise OSError(reply.get("errno") or 0, reply.get("error", "cannot run the program"))

    async def close(self) -> None:
        server, sock = self._server, self._sock
        self._server = None
        self._disconnect(ConnectionError("the fork server was closed"))
        if sock is not None:
            sock.close()
        if server is not None:
            await end_helper(server)
        ending, self._ending = self._ending, set()
        await asyncio.gather(*ending, return_exceptions=True)

    async def _connection(self) -> socket.socket:
        if self._send_lock is None:
            self._send_lock = asyncio.Lock()
        if self._sock is None:
            self._start()
        assert self._sock is not None
        return self._sock

    def _start(self) -> None:
        # Then and there (a fork and exec), not awaited: every container waiting for the server
        # would then go on one turn of the loop after another, and while a thousand pods start
        # a turn takes seconds.
        self._reap()
        self._server, self._sock = start_helper("netemu.forkserverd", str(self.ledger), record=self.record,
                                                log_path=self.log_path, env=self.env, site=False)
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._on_readable)

    def _reap(self) -> None:
        """The server has closed its end (it is gone, or going): its process is reaped meanwhile
        (``close`` waits for that)."""
        server, self._server = self._server, None
        if server is not None:
            self._ending.add(asyncio.ensure_future(end_helper(server)))

    async def _send(self, sock: socket.socket, message: bytes, fds: list[int]) -> None:
        # One sender at a time: the socket queues few messages, and a descriptor has one writer callback.
        assert self._send_lock is not None
        async with self._send_lock:
            await self._send_now(sock, message, fds)

    async def _send_now(self, sock: socket.socket, message: bytes, fds: list[int]) -> None:
        while True:
            try:
                socket.send_fds(sock, [message], fds)
                return
            except BlockingIOError:
                writable = asyncio.get_running_loop().create_future()
                asyncio.get_running_loop().add_writer(sock.fileno(), writable.set_result, None)
                try:
                    await writable
                finally:
                    asyncio.get_running_loop().remove_writer(sock.fileno())

    def _on_readable(self) -> None:
        sock = self._sock
        while sock is not None:
            try:
                data = sock.recv(MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._disconnect(ConnectionError("the fork server exited"))
                sock.close()
                self._reap()
                return
            message = json.loads(data)
            if "id" in message:
                self._answer(message)
            else:
                proc = self._running.pop(message["pid"], None)
                if proc is not None:
                    proc._set_exited(os.waitstatus_to_exitcode(message["status"]))

    def _answer(self, message: dict) -> None:
        answer = self._pending.get(message["id"])
        if "pid" not in message:
            if answer is not None and not answer.done():
                answer.set_result(message)
            return
        if answer is None or answer.done():  # its start was cancelled: nobody will watch it
            try:
                os.killpg(message["pid"], signal.SIGKILL)
            except OSError:
                pass
            return
        proc = ServedProcess(message["pid"])
        self._running[proc.pid] = proc  # before the next message, which may be its exit
        answer.set_result(proc)

    def _disconnect(self, reason: Exception) -> None:
        """The server is gone (or going): what it ran dies with it (PR_SET_PDEATHSIG SIGKILL)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(reason)
        running, self._running = self._running, {}
        for proc in running.values():
            proc._set_exited(-signal.SIGKILL)
