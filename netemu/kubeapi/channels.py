"""The channel WebSocket of ``pods/exec`` and ``pods/attach`` (``v5.channel.k8s.io``, ``v4.channel.k8s.io``).

Every binary message starts with its channel: 0 stdin, 1 stdout, 2 stderr, 3 error (one JSON
``Status`` at the end), 4 resize. In v5 a message ``[255, channel]`` closes that channel (kubectl
sends ``[255, 0]`` at the end of its stdin). kubectl 1.30+ asks for these over a WebSocket first
and falls back to SPDY only when the upgrade fails; netemu serves the WebSocket only.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, AsyncIterator

from aiohttp import WSMsgType, web

from .status import bad_request

PROTOCOL_V5 = "v5.channel.k8s.io"
PROTOCOL_V4 = "v4.channel.k8s.io"
PROTOCOLS = (PROTOCOL_V5, PROTOCOL_V4)
STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE = 255  # v5: [255, channel] closes the channel


def success() -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}


def internal_error(message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": "InternalError", "code": 500, "details": {"causes": [{"message": message}]}}


def flag(params: Any, key: str) -> bool:
    return params.get(key, "").lower() in ("true", "1")


async def upgrade(request: web.Request, what: str) -> "Channels":
    """The request upgraded to a channel WebSocket, or the API's 400 (before any upgrade)."""
    ws = web.WebSocketResponse(protocols=PROTOCOLS, autoping=True)
    ready = ws.can_prepare(request)
    if not ready.ok:
        raise bad_request(f"netemu serves {what} over WebSocket only (subprotocol {PROTOCOL_V5} or "
                          f"{PROTOCOL_V4}), not SPDY: use kubectl 1.30 or later")
    if ready.protocol is None:
        raise bad_request(f"{what} needs the WebSocket subprotocol {PROTOCOL_V5} or {PROTOCOL_V4}")
    await ws.prepare(request)
    return Channels(ws)


class Channels:
    """One upgraded WebSocket: send on a channel, end with a Status, read the client's messages."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.v5 = ws.ws_protocol == PROTOCOL_V5
        self._send_lock = asyncio.Lock()

    async def send(self, channel: int, data: bytes) -> None:
        """Raises ConnectionError when the client has gone."""
        async with self._send_lock:
            if not self.ws.closed:
                await self.ws.send_bytes(bytes([channel]) + data)

    async def status(self, status: dict[str, Any]) -> None:
        """The closing Status on the error channel (dropped if the client has gone)."""
        with contextlib.suppress(ConnectionError):
            await self.send(ERROR, json.dumps(status).encode())

    async def messages(self) -> AsyncIterator[tuple[int, bytes]]:
        """(channel, payload) of each binary message, until the client closes or goes away."""
        async for msg in self.ws:
            if msg.type == WSMsgType.BINARY and msg.data:
                yield msg.data[0], msg.data[1:]

    def closes(self, payload: bytes, channel: int) -> bool:
        """Whether a CLOSE message's payload closes ``channel`` (v5 only)."""
        return self.v5 and payload[:1] == bytes([channel])

    async def close(self) -> None:
        await self.ws.close()
