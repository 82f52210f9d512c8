"""The ``pods/log`` subresource: a container's log, as kube-apiserver and the kubelet serve it.

``GET /api/v1/namespaces/{ns}/pods/{name}/log`` with ``container``, ``follow``, ``tailLines``,
``sinceSeconds``/``sinceTime``, ``timestamps``, ``previous`` and ``limitBytes``. The log is the
file the node's kubelet writes for the container (``Kubelet.log_path``, the one ``netemu logs``
reads). A follow streams (chunked) what is appended until the container instance ends, the pod
is deleted or replaced, the client goes away or the server stops.

netemu keeps one log file per container for all its instances and no per-line times, so:
``previous`` is answered with the kubelet's 400 (``previous terminated container "c" in pod "p"
not found``); ``timestamps`` stamps the lines already written with the file's last write (the
latest they can be) and followed lines with the time they were read; ``sinceSeconds`` keeps the
lines already written only when the file was written since then (all of them), followed lines
by their time.
"""
from __future__ import annotations

import asyncio
import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

from netemu.errors import FieldProblem

from .status import ApiError, bad_request, invalid, method_not_allowed

FOLLOW_POLL = 0.2  # seconds between looks at a followed log file and its pod
_TEXT = "text/plain"


def _not_found(name: str) -> ApiError:
    return ApiError(404, "NotFound", f'pods "{name}" not found', {"name": name, "kind": "pods"})


def live_pod(store: Any, namespace: str, name: str) -> Any:
    pod = store.get("Pod", namespace, name)
    if pod is None:
        raise _not_found(name)
    return pod


def choose_container(pod: Any, container: str) -> str:
    """The container a log or exec request means, checked as kube-apiserver checks it (400s)."""
    name = pod.metadata.name
    names = [c.name for c in pod.spec.containers]
    init_names = [c.name for c in pod.spec.init_containers]
    if not container:
        if len(names) == 1:
            return names[0]
        message = f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]"
        if init_names:
            message += f" or one of the init containers: [{' '.join(init_names)}]"
        raise bad_request(message)
    if container not in names + init_names:
        raise bad_request(f"container {container} is not valid for pod {name}")
    return container


def container_status(pod: Any, container: str) -> Any:
    for status in (*pod.status.container_statuses, *pod.status.init_container_statuses):
        if status.name == container:
            return status
    return None


@dataclass
class LogOptions:
    """PodLogOptions from the query, validated as kube-apiserver validates them."""
    container: str = ""
    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    since_seconds: int | None = None
    since_time: datetime.datetime | None = None
    limit_bytes: int | None = None

    @classmethod
    def parse(cls, params: Any, pod_name: str) -> "LogOptions":
        def flag(key: str) -> bool:
            return params.get(key, "").lower() in ("true", "1")

        def number(key: str) -> int | None:
            text = params.get(key)
            if text in (None, ""):
                return None
            try:
                return int(text)
            except ValueError:
                raise bad_request(f'{key}: Invalid value: "{text}": must be an integer') from None

        options = cls(container=params.get("container", ""), follow=flag("follow"), previous=flag("previous"),
                      timestamps=flag("timestamps"), tail_lines=number("tailLines"),
                      since_seconds=number("sinceSeconds"), limit_bytes=number("limitBytes"))
        if params.get("sinceTime"):
            try:
                options.since_time = datetime.datetime.fromisoformat(params["sinceTime"].replace("Z", "+00:00"))
            except ValueError:
                raise bad_request(f'sinceTime: Invalid value: "{params["sinceTime"]}": must be an RFC3339 time') \
                    from None
        problems = []
        if options.tail_lines is not None and options.tail_lines < 0:
            problems.append(FieldProblem("tailLines", f"Invalid value: {options.tail_lines}: "
                                                      "must be greater than or equal to 0"))
        if options.limit_bytes is not None and options.limit_bytes < 1:
            problems.append(FieldProblem("limitBytes", f"Invalid value: {options.limit_bytes}: "
                                                       "must be greater than 0"))
        if options.since_seconds is not None and options.since_seconds < 1:
            problems.append(FieldProblem("sinceSeconds", f"Invalid value: {options.since_seconds}: "
                                                         "must be greater than 0"))
        if options.since_seconds is not None and options.since_time is not None:
            problems.append(FieldProblem("", "at most one of `sinceTime` or `sinceSeconds` may be specified"))
        if problems:
            raise invalid("PodLogOptions", pod_name, "pods", "", problems)
        return options

    def cutoff(self) -> float | None:
        """The earliest time (epoch seconds) a line may have to be shown, if limited."""
        if self.since_seconds is not None:
            return datetime.datetime.now(datetime.timezone.utc).timestamp() - self.since_seconds
        if self.since_time is not None:
            when = self.since_time
            return (when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)).timestamp()
        return None


