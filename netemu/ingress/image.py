"""The built-in image ``netemu.dev/ingress-controller``: the controller pod's container.

It serves ``ingress.proxy.IngressProxy`` on the pod IP and its declared ``http`` port, with the
routes of the cluster's one ``IngressIndex``. Its socket comes from the fabric (``ctx.start_server``
bound but not serving; aiohttp serves a duplicate of it).
"""
from __future__ import annotations

import asyncio
from typing import Any

from netemu.images.base import ContainerContext, EmulationBase, RunningEmulation, bind_error

from .proxy import IngressProxy, listening_socket
from .system import container_port


async def _never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


class IngressControllerImage(EmulationBase):
    name = "ingress-controller"

    def __init__(self, index: Any) -> None:
        self.index = index

    async def start(self, ctx: ContainerContext) -> RunningEmulation:
        running = RunningEmulation(self.name)
        port = next(iter(ctx.declared_ports()), container_port())
        try:
            bound = await ctx.start_server(_never, ctx.pod_ip, port, start_serving=False)
        except OSError as exc:
            raise bind_error(self.name, "TCP", ctx.pod_ip, port, exc) from exc
        sock = listening_socket(bound)
        bound.close()
        proxy = IngressProxy(lambda: self.index.table, ctx.new_socket)
        running.add_server(await proxy.serve(sock))
        ctx.log(f"netemu ingress controller: serving HTTP on {ctx.pod_ip}:{port} for IngressClass controller "
                "netemu.dev/ingress")
        running.on_stop(lambda: asyncio.ensure_future(proxy.close()))
        return running
