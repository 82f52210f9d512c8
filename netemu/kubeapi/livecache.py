"""What the API server derives from a stored object (its JSON text, its Table row), made once
per object version: stored objects are immutable (a write stores a new one), so a value made from
an object stays right for as long as that object is the live one under its kind, namespace and
name. A newer version replaces the entry on its first use; a deletion drops it."""
from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class LiveCache(Generic[T]):
    """``get(obj, make)``: ``make(obj)``, remembered while ``obj`` is the live object."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._cache: dict[tuple[str, str, str], tuple[Any, T]] = {}
        store.subscribe(self._forget, kinds=None)  # lives as long as the store (the cluster)

    def _forget(self, event: Any) -> None:
        if event.new is None:
            old = event.old
            self._cache.pop((old.KIND, old.metadata.namespace, old.metadata.name), None)

    def get(self, obj: Any, make: Callable[[Any], T]) -> T:
        key = (obj.KIND, obj.metadata.namespace, obj.metadata.name)
        entry = self._cache.get(key)
        if entry is not None and entry[0] is obj:
            return entry[1]
        value = make(obj)
        if self._store.get(*key) is obj:  # only the live object is kept (not a deleted one's last state)
            self._cache[key] = (obj, value)
        return value

    def __len__(self) -> int:
        return len(self._cache)
