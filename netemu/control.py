"""The control socket of a running cluster, and the client the CLI uses to talk to it: what the
CLI does not yet do through the Kubernetes API (``apply``/``delete -f`` of whole bundles,
``describe``, ``exec``, ``wait``, ``capture``, ``down``). ``get``, ``delete KIND NAME``, ``scale``,
``logs``, ``impair``, ``partition`` and ``heal`` are clients of the API (netemu.cli_api,
netemu.cli_chaos).

A Unix socket (mode 0600, in the cluster's state directory) carrying one JSON request per line
and one JSON reply per line: ``{"op": "describe", ...}`` → ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "..."}``. Both ends prove who the other is by its peer credentials
(``SO_PEERCRED``): the server answers only its own uid (and root), the client talks only to a
server of its own uid, over a socket file it has verified first (netemu.statedir). A request is
at most ``MAX_LINE`` bytes: the client refuses a larger one before sending it, the server answers
one with an error and closes that connection. ``exec`` returns a plan that the CLI acts on itself,
so stdin and exit codes need no streaming protocol.
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netemu import statedir
from netemu.controllers.deployment import replica_sets_of
from netemu.errors import ClusterError, NetemuError, NotFoundError, UnsafeStateError

if TYPE_CHECKING:
    from netemu.cluster import Cluster

log = logging.getLogger(__name__)

MAX_LINE = 64 * 1024 * 1024
_MIB = 1024 * 1024


def _reply_line(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply).encode() + b"\n"


def _refusal(error: str) -> bytes:
    return _reply_line({"ok": False, "error": error})
_CONNECTIONS_SHOWN = 10  # newest connection-log records in ``describe svc``


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


class ControlServer:
    def __init__(self, cluster: "Cluster", path: Path):
        self.cluster = cluster
        self.path = path
        self.server: asyncio.AbstractServer | None = None
        self.down_requested = asyncio.Event()
        self.captures: dict[int, Any] = {}

    async def start(self) -> None:
        old_umask = os.umask(0o177)
        try:
            self.server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_LINE)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            client_uid = statedir.peer_uid(writer.get_extra_info("socket"))
            if client_uid not in (statedir.my_uid(), 0):
                log.warning("control socket: refused a client of uid %d", client_uid)
                writer.write(_refusal(f"the cluster refused the connection: uid {client_uid} is not its owner "
                                      f"(uid {statedir.my_uid()}) or root"))
                await writer.drain()
                return
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # the line outgrew the reader's limit: refuse it, keep the cluster
                    log.warning("control socket: refused a request of more than %d MiB", MAX_LINE // _MIB)
                    writer.write(_refusal(f"request refused: it is larger than the control socket's limit "
                                          f"of {MAX_LINE // _MIB} MiB"))
                    await writer.drain()
                    return
                if not line:
                    return
                try:
                    request = json.loads(line)
                    result = await self.handle(request)
                    reply = {"ok": True, "result": result}
                except NetemuError as exc:
                    reply = {"ok": False, "error": str(exc)}
                except (ValueError, KeyError, TypeError) as exc:
                    reply = {"ok": False, "error": f"bad control request: {exc}"}
                writer.write(_reply_line(reply))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def handle(self, req: dict[str, Any]) -> Any:
        from netemu import printers
        from netemu.cluster import resolve_kind
        c = self.cluster
        op = req["op"]
        now = datetime.datetime.now(datetime.timezone.utc)
        if op == "info":
            return {"name": c.name, "pid": os.getpid(), "backend": c.config.backend,
                    "nodes": {n: net.ip for n, net in c.nodes.items()}, "dns_ip": c.config.dns_ip,
                    "state_dir": str(c.state.directory)}
        if op == "apply":
            # Decoded in a worker thread: a large manifest must not stall DNS or the proxy.
            manifests = await asyncio.to_thread(_decode_documents, req["documents"], req.get("namespace"))
            if req.get("delete"):
                return c.apiserver.delete_manifests(manifests)
            return await c.apply(manifests)  # in slices: a big apply never stalls DNS or the proxy
        if op == "describe":
            kind = resolve_kind(req["kind"])
            ns = req.get("namespace") or "default"
            objs = [c.get(kind, n, ns) for n in req["names"]] if req.get("names") else c.list(kind, ns)
            from netemu.events import events_for
            return "\n\n".join(printers.describe(o, events=events_for(c.store, o), related=self._related(o),
                                                 now=now.astimezone()) for o in objs)
        if op == "exec_plan":
            plan = c.exec_plan(req["pod"], req["argv"], container=req.get("container"),
                               namespace=req.get("namespace") or "default")
            return dataclasses.asdict(plan)
        if op == "wait_ready":
            from netemu.readiness import require_ready
            await require_ready(c, float(req.get("timeout", 30)))
            return "ready"
        if op == "down":
            self.down_requested.set()
            return "stopping"
        if op == "capture_start":
            capture = await c.start_capture(req["path"], pod=req.get("pod"), node=req.get("node"), link=req.get("link"),
                                            namespace=req.get("namespace") or "default", filter=req.get("filter") or "",
                                            count=int(req.get("count") or 0))
            number = max(self.captures, default=0) + 1
            self.captures[number] = capture
            return {"id": number, "on": ", ".join(tap.label for tap in capture.taps)}
        if op in ("capture_status", "capture_stop"):
            capture = self.captures.get(int(req["id"]))
            if capture is None:
                raise NotFoundError(f"no capture {req['id']}")
            if op == "capture_stop":
                capture.stop()
                del self.captures[int(req["id"])]
                return {"frames": capture.frames, "summary": c.capture_summary(capture)}
            return {"frames": capture.frames, "done": capture.done.is_set()}
        raise ClusterError(f"unknown control operation {op!r}")

    def _related(self, obj: Any) -> dict[str, Any]:
        store = self.cluster.store
        if obj.KIND == "Service":
            return {"endpoint_slices": store.list(
                "EndpointSlice", obj.metadata.namespace, {"kubernetes.io/service-name": obj.metadata.name}),
                    "sections": self._traffic_sections(obj)}
        if obj.KIND == "Deployment":
            new, old = replica_sets_of(store, obj)
            return {"new_replica_sets": new, "old_replica_sets": old}
        if obj.KIND in ("StatefulSet", "ReplicaSet", "DaemonSet"):
            return {"pods": [p for p in store.list("Pod", obj.metadata.namespace)
                             if any(r.uid == obj.metadata.uid for r in p.metadata.owner_references)]}
        if obj.KIND == "ServiceAccount":
            return {"secrets": store.list("Secret", obj.metadata.namespace)}
        if obj.KIND == "NetworkPolicy":
            from netemu.networkpolicy import describe_sections
            return {"sections": describe_sections(self.cluster)}
        if obj.KIND == "Pod":
            from netemu.networkpolicy import pod_sections
            sections = pod_sections(self.cluster, obj)
            return {"sections": sections} if sections else {}
        if obj.KIND == "Node":
            return {"pods": [p for p in store.list("Pod") if p.spec.node_name == obj.metadata.name],
                    "sections": self._node_sections(obj.metadata.name)}
        return {}

    def _node_sections(self, node: str) -> list[tuple[str, list[str]]]:
        """What is impaired on the node's links (wire: netns) or at its proxy, and the partition."""
        c = self.cluster
        sections: list[tuple[str, list[str]]] = []
        wire = getattr(c.fabric, "wire", None)
        if wire is not None:
            lines = [f"{what}\t{setting}" for what, setting in wire.impairments().items()
                     if what == f"node {node}" or (what.startswith("link ") and node in what[5:].split("<->"))]
            if lines:
                sections.append(("Link impairments", lines))
            groups = wire.partitions()
            if groups:
                mine = next(g for g in groups if node in g)
                sections.append(("Partition", [f"hears only\t{', '.join(mine)}"]))
        impairment = c.proxy.impairments.by_node.get(node) if c.proxy is not None else None
        if impairment is not None:
            sections.append(("Impairment", [str(impairment)]))
        return sections

    def _traffic_sections(self, svc: Any) -> list[tuple[str, list[str]]]:
        """A Service's impairment (when set) and its last connections from the proxy's log."""
        c = self.cluster
        namespace, name = svc.metadata.namespace, svc.metadata.name
        sections: list[tuple[str, list[str]]] = []
        impairment = c.proxy.impairments.by_service.get((namespace, name)) if c.proxy is not None else None
        if impairment is not None:
            sections.append(("Impairment", [str(impairment)]))
        records = c.connection_log(name, namespace) if c.proxy is not None else []
        shown = records[-_CONNECTIONS_SHOWN:]
        lines = []
        if shown:
            from netemu.printers import human_duration
            now = time.time()
            lines = ["Client\tFrontend\tNode\tEndpoint\tBytes (up/down)\tOutcome\tAge",
                     "------\t--------\t----\t--------\t---------------\t-------\t---"]
            lines += [f"{r.client[0]}:{r.client[1]}\t{r.frontend}\t{r.node or '<none>'}\t{r.endpoint or '<none>'}"
                      f"\t{r.bytes_up}/{r.bytes_down}\t{r.outcome or 'open'}"
                      f"\t{human_duration(datetime.timedelta(seconds=max(0.0, now - r.time)))}" for r in shown]
        title = f"Connections (last {len(shown)} of {len(records)})" if len(records) > len(shown) else "Connections"
        sections.append((title, lines))
        return sections


