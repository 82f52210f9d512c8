"""The ``pods/exec`` subresource over WebSocket, as kubectl 1.30+ speaks it.

``GET /api/v1/namespaces/{ns}/pods/{name}/exec?command=…&container=…&stdin=…&stdout=…&stderr=…``
upgraded to a channel WebSocket (``channels``: ``v5.channel.k8s.io``, or ``v4.channel.k8s.io``
when a client asks only for that). The error channel's Status at the end is Success, or Failure
with reason ``NonZeroExitCode`` and the exit code as the ``ExitCode`` cause; the server closes
the WebSocket (1000) after it.

The command runs as ``netemu exec`` runs it: ``Cluster.exec_plan`` (the container's environment
and working directory, behind the pod's network and files prefix) through ``netemu.spawn``, so it
holds no descriptor of the cluster's. With ``tty=true`` the command gets a pseudo-terminal as its
controlling terminal (its output on the stdout channel; resize messages set its size; the end of
stdin is a ^D).
Anything refused before the upgrade (pod, container, command, tty) is an HTTP Status, which
kubectl prints as ``Error from server (…)``; what the container runtime refuses (a missing
program) comes on the error channel in the runtime's words, as with kube-apiserver.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import json
import logging
import os
import signal
import struct
import termios
from typing import Any, Awaitable, Callable

from aiohttp import web

from netemu.errors import ClusterError, NetemuError
from netemu.kubelet.runtime import exec_failure, start_refusal
from netemu.spawn import spawn

from . import channels
from .channels import CLOSE, RESIZE, STDERR, STDIN, STDOUT, Channels, flag, internal_error, success
from .podlogs import choose_container, live_pod
from .status import bad_request, from_error, method_not_allowed

log = logging.getLogger(__name__)

_READ = 32 * 1024


def _exit_status(command: list[str], code: int) -> dict[str, Any]:
    """The kubelet's Status for a command that exited ``code`` (kubectl exits with it)."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: error executing command "
                       f"[{' '.join(command)}], exit code {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


