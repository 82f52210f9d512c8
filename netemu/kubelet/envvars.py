"""A container's environment, as the kubelet builds it.

Service variables (pkg/kubelet/envvars), the downward API (``fieldRef``), ``$(VAR)`` expansion
(third_party/forked/golang/expansion), and the order in which they combine: service variables
first, then the container's own ``env`` in order, each able to refer to those before it. Pure.
"""
from __future__ import annotations

from typing import Iterable, Mapping

from netemu.api.objects import Container, Pod, Service


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
                  extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the kubelet gives ``container``: service variables, then ``extra``
    (netemu's own, e.g. POD_IP), then the container's ``env`` in order (explicit env wins)."""
    env = dict(service_env_cached(visible_services(pod, services)))
    env.update(extra or {})
    for var in container.env:
        if var.value_from is not None and var.value_from.field_ref is not None:
            env[var.name] = field_ref(pod, var.value_from.field_ref.field_path)
        elif var.value_from is not None:
            env[var.name] = ""  # configMap/secret/resource refs: not emulated
        else:
            env[var.name] = expand(var.value or "", env)
    return env


def command_line(container: Container, env: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """``command`` and ``args`` after ``$(VAR)`` expansion against ``env``."""
    return [expand(c, env) for c in container.command], [expand(a, env) for a in container.args]
