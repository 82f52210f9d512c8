"""Type errors in a request body, worded as kube-apiserver's decoder (Go's ``encoding/json``)
words them, so that a client gets the 400 kube-apiserver gives:

    Deployment in version "v1" cannot be handled as a Deployment: json: cannot unmarshal string
    into Go struct field DeploymentSpec.spec.replicas of type int32

Go names the innermost struct and the JSON path from the top without list indices or map keys,
reports the first error in document order, and accepts ``null`` anywhere. The Go type names come
from the field types (``typeinfo``) and the integer widths from ``validation.go_integer_type``
(the same table that words too-wide integers). Fields netemu keeps without decoding (a type's
``IGNORED``) and unknown fields (strict decoding's business) are not looked at.
"""
from __future__ import annotations

from typing import Any

from netemu.api.validation import go_integer_type

from .typeinfo import FieldType, attributes_of, fields_of


def _go_type(ftype: FieldType, owner: str, attr: str) -> str:
    if ftype.shape == "object" and ftype.cls is not None:
        return f"v1.{ftype.cls.__name__}"
    if ftype.shape == "array" and ftype.item is not None:
        return "[]" + _go_type(ftype.item, owner, attr)
    if ftype.shape == "map":
        return "map[string]" + (_go_type(ftype.item, owner, attr) if ftype.item is not None else "interface {}")
    if ftype.shape == "integer":
        return go_integer_type(owner, attr)
    if ftype.shape == "int-or-string":
        return "int32"  # IntOrString decodes a non-string into its int32
    return {"string": "string", "boolean": "bool", "number": "float64"}.get(ftype.shape, "interface {}")


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _mismatch(ftype: FieldType, value: Any) -> str | None:
    """What Go calls ``value`` when it cannot go into a field of ``ftype`` (``string``, ``number
    1.5``), or None when it can (its parts are checked apart)."""
    if value is None or ftype.shape == "any":
        return None
    kind = _json_kind(value)
    if ftype.shape == "int-or-string":
        if kind == "string" or (kind == "number" and float(value).is_integer()):
            return None
        return f"number {value}" if kind == "number" else kind
    wanted = {"object": "object", "map": "object", "array": "array", "string": "string", "boolean": "bool",
              "integer": "number", "number": "number"}[ftype.shape]
    if kind != wanted:
        return kind
    if ftype.shape == "integer" and not float(value).is_integer():
        return f"number {value}"  # Go's literal; an integral 2.0 passes, as kubectl's YAML sends it as 2
    return None


def _walk(cls: type, data: dict[str, Any], path: str) -> str | None:
    fields = fields_of(cls)
    for key, value in data.items():
        ftype = fields.get(key)
        if ftype is None:
            continue
        where = f"{path}.{key}" if path else key
        found = _check(ftype, value, cls, key, where)
        if found:
            return found
    return None


def _check(ftype: FieldType, value: Any, owner: type, key: str, where: str) -> str | None:
    wrong = _mismatch(ftype, value)
    if wrong:
        attr = attributes_of(owner)[key]
        return (f"json: cannot unmarshal {wrong} into Go struct field {owner.__name__}.{where} "
                f"of type {_go_type(ftype, owner.__name__, attr)}")
    if ftype.shape == "object" and ftype.cls is not None and isinstance(value, dict):
        return _walk(ftype.cls, value, where)
    if ftype.shape in ("array", "map") and ftype.item is not None and isinstance(value, (list, dict)):
        items = value if isinstance(value, list) else list(value.values())
        for item in items:
            found = _check(ftype.item, item, owner, key, where)
            if found:
                return found
    return None


def unmarshal_error(cls: type, body: dict[str, Any]) -> str | None:
    """The first type error Go's decoder finds in ``body`` decoded into ``cls``, in its words
    (``json: cannot unmarshal …``), or None."""
    return _walk(cls, body, "")
