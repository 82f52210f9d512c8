"""The API server's defaulting, as a pure function: ``apply_defaults(obj) -> obj``.

Follows ``pkg/apis/core/v1/defaults.go`` (Service, Pod, PodSpec, Container, Probe, HTTPGetAction,
ObjectFieldSelector, Namespace), ``pkg/apis/apps/v1/defaults.go`` (Deployment, ReplicaSet, StatefulSet) and
``pkg/apis/discovery/v1/defaults.go`` (EndpointPort), Secret (``type: Opaque``). Three steps the
API server performs outside defaulting are included because validation depends on them:

- Secret ``stringData`` is merged into ``data`` (base64; a stringData key wins) and dropped, as
  the v1 → internal conversion does (``Convert_v1_Secret_To_core_Secret``); ``data`` values are
  re-encoded as Go's encoding/json writes []byte (standard base64, no line breaks).

- Service ``clusterIPs`` is filled from ``clusterIP`` (the REST strategy's ``normalizeClusterIPs``
  on create).
- Service ``ipFamilyPolicy``/``ipFamilies`` are filled as the service allocator does for a
  single-stack IPv4 cluster (``initIPFamilyFields``): ``SingleStack`` and the family of the given
  clusterIP (else IPv4); a headless service without selector gets ``RequireDualStack`` and
  ``[IPv4, IPv6]``. ExternalName services get neither.

Zero values ("" / None / 0 where Kubernetes uses a pointer or an empty string) count as unset.
Objects are frozen: every step returns new objects made with ``dataclasses.replace``.
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from typing import Any, TypeVar

from netemu.frozen import evolve

from . import objects as o

T = TypeVar("T")

DEFAULT_NAMESPACE_LABEL = "kubernetes.io/metadata.name"
DEFAULT_CLIENT_IP_TIMEOUT = 10800


def apply_defaults(obj: T) -> T:
    """``obj`` with every Kubernetes default filled in (a new object; ``obj`` is not changed)."""
    if isinstance(obj, o.Service):
        return _service(obj)  # type: ignore[return-value]
    if isinstance(obj, o.Pod):
        return _pod(obj)  # type: ignore[return-value]
    if isinstance(obj, o.Deployment):
        return _deployment(obj)  # type: ignore[return-value]
    if isinstance(obj, o.ReplicaSet):
        return _replica_set(obj)  # type: ignore[return-value]
    if isinstance(obj, o.StatefulSet):
        return _stateful_set(obj)  # type: ignore[return-value]
    if isinstance(obj, o.DaemonSet):
        return _daemon_set(obj)  # type: ignore[return-value]
    if isinstance(obj, o.EndpointSlice):
        return _endpoint_slice(obj)  # type: ignore[return-value]
    if isinstance(obj, o.Namespace):
        return _namespace(obj)  # type: ignore[return-value]
    if isinstance(obj, o.Secret):
        return _secret(obj)  # type: ignore[return-value]
    if isinstance(obj, o.NetworkPolicy):  # networking.k8s.io/v1: netemu.api.networkpolicyrules
        from .networkpolicyrules import default_network_policy
        return default_network_policy(obj)  # type: ignore[return-value]
    if isinstance(obj, (o.Job, o.CronJob)):  # batch/v1: netemu.api.batchrules
        from . import batchrules
        return (batchrules.default_job(obj) if isinstance(obj, o.Job)  # type: ignore[return-value]
                else batchrules.default_cron_job(obj))
    return obj


# --------------------------------------------------------------------------- services


def externally_accessible(svc: o.Service) -> bool:
    """apiservice.ExternallyAccessible: NodePort, LoadBalancer, or ClusterIP with externalIPs."""
    t = svc.spec.type
    return t in ("LoadBalancer", "NodePort") or (t == "ClusterIP" and bool(svc.spec.external_ips))


def ip_family(ip: str) -> str | None:
    """``"IPv4"``/``"IPv6"`` for an address, None for anything else."""
    try:
        return "IPv6" if ipaddress.ip_address(ip).version == 6 else "IPv4"
    except ValueError:
        return None


def _service(svc: o.Service) -> o.Service:
    spec = svc.spec
    changes: dict[str, Any] = {}

    affinity = spec.session_affinity or "None"
    changes["session_affinity"] = affinity
    if affinity == "None":
        changes["session_affinity_config"] = None
    elif affinity == "ClientIP":
        cfg = spec.session_affinity_config
        if cfg is None or cfg.client_ip is None or cfg.client_ip.timeout_seconds is None:
            changes["session_affinity_config"] = o.SessionAffinityConfig(
                client_ip=o.ClientIPConfig(timeout_seconds=DEFAULT_CLIENT_IP_TIMEOUT))

    svc_type = spec.type or "ClusterIP"
    changes["type"] = svc_type
    changes["ports"] = tuple(_service_port(p) for p in spec.ports)
    spec = evolve(spec, **changes)
    svc = evolve(svc, spec=spec)
    changes = {}

    if externally_accessible(svc) and not spec.external_traffic_policy:
        changes["external_traffic_policy"] = "Cluster"
    if not spec.internal_traffic_policy and svc_type in ("ClusterIP", "NodePort", "LoadBalancer"):
        changes["internal_traffic_policy"] = "Cluster"
    if svc_type == "LoadBalancer" and spec.allocate_load_balancer_node_ports is None:
        changes["allocate_load_balancer_node_ports"] = True

    # REST strategy: a client that sets only clusterIP gets clusterIPs = [clusterIP].
    cluster_ips = spec.cluster_ips
    if spec.cluster_ip and not cluster_ips:
        cluster_ips = (spec.cluster_ip,)
        changes["cluster_ips"] = cluster_ips

    if svc_type != "ExternalName":
        headless_selectorless = spec.cluster_ip == "None" and not spec.selector
        policy = spec.ip_family_policy or ("RequireDualStack" if headless_selectorless else "SingleStack")
        changes["ip_family_policy"] = policy
        families = list(spec.ip_families)
        for i, ip in enumerate(cluster_ips):
            if ip == "None":
                break
            fam = ip_family(ip)
            if fam and i >= len(families):
                families.append(fam)
        if not families:
            families = ["IPv4"]
        if headless_selectorless and len(families) < 2 and policy != "SingleStack":
            families.append("IPv6" if families[0] == "IPv4" else "IPv4")
        changes["ip_families"] = tuple(families)

    svc = evolve(svc, spec=evolve(spec, **changes))
    if svc_type == "LoadBalancer":
        ingress = tuple(evolve(i, ip_mode="VIP") if i.ip and i.ip_mode is None else i
                        for i in svc.status.load_balancer.ingress)
        svc = evolve(svc, status=evolve(svc.status, load_balancer=evolve(
            svc.status.load_balancer, ingress=ingress)))
    return svc


def _service_port(p: o.ServicePort) -> o.ServicePort:
    protocol = p.protocol or "TCP"
    target = p.target_port
    if target is None or target == 0 or target == "":
        target = p.port
    return evolve(p, protocol=protocol, target_port=target)


# --------------------------------------------------------------------------- pods


def _pod(pod: o.Pod) -> o.Pod:
    spec = _pod_spec(pod.spec)
    extra: dict[str, Any] = {}
    if spec.enable_service_links is None:
        extra["enable_service_links"] = True
    if spec.host_network:
        extra["containers"] = _host_network_ports(spec.containers)
        extra["init_containers"] = _host_network_ports(spec.init_containers)
    return evolve(pod, spec=evolve(spec, **extra) if extra else spec)


def _host_network_ports(containers: tuple[o.Container, ...]) -> tuple[o.Container, ...]:
    """With hostNetwork every container port is also a host port (Pod only, not templates)."""
    return tuple(evolve(c, ports=tuple(evolve(p, host_port=p.container_port) if not p.host_port else p
                                        for p in c.ports))
                 for c in containers)


def _pod_spec(spec: o.PodSpec) -> o.PodSpec:
    return evolve(
        spec,
        dns_policy=spec.dns_policy or "ClusterFirst",
        restart_policy=spec.restart_policy or "Always",
        termination_grace_period_seconds=(30 if spec.termination_grace_period_seconds is None
                                          else spec.termination_grace_period_seconds),
        scheduler_name=spec.scheduler_name or "default-scheduler",
        containers=tuple(_container(c) for c in spec.containers),
        init_containers=tuple(_container(c) for c in spec.init_containers),
        volumes=tuple(_volume(v) for v in spec.volumes),
    )


# The default file mode of configMap, secret, downwardAPI and projected volumes (0644).
VOLUME_DEFAULT_MODE = 0o644
SERVICE_ACCOUNT_TOKEN_EXPIRATION = 3600


def _volume(v: o.Volume) -> o.Volume:
    """SetDefaults_Volume (no source: an emptyDir) and the defaults of each source: defaultMode
    0644, a token's expirationSeconds 3600, a fieldRef's apiVersion v1, a hostPath's type ""."""
    if v.config_map is None and v.secret is None and v.empty_dir is None and v.downward_api is None \
            and v.projected is None and not any(k in v.extra for k in o.UNEMULATED_VOLUME_SOURCES):
        return evolve(v, empty_dir=o.EmptyDirVolumeSource())
    changes: dict[str, Any] = {}
    if v.config_map is not None and v.config_map.default_mode is None:
        changes["config_map"] = evolve(v.config_map, default_mode=VOLUME_DEFAULT_MODE)
    if v.secret is not None and v.secret.default_mode is None:
        changes["secret"] = evolve(v.secret, default_mode=VOLUME_DEFAULT_MODE)
    if v.downward_api is not None:
        changes["downward_api"] = evolve(
            v.downward_api, items=tuple(_downward_file(f) for f in v.downward_api.items),
            default_mode=VOLUME_DEFAULT_MODE if v.downward_api.default_mode is None else v.downward_api.default_mode)
    if v.projected is not None:
        changes["projected"] = evolve(
            v.projected, sources=tuple(_projection(s) for s in v.projected.sources),
            default_mode=VOLUME_DEFAULT_MODE if v.projected.default_mode is None else v.projected.default_mode)
    host_path = v.extra.get("hostPath")
    if isinstance(host_path, dict) and host_path.get("type") is None:
        changes["extra"] = {**v.extra, "hostPath": {**host_path, "type": ""}}
    return evolve(v, **changes) if changes else v


