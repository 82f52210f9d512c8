"""Probe checks (httpGet, tcpSocket, exec) and the threshold logic around them.

``check`` runs one probe once and says whether it succeeded, as the kubelet's prober does:
HTTP 200-399, a TCP connect that completes, an exec that exits 0 — each within
``timeoutSeconds``; ``check_output`` also says why it failed, in the prober's words (the
``Unhealthy`` event's message). ``ProbeState`` applies successThreshold/failureThreshold.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import tempfile
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from netemu.api.objects import Container, Probe
from netemu.spawn import spawn

MakeSocket = Callable[[int, int], socket.socket]  # (family, type) -> a non-blocking socket


def resolve_port(container: Container, port: int | str) -> int | None:
    if isinstance(port, int):
        return port
    if port.isdigit():
        return int(port)
    for p in container.ports:
        if p.name == port:
            return p.container_port
    return None


async def _connect(host: str, port: int, make_socket: MakeSocket | None) -> tuple[asyncio.StreamReader,
                                                                                   asyncio.StreamWriter]:
    """A connection from the node, as the kubelet's prober makes it: with a socket from the
    fabric (made in the node's network), never one created by address alone."""
    if make_socket is None:
        return await asyncio.open_connection(host, port)
    sock = make_socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


class ProbeFailed(Exception):
    """A probe's failure, with the prober's output as its message."""


def _dial_error(host: str, port: int, exc: OSError) -> str:
    """Go's net error text for a failed connect (``dial tcp 10.0.0.1:80: connect: connection refused``)."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    return f"dial tcp {where}: connect: {reason}"


async def _http_get(host: str, port: int, path: str, headers: Sequence[tuple[str, str]],
                    make_socket: MakeSocket | None) -> bool:
    reader, writer = await _connect(host, port, make_socket)
    try:
        lines = [f"GET {path or '/'} HTTP/1.1", f"Host: {host}:{port}", "User-Agent: kube-probe/1.31",
                 "Accept: */*", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        status = await reader.readline()
        parts = status.split()
        if len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400:
            return True
        code = parts[1].decode(errors="replace") if len(parts) >= 2 else "none"
        raise ProbeFailed(f"HTTP probe failed with statuscode: {code}")
    finally:
        writer.close()


async def _tcp(host: str, port: int, make_socket: MakeSocket | None) -> bool:
    _, writer = await _connect(host, port, make_socket)
    writer.close()
    return True


EXEC_OUTPUT_LIMIT = 10 * 1024  # bytes of an exec probe's output kept, as the kubelet keeps them


async def _exec(argv: Sequence[str], env: Mapping[str, str], prefix: Sequence[str]) -> bool:
    # Output goes to a file, not a pipe: a child the command leaves in the background must not
    # hold the probe open (asyncio's wait() waits for pipes to close).
    with tempfile.TemporaryFile() as output:
        proc = await spawn(
            *prefix, *argv, env=dict(env), stdin=asyncio.subprocess.DEVNULL,
            stdout=output, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        try:
            if await proc.wait() == 0:
                return True
            output.seek(0)
            raise ProbeFailed(output.read(EXEC_OUTPUT_LIMIT).decode(errors="replace"))
        finally:
            # The probe ran in its own session: on a timeout take its children along, not just the shell.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if proc.returncode is None:
                await proc.wait()


async def check(probe: Probe, container: Container, pod_ip: str, env: Mapping[str, str],
                prefix: Sequence[str] = (), make_socket: MakeSocket | None = None) -> bool:
    """Run ``probe`` once; False on any failure, including a timeout or an unresolvable port."""
    ok, _ = await check_output(probe, container, pod_ip, env, prefix, make_socket)
    return ok


async def check_output(probe: Probe, container: Container, pod_ip: str, env: Mapping[str, str],
                       prefix: Sequence[str] = (), make_socket: MakeSocket | None = None) -> tuple[bool, str]:
    """Run ``probe`` once: whether it succeeded and, when not, the prober's output."""
    host, port, what = pod_ip, None, ""
    try:
        if probe.http_get is not None:
            get = probe.http_get
            host, port = get.host or pod_ip, resolve_port(container, get.port)
            if port is None:
                return False, f"unknown port {get.port!r} of container {container.name}"
            what = f'Get "{get.scheme.lower()}://{host}:{port}{get.path or "/"}"'
            coro = _http_get(host, port, get.path, [(h.name, h.value) for h in get.http_headers], make_socket)
        elif probe.tcp_socket is not None:
            host, port = probe.tcp_socket.host or pod_ip, resolve_port(container, probe.tcp_socket.port)
            if port is None:
                return False, f"unknown port {probe.tcp_socket.port!r} of container {container.name}"
            coro = _tcp(host, port, make_socket)
        elif probe.exec is not None:
            what = f"command {list(probe.exec.command)}"
            coro = _exec(probe.exec.command, env, prefix)
        else:
            return False, "missing probe handler"
        return await asyncio.wait_for(coro, timeout=max(probe.timeout_seconds, 1)), ""
    except ProbeFailed as exc:
        return False, str(exc)
    except asyncio.TimeoutError:
        if probe.exec is not None:
            return False, f"{what} timed out"
        if what:
            return False, f"{what}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        return False, f"dial tcp {host}:{port}: i/o timeout"
    except OSError as exc:
        dial = _dial_error(host, port or 0, exc)
        return False, f"{what}: {dial}" if what and probe.http_get is not None else dial
    except ValueError as exc:
        return False, str(exc)


@dataclass
class ProbeState:
    """Consecutive-result counting; ``result`` flips only when a threshold is reached."""

    probe: Probe
    result: bool
    successes: int = 0
    failures: int = 0

    def record(self, ok: bool) -> bool:
        """Record one result; returns True when ``result`` changed."""
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if not self.result and self.successes >= max(self.probe.success_threshold, 1):
                self.result = True
                return True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.result and self.failures >= max(self.probe.failure_threshold, 1):
                self.result = False
                return True
        return False
