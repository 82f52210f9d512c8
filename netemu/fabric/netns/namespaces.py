"""Named network namespaces of one cluster: names, creation, node setup, thread switching, GC.

Owns every network namespace the netns backend makes: ``netemu-<cluster>-<role>-<name>``,
bind-mounted at ``/run/netns/<name>`` by ``ip netns add`` (so ``ip -n``/``ip netns exec`` and
the CNI plugins find them), recorded in the cluster ledger (``netns NAME``) *before* they exist,
deleted by name, and collected after a crash from the ledger alone (processes whose
``/proc/PID/ns/net`` is one of the recorded namespaces are killed by pid first). Interfaces
netemu makes carry an ``ifalias`` starting with ``netemu`` (``OWNED_ALIAS``): the CNI bridge
plugin refuses to work in a namespace holding any other interface besides ``lo``.

``switched_to``/``call_in``/``acall_in`` run a function with one *thread* switched into a
namespace (``setns`` is per thread; Python 3.11 has no ``os.setns``, so ctypes): for making
sockets there, which stay in that namespace for good. Never on an event-loop thread and never
across an ``await``. Sync functions for setup and worker threads, ``a``-prefixed twins for the
loop (asyncio subprocesses).
"""
from __future__ import annotations

import asyncio
import ctypes
import json
import os
import re
import secrets
import select
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from hashlib import sha256
from pathlib import Path
from typing import Any, TypeVar

from netemu.cni.bridge import NETNS_PREFIX, OWNED_ALIAS_PREFIX
from netemu.errors import ClusterError, FabricError
from netemu.state import LEDGER, STATE_FILE, ClusterState, gc_cluster, is_alive

from . import ipbatch

T = TypeVar("T")

NETNS_RUN_DIR = Path("/run/netns")
NETNS_ETC_DIR = Path("/etc/netns")
OWNED_ALIAS = OWNED_ALIAS_PREFIX
IFNAMSIZ = 15  # usable characters of an interface name
CLONE_NEWNET = 0x40000000
LEDGER_KIND = "netns"
KILL_WAIT = 5.0  # seconds to wait for killed processes to exit before deleting their namespaces

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_MAX_NAME = 200
_libc = ctypes.CDLL(None, use_errno=True)

NamespaceId = tuple[int, int]  # (st_dev, st_ino) of an nsfs file


# ---------------------------------------------------------------- names

def check_name(name: str) -> str:
    """Refuses anything but a plain ``netemu-…`` name, so a bad ledger line or argument can
    never reach another program's namespace or a path outside ``/run/netns``."""
    rest = name[len(NETNS_PREFIX):]
    if not (name.startswith(NETNS_PREFIX) and _NAME.match(rest) and len(name) <= _MAX_NAME):
        raise FabricError(f"network namespace name {name!r}: must start with {NETNS_PREFIX!r} "
                          f"and hold only letters, digits, '_', '.', '-' (at most {_MAX_NAME})")
    return name


def namespace_name(cluster: str, role: str, name: str) -> str:
    """``netemu-<cluster>-<role>-<name>``, e.g. ``namespace_name("demo", "node", "node-1")``."""
    return check_name(f"{NETNS_PREFIX}{cluster}-{role}-{name}")


def interface_name(prefix: str, key: str) -> str:
    """A stable interface name of exactly 15 characters: ``prefix`` and a hash of ``key``."""
    room = IFNAMSIZ - len(prefix)
    if room < 6:
        raise FabricError(f"interface name prefix {prefix!r} leaves too little room for a hash")
    return prefix + sha256(key.encode()).hexdigest()[:room]


def random_mac() -> str:
    """A random locally administered unicast MAC (a bridge given one keeps it; otherwise it
    takes the lowest MAC of its ports and changes as they come and go)."""
    octets = bytearray(secrets.token_bytes(6))
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in octets)


def namespace_path(name: str) -> Path:
    return NETNS_RUN_DIR / check_name(name)


def namespace_id(path: str | os.PathLike[str]) -> NamespaceId:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def exists(name: str) -> bool:
    return namespace_path(name).exists()


# ---------------------------------------------------------------- create and delete

def _record(state: ClusterState | None, names: Sequence[str]) -> None:
    if state is not None:
        for name in names:
            state.record(LEDGER_KIND, name)


