"""The API server's graceful pod deletion (``request_deletion``), as kube-apiserver's pod storage does it.

A pod that never reached a node (or that already finished) is removed at once; a running one gets
``metadata.deletionTimestamp`` (now plus the grace period) and ``deletionGracePeriodSeconds``, and
the kubelet finishes the job (it stops the containers after the endpoint change is delivered, then
deletes the object). The API server and the controllers that delete pods call it.
"""
from __future__ import annotations

import dataclasses
import datetime

from netemu.api.objects import Pod
from netemu.errors import NotFoundError
from netemu.store import Store

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


def is_terminal(pod: Pod) -> bool:
    return pod.status.phase in TERMINAL_PHASES


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
