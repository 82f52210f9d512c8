"""Probes that touch the network: real curl, dig and nslookup, and in-process TCP/UDP connects.

Nothing here knows about clusters. Tools run through a ``Runner`` — ``run_host`` (an asyncio
subprocess: the cluster serves on the same event loop, so nothing may block it) or a runner the
caller builds around ``Cluster.exec`` — and their output is parsed into small result records.
Transport outcomes are named as a client sees them: ``ok``, ``refused``, ``reset``, ``timeout``,
``closed`` (accepted, then closed without an answer) and ``error``.

``python -m netemu.scenario.probes tcp|udp HOST PORT TIMEOUT [SEND]`` runs a connect probe and
prints its result as JSON: the runner execs it inside a pod when the backend gives pods their
own network namespace.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from typing import Awaitable, Callable

from netemu.spawn import spawn

OUTCOMES = ("ok", "refused", "reset", "timeout", "closed", "error")

Runner = Callable[[list[str], float], Awaitable[tuple[int, str, str]]]


async def run_host(argv: list[str], timeout: float) -> tuple[int, str, str]:
    """Run a tool on the host without blocking the event loop: (exit status, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    try:
        proc = await spawn(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True)
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: command not found (install it to use this step)\n"
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return 124, "", f"{argv[0]} did not finish within {timeout:g}s\n"
    except BaseException:  # cancelled: leave no tool running behind us
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


# --------------------------------------------------------------------------- curl


@dataclass
class HttpResult:
    outcome: str
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    exit: int = 0
    stderr: str = ""

    def transcript(self) -> str:
        parts = []
        if self.status is not None:
            parts.append(f"HTTP status {self.status}")
            parts += [f"{k}: {v}" for k, v in self.headers.items()]
            parts.append("")
            parts.append(self.body.rstrip("\n"))
        if self.stderr.strip():
            parts.append(self.stderr.rstrip("\n"))
        if self.outcome != "ok":
            parts.append(f"(curl exit status {self.exit}: {self.outcome})")
        return "\n".join(parts)


def curl_argv(url: str, *, method: str | None = None, headers: dict[str, str] | None = None,
              data: str | None = None, source_ip: str | None = None, timeout: float = 5,
              args: list[str] | None = None) -> list[str]:
    argv = ["curl", "-sS", "-i", "--noproxy", "*", "--max-time", f"{timeout:g}"]
    if method:
        argv += ["-X", method]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    if data is not None:
        argv += ["--data-binary", data]
    extra = list(args or [])
    if source_ip and "--interface" not in extra:
        argv += ["--interface", source_ip]
    return argv + extra + ["--", url]


def curl_outcome(exit_status: int, stderr: str) -> str:
    if exit_status == 0:
        return "ok"
    text = stderr.lower()
    if exit_status == 28 or "timed out" in text:
        return "timeout"
    if "reset" in text:
        return "reset"
    if exit_status == 7 and "unreachable" not in text and "no route" not in text:
        return "refused"  # curl 7.88+ says "Couldn't connect to server" for ECONNREFUSED
    if exit_status == 52:
        return "closed"
    return "error"


def parse_curl(exit_status: int, stdout: str, stderr: str) -> HttpResult:
    """curl -i output: status line and headers (skipping 1xx blocks), then the body."""
    result = HttpResult(outcome=curl_outcome(exit_status, stderr), exit=exit_status, stderr=stderr)
    rest = stdout
    while rest.startswith("HTTP/"):
        head, sep, body = rest.partition("\r\n\r\n")
        if not sep:
            head, sep, body = rest.partition("\n\n")
        lines = head.splitlines()
        m = re.match(r"HTTP/\S+\s+(\d{3})", lines[0])
        if not m:
            break
        result.status = int(m.group(1))
        result.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            result.headers[name.strip()] = value.strip()
        rest = body
        if not 100 <= result.status < 200:
            break
    result.body = rest if result.status is not None else stdout
    return result


async def curl(url: str, run: Runner = run_host, *, timeout: float = 5, **options: object) -> HttpResult:
    argv = curl_argv(url, timeout=timeout, **options)  # type: ignore[arg-type]
    code, out, err = await run(argv, timeout + 5)
    return parse_curl(code, out, err)


# --------------------------------------------------------------------------- connect


@dataclass
class ConnectResult:
    outcome: str
    reply: str = ""
    detail: str = ""

    def transcript(self) -> str:
        lines = [f"outcome: {self.outcome}" + (f" ({self.detail})" if self.detail else "")]
        if self.reply:
            lines.append("reply: " + self.reply.rstrip("\n"))
        return "\n".join(lines)


def _error_outcome(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    return "error"


async def _read_reply(reader: asyncio.StreamReader, timeout: float, quiet: float = 0.1,
                      enough: Callable[[str], bool] | None = None) -> bytes:
    """What the peer sends until it closes, ``enough`` approves it, it goes quiet after answering,
    or ``timeout`` passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    data = b""
    while len(data) < 1 << 20:
        left = deadline - loop.time()
        if left <= 0:
            break
        try:
            chunk = await asyncio.wait_for(reader.read(65536), min(left, quiet) if data else left)
        except asyncio.TimeoutError:
            break
        if not chunk:
            break
        data += chunk
        if enough is not None and enough(data.decode(errors="replace")):
            break
    return data


async def tcp_probe(host: str, port: int, *, source_ip: str | None = None, send: str | None = None,
                    timeout: float = 2, enough: Callable[[str], bool] | None = None) -> ConnectResult:
    local = (source_ip, 0) if source_ip else None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, local_addr=local), timeout)
    except BaseException as exc:  # noqa: BLE001 - every transport failure is an outcome
        if isinstance(exc, asyncio.CancelledError):
            raise
        return ConnectResult(_error_outcome(exc), detail=str(exc) or type(exc).__name__)
    try:
        if send is None:
            return ConnectResult("ok")
        writer.write(send.encode())
        await writer.drain()
        reply = await _read_reply(reader, timeout, enough=enough)
        return ConnectResult("ok", reply.decode(errors="replace"))
    except (ConnectionError, OSError) as exc:
        return ConnectResult(_error_outcome(exc), detail=str(exc))
    finally:
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.done: asyncio.Future[tuple[str, bytes]] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.done.done():
            self.done.set_result(("ok", data))

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_result((_error_outcome(exc), str(exc).encode()))


async def udp_probe(host: str, port: int, *, source_ip: str | None = None, send: str | None = None,
                    timeout: float = 2, enough: Callable[[str], bool] | None = None) -> ConnectResult:
    """Send one datagram; a reply is ``ok``, an ICMP port unreachable ``refused``, silence ``timeout``."""
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.create_datagram_endpoint(
            _Udp, remote_addr=(host, port), local_addr=(source_ip, 0) if source_ip else None)
    except OSError as exc:
        return ConnectResult("error", detail=str(exc))
    try:
        transport.sendto((send if send is not None else "\n").encode())
        try:
            outcome, data = await asyncio.wait_for(asyncio.shield(protocol.done), timeout)
        except asyncio.TimeoutError:
            return ConnectResult("timeout", detail=f"no reply within {timeout:g}s")
        if outcome == "ok":
            return ConnectResult("ok", data.decode(errors="replace"))
        return ConnectResult(outcome, detail=data.decode(errors="replace"))
    finally:
        transport.close()


def probe_argv(protocol: str, host: str, port: int, timeout: float, send: str | None) -> list[str]:
    """The command that runs a connect probe inside a pod (prints a JSON ``ConnectResult``)."""
    argv = [sys.executable, "-m", "netemu.scenario.probes", protocol, host, str(port), f"{timeout:g}"]
    return argv + ([send] if send is not None else [])


def parse_probe_output(code: int, stdout: str, stderr: str) -> ConnectResult:
    try:
        return ConnectResult(**json.loads(stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError, TypeError):
        return ConnectResult("error", detail=f"probe exited {code}: {(stderr or stdout).strip()[:500]}")


# --------------------------------------------------------------------------- DNS


@dataclass
class DnsResult:
    outcome: str                  # ok, timeout, error
    rcode: str = ""
    answers: list[str] = field(default_factory=list)
    records: list[str] = field(default_factory=list)
    output: str = ""

    def transcript(self) -> str:
        return self.output.rstrip("\n") or f"outcome: {self.outcome}"


def _server_argv(server: str) -> tuple[str, str | None]:
    host, _, port = server.rpartition(":") if server.count(":") == 1 else (server, "", "")
    return (host or server), (port or None)


def dig_argv(name: str, rtype: str, server: str, timeout: float) -> list[str]:
    host, port = _server_argv(server)
    argv = ["dig", f"@{host}"] + (["-p", port] if port else [])
    return argv + [name, rtype, f"+time={max(1, round(timeout))}", "+tries=1", "+noall", "+comments",
                   "+answer"]


def parse_dig(code: int, stdout: str, stderr: str) -> DnsResult:
    text = stdout + stderr
    status = re.search(r"status: ([A-Z]+)", stdout)
    if status is None:
        outcome = "timeout" if "timed out" in text or "no servers could be reached" in text else "error"
        return DnsResult(outcome, output=text)
    records, answers = [], []
    for line in stdout.splitlines():
        if not line.strip() or line.startswith(";"):
            continue
        parts = line.split(None, 4)
        if len(parts) == 5:
            records.append(" ".join(parts))
            answers.append(parts[4].strip())
    return DnsResult("ok", status.group(1), answers, records, text)


def nslookup_argv(name: str, rtype: str, server: str, timeout: float) -> list[str]:
    host, port = _server_argv(server)
    argv = ["nslookup", f"-type={rtype}", f"-timeout={max(1, round(timeout))}", "-retry=0"]
    return argv + ([f"-port={port}"] if port else []) + [name, host]


def parse_nslookup(code: int, stdout: str, stderr: str) -> DnsResult:
    text = stdout + stderr
    if "timed out" in text or "no servers could be reached" in text:
        return DnsResult("timeout", output=text)
    failed = re.search(r"server can't find [^:]*: ([A-Z]+)", text)
    if failed:
        return DnsResult("ok", failed.group(1), output=text)
    answers, records, in_answer = [], [], False
    for line in stdout.splitlines():
        if line.startswith(("Non-authoritative answer", "Name:")) or "canonical name" in line:
            in_answer = True
        if not in_answer:
            continue
        for pattern in (r"^Address:\s*(\S+)$", r"service = (.+)$", r"canonical name = (\S+)$", r"text = (.+)$",
                        r"name = (\S+)$"):
            m = re.search(pattern, line.strip())
            if m:
                answers.append(m.group(1).strip())
                records.append(line.strip())
                break
    if code != 0 and not answers:
        return DnsResult("error", output=text)
    return DnsResult("ok", "NOERROR", answers, records, text)


async def _main(args: list[str]) -> int:
    protocol, host, port, timeout = args[0], args[1], int(args[2]), float(args[3])
    send = args[4] if len(args) > 4 else None
    probe = tcp_probe if protocol == "tcp" else udp_probe
    result = await probe(host, port, source_ip=os.environ.get("POD_IP"), send=send, timeout=timeout)
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main(sys.argv[1:])))
