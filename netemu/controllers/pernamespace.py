"""Controllers that keep one object in every namespace (the ``default`` ServiceAccount, the
``kube-root-ca.crt`` ConfigMap): the subscription they share.

``sync(namespace)`` runs for every namespace at start, whenever a namespace is added or changed,
and for events of the controller's own kind that ``namespace_of`` picks (the object was deleted
or changed); it runs from the store subscription, in the loop turn of the change.
"""
from __future__ import annotations

from typing import Any

from netemu.store import DELETED, Event, Store


class PerNamespaceController:
    KIND: str = ""  # the kind of the object kept in each namespace

    def __init__(self, store: Store) -> None:
        self._store = store
        self._unsubscribe: Any = None

    def start(self) -> None:
        self._unsubscribe = self._store.subscribe(self._on_event, kinds=("Namespace", self.KIND))
        for namespace in self._store.list("Namespace"):
            self.sync(namespace.metadata.name)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _on_event(self, event: Event) -> None:
        if event.kind == "Namespace":
            if event.type != DELETED:
                self.sync(event.obj.metadata.name)
            return
        namespace = self.namespace_of(event)
        if namespace is not None:
            self.sync(namespace)

    def namespace_of(self, event: Event) -> str | None:
        """The namespace to sync for an event of ``KIND`` (None: nothing to do)."""
        raise NotImplementedError

    def sync(self, namespace: str) -> None:
        raise NotImplementedError
