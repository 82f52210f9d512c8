"""``pods/portforward`` over the channel WebSocket (``v4.channel.k8s.io``), as the kubelet serves it
for clients that do not tunnel SPDY: the official Python client's ``portforward``, and others.

``GET …/pods/{name}/portforward?ports=8080,9090`` upgraded with the subprotocol
``v4.channel.k8s.io`` (or none). Each port of the query gets two channels, data ``2i`` and error
``2i+1``; the server first writes the port on both (two bytes, little-endian), then connects to
it in the pod (``podportforward.PodTarget``, as for kubectl). Binary messages are one channel byte
and the payload: the client's data-channel bytes go to the pod's port, the pod's come back on the
data channel. A port whose connect fails gets the kubelet's message on its error channel
(``error forwarding port 81 to pod NAME, uid UID: …``). One connection per port, as the
kubelet's handler makes; when every port's connection has ended, or the client goes, the
WebSocket closes.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from typing import Any

from aiohttp import WSMsgType, web

from .status import bad_request

log = logging.getLogger(__name__)

PROTOCOL = "v4.channel.k8s.io"
_READ = 32 * 1024


def requested_ports(query: Any) -> list[int]:
    """The ``ports`` query parameters, checked in the kubelet's words (400 before any upgrade)."""
    values = query.getall("ports", [])
    if not values:
        raise bad_request('query parameter "ports" is required')
    ports = []
    for value in values:
        if not value:
            raise bad_request('query parameter "ports" cannot be empty')
        for part in value.split(","):
            if not part.isdigit() or int(part) > 65535:
                raise bad_request(f'unable to parse "{value}" as a port: strconv.ParseUint: parsing "{part}": '
                                  + ("value out of range" if part.isdigit() else "invalid syntax"))
            if int(part) < 1:
                raise bad_request(f'port "{value}" must be > 0')
            ports.append(int(part))
    return ports


async def serve(ws: web.WebSocketResponse, target: Any, ports: list[int], pod_name: str, uid: str) -> None:
    """Forward ``ports`` of the pod behind ``target`` over the prepared ``ws`` until done."""
    lock = asyncio.Lock()

    async def send(channel: int, data: bytes) -> None:
        async with lock:
            if not ws.closed:
                with contextlib.suppress(ConnectionError):
                    await ws.send_bytes(bytes([channel]) + data)

    for i, port in enumerate(ports):
        prefix = struct.pack("<H", port)
        await send(2 * i, prefix)
        await send(2 * i + 1, prefix)
    writers: dict[int, asyncio.StreamWriter] = {}
    connected = [asyncio.Event() for _ in ports]

    async def forward(i: int, port: int) -> None:
        try:
            try:
                reader, writer = await target.connect(port)
            except Exception as exc:   # ForwardError, or the namespace gone
                message = f"error forwarding port {port} to pod {pod_name}, uid {uid}: {exc}"
                log.info("port-forward: %s", message)
                await send(2 * i + 1, message.encode())
                return
            writers[i] = writer
            connected[i].set()
            try:
                while True:
                    try:
                        data = await reader.read(_READ)
                    except ConnectionError:
                        data = b""
                    if not data:
                        return
                    await send(2 * i, data)
            finally:
                writers.pop(i, None)
                writer.close()
        finally:
            connected[i].set()

    async def from_client() -> None:
        async for message in ws:
            if message.type != WSMsgType.BINARY or not message.data:
                continue
            channel, payload = message.data[0], message.data[1:]
            i = channel // 2
            if channel % 2 or i >= len(ports) or not payload:
                continue
            await connected[i].wait()
            writer = writers.get(i)
            if writer is not None:
                writer.write(payload)
                with contextlib.suppress(ConnectionError):
                    await writer.drain()

    forwards = asyncio.ensure_future(asyncio.gather(*(forward(i, p) for i, p in enumerate(ports))))
    client = asyncio.ensure_future(from_client())
    try:
        await asyncio.wait({forwards, client}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (forwards, client):
            task.cancel()
        await asyncio.gather(forwards, client, return_exceptions=True)
        for writer in list(writers.values()):
            writer.close()
