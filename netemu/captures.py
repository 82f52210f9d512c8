"""netemu.dev Capture objects: packet captures that kubectl (or any client) starts and stops.

A Capture names one target (a pod in its namespace, a node, or a link between two nodes), an
optional tcpdump-style ``filter`` and ``count``. Two parts, as for Impairments (``chaos``):

- **admission** (``problems``): what only the running cluster can judge — the backend records
  packets (netns only: on the loopback backend packets never leave the host's own stack), the
  pod and nodes named exist, and the spec does not change once created (a capture records one
  thing). A refusal is a 422 naming the field; nothing is stored.
- **recording** (``Captures``): a Capture created starts recording into a pcapng file in the
  cluster's state directory (``captures/<namespace>_<name>_<uid>.pcapng``: the cluster chooses
  the path, so no API client can make netemu write elsewhere); its status says ``Running``, the
  file and what is recorded, and ``frames`` as they grow (every ``STATUS_PERIOD`` seconds, not
  per frame); with ``count`` it ends ``Completed``; a capture that cannot start is ``Failed``
  with the message. Deleting the Capture stops it; the file stays until the cluster is removed.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from netemu.api.objects import Capture, CaptureStatus
from netemu.errors import FieldProblem, NetemuError
from netemu.store import DELETED

log = logging.getLogger(__name__)

STATUS_PERIOD = 1.0  # seconds between updates of a running capture's frame count


def problems(cluster: Any, cap: Capture, live: Capture | None) -> list[FieldProblem]:
    """What the running cluster refuses in a Capture (admission)."""
    if live is not None and live.spec != cap.spec:
        return [FieldProblem("spec", "Forbidden: a Capture's spec cannot change once it is created (delete it and "
                             "create another)")]
    if not hasattr(cluster.fabric, "start_capture"):
        return [FieldProblem("spec", f"Forbidden: a capture needs the netns backend (this cluster uses "
                             f"{cluster.config.backend}): on the loopback backend packets never leave the host's "
                             "own stack")]
    target = cap.spec.target
    found: list[FieldProblem] = []
    if target.pod and cluster.store.get("Pod", cap.metadata.namespace, target.pod) is None:
        found.append(FieldProblem("spec.target.pod", f"Not found: {json.dumps(target.pod)}"))
    for path, name in ([("spec.target.node", target.node)] if target.node else []) + \
            [(f"spec.target.link[{i}]", n) for i, n in enumerate(target.link)]:
        if name not in cluster.nodes:
            found.append(FieldProblem(path, f"Not found: {json.dumps(name)}"))
    return found


def capture_file(directory: Path, cap: Capture) -> Path:
    return directory / f"{cap.metadata.namespace}_{cap.metadata.name}_{(cap.metadata.uid or '')[:8]}.pcapng"


class Captures:
    """Records the cluster's Capture objects (see the module's text)."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.directory = Path(cluster.state.directory) / "captures"
        self._running: dict[str, tuple[Any, asyncio.Task[None]]] = {}   # by uid
        self._unsubscribe: Any = None

    def start(self) -> None:
        apiserver = self.cluster.apiserver
        apiserver.admission["Capture"] = lambda obj: problems(
            self.cluster, obj, self.cluster.store.get("Capture", obj.metadata.namespace, obj.metadata.name))
        self._unsubscribe = self.cluster.store.subscribe(self._on_event, kinds=["Capture"])

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for capture, task in list(self._running.values()):
            capture.stop()
            task.cancel()
        await asyncio.gather(*(task for _, task in self._running.values()), return_exceptions=True)
        self._running.clear()

    def _on_event(self, event: Any) -> None:
        if event.type == DELETED:
            running = self._running.pop(event.old.metadata.uid, None)
            if running is not None:
                running[0].stop()
                running[1].cancel()
        elif event.old is None and event.new.metadata.uid not in self._running:
            cap = event.new
            self._running[cap.metadata.uid] = (None, asyncio.ensure_future(self._record(cap)))

    async def _record(self, cap: Capture) -> None:
        uid, target = cap.metadata.uid, cap.spec.target
        try:
            self.directory.mkdir(mode=0o700, exist_ok=True)
            path = capture_file(self.directory, cap)
            capture = await self.cluster.start_capture(
                path, pod=target.pod or None, node=target.node or None, link=tuple(target.link) or None,
                namespace=cap.metadata.namespace, filter=cap.spec.filter, count=cap.spec.count)
        except (NetemuError, OSError) as exc:
            self._running.pop(uid, None)
            self._write(cap, phase="Failed", message=str(exc))
            return
        if uid not in self._running:     # deleted while it started
            capture.stop()
            return
        self._running[uid] = (capture, self._running[uid][1])
        recording = ", ".join(tap.label for tap in capture.taps)
        self._write(cap, phase="Running", file=os.fspath(path), recording=recording)
        try:
            while not capture.done.is_set():
                try:
                    await asyncio.wait_for(capture.done.wait(), STATUS_PERIOD)
                except asyncio.TimeoutError:
                    pass
                self._write(cap, frames=capture.frames)
            self._write(cap, phase="Completed", frames=capture.frames)
        finally:
            if self._running.get(uid, (None,))[0] is capture:
                del self._running[uid]

    def _write(self, cap: Capture, **changes: Any) -> None:
        """Set status fields of the Capture if it is still the same object and they changed."""
        namespace, name, uid = cap.metadata.namespace, cap.metadata.name, cap.metadata.uid
        current = self.cluster.store.get("Capture", namespace, name)
        if current is None or current.metadata.uid != uid:
            return
        status = dataclasses.replace(current.status, **changes)
        if status != current.status:
            self.cluster.store.modify("Capture", namespace, name,
                                      lambda o: dataclasses.replace(o, status=status) if o.metadata.uid == uid else o)


__all__ = ["Captures", "CaptureStatus", "problems"]
