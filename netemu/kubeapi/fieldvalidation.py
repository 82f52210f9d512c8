"""``fieldValidation``: what a write does with fields its kind does not have.

``Strict`` refuses the request (the decoder's ``strict decoding error``); ``Warn`` (kube-apiserver's
default, what ``kubectl --validate=warn`` sends) drops them and answers with one
``Warning: 299 - "unknown field \\"spec.foo\\""`` header each; ``Ignore`` (``--validate=false``)
drops them silently.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from .status import bad_request
from .typeinfo import FieldType, fields_of

STRICT, WARN, IGNORE = "Strict", "Warn", "Ignore"
MODES = (IGNORE, STRICT, WARN)


def mode(params: Any) -> str:
    """The request's mode (Warn when it names none, as kube-apiserver's default)."""
    value = params.get("fieldValidation", "") or WARN
    if value not in MODES:
        raise bad_request(f'fieldValidation: Unsupported value: "{value}": supported values: '
                          + ", ".join(f'"{m}"' for m in MODES))
    return value


def warning_header(message: str) -> str:
    """A ``Warning`` header value as kube-apiserver writes it (code 299, agent ``-``)."""
    return "299 - " + json.dumps(message)


def without_unknown(cls: type, body: Any) -> tuple[Any, list[str]]:
    """``body`` without the fields ``cls`` does not know (those it keeps in ``IGNORED`` stay),
    and the paths of the dropped ones (``spec.ports[0].portz``)."""
    found: list[str] = []
    return _object(cls, body, "", found), found


def _object(cls: type, value: Any, path: str, found: list[str]) -> Any:
    if not isinstance(value, dict) or not dataclasses.is_dataclass(cls):
        return value
    known = fields_of(cls)
    ignored = getattr(cls, "IGNORED", frozenset())
    out = {}
    for key, sub in value.items():
        where = f"{path}.{key}" if path else str(key)
        if key in known:
            out[key] = _typed(known[key], sub, where, found)
        elif key in ignored:
            out[key] = sub
        else:
            found.append(where)
    return out


def _typed(ftype: FieldType, value: Any, path: str, found: list[str]) -> Any:
    if ftype.shape == "object" and ftype.cls is not None:
        return _object(ftype.cls, value, path, found)
    if ftype.shape == "array" and ftype.item is not None and isinstance(value, list):
        return [_typed(ftype.item, v, f"{path}[{i}]", found) for i, v in enumerate(value)]
    if ftype.shape == "map" and ftype.item is not None and isinstance(value, dict):
        return {k: _typed(ftype.item, v, f"{path}.{k}", found) for k, v in value.items()}
    return value
