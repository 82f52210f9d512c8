"""netemu's own operations as extension paths of its Kubernetes API, for the netemu CLI.

What has no Kubernetes resource to stand for it is served under ``PREFIX``
(``/apis/netemu.dev/v1/operations``), authenticated like the rest of the API and open to the
cluster's owner only (the admin certificate or token; a service account gets 403):

- ``POST apply``: ``{"documents": [{"source", "text"}], "namespace", "delete"}`` → ``{"lines"}``;
  the manifests of every document are decoded and admitted as one batch, all or nothing
  (``Cluster.apply``: the same admission as every other write), or deleted with ``delete``.
- ``POST describe``: ``{"kind", "names", "namespace"}`` → ``{"text"}`` (``describing``).
- ``POST wait``: ``{"timeout"}`` → ``{"status": "ready"}`` once every pod is ready
  (``readiness.require_ready``).
- ``POST exec``: ``{"pod", "argv", "container", "namespace"}`` → the exec plan the CLI runs as its
  own user (``ExecPlan``: prefix, argv, env, cwd, warning), so stdin, the terminal and exit codes
  stay the CLI's.
- ``POST captures`` starts a packet capture (``{"id", "on"}``); ``GET captures/ID`` is its state
  (``{"frames", "done"}``); ``DELETE captures/ID`` stops it (``{"frames", "summary"}``).
- ``DELETE cluster``: stops the cluster when the process that started it waits for that
  (``netemu up``, ``netemu run --keep``); ``GET cluster`` says what a client cannot learn from
  the Kubernetes resources: ``{"name", "backend", "clusterDomain", "serviceCIDR", "podCIDR",
  "nodeCIDR", "lbCIDR"}``.
- ``POST settle``: answers once every change so far has reached the data plane (``Cluster.settle``).
- ``POST kill``: ``{"pod", "container", "namespace", "signal"}`` kills a container's process.
- ``POST stop-node`` / ``POST start-node``: ``{"node"}`` stops or starts a node.
- ``POST host-prefix``: ``{"node"}`` → ``{"prefix"}``, the command prefix that runs a process in a
  node's network namespace (``""``: where traffic "from the host" starts on this backend).

Errors answer a Status whose message is netemu's own line, which the CLI prints as it is.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

from aiohttp import web

from netemu.errors import NetemuError

from .status import ApiError, from_error, method_not_allowed

PREFIX = ("apis", "netemu.dev", "v1", "operations")
PATH = "/" + "/".join(PREFIX)
MAX_APPLY_BYTES = 64 * 1024 * 1024  # one ``netemu apply`` of many files; a single object keeps the API's limit
_MIB = 1024 * 1024


def _json(data: Any) -> web.Response:
    return web.Response(body=json.dumps(data).encode(), content_type="application/json")


def _decode_documents(documents: list[dict[str, str]], namespace: str | None) -> list[Any]:
    """The manifests of every document, or one NetemuError naming every problem."""
    from netemu import api
    manifests: list[Any] = []
    problems: list[NetemuError] = []
    for doc in documents:
        try:
            manifests += api.load_text(doc["text"], source=doc["source"], namespace=namespace)
        except NetemuError as exc:
            problems.append(exc)
    if problems:
        raise NetemuError("\n".join(str(p) for p in problems))
    return manifests


class Operations:
    """The operations of one cluster; ``serve`` answers a request under ``PREFIX``."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.down_requested = asyncio.Event()
        self.stoppers = 0  # processes waiting for ``down`` (``wait_for_down``)
        self.captures: dict[int, Any] = {}

    async def wait_for_down(self) -> None:
        """Until a ``DELETE cluster`` asks this cluster to stop."""
        self.stoppers += 1
        try:
            await self.down_requested.wait()
        finally:
            self.stoppers -= 1

    def stop(self) -> None:
        for capture in self.captures.values():
            capture.stop()
        self.captures.clear()

    async def serve(self, request: web.Request, parts: list[str]) -> web.Response:
        try:
            return await self._serve(request, parts)
        except ApiError:
            raise
        except NetemuError as exc:  # netemu's own line, as the CLI prints it
            error = from_error(exc)
            code, reason = (error.code, error.reason) if error.code != 500 else (400, "BadRequest")
            raise ApiError(code, reason, str(exc)) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(400, "BadRequest", f"bad operation request: {exc}") from None

    async def _serve(self, request: web.Request, parts: list[str]) -> web.Response:
        c = self.cluster
        method, what = request.method, "/".join(parts)
        if what == "apply" and method == "POST":
            body = await self._large_body(request)
            # Decoded in a worker thread: a large manifest must not stall DNS or the proxy.
            manifests = await asyncio.to_thread(_decode_documents, body["documents"], body.get("namespace"))
            if body.get("delete"):
                return _json({"lines": c.apiserver.delete_manifests(manifests)})
            return _json({"lines": await c.apply(manifests)})  # in slices: never stalls DNS or the proxy
        if what == "describe" and method == "POST":
            from .describing import describe
            body = await request.json()
            return _json({"text": describe(c, body["kind"], list(body.get("names") or []), body.get("namespace"))})
        if what == "wait" and method == "POST":
            from netemu.readiness import require_ready
            await require_ready(c, float((await request.json()).get("timeout", 30)))
            return _json({"status": "ready"})
        if what == "exec" and method == "POST":
            body = await request.json()
            plan = c.exec_plan(body["pod"], [str(a) for a in body["argv"]], container=body.get("container"),
                               namespace=body.get("namespace") or "default")
            return _json(dataclasses.asdict(plan))
        if what == "cluster" and method == "GET":
            config = c.config
            return _json({"name": c.name, "backend": config.backend, "clusterDomain": config.cluster_domain,
                          "serviceCIDR": config.service_cidr, "podCIDR": config.pod_cidr,
                          "nodeCIDR": config.node_cidr, "lbCIDR": config.lb_cidr})
        if what == "settle" and method == "POST":
            await c.settle()
            return _json({"status": "settled"})
        if what == "kill" and method == "POST":
            body = await request.json()
            await c.kill_container(body["pod"], container=body.get("container"),
                                   namespace=body.get("namespace") or "default", signal=body.get("signal") or "KILL")
            return _json({"status": "killed"})
        if what in ("stop-node", "start-node") and method == "POST":
            node = (await request.json())["node"]
            await (c.stop_node(node) if what == "stop-node" else c.start_node(node))
            return _json({"status": "stopped" if what == "stop-node" else "started"})
        if what == "host-prefix" and method == "POST":
            return _json({"prefix": list(c.fabric.process_prefix((await request.json()).get("node") or ""))})
        if what == "cluster" and method == "DELETE":
            if not self.stoppers:
                raise ApiError(405, "MethodNotAllowed", f'cluster "{c.name}" was started by a program '
                               "(netemu.Cluster, a test fixture): it stops when that program stops it")
            self.down_requested.set()
            return _json({"status": "stopping"})
        if parts[:1] == ["captures"]:
            return await self._capture(request, parts[1:])
        if what in ("apply", "describe", "wait", "exec", "cluster", "settle", "kill", "stop-node", "start-node",
                    "host-prefix"):
            raise method_not_allowed()
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    async def _capture(self, request: web.Request, rest: list[str]) -> web.Response:
        c = self.cluster
        if not rest and request.method == "POST":
            body = await request.json()
            link = body.get("link")
            capture = await c.start_capture(body["path"], pod=body.get("pod"), node=body.get("node"),
                                            link=tuple(link) if link else None,
                                            namespace=body.get("namespace") or "default",
                                            filter=body.get("filter") or "", count=int(body.get("count") or 0))
            number = max(self.captures, default=0) + 1
            self.captures[number] = capture
            return _json({"id": number, "on": ", ".join(tap.label for tap in capture.taps)})
        if len(rest) != 1 or not rest[0].isdigit() or int(rest[0]) not in self.captures:
            raise ApiError(404, "NotFound", f"no capture {'/'.join(rest)}")
        number = int(rest[0])
        capture = self.captures[number]
        if request.method == "GET":
            return _json({"frames": capture.frames, "done": capture.done.is_set()})
        if request.method == "DELETE":
            capture.stop()
            del self.captures[number]
            return _json({"frames": capture.frames, "summary": c.capture_summary(capture)})
        raise method_not_allowed()

    @staticmethod
    async def _large_body(request: web.Request) -> Any:
        """The JSON body of an apply: up to ``MAX_APPLY_BYTES`` (many files at once), beyond the
        API's limit for one object."""
        if request.content_length is not None and request.content_length > MAX_APPLY_BYTES:
            raise _too_large(request.content_length)
        data = bytearray()
        while chunk := await request.content.read(1 << 20):
            data += chunk
            if len(data) > MAX_APPLY_BYTES:
                raise _too_large(len(data))
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise ApiError(400, "BadRequest", f"the body of the request was in an unknown format: {exc}") from None


def _too_large(size: int) -> ApiError:
    return ApiError(413, "RequestEntityTooLarge", f"request refused: it is {size / _MIB:.1f} MiB, more than the "
                    f"cluster's limit of {MAX_APPLY_BYTES // _MIB} MiB for one apply")
