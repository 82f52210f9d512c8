"""The ``pods/portforward`` subresource, as kubectl 1.31+ speaks it: SPDY tunnelled through a WebSocket.

``GET /api/v1/namespaces/{ns}/pods/{name}/portforward`` upgraded to a WebSocket with the
subprotocol ``SPDY/3.1+portforward.k8s.io``; the binary messages carry a SPDY/3.1 session
(``spdy.Codec``) in which kubectl opens two streams per forwarded connection, both with the
headers ``port`` and ``requestID``: ``streamType: error``, then ``streamType: data``. Once a
request's two streams are there, the server connects to the port in the pod, as containerd does:
inside the pod's network namespace to localhost, then to the pod IP (on the loopback backend,
where pods share the host's stack, to the pod IP only); bytes flow both ways on the data stream
until one side ends (the other gets a second to follow). A failed connect is reported on the
error stream in the kubelet's words (``error forwarding port 81 to pod …, uid : …``), which
kubectl 1.32 prints before it ends with ``lost connection to pod``, as against a real cluster.
The WebSocket's end (the client went away) closes every forwarded connection.

A WebSocket with the channel subprotocol ``v4.channel.k8s.io`` (the official Python client) is
served by ``portforward_channels``. A plain SPDY upgrade (kubectl's fallback, or
``KUBECTL_PORT_FORWARD_WEBSOCKETS=false``) is refused with a 400 naming the WebSocket protocols.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from netemu.errors import NetemuError

from . import portforward_channels, spdy
from .podlogs import live_pod
from .status import bad_request, method_not_allowed

log = logging.getLogger(__name__)

PORTFORWARD_PROTOCOL = "portforward.k8s.io"
TUNNEL_PROTOCOL = "SPDY/3.1+" + PORTFORWARD_PROTOCOL
CONNECT_TIMEOUT = 5.0  # seconds, containerd's dial timeout
LINGER = 1.0           # seconds the other direction gets once one has ended (containerd's)
_READ = 32 * 1024
_QUEUED_WRITES = 64    # client chunks waiting for a slow pod connection before the session waits


class ForwardError(NetemuError):
    """The pod's port could not be reached (the message goes on the error stream)."""


@dataclass(frozen=True)
class PodTarget:
    """Where a pod's ports are: its sandbox on the fabric and its IP."""
    fabric: Any
    sandbox: str  # the pod's uid: the fabric's name for its network
    pod_ip: str

    def _addresses(self) -> list[tuple[str, str]]:
        """(address, Go's network name) to try in turn."""
        if self.fabric.shared_stack:  # pods share the host's stack: localhost is the host's, not the pod's
            return [(self.pod_ip, "tcp")]
        return [("127.0.0.1", "tcp4"), (self.pod_ip, "tcp")]

    def _namespace(self) -> str:
        if self.fabric.shared_stack:
            return "host"
        try:
            return str(self.fabric.namespace_of(self.sandbox))
        except NetemuError:
            raise ForwardError(f'network namespace for sandbox "{self.sandbox}" is closed') from None

    async def connect(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        namespace = self._namespace()
        failures = []
        for address, network in self._addresses():
            if not address:
                continue
            try:
                sock = self.fabric.socket(self.sandbox, socket.AF_INET6 if ":" in address else socket.AF_INET,
                                          socket.SOCK_STREAM)
            except NetemuError:
                raise ForwardError(f'network namespace for sandbox "{self.sandbox}" is closed') from None
            try:
                await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (address, port)),
                                       CONNECT_TIMEOUT)
                return await asyncio.open_connection(sock=sock)
            except (OSError, asyncio.TimeoutError) as exc:
                sock.close()
                failures.append(_dial_error(network, address, port, exc))
            except BaseException:
                sock.close()
                raise
        raise ForwardError(f'failed to execute portforward in network namespace "{namespace}": '
                           + ", ".join(failures))