def _downward_file(f: o.DownwardAPIVolumeFile) -> o.DownwardAPIVolumeFile:
    ref = f.resource_field_ref
    if ref is not None and ref.divisor is None:  # a Quantity: its zero value is written as "0"
        f = evolve(f, resource_field_ref=evolve(ref, divisor="0"))
    if f.field_ref is not None and not f.field_ref.api_version:
        f = evolve(f, field_ref=evolve(f.field_ref, api_version="v1"))
    return f


def _projection(p: o.VolumeProjection) -> o.VolumeProjection:
    if p.downward_api is not None:
        p = evolve(p, downward_api=evolve(p.downward_api,
                                            items=tuple(_downward_file(f) for f in p.downward_api.items)))
    token = p.service_account_token
    if token is not None and token.expiration_seconds is None:
        p = evolve(p, service_account_token=evolve(token, expiration_seconds=SERVICE_ACCOUNT_TOKEN_EXPIRATION))
    return p


def _container(c: o.Container) -> o.Container:
    return evolve(
        c,
        image_pull_policy=c.image_pull_policy or default_pull_policy(c.image),
        termination_message_path=c.termination_message_path or "/dev/termination-log",
        termination_message_policy=c.termination_message_policy or "File",
        ports=tuple(evolve(p, protocol=p.protocol or "TCP") for p in c.ports),
        env=tuple(_env_var(e) for e in c.env),
        readiness_probe=_probe(c.readiness_probe),
        liveness_probe=_probe(c.liveness_probe),
        startup_probe=_probe(c.startup_probe),
    )