class PodExec:
    """Serves ``pods/exec`` over one cluster."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster

    def _plan(self, request: web.Request, namespace: str, name: str) -> tuple[Any, list[str]]:
        """The exec plan for the request, or the API's refusal (before any upgrade)."""
        if request.method not in ("GET", "POST"):
            raise method_not_allowed()
        params = request.query
        pod = live_pod(self.cluster.store, namespace, name)
        container = choose_container(pod, params.get("container", ""))
        command = params.getall("command", [])
        if not command:
            raise bad_request("you must specify at least one command for the container")
        if not any(flag(params, k) for k in ("stdin", "stdout", "stderr")):
            raise bad_request("you must specify at least 1 of stdin, stdout, stderr")
        try:
            plan = self.cluster.exec_plan(name, command, container=container, namespace=namespace)
        except ClusterError as exc:
            raise bad_request(str(exc)) from exc
        except NetemuError as exc:
            raise from_error(exc, kind="Pod", name=name, plural="pods") from exc
        return plan, command

    async def serve(self, request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        plan, command = self._plan(request, namespace, name)
        link = await channels.upgrade(request, "exec")
        if plan.warning:
            log.warning("exec in pod %s/%s: %s", namespace, name, plan.warning)
        session = _Session(link, request.query)
        try:
            await session.run(plan, command)
        finally:
            await link.close()
        return link.ws


class _Pipes:
    """The command's stdin, stdout and stderr as pipes (no terminal): each asked-for stream."""

    def __init__(self, stdin: bool, stdout: bool, stderr: bool) -> None:
        self.wanted = stdin, stdout, stderr
        self.proc: asyncio.subprocess.Process | None = None

    def spawn_options(self) -> dict[str, Any]:
        pipe, devnull = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
        stdin, stdout, stderr = (pipe if wanted else devnull for wanted in self.wanted)
        return {"stdin": stdin, "stdout": stdout, "stderr": stderr, "start_new_session": True}

    def started(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    def outputs(self) -> list[tuple[Callable[[], Awaitable[bytes]], int]]:
        assert self.proc is not None
        return [(functools.partial(stream.read, _READ), channel)
                for stream, channel in ((self.proc.stdout, STDOUT), (self.proc.stderr, STDERR)) if stream is not None]

    async def write(self, data: bytes) -> None:
        stdin = self.proc.stdin if self.proc is not None else None
        if stdin is None or stdin.is_closing():
            return
        try:
            stdin.write(data)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the command closed its stdin

    def end_input(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()

    def resize(self, width: int, height: int) -> None:
        pass  # no terminal, nothing to resize

    def close(self) -> None:
        pass


class _Terminal:
    """A pseudo-terminal for ``tty=true``: the command's controlling terminal and its 0, 1 and 2;
    its output comes on the stdout channel, as the kubelet sends a terminal's."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()  # neither is inherited (PEP 446); the child gets dups
        os.set_blocking(self.master, False)

    def spawn_options(self) -> dict[str, Any]:
        slave = self._slave

        def take_terminal() -> None:  # in the child: a session of its own, the terminal its controlling one
            os.setsid()
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        # setsid here, not start_new_session: uvloop runs this before its own setsid and stdio set-up
        return {"stdin": slave, "stdout": slave, "stderr": slave, "setup": take_terminal}

    def started(self, proc: asyncio.subprocess.Process) -> None:
        os.close(self._slave)  # the command holds it now: reading the master ends when it closes it
        self._slave = -1

    def outputs(self) -> list[tuple[Callable[[], Awaitable[bytes]], int]]:
        return [(self._read, STDOUT)]

    async def _read(self) -> bytes:
        loop = asyncio.get_running_loop()
        while True:
            try:
                return os.read(self.master, _READ)
            except BlockingIOError:
                readable = loop.create_future()
                loop.add_reader(self.master, readable.set_result, None)
                try:
                    await readable
                finally:
                    loop.remove_reader(self.master)
            except OSError:  # EIO: every holder of the terminal's other end has closed it
                return b""

    async def write(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        while data:
            try:
                data = data[os.write(self.master, data):]
            except BlockingIOError:
                writable = loop.create_future()
                loop.add_writer(self.master, writable.set_result, None)
                try:
                    await writable
                finally:
                    loop.remove_writer(self.master)
            except OSError:
                return  # the terminal is gone with its command

    def end_input(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self.master, b"\x04")  # end of input on a terminal: ^D

    def resize(self, width: int, height: int) -> None:
        with contextlib.suppress(OSError):
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    def close(self) -> None:
        for fd in (self.master, self._slave):
            if fd >= 0:
                os.close(fd)
        self.master = self._slave = -1


class _Session:
    """One exec: the process and the channels of its WebSocket."""

    def __init__(self, link: Channels, params: Any) -> None:
        self.link = link
        self.io: _Pipes | _Terminal = (
            _Terminal() if flag(params, "tty")
            else _Pipes(flag(params, "stdin"), flag(params, "stdout"), flag(params, "stderr")))

    async def run(self, plan: Any, command: list[str]) -> None:
        try:
            await self._run(plan, command)
        finally:
            self.io.close()

    async def _run(self, plan: Any, command: list[str]) -> None:
        refusal = start_refusal(command[0], plan.env, plan.cwd)
        if refusal:
            await self.link.status(internal_error(exec_failure(refusal)))
            return
        try:
            proc = await spawn(*plan.prefix, *plan.argv, env=plan.env, cwd=plan.cwd, **self.io.spawn_options())
        except OSError as exc:  # the prefix's own program (unshare, nsenter) is missing or refused
            program = (plan.prefix or plan.argv)[0]
            await self.link.status(internal_error(exec_failure(f'exec: "{program}": {exc.strerror or exc}')))
            return
        self.io.started(proc)
        pumps = [asyncio.ensure_future(self._pump(read, channel)) for read, channel in self.io.outputs()]
        reader = asyncio.ensure_future(self._read_client())
        done = asyncio.ensure_future(asyncio.gather(proc.wait(), *pumps))
        try:
            await asyncio.wait({done, reader}, return_when=asyncio.FIRST_COMPLETED)
            if not done.done():  # the client went away: the command goes with it
                return
            await done
        finally:
            reader.cancel()
            if proc.returncode is None:
                _kill(proc)
                await proc.wait()
            for pump in pumps:
                pump.cancel()
            done.cancel()
        code = proc.returncode
        if code is not None and code < 0:
            code = 128 - code  # killed by a signal: the shell's and the runtime's 128 + N
        await self.link.status(success() if code == 0 else _exit_status(command, code))

    async def _pump(self, read: Callable[[], Awaitable[bytes]], channel: int) -> None:
        while True:
            data = await read()
            if not data:
                return
            try:
                await self.link.send(channel, data)
            except ConnectionError:
                return

    async def _read_client(self) -> None:
        """Stdin, resizes and close signals from the client; returns when it closes or goes away."""
        async for channel, payload in self.link.messages():
            if channel == STDIN:
                await self.io.write(payload)
            elif channel == RESIZE:
                self._resize(payload)
            elif channel == CLOSE and self.link.closes(payload, STDIN):
                self.io.end_input()

    def _resize(self, payload: bytes) -> None:
        try:
            size = json.loads(payload)
            self.io.resize(int(size["Width"]), int(size["Height"]))
        except (ValueError, TypeError, KeyError):
            log.debug("exec: ignored a resize message %r", payload[:100])


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
