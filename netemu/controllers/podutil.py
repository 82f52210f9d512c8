"""Small facts about pods that several controllers share; ``request_deletion`` (the API server's
graceful pod deletion, ``netemu.poddeletion``) is here too, for the controllers that delete pods."""
from __future__ import annotations

from typing import Any, Callable

from netemu.api.objects import Pod, PodCondition
from netemu.frozen import evolve
from netemu.poddeletion import is_terminal, request_deletion
from netemu.store import now_rfc3339

# is_terminal and request_deletion come from netemu.poddeletion (the API server's), for the controllers
__all__ = ["controller_of", "is_active", "is_ready", "is_terminal", "is_terminating", "ready_since",
           "request_deletion", "set_condition"]


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
        changed = evolve(
            cond, status=status, reason=reason, message=message,
            last_transition_time=now_rfc3339() if cond.status != status else cond.last_transition_time)
        return conditions[:i] + (changed,) + conditions[i + 1:]
    return conditions + (factory(type=type, status=status, reason=reason, message=message,
                                 last_transition_time=now_rfc3339()),)