def _env_var(e: o.EnvVar) -> o.EnvVar:
    src = e.value_from
    if src is None or src.field_ref is None or src.field_ref.api_version:
        return e
    return evolve(e, value_from=evolve(src, field_ref=evolve(src.field_ref, api_version="v1")))


def _probe(p: o.Probe | None) -> o.Probe | None:
    if p is None:
        return None
    http = p.http_get
    if http is not None:
        http = evolve(http, path=http.path or "/", scheme=http.scheme or "HTTP")
    return evolve(
        p,
        http_get=http,
        timeout_seconds=p.timeout_seconds or 1,
        period_seconds=p.period_seconds or 10,
        success_threshold=p.success_threshold or 1,
        failure_threshold=p.failure_threshold or 3,
    )


# Docker reference grammar (distribution/reference), enough to find the tag as kubelet's
# parsers.ParseImageName does: an unparsable name yields no tag, hence IfNotPresent.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*" \
          r"|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
_REFERENCE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}))?$")


def default_pull_policy(image: str) -> str:
    """``Always`` for ``:latest`` or an untagged, undigested image; ``IfNotPresent`` otherwise."""
    m = _REFERENCE.match(image)
    if not m:
        return "IfNotPresent"
    tag, digest = m.group("tag"), m.group("digest")
    if not tag and not digest:
        tag = "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


