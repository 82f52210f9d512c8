"""``metadata.managedFields``: who set which field, as kube-apiserver records it.

One entry per manager and operation (``Apply`` for server-side apply, ``Update`` for every other
write), with the API version, the time and the fields in the FieldsV1 format (``fieldset``). An
ordinary write (create, update, patch) is an ``Update``: its manager, the ``fieldManager``
parameter or else the user agent's program name (``kubectl-client-side-apply``, ``kubectl-edit``,
``kubectl`` …), takes every field it changed, away from whoever had it, as kube-apiserver's
field manager does. What no one changes through the API (status, what the cluster's own
controllers write) has no manager.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from netemu.store import now_rfc3339

from . import fieldset
from .fieldset import FieldSet
from .resources import Resource
from .status import ApiError

APPLY, UPDATE = "Apply", "Update"
MAX_MANAGER_LENGTH = 128


@dataclasses.dataclass
class Entry:
    manager: str
    operation: str
    api_version: str
    fields: FieldSet
    time: str = ""
    subresource: str = ""

    def same(self, manager: str, operation: str, subresource: str = "") -> bool:
        return (self.manager, self.operation, self.subresource) == (manager, operation, subresource)

    def describe(self) -> str:
        """The manager as a conflict names it: ``"kubectl"`` for an applier, ``"kubectl-edit"
        using apps/v1`` for an updater (kube-apiserver's printManager)."""
        text = f'"{self.manager}"'
        if self.subresource:
            text += f' with subresource "{self.subresource}"'
        return f"{text} using {self.api_version}" if self.operation == UPDATE else text

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"manager": self.manager, "operation": self.operation, "apiVersion": self.api_version}
        if self.time:
            out["time"] = self.time
        out["fieldsType"] = "FieldsV1"
        out["fieldsV1"] = fieldset.to_fields_v1(self.fields)
        if self.subresource:
            out["subresource"] = self.subresource
        return out


def manager_name(field_manager: str, user_agent: str) -> str:
    """The ``fieldManager`` parameter, or else the user agent up to its first ``/``."""
    name = field_manager or user_agent.split("/", 1)[0]
    if len(name) > MAX_MANAGER_LENGTH:
        raise _invalid_options(f"fieldManager: Too long: may not be more than {MAX_MANAGER_LENGTH} bytes")
    return name


def _invalid_options(problem: str, kind: str = "PatchOptions") -> ApiError:
    field, _, message = problem.partition(": ")
    return ApiError(422, "Invalid", f'{kind}.meta.k8s.io "" is invalid: {problem}',
                    {"group": "meta.k8s.io", "kind": kind,
                     "causes": [{"reason": "FieldValueRequired" if message.startswith("Required") else
                                 "FieldValueInvalid", "message": message, "field": field}]})


def require_apply_manager(field_manager: str) -> None:
    if not field_manager:
        raise _invalid_options("fieldManager: Required value: is required for apply patch")


def read(obj: dict[str, Any] | None) -> list[Entry]:
    """The entries of an object in its JSON form (none when it has none or they are malformed)."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    raw = meta.get("managedFields") if isinstance(meta, dict) else None
    out = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, dict) and item.get("fieldsType", "FieldsV1") == "FieldsV1":
            out.append(Entry(str(item.get("manager", "")), str(item.get("operation", UPDATE)),
                             str(item.get("apiVersion", "")), fieldset.from_fields_v1(item.get("fieldsV1", {})),
                             str(item.get("time", "")), str(item.get("subresource", ""))))
    return out


def write(entries: list[Entry]) -> list[dict[str, Any]]:
    """Entries in kube-apiserver's order (operation, time, manager, API version), empty ones left out."""
    kept = [e for e in entries if e.fields]
    kept.sort(key=lambda e: (e.operation, e.time, e.manager, e.api_version))
    return [e.to_dict() for e in kept]


def take(entries: list[Entry], acting: Entry, comparison: fieldset.Comparison) -> None:
    """Every other manager loses what ``acting`` changed; everyone loses what it removed."""
    for entry in entries:
        if entry is not acting:
            entry.fields = entry.fields - comparison.changed - comparison.removed


def after_update(r: Resource, live: dict[str, Any] | None, new: dict[str, Any], manager: str,
                 subresource: str = "") -> list[dict[str, Any]]:
    """The managedFields of ``new`` (a write's object, defaulted, in its JSON form) after an
    ordinary write by ``manager`` over ``live`` (None for a create). Entries that ``new`` carries
    replace the live ones (a client setting them on purpose), as in kube-apiserver."""
    entries = read(new) or read(live)
    node = fieldset.schema(r.cls)
    before = fieldset.owned_part(live) if live is not None else fieldset.owned_part(fieldset.skeleton(r.cls))
    comparison = fieldset.compare(before, fieldset.owned_part(new), node)
    acting = next((e for e in entries if e.same(manager, UPDATE, subresource)), None)
    if acting is None:
        acting = Entry(manager, UPDATE, r.api_version, frozenset(), subresource=subresource)
        entries.append(acting)
    take(entries, acting, comparison)
    changed = frozenset(comparison.changed)
    if changed or acting.time == "":
        acting.time = now_rfc3339()
    acting.fields = (acting.fields | changed) - frozenset(comparison.removed)
    acting.api_version = r.api_version
    return write(entries)


def with_managed_fields(obj: Any, managed: list[dict[str, Any]]) -> Any:
    """``obj`` (a netemu object) carrying ``managed`` in its metadata."""
    extra = {k: v for k, v in obj.metadata.extra.items() if k != "managedFields"}
    if managed:
        extra["managedFields"] = managed
    return dataclasses.replace(obj, metadata=dataclasses.replace(obj.metadata, extra=extra))
