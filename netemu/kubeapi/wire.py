"""Objects as the API server writes them: netemu's manifest form (``codec.to_dict``) plus the
fields Kubernetes never omits (``typeinfo.ALWAYS_WRITTEN``: a container status's ``ready:
false``, an endpoint's empty ``addresses`` …)."""
from __future__ import annotations

import copy
import dataclasses
from typing import Any

from netemu.api import to_dict

from .typeinfo import ALWAYS_WRITTEN, attributes_of, fields_of


def encode(obj: Any) -> dict[str, Any]:
    out = to_dict(obj)
    _complete(obj, out)
    return out


def _complete(value: Any, out: Any) -> None:
    """Add the always-written fields of ``value`` (a dataclass) and its parts to ``out``, its dict."""
    if not dataclasses.is_dataclass(value) or not isinstance(out, dict):
        return
    cls = type(value)
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
