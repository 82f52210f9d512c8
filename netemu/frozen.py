"""``evolve``: ``dataclasses.replace`` for the API's frozen dataclasses, without its per-call cost;
``frozen_dataclass``: their decorator, with an ``__init__`` that costs a fraction of dataclasses' own.

``dataclasses.replace`` walks every field and calls ``__init__`` again (defaults, keyword
checks), which is most of what storing an object costs when thousands are written a second.
The API's classes (``netemu.api.objects``) are plain frozen dataclasses: no ``__post_init__``, no
``InitVar``, no ``__slots__``, no ``__init__`` or cached properties of their own, so a copy of the
instance dict with the changed fields is the same object ``replace`` would build. Other classes, and unknown field names, go through
``dataclasses.replace`` (which raises its usual TypeError for the latter).

A frozen dataclass's own ``__init__`` stores each field with ``object.__setattr__`` (frozen
classes refuse plain assignment): a global lookup and a call per field, so building an
``ObjectMeta`` (18 fields) costs microseconds, and the cluster builds hundreds of thousands of
objects to bring up 10,000 pods. ``frozen_dataclass`` makes the class with ``dataclasses``
(fields, ``__eq__``, ``__hash__``, ``__repr__``, the frozen ``__setattr__``) and replaces only
``__init__`` by one with the same keyword-only signature that writes the instance dict directly
(a third of the cost; the price is that such instances do not share their dict's keys, about 3%
more memory for a cluster's objects, most of which ``evolve`` makes with a dict of their own
anyway). A class it cannot do that for keeps dataclasses' ``__init__``.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, TypeVar

T = TypeVar("T")

_FIELDS: dict[type, frozenset[str] | None] = {}  # per class: its field names, or None (use replace)


class _Factory:
    """A parameter's default that stands for "call the field's default_factory"."""

    def __repr__(self) -> str:
        return "<factory>"  # as dataclasses' own signatures show it


_FACTORY = _Factory()


def frozen_dataclass(cls: type[T]) -> type[T]:
    """``dataclass(frozen=True, kw_only=True)`` with a direct ``__init__``."""
    return with_direct_init(dataclasses.dataclass(frozen=True, kw_only=True)(cls))


def with_direct_init(cls: type[T]) -> type[T]:
    """A frozen, keyword-only dataclass (made by ``make_dataclass``, say) given a direct ``__init__``."""
    init = _direct_init(cls)
    if init is not None:
        cls.__init__ = init  # type: ignore[misc]
    return cls


def _direct_init(cls: type) -> Any:
    """The ``__init__`` of ``cls`` as source code compiled like dataclasses' (so ``evolve`` still
    knows it for a generated one), or None for a class with anything that source does not do."""
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    if (hasattr(cls, "__post_init__") or "__slots__" in vars(cls) or any(not f.init or not f.kw_only for f in fields)
            or {"self", "__state"} & set(names)
            or any(isinstance(f.type, dataclasses.InitVar) for f in cls.__dataclass_fields__.values())):  # type: ignore[attr-defined]
        return None
    scope: dict[str, Any] = {"_FACTORY": _FACTORY}
    params, body = [], ["    __state = self.__dict__"]
    for f in fields:
        if f.default is not dataclasses.MISSING:
            scope[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
            body.append(f"    __state[{f.name!r}] = {f.name}")
        elif f.default_factory is not dataclasses.MISSING:
            scope[f"_factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_FACTORY")
            body.append(f"    __state[{f.name!r}] = _factory_{f.name}() if {f.name} is _FACTORY else {f.name}")
        else:
            params.append(f.name)
            body.append(f"    __state[{f.name!r}] = {f.name}")
    source = f"def __init__(self, *, {', '.join(params)}):\n" + "\n".join(body) if params else \
        "def __init__(self):\n    pass"
    exec(compile(source, "<string>", "exec"), scope)
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    return init


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
