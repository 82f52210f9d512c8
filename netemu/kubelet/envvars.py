"""A container's environment, as the kubelet builds it.

Service variables (pkg/kubelet/envvars), the downward API (``fieldRef``), ConfigMap and Secret
values (``configMapKeyRef``, ``secretKeyRef``, ``envFrom``), ``$(VAR)`` expansion
(third_party/forked/golang/expansion), and the order in which they combine (the kubelet's
makeEnvironmentVariables): service variables first, then every ``envFrom`` source in order, then
the container's own ``env`` in order, each able to refer to those before it. Pure: ConfigMaps and
Secrets come through a lookup function.

A required ConfigMap, Secret or key that is missing raises ``ContainerConfigError`` with the
kubelet's message (``configmap "x" not found``, ``couldn't find key k in ConfigMap default/x``);
the container then waits in ``CreateContainerConfigError``. ``envFrom`` keys that are not
environment variable names (IsEnvVarName, e.g. ``1badkey``) are skipped and reported through
``warn`` in the kubelet's words.
"""
from __future__ import annotations

from collections import ChainMap
from typing import Any, Callable, Iterable, Mapping

from netemu.api.labels import is_env_var_name
from netemu.api.objects import ConfigMap, Container, EnvFromSource, Pod, Secret, Service
from netemu.api.validation import decoded
from netemu.errors import NetemuError

Lookup = Callable[[str, str], Any]  # (kind, name) -> the object in the pod's namespace, or None
CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"


class ContainerConfigError(NetemuError):
    """The container's configuration cannot be made yet (a ConfigMap, Secret or key is missing):
    it waits in ``CreateContainerConfigError`` and the kubelet retries."""


def _secret_text(value: str) -> str:
    """A Secret's data value as the process gets it: the bytes, as a string (Go's string(v))."""
    return decoded(value).decode("utf-8", "surrogateescape")


def _source(pod: Pod, lookup: Lookup | None, kind: str, name: str, optional: bool) -> Any:
    """The ConfigMap or Secret ``name``; None when optional and missing; the kubelet's error else
    (its watch-based managers name the resource in the singular: ``configmap "x" not found``)."""
    obj = lookup(kind, name) if lookup is not None else None
    if obj is None and not optional:
        raise ContainerConfigError(f'{kind.lower()} "{name}" not found')
    return obj


def _values(obj: ConfigMap | Secret) -> dict[str, str]:
    if isinstance(obj, Secret):
        return {k: _secret_text(v) for k, v in obj.data.items()}
    return dict(obj.data)  # binaryData is never an environment variable


def env_from(pod: Pod, sources: Iterable[EnvFromSource], lookup: Lookup | None,
             warn: Callable[[str], None] | None = None) -> dict[str, str]:
    """The variables of ``envFrom``, later sources winning; invalid names skipped and warned about."""
    env: dict[str, str] = {}
    for src in sources:
        ref, kind = (src.config_map_ref, "ConfigMap") if src.config_map_ref is not None else (src.secret_ref, "Secret")
        if ref is None:
            continue
        obj = _source(pod, lookup, kind, ref.name, bool(ref.optional))
        if obj is None:
            continue
        invalid = []
        for key, value in _values(obj).items():
            name = src.prefix + key
            if is_env_var_name(name):
                invalid.append(name)
                continue
            env[name] = value
        if invalid and warn is not None:
            what = "configMap" if kind == "ConfigMap" else "secret"
            warn(f"Keys [{', '.join(sorted(invalid))}] from the EnvFrom {what} {pod.metadata.namespace}/{ref.name} "
                 "were skipped since they are considered invalid environment variable names.")
    return env


def _key_ref(pod: Pod, lookup: Lookup | None, kind: str, name: str, key: str, optional: bool) -> str | None:
    """configMapKeyRef / secretKeyRef: the value, None when optional and missing."""
    obj = _source(pod, lookup, kind, name, optional)
    if obj is None:
        return None
    if key not in obj.data:
        if optional:
            return None
        raise ContainerConfigError(f"couldn't find key {key} in {kind} {pod.metadata.namespace}/{name}")
    return _secret_text(obj.data[key]) if kind == "Secret" else obj.data[key]


def _env_name(service_name: str) -> str:
    return service_name.upper().replace("-", "_")


def service_env(services: Iterable[Service]) -> dict[str, str]:
    """The ``{SVC}_SERVICE_HOST`` … and docker-link variables for ``services``.

    Headless services and ExternalName services give none, as in the kubelet.
    """
    env: dict[str, str] = {}
    for svc in services:
        ip = svc.spec.cluster_ip
        if not ip or ip == "None" or svc.spec.type == "ExternalName" or not svc.spec.ports:
            continue
        name = _env_name(svc.metadata.name)
        first = svc.spec.ports[0]
        env[f"{name}_SERVICE_HOST"] = ip
        env[f"{name}_SERVICE_PORT"] = str(first.port)
        for p in svc.spec.ports:
            if p.name:
                env[f"{name}_SERVICE_PORT_{_env_name(p.name)}"] = str(p.port)
        proto = first.protocol.lower()
        env[f"{name}_PORT"] = f"{proto}://{ip}:{first.port}"
        for p in svc.spec.ports:
            proto_l, proto_u = p.protocol.lower(), p.protocol.upper()
            prefix = f"{name}_PORT_{p.port}_{proto_u}"
            env[prefix] = f"{proto_l}://{ip}:{p.port}"
            env[f"{prefix}_PROTO"] = proto_l
            env[f"{prefix}_PORT"] = str(p.port)
            env[f"{prefix}_ADDR"] = ip
    return env


