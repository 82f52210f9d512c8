"""Running iproute2's ``ip`` for the netns backend.

Owns the three ways netemu talks to ``ip``: a batch of commands inside one named namespace
(``ip -n NS -batch -``: one process for a whole node or pod), a JSON query inside one named
namespace (``ip -n NS -j ...``), and a batch of ``netns add``/``netns del`` lines (the only
commands that run without ``-n``). Nothing here ever runs a link, address, route or rule command
in the caller's own namespace. Sync functions for worker threads and setup; ``a``-prefixed
twins use asyncio subprocesses for the event loop. Failures raise ``FabricError`` naming the
failing command.
"""
from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

from netemu.errors import FabricError
from netemu.spawn import spawn

IP_TIMEOUT = 30.0
NETNS_RUN_DIR = "/run/netns"
_FALLBACK_PATH = "/usr/sbin:/sbin:/usr/bin:/bin"
_FAILED_LINE = re.compile(r"Command failed -:(\d+)")


@functools.cache
def ip_binary() -> str:
    found = shutil.which("ip", path=os.environ.get("PATH", "") + os.pathsep + _FALLBACK_PATH)
    if found is None:
        raise FabricError("the netns backend needs iproute2's `ip` (Debian package iproute2)")
    return found


def _namespace_args(netns: str) -> list[str]:
    if not netns:
        raise FabricError("refusing to run ip without a namespace: netemu never configures the caller's own network")
    return ["-n", netns]


def _netns_lines(lines: Sequence[str]) -> None:
    bad = [line for line in lines if line.split()[:2] not in (["netns", "add"], ["netns", "del"], ["netns", "delete"])]
    if bad:
        raise FabricError(f"only `netns add/del` lines may run outside a namespace, got {bad!r}")


def _failure(argv: Sequence[str], commands: Sequence[str], returncode: int, stderr: str) -> FabricError:
    what = " ".join(argv)
    match = _FAILED_LINE.search(stderr)
    if match and 0 < int(match.group(1)) <= len(commands):
        what += f" (line {match.group(1)}: {commands[int(match.group(1)) - 1]})"
    message = " ".join(line.strip() for line in stderr.splitlines() if line.strip() and not _FAILED_LINE.match(line))
    return FabricError(f"{what} failed with status {returncode}: {message or 'no message'}")


def _run(argv: list[str], commands: Sequence[str] = ()) -> str:
    stdin = "".join(f"{line}\n" for line in commands) if commands else None
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=IP_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FabricError(f"{' '.join(argv)}: {exc}") from exc
    if proc.returncode != 0:
        raise _failure(argv, commands, proc.returncode, proc.stderr)
    return proc.stdout


async def _arun(argv: list[str], commands: Sequence[str] = ()) -> str:
    stdin = "".join(f"{line}\n" for line in commands).encode() if commands else None
    try:
        proc = await spawn(
            *argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(stdin), IP_TIMEOUT)
    except (TimeoutError, OSError) as exc:
        raise FabricError(f"{' '.join(argv)}: {exc!r}") from exc
    if proc.returncode != 0:
        raise _failure(argv, commands, proc.returncode, err.decode(errors="replace"))
    return out.decode()


def batch(netns: str, commands: Sequence[str], *, force: bool = False) -> None:
    """Runs ``commands`` (``ip`` argument lines such as ``link set lo up``) inside ``netns`` in
    one ``ip`` process; stops at the first failure unless ``force``."""
    if commands:
        _run([ip_binary(), *_namespace_args(netns), *(["-force"] if force else []), "-batch", "-"], commands)


async def abatch(netns: str, commands: Sequence[str], *, force: bool = False) -> None:
    if commands:
        await _arun([ip_binary(), *_namespace_args(netns), *(["-force"] if force else []), "-batch", "-"], commands)


def query(netns: str, *args: str) -> list[dict[str, Any]]:
    """``ip -n NETNS -j ARGS``, decoded (e.g. ``query(ns, "-d", "link", "show")``)."""
    out = _run([ip_binary(), *_namespace_args(netns), "-j", *args])
    return json.loads(out) if out.strip() else []


async def aquery(netns: str, *args: str) -> list[dict[str, Any]]:
    out = await _arun([ip_binary(), *_namespace_args(netns), "-j", *args])
    return json.loads(out) if out.strip() else []


def netns_batch(lines: Sequence[str], *, force: bool = False) -> None:
    """``netns add NAME`` / ``netns del NAME`` lines in one ``ip`` process."""
    if lines:
        _netns_lines(lines)
        _run([ip_binary(), *(["-force"] if force else []), "-batch", "-"], lines)


async def anetns_batch(lines: Sequence[str], *, force: bool = False) -> None:
    if lines:
        _netns_lines(lines)
        await _arun([ip_binary(), *(["-force"] if force else []), "-batch", "-"], lines)


def _failed_lines(stderr: str) -> dict[int, str]:
    """Line number (1-based) -> message, for every line an ``ip -force -batch`` run reports as
    failed (its messages come before its ``Command failed -:N``)."""
    failed: dict[int, str] = {}
    messages: list[str] = []
    for line in stderr.splitlines():
        match = _FAILED_LINE.match(line.strip())
        if match:
            failed[int(match.group(1))] = " ".join(messages) or "no message"
            messages = []
        elif line.strip():
            messages.append(line.strip())
    return failed


async def anetns_add(names: Sequence[str]) -> dict[str, FabricError]:
    """``netns add`` for every name in one ``ip -force -batch`` run (one failure does not stop
    the others); returns the error of each name that was not made. When ``ip`` fails, a name
    counts as made only if it reported no failure for its line and ``/run/netns/NAME`` exists
    now (the caller checked that none existed before)."""
    if not names:
        return {}
    lines = [f"netns add {name}" for name in names]
    _netns_lines(lines)
    argv = [ip_binary(), "-force", "-batch", "-"]
    try:
        proc = await spawn(*argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _out, err = await asyncio.wait_for(proc.communicate("".join(f"{line}\n" for line in lines).encode()),
                                           IP_TIMEOUT)
    except (TimeoutError, OSError) as exc:
        return {name: FabricError(f"{' '.join(argv)} (netns add {name}): {exc!r}") for name in names}
    if proc.returncode == 0:
        return {}
    stderr = err.decode(errors="replace")
    reported = _failed_lines(stderr)
    failed = {}
    for number, (name, line) in enumerate(zip(names, lines), start=1):
        if number in reported or not os.path.exists(os.path.join(NETNS_RUN_DIR, name)):
            why = reported.get(number) or " ".join(stderr.split()) or f"status {proc.returncode}"
            failed[name] = FabricError(f"{' '.join(argv)} (line {number}: {line}) failed: {why}")
    return failed
