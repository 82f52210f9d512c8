"""Type-driven conversion between manifest dicts (camelCase JSON shape) and the frozen objects.

``from_dict`` is strict: an unknown field, or a value of the wrong type, is a FieldProblem with
the field path in manifest spelling (``spec.ports[0].targetPort``). Fields a type lists in
``IGNORED`` are accepted and kept verbatim in ``extra``. ``to_dict`` writes back the manifest
shape, leaving out empty values as Kubernetes' ``omitempty`` does.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import functools
import json
import types
import typing
from typing import Any, Mapping

from netemu.errors import FieldProblem

from . import objects
from .objects import json_name


@functools.cache
def _fields(cls: type) -> tuple[tuple[str, str, Any, bool], ...]:
    """(attribute, json name, type hint, has default) for each manifest field of cls."""
    hints = typing.get_type_hints(cls, vars(objects))
    out = []
    for f in dataclasses.fields(cls):
        if f.name == "extra":
            continue
        out.append((f.name, f.metadata.get("json", json_name(f.name)), hints[f.name],
                    f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING))
    return tuple(out)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if hint is str:
        return "string"
    if hint is int:
        return "integer"
    if hint is bool:
        return "boolean"
    if origin is tuple:
        return "array"
    if origin in (Mapping, dict) or hint is dict:
        return "object"
    if dataclasses.is_dataclass(hint):
        return "object"
    return "value"


def _got(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null" if value is None else type(value).__name__


def _shown(value: Any) -> str:
    """A bad value as an error shows it: scalars as JSON, containers by their type."""
    if isinstance(value, (list, dict)):
        return _got(value)
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return _got(value)


def _zero(hint: Any) -> Any:
    """Go's zero value for a list item given as null (``ports: [null]`` is one empty port)."""
    if dataclasses.is_dataclass(hint):
        return hint()
    return {str: "", int: 0, bool: False}.get(hint)


@functools.cache
def _known(cls: type) -> dict[str, tuple[str, Any]]:
    """json name → (attribute, type hint) for each manifest field of cls."""
    return {j: (a, h) for a, j, h, _ in _fields(cls)}


@functools.cache
def _shape(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    """typing.get_origin and get_args of a hint (a Union's without None), worked out once."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        args = tuple(a for a in args if a is not type(None))
    return origin, args


def _convert(hint: Any, value: Any, path: str, problems: list[FieldProblem]) -> Any:
    if hint is str and type(value) is str:  # the most common field by far: at once
        return value
    origin, args = _shape(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        if set(args) == {int, str}:  # IntOrString
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                problems.append(FieldProblem(path, f"Invalid value: {_shown(value)}: must be an integer or a string"))
                return None
            return value
        return _convert(args[0], value, path, problems)
    if value is None:
        return None
    if hint is Any:
        return value
    if hint is str:
        if isinstance(value, str):
            return value
        problems.append(FieldProblem(path, f"Invalid value: {_shown(value)}: expected string, got {_got(value)}"))
        return None
    if hint is bool:
        if isinstance(value, bool):
            return value
        problems.append(FieldProblem(path, f"Invalid value: {_shown(value)}: expected boolean, got {_got(value)}"))
        return None
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        problems.append(FieldProblem(path, f"Invalid value: {_shown(value)}: expected integer, got {_got(value)}"))
        return None
    if origin is tuple:
        (item,) = [a for a in args if a is not Ellipsis]
        if not isinstance(value, list):
            problems.append(FieldProblem(path, f"Invalid value: {_shown(value)}: expected array, got {_got(value)}"))
            return ()
        items = (_convert(item, v, f"{path}[{i}]", problems) for i, v in enumerate(value))
        return tuple(_zero(item) if v is None else v for v in items)
    if origin in (collections.abc.Mapping, dict):
        if not isinstance(value, dict):
            problems.append(FieldProblem(path, f"Invalid value: {_shown(value)}: expected object, got {_got(value)}"))
            return {}
        _, vtype = args
        out = {}
        for k, v in value.items():
            if vtype is str and v is None:
                v = ""  # Go decodes null in a map[string]string as ""
            if vtype is str and not isinstance(v, str):
                problems.append(FieldProblem(f"{path}.{k}", f"Invalid value: {_shown(v)}: expected string, got {_got(v)}"))
                continue
            out[str(k)] = v
        return out
    if dataclasses.is_dataclass(hint):
        return _decode(hint, value, path, problems)
    raise TypeError(f"unsupported type hint {hint!r}")  # a bug in objects.py, not user input


def _decode(cls: type, data: Any, path: str, problems: list[FieldProblem]) -> Any:
    if not isinstance(data, dict):
        problems.append(FieldProblem(path, f"Invalid value: {_shown(data)}: expected object, got {_got(data)}"))
        return cls()
    known = _known(cls)
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in data.items():
        sub = f"{path}.{key}" if path else str(key)
        if key in known:
            attr, hint = known[key]
            converted = _convert(hint, value, sub, problems)
            if converted is not None:
                kwargs[attr] = converted
        elif key in cls.IGNORED:
            extra[key] = value
        else:
            problems.append(FieldProblem(sub, "unknown field"))
    return cls(**kwargs, extra=extra)


def from_dict(cls: type, data: Any, path: str = "") -> tuple[Any, list[FieldProblem]]:
    """Decode ``data`` into ``cls``; returns the object and every problem found (none: valid shape)."""
    problems: list[FieldProblem] = []
    obj = _decode(cls, data, path, problems)
    return obj, problems


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _encode(value: Any) -> Any:
    cls = type(value)
    if cls in _SCALARS:  # most values: at once
        return value
    if hasattr(cls, "__dataclass_fields__"):
        out: dict[str, Any] = {}
        for attr, name, _hint, _ in _fields(cls):
            raw = getattr(value, attr)
            v = _encode(raw)
            if v == {} and getattr(raw, "KEEP_EMPTY", False):  # a set pointer to an empty struct
                out[name] = v
                continue
            if v is False and attr in getattr(value, "KEEP_FALSE", ()):  # a Go *bool set to false
                out[name] = v
                continue
            if v is None or v is False or v == {} or v == [] or v == "":
                continue
            out[name] = v
        out.update(value.extra)
        return out
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _encode(v) for k, v in value.items()}
    return value


def to_dict(obj: Any) -> dict[str, Any]:
    """The manifest shape of ``obj``, empty values left out (``selector: {}`` is kept for services)."""
    out = _encode(obj)
    if isinstance(obj, objects.Service) and obj.spec.selector is not None and "selector" not in out.get("spec", {}):
        out.setdefault("spec", {})["selector"] = {}
    return out