_SERVICE_ENV_CACHE: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}


def service_env_cached(services: list[Service]) -> dict[str, str]:
    """``service_env`` memoised on the services' identities and versions: every pod of a namespace
    started while its services stay the same gets the same variables, computed once."""
    key = tuple((s.metadata.uid, s.metadata.resource_version) for s in services)
    env = _SERVICE_ENV_CACHE.get(key)
    if env is None:
        if len(_SERVICE_ENV_CACHE) > 256:
            _SERVICE_ENV_CACHE.clear()
        env = _SERVICE_ENV_CACHE[key] = service_env(services)
    return env


def visible_services(pod: Pod, services: Iterable[Service], master_namespace: str = "default") -> list[Service]:
    """The services whose variables a container of ``pod`` gets (kubelet getServiceEnvVarMap).

    With enableServiceLinks (the default) every service of the pod's namespace; always the
    ``kubernetes`` service of ``default``. A pod-namespace service wins over a same-named one.
    """
    chosen: dict[str, Service] = {}
    links = pod.spec.enable_service_links is not False
    for svc in services:
        ns, name = svc.metadata.namespace, svc.metadata.name
        if ns == master_namespace and name == "kubernetes":
            chosen.setdefault(name, svc)
        if links and ns == pod.metadata.namespace:
            chosen[name] = svc
    return sorted(chosen.values(), key=lambda s: s.metadata.name)


def field_ref(pod: Pod, path: str) -> str:
    """Value of a downward-API ``fieldRef.fieldPath`` for ``pod`` ("" when it has none yet)."""
    meta, status = pod.metadata, pod.status
    simple = {
        "metadata.name": meta.name, "metadata.namespace": meta.namespace, "metadata.uid": meta.uid,
        "spec.nodeName": pod.spec.node_name, "spec.serviceAccountName": pod.spec.service_account_name or "default",
        "status.hostIP": status.host_ip, "status.podIP": status.pod_ip,
        "status.hostIPs": ",".join(i.ip for i in status.host_ips) or status.host_ip,
        "status.podIPs": ",".join(i.ip for i in status.pod_ips) or status.pod_ip,
    }
    if path in simple:
        return simple[path]
    for prefix, source in (("metadata.labels", meta.labels), ("metadata.annotations", meta.annotations)):
        if path.startswith(prefix + "['") and path.endswith("']"):
            return source.get(path[len(prefix) + 2:-2], "")
    return ""


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined variables are replaced, ``$$`` escapes a ``$``,
    and a reference to an undefined variable is left as written."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "$" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            end = text.find(")", i + 2)
            if end == -1:  # an unclosed reference stays as written; what follows is still read
                out.append("$(")
                i += 2
                continue
            name = text[i + 2:end]
            out.append(env[name] if name in env else text[i:end + 1])
            i = end + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def container_env(pod: Pod, container: Container, services: Iterable[Service],
                  extra: Mapping[str, str] | None = None, *, lookup: Lookup | None = None,
                  warn: Callable[[str], None] | None = None,
                  service_vars: Mapping[str, str] | None = None) -> ChainMap[str, str]:
    """The environment the kubelet gives ``container``: service variables, then ``extra``
    (netemu's own, e.g. POD_IP), then ``envFrom``, then the container's ``env`` in order (explicit
    env wins). ``lookup(kind, name)`` finds ConfigMaps and Secrets of the pod's namespace.
    The service variables come from ``service_vars`` when given (``serviceenv.ServiceEnvIndex``,
    shared by many containers and never written), else from ``services``; the container's own
    variables are layered over them, not copied into them.
    Raises ContainerConfigError when a required one, or a required key, is missing."""
    shared = service_vars if service_vars is not None else service_env_cached(visible_services(pod, services))
    env: ChainMap[str, str] = ChainMap({}, shared)  # writes go to the first map
    env.update(extra or {})
    env.update(env_from(pod, container.env_from, lookup, warn))
    for var in container.env:
        src = var.value_from
        if src is None or var.value:
            env[var.name] = expand(var.value or "", env)
        elif src.field_ref is not None:
            env[var.name] = field_ref(pod, src.field_ref.field_path)
        elif src.config_map_key_ref is not None or src.secret_key_ref is not None:
            kind, ref = (("ConfigMap", src.config_map_key_ref) if src.config_map_key_ref is not None
                         else ("Secret", src.secret_key_ref))
            value = _key_ref(pod, lookup, kind, ref.name, ref.key, bool(ref.optional))
            if value is not None:  # an optional one that is missing sets nothing
                env[var.name] = value
        else:
            env[var.name] = ""  # resourceFieldRef / fileKeyRef: not emulated
    return env


def command_line(container: Container, env: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """``command`` and ``args`` after ``$(VAR)`` expansion against ``env``."""
    return [expand(c, env) for c in container.command], [expand(a, env) for a in container.args]
