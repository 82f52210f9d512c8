"""The sandbox helper: a second process for the file work of setting up pods.

Bringing up a pod writes files: the CNI plugin's IP reservation (host-local's files and lock),
the pod's resolv.conf and hosts, and each volume's files (the service account token's among
them), about a third of what a built-in-image pod costs the cluster's process, all of it on its
one core. A container runtime does this work in processes of its own (the CNI plugin is a
program it runs); here one helper process does it (netemu.sandboxd, the same functions the
cluster would call), on the machine's other core, while the cluster's loop goes on with the
controllers, the kubelets' bookkeeping, the proxy and DNS.

The helper is started with the cluster's ``start_after``-th piece of this work (``start``: a fork
and exec done there and then) and used at once (``ready``). Started in the background and used
once it had answered, it came too late: while 1,000 pods are set up a turn of the loop takes
seconds, and 280 to 970 of 1,000 pods applied together were set up by the cluster itself first,
against the first 50 now. ``run(helper, operation, *args)`` is the one way to do a
piece of this work: through the helper when it is ready, otherwise (not started yet, gone, or a
request too big for one message, such as a volume of a large ConfigMap) by calling the same
function here. Requests are served in order, so a pod's CNI DEL comes after its ADD. The helper
dies with the cluster (netemu.spawn.cluster_child_setup) and exits when ``close`` closes its
socket.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import pickle
import socket
import subprocess
from pathlib import Path
from typing import Any, Callable

from netemu.sandboxd import OPERATIONS, decode_error
from netemu.spawn import end_helper, start_helper

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024  # bytes; well inside a socket buffer, so one message always fits


class Unavailable(Exception):
    """The helper cannot do this request: it is not running, went away before answering, or the
    request is too big for one message. The caller does the work itself."""


class Lost(Unavailable):
    """The helper went away with the request sent: it may have been done, or partly."""


class SandboxHelper:
    """``start``, ``ready``, ``call(operation, *args)``, ``close``."""

    def __init__(self, *, record: Callable[[int], None], log_path: Path | None = None, start_after: int = 0) -> None:
        self.record = record              # records the helper in the cluster's ledger (from its child)
        self.log_path = log_path
        self.start_after = start_after    # requests done here before the helper is started
        self.ready = False
        self.answered = 0                 # requests the helper has answered
        self.signing_key: bytes | None = None  # the cluster's token key (PEM), once given to the helper
        self.can_sign = False             # the helper has the key: it signs pods' tokens
        self._uses = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._started = False
        self._ending: asyncio.Future[None] | None = None  # the helper's process being reaped
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._outbox: collections.deque[bytes] = collections.deque()
        self._writing = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def start(self) -> None:
        """Start the helper, now (a fork and exec: milliseconds, without waiting for the loop,
        whose turns take seconds while thousands of pods are set up), and use it at once:
        requests are served in order, so the key goes first and every request after it finds it.
        A helper that cannot run closes its end, and whatever was sent to it meanwhile is Lost
        and done here (see ``run``)."""
        if self._started:
            return
        self._started = True
        try:
            self._process, ours = start_helper("netemu.sandboxd", record=self.record, log_path=self.log_path)
        except Exception as exc:  # noqa: BLE001 - without the helper the cluster does the work itself
            log.warning("sandbox helper: cannot start: %s", exc)
            return
        self._sock = ours
        asyncio.get_running_loop().add_reader(ours.fileno(), self._on_readable)
        self.ready = True
        if self.signing_key is not None:
            self._give_key(self.signing_key)

    def note_use(self) -> None:
        """One more piece of work to do: the helper starts with the ``start_after``-th, so a small
        cluster (a test's, a walkthrough's) runs no process for it."""
        self._uses += 1
        if self._uses >= self.start_after:
            self.start()

    async def wait_ready(self) -> bool:
        """Start the helper if it is not started: True when it is ready (False if it could not
        start, or went)."""
        self.start()
        return self.ready

    def use_signing_key(self, pem: bytes) -> None:
        """The cluster's service account signing key: the helper signs pods' tokens with it
        (given before the helper is ready, or, if it runs already, at once: requests are served in
        order, so every later one finds it)."""
        if pem == self.signing_key:
            return
        self.signing_key = pem
        self.can_sign = False
        if self.ready:
            self._give_key(pem)

    def _give_key(self, pem: bytes) -> None:
        try:
            _, answer = self._send("set_signing_key", pem)
        except Unavailable:
            return
        answer.add_done_callback(self._key_given)
        self.can_sign = True  # sent now: every request after it finds the key

    def _key_given(self, answer: asyncio.Future[Any]) -> None:
        if answer.cancelled() or answer.exception() is not None:
            self.can_sign = False

    async def call(self, operation: str, *args: Any) -> Any:
        """What ``netemu.sandboxd.OPERATIONS[operation](*args)`` returns, done by the helper, its
        exception (CNIError, OSError, atomicwriter.PayloadError) raised here; ``Unavailable``
        when the helper cannot do it."""
        request_id, future = self._send(operation, *args)
        try:
            return await future
        finally:
            self._pending.pop(request_id, None)

    def _send(self, operation: str, *args: Any) -> tuple[int, asyncio.Future[Any]]:
        """Send a request now (after every one sent before it); its id and the future of its answer."""
        if self._sock is None:
            raise Unavailable("the sandbox helper is not running")
        self._next_id += 1
        request_id = self._next_id
        message = pickle.dumps((request_id, operation, args), pickle.HIGHEST_PROTOCOL)
        if len(message) > MAX_REQUEST:
            raise Unavailable(f"a {operation} request of {len(message)} bytes")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self._outbox.append(message)
        self._flush()
        return request_id, future

    def _flush(self) -> None:
        sock = self._sock
        while self._outbox and sock is not None:
            try:
                sock.send(self._outbox[0])
            except BlockingIOError:
                if not self._writing:
                    self._writing = True
                    asyncio.get_running_loop().add_writer(sock.fileno(), self._flush)
                return
            except OSError as exc:
                self._disconnect(Unavailable(f"the sandbox helper is gone: {exc}"))
                self._reap()
                return
            self._outbox.popleft()
        if self._writing and sock is not None:
            self._writing = False
            asyncio.get_running_loop().remove_writer(sock.fileno())

    def _on_readable(self) -> None:
        while self._sock is not None:
            try:
                data = self._sock.recv(1 << 20)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._disconnect(Unavailable("the sandbox helper exited"))
                self._reap()
                return
            request_id, ok, value = pickle.loads(data)
            self.answered += 1
            future = self._pending.pop(request_id, None)
            if future is None or future.done():  # its caller was cancelled
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(decode_error(value))

    def _disconnect(self, reason: Exception) -> None:
        """The helper is gone (or going): callers do the work themselves from now on."""
        self.ready = False
        self.can_sign = False
        sock, self._sock = self._sock, None
        if sock is not None:
            loop = asyncio.get_running_loop()
            loop.remove_reader(sock.fileno())
            if self._writing:
                loop.remove_writer(sock.fileno())
                self._writing = False
            sock.close()
        self._outbox.clear()
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(Lost(str(reason)))

    def _reap(self) -> None:
        """The helper has closed its end (it is gone, or going): its process is reaped meanwhile
        (``close`` waits for that)."""
        process, self._process = self._process, None
        if process is not None:
            self._ending = asyncio.ensure_future(end_helper(process))

    async def close(self) -> None:
        self._started = True  # and never again
        self._disconnect(Unavailable("the sandbox helper was closed"))
        self._reap()
        if self._ending is not None:
            await self._ending


async def run(helper: SandboxHelper | None, operation: str, *args: Any,
              undo: Callable[[], Any] | None = None) -> Any:
    """``netemu.sandboxd.OPERATIONS[operation](*args)``: by ``helper`` when it is ready, by this
    process otherwise (the same function, the same files, the same answer or exception). Every
    operation but a CNI ADD may simply be done again; for one the helper may have done before it
    went (``Lost``), ``undo`` is called first (a CNI DEL, so the ADD finds no reservation of its own)."""
    if helper is not None:
        helper.note_use()
    if helper is not None and helper.ready:
        try:
            return await helper.call(operation, *args)
        except Lost:
            if undo is not None:
                undo()
        except Unavailable:
            pass
    return OPERATIONS[operation](*args)
