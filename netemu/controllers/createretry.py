"""A controller's pod creation that admission refused (a missing service account): the
``FailedCreate`` event and when to try again.

Kubernetes' controllers record ``Error creating: <reason>`` and requeue with a rate limiter;
here the delay doubles from ``FIRST`` up to ``LIMIT`` seconds per owner, and one success resets it.
"""
from __future__ import annotations

from typing import Any, Generic, Hashable, TypeVar

from netemu import events
from netemu.errors import NetemuError
from netemu.store import Store

FIRST, LIMIT = 0.5, 10.0  # seconds before retrying a refused pod creation (doubling)

K = TypeVar("K", bound=Hashable)


class CreateRetry(Generic[K]):
    def __init__(self, store: Store, component: str) -> None:
        self._store = store
        self._component = component
        self._failures: dict[K, int] = {}  # refused creations in a row, per owner

    def refused(self, key: K, owner: Any, error: NetemuError) -> float:
        """Record the refusal on ``owner``; the seconds to wait before the owner's next sync."""
        events.recorder(self._store).warning(owner, "FailedCreate", f"Error creating: {error}",
                                             component=self._component)
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        return min(LIMIT, FIRST * 2 ** (failures - 1))

    def succeeded(self, key: K) -> None:
        self._failures.pop(key, None)

    def forget(self, key: K) -> None:
        """The owner is gone."""
        self._failures.pop(key, None)
