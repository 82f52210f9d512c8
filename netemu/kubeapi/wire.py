"""Objects as the API server writes them: netemu's manifest form (``codec.to_dict``) plus the
fields Kubernetes never omits (``typeinfo.ALWAYS_WRITTEN``: a container status's ``ready:
false``, an endpoint's empty ``addresses`` …)."""
from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

from netemu.api import to_dict

from .typeinfo import ALWAYS_WRITTEN, attributes_of, fields_of


# Kinds whose objects kube-apiserver (1.32) gives no metadata.generation: their strategies never
# set one. The others start at 1, also in a dry-run create's answer (their PrepareForCreate).
WITHOUT_GENERATION = frozenset({"Pod", "Service", "Namespace", "Node", "ConfigMap", "Secret", "ServiceAccount",
                                "Event"})


def encode(obj: Any) -> dict[str, Any]:
    out = to_dict(obj)
    _complete(obj, out)
    meta = out.get("metadata")
    if isinstance(meta, dict) and getattr(obj, "KIND", "") in WITHOUT_GENERATION:
        meta.pop("generation", None)
    elif isinstance(meta, dict):
        meta["generation"] = meta.get("generation") or 1
    return out


def _complete(value: Any, out: Any) -> None:
    """Add the always-written fields of ``value`` (a dataclass) and its parts to ``out``, its dict."""
    if not dataclasses.is_dataclass(value) or not isinstance(out, dict):
        return
    cls = type(value)
    if cls.__name__ == "ObjectMeta" and not out.get("generation", 1):
        del out["generation"]  # omitempty: a pod template's metadata has none
    for field, ftype in fields_of(cls).items():
        default = ALWAYS_WRITTEN.get((cls.__name__, field), _NONE)
        if default is not _NONE and field not in out:
            out[field] = copy.copy(default)
        if ftype.cls is None or field not in out:
            continue
        part = getattr(value, attributes_of(cls)[field])
        if ftype.shape == "array":
            for item, item_out in zip(part, out[field]):
                _complete(item, item_out)
        else:
            _complete(part, out[field])


_NONE = object()


class EncodedObjects:
    """The wire form of each live object, made once: stored objects are immutable (a write
    stores a new one), so an object's dict and JSON text are kept for as long as it is the live
    one under its kind, namespace and name (a LIST of 1,000 pods then costs no encoding, and a
    watch event is encoded once for all its watchers). What ``shared`` answers is shared: read it,
    never change it."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._cache: dict[tuple[str, str, str], list[Any]] = {}  # key → [object, dict, JSON text or None]
        store.subscribe(self._forget, kinds=None)  # lives as long as the store (the cluster)

    def _forget(self, event: Any) -> None:
        if event.new is None:
            old = event.old
            self._cache.pop((old.KIND, old.metadata.namespace, old.metadata.name), None)

    def _entry(self, obj: Any) -> list[Any]:
        key = (obj.KIND, obj.metadata.namespace, obj.metadata.name)
        entry = self._cache.get(key)
        if entry is None or entry[0] is not obj:
            entry = [obj, encode(obj), None]
            if self._store.get(*key) is obj:  # only the live object is kept (not a deleted one's last state)
                self._cache[key] = entry
        return entry

    def shared(self, obj: Any) -> dict[str, Any]:
        return self._entry(obj)[1]  # type: ignore[no-any-return]

    def text(self, obj: Any) -> str:
        entry = self._entry(obj)
        if entry[2] is None:
            entry[2] = json.dumps(entry[1])
        return entry[2]  # type: ignore[no-any-return]


def list_json(head: dict[str, Any], item_texts: list[str]) -> bytes:
    """``{**head, "items": [...]}`` as JSON, the items given as JSON texts already."""
    return (json.dumps(head)[:-1] + ', "items": [' + ", ".join(item_texts) + "]}").encode()
