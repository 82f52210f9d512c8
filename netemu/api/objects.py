"""Frozen Kubernetes object types: the subset of the v1, apps/v1 and discovery.k8s.io/v1 schemas
that netemu emulates.

Attributes are snake_case; their manifest (JSON) names are Kubernetes' camelCase, derived by
``json_name`` or given in field metadata. Fields that exist in Kubernetes but that netemu does not
emulate are listed in each type's ``IGNORED`` set: they are accepted, kept verbatim in ``extra``
and written back on output, so any manifest kubectl accepts decodes. Any other field is unknown
and refused, as kubectl's strict field validation does.

Objects never change in place: controllers make new ones with ``dataclasses.replace``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any, ClassVar, Mapping, Union

from netemu.frozen import frozen_dataclass, with_direct_init

IntOrString = Union[int, str]

_UPPER_TOKENS = {"ip": "IP", "ips": "IPs", "cidr": "CIDR", "cidrs": "CIDRs", "uid": "UID"}


def json_name(attr: str) -> str:
    """snake_case attribute → Kubernetes camelCase (``cluster_ip`` → ``clusterIP``)."""
    first, *rest = attr.split("_")
    return first + "".join(_UPPER_TOKENS.get(t, t[:1].upper() + t[1:]) for t in rest)


def jf(name: str, default: Any = None, **kw: Any) -> Any:
    """A field whose manifest name does not follow ``json_name``."""
    if "default_factory" in kw:
        return field(metadata={"json": name}, **kw)
    return field(default=default, metadata={"json": name}, **kw)


def _extra() -> Any:
    return field(default_factory=dict, repr=False, compare=False)


frozen = frozen_dataclass

# --------------------------------------------------------------------------- metadata


@frozen
class OwnerReference:
    api_version: str = ""
    kind: str = ""
    name: str = ""
    uid: str = ""
    controller: bool | None = None
    block_owner_deletion: bool | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class ObjectMeta:
    name: str = ""
    generate_name: str = ""
    namespace: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    uid: str = ""
    resource_version: str = ""
    generation: int = 0
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    owner_references: tuple[OwnerReference, ...] = ()
    finalizers: tuple[str, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset({"managedFields", "selfLink"})
    extra: Mapping[str, Any] = _extra()


@frozen
class LabelSelectorRequirement:
    key: str = ""
    operator: str = ""
    values: tuple[str, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class LabelSelector:
    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


# --------------------------------------------------------------------------- pods


@frozen
class ObjectFieldSelector:
    field_path: str = ""
    api_version: str = "v1"
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class ConfigMapKeySelector:
    name: str = ""
    key: str = ""
    optional: bool | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class SecretKeySelector:
    name: str = ""
    key: str = ""
    optional: bool | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class EnvVarSource:
    field_ref: ObjectFieldSelector | None = None
    config_map_key_ref: ConfigMapKeySelector | None = None
    secret_key_ref: SecretKeySelector | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset({"resourceFieldRef", "fileKeyRef"})
    extra: Mapping[str, Any] = _extra()


@frozen
class EnvVar:
    name: str = ""
    value: str | None = None
    value_from: EnvVarSource | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class ConfigMapEnvSource:
    name: str = ""
    optional: bool | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class SecretEnvSource:
    name: str = ""
    optional: bool | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class EnvFromSource:
    prefix: str = ""
    config_map_ref: ConfigMapEnvSource | None = None
    secret_ref: SecretEnvSource | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class ContainerPort:
    name: str = ""
    container_port: int = 0
    protocol: str = "TCP"
    host_port: int | None = None
    host_ip: str = ""
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class ExecAction:
    command: tuple[str, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class HTTPHeader:
    name: str = ""
    value: str = ""
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class HTTPGetAction:
    path: str = "/"
    port: IntOrString = 0
    host: str = ""
    scheme: str = "HTTP"
    http_headers: tuple[HTTPHeader, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class TCPSocketAction:
    port: IntOrString = 0
    host: str = ""
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class Probe:
    exec: ExecAction | None = None
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    initial_delay_seconds: int = 0
    timeout_seconds: int = 1
    period_seconds: int = 10
    success_threshold: int = 1
    failure_threshold: int = 3
    termination_grace_period_seconds: int | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset({"grpc"})
    extra: Mapping[str, Any] = _extra()


@frozen
class VolumeMount:
    """``subPathExpr``, ``mountPropagation`` and ``recursiveReadOnly`` are validated and kept;
    netemu mounts a volume (or its ``subPath``) privately, read-only when ``readOnly``."""
    name: str = ""
    mount_path: str = ""
    sub_path: str = ""
    sub_path_expr: str = ""
    read_only: bool = False
    mount_propagation: str = ""
    IGNORED: ClassVar[frozenset[str]] = frozenset({"recursiveReadOnly"})
    extra: Mapping[str, Any] = _extra()


@frozen
class Container:
    name: str = ""
    image: str = ""
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    working_dir: str = ""
    ports: tuple[ContainerPort, ...] = ()
    env: tuple[EnvVar, ...] = ()
    env_from: tuple[EnvFromSource, ...] = ()
    readiness_probe: Probe | None = None
    liveness_probe: Probe | None = None
    startup_probe: Probe | None = None
    image_pull_policy: str = ""
    termination_message_path: str = "/dev/termination-log"
    termination_message_policy: str = "File"
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False
    restart_policy: str = ""  # "Always" marks a native sidecar init container
    volume_mounts: tuple[VolumeMount, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset({
        "resources", "resizePolicy", "volumeDevices", "lifecycle",
        "securityContext", "restartPolicyRules"})
    extra: Mapping[str, Any] = _extra()


@frozen
class Toleration:
    """A pod's toleration of node taints (the scheduler and the DaemonSet controller read it)."""
    key: str = ""
    operator: str = ""
    value: str = ""
    effect: str = ""
    toleration_seconds: int | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class PodDNSConfigOption:
    name: str = ""
    value: str | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class PodDNSConfig:
    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[PodDNSConfigOption, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class KeyToPath:
    key: str = ""
    path: str = ""
    mode: int | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class ConfigMapVolumeSource:
    name: str = ""
    items: tuple[KeyToPath, ...] = ()
    default_mode: int | None = None
    optional: bool | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class SecretVolumeSource:
    secret_name: str = ""
    items: tuple[KeyToPath, ...] = ()
    default_mode: int | None = None
    optional: bool | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class EmptyDirVolumeSource:
    """``sizeLimit`` (a quantity) is kept as given; netemu does not enforce it."""
    KEEP_EMPTY: ClassVar[bool] = True  # written as ``emptyDir: {}``, as Go writes a set pointer
    medium: str = ""
    IGNORED: ClassVar[frozenset[str]] = frozenset({"sizeLimit"})
    extra: Mapping[str, Any] = _extra()


@frozen
class ResourceFieldSelector:
    container_name: str = ""
    resource: str = ""
    divisor: IntOrString | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class DownwardAPIVolumeFile:
    path: str = ""
    field_ref: ObjectFieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None
    mode: int | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class DownwardAPIVolumeSource:
    items: tuple[DownwardAPIVolumeFile, ...] = ()
    default_mode: int | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class ConfigMapProjection:
    name: str = ""
    items: tuple[KeyToPath, ...] = ()
    optional: bool | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class SecretProjection:
    name: str = ""
    items: tuple[KeyToPath, ...] = ()
    optional: bool | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class DownwardAPIProjection:
    items: tuple[DownwardAPIVolumeFile, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class ServiceAccountTokenProjection:
    audience: str = ""
    expiration_seconds: int | None = None
    path: str = ""
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class VolumeProjection:
    config_map: ConfigMapProjection | None = None
    secret: SecretProjection | None = None
    downward_api: DownwardAPIProjection | None = jf("downwardAPI")
    service_account_token: ServiceAccountTokenProjection | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset({"clusterTrustBundle", "podCertificate"})
    extra: Mapping[str, Any] = _extra()


@frozen
class ProjectedVolumeSource:
    sources: tuple[VolumeProjection, ...] = ()
    default_mode: int | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


# Volume sources netemu keeps as given without emulating them: each gets an empty directory, and
# ``kubectl describe pod`` says so (README, "Volumes").
UNEMULATED_VOLUME_SOURCES: tuple[str, ...] = (
    "hostPath", "gitRepo", "gcePersistentDisk", "awsElasticBlockStore", "nfs", "iscsi", "glusterfs",
    "persistentVolumeClaim", "rbd", "flexVolume", "cinder", "cephfs", "flocker", "fc", "azureFile",
    "vsphereVolume", "quobyte", "azureDisk", "photonPersistentDisk", "portworxVolume", "scaleIO", "storageos",
    "csi", "ephemeral", "image")


@frozen
class Volume:
    """A pod's volume: ``configMap``, ``secret``, ``emptyDir``, ``downwardAPI`` and ``projected``
    are emulated; other sources are kept verbatim in ``extra`` (UNEMULATED_VOLUME_SOURCES)."""
    name: str = ""
    config_map: ConfigMapVolumeSource | None = None
    secret: SecretVolumeSource | None = None
    empty_dir: EmptyDirVolumeSource | None = None
    downward_api: DownwardAPIVolumeSource | None = jf("downwardAPI")
    projected: ProjectedVolumeSource | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset(UNEMULATED_VOLUME_SOURCES)
    extra: Mapping[str, Any] = _extra()


@frozen
class PodSpec:
    containers: tuple[Container, ...] = ()
    init_containers: tuple[Container, ...] = ()
    restart_policy: str = "Always"
    termination_grace_period_seconds: int = 30
    active_deadline_seconds: int | None = None
    dns_policy: str = "ClusterFirst"
    dns_config: PodDNSConfig | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    node_name: str = ""
    host_network: bool = False
    hostname: str = ""
    subdomain: str = ""
    set_hostname_as_fqdn: bool | None = jf("setHostnameAsFQDN")
    enable_service_links: bool | None = True
    scheduler_name: str = "default-scheduler"
    service_account_name: str = ""
    volumes: tuple[Volume, ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset({
        "ephemeralContainers", "serviceAccount", "automountServiceAccountToken",
        "hostPID", "hostIPC", "shareProcessNamespace", "securityContext", "imagePullSecrets",
        "affinity", "hostAliases", "priorityClassName", "priority",
        "readinessGates", "runtimeClassName", "preemptionPolicy", "overhead",
        "topologySpreadConstraints", "os", "hostUsers", "schedulingGates", "resourceClaims",
        "resources"})
    extra: Mapping[str, Any] = _extra()


@frozen
class PodCondition:
    type: str = ""
    status: str = ""
    reason: str = ""
    message: str = ""
    last_probe_time: str | None = None
    last_transition_time: str | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset({"observedGeneration"})
    extra: Mapping[str, Any] = _extra()


@frozen
class ContainerStateWaiting:
    reason: str = ""
    message: str = ""
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class ContainerStateRunning:
    started_at: str | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class ContainerStateTerminated:
    exit_code: int = 0
    signal: int | None = None
    reason: str = ""
    message: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    container_id: str = jf("containerID", "")
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class ContainerState:
    waiting: ContainerStateWaiting | None = None
    running: ContainerStateRunning | None = None
    terminated: ContainerStateTerminated | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class ContainerStatus:
    name: str = ""
    ready: bool = False
    started: bool | None = None
    restart_count: int = 0
    image: str = ""
    image_id: str = jf("imageID", "")
    container_id: str = jf("containerID", "")
    state: ContainerState = field(default_factory=ContainerState)
    last_state: ContainerState = field(default_factory=ContainerState)
    IGNORED: ClassVar[frozenset[str]] = frozenset(
        {"resources", "allocatedResources", "volumeMounts", "user", "stopSignal"})
    extra: Mapping[str, Any] = _extra()


@frozen
class PodIP:
    ip: str = ""
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class PodStatus:
    phase: str = ""
    conditions: tuple[PodCondition, ...] = ()
    message: str = ""
    reason: str = ""
    host_ip: str = ""
    host_ips: tuple[PodIP, ...] = ()
    pod_ip: str = ""
    pod_ips: tuple[PodIP, ...] = ()
    start_time: str | None = None
    container_statuses: tuple[ContainerStatus, ...] = ()
    init_container_statuses: tuple[ContainerStatus, ...] = ()
    qos_class: str = ""
    IGNORED: ClassVar[frozenset[str]] = frozenset(
        {"nominatedNodeName", "ephemeralContainerStatuses", "resize", "resourceClaimStatuses",
         "observedGeneration"})
    extra: Mapping[str, Any] = _extra()


@frozen
class PodTemplateSpec:
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: PodSpec = field(default_factory=PodSpec)
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class Pod:
    API_VERSION: ClassVar[str] = "v1"
    KIND: ClassVar[str] = "Pod"
    NAMESPACED: ClassVar[bool] = True
    api_version: str = "v1"
    kind: str = "Pod"
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: PodSpec = field(default_factory=PodSpec)
    status: PodStatus = field(default_factory=PodStatus)
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


# --------------------------------------------------------------------------- services


@frozen
class ServicePort:
    name: str = ""
    protocol: str = "TCP"
    app_protocol: str | None = None
    port: int = 0
    target_port: IntOrString | None = None
    node_port: int | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class ClientIPConfig:
    timeout_seconds: int | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class SessionAffinityConfig:
    client_ip: ClientIPConfig | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class ServiceSpec:
    type: str = "ClusterIP"
    selector: Mapping[str, str] | None = None
    ports: tuple[ServicePort, ...] = ()
    cluster_ip: str = ""
    cluster_ips: tuple[str, ...] = ()
    external_ips: tuple[str, ...] = ()
    external_name: str = ""
    session_affinity: str = "None"
    session_affinity_config: SessionAffinityConfig | None = None
    external_traffic_policy: str = ""
    internal_traffic_policy: str = ""
    publish_not_ready_addresses: bool = False
    load_balancer_ip: str = ""
    load_balancer_class: str | None = None
    load_balancer_source_ranges: tuple[str, ...] = ()
    allocate_load_balancer_node_ports: bool | None = None
    health_check_node_port: int | None = None
    ip_families: tuple[str, ...] = ()
    ip_family_policy: str = ""
    traffic_distribution: str | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class PortStatus:
    port: int = 0
    protocol: str = "TCP"
    error: str | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class LoadBalancerIngress:
    ip: str = ""
    hostname: str = ""
    ip_mode: str | None = None
    ports: tuple[PortStatus, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class LoadBalancerStatus:
    ingress: tuple[LoadBalancerIngress, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class ServiceStatus:
    load_balancer: LoadBalancerStatus = field(default_factory=LoadBalancerStatus)
    IGNORED: ClassVar[frozenset[str]] = frozenset({"conditions"})
    extra: Mapping[str, Any] = _extra()


@frozen
class Service:
    API_VERSION: ClassVar[str] = "v1"
    KIND: ClassVar[str] = "Service"
    NAMESPACED: ClassVar[bool] = True
    api_version: str = "v1"
    kind: str = "Service"
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: ServiceSpec = field(default_factory=ServiceSpec)
    status: ServiceStatus = field(default_factory=ServiceStatus)
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()

    @property
    def is_headless(self) -> bool:
        return self.spec.cluster_ip == "None"


# --------------------------------------------------------------------------- deployments


@frozen
class RollingUpdateDeployment:
    max_unavailable: IntOrString | None = None
    max_surge: IntOrString | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class DeploymentStrategy:
    type: str = "RollingUpdate"
    rolling_update: RollingUpdateDeployment | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class DeploymentSpec:
    replicas: int | None = None
    selector: LabelSelector | None = None
    template: PodTemplateSpec = field(default_factory=PodTemplateSpec)
    strategy: DeploymentStrategy | None = None
    min_ready_seconds: int = 0
    revision_history_limit: int | None = None
    progress_deadline_seconds: int | None = None
    paused: bool = False
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class DeploymentCondition:
    type: str = ""
    status: str = ""
    reason: str = ""
    message: str = ""
    last_update_time: str | None = None
    last_transition_time: str | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class DeploymentStatus:
    observed_generation: int = 0
    replicas: int = 0
    updated_replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    unavailable_replicas: int = 0
    conditions: tuple[DeploymentCondition, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset({"collisionCount", "terminatingReplicas"})
    extra: Mapping[str, Any] = _extra()


@frozen
class Deployment:
    API_VERSION: ClassVar[str] = "apps/v1"
    KIND: ClassVar[str] = "Deployment"
    NAMESPACED: ClassVar[bool] = True
    api_version: str = "apps/v1"
    kind: str = "Deployment"
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: DeploymentSpec = field(default_factory=DeploymentSpec)
    status: DeploymentStatus = field(default_factory=DeploymentStatus)
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


# --------------------------------------------------------------------------- replica sets


@frozen
class ReplicaSetSpec:
    replicas: int | None = None
    min_ready_seconds: int = 0
    selector: LabelSelector | None = None
    template: PodTemplateSpec = field(default_factory=PodTemplateSpec)
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class ReplicaSetCondition:
    type: str = ""
    status: str = ""
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class ReplicaSetStatus:
    replicas: int = 0
    fully_labeled_replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    observed_generation: int = 0
    conditions: tuple[ReplicaSetCondition, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset({"terminatingReplicas"})
    extra: Mapping[str, Any] = _extra()


@frozen
class ReplicaSet:
    API_VERSION: ClassVar[str] = "apps/v1"
    KIND: ClassVar[str] = "ReplicaSet"
    NAMESPACED: ClassVar[bool] = True
    api_version: str = "apps/v1"
    kind: str = "ReplicaSet"
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: ReplicaSetSpec = field(default_factory=ReplicaSetSpec)
    status: ReplicaSetStatus = field(default_factory=ReplicaSetStatus)
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


# --------------------------------------------------------------------------- stateful sets


@frozen
class RollingUpdateStatefulSetStrategy:
    partition: int | None = None
    max_unavailable: IntOrString | None = None  # accepted and validated; updates go one pod at a time
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class StatefulSetUpdateStrategy:
    type: str = ""
    rolling_update: RollingUpdateStatefulSetStrategy | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class StatefulSetPersistentVolumeClaimRetentionPolicy:
    """Defaulted and validated as Kubernetes does; without volumes it changes nothing."""
    when_deleted: str = ""
    when_scaled: str = ""
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class StatefulSetOrdinals:
    start: int = 0
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class StatefulSetSpec:
    replicas: int | None = None
    selector: LabelSelector | None = None
    template: PodTemplateSpec = field(default_factory=PodTemplateSpec)
    service_name: str = ""
    pod_management_policy: str = ""
    update_strategy: StatefulSetUpdateStrategy = field(default_factory=StatefulSetUpdateStrategy)
    revision_history_limit: int | None = None
    min_ready_seconds: int = 0
    persistent_volume_claim_retention_policy: StatefulSetPersistentVolumeClaimRetentionPolicy | None = None
    ordinals: StatefulSetOrdinals | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset({"volumeClaimTemplates"})
    extra: Mapping[str, Any] = _extra()


@frozen
class StatefulSetStatus:
    observed_generation: int = 0
    replicas: int = 0
    ready_replicas: int = 0
    current_replicas: int = 0
    updated_replicas: int = 0
    available_replicas: int = 0
    current_revision: str = ""
    update_revision: str = ""
    collision_count: int | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset({"conditions", "terminatingReplicas"})
    extra: Mapping[str, Any] = _extra()


@frozen
class StatefulSet:
    API_VERSION: ClassVar[str] = "apps/v1"
    KIND: ClassVar[str] = "StatefulSet"
    NAMESPACED: ClassVar[bool] = True
    api_version: str = "apps/v1"
    kind: str = "StatefulSet"
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: StatefulSetSpec = field(default_factory=StatefulSetSpec)
    status: StatefulSetStatus = field(default_factory=StatefulSetStatus)
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


# --------------------------------------------------------------------------- daemon sets


@frozen
class RollingUpdateDaemonSet:
    max_unavailable: IntOrString | None = None
    max_surge: IntOrString | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class DaemonSetUpdateStrategy:
    type: str = ""
    rolling_update: RollingUpdateDaemonSet | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class DaemonSetSpec:
    selector: LabelSelector | None = None
    template: PodTemplateSpec = field(default_factory=PodTemplateSpec)
    update_strategy: DaemonSetUpdateStrategy = field(default_factory=DaemonSetUpdateStrategy)
    min_ready_seconds: int = 0
    revision_history_limit: int | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset({"templateGeneration"})
    extra: Mapping[str, Any] = _extra()


@frozen
class DaemonSetCondition:
    type: str = ""
    status: str = ""
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class DaemonSetStatus:
    current_number_scheduled: int = 0
    number_misscheduled: int = 0
    desired_number_scheduled: int = 0
    number_ready: int = 0
    observed_generation: int = 0
    updated_number_scheduled: int = 0
    number_available: int = 0
    number_unavailable: int = 0
    collision_count: int | None = None
    conditions: tuple[DaemonSetCondition, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class DaemonSet:
    """apps/v1: one pod per eligible node (``netemu.controllers.daemonset``)."""
    API_VERSION: ClassVar[str] = "apps/v1"
    KIND: ClassVar[str] = "DaemonSet"
    NAMESPACED: ClassVar[bool] = True
    api_version: str = "apps/v1"
    kind: str = "DaemonSet"
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: DaemonSetSpec = field(default_factory=DaemonSetSpec)
    status: DaemonSetStatus = field(default_factory=DaemonSetStatus)
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


# --------------------------------------------------------------------------- endpoint slices


@frozen
class EndpointConditions:
    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    KEEP_FALSE: ClassVar[frozenset[str]] = frozenset({"ready", "serving", "terminating"})  # Go *bool: false is said
    extra: Mapping[str, Any] = _extra()


@frozen
class ObjectReference:
    kind: str = ""
    namespace: str = ""
    name: str = ""
    uid: str = ""
    api_version: str = ""
    resource_version: str = ""
    field_path: str = ""
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class Endpoint:
    addresses: tuple[str, ...] = ()
    conditions: EndpointConditions = field(default_factory=EndpointConditions)
    hostname: str | None = None
    target_ref: ObjectReference | None = None
    node_name: str | None = None
    zone: str | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset({"hints", "deprecatedTopology"})
    extra: Mapping[str, Any] = _extra()


@frozen
class EndpointPort:
    name: str | None = None
    protocol: str = "TCP"
    port: int | None = None
    app_protocol: str | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class EndpointSlice:
    API_VERSION: ClassVar[str] = "discovery.k8s.io/v1"
    KIND: ClassVar[str] = "EndpointSlice"
    NAMESPACED: ClassVar[bool] = True
    api_version: str = "discovery.k8s.io/v1"
    kind: str = "EndpointSlice"
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    address_type: str = ""
    endpoints: tuple[Endpoint, ...] = ()
    ports: tuple[EndpointPort, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()

    SERVICE_NAME_LABEL: ClassVar[str] = "kubernetes.io/service-name"
    MANAGED_BY_LABEL: ClassVar[str] = "endpointslice.kubernetes.io/managed-by"
    CONTROLLER_NAME: ClassVar[str] = "endpointslice-controller.k8s.io"


# --------------------------------------------------------------------------- namespaces, nodes


@frozen
class NamespaceSpec:
    finalizers: tuple[str, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class NamespaceStatus:
    phase: str = ""
    IGNORED: ClassVar[frozenset[str]] = frozenset({"conditions"})
    extra: Mapping[str, Any] = _extra()


@frozen
class Namespace:
    API_VERSION: ClassVar[str] = "v1"
    KIND: ClassVar[str] = "Namespace"
    NAMESPACED: ClassVar[bool] = False
    api_version: str = "v1"
    kind: str = "Namespace"
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: NamespaceSpec = field(default_factory=NamespaceSpec)
    status: NamespaceStatus = field(default_factory=NamespaceStatus)
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class NodeAddress:
    type: str = ""
    address: str = ""
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class NodeCondition:
    type: str = ""
    status: str = ""
    reason: str = ""
    message: str = ""
    last_heartbeat_time: str | None = None
    last_transition_time: str | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class Taint:
    key: str = ""
    value: str = ""
    effect: str = ""
    time_added: str | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class NodeSpec:
    pod_cidr: str = ""
    pod_cidrs: tuple[str, ...] = ()
    unschedulable: bool = False
    taints: tuple[Taint, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset({"providerID", "configSource"})
    extra: Mapping[str, Any] = _extra()


@frozen
class NodeStatus:
    addresses: tuple[NodeAddress, ...] = ()
    conditions: tuple[NodeCondition, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset(
        {"capacity", "allocatable", "nodeInfo", "images", "daemonEndpoints", "phase",
         "volumesInUse", "volumesAttached", "config", "runtimeHandlers", "features"})
    extra: Mapping[str, Any] = _extra()


@frozen
class Node:
    API_VERSION: ClassVar[str] = "v1"
    KIND: ClassVar[str] = "Node"
    NAMESPACED: ClassVar[bool] = False
    api_version: str = "v1"
    kind: str = "Node"
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: NodeSpec = field(default_factory=NodeSpec)
    status: NodeStatus = field(default_factory=NodeStatus)
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()

    @property
    def internal_ip(self) -> str:
        for a in self.status.addresses:
            if a.type == "InternalIP":
                return a.address
        return ""


# --------------------------------------------------------------------------- config maps, secrets


@frozen
class ConfigMap:
    """``binaryData`` values are kept as the manifest gives them: base64 text."""
    API_VERSION: ClassVar[str] = "v1"
    KIND: ClassVar[str] = "ConfigMap"
    NAMESPACED: ClassVar[bool] = True
    api_version: str = "v1"
    kind: str = "ConfigMap"
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    data: Mapping[str, str] = field(default_factory=dict)
    binary_data: Mapping[str, str] = field(default_factory=dict)
    immutable: bool | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class Secret:
    """``data`` values are base64 text, as in the manifest. ``stringData`` is write-only: the API
    server merges it into ``data`` (``defaults.apply_defaults``), so a stored Secret never has it."""
    API_VERSION: ClassVar[str] = "v1"
    KIND: ClassVar[str] = "Secret"
    NAMESPACED: ClassVar[bool] = True
    api_version: str = "v1"
    kind: str = "Secret"
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    type: str = ""
    data: Mapping[str, str] = field(default_factory=dict)
    string_data: Mapping[str, str] = field(default_factory=dict)
    immutable: bool | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


# --------------------------------------------------------------------------- service accounts


@frozen
class ServiceAccountImagePullSecret:
    """A LocalObjectReference: the name of a Secret in the ServiceAccount's namespace."""
    name: str = ""
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()
    SCHEMA_NAME: ClassVar[str] = "io.k8s.api.core.v1.LocalObjectReference"


@frozen
class ServiceAccount:
    """core/v1 ServiceAccount: an identity for pods. Every namespace has ``default`` (the
    serviceaccounts controller); pods name theirs in ``spec.serviceAccountName`` and get its
    token (``automountServiceAccountToken``) from the API server."""
    API_VERSION: ClassVar[str] = "v1"
    KIND: ClassVar[str] = "ServiceAccount"
    NAMESPACED: ClassVar[bool] = True
    api_version: str = "v1"
    kind: str = "ServiceAccount"
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    secrets: tuple[ObjectReference, ...] = ()
    image_pull_secrets: tuple[ServiceAccountImagePullSecret, ...] = ()
    automount_service_account_token: bool | None = None
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    KEEP_FALSE: ClassVar[frozenset[str]] = frozenset({"automount_service_account_token"})  # written when false
    extra: Mapping[str, Any] = _extra()


# --------------------------------------------------------------------------- events


@frozen
class EventSource:
    component: str = ""
    host: str = ""
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class Event:
    """core/v1 Event, as the kubelet's and controllers' event recorder writes it: ``count`` and
    ``lastTimestamp`` grow when the same thing happens again to the same object."""
    API_VERSION: ClassVar[str] = "v1"
    KIND: ClassVar[str] = "Event"
    NAMESPACED: ClassVar[bool] = True
    api_version: str = "v1"
    kind: str = "Event"
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    involved_object: ObjectReference = field(default_factory=ObjectReference)
    reason: str = ""
    message: str = ""
    source: EventSource = field(default_factory=EventSource)
    first_timestamp: str | None = None
    last_timestamp: str | None = None
    count: int = 0
    type: str = ""
    event_time: str | None = None
    action: str = ""
    reporting_component: str = ""
    reporting_instance: str = ""
    IGNORED: ClassVar[frozenset[str]] = frozenset({"series", "related"})
    extra: Mapping[str, Any] = _extra()


# --------------------------------------------------------------------------- netemu.dev: the emulator's own operations


@frozen
class ImpairmentTarget:
    """What an Impairment acts on: one Service (in the Impairment's namespace), one node, or the
    link between two nodes (the netns backend's wire)."""
    service: str = ""
    node: str = ""
    link: tuple[str, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class ImpairmentSpec:
    """Settings in tc-netem's words (``50ms``, ``1mbit``, ``10%``), as ``netemu impair`` takes them."""
    target: ImpairmentTarget = field(default_factory=ImpairmentTarget)
    delay: str = ""
    jitter: str = ""
    rate: str = ""
    loss: str = ""
    reset: str = ""
    duplicate: str = ""
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class ImpairmentStatus:
    """``applied``: what the proxy or the wire does now (``delay 50ms loss 5%``), written once the
    impairment is in force; ``layer``: ``proxy`` or ``wire``."""
    observed_generation: int | None = None
    applied: str = ""
    layer: str = ""
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class Impairment:
    """netemu.dev/v1: delay, jitter, rate, loss, reset or duplication on a Service, a node or a
    link, in force while the object exists (``netemu impair`` writes these)."""
    API_VERSION: ClassVar[str] = "netemu.dev/v1"
    KIND: ClassVar[str] = "Impairment"
    NAMESPACED: ClassVar[bool] = True
    api_version: str = "netemu.dev/v1"
    kind: str = "Impairment"
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: ImpairmentSpec = field(default_factory=ImpairmentSpec)
    status: ImpairmentStatus = field(default_factory=ImpairmentStatus)
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class PartitionGroup:
    nodes: tuple[str, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class PartitionSpec:
    """Groups of nodes that hear only each other (netns backend); nodes named in no group form
    one more group."""
    groups: tuple[PartitionGroup, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class PartitionStatus:
    """``groups``: the groups in force, the implicit one included (``node-1 | node-2,node-3``)."""
    observed_generation: int | None = None
    groups: str = ""
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class Partition:
    """netemu.dev/v1, cluster-scoped: the underlay cut between groups of nodes while the object
    exists (``netemu partition`` writes one, ``netemu heal`` deletes it). One at a time."""
    API_VERSION: ClassVar[str] = "netemu.dev/v1"
    KIND: ClassVar[str] = "Partition"
    NAMESPACED: ClassVar[bool] = False
    api_version: str = "netemu.dev/v1"
    kind: str = "Partition"
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: PartitionSpec = field(default_factory=PartitionSpec)
    status: PartitionStatus = field(default_factory=PartitionStatus)
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class CaptureTarget:
    """What a Capture records: one pod's ``eth0`` (a pod in the Capture's namespace), one node's
    link to the underlay, or the link between two nodes (the netns backend's wire)."""
    pod: str = ""
    node: str = ""
    link: tuple[str, ...] = ()
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class CaptureSpec:
    """What to record: the target, a tcpdump-style ``filter``, and ``count`` frames at most (0: until
    the Capture is deleted). Fixed once created."""
    target: CaptureTarget = field(default_factory=CaptureTarget)
    filter: str = ""
    count: int = 0
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class CaptureStatus:
    """``phase``: Running, Completed (``count`` frames recorded) or Failed (``message``);
    ``file``: the pcapng file, in the cluster's state directory; ``frames`` recorded so far."""
    phase: str = ""
    file: str = ""
    frames: int = 0
    recording: str = ""
    message: str = ""
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


@frozen
class Capture:
    """netemu.dev/v1: a packet capture (pcapng) on the netns backend, recording while the object
    exists and until ``count`` frames (``netemu capture`` records the same way)."""
    API_VERSION: ClassVar[str] = "netemu.dev/v1"
    KIND: ClassVar[str] = "Capture"
    NAMESPACED: ClassVar[bool] = True
    api_version: str = "netemu.dev/v1"
    kind: str = "Capture"
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: CaptureSpec = field(default_factory=CaptureSpec)
    status: CaptureStatus = field(default_factory=CaptureStatus)
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    extra: Mapping[str, Any] = _extra()


# --------------------------------------------------------------------------- registry

# --------------------------------------------------------------------------- kinds stored, not emulated


class _EveryField(frozenset):  # type: ignore[type-arg]
    """``IGNORED`` of a kind netemu stores but does not emulate: every field is kept verbatim."""

    def __contains__(self, key: object) -> bool:
        return True


# Kinds that real application bundles carry and netemu keeps without acting on them (README,
# "Kinds stored but not emulated"): (apiVersion, kind, namespaced, short names).
STORED_ONLY: tuple[tuple[str, str, bool, tuple[str, ...]], ...] = (
    ("v1", "PersistentVolumeClaim", True, ("pvc",)),
    ("v1", "PersistentVolume", False, ("pv",)),
    ("v1", "ResourceQuota", True, ("quota",)),
    ("v1", "LimitRange", True, ("limits",)),
    ("autoscaling/v2", "HorizontalPodAutoscaler", True, ("hpa",)),
    ("policy/v1", "PodDisruptionBudget", True, ("pdb",)),
    ("rbac.authorization.k8s.io/v1", "Role", True, ()),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", True, ()),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", False, ()),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", False, ()),
    ("scheduling.k8s.io/v1", "PriorityClass", False, ("pc",)),
    ("storage.k8s.io/v1", "StorageClass", False, ("sc",)),
)


def _stored_only(api_version: str, kind: str, namespaced: bool) -> type:
    """A frozen type with ``metadata`` and, verbatim in ``extra``, whatever else the object has."""
    return with_direct_init(dataclasses.make_dataclass(
        kind, [("api_version", str, field(default=api_version)), ("kind", str, field(default=kind)),
               ("metadata", ObjectMeta, field(default_factory=ObjectMeta)), ("extra", Mapping[str, Any], _extra())],
        frozen=True, kw_only=True,
        namespace={"API_VERSION": api_version, "KIND": kind, "NAMESPACED": namespaced, "IGNORED": _EveryField(),
                   "STORED_ONLY": True, "__module__": __name__,
                   "__doc__": f"{api_version} {kind}: stored and served as given; netemu does not emulate it."}))


STORED_ONLY_TYPES: tuple[type, ...] = tuple(_stored_only(v, k, ns) for v, k, ns, _ in STORED_ONLY)


def stored_only(obj_or_cls: Any) -> bool:
    """Whether netemu keeps objects of this kind without acting on them."""
    return bool(getattr(obj_or_cls, "STORED_ONLY", False))


from .batch import CronJob, Job  # noqa: E402  (batch/v1 types live in their own module)
from .networkpolicy import NetworkPolicy  # noqa: E402  (networking.k8s.io/v1, its own module)
from .ingress import KIND_TABLE as INGRESS_KINDS, Ingress, IngressClass  # noqa: E402  (netemu.api.ingress)

TOP_LEVEL_TYPES: tuple[type, ...] = (Namespace, Pod, Service, Deployment, ReplicaSet, StatefulSet, DaemonSet, EndpointSlice,
                                     Node, ConfigMap, Secret, ServiceAccount, Event, Impairment, Partition, Capture,
                                     Job, CronJob, NetworkPolicy,
                                     Ingress, IngressClass,
                                     *STORED_ONLY_TYPES)
KINDS: dict[tuple[str, str], type] = {(t.API_VERSION, t.KIND): t for t in TOP_LEVEL_TYPES}
KIND_BY_NAME: dict[str, type] = {t.KIND: t for t in TOP_LEVEL_TYPES}

KubeObject = Union[Namespace, Pod, Service, Deployment, ReplicaSet, StatefulSet, DaemonSet, EndpointSlice, Node, ConfigMap,
                   Secret, ServiceAccount, Event, Impairment, Partition]


def key_of(obj: Any) -> tuple[str, str, str]:
    """Store key: (kind, namespace, name); namespace is "" for cluster-scoped kinds."""
    return (obj.KIND, obj.metadata.namespace if obj.NAMESPACED else "", obj.metadata.name)


def ident(obj: Any) -> str:
    """``namespace/name`` (or ``name`` for cluster-scoped kinds), for messages."""
    ns = obj.metadata.namespace if obj.NAMESPACED else ""
    return f"{ns}/{obj.metadata.name}" if ns else obj.metadata.name