def _check_new(names: Sequence[str]) -> None:
    for name in names:
        check_name(name)
    taken = [name for name in names if exists(name)]
    if taken:
        raise FabricError(f"network namespaces exist already: {', '.join(taken)} (run `netemu gc`?)")
    if len(set(names)) != len(names):
        raise FabricError(f"duplicate network namespace names in {list(names)}")


def create(names: Sequence[str], state: ClusterState | None = None) -> None:
    """Records ``names`` in the ledger, creates the namespaces (one ``ip`` process) and brings
    ``lo`` up in each."""
    _check_new(names)
    _record(state, names)
    ipbatch.netns_batch([f"netns add {name}" for name in names])
    for name in names:
        ipbatch.batch(name, ["link set lo up"])


async def acreate(names: Sequence[str], state: ClusterState | None = None) -> None:
    _check_new(names)
    _record(state, names)
    await ipbatch.anetns_batch([f"netns add {name}" for name in names])
    await asyncio.gather(*(ipbatch.abatch(name, ["link set lo up"]) for name in names))


def _remove_etc(name: str) -> None:
    shutil.rmtree(NETNS_ETC_DIR / check_name(name), ignore_errors=True)


def delete(names: Sequence[str]) -> list[str]:
    """Deletes those of ``names`` that exist (idempotent) and their ``/etc/netns`` files;
    returns the names deleted. A namespace lives on while a process is inside it."""
    present = [name for name in names if exists(name)]
    ipbatch.netns_batch([f"netns del {name}" for name in present], force=True)
    for name in names:
        _remove_etc(name)
    return present


async def adelete(names: Sequence[str]) -> list[str]:
    present = [name for name in names if exists(name)]
    await ipbatch.anetns_batch([f"netns del {name}" for name in present], force=True)
    for name in names:
        _remove_etc(name)
    return present


def write_etc_file(name: str, filename: str, text: str) -> Path:
    """``/etc/netns/<name>/<filename>``: ``ip netns exec`` bind-mounts it over ``/etc/<filename>``
    for the command it runs (resolv.conf, hosts)."""
    if "/" in filename or filename in ("", ".", ".."):
        raise FabricError(f"/etc/netns file name {filename!r}: must be a plain file name")
    directory = NETNS_ETC_DIR / check_name(name)
    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    path = directory / filename
    path.write_text(text)
    return path


def exec_prefix(name: str) -> list[str]:
    """argv to put in front of a command so it runs in namespace ``name`` (with its
    ``/etc/netns`` files and a matching ``/sys``)."""
    return [ipbatch.ip_binary(), "netns", "exec", check_name(name)]


# ---------------------------------------------------------------- node setup

def node_commands(bridge: str = "cni0", mtu: int = 0) -> list[str]:
    """The ``ip`` lines that make a fresh namespace a node: ``lo`` up and an up bridge marked as
    netemu's (the CNI bridge plugin's guard trusts only marked interfaces)."""
    if not _IFNAME.match(bridge):
        raise FabricError(f"bridge name {bridge!r}: at most 15 letters, digits, '_', '.', '-'")
    mtu_part = f" mtu {mtu}" if mtu else ""
    return [
        "link set lo up",
        f"link add name {bridge} address {random_mac()}{mtu_part} type bridge",
        f"link set {bridge} alias {OWNED_ALIAS}",
        f"link set {bridge} up",
    ]


def setup_node(name: str, bridge: str = "cni0", mtu: int = 0) -> None:
    ipbatch.batch(check_name(name), node_commands(bridge, mtu))


async def asetup_node(name: str, bridge: str = "cni0", mtu: int = 0) -> None:
    await ipbatch.abatch(check_name(name), node_commands(bridge, mtu))


# ---------------------------------------------------------------- switching a thread

def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def _refuse_on_event_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise FabricError("refusing to switch the network namespace of an event-loop thread; use acall_in")


