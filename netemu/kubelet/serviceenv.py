"""The service variables of each namespace, kept up to date from Service events.

Every container gets ``{SVC}_SERVICE_HOST`` and the docker-link variables of every service of its
pod's namespace (enableServiceLinks, the default), plus those of ``default/kubernetes``
(``envvars.visible_services``). Building them from a list of all services for each container is
work proportional to the services for every pod, and a copy of them per container: quadratic in
time and memory when thousands of pods start behind thousands of services. This index keeps each
service's variables as the service changes (``service_env`` of that one service), and hands out
per namespace one read-only mapping that containers share.

A namespace's mapping is a stack of frozen layers (``collections.ChainMap``, newest first): a
service added after a mapping was handed out goes into a new top layer, so containers that already
started keep what they were given (as in Kubernetes, variables are fixed when a container starts);
layers are merged like a binary counter (a layer no bigger than the one beneath it merges into it),
so a namespace holds O(log n) layers and the copying adds up to O(n log n). Any other change (a
service modified or deleted, ``default/kubernetes`` changing, a variable name two services share)
rebuilds the namespace's mapping from the per-service variables in name order, as
``visible_services`` orders them.
"""
from __future__ import annotations

import collections
from typing import Callable, Mapping

from netemu.api.objects import Pod, Service
from netemu.store import Event, Store

from .envvars import service_env

MASTER_NAMESPACE, MASTER_SERVICE = "default", "kubernetes"


class _Namespace:
    """One namespace's handed-out layers (oldest first) and the additions not yet handed out."""

    def __init__(self, layers: list[dict[str, str]]) -> None:
        self.layers = layers
        self.open: dict[str, str] = {}
        self.view: Mapping[str, str] | None = None  # the mapping last handed out, while unchanged

    def add(self, variables: Mapping[str, str]) -> bool:
        """Add a new service's variables; False when one of them is already there (rebuild)."""
        if any(k in self.open or any(k in layer for layer in self.layers) for k in variables):
            return False
        self.open.update(variables)
        self.view = None
        return True

    def mapping(self) -> Mapping[str, str]:
        if self.view is None:
            if self.open:
                self.layers.append(self.open)
                self.open = {}
                while len(self.layers) > 1 and len(self.layers[-2]) <= 2 * len(self.layers[-1]):
                    top = self.layers.pop()
                    self.layers[-1] = {**self.layers[-1], **top}  # a new dict: old views keep theirs
            self.view = ({} if not self.layers else self.layers[0] if len(self.layers) == 1
                         else collections.ChainMap(*reversed(self.layers)))
        return self.view


class ServiceEnvIndex:
    """``env(pod)``: the service variables a container of ``pod`` starts with (read-only, shared)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._services: dict[str, dict[str, dict[str, str]]] = collections.defaultdict(dict)  # ns → name → vars
        self._namespaces: dict[str, _Namespace] = {}
        self._unsubscribe: Callable[[], None] | None = store.subscribe(self._on_service, kinds=["Service"])
        for svc in store.list("Service"):
            self._on_service(Event("ADDED", None, svc))

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def env(self, pod: Pod) -> Mapping[str, str]:
        if pod.spec.enable_service_links is False:
            return self._services.get(MASTER_NAMESPACE, {}).get(MASTER_SERVICE, {})
        namespace = pod.metadata.namespace
        state = self._namespaces.get(namespace)
        if state is None:
            state = self._namespaces[namespace] = _Namespace(self._build(namespace))
        return state.mapping()

    def _build(self, namespace: str) -> list[dict[str, str]]:
        own = self._services.get(namespace, {})
        merged: dict[str, str] = {}
        if MASTER_SERVICE not in own:
            merged.update(self._services.get(MASTER_NAMESPACE, {}).get(MASTER_SERVICE, {}))
        for name in sorted(own):
            merged.update(own[name])
        return [merged] if merged else []

    def _on_service(self, event: Event) -> None:
        svc: Service = event.obj
        namespace, name = svc.metadata.namespace, svc.metadata.name
        services = self._services[namespace]
        before = services.pop(name, None)
        after = service_env([event.new]) if event.new is not None else {}
        if after:
            services[name] = after
        if before == (after or None):
            return
        if namespace == MASTER_NAMESPACE and name == MASTER_SERVICE:
            self._namespaces.clear()  # every namespace sees it
            return
        state = self._namespaces.get(namespace)
        if state is None:
            return
        if before is not None or name == MASTER_SERVICE or not state.add(after):
            del self._namespaces[namespace]  # rebuilt, in name order, when next asked for
