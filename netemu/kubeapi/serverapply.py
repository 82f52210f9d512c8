"""Server-side apply (``PATCH`` with ``application/apply-patch+yaml``), as kube-apiserver does it
with structured-merge-diff.

The applied configuration is merged into the live object (or is the new object when there is
none); the applier then owns exactly the fields it sent. A field another manager owns and this
apply would change is a conflict (409, ``Apply failed with 1 conflict: conflict with
"kubectl-client-side-apply" using apps/v1: .spec.replicas``) unless the request forces it
(``force=true``, ``kubectl apply --force-conflicts``), which takes it over. Fields the applier
set last time and leaves out now are removed, unless someone else owns them. An object that has
no managed fields yet (written before the API recorded them, or by the cluster itself) is owned
by ``before-first-apply``, as in kube-apiserver.
"""
from __future__ import annotations

import json
from typing import Any

import yaml

from netemu.store import now_rfc3339

from . import fieldset, managedfields
from .managedfields import APPLY, UPDATE, Entry
from .resources import Resource
from .status import ApiError, bad_request

APPLY_PATCH = "application/apply-patch+yaml"
BEFORE_FIRST_APPLY = "before-first-apply"


def decode_body(raw: bytes) -> Any:
    """The applied configuration: YAML (JSON is YAML too); one document, an object."""
    try:
        body = yaml.safe_load(raw.decode("utf-8")) if raw.strip() else None
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        raise bad_request(f"error decoding YAML: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request("error decoding YAML: the applied configuration must be an object")
    return body


def _conflict(conflicts: list[tuple[Entry, fieldset.Path]]) -> ApiError:
    causes = [{"reason": "FieldManagerConflict", "message": f"conflict with {entry.describe()}",
               "field": fieldset.path_string(path)} for entry, path in conflicts]
    if len(conflicts) == 1:
        entry, path = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {entry.describe()}: {fieldset.path_string(path)}"
    else:
        lines = []
        for describe in sorted({entry.describe() for entry, _ in conflicts}):
            lines.append(f"conflicts with {describe}:")
            lines += [f"- {fieldset.path_string(path)}" for entry, path in conflicts if entry.describe() == describe]
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return ApiError(409, "Conflict", message, {"causes": causes})


def apply(r: Resource, live: dict[str, Any] | None, config: dict[str, Any], manager: str,
          force: bool) -> dict[str, Any]:
    """The object after ``manager`` applies ``config`` over ``live`` (its JSON form, None when
    absent), with its new managedFields; ApiError 409 on a conflict that is not forced."""
    node = fieldset.schema(r.cls)
    entries = managedfields.read(live)
    if live is not None and not entries:
        entries = [Entry(BEFORE_FIRST_APPLY, UPDATE, r.api_version,
                         fieldset.field_set(fieldset.owned_part(live), node), now_rfc3339())]
    applied = fieldset.field_set(fieldset.owned_part(config), node)
    config = {k: v for k, v in config.items() if k != "status"}
    config_meta = config.get("metadata")
    if isinstance(config_meta, dict) and "managedFields" in config_meta:
        raise bad_request("metadata.managedFields must be nil")
    merged = fieldset.merge(live, config, node) if live is not None else json.loads(json.dumps(config))
    last = next((e for e in entries if e.same(manager, APPLY)), None)
    others = [e for e in entries if e is not last]
    if last is not None:  # what it applied last time and no longer does, unless someone else owns it
        owned_by_others = frozenset().union(*(e.fields for e in others))
        present = fieldset.field_set(fieldset.owned_part(merged), node)  # fields and items, not their parents
        merged = fieldset.remove(merged, (last.fields & present) - applied - owned_by_others, node)
    before = fieldset.owned_part(live) if live is not None else {}
    comparison = fieldset.compare(before, fieldset.owned_part(merged), node)
    conflicts = [(e, path) for e in others for path in sorted(e.fields & comparison.changed)]
    if conflicts and not force:
        raise _conflict(conflicts)
    acting = Entry(manager, APPLY, r.api_version, applied, now_rfc3339())
    entries = others + [acting]
    managedfields.take(entries, acting, comparison)
    merged.setdefault("metadata", {})["managedFields"] = managedfields.write(entries)
    return merged
