"""Kind names as users type them (``svc``, ``deployments.apps``, ``Service``) → the kind."""
from __future__ import annotations

from netemu.errors import NotFoundError

from .objects import KIND_BY_NAME

KIND_ALIASES = {
    "po": "Pod", "pod": "Pod", "pods": "Pod",
    "svc": "Service", "service": "Service", "services": "Service",
    "deploy": "Deployment", "deployment": "Deployment", "deployments": "Deployment",
    "deployment.apps": "Deployment", "deployments.apps": "Deployment",
    "sts": "StatefulSet", "statefulset": "StatefulSet", "statefulsets": "StatefulSet",
    "statefulset.apps": "StatefulSet", "statefulsets.apps": "StatefulSet",
    "endpointslice": "EndpointSlice", "endpointslices": "EndpointSlice",
    "endpointslice.discovery.k8s.io": "EndpointSlice", "endpointslices.discovery.k8s.io": "EndpointSlice",
    "ns": "Namespace", "namespace": "Namespace", "namespaces": "Namespace",
    "no": "Node", "node": "Node", "nodes": "Node",
    "cm": "ConfigMap", "configmap": "ConfigMap", "configmaps": "ConfigMap",
    "secret": "Secret", "secrets": "Secret",
    "ev": "Event", "event": "Event", "events": "Event",
}


def resolve_kind(name: str) -> str:
    """The kind ``name`` means; kubectl's error when it means none."""
    if name in KIND_BY_NAME:
        return name
    kind = KIND_ALIASES.get(name.lower())
    if kind is None:
        raise NotFoundError(f'the server doesn\'t have a resource type "{name}"')
    return kind
