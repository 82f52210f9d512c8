"""``evolve``: ``dataclasses.replace`` for the API's frozen dataclasses, without its per-call cost.

``dataclasses.replace`` walks every field and calls ``__init__`` again (defaults, keyword
checks), which is most of what storing an object costs when thousands are written a second.
The API's classes (``netemu.api.objects``) are plain frozen dataclasses: no ``__post_init__``, no
``InitVar``, no ``__slots__``, no ``__init__`` or cached properties of their own, so a copy of the
instance dict with the changed fields is the same object ``replace`` would build. Other classes, and unknown field names, go through
``dataclasses.replace`` (which raises its usual TypeError for the latter).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, TypeVar

T = TypeVar("T")

_FIELDS: dict[type, frozenset[str] | None] = {}  # per class: its field names, or None (use replace)


def _plain_fields(cls: type) -> frozenset[str] | None:
    if hasattr(cls, "__post_init__") or hasattr(cls, "__slots__") or not dataclasses.is_dataclass(cls):
        return None
    code = getattr(cls.__init__, "__code__", None)
    if code is None or code.co_filename != "<string>":  # dataclasses makes __init__ with exec
        return None  # an __init__ of its own: it may compute or check something
    if any(isinstance(attr, functools.cached_property) for klass in cls.__mro__ for attr in vars(klass).values()):
        return None  # a cached value in the instance dict must not be copied to the new object
    fields = dataclasses.fields(cls)
    if any(not f.init for f in fields) or any(
            isinstance(f.type, dataclasses.InitVar) for f in getattr(cls, "__dataclass_fields__", {}).values()):
        return None
    return frozenset(f.name for f in fields)


def evolve(obj: T, **changes: Any) -> T:
    """A copy of the frozen dataclass ``obj`` with ``changes``; what ``dataclasses.replace`` returns."""
    cls = type(obj)
    try:
        names = _FIELDS[cls]
    except KeyError:
        names = _FIELDS[cls] = _plain_fields(cls)
    if names is None or not names.issuperset(changes):
        return dataclasses.replace(obj, **changes)
    new = object.__new__(cls)
    state = new.__dict__
    state.update(obj.__dict__)
    state.update(changes)
    return new
