"""The ``status`` subresource (``GET``/``PUT``/``PATCH .../<name>/status``) of the kinds whose status
a controller or the kubelet reports: Pod, Service, Deployment, StatefulSet, DaemonSet.

As kube-apiserver's status strategies do, a write here changes only ``status``: the spec and the
metadata stay as stored (the body's ``resourceVersion``, when given, must still be current), and
a write of the main resource keeps the stored status (``ApiServer.admit`` does that). The body is
decoded and type-checked as any request body (``Rest._decode``); what the cluster's own
components write later wins, as on a real cluster.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from netemu.errors import InvalidError, NetemuError

from .patch import apply_patch
from .resources import Resource
from .status import ApiError, bad_request
from .wire import encode

STATUS_KINDS = frozenset({"Pod", "Service", "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Ingress"})
STATUS_VERBS = ("get", "patch", "update")


def has_status(r: Resource) -> bool:
    return r.kind in STATUS_KINDS


class StatusSubresource:
    """The status subresource over ``rest`` (a ``rest.Rest``: its store, decoding and errors)."""

    def __init__(self, rest: Any) -> None:
        self.rest = rest

    def _check(self, r: Resource) -> None:
        if not has_status(r):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def get(self, r: Resource, namespace: str, name: str, query: Any) -> dict[str, Any]:
        """The whole object, as kube-apiserver answers (any kind: namespaces and nodes too)."""
        return self.rest.get(r, namespace, name, query)  # type: ignore[no-any-return]

    def replace(self, r: Resource, namespace: str, name: str, body: Any, query: Any) -> dict[str, Any]:
        """PUT: the stored object with the body's status."""
        self._check(r)
        live = self.rest._live(r, namespace, name)
        wanted = self.rest._decode(r, _with_stored_spec(body, encode(live)), namespace, name)
        updated = dataclasses.replace(live, status=wanted.status)
        if query.dry_run:
            return encode(updated)
        try:
            stored = self.rest.store.update(updated, expect_rv=wanted.metadata.resource_version or None)
        except NetemuError as exc:
            raise self.rest._error(exc, r, name) from exc
        return encode(stored)

    def patch(self, r: Resource, namespace: str, name: str, content_type: str, body: Any,
              query: Any) -> dict[str, Any]:
        """PATCH: the patch applies to the whole stored object; only the status it leaves is kept."""
        self._check(r)
        live = self.rest._live(r, namespace, name)
        try:
            patched = apply_patch(content_type, encode(live), body, r.cls)
        except InvalidError as exc:
            raise bad_request(str(exc)) from exc
        return self.replace(r, namespace, name, patched, query)


def _with_stored_spec(body: Any, stored: dict[str, Any]) -> Any:
    """``body`` with the stored spec and metadata (but its own resourceVersion, the precondition):
    what a status write says about them is not looked at, not even validated."""
    if not isinstance(body, dict):
        return body
    meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    out = {**body, "metadata": {**stored["metadata"], "resourceVersion": meta.get("resourceVersion", "")}}
    if "spec" in stored:
        out["spec"] = stored["spec"]
    else:
        out.pop("spec", None)
    return out
