"""The ``pods/attach`` subresource: a running container's output from now on, over the channel WebSocket.

``GET /api/v1/namespaces/{ns}/pods/{name}/attach?container=…&stdin=…&stdout=…&stderr=…&tty=…``
upgraded like ``pods/exec`` (``channels``). netemu's kubelet writes a container's stdout and
stderr to one file (the log ``pods/log`` serves) and starts every container with its stdin on
/dev/null, so attach streams what the container writes after the upgrade, on the stdout
channel (stderr when only that was asked for), and ends with a Success Status when that
container instance stops (exit, restart, pod deleted), as the kubelet's attach ends.

Input: for a container without ``stdin: true``, what the client sends is dropped, as containerd
drops it. A container with ``stdin: true`` that runs a real process reads a pipe the kubelet keeps
(``runtime.ProcessContainer``): the client's stdin channel is written to it, and with
``stdinOnce`` the pipe closes when the first attach's stdin ends (v5 close signal, or the client
going away) — which is how ``kubectl run -i --rm`` feeds a shell and ends it. A built-in image
emulation reads no input, so ``stdin=true`` there ends at once with an InternalError Status saying
so (kubectl prints it and exits 1). With ``tty``, the output is the same stream: netemu's
containers have no terminal.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

from netemu.errors import NetemuError

from . import channels
from .channels import CLOSE, STDERR, STDIN, STDOUT, Channels, flag, internal_error, success
from .podlogs import FOLLOW_POLL, choose_container, container_status, live_pod, read_from
from .status import bad_request, method_not_allowed


class PodAttach:
    """Serves ``pods/attach`` over one cluster (its store and kubelets)."""

    def __init__(self, cluster: Any, stopping: asyncio.Event) -> None:
        self.cluster = cluster
        self.stopping = stopping

    def _checked(self, request: web.Request, namespace: str, name: str) -> tuple[Any, str, Path]:
        """The pod, the container and its output file, or the API's refusal (before any upgrade)."""
        if request.method not in ("GET", "POST"):
            raise method_not_allowed()
        params = request.query
        pod = live_pod(self.cluster.store, namespace, name)
        container = choose_container(pod, params.get("container", ""))
        if not any(flag(params, k) for k in ("stdin", "stdout", "stderr")):
            raise bad_request("you must specify at least 1 of stdin, stdout, stderr")
        if pod.status.phase in ("Succeeded", "Failed"):
            raise bad_request(f"cannot attach to a container in a completed pod; current phase is {pod.status.phase}")
        status = container_status(pod, container)
        kubelet = self.cluster.kubelets.get(pod.spec.node_name) if pod.spec.node_name else None
        if kubelet is None or status is None or status.state.running is None:
            raise bad_request(f'unable to upgrade connection: container not found ("{container}")')
        return pod, container, Path(kubelet.log_path(pod, container))

    def _stdin_of(self, pod: Any, container: str) -> Any | None:
        """The running container's runtime if it keeps a stdin pipe (a real process), else None."""
        from netemu.kubelet.runtime import ProcessContainer
        kubelet = self.cluster.kubelets.get(pod.spec.node_name)
        try:
            runtime = kubelet.worker_for(pod.metadata.namespace, pod.metadata.name).container(container).runtime
        except NetemuError:
            return None
        return runtime if isinstance(runtime, ProcessContainer) and runtime.keeps_stdin else None

    async def serve(self, request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        pod, container, path = self._checked(request, namespace, name)
        params = request.query
        spec = next(c for c in (*pod.spec.containers, *pod.spec.init_containers) if c.name == container)
        offset = await asyncio.to_thread(_size, path)
        link = await channels.upgrade(request, "attach")
        try:
            stdin = None
            if flag(params, "stdin") and spec.stdin:
                stdin = self._stdin_of(pod, container)
                if stdin is None:
                    await link.status(internal_error(
                        f'container "{container}" runs a built-in image emulation, which reads no stdin: '
                        f"attach without -i to see its output, or give it a command: to run a real program"))
                    return link.ws
            channel = STDOUT if flag(params, "stdout") else STDERR if flag(params, "stderr") else None
            still_running = _instance_check(self.cluster.store, pod, container)
            client = asyncio.ensure_future(_feed(link, stdin) if stdin is not None else _drain(link))
            try:
                if await self._follow(link, client, path, offset, channel, still_running):
                    await link.status(success())
            finally:
                client.cancel()
        finally:
            await link.close()
        return link.ws

    async def _follow(self, link: Channels, client: asyncio.Future[None], path: Path, offset: int,
                      channel: int | None, still_running: Callable[[], bool]) -> bool:
        """Send what the container writes until it stops (True), or the client or server goes (False)."""
        stopping = asyncio.ensure_future(self.stopping.wait())
        try:
            while True:
                running = still_running()  # looked at before the read: what the instance wrote last is sent
                data, _ = await asyncio.to_thread(read_from, path, offset)
                offset += len(data)
                if data and channel is not None:
                    try:
                        await link.send(channel, data)
                    except ConnectionError:
                        return False
                if not running:
                    return True
                await asyncio.wait({client, stopping}, timeout=FOLLOW_POLL, return_when=asyncio.FIRST_COMPLETED)
                if client.done() or stopping.done():
                    return False
        finally:
            stopping.cancel()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


async def _drain(link: Channels) -> None:
    """Read (and drop) what the client sends, until it closes or goes away."""
    async for _ in link.messages():
        pass


async def _feed(link: Channels, runtime: Any) -> None:
    """Write the client's stdin channel to the container's stdin until the client ends it; with
    ``stdinOnce`` the container's stdin then closes (EOF), as the runtime closes it."""
    try:
        async for channel, payload in link.messages():
            if channel == STDIN:
                await runtime.write_stdin(payload)
            elif channel == CLOSE and link.closes(payload, STDIN):
                break
    finally:
        if runtime.stdin_once:
            runtime.close_stdin()
    await _drain(link)


def _instance_check(store: Any, pod: Any, container: str) -> Callable[[], bool]:
    """Whether the attached container instance still runs in the same pod."""
    namespace, name, uid = pod.metadata.namespace, pod.metadata.name, pod.metadata.uid
    instance = container_status(pod, container).state.running

    def check() -> bool:
        current = store.get("Pod", namespace, name)
        if current is None or current.metadata.uid != uid:
            return False
        status = container_status(current, container)
        return status is not None and status.state.running == instance
    return check
