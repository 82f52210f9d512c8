"""The serviceaccounts controller: every namespace has a ``default`` ServiceAccount.

As kube-controller-manager's: the account is made when a namespace appears (the system
namespaces too) and made again when it is deleted, never in a namespace being terminated.
``ensure_default`` (the admission plugin's, ``netemu.serviceaccount_admission``) makes it at once when asked: the ServiceAccount admission plugin asks while
admitting a pod in a namespace that appeared a moment ago (kube-apiserver waits for the
controller there; netemu has no moment to wait, its writes are synchronous).

The controller writes from its store subscription: a namespace's event is delivered in the same
loop turn as its creation, so the account exists before anything else looks.
"""
from __future__ import annotations

import logging

from netemu.serviceaccount_admission import DEFAULT_SERVICE_ACCOUNT as DEFAULT_NAME, ensure_default
from netemu.store import DELETED, Event

from .pernamespace import PerNamespaceController

log = logging.getLogger(__name__)


class ServiceAccountsController(PerNamespaceController):
    KIND = "ServiceAccount"

    def namespace_of(self, event: Event) -> str | None:
        deleted_default = event.type == DELETED and event.old.metadata.name == DEFAULT_NAME
        return event.old.metadata.namespace if deleted_default else None

    def sync(self, namespace: str) -> None:
        ensure_default(self._store, namespace)


__all__ = ["DEFAULT_NAME", "ServiceAccountsController", "ensure_default"]