def _stamp(when: float) -> bytes:
    moment = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
    return (moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}000Z ").encode()


class _Shaper:
    """Turns the file's bytes into the response's: timestamps and the byte limit."""

    def __init__(self, options: LogOptions) -> None:
        self.options = options
        self.sent = 0
        self._at_line_start = True

    @property
    def full(self) -> bool:
        return self.options.limit_bytes is not None and self.sent >= self.options.limit_bytes

    def shape(self, data: bytes, when: float) -> bytes:
        if self.options.timestamps and data:
            out = bytearray()
            for line in data.splitlines(keepends=True):
                if self._at_line_start:
                    out += _stamp(when)
                out += line
                self._at_line_start = line.endswith(b"\n")
            data = bytes(out)
        if self.options.limit_bytes is not None:
            data = data[:max(self.options.limit_bytes - self.sent, 0)]
        self.sent += len(data)
        return data


def _tail(data: bytes, lines: int) -> bytes:
    if lines == 0:
        return b""
    kept = data.splitlines(keepends=True)
    return b"".join(kept[-lines:])


def read_from(path: Path, offset: int) -> tuple[bytes, float | None]:
    """The file's bytes from ``offset`` and its last write time (None when there is no file)."""
    try:
        with open(path, "rb") as f:
            mtime = os.fstat(f.fileno()).st_mtime
            f.seek(offset)
            return f.read(), mtime
    except FileNotFoundError:
        return b"", None


class PodLogs:
    """Serves ``pods/log`` over one cluster (its store and kubelets)."""

    def __init__(self, cluster: Any, stopping: asyncio.Event) -> None:
        self.cluster = cluster
        self.stopping = stopping

    def _log_file(self, pod: Any, container: str, options: LogOptions) -> Path:
        name = pod.metadata.name
        kubelet = self.cluster.kubelets.get(pod.spec.node_name) if pod.spec.node_name else None
        if kubelet is None:
            raise bad_request(f"pod {name} does not have a host assigned")
        status = container_status(pod, container)
        if options.previous:
            raise bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
        path = Path(kubelet.log_path(pod, container))
        if not path.exists():
            waiting = status.state.waiting if status is not None else None
            reason = waiting.reason if waiting is not None and waiting.reason else "ContainerCreating"
            raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
        return path

    async def serve(self, request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        if request.method != "GET":
            raise method_not_allowed()
        pod = live_pod(self.cluster.store, namespace, name)
        options = LogOptions.parse(request.query, name)
        container = choose_container(pod, options.container)
        path = self._log_file(pod, container, options)
        data, mtime = await asyncio.to_thread(read_from, path, 0)
        offset = len(data)
        cutoff = options.cutoff()
        if cutoff is not None and (mtime is None or mtime < cutoff):
            data = b""
        if options.tail_lines is not None:
            data = _tail(data, options.tail_lines)
        shaper = _Shaper(options)
        first = shaper.shape(data, mtime or 0.0)
        status = container_status(pod, container)
        instance = status.state.running if status is not None else None
        if not options.follow or instance is None or shaper.full:
            return web.Response(body=first, content_type=_TEXT)
        response = web.StreamResponse(headers={"Content-Type": _TEXT, "Cache-Control": "no-cache, private"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            if first:
                await response.write(first)
            still_running = self._same_instance(namespace, name, pod.metadata.uid, container, instance)
            await self._follow(request, response, path, offset, shaper, still_running)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away while we wrote
        return response

    def _same_instance(self, namespace: str, name: str, uid: str, container: str,
                       instance: Any) -> Callable[[], bool]:
        """Whether the followed container instance still runs in the same pod."""
        def check() -> bool:
            pod = self.cluster.store.get("Pod", namespace, name)
            if pod is None or pod.metadata.uid != uid:
                return False
            status = container_status(pod, container)
            return status is not None and status.state.running == instance
        return check

    async def _follow(self, request: web.Request, response: web.StreamResponse, path: Path, offset: int,
                      shaper: _Shaper, still_running: Callable[[], bool]) -> None:
        while not shaper.full:
            running = still_running()  # looked at before the read: what the instance wrote last is read
            data, _ = await asyncio.to_thread(read_from, path, offset)
            offset += len(data)
            if data:
                await response.write(shaper.shape(data, _now()))
            if not running or self.stopping.is_set():
                return
            if request.transport is None or request.transport.is_closing():
                return  # the client went away
            try:
                await asyncio.wait_for(self.stopping.wait(), FOLLOW_POLL)
            except asyncio.TimeoutError:
                pass


def _now() -> float:
    return datetime.datetime.now(datetime.timezone.utc).timestamp()
