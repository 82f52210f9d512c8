"""The Fabric protocol: what a network backend gives the rest of netemu.

A fabric makes node and pod networks real (addresses, namespaces, links), hands out sockets made
in the right place, and says how to start a process inside a pod. The kubelet, proxy and DNS use
only this interface, so the same code runs on the loopback and netns backends.
"""
from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol


@dataclass(frozen=True)
class NodeNetwork:
    name: str
    ip: str            # the node's InternalIP
    pod_cidr: str      # the node's share of the pod range


@dataclass(frozen=True)
class PodNetwork:
    ip: str
    gateway: str = ""
    sandbox: str = ""  # network namespace path; "" when the pod shares the host's


class Fabric(Protocol):
    name: str
    shared_stack: bool
    """True when all nodes and pods share one host network stack (loopback): an address:port can
    then be bound only once per cluster, so the proxy keeps one ClusterIP listener per cluster
    instead of one per node."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def add_node(self, name: str, index: int) -> NodeNetwork: ...

    async def remove_node(self, name: str) -> None: ...

    async def add_pod(self, node: str, container_id: str, namespace: str, pod: str) -> PodNetwork: ...

    async def remove_pod(self, node: str, container_id: str) -> None:
        """Idempotent: removing a pod network that is gone is not an error."""

    async def start_server(self, where: str, client_connected_cb: Callable[..., Awaitable[None]],
                           host: str, port: int, **kw: Any) -> asyncio.AbstractServer:
        """A TCP server on host:port in the network of ``where`` (a node name or pod container id)."""

    async def create_datagram_endpoint(self, where: str, protocol_factory: Callable[[], asyncio.BaseProtocol],
                                       local_addr: tuple[str, int], **kw: Any) -> tuple[Any, Any]: ...

    async def datagram_socket(self, where: str, local_addr: tuple[str, int]) -> socket.socket:
        """A non-blocking UDP socket bound to ``local_addr`` in the network of ``where``, for a
        server that reads it itself (the cluster DNS, in batches)."""
        ...

    def socket(self, where: str, family: int, type: int) -> socket.socket:
        """A new non-blocking socket made in the network of ``where``: a node name, or "" for the
        host's own network (host-side listeners such as load-balancer ingress addresses).

        Code that must work on every backend (the service proxy) never makes sockets by address
        alone: on the netns backend a socket belongs to the namespace it was made in."""

    def sockets(self, where: str, family: int, type: int, count: int) -> list[socket.socket]:
        """``count`` such sockets at once: on the netns backend one trip into the namespace. The
        proxy asks for them where nodes have stacks of their own (``shared_stack`` False; its
        spare sockets, ``RelayContext.spare_socket``)."""

    def process_prefix(self, where: str) -> list[str]:
        """argv to put in front of a command so that it runs in the network of ``where``."""


async def bound_datagram_socket(local_addr: tuple[str, int]) -> socket.socket:
    """A non-blocking UDP socket bound to ``local_addr`` in this process's network (IPv6 for a host
    with a colon): what a fabric whose networks are the host's own hands out."""
    family = socket.AF_INET6 if ":" in local_addr[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
    try:
        sock.bind(local_addr)
    except BaseException:
        sock.close()
        raise
    return sock
