"""The ingress controller's view of the cluster, kept current from store events.

``IngressIndex`` follows IngressClasses, Ingresses, Services and EndpointSlices, decides which
Ingresses are netemu's (their class's controller is ``netemu.dev/ingress``, or they name no class
and netemu's class is the default), and after each burst of changes swaps in a new
``routes.RouteTable`` (open connections keep running; the next request sees the new table), and,
following Secrets too, a new ``tls.CertificateTable`` (the next TLS handshake sees it). It
also acts as the controller for ``status``: every owned Ingress gets the controller Service's
load-balancer address in ``status.loadBalancer.ingress``, and the controller's objects are created
(``system.controller_manifests``) when the first owned Ingress appears.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any, Callable

from netemu.api.ingress import (
    LEGACY_CLASS_ANNOTATION, Ingress, IngressClass, IngressLoadBalancerIngress, is_default_class,
)
from netemu.api.objects import EndpointSlice, Service
from netemu.store import Store

from . import routes, system, tls

log = logging.getLogger(__name__)
KINDS = ("IngressClass", "Ingress", "Service", "EndpointSlice", "Secret")


class IngressIndex:
    def __init__(self, store: Store, create_controller: Callable[[], None]) -> None:
        self._store = store
        self._create_controller = create_controller
        self._controller_requested = False
        self._scheduled = False
        self.table = routes.RouteTable()
        self.certificates = tls.CertificateTable()
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        self._unsubscribe = self._store.subscribe(lambda _event: self._changed(), kinds=list(KINDS))
        self._changed()

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    # ------------------------------------------------------------------ ownership

    def owned(self, ing: Ingress, classes: dict[str, IngressClass]) -> bool:
        name = ing.spec.ingress_class_name or (ing.metadata.annotations or {}).get(LEGACY_CLASS_ANNOTATION)
        if name:
            cls = classes.get(name)
            return cls is not None and cls.spec.controller == system.CONTROLLER
        defaults = [c for c in classes.values() if is_default_class(c)]
        return len(defaults) == 1 and defaults[0].spec.controller == system.CONTROLLER

    def owned_ingresses(self) -> list[Ingress]:
        classes = {c.metadata.name: c for c in self._store.list("IngressClass")}
        return [i for i in self._store.list("Ingress") if self.owned(i, classes)]

    # ------------------------------------------------------------------ changes

    def _changed(self) -> None:
        if self._scheduled:
            return
        self._scheduled = True
        try:
            asyncio.get_running_loop().call_soon(self._sync)
        except RuntimeError:  # no loop yet (tests building an index by hand)
            self._sync()

    def _sync(self) -> None:
        self._scheduled = False
        owned = self.owned_ingresses()
        # Only the services the ingresses name (not every service and slice of the cluster: this
        # runs after each change of any of them, thousands while a big cluster comes up).
        services: dict[routes.ServiceKey, Service] = {}
        slices: dict[routes.ServiceKey, list[EndpointSlice]] = {}
        for key in _backend_services(owned):
            svc = self._store.get("Service", *key)
            if svc is not None:
                services[key] = svc
                slices[key] = self._store.list("EndpointSlice", key[0], {EndpointSlice.SERVICE_NAME_LABEL: key[1]})
        self.table = routes.build(owned, services, slices)
        wanted = {(i.metadata.namespace, t.secret_name) for i in owned for t in i.spec.tls}
        secrets = {key: s for key in wanted if (s := self._store.get("Secret", *key)) is not None}
        self.certificates = tls.build(owned, secrets, self.certificates)
        if owned and not self._controller_requested:
            self._controller_requested = True
            self._create_controller()
        self._write_status(owned, self._store.get("Service", system.NAMESPACE, system.SERVICE))

    def _write_status(self, owned: list[Ingress], controller: Service | None) -> None:
        ips = tuple(IngressLoadBalancerIngress(ip=i.ip, hostname=i.hostname)
                    for i in (controller.status.load_balancer.ingress if controller else ()))
        for ing in owned:
            if ing.status.load_balancer.ingress == ips:
                continue
            self._store.modify("Ingress", ing.metadata.namespace, ing.metadata.name, lambda obj: _with_address(obj, ips))


def _backend_services(ingresses: list[Ingress]) -> set[routes.ServiceKey]:
    """(namespace, name) of every Service a default backend or path of ``ingresses`` names."""
    keys: set[routes.ServiceKey] = set()
    for ing in ingresses:
        backends = [ing.spec.default_backend] + [p.backend for rule in ing.spec.rules if rule.http is not None
                                                 for p in rule.http.paths]
        keys.update((ing.metadata.namespace, b.service.name) for b in backends
                    if b is not None and b.service is not None)
    return keys


def _with_address(ing: Any, ips: tuple[IngressLoadBalancerIngress, ...]) -> Any:
    lb = dataclasses.replace(ing.status.load_balancer, ingress=ips)
    return dataclasses.replace(ing, status=dataclasses.replace(ing.status, load_balancer=lb))
