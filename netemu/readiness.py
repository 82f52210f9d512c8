"""Waiting for a cluster's pods, and telling apart pods that are slow from pods that are stuck.

``netemu up`` waits until every pod is ready, but some failures never fix themselves however long
one waits: an image netemu cannot run (``ErrImagePull``), a program that cannot start
(``StartError``, then ``CrashLoopBackOff`` with that as its last state), a container that listens
on a wildcard address on the loopback backend (``WildcardBind``) or whose port is refused (bind:
permission denied, address in use, address not available). ``stuck_pods`` finds those from the pod
statuses alone; ``wait_for_pods`` stops at the first of them instead of running into the timeout,
and ``require_ready`` (``netemu wait``, scenarios, the pytest fixtures) raises when it does.
A container waiting in ``CreateContainerConfigError`` (a ConfigMap, Secret or key it needs is
missing) is not stuck: applying what it lacks starts it, so waiting goes on until the timeout.

While waiting, ``Readiness`` keeps what is not ready up to date from the store's changes, so
each change costs the one object it changed: checking every pod after every change would cost
pods × changes (at 10,000 pods, seconds of the bring-up).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

from netemu.controllers.podutil import is_ready

from netemu.errors import PodsStuckError, WaitTimeoutError

_WAITING_FOR_GOOD = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName"})
_TERMINATED_FOR_GOOD = frozenset({"StartError", "ContainerCannotRun", "WildcardBind"})
# How netemu's images word a refused bind (netemu.images.base.bind_error).
_BIND_REFUSED = re.compile(r"cannot listen on \S+: (permission denied|address already in use|address not available)")


@dataclass(frozen=True)
class StuckContainer:
    """A container of a pod that will not become ready without a change to the pod or the host."""

    namespace: str
    pod: str
    container: str
    reason: str
    message: str

    def __str__(self) -> str:
        return f"pod {self.namespace}/{self.pod}: container {self.container}: {self.reason}: {self.message}"


def _hopeless_termination(terminated: Any) -> bool:
    return terminated is not None and (terminated.reason in _TERMINATED_FOR_GOOD
                                       or bool(_BIND_REFUSED.search(terminated.message or "")))


def _stuck(pod: Any, status: Any) -> StuckContainer | None:
    state, last = status.state, status.last_state
    waiting = state.waiting if state is not None else None
    where = (pod.metadata.namespace, pod.metadata.name, status.name)
    if waiting is not None and waiting.reason in _WAITING_FOR_GOOD:
        return StuckContainer(*where, waiting.reason, waiting.message)
    terminated = state.terminated if state is not None else None
    if _hopeless_termination(terminated):
        return StuckContainer(*where, terminated.reason, terminated.message)
    previous = last.terminated if last is not None else None
    if _hopeless_termination(previous):  # restarting, or running again until the same end
        reason = f"{waiting.reason} (last state: {previous.reason})" if waiting is not None else previous.reason
        return StuckContainer(*where, reason, previous.message)
    return None


def stuck_pods(pods: Iterable[Any]) -> list[StuckContainer]:
    """The containers, among ``pods``, that failed in a way a restart repeats."""
    out = []
    for pod in pods:
        if pod.metadata.deletion_timestamp:
            continue
        for status in (*pod.status.init_container_statuses, *pod.status.container_statuses):
            found = _stuck(pod, status)
            if found is not None:
                out.append(found)
    return out


@dataclass(frozen=True)
class PodsNotReady:
    """Why waiting ended without every pod ready: stuck containers, or the time ran out."""

    stuck: tuple[StuckContainer, ...] = ()
    timeout: str = ""

    def lines(self) -> list[str]:
        if self.stuck:
            pods = {(s.namespace, s.pod) for s in self.stuck}
            head = (f"{len(pods)} pod{'s' if len(pods) != 1 else ''} will not become ready "
                    "(restarting will not help):")
            return [head, *(f"  {s}" for s in self.stuck)]
        return [self.timeout]

    @property
    def first_pod(self) -> str:
        return self.stuck[0].pod if self.stuck else ""


_WORKLOADS = ("Deployment", "StatefulSet")


def pod_ready(pod: Any) -> bool:
    return pod.status.phase == "Succeeded" or is_ready(pod)


def workload_ready(obj: Any) -> bool:
    want = obj.spec.replicas if obj.spec.replicas is not None else 1
    return obj.status.ready_replicas == want and obj.status.replicas == want


class Readiness:
    """The pods that are not ready, the stuck containers, and the Deployments and StatefulSets
    short of ready replicas, kept up to date from the store's changes until ``close``."""

    def __init__(self, store: Any) -> None:
        self._waiting: set[tuple[str, str, str]] = set()     # (kind, namespace, name) not ready
        self._stuck: dict[tuple[str, str], list[StuckContainer]] = {}
        for kind in ("Pod", *_WORKLOADS):
            for obj in store.list(kind):
                self._update(obj)
        self.close = store.subscribe(self._changed, kinds=("Pod", *_WORKLOADS))

    @property
    def settled(self) -> bool:
        """Every pod and workload ready, or a container stuck."""
        return bool(self._stuck) or not self._waiting

    def stuck(self) -> list[StuckContainer]:
        """The stuck containers, by namespace and pod name (the store's order)."""
        return [found for key in sorted(self._stuck) for found in self._stuck[key]]

    def _changed(self, event: Any) -> None:
        if event.new is not None:
            self._update(event.new)
            return
        old = event.old
        self._waiting.discard((old.KIND, old.metadata.namespace, old.metadata.name))
        self._stuck.pop((old.metadata.namespace, old.metadata.name), None)

    def _update(self, obj: Any) -> None:
        key = (obj.KIND, obj.metadata.namespace, obj.metadata.name)
        ready = pod_ready(obj) if obj.KIND == "Pod" else workload_ready(obj)
        if ready:
            self._waiting.discard(key)
        else:
            self._waiting.add(key)
        if obj.KIND == "Pod":
            found = stuck_pods((obj,))
            if found:
                self._stuck[key[1:]] = found
            else:
                self._stuck.pop(key[1:], None)


async def wait_for_pods(cluster: Any, timeout: float) -> PodsNotReady | None:
    """Wait until every pod is ready (None), a container is stuck, or ``timeout`` passes."""
    readiness = Readiness(cluster.store)
    try:
        await cluster.wait_for(lambda: readiness.settled, timeout, "pods to be ready")
    except WaitTimeoutError as exc:
        return PodsNotReady(timeout=f"{exc}: still waiting for {', '.join(cluster.not_ready()[:10])}")
    finally:
        readiness.close()
    stuck = readiness.stuck()
    if stuck:
        return PodsNotReady(stuck=tuple(stuck))
    await cluster.settle()
    return None


async def require_ready(cluster: Any, timeout: float) -> None:
    """``wait_for_pods``, failing: PodsStuckError listing the stuck containers as soon as one is
    found, WaitTimeoutError when ``timeout`` passes. What ``netemu wait``, scenarios and the
    pytest fixtures wait with, so none of them waits out its timeout on a pod that cannot start."""
    not_ready = await wait_for_pods(cluster, timeout)
    if not_ready is None:
        return
    if not_ready.stuck:
        raise PodsStuckError("\n".join(not_ready.lines()))
    raise WaitTimeoutError(not_ready.timeout)
