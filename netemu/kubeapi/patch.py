"""The PATCH types of the Kubernetes API, applied to an object's JSON form.

- ``application/json-patch+json``: RFC 6902, by the ``jsonpatch`` library;
- ``application/merge-patch+json``: RFC 7386 (null removes a key, lists are replaced);
- ``application/strategic-merge-patch+json``: Kubernetes' strategic merge patch, what
  ``kubectl apply``, ``edit``, ``label`` and ``set image`` send. Lists with a patch merge key
  (``typeinfo.PATCH_MERGE_KEYS``: containers by ``name``, ports by ``containerPort``/``port``,
  env and volumes by ``name`` …) merge element by element; the directives ``$patch``
  (``replace``, ``delete``, ``merge``), ``$setElementOrder/<list>``, ``$retainKeys`` and
  ``$deleteFromPrimitiveList/<list>`` are honoured; other lists are replaced, as in Kubernetes.

Server-side apply (``application/apply-patch+yaml``) is ``serverapply``'s.
"""
from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from netemu.errors import InvalidError

from .typeinfo import MERGED_SETS, PATCH_MERGE_KEYS, fields_of

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH)

_ORDER, _DELETE_FROM = "$setElementOrder/", "$deleteFromPrimitiveList/"


def apply_patch(content_type: str, original: dict[str, Any], patch: Any, cls: type | None) -> dict[str, Any]:
    """``original`` with ``patch`` applied; InvalidError for a patch that cannot apply."""
    if content_type == JSON_PATCH:
        if not isinstance(patch, list):
            raise InvalidError("json patch must be a list of operations")
        try:
            result = jsonpatch.apply_patch(original, patch)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as exc:
            raise InvalidError(f"the server rejected our request due to an error in our request: {exc}") from exc
        if not isinstance(result, dict):
            raise InvalidError("json patch must leave an object")
        return result
    if not isinstance(patch, dict):
        raise InvalidError("patch must be a JSON object")
    if content_type == MERGE_PATCH:
        return merge_patch(original, patch)
    if content_type == STRATEGIC_MERGE_PATCH:
        return strategic_merge_patch(original, patch, cls)
    raise InvalidError(f"unsupported patch type {content_type!r}")


def merge_patch(original: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def strategic_merge_patch(original: dict[str, Any], patch: dict[str, Any], cls: type | None) -> dict[str, Any]:
    merged = _merge_map(original, patch, cls)
    return merged if merged is not None else {}


def _strip(value: Any) -> Any:
    """A patch value stored as is: directives removed, nulls in maps dropped."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not k.startswith("$") and v is not None}
    if isinstance(value, list):
        return [_strip(v) for v in value if not (isinstance(v, dict) and v.get("$patch") == "delete")]
    return value


def _merge_map(original: Any, patch: dict[str, Any], cls: type | None) -> dict[str, Any] | None:
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return _strip(patch)  # type: ignore[no-any-return]
    out = dict(original) if isinstance(original, dict) else {}
    fields = fields_of(cls) if cls is not None else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            out.pop(key, None)
            continue
        ftype = fields.get(key)
        sub_cls = ftype.cls if ftype is not None else None
        merge_key = PATCH_MERGE_KEYS.get((cls.__name__, key)) if cls is not None else None
        if isinstance(value, dict):
            merged = _merge_map(out.get(key), value, sub_cls)
            if merged is None:
                out.pop(key, None)
            else:
                out[key] = merged
        elif isinstance(value, list) and merge_key and isinstance(out.get(key), list):
            out[key] = _merge_list(out[key], value, merge_key, sub_cls, patch.get(_ORDER + key))
        elif isinstance(value, list) and cls is not None and (cls.__name__, key) in MERGED_SETS:
            have = list(out.get(key) or [])
            out[key] = have + [v for v in value if v not in have]
        else:
            out[key] = _strip(value)
    for key, value in patch.items():
        if key.startswith(_DELETE_FROM) and isinstance(value, list):
            name = key[len(_DELETE_FROM):]
            out[name] = [v for v in out.get(name) or [] if v not in value]
        elif key.startswith(_ORDER) and key[len(_ORDER):] not in patch and isinstance(out.get(key[len(_ORDER):]), list):
            name = key[len(_ORDER):]
            merge_key = PATCH_MERGE_KEYS.get((cls.__name__, name)) if cls is not None else None
            out[name] = _ordered(out[name], value, merge_key)
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _merge_list(original: list[Any], patch: list[Any], merge_key: str, cls: type | None,
                order: Any) -> list[Any]:
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [_strip(p) for p in patch if not (isinstance(p, dict) and p.get("$patch") == "replace")]
    items = list(original)
    for p in patch:
        if not isinstance(p, dict):
            continue
        index = next((i for i, item in enumerate(items)
                      if isinstance(item, dict) and item.get(merge_key) == p.get(merge_key)), None)
        if p.get("$patch") == "delete":
            if index is not None:
                del items[index]
            continue
        merged = _merge_map(items[index] if index is not None else {}, p, cls)
        if index is None:
            items.append(merged)
        else:
            items[index] = merged
    return _ordered(items, order, merge_key) if isinstance(order, list) else items


def _ordered(items: list[Any], order: list[Any], merge_key: str | None) -> list[Any]:
    """Items in the order ``$setElementOrder`` names (by merge key, or by value); others after."""
    def key(item: Any) -> Any:
        return item.get(merge_key) if merge_key and isinstance(item, dict) else item
    wanted = [o.get(merge_key) if merge_key and isinstance(o, dict) else o for o in order]
    position = {k: i for i, k in enumerate(wanted)}
    return sorted(items, key=lambda item: position.get(key(item), len(position)))
