"""netemu's Kubernetes API layer: object types, strict decoding, defaults, validation, loading.

Typical use::

    from netemu import api
    manifests = api.load_paths(["deploy.yaml"])       # raises ManifestErrors, applies nothing
    for m in manifests:
        store.create(m.obj)                          # decoded, defaulted, validated

Modules: ``objects`` (frozen types), ``codec`` (dict ⇄ object), ``defaults`` (the API server's
defaulting), ``validation`` (its validation, with Kubernetes' field paths and wording),
``labels`` (name/label syntax, selector matching), ``yamlload`` (files and text → manifests).
"""
from .codec import from_dict, to_dict
from .defaults import apply_defaults
from .labels import selector_matches, service_selector_matches
from .objects import (
    KIND_BY_NAME, KINDS, TOP_LEVEL_TYPES, ClientIPConfig, ConfigMap, Container, ContainerPort, ContainerState,
    ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus, DeploymentStrategy, Endpoint,
    EndpointConditions, EndpointPort, EndpointSlice, EnvVar, Event, EventSource, EnvVarSource, ExecAction,
    HTTPGetAction,
    HTTPHeader, IntOrString, KubeObject, LabelSelector, LabelSelectorRequirement, LoadBalancerIngress,
    LoadBalancerStatus, Namespace, NamespaceSpec, NamespaceStatus, Node, NodeAddress, NodeCondition,
    NodeSpec, NodeStatus, ObjectFieldSelector, ObjectMeta, ObjectReference, OwnerReference, Pod,
    PodCondition, PodDNSConfig, PodDNSConfigOption, PodIP, PodSpec, PodStatus, PodTemplateSpec,
    PortStatus, Probe, ReplicaSet, ReplicaSetSpec, ReplicaSetStatus, RollingUpdateDeployment, Secret, Service, ServicePort, ServiceSpec, ServiceStatus,
    SessionAffinityConfig, TCPSocketAction, ident, key_of,
)
from .validation import merge_server_fields, merge_service_allocations, validate, validate_update
from .yamlload import Manifest, join_parts, load_data, load_part, load_paths, load_text, split_stream

__all__ = [
    # objects
    "KIND_BY_NAME", "KINDS", "TOP_LEVEL_TYPES", "ClientIPConfig", "ConfigMap", "Container", "ContainerPort",
    "ContainerState", "ContainerStateRunning", "ContainerStateTerminated", "ContainerStateWaiting",
    "ContainerStatus", "Deployment", "DeploymentCondition", "DeploymentSpec", "DeploymentStatus",
    "DeploymentStrategy", "Endpoint", "EndpointConditions", "EndpointPort", "EndpointSlice", "EnvVar",
    "Event", "EventSource",
    "EnvVarSource", "ExecAction", "HTTPGetAction", "HTTPHeader", "IntOrString", "KubeObject",
    "LabelSelector", "LabelSelectorRequirement", "LoadBalancerIngress", "LoadBalancerStatus", "Namespace",
    "NamespaceSpec", "NamespaceStatus", "Node", "NodeAddress", "NodeCondition", "NodeSpec", "NodeStatus",
    "ObjectFieldSelector", "ObjectMeta", "ObjectReference", "OwnerReference", "Pod", "PodCondition",
    "PodDNSConfig", "PodDNSConfigOption", "PodIP", "PodSpec", "PodStatus", "PodTemplateSpec", "PortStatus",
    "Probe", "ReplicaSet", "ReplicaSetSpec", "ReplicaSetStatus", "RollingUpdateDeployment", "Secret", "Service", "ServicePort", "ServiceSpec", "ServiceStatus",
    "SessionAffinityConfig", "TCPSocketAction", "ident", "key_of",
    # codec, defaults, validation, loading
    "from_dict", "to_dict", "apply_defaults", "validate", "validate_update", "merge_service_allocations",
    "merge_server_fields", "selector_matches", "service_selector_matches", "Manifest", "load_data",
    "load_paths", "load_text", "load_part", "join_parts", "split_stream",
]
