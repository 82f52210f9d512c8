"""``kubectl get`` rows and ``kubectl describe`` text for Ingresses and IngressClasses (kubectl
1.32's printIngress, printIngressClass and describeIngressV1), built on ``netemu.printers``' helpers."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence

from netemu.api.ingress import Ingress, IngressBackend, IngressClass
from netemu.printers import Related, _annotations_multiline, _events, _labels_multiline, _since, _Writer


def _hosts(ing: Ingress) -> str:
    """kubectl's formatHosts: at most three, then ``+ N more...``; ``*`` when no rule names one."""
    hosts = [rule.host for rule in ing.spec.rules if rule.host]
    if not hosts:
        return "*"
    text = ",".join(hosts[:3])
    return text + (f" + {len(hosts) - 3} more..." if len(hosts) > 3 else "")


def _address(ing: Ingress, wide: bool) -> str:
    found = [i.ip or i.hostname for i in ing.status.load_balancer.ingress if i.ip or i.hostname]
    text = ",".join(found)
    if not wide and len(text) > 16:
        text = text[:13] + "..."
    return text


def ingress_cells(ing: Ingress, now: datetime, wide: bool) -> list[str]:
    return [ing.metadata.name, ing.spec.ingress_class_name or "<none>", _hosts(ing), _address(ing, wide),
            "80, 443" if ing.spec.tls else "80", _since(ing.metadata.creation_timestamp, now)]


def _parameters(ic: IngressClass) -> str:
    params = ic.spec.extra.get("parameters")
    if not isinstance(params, dict):
        return "<none>"
    ref = f"{params.get('kind', '')}/{params.get('name', '')}"
    return f"{params['apiGroup']}/{ref}" if params.get("apiGroup") else ref


def ingress_class_cells(ic: IngressClass, now: datetime, wide: bool) -> list[str]:
    return [ic.metadata.name, ic.spec.controller, _parameters(ic), _since(ic.metadata.creation_timestamp, now)]


def backend_text(backend: IngressBackend | None, endpoints: str = "") -> str:
    """``service:port (endpoints)``, as kubectl's describeBackendV1 writes a backend."""
    if backend is None:
        return "<default>"
    if backend.service is None:
        res = backend.resource if isinstance(backend.resource, dict) else {}
        group = res.get("apiGroup") or ""
        return f"APIGroup: {group}, Kind: {res.get('kind', '')}, Name: {res.get('name', '')}"
    port = backend.service.port
    port_text = (port.name or str(port.number or "")) if port else ""
    return f"{backend.service.name}:{port_text} ({endpoints or '<none>'})"


def describe_ingress(w: _Writer, ing: Ingress, events: Sequence[Any] | None, related: Related,
                     now: datetime) -> None:
    """kubectl's describeIngressV1. ``related["ingress_endpoints"]`` maps ``service:port`` to its
    endpoints text (``10.0.0.1:8080,10.0.0.2:8080``); without it a backend shows ``(<none>)``."""
    endpoints: dict[str, str] = dict(related.get("ingress_endpoints", {}))  # type: ignore[typeddict-item]

    def backend(b: IngressBackend | None) -> str:
        key = f"{b.service.name}:{(b.service.port.name or b.service.port.number) if b.service.port else ''}" \
            if b is not None and b.service is not None else ""
        return backend_text(b, endpoints.get(key, ""))

    meta, spec = ing.metadata, ing.spec
    w.write(0, f"Name:\t{meta.name}\n")
    _labels_multiline(w, "Labels", meta.labels)
    w.write(0, f"Namespace:\t{meta.namespace}\n")
    w.write(0, f"Address:\t{_address(ing, True)}\n")
    w.write(0, f"Ingress Class:\t{spec.ingress_class_name or '<none>'}\n")
    w.write(0, f"Default backend:\t{backend(spec.default_backend)}\n")
    if spec.tls:
        w.write(0, "TLS:\n")
        for tls in spec.tls:
            w.write(1, f"{tls.secret_name or 'SNI routes'} terminates {','.join(tls.hosts)}\n")
    w.write(0, "Rules:\n  Host\tPath\tBackends\n")
    w.write(0, "  ----\t----\t--------\n")
    for rule in spec.rules:
        host = rule.host or "*"
        if rule.http is None:
            w.write(1, f"{host}\t\t{backend(spec.default_backend)}\n")
            continue
        w.write(1, f"{host}\t\n")
        for path in rule.http.paths:
            w.write(2, f"\t{path.path}\t{backend(path.backend)}\n")
    if not spec.rules:
        w.write(1, f"*\t*\t{backend(spec.default_backend)}\n")
    _annotations_multiline(w, "Annotations", meta.annotations)
    _events(w, events, now)


def describe_ingress_class(w: _Writer, ic: IngressClass, events: Sequence[Any] | None, related: Related,
                           now: datetime) -> None:
    meta = ic.metadata
    w.write(0, f"Name:\t{meta.name}\n")
    _labels_multiline(w, "Labels", meta.labels)
    _annotations_multiline(w, "Annotations", meta.annotations)
    w.write(0, f"Controller:\t{ic.spec.controller}\n")
    params = ic.spec.extra.get("parameters")
    if isinstance(params, dict):
        w.write(0, "Parameters:\n")
        for key, title in (("apiGroup", "APIGroup"), ("kind", "Kind"), ("name", "Name"),
                           ("namespace", "Namespace"), ("scope", "Scope")):
            if params.get(key):
                w.write(1, f"{title}:\t{params[key]}\n")
    _events(w, events, now)
