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
across an ``await``. ``call_in`` uses a small pool of threads kept for the purpose: each runs one
call at a time and returns to its own namespace after it (a thread that cannot is retired, never
reused); idle threads end after a while. Sync functions for setup and worker threads,
``a``-prefixed twins for the loop (asyncio subprocesses). ``acreate`` and ``acollect`` gather
the namespaces asked for at the same time (many pods starting or stopping at once) into one run.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import json
import os
import queue
import re
import secrets
import shutil
import socket
import struct
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from hashlib import sha256
from pathlib import Path
from typing import Any, TypeVar

from netemu import statedir
from netemu.cni.bridge import NETNS_PREFIX, OWNED_ALIAS_PREFIX
from netemu.cni.netlink import setns
from netemu.errors import ClusterError, FabricError
from netemu.reaper import kill_checked, wait_exited
from netemu.state import LEDGER, STATE_FILE, ClusterState, gc_cluster, held_cluster_dirs, is_alive, list_clusters

from . import ipbatch

T = TypeVar("T")

NETNS_RUN_DIR = Path("/run/netns")
NETNS_ETC_DIR = Path("/etc/netns")
OWNED_ALIAS = OWNED_ALIAS_PREFIX
IFNAMSIZ = 15  # usable characters of an interface name
LEDGER_KIND = "netns"
KILL_WAIT = 5.0  # seconds to wait for killed processes to exit before deleting their namespaces
SWITCHING_THREADS = 8  # at most this many call_in calls run at once; more wait their turn
SWITCHING_IDLE = 5.0   # seconds an idle switching thread waits for work before it ends
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ_FLAGS = struct.Struct("16sH22x")  # struct ifreq holding ifr_flags (40 bytes)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_MAX_NAME = 200
_local = threading.local()  # per thread: "switching" (one of call_in's), "stranded" (could not return)

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


def loopback_up() -> None:
    """``lo`` up in this thread's namespace (an ioctl on a socket made here: no ``ip`` process)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        flags = _IFREQ_FLAGS.unpack(fcntl.ioctl(sock, SIOCGIFFLAGS, _IFREQ_FLAGS.pack(b"lo", 0)))[1]
        if not flags & IFF_UP:
            fcntl.ioctl(sock, SIOCSIFFLAGS, _IFREQ_FLAGS.pack(b"lo", flags | IFF_UP))


def _loopbacks_up(names: Sequence[str]) -> dict[str, FabricError]:
    """``lo`` up in each of ``names`` (on a switching thread); what failed, by name."""
    failed: dict[str, FabricError] = {}
    for name in names:
        try:
            with switched_to(name):
                loopback_up()
        except OSError as exc:
            failed[name] = FabricError(f"bringing lo up in network namespace {name}: {exc.strerror}")
        except FabricError as exc:
            failed[name] = exc
    return failed


def create(names: Sequence[str], state: ClusterState | None = None) -> None:
    """Records ``names`` in the ledger, creates the namespaces (one ``ip`` process) and brings
    ``lo`` up in each."""
    _check_new(names)
    _record(state, names)
    ipbatch.netns_batch([f"netns add {name}" for name in names])
    failed = call_in_thread(_loopbacks_up, names)
    if failed:
        raise next(iter(failed.values()))


async def acreate(names: Sequence[str], state: ClusterState | None = None) -> None:
    """``create`` for the event loop. Calls made while an ``ip`` run is under way are gathered
    into the next one; each caller gets its own namespaces or the error that concerns them."""
    _check_new(names)
    creator = _batcher(_creators, _make_namespaces)
    taken = [name for name in names if creator.pending(name)]
    if taken:
        raise FabricError(f"network namespaces are being created already: {', '.join(taken)}")
    _record(state, names)
    await creator.run(names)


async def _make_namespaces(names: list[str]) -> dict[str, Any]:
    failed: dict[str, Any] = dict(await ipbatch.anetns_add(names))
    made = [name for name in names if name not in failed]
    failed.update(await acall_in_thread(_loopbacks_up, made))
    return failed


class _Batcher:
    """Runs ``work`` for the names of concurrent calls of one event loop together: a call made
    while a run is under way joins the next one. ``work`` returns, per name, an exception (that
    name failed) or a value (that name's result); a name it leaves out gets None."""

    def __init__(self, work: Callable[[list[str]], Awaitable[dict[str, Any]]]) -> None:
        self._work = work
        self._waiting: list[tuple[str, asyncio.Future[Any]]] = []
        self._names: set[str] = set()  # waiting or in the run under way
        self._task: asyncio.Task[None] | None = None

    def pending(self, name: str) -> bool:
        return name in self._names

    async def run(self, names: Sequence[str]) -> list[Any]:
        """The results for ``names``, in order; raises the first failure among them. A caller
        that is cancelled still waits for its names' run: its cleanup must find what was made."""
        if not names:
            return []
        loop = asyncio.get_running_loop()
        futures = []
        for name in names:
            future: asyncio.Future[Any] = loop.create_future()
            self._waiting.append((name, future))
            self._names.add(name)
            futures.append(future)
        if self._task is None:
            self._task = loop.create_task(self._drain())
        try:
            await asyncio.wait(futures)
        except asyncio.CancelledError:
            await asyncio.wait(futures)
            for future in futures:
                future.exception()  # retrieved: nobody else will look
            raise
        for future in futures:
            error = future.exception()
            if error is not None:
                raise error
        return [future.result() for future in futures]

    async def _drain(self) -> None:
        batch: list[tuple[str, asyncio.Future[Any]]] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    outcome = await self._work([name for name, _ in batch])
                except Exception as exc:  # noqa: BLE001 - every waiter of the batch gets it
                    outcome = {name: _failure(name, exc) for name, _ in batch}
                self._settle(batch, outcome)
                batch = []
        finally:
            self._task = None
            unsettled, self._waiting = batch + self._waiting, []
            self._settle(unsettled, {name: FabricError(f"network namespace {name}: interrupted")
                                     for name, _ in unsettled})

    def _settle(self, batch: list[tuple[str, asyncio.Future[Any]]], outcome: dict[str, Any]) -> None:
        for name, future in batch:
            self._names.discard(name)
            if future.done():
                continue
            result = outcome.get(name)
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


def _failure(name: str, cause: Exception) -> FabricError:
    error = FabricError(f"network namespace {name}: {cause}")
    error.__cause__ = cause
    return error


_creators: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batcher] = weakref.WeakKeyDictionary()
_collectors: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batcher] = weakref.WeakKeyDictionary()