# --------------------------------------------------------------------------- deployments


def _deployment(d: o.Deployment) -> o.Deployment:
    spec = d.spec
    strategy = spec.strategy or o.DeploymentStrategy()
    if not strategy.type:
        strategy = evolve(strategy, type="RollingUpdate")
    if strategy.type == "RollingUpdate":
        ru = strategy.rolling_update or o.RollingUpdateDeployment()
        ru = evolve(ru,
                     max_unavailable="25%" if ru.max_unavailable is None else ru.max_unavailable,
                     max_surge="25%" if ru.max_surge is None else ru.max_surge)
        strategy = evolve(strategy, rolling_update=ru)
    template = evolve(spec.template, spec=_pod_spec(spec.template.spec))
    return evolve(d, spec=evolve(
        spec,
        replicas=1 if spec.replicas is None else spec.replicas,
        strategy=strategy,
        revision_history_limit=10 if spec.revision_history_limit is None else spec.revision_history_limit,
        progress_deadline_seconds=(600 if spec.progress_deadline_seconds is None
                                   else spec.progress_deadline_seconds),
        template=template,
    ))


def _replica_set(rs: o.ReplicaSet) -> o.ReplicaSet:
    """SetDefaults_ReplicaSet: one replica; the pod template as a pod's spec is defaulted."""
    spec = rs.spec
    return evolve(rs, spec=evolve(
        spec, replicas=1 if spec.replicas is None else spec.replicas,
        template=evolve(spec.template, spec=_pod_spec(spec.template.spec))))


# --------------------------------------------------------------------------- stateful sets

PVC_RETAIN = "Retain"


