"""The loopback backend: every node and pod address is an address of 127.0.0.0/8.

Linux treats the whole of 127/8 as local on ``lo``, so no interface or route is ever created
and no privilege is needed (except for ports below 1024). Pods still get their addresses the way
a container runtime gets them: from netemu's CNI plugin (``loopback-alias`` over host-local IPAM),
called with the spec's request and result types, in the sandbox helper's process when it runs
(netemu.sandbox), in-process otherwise. Every pod shares the host's network
stack: sockets are made by address, and processes run as they are.
"""
from __future__ import annotations

import asyncio
import socket
from typing import Any, Awaitable, Callable

from netemu import sandbox
from netemu.config import ClusterConfig
from netemu.errors import CNIError, FabricError
from netemu.sandbox import SandboxHelper
from netemu.sandboxd import loopback_cni
from netemu.state import ClusterState

from .base import NodeNetwork, PodNetwork, bound_datagram_socket

class LoopbackFabric:
    name = "loopback"
    shared_stack = True

    def __init__(self, config: ClusterConfig, state: ClusterState, sandbox: SandboxHelper | None = None):
        self.config = config
        self.state = state
        self.nodes: dict[str, NodeNetwork] = {}
        self._cni_dir = state.path("cni")
        self.sandbox = sandbox  # runs the plugin in a process of its own (netemu.sandbox), when given

    async def start(self) -> None:
        self._cni_dir.mkdir(exist_ok=True)

    async def stop(self) -> None:
        self.nodes.clear()

    async def add_node(self, name: str, index: int) -> NodeNetwork:
        node = NodeNetwork(name=name, ip=self.config.node_ip(index), pod_cidr=self.config.node_pod_cidr(index))
        self.nodes[name] = node
        return node

    async def remove_node(self, name: str) -> None:
        self.nodes.pop(name, None)

    def _netconf(self, node: str) -> dict[str, Any]:
        from netemu.cni import loopback_alias
        return loopback_alias.network_config(f"netemu-{node}", self.nodes[node].pod_cidr, str(self._cni_dir))

    async def _invoke(self, command: str, node: str, container_id: str) -> tuple[str, str] | None:
        """The ADD result's address and gateway, or None; run by the sandbox helper when it is ready."""
        conf = self._netconf(node)
        undo = (lambda: loopback_cni("DEL", conf, container_id, "eth0")) if command == "ADD" else None
        try:
            return await sandbox.run(self.sandbox, "loopback_cni", command, conf, container_id, "eth0", undo=undo)
        except CNIError as exc:
            raise FabricError(f"CNI {command} for pod sandbox {container_id[:8]} on {node}: {exc.msg}") from exc

    async def add_pod(self, node: str, container_id: str, namespace: str, pod: str) -> PodNetwork:
        if node not in self.nodes:
            raise FabricError(f'node "{node}" is not part of this cluster')
        added = await self._invoke("ADD", node, container_id)
        assert added is not None
        ip, gateway = added
        return PodNetwork(ip=ip, gateway=gateway, sandbox="")

    async def remove_pod(self, node: str, container_id: str) -> None:
        if node in self.nodes:
            await self._invoke("DEL", node, container_id)

    async def start_server(self, where: str, client_connected_cb: Callable[..., Awaitable[None]],
                           host: str, port: int, **kw: Any) -> asyncio.AbstractServer:
        return await asyncio.start_server(client_connected_cb, host, port, **kw)

    async def create_datagram_endpoint(self, where: str, protocol_factory: Callable[[], asyncio.BaseProtocol],
                                       local_addr: tuple[str, int], **kw: Any) -> tuple[Any, Any]:
        return await asyncio.get_running_loop().create_datagram_endpoint(protocol_factory, local_addr=local_addr, **kw)

    async def datagram_socket(self, where: str, local_addr: tuple[str, int]) -> socket.socket:
        return await bound_datagram_socket(local_addr)

    def socket(self, where: str, family: int, type: int) -> socket.socket:
        return socket.socket(family, type | socket.SOCK_NONBLOCK)  # non-blocking in one call

    def sockets(self, where: str, family: int, type: int, count: int) -> list[socket.socket]:
        return [self.socket(where, family, type) for _ in range(count)]

    def process_prefix(self, where: str) -> list[str]:
        return []
