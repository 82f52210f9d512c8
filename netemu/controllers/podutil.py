"""Small facts about pods that several controllers share, and graceful pod deletion.

``request_deletion`` is the API server's pod deletion: a pod that never reached a node (or that
already finished) is removed at once; a running one gets ``metadata.deletionTimestamp`` (now plus
the grace period) and ``deletionGracePeriodSeconds``, and the kubelet finishes the job (it stops
the containers after the endpoint change is delivered, then deletes the object).
"""
from __future__ import annotations

import dataclasses
import datetime
from typing import Any, Callable

from netemu.api.objects import Pod, PodCondition
from netemu.errors import NotFoundError
from netemu.store import Store, now_rfc3339

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


def is_ready(pod: Pod) -> bool:
    """The pod's Ready condition is True."""
    for cond in pod.status.conditions:
        if cond.type == "Ready":
            return cond.status == "True"
    return False


def ready_since(pod: Pod) -> str | None:
    """lastTransitionTime of a True Ready condition (None when not ready or unknown)."""
    for cond in pod.status.conditions:
        if cond.type == "Ready" and cond.status == "True":
            return cond.last_transition_time
    return None


def is_terminating(pod: Pod) -> bool:
    return pod.metadata.deletion_timestamp is not None


def is_terminal(pod: Pod) -> bool:
    return pod.status.phase in TERMINAL_PHASES


def is_active(pod: Pod) -> bool:
    """Counts toward a controller's replicas: neither terminating nor finished."""
    return not is_terminating(pod) and not is_terminal(pod)


def controller_of(obj: Any) -> Any | None:
    """The ownerReference marked ``controller: true``, if any."""
    for ref in obj.metadata.owner_references:
        if ref.controller:
            return ref
    return None


def set_condition(conditions: tuple[PodCondition, ...], type: str, status: str,
                  reason: str = "", message: str = "",
                  factory: Callable[..., Any] = PodCondition) -> tuple[Any, ...]:
    """``conditions`` with the condition ``type`` set; the same tuple object when nothing changes.

    lastTransitionTime moves only when the status flips, as in Kubernetes. ``factory`` builds a
    missing condition (PodCondition by default; any condition dataclass with the same fields works).
    """
    for i, cond in enumerate(conditions):
        if cond.type != type:
            continue
        if cond.status == status and cond.reason == reason and cond.message == message:
            return conditions
        changed = dataclasses.replace(
            cond, status=status, reason=reason, message=message,
            last_transition_time=now_rfc3339() if cond.status != status else cond.last_transition_time)
        return conditions[:i] + (changed,) + conditions[i + 1:]
    return conditions + (factory(type=type, status=status, reason=reason, message=message,
                                 last_transition_time=now_rfc3339()),)


def _deletion_time(grace_seconds: int) -> str:
    when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=grace_seconds)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def request_deletion(store: Store, pod: Pod, grace_period_seconds: int | None = None) -> Pod | None:
    """Delete ``pod`` as the API server does; returns the terminating pod, or None when it is gone.

    Immediate removal: the pod is not bound to a node, it has finished, or the grace period is 0
    (``--grace-period=0 --force``). A pod already terminating only has its grace period shortened.
    """
    ns, name = pod.metadata.namespace, pod.metadata.name
    current = store.get("Pod", ns, name)
    if current is None:
        return None
    grace = current.spec.termination_grace_period_seconds if grace_period_seconds is None \
        else grace_period_seconds
    grace = max(0, grace if grace is not None else 30)
    if not current.spec.node_name or is_terminal(current) or grace == 0:
        try:
            store.delete("Pod", ns, name)
        except NotFoundError:
            pass
        return None
    meta = current.metadata
    if meta.deletion_timestamp is not None:
        if meta.deletion_grace_period_seconds is not None and grace >= meta.deletion_grace_period_seconds:
            return current
    meta = dataclasses.replace(meta, deletion_timestamp=_deletion_time(grace),
                               deletion_grace_period_seconds=grace)
    return store.update(dataclasses.replace(current, metadata=meta))
