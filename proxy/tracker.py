"""Change tracking: Service and EndpointSlice events collapse into one set of changed services.

As kube-proxy's ``servicechangetracker.go`` / ``endpointschangetracker.go``: events only record
what changed; the proxy applies everything at once in its next ``sync()``. A service event that
does not change what the proxy sees (a status or label edit) is dropped at once ("collapsed change
had no effect"); slices are compared as the endpoints they yield when the sync computes them.
No I/O here.
"""
from __future__ import annotations

import time

from netemu.api.objects import EndpointSlice, Service

from .serviceport import (EndpointInfo, ServiceKey, ServicePortInfo, ServicePortName, service_ports,
                          slice_endpoints, slice_service)

PortView = dict[ServicePortName, tuple[ServicePortInfo, tuple[EndpointInfo, ...]]]


class ChangeTracker:
    """Current services (as port infos) and slices, plus the services changed since the last take."""

    def __init__(self) -> None:
        self._services: dict[ServiceKey, Service] = {}  # the last object of each proxied service
        self._ports: dict[ServiceKey, dict[ServicePortName, ServicePortInfo]] = {}
        self._slices: dict[ServiceKey, dict[str, EndpointSlice]] = {}
        self._views: dict[ServiceKey, PortView] = {}
        self._dirty: set[ServiceKey] = set()

    # ------------------------------------------------------------------ events

    def service_update(self, old: Service | None, new: Service | None) -> bool:
        """Record a Service add (old None), update or delete (new None); True if it matters."""
        obj = new if new is not None else old
        if obj is None:
            return False
        key = (obj.metadata.namespace, obj.metadata.name)
        ports = service_ports(new)
        if ports == self._ports.get(key, {}):
            return False
        if ports:
            self._ports[key] = ports
            self._services[key] = new  # type: ignore[assignment]
        else:
            self._ports.pop(key, None)
            self._services.pop(key, None)
        self._dirty.add(key)
        return True

    def slice_update(self, old: EndpointSlice | None, new: EndpointSlice | None) -> bool:
        """Record an EndpointSlice add, update or delete; True if a service may be affected."""
        touched = False
        if old is not None and (key := slice_service(old)) is not None:
            owned = self._slices.get(key)
            if owned is not None and owned.pop(old.metadata.name, None) is not None:
                touched = True
                self._dirty.add(key)
                if not owned:
                    del self._slices[key]
        if new is not None and (key := slice_service(new)) is not None:
            self._slices.setdefault(key, {})[new.metadata.name] = new
            self._dirty.add(key)
            touched = True
        return touched

    # ------------------------------------------------------------------ sync

    @property
    def pending(self) -> bool:
        """Some service changed since the last take."""
        return bool(self._dirty)

    def take_changes(self, deadline: float | None = None) -> dict[ServiceKey, PortView]:
        """Views (port → info and endpoints) of the services whose view changed since the last
        call; an empty view means the service is gone (or no longer proxied). With a
        ``deadline`` (``time.monotonic``), services not reached by then wait for the next call."""
        out: dict[ServiceKey, PortView] = {}
        dirty, self._dirty = self._dirty, set()
        keys = iter(dirty)
        for key in keys:
            if out and deadline is not None and time.monotonic() > deadline:
                self._dirty.add(key)
                self._dirty.update(keys)
                break
            view = self._compute(key)
            if view == self._views.get(key, {}):
                continue
            if view:
                self._views[key] = view
            else:
                self._views.pop(key, None)
            out[key] = view
        return out

    def objects(self) -> tuple[list[Service], list[EndpointSlice]]:
        """The services and slices this tracker holds, as last given (for a process that starts
        late: fed them, its own tracker reaches the same views)."""
        return (list(self._services.values()),
                [eps for owned in self._slices.values() for eps in owned.values()])

    def views(self) -> dict[ServiceKey, PortView]:
        """Every current view (to bring a newly added node up to date)."""
        return dict(self._views)

    def _compute(self, key: ServiceKey) -> PortView:
        ports = self._ports.get(key)
        if not ports:
            return {}
        slices = list(self._slices.get(key, {}).values())
        return {spn: (info, slice_endpoints(spn, slices)) for spn, info in ports.items()}