class ControlClient:
    """Blocking client: one request, one reply, to a verified socket served by our own uid."""

    def __init__(self, path: Path, timeout: float = 120):
        self.path = path
        self.timeout = timeout

    def call(self, op: str, **args: Any) -> Any:
        request = json.dumps({"op": op, **args}).encode() + b"\n"
        if len(request) > MAX_LINE:
            raise ClusterError(_too_large(op, args, len(request)))
        statedir.check_socket(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            try:
                sock.connect(str(self.path))
            except OSError as exc:
                raise ClusterError(f"cannot reach the cluster at {self.path}: {exc.strerror or exc}") from exc
            server_uid = statedir.peer_uid(sock)
            if server_uid != statedir.my_uid():
                raise UnsafeStateError(
                    f"control socket {self.path} is served by uid {server_uid}, not you (uid {statedir.my_uid()}); "
                    f"nothing was sent: remove the cluster directory {self.path.parent}")
            buf = self._exchange(sock, request)
        finally:
            sock.close()
        if not buf:
            raise ClusterError("the cluster closed the connection")
        reply = json.loads(buf)
        if not reply["ok"]:
            raise NetemuError(reply["error"])
        return reply["result"]

    @staticmethod
    def _exchange(sock: socket.socket, request: bytes) -> bytes:
        """Send the request, return the reply line; a server that refused the request and closed
        while it was still being sent has left its reason to read."""
        try:
            try:
                sock.sendall(request)
            except (BrokenPipeError, ConnectionResetError):
                pass
            buf = bytearray()
            while not buf.endswith(b"\n"):
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                buf += chunk
        except OSError as exc:
            raise ClusterError(f"the cluster stopped answering: {exc}") from exc
        return bytes(buf)


def _too_large(op: str, args: dict[str, Any], size: int) -> str:
    """One line for a request the control socket would refuse, naming the files it came from."""
    sources = [d.get("source", "") for d in args.get("documents") or [] if isinstance(d, dict)]
    what = f"{', '.join(sources)}: " if sources else ""
    return (f"{what}the {op} request is {size / _MIB:.1f} MiB, more than the control socket's limit of "
            f"{MAX_LINE // _MIB} MiB; " + ("apply the manifests in smaller files" if sources else "send less at once"))
