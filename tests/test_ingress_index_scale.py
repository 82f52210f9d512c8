"""The ingress index resolves only the services its Ingresses name: it re-syncs after every
Service and EndpointSlice change, and listing every one of them each time made bringing up
thousands of services quadratic."""
from __future__ import annotations

from typing import Any

from netemu.api.ingress import Ingress, IngressClass
from netemu.api.objects import EndpointSlice
from netemu.ingress import system
from netemu.ingress.index import IngressIndex
from netemu.store import Store

from test_controllers_helpers import decode, service


class CountingStore(Store):
    """A Store that notes each cluster-wide list of a kind (what grows with the cluster)."""

    def __init__(self) -> None:
        super().__init__()
        self.wide_lists: list[str] = []

    def list(self, kind: str, namespace: str | None = None, selector: Any = None) -> list[Any]:
        if namespace is None:
            self.wide_lists.append(kind)
        return super().list(kind, namespace, selector)


def slice_for(svc: str, ip: str) -> EndpointSlice:
    return decode(EndpointSlice, {
        "metadata": {"name": f"{svc}-abcde", "namespace": "default",
                     "labels": {EndpointSlice.SERVICE_NAME_LABEL: svc}},
        "addressType": "IPv4", "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}]})


def test_routes_resolve_the_named_service_without_listing_every_service() -> None:
    store = CountingStore()
    store.create(decode(IngressClass, {
        "metadata": {"name": system.CLASS_NAME, "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": system.CONTROLLER}}))
    for n in range(50):
        store.create(service(f"svc-{n}", {"app": f"svc-{n}"}, clusterIP=f"127.96.1.{n + 1}"))
        store.create(slice_for(f"svc-{n}", f"127.244.1.{n + 1}"))
    store.create(decode(Ingress, {
        "metadata": {"name": "shop", "namespace": "default"},
        "spec": {"rules": [{"host": "shop.example", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "svc-7", "port": {"number": 80}}}}]}}]}}))
    store.drain()
    created = []
    index = IngressIndex(store, lambda: created.append(True))
    index.start()  # no event loop: syncs at once
    store.wide_lists.clear()
    store.create(service("late", {"app": "late"}, clusterIP="127.96.2.1"))
    store.drain()
    index._sync()
    backend = index.table.match("shop.example", "/")
    assert (backend.service, backend.endpoints) == ("svc-7", (("127.244.1.8", 8080),))
    assert "Service" not in store.wide_lists and "EndpointSlice" not in store.wide_lists
    index.stop()
