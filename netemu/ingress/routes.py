"""The route table of netemu's ingress controller: which backend answers a host and a path.

Built from the Ingresses the controller owns, with the Ingress spec's precedence: a request's host
picks one group of rules — the exact host, else a wildcard ``*.foo.com`` matching exactly one
more label, else the rules without a host; within the group the longest matching path wins
(counted in path elements, ``Exact`` before ``Prefix`` at equal length); with no path matching,
the ``defaultBackend`` of the oldest Ingress that has one answers, else nothing (404).
``Prefix`` matches element-wise (``/foo`` matches ``/foo`` and ``/foo/bar``, not ``/foobar``);
``ImplementationSpecific`` is treated as ``Prefix``, as ingress-nginx does.

A backend is resolved to ``ip:port`` endpoints from the Service (port by number or name) and its
ready EndpointSlice endpoints. Tables are immutable: the index swaps in a new one on change.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from netemu.api.ingress import Ingress, IngressBackend
from netemu.api.objects import EndpointSlice, Service

ServiceKey = tuple[str, str]  # (namespace, name)
_MAX_ANSWERS = 4096


@dataclass
class Backend:
    """One Service port and its ready endpoints, picked round-robin."""
    namespace: str
    service: str
    port: str                      # the port as the Ingress names it: "80" or "http"
    endpoints: tuple[tuple[str, int], ...] = ()
    _turn: itertools.count = field(default_factory=itertools.count, repr=False)

    def pick(self) -> tuple[str, int] | None:
        if not self.endpoints:
            return None
        return self.endpoints[next(self._turn) % len(self.endpoints)]


@dataclass(frozen=True)
class PathRule:
    path: str
    path_type: str
    backend: Backend

    elements: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "elements", _elements(self.path))

    def matches(self, request_path: str, request_elements: tuple[str, ...]) -> bool:
        if self.path_type == "Exact":
            return request_path == self.path
        return request_elements[:len(self.elements)] == self.elements

    def rank(self) -> tuple[int, int, int]:
        return (len(self.elements), 1 if self.path_type == "Exact" else 0, len(self.path))


def _elements(path: str) -> tuple[str, ...]:
    return tuple(part for part in path.split("/") if part)


@dataclass(frozen=True)
class RouteTable:
    exact: Mapping[str, tuple[PathRule, ...]] = field(default_factory=dict)
    wildcard: Mapping[str, tuple[PathRule, ...]] = field(default_factory=dict)  # "foo.com" for *.foo.com
    any_host: tuple[PathRule, ...] = ()
    default: Backend | None = None
    # answers already computed for (host, path): the proxy asks once per request, and a table
    # never changes (the index swaps in a new one), so the answers never go stale
    _answers: dict[tuple[str, str], Backend | None] = field(default_factory=dict, repr=False, compare=False)

    def match(self, host: str, path: str) -> Backend | None:
        key = (host, path)
        try:
            return self._answers[key]
        except KeyError:
            pass
        found = self._match(host, path)
        if len(self._answers) >= _MAX_ANSWERS:
            self._answers.clear()
        self._answers[key] = found
        return found

    def _match(self, host: str, path: str) -> Backend | None:
        host = host.lower()
        rules = self.exact.get(host)
        if rules is None:
            _, dot, parent = host.partition(".")
            rules = self.wildcard.get(parent) if dot else None
        if rules is None:
            rules = self.any_host
        elements = _elements(path)
        found = [r for r in rules if r.matches(path, elements)]
        if found:
            return max(found, key=PathRule.rank).backend
        return self.default


def strip_port(host: str) -> str:
    """The host of a Host header, without a port (``[::1]:80`` → ``::1``)."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def resolve(namespace: str, backend: IngressBackend, services: Mapping[ServiceKey, Service],
            slices: Mapping[ServiceKey, Sequence[EndpointSlice]]) -> Backend | None:
    """The Service port a backend names and its ready endpoints; None for a resource backend."""
    ref = backend.service
    if ref is None:
        return None
    port = ref.port
    wanted = (port.name or str(port.number or "")) if port else ""
    out = Backend(namespace, ref.name, wanted)
    svc = services.get((namespace, ref.name))
    if svc is None or port is None:
        return out
    svc_port = next((p for p in svc.spec.ports
                     if (port.name and p.name == port.name) or (port.number and p.port == port.number)), None)
    if svc_port is None:
        return out
    found: dict[tuple[str, int], None] = {}
    for eps in slices.get((namespace, ref.name), ()):
        number = next((p.port for p in eps.ports if (p.name or "") == (svc_port.name or "") and p.port), None)
        if number is None:
            continue
        for ep in eps.endpoints:
            if ep.conditions.ready is False:
                continue
            for address in ep.addresses:
                found.setdefault((address, number), None)
    out.endpoints = tuple(sorted(found))
    return out


def build(ingresses: Iterable[Ingress], services: Mapping[ServiceKey, Service],
          slices: Mapping[ServiceKey, Sequence[EndpointSlice]]) -> RouteTable:
    """The table for ``ingresses`` (oldest first wins a defaultBackend)."""
    exact: dict[str, list[PathRule]] = {}
    wildcard: dict[str, list[PathRule]] = {}
    any_host: list[PathRule] = []
    default: Backend | None = None
    ordered = sorted(ingresses, key=lambda i: (i.metadata.creation_timestamp or "", i.metadata.namespace,
                                                i.metadata.name))
    for ing in ordered:
        ns = ing.metadata.namespace
        if default is None and ing.spec.default_backend is not None:
            default = resolve(ns, ing.spec.default_backend, services, slices)
        for rule in ing.spec.rules:
            if rule.http is None:
                continue
            paths = [PathRule(p.path or "/", p.path_type or "Prefix", b)
                     for p in rule.http.paths if (b := resolve(ns, p.backend, services, slices)) is not None]
            host = rule.host.lower()
            if not host:
                any_host.extend(paths)
            elif host.startswith("*."):
                wildcard.setdefault(host[2:], []).extend(paths)
            else:
                exact.setdefault(host, []).extend(paths)
    return RouteTable({h: tuple(p) for h, p in exact.items()}, {h: tuple(p) for h, p in wildcard.items()},
                      tuple(any_host), default)