def _stateful_set(sts: o.StatefulSet) -> o.StatefulSet:
    """SetDefaults_StatefulSet (feature gates as in 1.33: StatefulSetAutoDeletePVC on,
    MaxUnavailableStatefulSet off, so maxUnavailable is not defaulted)."""
    spec = sts.spec
    strategy = spec.update_strategy
    if not strategy.type:
        strategy = evolve(strategy, type="RollingUpdate",
                           rolling_update=strategy.rolling_update or o.RollingUpdateStatefulSetStrategy())
    if strategy.type == "RollingUpdate" and strategy.rolling_update is not None \
            and strategy.rolling_update.partition is None:
        strategy = evolve(strategy, rolling_update=evolve(strategy.rolling_update, partition=0))
    retention = spec.persistent_volume_claim_retention_policy or o.StatefulSetPersistentVolumeClaimRetentionPolicy()
    retention = evolve(retention, when_deleted=retention.when_deleted or PVC_RETAIN,
                        when_scaled=retention.when_scaled or PVC_RETAIN)
    return evolve(sts, spec=evolve(
        spec,
        pod_management_policy=spec.pod_management_policy or "OrderedReady",
        update_strategy=strategy,
        persistent_volume_claim_retention_policy=retention,
        replicas=1 if spec.replicas is None else spec.replicas,
        revision_history_limit=10 if spec.revision_history_limit is None else spec.revision_history_limit,
        template=evolve(spec.template, spec=_pod_spec(spec.template.spec)),
    ))


# --------------------------------------------------------------------------- daemon sets


def _daemon_set(ds: o.DaemonSet) -> o.DaemonSet:
    """SetDefaults_DaemonSet: RollingUpdate with maxUnavailable 1 and maxSurge 0, ten revisions
    of history; the pod template as a pod's spec is defaulted."""
    spec = ds.spec
    strategy = spec.update_strategy
    if not strategy.type:
        strategy = evolve(strategy, type="RollingUpdate")
    if strategy.type == "RollingUpdate":
        rolling = strategy.rolling_update or o.RollingUpdateDaemonSet()
        rolling = evolve(rolling, max_unavailable=1 if rolling.max_unavailable is None else rolling.max_unavailable,
                          max_surge=0 if rolling.max_surge is None else rolling.max_surge)
        strategy = evolve(strategy, rolling_update=rolling)
    return evolve(ds, spec=evolve(
        spec, update_strategy=strategy,
        revision_history_limit=10 if spec.revision_history_limit is None else spec.revision_history_limit,
        template=evolve(spec.template, spec=_pod_spec(spec.template.spec))))


# --------------------------------------------------------------------------- endpoint slices, namespaces


def _endpoint_slice(es: o.EndpointSlice) -> o.EndpointSlice:
    ports = tuple(evolve(p, name="" if p.name is None else p.name,
                          protocol="TCP" if p.protocol is None else p.protocol)
                  for p in es.ports)
    return evolve(es, ports=ports)


def _namespace(ns: o.Namespace) -> o.Namespace:
    meta = ns.metadata
    if meta.name:
        meta = evolve(meta, labels={**meta.labels, DEFAULT_NAMESPACE_LABEL: meta.name})
    status = ns.status if ns.status.phase else evolve(ns.status, phase="Active")
    return evolve(ns, metadata=meta, status=status)


# --------------------------------------------------------------------------- secrets


def go_b64decode(text: str) -> bytes | None:
    """``text`` decoded as Go decodes a []byte from JSON (standard padded base64, CR and LF
    skipped); None when Go refuses it."""
    stripped = text.replace("\r", "").replace("\n", "")
    if len(stripped) % 4:
        return None
    try:
        return binascii.a2b_base64(stripped.encode("ascii"), strict_mode=True)
    except (binascii.Error, ValueError):
        return None


def canonical_base64(text: str) -> str | None:
    """``text`` as Go reads and writes it back; None when it is not valid base64 (validation
    then reports it)."""
    raw = go_b64decode(text)
    return None if raw is None else base64.b64encode(raw).decode("ascii")


def _secret(secret: o.Secret) -> o.Secret:
    data = {k: canonical_base64(v) or v for k, v in secret.data.items()}
    for key, value in secret.string_data.items():
        data[key] = base64.b64encode(value.encode("utf-8", "surrogateescape")).decode("ascii")
    return evolve(secret, type=secret.type or "Opaque", data=data, string_data={})
