"""The channel between a cluster's proxy group and its worker processes (``workers``, ``worker``).

Messages are JSON arrays, each behind a 4-byte big-endian length, over a Unix stream socketpair.
The first element names the call; API objects travel in their manifest shape (netemu's codec,
``to_dict`` / ``from_dict``). From the cluster to a worker:

- ``["options", {ProxyOptions fields}]`` (first, once);
- ``["service", old, new]`` and ``["slice", old, new]``: the group's handler calls (None for an
  add or delete; a deleted slice travels as its metadata alone, all the tracker needs of it);
- ``["node", name, ip, pod_cidr]``, ``["node-gone", name]``, ``["synced"]``;
- ``["impair", {Impairment fields} or None, [namespace, name] or None, node or None]``;
- ``["settle", seq]``: apply everything so far, send the connection records, answer.

From a worker: ``["records", [row, …], skipped]`` (new connections, see ``record_row``, at most
the connection log's size per service; ``skipped``: older ones of the batch, counted only),
``["ended", [[id, outcome, bytes_up, bytes_down, ended, node, endpoint], …]]`` (connections sent
open that have ended since) and ``["settled", seq]``.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import struct
from typing import Any

from netemu.api import from_dict, to_dict
from netemu.api.objects import EndpointSlice, Service
from netemu.errors import ProxyError
from netemu.fabric.base import NodeNetwork

from .connlog import ConnectionRecord
from .impair import Impairment
from .serviceport import ServiceKey

HEADER = struct.Struct("!I")
MAX_MESSAGE = 256 * 1024 * 1024  # bytes; a message above it is a broken channel, not a big apply
KINDS = {"service": Service, "slice": EndpointSlice}


def frame(message: list[Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    return HEADER.pack(len(data)) + data


async def read_message(reader: asyncio.StreamReader) -> list[Any] | None:
    """The next message, or None once the other side has closed the channel."""
    try:
        header = await reader.readexactly(HEADER.size)
        (size,) = HEADER.unpack(header)
        if size > MAX_MESSAGE:
            raise ProxyError(f"proxy worker channel: a message of {size} bytes (the channel is out of step)")
        return json.loads(await reader.readexactly(size))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


# ---------------------------------------------------------------------- API objects

def encode_object(obj: Any, *, metadata_only: bool = False) -> dict[str, Any] | None:
    if obj is None:
        return None
    if metadata_only:
        meta = obj.metadata
        return {"metadata": {"name": meta.name, "namespace": meta.namespace, "labels": dict(meta.labels)}}
    return to_dict(obj)


def decode_object(kind: str, data: dict[str, Any] | None) -> Any:
    if data is None:
        return None
    obj, problems = from_dict(KINDS[kind], data)
    if problems:
        raise ProxyError(f"proxy worker channel: a {kind} that does not decode: {problems[0]}")
    return obj


# ---------------------------------------------------------------------- settings

def encode_options(options: Any) -> dict[str, Any]:
    return dataclasses.asdict(options)


def decode_options(cls: type, data: dict[str, Any]) -> Any:
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def encode_node(node: NodeNetwork) -> list[Any]:
    return ["node", node.name, node.ip, node.pod_cidr]


def encode_impairment(impairment: Impairment | None) -> dict[str, float] | None:
    return dataclasses.asdict(impairment) if impairment is not None else None


def decode_impairment(data: dict[str, float] | None) -> Impairment | None:
    return Impairment(**data) if data is not None else None


# ---------------------------------------------------------------------- connection records

def record_row(ident: int, service: ServiceKey, r: ConnectionRecord) -> list[Any]:
    return [ident, service[0], service[1], r.client[0], r.client[1], r.service_port, r.frontend, r.node,
            r.endpoint, r.time, r.bytes_up, r.bytes_down, r.outcome, r.ended]


def row_record(row: list[Any]) -> tuple[int, ServiceKey, ConnectionRecord]:
    # positional, in ConnectionRecord's field order from service_port on (one per connection: keep it cheap)
    return row[0], (row[1], row[2]), ConnectionRecord((row[3], row[4]), *row[5:])


def ended_row(ident: int, r: ConnectionRecord) -> list[Any]:
    return [ident, r.outcome, r.bytes_up, r.bytes_down, r.ended, r.node, r.endpoint]


def apply_ended(record: ConnectionRecord, row: list[Any]) -> None:
    _, record.outcome, record.bytes_up, record.bytes_down, record.ended, record.node, record.endpoint = row