def _batcher(batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batcher],
             work: Callable[[list[str]], Awaitable[dict[str, Any]]]) -> _Batcher:
    loop = asyncio.get_running_loop()
    batcher = batchers.get(loop)
    if batcher is None:
        batcher = batchers[loop] = _Batcher(work)
    return batcher


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
                setns(target)
            except OSError as exc:
                raise FabricError(f"cannot enter network namespace {name}: {exc.strerror}") from exc
            try:
                yield
            finally:
                try:
                    setns(original)
                except OSError as exc:  # the thread would stay in the wrong place: never carry on
                    _local.stranded = True
                    raise FabricError(f"cannot return from network namespace {name}: {exc.strerror}") from exc
        finally:
            os.close(original)
    finally:
        os.close(target)


class _SwitchingThreads:
    """The threads ``call_in`` runs on. Each takes one call at a time, runs it inside
    ``switched_to`` and is back in its own namespace before it takes the next; one that could
    not return is retired at once. Threads start on demand (inheriting the namespace of the
    thread that asked, as a fresh thread per call did; the call itself always runs in the
    namespace it names) and end after ``idle`` seconds without work."""

    def __init__(self, limit: int, idle: float) -> None:
        self._limit = limit
        self._idle = idle
        self._jobs: queue.SimpleQueue[tuple[concurrent.futures.Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._waiting = 0  # threads blocked on the queue, ready for a job

    def submit(self, job: Callable[[], T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            self._jobs.put((future, job))
            try:
                self._add_thread_if_needed()
            except RuntimeError as exc:  # no thread can start: fail now unless one is there to serve it
                if self._threads == 0:
                    future.cancel()
                    raise FabricError(f"cannot start a thread for network namespace work: {exc}") from exc
        return future

    def _add_thread_if_needed(self) -> None:
        """Under the lock: one more thread when queued jobs outnumber the waiting threads."""
        if self._jobs.qsize() > self._waiting and self._threads < self._limit:
            threading.Thread(target=self._serve, name="netemu-netns", daemon=True).start()
            self._threads += 1

    def _serve(self) -> None:
        _local.switching = True
        while True:
            with self._lock:
                self._waiting += 1
            try:
                future, job = self._jobs.get(timeout=self._idle)
            except queue.Empty:
                with self._lock:
                    self._waiting -= 1
                    if self._jobs.empty():  # jobs are queued under this lock: none can be missed
                        self._threads -= 1
                        return
                continue
            with self._lock:
                self._waiting -= 1
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(job())
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                    future.set_exception(exc)
            if getattr(_local, "stranded", False):  # maybe still in a foreign namespace: never reuse
                with self._lock:
                    self._threads -= 1
                    try:
                        self._add_thread_if_needed()
                    except RuntimeError:
                        pass  # the threads left serve the queue
                return


_switching = _SwitchingThreads(SWITCHING_THREADS, SWITCHING_IDLE)


def _on_switching_thread() -> bool:
    return getattr(_local, "switching", False)


def _switched_call(name: str | Path, func: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    with switched_to(name):
        return func(*args, **kwargs)


def call_in_thread(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``func(*args, **kwargs)`` on a switching thread, for work that switches it itself with
    ``switched_to``; blocks until done."""
    if _on_switching_thread():
        return func(*args, **kwargs)
    return _switching.submit(lambda: func(*args, **kwargs)).result()


async def acall_in_thread(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.wrap_future(_switching.submit(lambda: func(*args, **kwargs)))


def call_in(name: str | Path, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``func(*args, **kwargs)`` on a thread switched into ``name``; blocks until done. A socket
    made this way belongs to ``name`` for its whole life. Called from inside another
    ``call_in``, it switches that same thread there and back."""
    if _on_switching_thread():
        return _switched_call(name, func, args, kwargs)
    return _switching.submit(lambda: _switched_call(name, func, args, kwargs)).result()


async def acall_in(name: str | Path, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call_in`` for the event loop: the work runs on a switching thread, the loop keeps going."""
    return await asyncio.wrap_future(_switching.submit(lambda: _switched_call(name, func, args, kwargs)))


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
    """SIGKILL ``pid`` once it is checked, on that very process, to be inside namespace ``name``."""
    return kill_checked(pid, lambda p: namespace_id(f"/proc/{p}/ns/net") == namespace_id(namespace_path(name)))


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
    wait_exited(pidfds, KILL_WAIT)
    removed += [f"netns {name}" for name in delete(names)]
    return removed


async def acollect(names: Sequence[str]) -> list[str]:
    """``collect`` for the event loop (on a worker thread). Calls made while one runs are
    gathered into the next run (one ``/proc`` scan and one ``ip`` process for all of them);
    returns the lines about ``names``."""
    for name in names:
        check_name(name)
    results = await _batcher(_collectors, _collect_batch).run(list(dict.fromkeys(names)))
    return [line for lines in results for line in lines]


async def _collect_batch(names: list[str]) -> dict[str, Any]:
    try:
        lines = await asyncio.to_thread(collect, names)
    except FabricError:
        if len(names) == 1:
            raise
        return {name: await _collect_one(name) for name in names}  # whose is the failure?
    return {name: [line for line in lines if line.endswith((f" {name}", f" {name})"))] for name in names}


async def _collect_one(name: str) -> list[str] | FabricError:
    try:
        return await asyncio.to_thread(collect, [name])
    except FabricError as exc:
        return exc


def recorded(directory: Path) -> list[str]:
    """The namespace names in a cluster's ledger, in order, each once; lines that are not a
    valid netemu name are ignored."""
    try:
        lines = (statedir.read_file(directory, LEDGER) or b"").decode(errors="replace").splitlines()
    except OSError:
        return []
    return _names_in(lines)


def _names_in(lines: Sequence[str]) -> list[str]:
    names: dict[str, None] = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[0] == LEDGER_KIND:
            try:
                names[check_name(parts[1])] = None
            except FabricError:
                continue
    return list(names)


def held_by_running_clusters(but: Path | None = None) -> set[str]:
    """The namespaces the ledgers of running clusters list (any state root, any owner: read only
    to spare what they list, so read as they are; ``but`` excepted)."""
    held: set[str] = set()
    for directory in held_cluster_dirs():
        if directory != but:
            try:
                held.update(_names_in((directory / LEDGER).read_text(errors="replace").splitlines()))
            except OSError:
                continue
    return held


def collect_from_ledger(directory: Path) -> list[str]:
    """``collect`` for the namespaces a cluster's ledger lists (no liveness check), except any
    that a running cluster's ledger lists too: a forged or stale line never reaches those."""
    held = held_by_running_clusters(but=directory)
    return collect([name for name in recorded(directory) if name not in held])


def orphans(root: Path) -> list[str]:
    """``netemu-`` namespaces in ``/run/netns`` that no cluster accounts for: no ledger of a
    cluster under ``root`` (running or dead) and no ledger a running cluster holds lists them,
    as a killed test run leaves them."""
    try:
        present = sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []
    accounted = held_by_running_clusters()
    for cluster in list_clusters(root):
        accounted.update(recorded(cluster.directory))
    out = []
    for name in present:
        try:
            check_name(name)
        except FabricError:
            continue  # not netemu's
        if name not in accounted:
            out.append(name)
    return out


def collect_cluster_garbage(directory: Path) -> list[str]:
    """A dead cluster's namespaces (and their processes), then everything ``state.gc_cluster``
    removes. Fits ``ClusterState.create(collect_garbage=...)``; refuses a live cluster."""
    try:
        info = json.loads(statedir.read_file(directory, STATE_FILE) or b"{}")
    except (OSError, ValueError):
        info = {}
    if info and is_alive(info.get("pid", -1), info.get("start_time")):
        raise ClusterError(f'cluster "{directory.name}" is running (pid {info["pid"]}); use `netemu down`')
    return collect_from_ledger(directory) + gc_cluster(directory)