@contextmanager
def switched_to(name: str | Path) -> Iterator[None]:
    """Inside the block the calling thread lives in namespace ``name`` (a netemu namespace's
    name, or a ``Path`` to a namespace file such as the host handle of ``seal``); afterwards it
    is back in its own. Only for threads without a running event loop."""
    _refuse_on_event_loop()
    try:
        target = os.open(name if isinstance(name, Path) else namespace_path(name), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise FabricError(f"cannot open network namespace {name}: {exc.strerror}") from exc
    try:
        original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                _setns(target)
            except OSError as exc:
                raise FabricError(f"cannot enter network namespace {name}: {exc.strerror}") from exc
            try:
                yield
            finally:
                try:
                    _setns(original)
                except OSError as exc:  # the thread would stay in the wrong place: never carry on
                    raise FabricError(f"cannot return from network namespace {name}: {exc.strerror}") from exc
        finally:
            os.close(original)
    finally:
        os.close(target)


def call_in(name: str | Path, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``func(*args, **kwargs)`` on a fresh thread switched into ``name``; blocks until done.
    A socket made this way belongs to ``name`` for its whole life."""
    outcome: dict[str, Any] = {}

    def body() -> None:
        try:
            with switched_to(name):
                outcome["value"] = func(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=body, name=f"netns {name}", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


async def acall_in(name: str | Path, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call_in`` for the event loop: the work runs on its own thread, the loop keeps going."""
    return await asyncio.to_thread(call_in, name, func, *args, **kwargs)


# ---------------------------------------------------------------- garbage collection

def _ids(names: Sequence[str]) -> dict[NamespaceId, str]:
    ids = {}
    for name in names:
        try:
            ids[namespace_id(namespace_path(name))] = name
        except OSError:
            continue  # gone already (or never made)
    return ids


def processes_in(names: Sequence[str]) -> dict[int, str]:
    """pid -> namespace name for every process whose network namespace is one of ``names``
    (never this process)."""
    ids = _ids(names)
    found = {}
    if not ids:
        return found
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            name = ids.get(namespace_id(f"/proc/{entry.name}/ns/net"))
        except OSError:
            continue
        if name is not None:
            found[int(entry.name)] = name
    return found


def _kill(pid: int, name: str) -> int | None:
    """SIGKILL through a pidfd after checking, on that very process, that it is still inside
    namespace ``name`` (a recycled pid is never hit); returns the pidfd to wait on."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        if namespace_id(f"/proc/{pid}/ns/net") != namespace_id(namespace_path(name)):
            os.close(pidfd)
            return None
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:
        os.close(pidfd)
        return None
    return pidfd


def _wait_exited(pidfds: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for pidfd in pidfds:
        try:
            select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))
        finally:
            os.close(pidfd)


def collect(names: Sequence[str]) -> list[str]:
    """Kills the processes inside ``names``, then deletes those namespaces; returns one line
    per thing removed."""
    if not names:
        return []
    for name in names:
        check_name(name)
    removed = []
    pidfds = []
    for pid, name in sorted(processes_in(names).items()):
        pidfd = _kill(pid, name)
        if pidfd is not None:
            pidfds.append(pidfd)
            removed.append(f"process {pid} (in netns {name})")
    _wait_exited(pidfds, KILL_WAIT)
    removed += [f"netns {name}" for name in delete(names)]
    return removed


def recorded(directory: Path) -> list[str]:
    """The namespace names in a cluster's ledger, in order, each once; lines that are not a
    valid netemu name are ignored."""
    try:
        lines = (directory / LEDGER).read_text().splitlines()
    except OSError:
        return []
    names: dict[str, None] = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[0] == LEDGER_KIND:
            try:
                names[check_name(parts[1])] = None
            except FabricError:
                continue
    return list(names)


def collect_from_ledger(directory: Path) -> list[str]:
    """``collect`` for the namespaces a cluster's ledger lists (no liveness check)."""
    return collect(recorded(directory))


def collect_cluster_garbage(directory: Path) -> list[str]:
    """A dead cluster's namespaces (and their processes), then everything ``state.gc_cluster``
    removes. Fits ``ClusterState.create(collect_garbage=...)``; refuses a live cluster."""
    try:
        info = json.loads((directory / STATE_FILE).read_text())
    except (OSError, ValueError):
        info = {}
    if info and is_alive(info.get("pid", -1), info.get("start_time")):
        raise ClusterError(f'cluster "{directory.name}" is running (pid {info["pid"]}); use `netemu down`')
    return collect_from_ledger(directory) + gc_cluster(directory)
