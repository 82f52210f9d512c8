"""Kind names as users type them (``svc``, ``deployments.apps``, ``Service``) → the kind."""
from __future__ import annotations

from netemu.errors import NotFoundError

from .objects import INGRESS_KINDS, KIND_BY_NAME, STORED_ONLY


def plural(kind: str) -> str:
    """The resource name of a kind: ``pods``, ``ingresses``, ``networkpolicies``."""
    lower = kind.lower()
    if lower.endswith("s"):
        return lower + "es"
    if lower.endswith("y") and lower[-2:-1] not in "aeiou":
        return lower[:-1] + "ies"
    return lower + "s"


def group_of(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def qualified(kind: str, api_version: str, name: str) -> str:
    """``pods``, ``deployments.apps``: a resource or singular name with its group, as kubectl words it."""
    group = group_of(api_version)
    return f"{name}.{group}" if group else name

KIND_ALIASES = {
    "po": "Pod", "pod": "Pod", "pods": "Pod",
    "svc": "Service", "service": "Service", "services": "Service",
    "deploy": "Deployment", "deployment": "Deployment", "deployments": "Deployment",
    "deployment.apps": "Deployment", "deployments.apps": "Deployment",
    "rs": "ReplicaSet", "replicaset": "ReplicaSet", "replicasets": "ReplicaSet",
    "replicaset.apps": "ReplicaSet", "replicasets.apps": "ReplicaSet",
    "sts": "StatefulSet", "statefulset": "StatefulSet", "statefulsets": "StatefulSet",
    "statefulset.apps": "StatefulSet", "statefulsets.apps": "StatefulSet",
    "ds": "DaemonSet", "daemonset": "DaemonSet", "daemonsets": "DaemonSet",
    "daemonset.apps": "DaemonSet", "daemonsets.apps": "DaemonSet",
    "endpointslice": "EndpointSlice", "endpointslices": "EndpointSlice",
    "endpointslice.discovery.k8s.io": "EndpointSlice", "endpointslices.discovery.k8s.io": "EndpointSlice",
    "ns": "Namespace", "namespace": "Namespace", "namespaces": "Namespace",
    "no": "Node", "node": "Node", "nodes": "Node",
    "cm": "ConfigMap", "configmap": "ConfigMap", "configmaps": "ConfigMap",
    "secret": "Secret", "secrets": "Secret",
    "sa": "ServiceAccount", "serviceaccount": "ServiceAccount", "serviceaccounts": "ServiceAccount",
    "ev": "Event", "event": "Event", "events": "Event",
    "impairment": "Impairment", "impairments": "Impairment",
    "impairment.netemu.dev": "Impairment", "impairments.netemu.dev": "Impairment",
    "partition": "Partition", "partitions": "Partition",
    "partition.netemu.dev": "Partition", "partitions.netemu.dev": "Partition",
    "capture": "Capture", "captures": "Capture",
    "capture.netemu.dev": "Capture", "captures.netemu.dev": "Capture",
    "job": "Job", "jobs": "Job", "job.batch": "Job", "jobs.batch": "Job",
    "cj": "CronJob", "cronjob": "CronJob", "cronjobs": "CronJob", "cronjob.batch": "CronJob",
    "cronjobs.batch": "CronJob",
    "netpol": "NetworkPolicy", "networkpolicy": "NetworkPolicy", "networkpolicies": "NetworkPolicy",
    "networkpolicy.networking.k8s.io": "NetworkPolicy", "networkpolicies.networking.k8s.io": "NetworkPolicy",
}
for _version, _kind, _namespaced, _shorts in (*STORED_ONLY, *INGRESS_KINDS):
    for _name in (_kind.lower(), plural(_kind)):
        KIND_ALIASES[_name] = KIND_ALIASES[qualified(_kind, _version, _name)] = _kind
    KIND_ALIASES.update((short, _kind) for short in _shorts)


def resolve_kind(name: str) -> str:
    """The kind ``name`` means; kubectl's error when it means none."""
    if name in KIND_BY_NAME:
        return name
    kind = KIND_ALIASES.get(name.lower())
    if kind is None:
        raise NotFoundError(f'the server doesn\'t have a resource type "{name}"')
    return kind