def _dial_error(network: str, host: str, port: int, exc: BaseException) -> str:
    """Go's words for a failed dial (``dial tcp4 127.0.0.1:81: connect: connection refused``)."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(exc, asyncio.TimeoutError):
        return f"dial {network} {where}: i/o timeout"
    reason = os.strerror(exc.errno).lower() if getattr(exc, "errno", None) else str(exc)
    return f"dial {network} {where}: connect: {reason}"


class PodPortForward:
    """Serves ``pods/portforward`` over one cluster."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster

    def _target(self, namespace: str, name: str) -> PodTarget:
        pod = live_pod(self.cluster.store, namespace, name)
        if not pod.spec.node_name:
            raise bad_request(f"pod {name} does not have a host assigned")
        if pod.status.phase != "Running" or not pod.status.pod_ip:
            raise bad_request(f"unable to upgrade connection: pod {name} is not running "
                              f"(current phase is {pod.status.phase or 'Pending'})")
        return PodTarget(self.cluster.fabric, pod.metadata.uid, pod.status.pod_ip)

    async def serve(self, request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        if request.method not in ("GET", "POST"):
            raise method_not_allowed()
        target = self._target(namespace, name)
        ws = web.WebSocketResponse(protocols=(TUNNEL_PROTOCOL, portforward_channels.PROTOCOL), autoping=True)
        ready = ws.can_prepare(request)
        offered = request.headers.get("Sec-WebSocket-Protocol", "")
        if ready.ok and (ready.protocol == portforward_channels.PROTOCOL or not offered):
            # the channel protocol (the official Python client and others): ports in the query
            ports = portforward_channels.requested_ports(request.query)
            pod = live_pod(self.cluster.store, namespace, name)
            await ws.prepare(request)
            try:
                await portforward_channels.serve(ws, target, ports, name, pod.metadata.uid)
            finally:
                await ws.close()
            return ws
        if not ready.ok or ready.protocol is None:
            raise bad_request(f"netemu serves port-forward over WebSocket only, with the subprotocol "
                              f"{TUNNEL_PROTOCOL} (kubectl 1.31 or later) or {portforward_channels.PROTOCOL}, "
                              "not a SPDY upgrade")
        await ws.prepare(request)
        session = _Session(ws, target)
        try:
            await session.run()
        finally:
            await session.close()
            await ws.close()
        return ws


@dataclass
class _Pair:
    """One forwarded connection's two streams, as they arrive."""
    request_id: str
    port: int
    error_id: int = 0
    data_id: int = 0
    forward: "_Forward | None" = None


class _Session:
    """One WebSocket: its SPDY session and the connections forwarded through it."""

    def __init__(self, ws: web.WebSocketResponse, target: PodTarget) -> None:
        self.ws = ws
        self.target = target
        self.codec = spdy.Codec()
        self._send_lock = asyncio.Lock()
        self._pairs: dict[str, _Pair] = {}          # by requestID
        self._by_stream: dict[int, _Pair] = {}      # both stream ids of every pair
        self._tasks: set[asyncio.Task[None]] = set()

    async def send(self, frame: bytes) -> None:
        async with self._send_lock:
            if self.ws.closed:
                return
            with contextlib.suppress(ConnectionError):
                await self.ws.send_bytes(frame)

    async def run(self) -> None:
        async for message in self.ws:
            if message.type != WSMsgType.BINARY:
                continue
            try:
                frames = self.codec.feed(message.data)
            except spdy.SpdyError as exc:
                log.info("port-forward: %s; ending the session", exc)
                await self.send(spdy.encode_goaway(0, 1))
                return
            for frame in frames:
                if frame.kind == spdy.GOAWAY:
                    return
                await self._handle(frame)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._pairs.clear()
        self._by_stream.clear()

    async def _handle(self, frame: spdy.Frame) -> None:
        if frame.kind == spdy.SYN_STREAM:
            await self._new_stream(frame)
        elif frame.kind == 0:
            pair = self._by_stream.get(frame.stream_id)
            if pair is not None and pair.forward is not None and frame.stream_id == pair.data_id:
                await pair.forward.from_client(frame.data, fin=frame.fin)
        elif frame.kind == spdy.RST_STREAM:
            pair = self._by_stream.get(frame.stream_id)
            if pair is not None and frame.stream_id == pair.data_id and pair.forward is not None:
                pair.forward.reset.set()
        elif frame.kind == spdy.PING:
            await self.send(spdy.encode_ping(frame.ping_id))  # the client's ping: answered with its id

    async def _new_stream(self, frame: spdy.Frame) -> None:
        """A stream kubectl opens, checked as the kubelet checks it; rejected streams are reset."""
        port_text, kind = frame.header("port"), frame.header("streamtype")
        port = int(port_text) if port_text.isdigit() else 0
        if not 0 < port < 65536 or kind not in ("error", "data"):
            log.info("port-forward: rejected stream %d (port %r, streamType %r)", frame.stream_id, port_text, kind)
            await self.send(spdy.encode_reset(frame.stream_id))
            return
        request_id = frame.header("requestid") or str(frame.stream_id if kind == "error" else frame.stream_id - 2)
        pair = self._pairs.setdefault(request_id, _Pair(request_id, port))
        if (pair.error_id if kind == "error" else pair.data_id):
            await self.send(spdy.encode_reset(frame.stream_id))  # that stream type is already assigned
            return
        if kind == "error":
            pair.error_id = frame.stream_id
        else:
            pair.data_id = frame.stream_id
        self._by_stream[frame.stream_id] = pair
        await self.send(self.codec.encode_reply(frame.stream_id))
        if pair.error_id and pair.data_id:
            del self._pairs[request_id]
            pair.forward = _Forward(self, pair)
            task = asyncio.ensure_future(self._forward(pair))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _forward(self, pair: _Pair) -> None:
        assert pair.forward is not None
        try:
            await pair.forward.run()
        finally:
            self._by_stream.pop(pair.error_id, None)
            self._by_stream.pop(pair.data_id, None)


@dataclass
class _Forward:
    """One connection to the pod's port, behind a pair of streams."""
    session: _Session
    pair: _Pair
    reset: asyncio.Event = field(default_factory=asyncio.Event)  # the client reset the data stream
    _to_pod: asyncio.Queue[bytes | None] = field(default_factory=lambda: asyncio.Queue(_QUEUED_WRITES))
    _finished: bool = False   # nothing more goes to the pod
    _data_ended: bool = False  # our side of the data stream is closed (FIN sent)

    async def from_client(self, data: bytes, *, fin: bool) -> None:
        for item in ([data] if data else []) + ([None] if fin else []):
            if self._finished:
                return
            await self._to_pod.put(item)

    async def run(self) -> None:
        pair = self.pair
        try:
            try:
                reader, writer = await self.session.target.connect(pair.port)
            except ForwardError as exc:
                message = f"error forwarding port {pair.port} to pod {self.session.target.sandbox}, uid : {exc}"
                log.info("port-forward: %s", message)
                await self.session.send(spdy.encode_data(pair.error_id, message.encode()))
                return
            try:
                await self._copy(reader, writer)
            finally:
                writer.close()
        finally:
            self._finished = True
            while not self._to_pod.empty():  # a reader waiting to queue more for the pod goes on
                self._to_pod.get_nowait()
            if not self._data_ended and not self.reset.is_set():
                await self._end_data()
            await self.session.send(spdy.encode_data(pair.error_id, b"", fin=True))

    async def _end_data(self) -> None:
        self._data_ended = True
        await self.session.send(spdy.encode_data(self.pair.data_id, b"", fin=True))

    async def _copy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Both directions until one ends and the other follows (within LINGER, as containerd
        waits), or the client resets the stream."""
        to_client = asyncio.ensure_future(self._pod_to_client(reader))
        to_pod = asyncio.ensure_future(self._client_to_pod(writer))
        reset = asyncio.ensure_future(self.reset.wait())
        tasks = {to_client, to_pod, reset}
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if reset not in done:
                await asyncio.wait(pending, timeout=LINGER, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _pod_to_client(self, reader: asyncio.StreamReader) -> None:
        """The pod's bytes on the data stream, then its end (FIN)."""
        while True:
            try:
                data = await reader.read(_READ)
            except ConnectionError:
                data = b""
            if not data:
                await self._end_data()
                return
            await self.session.send(spdy.encode_data(self.pair.data_id, data))

    async def _client_to_pod(self, writer: asyncio.StreamWriter) -> None:
        """The client's bytes to the pod; its end of the stream half-closes the connection."""
        while True:
            data = await self._to_pod.get()
            try:
                if data is None:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
            except ConnectionError:
                return
