"""networking.k8s.io/v1 Ingress and IngressClass: the subset of the Kubernetes schema netemu emulates.

The same conventions as ``objects``: frozen dataclasses, snake_case attributes whose manifest names
are camelCase, unknown fields kept verbatim in ``extra``. A backend's ``resource`` and a class's
``parameters`` are kept as given (netemu's controller routes only to Services). Every type names
its OpenAPI schema (``SCHEMA_NAME``), since the module's name says nothing to ``openapi``.

Imported by ``objects`` (which registers the two kinds); no ``from __future__ import annotations``
so that its type hints resolve without ``objects``' names. The controller lives in ``netemu.ingress``.
"""
from dataclasses import field, replace
from typing import Any, ClassVar, Iterable, Mapping

from .objects import ObjectMeta, _extra, frozen

API_VERSION = "networking.k8s.io/v1"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
# (apiVersion, kind, namespaced, short names), as ``objects.STORED_ONLY`` lists the kinds it keeps
KIND_TABLE: tuple[tuple[str, str, bool, tuple[str, ...]], ...] = (
    (API_VERSION, "Ingress", True, ("ing",)),
    (API_VERSION, "IngressClass", False, ()),
)
_NS = "io.k8s.api.networking.v1."


@frozen
class ServiceBackendPort:
    SCHEMA_NAME: ClassVar[str] = _NS + "ServiceBackendPort"
    name: str = ""
    number: int | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class IngressServiceBackend:
    SCHEMA_NAME: ClassVar[str] = _NS + "IngressServiceBackend"
    name: str = ""
    port: ServiceBackendPort | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class IngressBackend:
    SCHEMA_NAME: ClassVar[str] = _NS + "IngressBackend"
    service: IngressServiceBackend | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset({"resource"})
    extra: Mapping[str, Any] = _extra()

    @property
    def resource(self) -> Any:
        return self.extra.get("resource")


@frozen
class HTTPIngressPath:
    SCHEMA_NAME: ClassVar[str] = _NS + "HTTPIngressPath"
    path: str = ""
    path_type: str | None = None
    backend: IngressBackend = field(default_factory=IngressBackend)
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class HTTPIngressRuleValue:
    SCHEMA_NAME: ClassVar[str] = _NS + "HTTPIngressRuleValue"
    paths: tuple[HTTPIngressPath, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class IngressRule:
    SCHEMA_NAME: ClassVar[str] = _NS + "IngressRule"
    host: str = ""
    http: HTTPIngressRuleValue | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class IngressTLS:
    SCHEMA_NAME: ClassVar[str] = _NS + "IngressTLS"
    hosts: tuple[str, ...] = ()
    secret_name: str = ""
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class IngressSpec:
    SCHEMA_NAME: ClassVar[str] = _NS + "IngressSpec"
    ingress_class_name: str | None = None
    default_backend: IngressBackend | None = None
    tls: tuple[IngressTLS, ...] = ()
    rules: tuple[IngressRule, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class IngressPortStatus:
    SCHEMA_NAME: ClassVar[str] = _NS + "IngressPortStatus"
    port: int = 0
    protocol: str = "TCP"
    error: str | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class IngressLoadBalancerIngress:
    SCHEMA_NAME: ClassVar[str] = _NS + "IngressLoadBalancerIngress"
    ip: str = ""
    hostname: str = ""
    ports: tuple[IngressPortStatus, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class IngressLoadBalancerStatus:
    SCHEMA_NAME: ClassVar[str] = _NS + "IngressLoadBalancerStatus"
    ingress: tuple[IngressLoadBalancerIngress, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class IngressStatus:
    SCHEMA_NAME: ClassVar[str] = _NS + "IngressStatus"
    load_balancer: IngressLoadBalancerStatus = field(default_factory=IngressLoadBalancerStatus)
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class Ingress:
    SCHEMA_NAME: ClassVar[str] = _NS + "Ingress"
    API_VERSION: ClassVar[str] = API_VERSION
    KIND: ClassVar[str] = "Ingress"
    NAMESPACED: ClassVar[bool] = True
    api_version: str = API_VERSION
    kind: str = "Ingress"
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: IngressSpec = field(default_factory=IngressSpec)
    status: IngressStatus = field(default_factory=IngressStatus)
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class IngressClassSpec:
    SCHEMA_NAME: ClassVar[str] = _NS + "IngressClassSpec"
    controller: str = ""
    IGNORED: ClassVar[frozenset[str]] = frozenset({"parameters"})
    extra: Mapping[str, Any] = _extra()


@frozen
class IngressClass:
    SCHEMA_NAME: ClassVar[str] = _NS + "IngressClass"
    API_VERSION: ClassVar[str] = API_VERSION
    KIND: ClassVar[str] = "IngressClass"
    NAMESPACED: ClassVar[bool] = False
    api_version: str = API_VERSION
    kind: str = "IngressClass"
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: IngressClassSpec = field(default_factory=IngressClassSpec)
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


def is_default_class(ic: IngressClass) -> bool:
    return (ic.metadata.annotations or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"


def admit_default_class(ingress: Ingress, classes: Iterable[IngressClass]) -> Ingress:
    """kube-apiserver's DefaultIngressClass admission, at create: an Ingress naming no class (no
    ``ingressClassName``, no ``kubernetes.io/ingress.class`` annotation) gets the default
    IngressClass's name; with several defaults, the newest (then the first by name), as since 1.28."""
    if ingress.spec.ingress_class_name is not None or LEGACY_CLASS_ANNOTATION in (ingress.metadata.annotations or {}):
        return ingress
    defaults = [ic for ic in classes if is_default_class(ic)]
    if not defaults:
        return ingress
    newest = max(ic.metadata.creation_timestamp or "" for ic in defaults)
    chosen = min(ic.metadata.name for ic in defaults if (ic.metadata.creation_timestamp or "") == newest)
    return replace(ingress, spec=replace(ingress.spec, ingress_class_name=chosen))
