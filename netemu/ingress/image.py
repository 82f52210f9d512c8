"""The built-in image ``netemu.dev/ingress-controller``: the controller pod's container.

It serves ``ingress.proxy.IngressProxy`` on the pod IP and its declared ``http`` port, with the
routes of the cluster's one ``IngressIndex``, and HTTPS on its ``https`` port with the index's
certificates (``tls.listener_context``: chosen by SNI at each handshake). Its sockets come from
the fabric (``ctx.start_server`` bound but not serving; aiohttp serves duplicates of them).
"""
from __future__ import annotations

import asyncio
from typing import Any

from netemu.images.base import ContainerContext, EmulationBase, RunningEmulation, bind_error

from .proxy import IngressProxy, listening_socket
from .system import container_port
from .tls import listener_context


async def _never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


class IngressControllerImage(EmulationBase):
    name = "ingress-controller"

    def __init__(self, index: Any) -> None:
        self.index = index

    async def start(self, ctx: ContainerContext) -> RunningEmulation:
        running = RunningEmulation(self.name)
        named = {name: port for name, port, proto in ctx.ports if (proto or "TCP").upper() == "TCP"}
        port = named.get("http", next(iter(ctx.declared_ports()), container_port()))
        tls_port = named.get("https")
        proxy = IngressProxy(lambda: self.index.table, ctx.new_socket)
        running.add_server(await proxy.serve(await self._socket(ctx, port)))
        served = f"HTTP on {ctx.pod_ip}:{port}"
        if tls_port is not None:
            context = listener_context(lambda: self.index.certificates)
            running.add_server(await proxy.serve_tls(await self._socket(ctx, tls_port), context))
            served += f" and HTTPS on {ctx.pod_ip}:{tls_port}"
        ctx.log(f"netemu ingress controller: serving {served} for IngressClass controller netemu.dev/ingress")
        running.on_stop(lambda: asyncio.ensure_future(proxy.close()))
        return running

    async def _socket(self, ctx: ContainerContext, port: int) -> Any:
        try:
            bound = await ctx.start_server(_never, ctx.pod_ip, port, start_serving=False)
        except OSError as exc:
            raise bind_error(self.name, "TCP", ctx.pod_ip, port, exc) from exc
        sock = listening_socket(bound)
        bound.close()
        return sock
