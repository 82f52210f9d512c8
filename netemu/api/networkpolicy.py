"""networking.k8s.io/v1 NetworkPolicy: who may talk to whom.

The same conventions as ``objects``: frozen dataclasses, snake_case attributes whose manifest names
are camelCase. A selector that is set but empty (``podSelector: {}``, "every pod") is kept apart
from one that is not set (None): ``SetSelector`` is written back as ``{}``, as Go writes a set
pointer (and the spec's ``podSelector``, which has no ``omitempty``).

The semantics (which pods are isolated, which connections are allowed) are in
``netemu.networkpolicy.model``; defaults and validation in ``networkpolicyrules``.

This module is imported by ``objects`` (which registers the kind); it has no
``from __future__ import annotations`` so that its type hints resolve without ``objects``' names.
"""
from dataclasses import field
from typing import Any, ClassVar, Mapping, Union

from .objects import LabelSelector, ObjectMeta, _extra, frozen, jf

IntOrString = Union[int, str]
POLICY_TYPES = ("Ingress", "Egress")
PROTOCOLS = ("TCP", "UDP", "SCTP")


@frozen
class SetSelector(LabelSelector):
    """A LabelSelector that is present: ``{}`` selects everything and is written back as ``{}``."""
    KEEP_EMPTY: ClassVar[bool] = True
    SCHEMA_NAME: ClassVar[str] = "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"


@frozen
class IPBlock:
    cidr: str = ""
    except_: tuple[str, ...] = jf("except", default=())
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class NetworkPolicyPeer:
    pod_selector: SetSelector | None = None
    namespace_selector: SetSelector | None = None
    ip_block: IPBlock | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class NetworkPolicyPort:
    protocol: str | None = None
    port: IntOrString | None = None
    end_port: int | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class NetworkPolicyIngressRule:
    ports: tuple[NetworkPolicyPort, ...] = ()
    from_: tuple[NetworkPolicyPeer, ...] = jf("from", default=())
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class NetworkPolicyEgressRule:
    ports: tuple[NetworkPolicyPort, ...] = ()
    to: tuple[NetworkPolicyPeer, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class NetworkPolicySpec:
    pod_selector: SetSelector = field(default_factory=SetSelector)
    ingress: tuple[NetworkPolicyIngressRule, ...] = ()
    egress: tuple[NetworkPolicyEgressRule, ...] = ()
    policy_types: tuple[str, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class NetworkPolicy:
    API_VERSION: ClassVar[str] = "networking.k8s.io/v1"
    KIND: ClassVar[str] = "NetworkPolicy"
    NAMESPACED: ClassVar[bool] = True
    api_version: str = "networking.k8s.io/v1"
    kind: str = "NetworkPolicy"
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: NetworkPolicySpec = field(default_factory=NetworkPolicySpec)
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


for _cls in (IPBlock, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicyIngressRule, NetworkPolicyEgressRule,
             NetworkPolicySpec):
    _cls.SCHEMA_NAME = f"io.k8s.api.networking.v1.{_cls.__name__}"  # type: ignore[attr-defined]


def policy_types(policy: NetworkPolicy) -> tuple[str, ...]:
    """The directions the policy isolates: its ``policyTypes``, or as the API server defaults them
    (Ingress always, Egress when it has egress rules)."""
    spec = policy.spec
    if spec.policy_types:
        return spec.policy_types
    return ("Ingress", "Egress") if spec.egress else ("Ingress",)
