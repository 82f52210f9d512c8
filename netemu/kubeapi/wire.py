"""Objects as the API server writes them: netemu's manifest form (``codec.to_dict``) plus the
fields Kubernetes never omits (``typeinfo.ALWAYS_WRITTEN``: a container status's ``ready:
false``, an endpoint's empty ``addresses`` …)."""
from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

from netemu.api import to_dict

from .livecache import LiveCache
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
    """The wire form of each live object, made once (``livecache``): a LIST of 1,000 pods then
    costs no encoding, and a watch event is encoded once for all its watchers. What ``shared``
    answers is shared: read it, never change it."""

    def __init__(self, store: Any) -> None:
        self._live: LiveCache[list[Any]] = LiveCache(store)  # object → [dict, JSON text or None]

    def _entry(self, obj: Any) -> list[Any]:
        return self._live.get(obj, lambda o: [encode(o), None])

    def shared(self, obj: Any) -> dict[str, Any]:
        return self._entry(obj)[0]  # type: ignore[no-any-return]

    def text(self, obj: Any) -> str:
        entry = self._entry(obj)
        if entry[1] is None:
            entry[1] = json.dumps(entry[0])
        return entry[1]  # type: ignore[no-any-return]


def list_json(head: dict[str, Any], item_texts: list[str], key: str = "items") -> bytes:
    """``{**head, key: [...]}`` as JSON, the items given as JSON texts already."""
    return (json.dumps(head)[:-1] + f', "{key}": [' + ", ".join(item_texts) + "]}").encode()
