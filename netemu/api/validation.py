"""Validation of decoded, defaulted objects, in the API server's words.

``validate(obj)`` is the create-time check (``ValidateService``, ``ValidatePodCreate``,
``ValidateDeployment``, ``ValidateReplicaSet``, ``ValidateStatefulSet``, ``ValidateEndpointSlice``,
``ValidateNamespace``, ``ValidateNode``);
``validate_update(old, new)`` adds the update rules (immutable fields). Both return every problem
found, as ``FieldProblem(path, message)`` whose ``str`` is what kubectl prints, e.g.
``spec.ports[1].name: Required value`` or
``spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'``.

Sources: ``pkg/apis/core/validation/validation.go``, ``pkg/apis/apps/validation/validation.go``,
``pkg/apis/discovery/validation/validation.go``, apimachinery's ``api/validation`` (object meta)
and ``apis/meta/v1/validation`` (labels, selectors). Feature gates are taken as in Kubernetes
1.33: relaxed env-var names and relaxed DNS search names. Bad values are rendered as the API
server up to 1.33 renders them: strings quoted, numbers bare, lists and maps in Go syntax
(``[]string{"a"}``, ``map[string]string{"app":"web"}``); 1.34 switched composite values to JSON
(kubernetes#132314).

Deliberate differences, because netemu allocates and emulates on loopback:

- Objects are validated *before* the allocators run (the API server allocates first). So a
  missing ``healthCheckNodePort`` is not reported; range checks of clusterIP and nodePort belong
  to the allocators.
- EndpointSlice addresses may be loopback addresses (netemu's loopback backend gives pods
  127.244.x.y); Kubernetes refuses loopback and link-local endpoint addresses.

Apply over an existing object: kubectl apply sends a patch, so values the server allocated
(clusterIP, clusterIPs, nodePorts, healthCheckNodePort) or set (a pod's nodeName) survive a
re-apply of the same file. ``merge_service_allocations``/``merge_server_fields`` reproduce that
(``patchAllocatedValues`` in the service registry): call one on the defaulted new object, then
``validate_update(old, merged)``. A manifest that does name a different clusterIP is refused:
``spec.clusterIPs[0]: Invalid value: []string{"10.96.0.20"}: may not change once set`` (the
wording of Kubernetes ≥ 1.20; older servers said ``spec.clusterIP: ... field is immutable``).
"""
from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import types
import typing
from typing import Any, Callable, Iterable, Mapping, Sequence

from netemu.errors import FieldProblem
from netemu.frozen import evolve

from . import objects as o
from .codec import to_dict
from .defaults import default_pull_policy, externally_accessible, go_b64decode, ip_family
from .labels import (
    SELECTOR_OPERATORS, inclusive_range_error, is_config_map_key, is_dns1123_label, is_dns1123_subdomain,
    is_dns1123_subdomain_with_underscore, is_http_header_name, is_label_value, is_qualified_name,
    is_relaxed_env_var_name, is_valid_percent, is_valid_port_name, is_valid_port_num,
    name_is_dns1035_label, name_is_dns_label, name_is_dns_subdomain, selector_matches,
)

NameFn = Callable[[str, bool], list[str]]
MAX_INT32 = 2**31 - 1

# --------------------------------------------------------------------------- field problems


class GoValue(str):
    """A value already rendered as Go's ``%#v`` would print it."""


def go_quote(s: str) -> str:
    """Go's strconv.Quote (close enough for anything a manifest holds)."""
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                        "\v": "\\v"}[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif not ch.isprintable():
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def go_repr(value: Any) -> str:
    """How a bad value appears in a Kubernetes field error."""
    if isinstance(value, GoValue):
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return go_quote(value)
    if isinstance(value, (tuple, list)):
        return "[]string{" + ", ".join(go_quote(str(v)) for v in value) + "}"
    if isinstance(value, Mapping):
        if not value:
            return "map[string]string(nil)"
        return "map[string]string{" + ", ".join(
            f"{go_quote(str(k))}:{go_quote(str(value[k]))}" for k in sorted(value)) + "}"
    return str(value)


def required(path: str, detail: str = "") -> FieldProblem:
    return FieldProblem(path, "Required value" + (f": {detail}" if detail else ""))


def forbidden(path: str, detail: str) -> FieldProblem:
    return FieldProblem(path, "Forbidden" + (f": {detail}" if detail else ""))


def invalid(path: str, value: Any, detail: str) -> FieldProblem:
    return FieldProblem(path, f"Invalid value: {go_repr(value)}" + (f": {detail}" if detail else ""))


def not_supported(path: str, value: Any, supported: Iterable[str]) -> FieldProblem:
    values = ", ".join(go_quote(v) for v in supported)
    return FieldProblem(path, f"Unsupported value: {go_repr(value)}" + (f": supported values: {values}" if values else ""))


def duplicate(path: str, value: Any) -> FieldProblem:
    return FieldProblem(path, f"Duplicate value: {go_repr(value)}")


def not_found(path: str, value: Any) -> FieldProblem:
    return FieldProblem(path, f"Not found: {go_repr(value)}")


def too_long(path: str, max_bytes: int) -> FieldProblem:
    return FieldProblem(path, f"Too long: must have at most {max_bytes} bytes")


def _invalid_each(path: str, value: Any, messages: Iterable[str]) -> list[FieldProblem]:
    return [invalid(path, value, m) for m in messages]


def _nonnegative(path: str, value: int | None) -> list[FieldProblem]:
    if value is not None and value < 0:
        return [invalid(path, value, "must be greater than or equal to 0")]
    return []


# --------------------------------------------------------------------------- addresses


def parse_ip_sloppy(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Go's netutils.ParseIPSloppy: like ParseIP, but IPv4 octets may have leading zeros."""
    if "%" in value:
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        pass
    parts = value.split(".")
    if len(parts) == 4 and all(p.isdigit() and len(p) <= 3 and int(p) <= 255 for p in parts):
        return ipaddress.IPv4Address(".".join(str(int(p)) for p in parts))
    return None


def _is_v4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.version == 4 or (isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None)


def is_valid_ip(path: str, value: str) -> list[FieldProblem]:
    if parse_ip_sloppy(value) is None:
        return [invalid(path, value, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")]
    return []


def is_valid_ipv4(path: str, value: str) -> list[FieldProblem]:
    ip = parse_ip_sloppy(value)
    return [] if ip is not None and _is_v4(ip) else [invalid(path, value, "must be a valid IPv4 address")]


def is_valid_ipv6(path: str, value: str) -> list[FieldProblem]:
    ip = parse_ip_sloppy(value)
    return [] if ip is not None and not _is_v4(ip) else [invalid(path, value, "must be a valid IPv6 address")]


def is_valid_cidr(path: str, value: str) -> list[FieldProblem]:
    addr, _, bits = value.partition("/")
    ok = bool(bits) and bits.isdigit() and parse_ip_sloppy(addr) is not None
    if ok:
        ip = parse_ip_sloppy(addr)
        ok = int(bits) <= (32 if ip is not None and ip.version == 4 else 128)
    return [] if ok else [invalid(path, value, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")]


def validate_non_special_ip(path: str, value: str) -> list[FieldProblem]:
    ip = parse_ip_sloppy(value)
    if ip is None:
        return [invalid(path, value, "must be a valid IP address")]
    errs = []
    if ip.is_unspecified:
        errs.append(invalid(path, value, f"may not be unspecified ({value})"))
    if ip.is_loopback:
        errs.append(invalid(path, value, "may not be in the loopback range (127.0.0.0/8, ::1/128)"))
    if ip.is_link_local:
        errs.append(invalid(path, value, "may not be in the link-local range (169.254.0.0/16, fe80::/10)"))
    if ip in ipaddress.ip_network("224.0.0.0/24") or (ip.version == 6 and ip in ipaddress.ip_network("ff02::/16")):
        errs.append(invalid(path, value, "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"))
    return errs


# --------------------------------------------------------------------------- metadata, labels, selectors


def validate_labels(labels: Mapping[str, str], path: str) -> list[FieldProblem]:
    errs = []
    for key, value in labels.items():
        errs += _invalid_each(path, key, is_qualified_name(key))
        errs += _invalid_each(path, value, is_label_value(value))
    return errs


def validate_annotations(annotations: Mapping[str, str], path: str) -> list[FieldProblem]:
    errs = []
    for key in annotations:
        errs += _invalid_each(path, key, is_qualified_name(key.lower()))
    if sum(len(k) + len(v) for k, v in annotations.items()) > 256 * 1024:
        errs.append(too_long(path, 256 * 1024))
    return errs


def go_label_selector(sel: o.LabelSelector) -> GoValue:
    labels = GoValue("map[string]string(nil)") if not sel.match_labels else go_repr(sel.match_labels)
    if not sel.match_expressions:
        exprs = "[]v1.LabelSelectorRequirement(nil)"
    else:
        exprs = "[]v1.LabelSelectorRequirement{" + ", ".join(
            f"v1.LabelSelectorRequirement{{Key:{go_quote(r.key)}, Operator:{go_quote(r.operator)}, "
            f"Values:{go_repr(r.values) if r.values else '[]string(nil)'}}}" for r in sel.match_expressions) + "}"
    return GoValue(f"v1.LabelSelector{{MatchLabels:{labels}, MatchExpressions:{exprs}}}")


def validate_label_selector(sel: o.LabelSelector | None, path: str) -> list[FieldProblem]:
    """metav1 ValidateLabelSelector (label values strictly checked)."""
    if sel is None:
        return []
    errs = validate_labels(sel.match_labels, f"{path}.matchLabels")
    for i, req in enumerate(sel.match_expressions):
        rp = f"{path}.matchExpressions[{i}]"
        if req.operator in ("In", "NotIn"):
            if not req.values:
                errs.append(required(f"{rp}.values", "must be specified when `operator` is 'In' or 'NotIn'"))
        elif req.operator in ("Exists", "DoesNotExist"):
            if req.values:
                errs.append(forbidden(f"{rp}.values",
                                      "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"))
        else:
            errs.append(invalid(f"{rp}.operator", req.operator, "not a valid selector operator"))
        errs += _invalid_each(f"{rp}.key", req.key, is_qualified_name(req.key))
        for j, value in enumerate(req.values):
            errs += _invalid_each(f"{rp}.values[{j}]", value, is_label_value(value))
    return errs


def _selector_buildable(sel: o.LabelSelector) -> bool:
    """Whether metav1.LabelSelectorAsSelector would succeed."""
    for key, value in sel.match_labels.items():
        if is_qualified_name(key) or is_label_value(value):
            return False
    for req in sel.match_expressions:
        if req.operator not in SELECTOR_OPERATORS or is_qualified_name(req.key):
            return False
        if (req.operator in ("In", "NotIn")) != bool(req.values):
            return False
        if any(is_label_value(v) for v in req.values):
            return False
    return True


_STANDARD_FINALIZERS = {"kubernetes", "orphan", "foregroundDeletion"}


def _finalizer_name(name: str, path: str) -> list[FieldProblem]:
    errs = _invalid_each(path, name, is_qualified_name(name))
    if not errs and "/" not in name and name not in _STANDARD_FINALIZERS:
        errs.append(invalid(path, name, "name is neither a standard finalizer name nor is it fully qualified"))
    return errs


def validate_object_meta(meta: o.ObjectMeta, namespaced: bool, name_fn: NameFn,
                         path: str = "metadata") -> list[FieldProblem]:
    """ValidateObjectMeta; ``generateName`` alone is fine (the server makes the name first)."""
    errs: list[FieldProblem] = []
    if meta.generate_name:
        errs += _invalid_each(f"{path}.generateName", meta.generate_name, name_fn(meta.generate_name, True))
    if not meta.name:
        if not meta.generate_name:
            errs.append(required(f"{path}.name", "name or generateName is required"))
    else:
        errs += _invalid_each(f"{path}.name", meta.name, name_fn(meta.name, False))
    if namespaced:
        if not meta.namespace:
            errs.append(required(f"{path}.namespace"))
        else:
            errs += _invalid_each(f"{path}.namespace", meta.namespace, name_is_dns_label(meta.namespace, False))
    elif meta.namespace:
        errs.append(forbidden(f"{path}.namespace", "not allowed on this type"))
    errs += _nonnegative(f"{path}.generation", meta.generation)
    errs += validate_labels(meta.labels, f"{path}.labels")
    errs += validate_annotations(meta.annotations, f"{path}.annotations")
    for ref in meta.owner_references:
        rp = f"{path}.ownerReferences"
        version = ref.api_version.rpartition("/")[2]
        if not version:
            errs.append(invalid(f"{rp}.apiVersion", ref.api_version, "version must not be empty"))
        if not ref.kind:
            errs.append(invalid(f"{rp}.kind", ref.kind, "must not be empty"))
        if not ref.name:
            errs.append(invalid(f"{rp}.name", ref.name, "must not be empty"))
        if not ref.uid:
            errs.append(invalid(f"{rp}.uid", ref.uid, "must not be empty"))
    if sum(1 for r in meta.owner_references if r.controller) > 1:
        errs.append(invalid(f"{path}.ownerReferences", GoValue("[...]"),
                            "Only one reference can have Controller set to true"))
    for i, fin in enumerate(meta.finalizers):
        errs += _finalizer_name(fin, f"{path}.finalizers[{i}]")
    return errs


# --------------------------------------------------------------------------- services

_SESSION_AFFINITIES = ("ClientIP", "None")
_SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
_PROTOCOLS = ("SCTP", "TCP", "UDP")
_TRAFFIC_POLICIES = ("Cluster", "Local")
_IP_FAMILIES = ("IPv4", "IPv6")
_IP_FAMILY_POLICIES = ("PreferDualStack", "RequireDualStack", "SingleStack")
_TRAFFIC_DISTRIBUTIONS = ("PreferClose", "PreferSameNode", "PreferSameZone")
MAX_CLIENT_IP_TIMEOUT = 86400
LB_SOURCE_RANGES_ANNOTATION = "service.beta.kubernetes.io/load-balancer-source-ranges"


def _cluster_ips(spec: o.ServiceSpec) -> tuple[str, ...]:
    """``clusterIPs``, or ``[clusterIP]`` for an object that was not normalized."""
    return spec.cluster_ips or ((spec.cluster_ip,) if spec.cluster_ip else ())


def is_headless(svc: o.Service) -> bool:
    ips = _cluster_ips(svc.spec)
    return len(ips) == 1 and ips[0] == "None"


def _port_num_or_name(port: o.IntOrString | None, path: str) -> list[FieldProblem]:
    if isinstance(port, str):
        return _invalid_each(path, port, is_valid_port_name(port))
    value = port or 0
    return _invalid_each(path, value, is_valid_port_num(value))


def _service_port(sp: o.ServicePort, require_name: bool, names: set[str], path: str) -> list[FieldProblem]:
    errs: list[FieldProblem] = []
    if require_name and not sp.name:
        errs.append(required(f"{path}.name"))
    elif sp.name:
        errs += _invalid_each(f"{path}.name", sp.name, is_dns1123_label(sp.name))
        if sp.name in names:
            errs.append(duplicate(f"{path}.name", sp.name))
        else:
            names.add(sp.name)
    errs += _invalid_each(f"{path}.port", sp.port, is_valid_port_num(sp.port))
    if not sp.protocol:
        errs.append(required(f"{path}.protocol"))
    elif sp.protocol not in _PROTOCOLS:
        errs.append(not_supported(f"{path}.protocol", sp.protocol, _PROTOCOLS))
    errs += _port_num_or_name(sp.target_port, f"{path}.targetPort")
    if sp.app_protocol is not None:
        errs += _invalid_each(f"{path}.appProtocol", sp.app_protocol, is_qualified_name(sp.app_protocol))
    return errs


def _go_service_port_key(protocol: str, port: int) -> GoValue:
    return GoValue(f'core.ServicePort{{Name:"", Protocol:{go_quote(protocol)}, AppProtocol:(*string)(nil), '
                   f'Port:{port}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:""}}, NodePort:0}}')


def _client_ip_affinity(cfg: o.SessionAffinityConfig | None, path: str) -> list[FieldProblem]:
    detail = "when session affinity type is ClientIP"
    if cfg is None:
        return [required(path, detail)]
    if cfg.client_ip is None:
        return [required(f"{path}.clientIP", detail)]
    timeout = cfg.client_ip.timeout_seconds
    if timeout is None:
        return [required(f"{path}.clientIP.timeoutSeconds", detail)]
    if timeout <= 0 or timeout > MAX_CLIENT_IP_TIMEOUT:
        return [invalid(f"{path}.clientIP.timeoutSeconds", timeout,
                        f"must be greater than 0 and less than {MAX_CLIENT_IP_TIMEOUT}")]
    return []


def _cluster_ips_related(svc: o.Service) -> list[FieldProblem]:
    """ValidateServiceClusterIPsRelatedFields."""
    spec = svc.spec
    if spec.type == "ExternalName":
        return []
    errs: list[FieldProblem] = []
    ips = spec.cluster_ips
    if spec.cluster_ip:
        if not ips:
            errs.append(required("spec.clusterIPs"))
        elif ips[0] != spec.cluster_ip:
            errs.append(invalid("spec.clusterIPs", ips, "first value must match `clusterIP`"))
    elif ips:
        errs.append(invalid("spec.clusterIPs", ips, "must be empty when `clusterIP` is not specified"))
    seen: set[str] = set()
    for i, fam in enumerate(spec.ip_families):
        if fam not in _IP_FAMILIES:
            errs.append(not_supported(f"spec.ipFamilies[{i}]", fam, _IP_FAMILIES))
        if fam in seen:
            errs.append(duplicate(f"spec.ipFamilies[{i}]", fam))
        seen.add(fam)
    if spec.ip_family_policy and spec.ip_family_policy not in _IP_FAMILY_POLICIES:
        errs.append(not_supported("spec.ipFamilyPolicy", spec.ip_family_policy, _IP_FAMILY_POLICIES))
    has_invalid = False
    parsed = []
    for i, ip in enumerate(ips):
        if i == 0 and ip == "None":
            if len(ips) > 1:
                has_invalid = True
                errs.append(invalid("spec.clusterIPs", ips, "'None' must be the first and only value"))
            continue
        bad = is_valid_ip(f"spec.clusterIPs[{i}]", ip)
        has_invalid = has_invalid or bool(bad)
        errs += bad
        if not bad:
            parsed.append(parse_ip_sloppy(ip))
    if len(ips) > 2:
        errs.append(invalid("spec.clusterIPs", ips, "may only hold up to 2 values"))
    if has_invalid:
        return errs
    if len(ips) > 1 and not (len(parsed) == 2 and _is_v4(parsed[0]) != _is_v4(parsed[1])):  # type: ignore[arg-type]
        errs.append(invalid("spec.clusterIPs", ips, "may specify no more than one IP for each IP family"))
    if not is_headless(svc) and ips and spec.ip_families:
        for i, ip in enumerate(ips):
            if i > len(spec.ip_families) - 1:
                break
            v4 = _is_v4(parse_ip_sloppy(ip))  # type: ignore[arg-type]
            if spec.ip_families[i] == "IPv4" and not v4:
                errs.append(invalid(f"spec.clusterIPs[{i}]", ip,
                                    f"expected an IPv4 value as indicated by `ipFamilies[{i}]`"))
            if spec.ip_families[i] == "IPv6" and v4:
                errs.append(invalid(f"spec.clusterIPs[{i}]", ip,
                                    f"expected an IPv6 value as indicated by `ipFamilies[{i}]`"))
    return errs


def _needs_health_check(svc: o.Service) -> bool:
    return svc.spec.type == "LoadBalancer" and svc.spec.external_traffic_policy == "Local"


def validate_service(svc: o.Service) -> list[FieldProblem]:
    spec = svc.spec
    errs = validate_object_meta(svc.metadata, True, name_is_dns1035_label)
    headless = is_headless(svc)

    if not spec.ports and not headless and spec.type != "ExternalName":
        errs.append(required("spec.ports"))
    if spec.type in ("LoadBalancer", "NodePort") and headless:
        errs.append(invalid("spec.clusterIPs[0]", "None",
                            f"may not be set to 'None' for {spec.type} services"))
    elif spec.type == "ExternalName":
        if _cluster_ips(spec):
            errs.append(forbidden("spec.clusterIPs", "may not be set for ExternalName services"))
        if spec.ip_families:
            errs.append(forbidden("spec.ipFamilies", "may not be set for ExternalName services"))
        if spec.ip_family_policy:
            errs.append(forbidden("spec.ipFamilyPolicy", "may not be set for ExternalName services"))
        cname = spec.external_name.removesuffix(".")
        if cname:
            errs += _invalid_each("spec.externalName", cname, is_dns1123_subdomain(cname))
        else:
            errs.append(required("spec.externalName"))

    names: set[str] = set()
    for i, port in enumerate(spec.ports):
        errs += _service_port(port, len(spec.ports) > 1, names, f"spec.ports[{i}]")

    if spec.selector is not None:
        errs += validate_labels(spec.selector, "spec.selector")

    if not spec.session_affinity:
        errs.append(required("spec.sessionAffinity"))
    elif spec.session_affinity not in _SESSION_AFFINITIES:
        errs.append(not_supported("spec.sessionAffinity", spec.session_affinity, _SESSION_AFFINITIES))
    if spec.session_affinity == "ClientIP":
        errs += _client_ip_affinity(spec.session_affinity_config, "spec.sessionAffinityConfig")
    elif spec.session_affinity == "None" and spec.session_affinity_config is not None:
        errs.append(forbidden("spec.sessionAffinityConfig", "must not be set when session affinity is None"))

    errs += _cluster_ips_related(svc)

    for i, ip in enumerate(spec.external_ips):
        bad = is_valid_ip(f"spec.externalIPs[{i}]", ip)
        errs += bad or validate_non_special_ip(f"spec.externalIPs[{i}]", ip)

    if not spec.type:
        errs.append(required("spec.type"))
    elif spec.type not in _SERVICE_TYPES:
        errs.append(not_supported("spec.type", spec.type, _SERVICE_TYPES))

    if spec.type == "ClusterIP":
        for i, port in enumerate(spec.ports):
            if port.node_port:
                errs.append(forbidden(f"spec.ports[{i}].nodePort", "may not be used when `type` is 'ClusterIP'"))

    node_ports: set[tuple[str, int]] = set()
    for i, port in enumerate(spec.ports):
        if not port.node_port:
            continue
        key = (port.protocol, port.node_port)
        if key in node_ports:
            errs.append(duplicate(f"spec.ports[{i}].nodePort", port.node_port))
        node_ports.add(key)

    ports: set[tuple[str, int]] = set()
    for i, port in enumerate(spec.ports):
        key = (port.protocol, port.port)
        if key in ports:
            errs.append(duplicate(f"spec.ports[{i}]", _go_service_port_key(*key)))
        ports.add(key)

    if spec.load_balancer_source_ranges:
        rp = "spec.LoadBalancerSourceRanges"  # sic: Kubernetes spells this path with a capital L
        if spec.type != "LoadBalancer":
            errs.append(forbidden(rp, "may only be used when `type` is 'LoadBalancer'"))
        for i, value in enumerate(spec.load_balancer_source_ranges):
            errs += is_valid_cidr(f"{rp}[{i}]", value.strip())
    elif LB_SOURCE_RANGES_ANNOTATION in svc.metadata.annotations:
        rp = f"metadata.annotations[{LB_SOURCE_RANGES_ANNOTATION}]"
        if spec.type != "LoadBalancer":
            errs.append(forbidden(rp, "may only be used when `type` is 'LoadBalancer'"))
        value = svc.metadata.annotations[LB_SOURCE_RANGES_ANNOTATION].strip()
        for cidr in value.split(",") if value else ():
            errs += is_valid_cidr(rp, cidr.strip())

    if spec.allocate_load_balancer_node_ports is not None and spec.type != "LoadBalancer":
        errs.append(forbidden("spec.allocateLoadBalancerNodePorts", "may only be used when `type` is 'LoadBalancer'"))
    if spec.type == "LoadBalancer" and spec.allocate_load_balancer_node_ports is None:
        errs.append(required("allocateLoadBalancerNodePorts"))  # sic: no "spec." in Kubernetes either

    if spec.type == "LoadBalancer":
        if spec.load_balancer_class is not None:
            errs += _invalid_each("spec.loadBalancerClass", spec.load_balancer_class,
                                  is_qualified_name(spec.load_balancer_class))
    elif spec.load_balancer_class is not None:
        errs.append(forbidden("spec.loadBalancerClass", "may only be used when `type` is 'LoadBalancer'"))

    if not externally_accessible(svc):
        if spec.external_traffic_policy:
            errs.append(invalid("spec.externalTrafficPolicy", spec.external_traffic_policy,
                                "may only be set for externally-accessible services"))
    elif not spec.external_traffic_policy:
        errs.append(required("spec.externalTrafficPolicy"))
    elif spec.external_traffic_policy not in _TRAFFIC_POLICIES:
        errs.append(not_supported("spec.externalTrafficPolicy", spec.external_traffic_policy, _TRAFFIC_POLICIES))
    if not _needs_health_check(svc):
        if spec.health_check_node_port:
            errs.append(invalid("spec.healthCheckNodePort", spec.health_check_node_port,
                                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"))
    elif spec.health_check_node_port:
        errs += _invalid_each("spec.healthCheckNodePort", spec.health_check_node_port,
                              is_valid_port_num(spec.health_check_node_port))

    if not spec.internal_traffic_policy:
        if spec.type in ("NodePort", "LoadBalancer", "ClusterIP"):
            errs.append(required("spec.internalTrafficPolicy"))
    elif spec.internal_traffic_policy not in _TRAFFIC_POLICIES:
        errs.append(not_supported("spec.internalTrafficPolicy", spec.internal_traffic_policy, _TRAFFIC_POLICIES))

    if spec.traffic_distribution is not None and spec.traffic_distribution not in _TRAFFIC_DISTRIBUTIONS:
        errs.append(not_supported("spec.trafficDistribution", spec.traffic_distribution, _TRAFFIC_DISTRIBUTIONS))
    return errs


def service_ip_family_problems(svc: o.Service, cluster_families: Sequence[str]) -> list[FieldProblem]:
    """What the service IP allocator refuses before any validation (``initIPFamilyFields`` in
    ``pkg/registry/core/service/storage/alloc.go``) on a cluster serving ``cluster_families``:
    ``RequireDualStack`` (given, or implied by two families or two cluster IPs) on a
    single-stack cluster, and any family the cluster has no range for (given, or implied by
    the cluster IPs). ExternalName and headless services without a selector are exempt."""
    spec = svc.spec
    if spec.type == "ExternalName" or (spec.cluster_ip == "None" and not spec.selector):
        return []
    cluster_ips = spec.cluster_ips or ((spec.cluster_ip,) if spec.cluster_ip else ())
    policy = spec.ip_family_policy or ("RequireDualStack" if 2 in (len(spec.ip_families), len(cluster_ips)) else "")
    families = list(spec.ip_families)
    if not families and cluster_ips[:1] != ("None",):
        families = [family for family in map(ip_family, cluster_ips) if family]
    problems = []
    if policy == "RequireDualStack" and len(set(cluster_families)) < 2:
        problems.append(invalid("spec.ipFamilyPolicy", policy, "this cluster is not configured for dual-stack services"))
    for index, family in enumerate(families):
        if family not in cluster_families:
            problems.append(invalid(f"spec.ipFamilies[{index}]", family, "not configured on this cluster"))
    return problems


def _service_update(old: o.Service, new: o.Service) -> list[FieldProblem]:
    errs: list[FieldProblem] = []
    if "ExternalName" not in (old.spec.type, new.spec.type):
        errs += _cluster_ips_update(old, new)
        errs += _ip_families_update(old, new)
    if old.spec.type == "LoadBalancer" == new.spec.type and old.spec.load_balancer_class != new.spec.load_balancer_class:
        errs.append(invalid("spec.loadBalancerClass", new.spec.load_balancer_class, "may not change once set"))
    if (_needs_health_check(old) and _needs_health_check(new)
            and (old.spec.health_check_node_port or 0) != (new.spec.health_check_node_port or 0)):
        errs.append(forbidden("spec.healthCheckNodePort", "field is immutable"))
    return errs + validate_service(new)


def _cluster_ips_update(old: o.Service, new: o.Service) -> list[FieldProblem]:
    """validateUpgradeDowngradeClusterIPs: the primary clusterIP never changes."""
    if is_headless(old) and is_headless(new):
        return []
    old_ips, new_ips = old.spec.cluster_ips, new.spec.cluster_ips
    errs = []
    if len(old_ips) == len(new_ips):
        for i, ip in enumerate(old_ips):
            if ip != new_ips[i]:
                errs.append(invalid(f"spec.clusterIPs[{i}]", new_ips, "may not change once set"))
    elif len(old_ips) > len(new_ips):
        if not new_ips:
            errs.append(invalid("spec.clusterIPs[0]", new_ips, "primary clusterIP can not be unset"))
        elif new_ips[0] != old_ips[0]:
            errs.append(invalid("spec.clusterIPs[0]", new_ips, "may not change once set"))
        if len(new_ips) == 1 and new.spec.ip_family_policy != "SingleStack":
            errs.append(invalid("spec.ipFamilyPolicy", new.spec.ip_family_policy or None,
                                "must be set to 'SingleStack' when releasing the secondary clusterIP"))
    elif old_ips and new_ips[0] != old_ips[0]:
        errs.append(invalid("spec.clusterIPs[0]", new_ips, "may not change once set"))
    return errs


def _ip_families_update(old: o.Service, new: o.Service) -> list[FieldProblem]:
    """validateUpgradeDowngradeIPFamilies (its paths always say ipFamilies[0], as Kubernetes does)."""
    if is_headless(old) or is_headless(new):
        return []
    old_f, new_f = old.spec.ip_families, new.spec.ip_families
    errs = []
    if len(old_f) == len(new_f):
        for i, fam in enumerate(old_f):
            if fam != new_f[i]:
                errs.append(invalid("spec.ipFamilies[0]", new_f, "may not change once set"))
    elif len(old_f) > len(new_f):
        if not new.spec.cluster_ips:
            errs.append(invalid("spec.ipFamilies[0]", new_f, "primary ipFamily can not be unset"))
        if new_f and new_f[0] != old_f[0]:
            errs.append(invalid("spec.ipFamilies[0]", new.spec.cluster_ips, "may not change once set"))
        if len(new_f) == 1 and new.spec.ip_family_policy != "SingleStack":
            errs.append(invalid("spec.ipFamilyPolicy", new.spec.ip_family_policy or None,
                                "must be set to 'SingleStack' when releasing the secondary ipFamily"))
    elif old_f and new_f and new_f[0] != old_f[0]:
        errs.append(invalid("spec.ipFamilies[0]", new.spec.cluster_ips, "may not change once set"))
    return errs


def merge_service_allocations(old: o.Service, new: o.Service) -> o.Service:
    """``new`` with the values the server allocated for ``old`` kept where ``new`` leaves them unset.

    This is what makes re-applying an unchanged manifest (without clusterIP or nodePort) succeed,
    as ``patchAllocatedValues`` does in Kubernetes' service registry:

    - clusterIP and clusterIPs are copied when ``new`` has none, unless either side is ExternalName;
    - a port without nodePort gets the nodePort of the old port *with the same name*, unless that
      node port is used explicitly by both old and new (both NodePort or LoadBalancer);
    - healthCheckNodePort is kept while both are LoadBalancer with externalTrafficPolicy Local.

    A ``new`` that names a different clusterIP keeps it, and ``validate_update`` refuses it.
    """
    spec = new.spec
    changes: dict[str, Any] = {}
    if old.spec.type != "ExternalName" and spec.type != "ExternalName":
        if not spec.cluster_ip:
            changes["cluster_ip"] = old.spec.cluster_ip
        if not spec.cluster_ips and old.spec.cluster_ips:
            changes["cluster_ips"] = old.spec.cluster_ips
    node_port_types = ("NodePort", "LoadBalancer")
    if old.spec.type in node_port_types and spec.type in node_port_types:
        used = ({p.node_port for p in old.spec.ports if p.node_port}
                & {p.node_port for p in spec.ports if p.node_port})
        by_name = {p.name: p.node_port for p in old.spec.ports}
        ports = []
        for p in spec.ports:
            old_np = by_name.get(p.name)
            if not p.node_port and old_np and old_np not in used:
                p = evolve(p, node_port=old_np)
            ports.append(p)
        changes["ports"] = tuple(ports)
    if _needs_health_check(old) and _needs_health_check(new) and not spec.health_check_node_port:
        changes["health_check_node_port"] = old.spec.health_check_node_port
    return evolve(new, spec=evolve(spec, **changes)) if changes else new


# --------------------------------------------------------------------------- pods

_RESTART_POLICIES = ("Always", "OnFailure", "Never")
_DNS_POLICIES = ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None")
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_TERMINATION_MESSAGE_POLICIES = ("File", "FallbackToLogsOnError")
_HTTP_SCHEMES = ("HTTP", "HTTPS")
_ENV_FIELD_PATHS = ("metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName",
                    "spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP",
                    "status.podIPs")
# podshelper.ConvertDownwardAPIFieldLabel: what the v1 API can name at all.
_DOWNWARD_API_LABELS = ("metadata.annotations", "metadata.labels", "metadata.name", "metadata.namespace",
                        "metadata.uid", "spec.nodeName", "spec.restartPolicy", "spec.serviceAccountName",
                        "spec.schedulerName", "status.phase", "status.hostIP", "status.hostIPs",
                        "status.podIP", "status.podIPs")
MAX_DNS_NAMESERVERS = 3
MAX_DNS_SEARCH_PATHS = 32
MAX_DNS_SEARCH_CHARS = 2048
UPDATABLE_POD_SPEC_FIELDS = (
    "`spec.containers[*].image`", "`spec.initContainers[*].image`", "`spec.activeDeadlineSeconds`",
    "`spec.tolerations` (only additions to existing tolerations)",
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
)


def split_subscripted_path(field_path: str) -> tuple[str, str, bool]:
    """fieldpath.SplitMaybeSubscriptedPath: ``metadata.labels['app']`` → (``metadata.labels``, ``app``)."""
    if not field_path.endswith("']"):
        return field_path, "", False
    head, sep, sub = field_path[:-2].partition("['")
    if not sep or not head:
        return field_path, "", False
    return head, sub, True


def _object_field_selector(fs: o.ObjectFieldSelector, path: str,
                           expressions: Sequence[str] = _ENV_FIELD_PATHS) -> list[FieldProblem]:
    if not fs.api_version:
        return [required(f"{path}.apiVersion")]
    if not fs.field_path:
        return [required(f"{path}.fieldPath")]
    fp = fs.field_path
    if fs.api_version != "v1":
        return [invalid(f"{path}.fieldPath", fp, f"error converting fieldPath: unsupported pod version: {fs.api_version}")]
    head, sub, subscripted = split_subscripted_path(fp)
    if subscripted:
        if head == "metadata.annotations":
            return _invalid_each(path, sub.lower(), is_qualified_name(sub.lower()))
        if head == "metadata.labels":
            return _invalid_each(path, sub, is_qualified_name(sub))
        return [invalid(f"{path}.fieldPath", fp, f"error converting fieldPath: field label does not support subscript: {fp}")]
    if fp == "spec.host":  # old v1 clients' name for spec.nodeName
        fp = "spec.nodeName"
    if fp not in _DOWNWARD_API_LABELS:
        return [invalid(f"{path}.fieldPath", fp, f"error converting fieldPath: field label not supported: {fp}")]
    if fp not in expressions:
        return [not_supported(f"{path}.fieldPath", fp, expressions)]
    return []


def _key_selector(sel: o.ConfigMapKeySelector | o.SecretKeySelector, path: str) -> list[FieldProblem]:
    """validateConfigMapKeySelector / validateSecretKeySelector."""
    errs = _invalid_each(f"{path}.name", sel.name, name_is_dns_subdomain(sel.name, False))
    if not sel.key:
        errs.append(required(f"{path}.key"))
    else:
        errs += _invalid_each(f"{path}.key", sel.key, is_config_map_key(sel.key))
    return errs


def _env(env: Sequence[o.EnvVar], path: str) -> list[FieldProblem]:
    errs: list[FieldProblem] = []
    for i, ev in enumerate(env):
        ep = f"{path}[{i}]"
        if not ev.name:
            errs.append(required(f"{ep}.name"))
        else:
            errs += _invalid_each(f"{ep}.name", ev.name, is_relaxed_env_var_name(ev.name))
        src = ev.value_from
        if src is None:
            continue
        vp = f"{ep}.valueFrom"
        sources = 0
        if src.field_ref is not None:
            sources += 1
            errs += _object_field_selector(src.field_ref, f"{vp}.fieldRef")
        if src.config_map_key_ref is not None:
            sources += 1
            errs += _key_selector(src.config_map_key_ref, f"{vp}.configMapKeyRef")
        if src.secret_key_ref is not None:
            sources += 1
            errs += _key_selector(src.secret_key_ref, f"{vp}.secretKeyRef")
        sources += sum(1 for k in ("resourceFieldRef", "fileKeyRef") if src.extra.get(k) is not None)
        if sources == 0:
            errs.append(invalid(vp, "", "must specify one of: `fieldRef`, `resourceFieldRef`, "
                                        "`configMapKeyRef` or `secretKeyRef`"))
        elif ev.value:
            errs.append(invalid(vp, "", "may not be specified when `value` is not empty"))
        elif sources > 1:
            errs.append(invalid(vp, "", "may not have more than one field specified at a time"))
    return errs


def _env_from(sources: Sequence[o.EnvFromSource], path: str) -> list[FieldProblem]:
    """ValidateEnvFrom (relaxed variable names, as in 1.33)."""
    errs: list[FieldProblem] = []
    for i, src in enumerate(sources):
        ip = f"{path}[{i}]"
        if src.prefix:
            errs += _invalid_each(f"{ip}.prefix", src.prefix, is_relaxed_env_var_name(src.prefix))
        count = 0
        for ref, name in ((src.config_map_ref, "configMapRef"), (src.secret_ref, "secretRef")):
            if ref is None:
                continue
            count += 1
            if not ref.name:
                errs.append(required(f"{ip}.{name}.name"))
            else:
                errs += _invalid_each(f"{ip}.{name}.name", ref.name, name_is_dns_subdomain(ref.name, True))
        if count == 0:
            errs.append(invalid(path, "", "must specify one of: `configMapRef` or `secretRef`"))
        elif count > 1:
            errs.append(forbidden(path, "may not have more than one field specified at a time"))
    return errs


def _container_ports(ports: Sequence[o.ContainerPort], path: str) -> list[FieldProblem]:
    errs: list[FieldProblem] = []
    names: set[str] = set()
    for i, port in enumerate(ports):
        pp = f"{path}[{i}]"
        if port.name:
            msgs = is_valid_port_name(port.name)
            if msgs:
                errs += _invalid_each(f"{pp}.name", port.name, msgs)
            elif port.name in names:
                errs.append(duplicate(f"{pp}.name", port.name))
            else:
                names.add(port.name)
        if port.container_port == 0:
            errs.append(required(f"{pp}.containerPort"))
        else:
            errs += _invalid_each(f"{pp}.containerPort", port.container_port, is_valid_port_num(port.container_port))
        if port.host_port:
            errs += _invalid_each(f"{pp}.hostPort", port.host_port, is_valid_port_num(port.host_port))
        if not port.protocol:
            errs.append(required(f"{pp}.protocol"))
        elif port.protocol not in _PROTOCOLS:
            errs.append(not_supported(f"{pp}.protocol", port.protocol, _PROTOCOLS))
    return errs


def _handler(probe: o.Probe, path: str) -> list[FieldProblem]:
    errs: list[FieldProblem] = []
    grpc = probe.extra.get("grpc")
    handlers: list[tuple[str, Any]] = [("exec", probe.exec), ("httpGet", probe.http_get),
                                       ("tcpSocket", probe.tcp_socket), ("grpc", grpc)]
    count = 0
    for name, handler in handlers:
        if handler is None:
            continue
        hp = f"{path}.{name}"
        if count:
            errs.append(forbidden(hp, "may not specify more than 1 handler type"))
            continue
        count += 1
        if name == "exec":
            if not handler.command:
                errs.append(required(f"{hp}.command"))
        elif name == "httpGet":
            if not handler.path:
                errs.append(required(f"{hp}.path"))
            errs += _port_num_or_name(handler.port, f"{hp}.port")
            if handler.scheme not in _HTTP_SCHEMES:
                errs.append(not_supported(f"{hp}.scheme", handler.scheme, _HTTP_SCHEMES))
            for header in handler.http_headers:
                errs += _invalid_each(f"{hp}.httpHeaders", header.name, is_http_header_name(header.name))
        elif name == "tcpSocket":
            errs += _port_num_or_name(handler.port, f"{hp}.port")
        elif name == "grpc":
            port = handler.get("port", 0) if isinstance(handler, dict) else 0
            if isinstance(port, int) and not isinstance(port, bool):
                errs += _invalid_each(f"{hp}.port", port, is_valid_port_num(port))
    if count == 0:
        errs.append(required(path, "must specify a handler type"))
    return errs


def _probe(probe: o.Probe | None, kind: str, path: str) -> list[FieldProblem]:
    """validateLivenessProbe / validateReadinessProbe / validateStartupProbe."""
    if probe is None:
        return []
    errs = _handler(probe, path)
    for attr, name in (("initial_delay_seconds", "initialDelaySeconds"), ("timeout_seconds", "timeoutSeconds"),
                       ("period_seconds", "periodSeconds"), ("success_threshold", "successThreshold"),
                       ("failure_threshold", "failureThreshold")):
        errs += _nonnegative(f"{path}.{name}", getattr(probe, attr))
    grace = probe.termination_grace_period_seconds
    if grace is not None and grace <= 0:
        errs.append(invalid(f"{path}.terminationGracePeriodSeconds", grace, "must be greater than 0"))
    if kind in ("liveness", "startup") and probe.success_threshold != 1:
        errs.append(invalid(f"{path}.successThreshold", probe.success_threshold, "must be 1"))
    if kind == "readiness" and grace is not None:
        errs.append(invalid(f"{path}.terminationGracePeriodSeconds", grace, "must not be set for readinessProbes"))
    return errs


def _probes(c: o.Container, path: str) -> list[FieldProblem]:
    return (_probe(c.liveness_probe, "liveness", f"{path}.livenessProbe")
            + _probe(c.readiness_probe, "readiness", f"{path}.readinessProbe")
            + _probe(c.startup_probe, "startup", f"{path}.startupProbe"))


def _container_common(c: o.Container, path: str, volumes: Mapping[str, o.Volume] | None = None) -> list[FieldProblem]:
    errs: list[FieldProblem] = []
    if not c.name:
        errs.append(required(f"{path}.name"))
    else:
        errs += _invalid_each(f"{path}.name", c.name, is_dns1123_label(c.name))
    if not c.image:
        errs.append(required(f"{path}.image"))
    if not c.termination_message_policy:
        errs.append(required(f"{path}.terminationMessagePolicy"))
    elif c.termination_message_policy not in _TERMINATION_MESSAGE_POLICIES:
        errs.append(not_supported(f"{path}.terminationMessagePolicy", c.termination_message_policy,
                                  _TERMINATION_MESSAGE_POLICIES))
    errs += _container_ports(c.ports, f"{path}.ports")
    errs += _env(c.env, f"{path}.env")
    errs += _env_from(c.env_from, f"{path}.envFrom")
    if volumes is not None:
        from .volumes import validate_volume_mounts  # volumes.py imports this module
        errs += validate_volume_mounts(c, volumes, f"{path}.volumeMounts")
    if not c.image_pull_policy:
        errs.append(required(f"{path}.imagePullPolicy"))
    elif c.image_pull_policy not in _PULL_POLICIES:
        errs.append(not_supported(f"{path}.imagePullPolicy", c.image_pull_policy, _PULL_POLICIES))
    return errs


def _host_port_conflicts(containers: Sequence[o.Container], path: str, offset: int = 0) -> list[FieldProblem]:
    errs = []
    seen: set[str] = set()
    for ci, c in enumerate(containers, start=offset):
        for pi, port in enumerate(c.ports):
            if not port.host_port:
                continue
            key = f"{port.protocol}/{port.host_ip}/{port.host_port}"
            if key in seen:
                errs.append(duplicate(f"{path}[{ci}].ports[{pi}].hostPort", key))
            seen.add(key)
    return errs


def _containers(containers: Sequence[o.Container], path: str,
                volumes: Mapping[str, o.Volume] | None = None) -> list[FieldProblem]:
    if not containers:
        return [required(path)]
    errs: list[FieldProblem] = []
    names: set[str] = set()
    for i, c in enumerate(containers):
        cp = f"{path}[{i}]"
        errs += _container_common(c, cp, volumes)
        if c.name in names:
            errs.append(duplicate(f"{cp}.name", c.name))
        else:
            names.add(c.name)
        errs += _probes(c, cp)
        if c.restart_policy:
            errs.append(forbidden(f"{cp}.restartPolicy", "may not be set for non-init containers"))
    return errs + _host_port_conflicts(containers, path)


def _init_containers(inits: Sequence[o.Container], regular: Sequence[o.Container], path: str,
                     volumes: Mapping[str, o.Volume] | None = None) -> list[FieldProblem]:
    errs: list[FieldProblem] = []
    names = {c.name for c in regular}
    for i, c in enumerate(inits):
        cp = f"{path}[{i}]"
        errs += _container_common(c, cp, volumes)
        restart_always = False
        if c.restart_policy:
            if c.restart_policy != "Always":
                errs.append(not_supported(f"{cp}.restartPolicy", c.restart_policy, ("Always",)))
            restart_always = c.restart_policy == "Always"
        if c.name in names:
            errs.append(duplicate(f"{cp}.name", c.name))
        elif c.name:
            names.add(c.name)
        errs += _host_port_conflicts([c], path, offset=i)
        if restart_always:
            errs += _probes(c, cp)
        else:
            why = "may not be set for init containers without restartPolicy=Always"
            if c.extra.get("lifecycle") is not None:
                errs.append(forbidden(f"{cp}.lifecycle", why))
            for probe, name in ((c.liveness_probe, "livenessProbe"), (c.readiness_probe, "readinessProbe"),
                                (c.startup_probe, "startupProbe")):
                if probe is not None:
                    errs.append(forbidden(f"{cp}.{name}", why))
    return errs


def _dns_config(cfg: o.PodDNSConfig | None, policy: str, path: str) -> list[FieldProblem]:
    errs: list[FieldProblem] = []
    if policy == "None":
        if cfg is None:
            return [required(path, "must provide `dnsConfig` when `dnsPolicy` is None")]
        if not cfg.nameservers:
            return [required(f"{path}.nameservers",
                             "must provide at least one DNS nameserver when `dnsPolicy` is None")]
    if cfg is None:
        return errs
    if len(cfg.nameservers) > MAX_DNS_NAMESERVERS:
        errs.append(invalid(f"{path}.nameservers", cfg.nameservers,
                            f"must not have more than {MAX_DNS_NAMESERVERS} nameservers"))
    for i, ns in enumerate(cfg.nameservers):
        errs += is_valid_ip(f"{path}.nameservers[{i}]", ns)
    if len(cfg.searches) > MAX_DNS_SEARCH_PATHS:
        errs.append(invalid(f"{path}.searches", cfg.searches,
                            f"must not have more than {MAX_DNS_SEARCH_PATHS} search paths"))
    if len(" ".join(cfg.searches)) > MAX_DNS_SEARCH_CHARS:
        errs.append(invalid(f"{path}.searches", cfg.searches,
                            f"must not have more than {MAX_DNS_SEARCH_CHARS} characters (including spaces) "
                            "in the search list"))
    for i, search in enumerate(cfg.searches):
        if search != ".":  # RelaxedDNSSearchValidation: "." and underscores are allowed
            trimmed = search.removesuffix(".")
            errs += _invalid_each(f"{path}.searches[{i}]", trimmed, is_dns1123_subdomain_with_underscore(trimmed))
    for i, option in enumerate(cfg.options):
        if not option.name:
            errs.append(required(f"{path}.options[{i}]", "must not be empty"))
    return errs


def validate_pod_spec(spec: o.PodSpec, path: str, *, is_pod: bool) -> list[FieldProblem]:
    """ValidatePodSpec (``is_pod``: a Pod rather than a template, for the hostNetwork port rule)."""
    from .volumes import validate_volumes  # volumes.py imports this module
    volumes, errs = validate_volumes(spec.volumes, f"{path}.volumes")
    errs += _containers(spec.containers, f"{path}.containers", volumes)
    errs += _init_containers(spec.init_containers, spec.containers, f"{path}.initContainers", volumes)
    if spec.host_network:
        for i, c in enumerate(spec.containers):
            for j, port in enumerate(c.ports):
                hp = port.host_port or 0
                if (is_pod or hp) and hp != port.container_port:
                    errs.append(invalid(f"{path}.containers[{i}].ports[{j}].hostPort", hp,
                                        "must match `containerPort` when `hostNetwork` is true"))
    if not spec.restart_policy:
        errs.append(required(f"{path}.restartPolicy"))
    elif spec.restart_policy not in _RESTART_POLICIES:
        errs.append(not_supported(f"{path}.restartPolicy", spec.restart_policy, _RESTART_POLICIES))
    if not spec.dns_policy:
        errs.append(required(f"{path}.dnsPolicy"))
    elif spec.dns_policy not in _DNS_POLICIES:
        errs.append(not_supported(f"{path}.dnsPolicy", spec.dns_policy, _DNS_POLICIES))
    errs += validate_labels(spec.node_selector, f"{path}.nodeSelector")
    errs += validate_tolerations(spec.tolerations, f"{path}.tolerations")
    errs += _dns_config(spec.dns_config, spec.dns_policy, f"{path}.dnsConfig")
    if spec.service_account_name:
        errs += _invalid_each(f"{path}.serviceAccountName", spec.service_account_name,
                              name_is_dns_subdomain(spec.service_account_name))
    if spec.node_name:
        errs += _invalid_each(f"{path}.nodeName", spec.node_name, name_is_dns_subdomain(spec.node_name))
    if spec.active_deadline_seconds is not None and not 1 <= spec.active_deadline_seconds <= MAX_INT32:
        errs.append(invalid(f"{path}.activeDeadlineSeconds", spec.active_deadline_seconds,
                            inclusive_range_error(1, MAX_INT32)))
    if spec.hostname:
        errs += _invalid_each(f"{path}.hostname", spec.hostname, is_dns1123_label(spec.hostname))
    if spec.subdomain:
        errs += _invalid_each(f"{path}.subdomain", spec.subdomain, is_dns1123_label(spec.subdomain))
    return errs


TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_TOLERATION_OPERATORS = ("Equal", "Exists")


def validate_tolerations(tolerations: Sequence[o.Toleration], path: str) -> list[FieldProblem]:
    """ValidateTolerations."""
    errs: list[FieldProblem] = []
    for i, t in enumerate(tolerations):
        tp = f"{path}[{i}]"
        if t.key:
            errs += _invalid_each(f"{tp}.key", t.key, is_qualified_name(t.key))
        if not t.key and t.operator != "Exists":
            errs.append(invalid(f"{tp}.operator", t.operator,
                                'operator must be Exists when `key` is empty, which means "match all values and all keys"'))
        if t.toleration_seconds is not None and t.effect != "NoExecute":
            errs.append(invalid(f"{tp}.effect", t.effect, "effect must be 'NoExecute' when `tolerationSeconds` is set"))
        if t.operator in ("", "Equal"):
            errs += _invalid_each(f"{tp}.operator", t.value, is_label_value(t.value))
        elif t.operator == "Exists":
            if t.value:
                errs.append(invalid(f"{tp}.operator", t.operator, "value must be empty when `operator` is 'Exists'"))
        else:
            errs.append(not_supported(f"{tp}.operator", t.operator, _TOLERATION_OPERATORS))
        if t.effect and t.effect not in TAINT_EFFECTS:
            errs.append(not_supported(f"{tp}.effect", t.effect, TAINT_EFFECTS))
    return errs


def validate_taints(taints: Sequence[o.Taint], path: str) -> list[FieldProblem]:
    """validateNodeTaints: qualified keys, label values, a known effect, each key/effect once."""
    errs: list[FieldProblem] = []
    seen: set[tuple[str, str]] = set()
    for i, t in enumerate(taints):
        tp = f"{path}[{i}]"
        errs += _invalid_each(f"{tp}.key", t.key, is_qualified_name(t.key))
        if t.value:
            errs += _invalid_each(f"{tp}.value", t.value, is_label_value(t.value))
        if not t.effect:
            errs.append(required(f"{tp}.effect"))
        elif t.effect not in TAINT_EFFECTS:
            errs.append(not_supported(f"{tp}.effect", t.effect, TAINT_EFFECTS))
        if (t.key, t.effect) in seen:
            errs.append(duplicate(tp, GoValue(f"core.Taint{{Key:{go_quote(t.key)}, Value:{go_quote(t.value)}, "
                                              f"Effect:{go_quote(t.effect)}, TimeAdded:<nil>}}")))
        seen.add((t.key, t.effect))
    return errs


def _image_whitespace(containers: Sequence[o.Container], path: str) -> list[FieldProblem]:
    return [invalid(f"{path}[{i}].image", c.image, "must not have leading or trailing whitespace")
            for i, c in enumerate(containers) if c.image != c.image.strip()]


def validate_pod(pod: o.Pod) -> list[FieldProblem]:
    errs = validate_object_meta(pod.metadata, True, name_is_dns_subdomain)
    errs += validate_pod_spec(pod.spec, "spec", is_pod=True)
    errs += _image_whitespace(pod.spec.containers, "spec.containers")
    errs += _image_whitespace(pod.spec.init_containers, "spec.initContainers")
    return errs


def _spec_diff(old: Any, new: Any) -> str:
    a = json.dumps(to_dict(old), indent=1, sort_keys=True).splitlines()
    b = json.dumps(to_dict(new), indent=1, sort_keys=True).splitlines()
    return "\n".join(line for line in difflib.unified_diff(a, b, "old", "new", n=1, lineterm="")
                     if not line.startswith(("---", "+++")))


def _pod_update(old: o.Pod, new: o.Pod) -> list[FieldProblem]:
    """ValidatePodUpdate: only images, activeDeadlineSeconds and tolerations may change."""
    errs = validate_pod(new)
    for attr, name in (("containers", "containers"), ("init_containers", "initContainers")):
        new_cs, old_cs = getattr(new.spec, attr), getattr(old.spec, attr)
        if len(new_cs) != len(old_cs):
            errs.append(forbidden(f"spec.{name}", "pod updates may not add or remove containers"))
            return errs
        for i, c in enumerate(new_cs):
            if not c.image:
                errs.append(required(f"spec.{name}[{i}].image"))
    new_ads, old_ads = new.spec.active_deadline_seconds, old.spec.active_deadline_seconds
    if new_ads is not None:
        if not 0 <= new_ads <= MAX_INT32:
            errs.append(invalid("spec.activeDeadlineSeconds", new_ads, inclusive_range_error(0, MAX_INT32)))
            return errs
        if old_ads is not None and old_ads < new_ads:
            errs.append(invalid("spec.activeDeadlineSeconds", new_ads, "must be less than or equal to previous value"))
            return errs
    elif old_ads is not None:
        errs.append(invalid("spec.activeDeadlineSeconds", None, "must not update from a positive integer to nil value"))
    munged = evolve(
        new.spec,
        containers=tuple(evolve(c, image=oc.image) for c, oc in zip(new.spec.containers, old.spec.containers, strict=False)),
        init_containers=tuple(evolve(c, image=oc.image)
                              for c, oc in zip(new.spec.init_containers, old.spec.init_containers, strict=False)),
        active_deadline_seconds=old_ads,
        tolerations=old.spec.tolerations,
    )
    if to_dict(munged) != to_dict(old.spec):
        errs.append(forbidden("spec", "pod updates may not change fields other than "
                              + ",".join(UPDATABLE_POD_SPEC_FIELDS) + "\n" + _spec_diff(old.spec, munged)))
    return errs


# --------------------------------------------------------------------------- deployments


def _go_int_or_string(v: o.IntOrString | None) -> GoValue:
    return GoValue("0" if v is None else str(v))


def _int_or_percent_value(v: o.IntOrString | None) -> tuple[int, bool]:
    if isinstance(v, str):
        if is_valid_percent(v):
            return 0, False
        return int(v[:-1]), True
    return (v or 0), False


def _positive_int_or_percent(v: o.IntOrString | None, path: str) -> list[FieldProblem]:
    if isinstance(v, str):
        return _invalid_each(path, _go_int_or_string(v), is_valid_percent(v))
    return _nonnegative(path, v)


def _strategy(strategy: o.DeploymentStrategy | None, path: str) -> list[FieldProblem]:
    strategy = strategy or o.DeploymentStrategy(type="")
    ru = strategy.rolling_update
    if strategy.type == "Recreate":
        if ru is not None:
            return [forbidden(f"{path}.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'")]
        return []
    if strategy.type == "RollingUpdate":
        if ru is None:
            return [required(f"{path}.rollingUpdate", "this should be defaulted and never be nil")]
        rp = f"{path}.rollingUpdate"
        errs = _positive_int_or_percent(ru.max_unavailable, f"{rp}.maxUnavailable")
        errs += _positive_int_or_percent(ru.max_surge, f"{rp}.maxSurge")
        if _int_or_percent_value(ru.max_unavailable)[0] == 0 and _int_or_percent_value(ru.max_surge)[0] == 0:
            errs.append(invalid(f"{rp}.maxUnavailable", _go_int_or_string(ru.max_unavailable),
                                "may not be 0 when `maxSurge` is 0"))
        value, is_percent = _int_or_percent_value(ru.max_unavailable)
        if is_percent and value > 100:
            errs.append(invalid(f"{rp}.maxUnavailable", _go_int_or_string(ru.max_unavailable),
                                "must not be greater than 100%"))
        return errs
    ru_repr = "(*apps.RollingUpdateDeployment)(nil)" if ru is None else "&apps.RollingUpdateDeployment{...}"
    value = GoValue(f"apps.DeploymentStrategy{{Type:{go_quote(strategy.type)}, RollingUpdate:{ru_repr}}}")
    return [not_supported(path, value, ("Recreate", "RollingUpdate"))]


def validate_pod_template(template: o.PodTemplateSpec, path: str) -> list[FieldProblem]:
    """ValidatePodTemplateSpec (labels are reported at ``<path>.labels``, as Kubernetes does)."""
    errs = validate_labels(template.metadata.labels, f"{path}.labels")
    errs += validate_annotations(template.metadata.annotations, f"{path}.annotations")
    errs += validate_pod_spec(template.spec, f"{path}.spec", is_pod=False)
    if template.spec.extra.get("ephemeralContainers"):
        errs.append(forbidden(f"{path}.spec.ephemeralContainers", "ephemeral containers not allowed in pod template"))
    return errs


def validate_deployment(d: o.Deployment) -> list[FieldProblem]:
    spec = d.spec
    errs = validate_object_meta(d.metadata, True, name_is_dns_subdomain)
    errs += _nonnegative("spec.replicas", spec.replicas)
    errs += _selector_and_template(spec.selector, spec.template)
    errs += _strategy(spec.strategy, "spec.strategy")
    errs += _nonnegative("spec.minReadySeconds", spec.min_ready_seconds)
    errs += _nonnegative("spec.revisionHistoryLimit", spec.revision_history_limit)
    if spec.progress_deadline_seconds is not None:
        errs += _nonnegative("spec.progressDeadlineSeconds", spec.progress_deadline_seconds)
        if spec.progress_deadline_seconds <= spec.min_ready_seconds:
            errs.append(invalid("spec.progressDeadlineSeconds", spec.progress_deadline_seconds,
                                "must be greater than minReadySeconds"))
    return errs


def validate_replica_set(rs: o.ReplicaSet) -> list[FieldProblem]:
    """ValidateReplicaSet: ValidateReplicaSetSpec, whose selector and template rules a
    Deployment's spec shares (Kubernetes' message says "for deployment" here too)."""
    spec = rs.spec
    errs = validate_object_meta(rs.metadata, True, name_is_dns_subdomain)
    errs += _nonnegative("spec.replicas", spec.replicas)
    errs += _nonnegative("spec.minReadySeconds", spec.min_ready_seconds)
    errs += _selector_and_template(spec.selector, spec.template)
    return errs


def _replica_set_update(old: o.ReplicaSet, new: o.ReplicaSet) -> list[FieldProblem]:
    errs = validate_replica_set(new)
    if new.spec.selector != old.spec.selector:
        value = go_label_selector(new.spec.selector) if new.spec.selector is not None else None
        errs.append(invalid("spec.selector", value, "field is immutable"))
    return errs


def _selector_and_template(selector: o.LabelSelector | None, template: o.PodTemplateSpec) -> list[FieldProblem]:
    """The selector and pod template rules of ValidateDeploymentSpec and ValidateReplicaSetSpec
    (ValidatePodTemplateSpecForReplicaSet)."""
    errs: list[FieldProblem] = []
    if selector is None:
        errs.append(required("spec.selector"))
    else:
        errs += validate_label_selector(selector, "spec.selector")
        if not selector.match_labels and not selector.match_expressions:
            errs.append(invalid("spec.selector", go_label_selector(selector), "empty selector is invalid for deployment"))
    if selector is not None and not _selector_buildable(selector):
        errs.append(invalid("spec.selector", go_label_selector(selector), "invalid label selector"))
    else:
        # A missing selector matches nothing (so the template never matches); an empty one matches
        # everything and is not compared.
        empty = selector is not None and not selector.match_labels and not selector.match_expressions
        if not empty and not selector_matches(selector, template.metadata.labels):
            errs.append(invalid("spec.template.metadata.labels", template.metadata.labels,
                                "`selector` does not match template `labels`"))
        errs += validate_pod_template(template, "spec.template")
        if template.spec.restart_policy != "Always":
            errs.append(not_supported("spec.template.spec.restartPolicy", template.spec.restart_policy, ("Always",)))
        if template.spec.active_deadline_seconds is not None:
            errs.append(invalid("spec.template.spec.activeDeadlineSeconds", template.spec.active_deadline_seconds,
                                "activeDeadlineSeconds in ReplicaSet is not Supported"))
    return errs


def _deployment_update(old: o.Deployment, new: o.Deployment) -> list[FieldProblem]:
    errs = validate_deployment(new)
    if new.spec.selector != old.spec.selector:
        value = go_label_selector(new.spec.selector) if new.spec.selector is not None else None
        errs.append(invalid("spec.selector", value, "field is immutable"))
    return errs


# --------------------------------------------------------------------------- daemon sets

_DAEMON_SET_STRATEGIES = ("RollingUpdate", "OnDelete")


def _go_daemon_set_strategy(strategy: o.DaemonSetUpdateStrategy) -> GoValue:
    ru = strategy.rolling_update
    ru_repr = "(*apps.RollingUpdateDaemonSet)(nil)" if ru is None else "&apps.RollingUpdateDaemonSet{...}"
    return GoValue(f"apps.DaemonSetUpdateStrategy{{Type:{go_quote(strategy.type)}, RollingUpdate:{ru_repr}}}")


def _daemon_set_update_strategy(strategy: o.DaemonSetUpdateStrategy, path: str) -> list[FieldProblem]:
    """ValidateDaemonSetUpdateStrategy and ValidateRollingUpdateDaemonSet."""
    if strategy.type == "OnDelete":
        return []
    if strategy.type != "RollingUpdate":
        return [not_supported(path, _go_daemon_set_strategy(strategy), _DAEMON_SET_STRATEGIES)]
    ru = strategy.rolling_update
    if ru is None:
        return [required(f"{path}.rollingUpdate")]
    rp = f"{path}.rollingUpdate"
    errs: list[FieldProblem] = []
    for name, value in (("maxUnavailable", ru.max_unavailable), ("maxSurge", ru.max_surge)):
        errs += _positive_int_or_percent(value, f"{rp}.{name}")
    for name, value in (("maxUnavailable", ru.max_unavailable), ("maxSurge", ru.max_surge)):
        number, is_percent = _int_or_percent_value(value)
        if is_percent and number > 100:
            errs.append(invalid(f"{rp}.{name}", _go_int_or_string(value), "must not be greater than 100%"))
    has_unavailable = _int_or_percent_value(ru.max_unavailable)[0] != 0
    has_surge = _int_or_percent_value(ru.max_surge)[0] != 0
    if has_unavailable and has_surge:
        errs.append(invalid(f"{rp}.maxSurge", _go_int_or_string(ru.max_surge),
                            "may not be set when maxUnavailable is non-zero"))
    elif not has_unavailable and not has_surge:
        errs.append(required(f"{rp}.maxUnavailable", "cannot be 0 when maxSurge is 0"))
    return errs


def validate_daemon_set(ds: o.DaemonSet) -> list[FieldProblem]:
    """ValidateDaemonSet: ValidateDaemonSetSpec (a missing selector is required, as apps/v1 makes it)."""
    spec = ds.spec
    errs = validate_object_meta(ds.metadata, True, name_is_dns_subdomain)
    selector = spec.selector
    if selector is None:
        errs.append(required("spec.selector"))
    else:
        errs += validate_label_selector(selector, "spec.selector")
    buildable = selector is not None and _selector_buildable(selector)
    if selector is None or (buildable and not selector_matches(selector, spec.template.metadata.labels)):
        errs.append(invalid("spec.template.metadata.labels", spec.template.metadata.labels,
                            "`selector` does not match template `labels`"))
    if selector is not None and not selector.match_labels and not selector.match_expressions:
        errs.append(invalid("spec.selector", go_label_selector(selector), "empty selector is invalid for daemonset"))
    errs += validate_pod_template(spec.template, "spec.template")
    if spec.template.spec.restart_policy != "Always":
        errs.append(not_supported("spec.template.spec.restartPolicy", spec.template.spec.restart_policy, ("Always",)))
    if spec.template.spec.active_deadline_seconds is not None:
        errs.append(forbidden("spec.template.spec.activeDeadlineSeconds",
                              "activeDeadlineSeconds in DaemonSet is not Supported"))
    errs += _nonnegative("spec.minReadySeconds", spec.min_ready_seconds)
    errs += _daemon_set_update_strategy(spec.update_strategy, "spec.updateStrategy")
    errs += _nonnegative("spec.revisionHistoryLimit", spec.revision_history_limit)
    return errs


def _daemon_set_update(old: o.DaemonSet, new: o.DaemonSet) -> list[FieldProblem]:
    errs = validate_daemon_set(new)
    if new.spec.selector != old.spec.selector:
        value = go_label_selector(new.spec.selector) if new.spec.selector is not None else None
        errs.append(invalid("spec.selector", value, "field is immutable"))
    return errs


# --------------------------------------------------------------------------- stateful sets

_POD_MANAGEMENT_POLICIES = ("OrderedReady", "Parallel")
_PVC_RETENTION_POLICIES = ("Retain", "Delete")
STATEFUL_SET_UPDATABLE = ("replicas", "ordinals", "template", "updateStrategy",
                          "persistentVolumeClaimRetentionPolicy", "minReadySeconds")


def _go_rolling_update_sts(ru: o.RollingUpdateStatefulSetStrategy) -> GoValue:
    max_unavailable = ("(*intstr.IntOrString)(nil)" if ru.max_unavailable is None
                       else f"&intstr.IntOrString{{{_go_int_or_string(ru.max_unavailable)}}}")
    return GoValue(f"&apps.RollingUpdateStatefulSetStrategy{{Partition:{ru.partition or 0}, "
                   f"MaxUnavailable:{max_unavailable}}}")


def _sts_update_strategy(strategy: o.StatefulSetUpdateStrategy, path: str) -> list[FieldProblem]:
    ru = strategy.rolling_update
    if not strategy.type:
        return [required(path)]
    if strategy.type == "OnDelete":
        if ru is not None:
            return [invalid(f"{path}.rollingUpdate", _go_rolling_update_sts(ru),
                            "only allowed for updateStrategy 'RollingUpdate'")]
        return []
    if strategy.type == "RollingUpdate":
        if ru is None:
            return []
        rp = f"{path}.rollingUpdate"
        errs = _nonnegative(f"{rp}.partition", ru.partition)
        if ru.max_unavailable is not None:
            mp = f"{rp}.maxUnavailable"
            errs += _positive_int_or_percent(ru.max_unavailable, mp)
            value, is_percent = _int_or_percent_value(ru.max_unavailable)
            if value == 0:
                errs.append(invalid(mp, _go_int_or_string(ru.max_unavailable), "cannot be 0"))
            if is_percent and value > 100:
                errs.append(invalid(mp, _go_int_or_string(ru.max_unavailable), "must not be greater than 100%"))
        return errs
    ru_repr = "(*apps.RollingUpdateStatefulSetStrategy)(nil)" if ru is None else _go_rolling_update_sts(ru)
    value = GoValue(f"apps.StatefulSetUpdateStrategy{{Type:{go_quote(strategy.type)}, RollingUpdate:{ru_repr}}}")
    return [invalid(path, value, "must be 'RollingUpdate' or 'OnDelete'")]


def validate_stateful_set(sts: o.StatefulSet) -> list[FieldProblem]:
    """ValidateStatefulSet (names are DNS labels: they become pod hostnames).

    Unlike Kubernetes (which leaves the template's pod spec unchecked and then fails to create
    each pod), the pod template is validated like a Deployment's, so a bad template is refused
    at apply time with its ``spec.template.spec...`` path.
    """
    spec = sts.spec
    errs = validate_object_meta(sts.metadata, True, name_is_dns_label)
    policy = spec.pod_management_policy
    if not policy:
        errs.append(required("spec.podManagementPolicy"))
    elif policy not in _POD_MANAGEMENT_POLICIES:
        errs.append(invalid("spec.podManagementPolicy", policy, "must be 'OrderedReady' or 'Parallel'"))
    errs += _sts_update_strategy(spec.update_strategy, "spec.updateStrategy")
    retention = spec.persistent_volume_claim_retention_policy
    if retention is not None:
        for attr, name in (("when_deleted", "whenDeleted"), ("when_scaled", "whenScaled")):
            value = getattr(retention, attr)
            if value not in _PVC_RETENTION_POLICIES:
                errs.append(not_supported(f"spec.persistentVolumeClaimRetentionPolicy.{name}", value,
                                          _PVC_RETENTION_POLICIES))
    errs += _nonnegative("spec.replicas", spec.replicas)
    errs += _nonnegative("spec.minReadySeconds", spec.min_ready_seconds)
    if spec.ordinals is not None:
        errs += _nonnegative("spec.ordinals.start", spec.ordinals.start)
    selector = spec.selector
    if selector is None:
        errs.append(required("spec.selector"))
    else:
        errs += validate_label_selector(selector, "spec.selector")
        if not selector.match_labels and not selector.match_expressions:
            errs.append(invalid("spec.selector", go_label_selector(selector),
                                "empty selector is invalid for statefulset"))
    template = spec.template
    if selector is not None and not _selector_buildable(selector):
        errs.append(invalid("spec.selector", go_label_selector(selector), ""))
    else:
        empty = selector is not None and not selector.match_labels and not selector.match_expressions
        if not empty and not selector_matches(selector, template.metadata.labels):
            errs.append(invalid("spec.template.metadata.labels", template.metadata.labels,
                                "`selector` does not match template `labels`"))
        from .volumes import with_claim_volumes  # volumes.py imports this module
        claims = with_claim_volumes(template.spec, spec.extra.get("volumeClaimTemplates"), sts.metadata.name, None)
        errs += validate_pod_template(evolve(template, spec=claims), "spec.template")  # mounts may name claims
    if template.spec.restart_policy != "Always":
        errs.append(not_supported("spec.template.spec.restartPolicy", template.spec.restart_policy, ("Always",)))
    if template.spec.active_deadline_seconds is not None:
        errs.append(forbidden("spec.template.spec.activeDeadlineSeconds",
                              "activeDeadlineSeconds in StatefulSet is not Supported"))
    return errs


def _stateful_set_update(old: o.StatefulSet, new: o.StatefulSet) -> list[FieldProblem]:
    """ValidateStatefulSetUpdate: only the fields in STATEFUL_SET_UPDATABLE may change."""
    errs = validate_stateful_set(new)
    kept = evolve(new.spec, replicas=old.spec.replicas, template=old.spec.template,
                   update_strategy=old.spec.update_strategy, min_ready_seconds=old.spec.min_ready_seconds,
                   ordinals=old.spec.ordinals,
                   persistent_volume_claim_retention_policy=old.spec.persistent_volume_claim_retention_policy)
    if to_dict(kept) != to_dict(old.spec):
        names = ", ".join(f"'{n}'" for n in STATEFUL_SET_UPDATABLE[:-1])
        errs.append(forbidden("spec", f"updates to statefulset spec for fields other than {names} and "
                                      f"'{STATEFUL_SET_UPDATABLE[-1]}' are forbidden"))
    return errs


# --------------------------------------------------------------------------- endpoint slices, namespaces, nodes

_ADDRESS_TYPES = ("FQDN", "IPv4", "IPv6")


def _fqdn(path: str, name: str) -> list[FieldProblem]:
    """IsFullyQualifiedDomainName."""
    if not name:
        return [required(path)]
    name = name.removesuffix(".")
    msgs = is_dns1123_subdomain(name)
    if msgs:
        return [invalid(path, name, ",".join(msgs))]
    labels = name.split(".")
    if len(labels) < 2:
        return [invalid(path, name, "should be a domain with at least two segments separated by dots")]
    for label in labels:
        msgs = is_dns1123_label(label)
        if msgs:
            return [invalid(path, label, ",".join(msgs))]
    return []


def validate_endpoint_slice(es: o.EndpointSlice) -> list[FieldProblem]:
    errs = validate_object_meta(es.metadata, True, name_is_dns_subdomain)
    if not es.address_type:
        errs.append(required("addressType"))
    elif es.address_type not in _ADDRESS_TYPES:
        errs.append(not_supported("addressType", es.address_type, _ADDRESS_TYPES))
    if len(es.endpoints) > 1000:
        errs.append(FieldProblem("endpoints", f"Too many: {len(es.endpoints)}: must have at most 1000 items"))
    else:
        for i, ep in enumerate(es.endpoints):
            ap = f"endpoints[{i}].addresses"
            if not ep.addresses:
                errs.append(required(ap, "must contain at least 1 address"))
            elif len(ep.addresses) > 100:
                errs.append(FieldProblem(ap, f"Too many: {len(ep.addresses)}: must have at most 100 items"))
            for j, addr in enumerate(ep.addresses):
                if es.address_type == "IPv4":
                    errs += is_valid_ipv4(f"{ap}[{j}]", addr)
                elif es.address_type == "IPv6":
                    errs += is_valid_ipv6(f"{ap}[{j}]", addr)
                elif es.address_type == "FQDN":
                    errs += _fqdn(f"{ap}[{j}]", addr)
            if ep.node_name is not None:
                errs += _invalid_each(f"endpoints[{i}].nodeName", ep.node_name, name_is_dns_subdomain(ep.node_name))
            if ep.hostname is not None:
                errs += _invalid_each(f"endpoints[{i}].hostname", ep.hostname, is_dns1123_label(ep.hostname))
    names: set[str] = set()
    for i, port in enumerate(es.ports):
        pp = f"ports[{i}]"
        name = port.name or ""
        if name:
            errs += _invalid_each(f"{pp}.name", name, is_dns1123_label(name))
        if name in names:
            errs.append(duplicate(f"{pp}.name", name))
        names.add(name)
        if port.protocol is None:
            errs.append(required(f"{pp}.protocol"))
        elif port.protocol not in _PROTOCOLS:
            errs.append(not_supported(f"{pp}.protocol", port.protocol, _PROTOCOLS))
        if port.app_protocol is not None:
            errs += _invalid_each(f"{pp}.appProtocol", port.app_protocol, is_qualified_name(port.app_protocol))
    return errs


def validate_namespace(ns: o.Namespace) -> list[FieldProblem]:
    errs = validate_object_meta(ns.metadata, False, name_is_dns_label)
    for fin in ns.spec.finalizers:
        errs += _finalizer_name(fin, "spec.finalizers")
    return errs


def validate_node(node: o.Node) -> list[FieldProblem]:
    errs = validate_object_meta(node.metadata, False, name_is_dns_subdomain)
    for i, cidr in enumerate(node.spec.pod_cidrs):
        errs += is_valid_cidr(f"spec.podCIDRs[{i}]", cidr)
    errs += validate_taints(node.spec.taints, "spec.taints")
    return errs


# --------------------------------------------------------------------------- config maps, secrets

MAX_SECRET_SIZE = 1024 * 1024  # core.MaxSecretSize, also the limit of a ConfigMap
SERVICE_ACCOUNT_NAME_KEY = "kubernetes.io/service-account.name"
REDACTED = GoValue('"<secret contents redacted>"')
IMMUTABLE_SET = "field is immutable when `immutable` is set"


def base64_error(text: str) -> str | None:
    """Go's base64.StdEncoding error for ``text`` (CR and LF skipped), or None when it decodes."""
    if go_b64decode(text) is not None:
        return None
    stripped = text.replace("\r", "").replace("\n", "")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    body = stripped.rstrip("=")
    bad = next((i for i, ch in enumerate(body) if ch not in alphabet), None)
    if bad is None:  # an incomplete last quantum, or wrong padding
        bad = len(body) - len(body) % 4
    return f"illegal base64 data at input byte {bad}"


def decoded(text: str) -> bytes:
    """The bytes of a valid base64 value (``data`` of a Secret, ``binaryData`` of a ConfigMap)."""
    return go_b64decode(text) or b""


def base64_problems(obj: Any) -> list[FieldProblem]:
    """Values the API server's decoder refuses before validation (400 BadRequest), e.g. ``Secret in
    version "v1" cannot be handled as a Secret: illegal base64 data at input byte 4``."""
    values = obj.data if isinstance(obj, o.Secret) else obj.binary_data if isinstance(obj, o.ConfigMap) else {}
    for value in values.values():
        error = base64_error(value)
        if error:
            return [FieldProblem("", f'{obj.KIND} in version "v1" cannot be handled as a {obj.KIND}: {error}')]
    return []


_GO_JSON_CONTEXT = {
    "Expecting value": "looking for beginning of value",
    "Expecting property name enclosed in double quotes": "looking for beginning of object key string",
    "Expecting ':' delimiter": "after object key",
    "Expecting ',' delimiter": "after object key:value pair",
    "Extra data": "after top-level value",
}


def _go_json_error(raw: bytes) -> str | None:
    """Why Go's json.Unmarshal into a map[string]interface{} refuses ``raw`` (None: it does not);
    Go's wording for the common cases, Python's otherwise."""
    try:
        value = json.loads(raw.decode("utf-8", "replace"))
    except json.JSONDecodeError as exc:
        if exc.pos >= len(exc.doc.rstrip()):
            return "unexpected end of JSON input"
        ch = exc.doc[exc.pos]
        shown = "'\\''" if ch == "'" else f"'{ch}'" if ch.isprintable() else go_quote(ch).replace('"', "'")
        return f"invalid character {shown} {_GO_JSON_CONTEXT.get(exc.msg, exc.msg)}"
    if isinstance(value, dict) or value is None:
        return None
    kind = {list: "array", str: "string", bool: "bool", int: "number", float: "number"}[type(value)]
    return f"json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}"


def _data_keys(keys: Iterable[str], path: str) -> list[FieldProblem]:
    errs: list[FieldProblem] = []
    for key in sorted(keys):
        errs += _invalid_each(f"{path}[{key}]", key, is_config_map_key(key))
    return errs


def validate_config_map(cm: o.ConfigMap) -> list[FieldProblem]:
    """ValidateConfigMap (key order: sorted; Go ranges over the maps in random order)."""
    errs = validate_object_meta(cm.metadata, True, name_is_dns_subdomain)
    errs += _data_keys(cm.data, "data")
    for key in sorted(cm.data):
        if key in cm.binary_data:
            errs.append(invalid(f"data[{key}]", key, "duplicate of key present in binaryData"))
    errs += _data_keys(cm.binary_data, "binaryData")
    size = sum(len(v.encode()) for v in cm.data.values()) + sum(len(decoded(v)) for v in cm.binary_data.values())
    if size > MAX_SECRET_SIZE:
        errs.append(too_long("[]", MAX_SECRET_SIZE))  # Kubernetes names the whole object: field.NewPath("")
    return errs


def _secret_type_problems(secret: o.Secret) -> list[FieldProblem]:
    data, kind = secret.data, secret.type
    if kind == "kubernetes.io/service-account-token":
        if not secret.metadata.annotations.get(SERVICE_ACCOUNT_NAME_KEY):
            return [required(f"metadata.annotations[{SERVICE_ACCOUNT_NAME_KEY}]")]
    elif kind in ("kubernetes.io/dockercfg", "kubernetes.io/dockerconfigjson"):
        key = ".dockercfg" if kind == "kubernetes.io/dockercfg" else ".dockerconfigjson"
        if key not in data:
            return [required(f"data[{key}]")]
        error = _go_json_error(decoded(data[key]))
        if error:
            return [invalid(f"data[{key}]", REDACTED, error)]
    elif kind == "kubernetes.io/basic-auth":
        if "username" not in data and "password" not in data:
            return [required("data[username]"), required("data[password]")]
    elif kind == "kubernetes.io/ssh-auth":
        if not decoded(data.get("ssh-privatekey", "")):
            return [required("data[ssh-privatekey]")]
    elif kind == "kubernetes.io/tls":
        return [required(f"data[{key}]") for key in ("tls.crt", "tls.key") if key not in data]
    return []


def validate_secret(secret: o.Secret) -> list[FieldProblem]:
    """ValidateSecret, on the secret as stored (stringData already merged into data)."""
    errs = validate_object_meta(secret.metadata, True, name_is_dns_subdomain)
    errs += _data_keys(secret.data, "data")
    if sum(len(decoded(v)) for v in secret.data.values()) > MAX_SECRET_SIZE:
        errs.append(too_long("data", MAX_SECRET_SIZE))
    return errs + _secret_type_problems(secret)


def _immutable_update(old: Any, new: Any, fields: Sequence[tuple[str, str]]) -> list[FieldProblem]:
    """Once ``immutable`` is true it stays, and so do the data fields (ValidateConfigMapUpdate,
    ValidateSecretUpdate)."""
    if not old.immutable:
        return []
    errs = [] if new.immutable else [forbidden("immutable", IMMUTABLE_SET)]
    for attr, name in fields:
        if dict(getattr(old, attr)) != dict(getattr(new, attr)):
            errs.append(forbidden(name, IMMUTABLE_SET))
    return errs


def _config_map_update(old: o.ConfigMap, new: o.ConfigMap) -> list[FieldProblem]:
    return _immutable_update(old, new, (("data", "data"), ("binary_data", "binaryData"))) + validate_config_map(new)


def _secret_update(old: o.Secret, new: o.Secret) -> list[FieldProblem]:
    errs = [] if new.type == old.type else [invalid("type", new.type, "field is immutable")]
    return errs + _immutable_update(old, new, (("data", "data"),)) + validate_secret(new)


def validate_event(event: o.Event) -> list[FieldProblem]:
    """ValidateEventCreate for core/v1 events: the name, and an involved object in the event's own
    namespace (cluster-scoped objects' events live in ``default``)."""
    errs = validate_object_meta(event.metadata, True, name_is_dns_subdomain)
    ref_ns = event.involved_object.namespace
    if ref_ns and ref_ns != event.metadata.namespace:
        errs.append(invalid("involvedObject.namespace", ref_ns, "does not match event.namespace"))
    if event.type and event.type not in ("Normal", "Warning"):
        errs.append(FieldProblem("type", f'Unsupported value: "{event.type}": supported values: "Normal", "Warning"'))
    return errs


# --------------------------------------------------------------------------- netemu.dev

_IMPAIRMENT_UNITS = {"delay": "TIME", "jitter": "TIME", "rate": "RATE", "loss": "PERCENT", "reset": "PERCENT",
                     "duplicate": "PERCENT"}


def _setting_problem(what: str, text: str) -> FieldProblem | None:
    from netemu import units
    from netemu.errors import InvalidError
    table = {"TIME": units.TIME_UNITS, "RATE": units.RATE_UNITS, "PERCENT": units.PERCENT_UNITS}
    bare = {"TIME": "ms", "RATE": "bit", "PERCENT": "%"}[_IMPAIRMENT_UNITS[what]]
    try:
        units.parse_quantity(text, table[_IMPAIRMENT_UNITS[what]], bare, what)
    except InvalidError as exc:
        reason = str(exc).split(": ", 2)[-1]
        return FieldProblem(f"spec.{what}", f"Invalid value: {json.dumps(text)}: {reason}")
    return None


def _one_target(choices: tuple[tuple[str, Any], ...]) -> list[FieldProblem]:
    """A netemu.dev target names exactly one of its ``choices`` (the last, ``link``, two different nodes)."""
    errs = []
    named = [n for n, v in choices if v]
    if len(named) != 1:
        *first, last = [n for n, _ in choices]
        errs.append(FieldProblem("spec.target", "Invalid value: " + json.dumps(named) +
                                 f": name exactly one of {', '.join(first)} or {last}"))
    link = choices[-1][1]
    if link and (len(link) != 2 or link[0] == link[1]):
        errs.append(FieldProblem("spec.target.link", f"Invalid value: {json.dumps(list(link))}: "
                                 "must name two different nodes"))
    return errs


def validate_impairment(imp: o.Impairment) -> list[FieldProblem]:
    """One target; settings in tc-netem's units; at least one of them (deleting the object clears)."""
    errs = validate_object_meta(imp.metadata, True, name_is_dns_subdomain)
    target = imp.spec.target
    errs += _one_target((("service", target.service), ("node", target.node), ("link", target.link)))
    settings = {what: getattr(imp.spec, what) for what in _IMPAIRMENT_UNITS}
    for what, text in settings.items():
        problem = _setting_problem(what, text) if text else None
        if problem is not None:
            errs.append(problem)
    if not any(settings.values()):
        errs.append(FieldProblem("spec", "Required value: at least one of delay, jitter, rate, loss, reset or "
                                 "duplicate (delete the Impairment to clear it)"))
    return errs


def validate_partition(part: o.Partition) -> list[FieldProblem]:
    errs = validate_object_meta(part.metadata, False, name_is_dns_subdomain)
    if not part.spec.groups:
        errs.append(FieldProblem("spec.groups", "Required value: at least one group of nodes"))
    seen: dict[str, int] = {}
    for i, group in enumerate(part.spec.groups):
        if not group.nodes:
            errs.append(FieldProblem(f"spec.groups[{i}].nodes", "Required value: at least one node"))
        for j, node in enumerate(group.nodes):
            if node in seen:
                errs.append(FieldProblem(f"spec.groups[{i}].nodes[{j}]", f"Duplicate value: {json.dumps(node)}: "
                                         f"already in spec.groups[{seen[node]}] (a node is in one group)"))
            seen.setdefault(node, i)
    return errs


def validate_capture(cap: o.Capture) -> list[FieldProblem]:
    """One target (a pod, a node, or a link of two different nodes); ``count`` not negative."""
    errs = validate_object_meta(cap.metadata, True, name_is_dns_subdomain)
    target = cap.spec.target
    errs += _one_target((("pod", target.pod), ("node", target.node), ("link", target.link)))
    if cap.spec.count < 0:
        errs.append(FieldProblem("spec.count", f"Invalid value: {cap.spec.count}: must be greater than or equal to 0"))
    return errs


def validate_service_account(sa: o.ServiceAccount) -> list[FieldProblem]:
    """ValidateServiceAccount: the metadata (a DNS subdomain name) is all Kubernetes checks."""
    return validate_object_meta(sa.metadata, True, name_is_dns_subdomain)


# --------------------------------------------------------------------------- kinds stored, not emulated


def _path_segment_name(name: str, prefix: bool = False) -> list[str]:
    """ValidatePathSegmentName, the rule for RBAC names (``system:controller:x`` is valid)."""
    if prefix:
        return [f"may not contain '{c}'" for c in ("/", "%") if c in name]
    if name in (".", ".."):
        return [f"may not be '{name}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in name]


def validate_stored_only(obj: Any) -> list[FieldProblem]:
    """Metadata only: netemu keeps the rest as given (``objects.STORED_ONLY``)."""
    rbac = obj.api_version.startswith("rbac.authorization.k8s.io/")
    return validate_object_meta(obj.metadata, obj.NAMESPACED, _path_segment_name if rbac else name_is_dns_subdomain)


# --------------------------------------------------------------------------- entry points


def _ingress_rules() -> Any:
    """networking.k8s.io/v1 Ingress rules (``ingressrules`` imports this module)."""
    from . import ingressrules
    return ingressrules


def _batch_rules() -> Any:
    """batch/v1's rules (``batchrules`` imports this module, so it is imported when first needed)."""
    from . import batchrules
    return batchrules


def _network_policy_rules() -> Any:
    """networking.k8s.io/v1 NetworkPolicy's rules (``networkpolicyrules`` imports this module)."""
    from . import networkpolicyrules
    return networkpolicyrules


_VALIDATORS: dict[type, Callable[[Any], list[FieldProblem]]] = {
    o.Service: validate_service,
    o.Pod: validate_pod,
    o.Deployment: validate_deployment,
    o.ReplicaSet: validate_replica_set,
    o.StatefulSet: validate_stateful_set,
    o.DaemonSet: validate_daemon_set,
    o.EndpointSlice: validate_endpoint_slice,
    o.Namespace: validate_namespace,
    o.Node: validate_node,
    o.ConfigMap: validate_config_map,
    o.Secret: validate_secret,
    o.ServiceAccount: validate_service_account,
    o.Event: validate_event,
    o.Impairment: validate_impairment,
    o.Partition: validate_partition,
    o.Capture: validate_capture,
    o.Job: lambda job: _batch_rules().validate_job(job),
    o.CronJob: lambda cj: _batch_rules().validate_cron_job(cj),
    o.Ingress: lambda obj: _ingress_rules().validate_ingress_create(obj),
    o.IngressClass: lambda obj: _ingress_rules().validate_ingress_class(obj),
    o.NetworkPolicy: lambda np: _network_policy_rules().validate_network_policy(np),
    **{cls: validate_stored_only for cls in o.STORED_ONLY_TYPES},
}


# --------------------------------------------------------------------------- integer widths

MIN_INT32 = -(2**31)
MAX_INT64, MIN_INT64 = 2**63 - 1, -(2**63)
# The integer fields Kubernetes declares int64; every other integer (and an IntOrString's number)
# is an int32.
_INT64_FIELDS = frozenset({
    ("ObjectMeta", "generation"), ("ObjectMeta", "deletion_grace_period_seconds"),
    ("PodSpec", "termination_grace_period_seconds"), ("PodSpec", "active_deadline_seconds"),
    ("Probe", "termination_grace_period_seconds"),
    ("DeploymentStatus", "observed_generation"), ("StatefulSetStatus", "observed_generation"),
    ("ReplicaSetStatus", "observed_generation"), ("DaemonSetStatus", "observed_generation"),
    ("Toleration", "toleration_seconds"), ("ServiceAccountTokenProjection", "expiration_seconds"),
})


def go_integer_type(cls_name: str, attr: str) -> str:
    """The Go type of an integer field (``int32`` or ``int64``), by its type and attribute name."""
    return "int64" if (cls_name, attr) in _INT64_FIELDS else "int32"


# Per dataclass: (attribute, JSON name, the range its integers must lie in, their Go type) of
# every field but ``extra``, made once per class: walking an object then makes no field list and
# no JSON name, and skips strings and unset fields at once (every write is checked: this keeps it
# at tens of microseconds per object instead of a millisecond).
_WIDTH_PLANS: dict[type, tuple[tuple[str, str, int, int, str], ...]] = {}


def _width_plan(cls: type) -> tuple[tuple[str, str, int, int, str], ...]:
    """The fields of ``cls`` that may hold an integer, or an object that may: the others (strings,
    booleans, string maps) are never looked at."""
    plan = _WIDTH_PLANS.get(cls)
    if plan is None:
        try:
            hints: dict[str, Any] | None = typing.get_type_hints(cls, vars(o))
        except Exception:  # noqa: BLE001 - a type it cannot resolve: look at every field
            hints = None
        plan = tuple((f.name, f.metadata.get("json", o.json_name(f.name)),
                      *((MIN_INT64, MAX_INT64, "int64") if (cls.__name__, f.name) in _INT64_FIELDS
                        else (MIN_INT32, MAX_INT32, "int32")))
                     for f in dataclasses.fields(cls)
                     if f.name != "extra" and (hints is None or _may_hold_integers(hints[f.name])))
        _WIDTH_PLANS[cls] = plan
    return plan


def _may_hold_integers(hint: Any) -> bool:
    """Whether a field of this type can be (or contain, as an item or an object's field) an int
    that ``_width_problems`` checks: a mapping's values and a string never are."""
    if hint is int or hint is Any or dataclasses.is_dataclass(hint):
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType, tuple):
        return any(_may_hold_integers(a) for a in typing.get_args(hint) if a is not Ellipsis)
    return False


def _width_problems(value: Any, path: str, found: list[str]) -> None:
    for attr, name, low, high, go_type in _width_plan(type(value)):
        sub = getattr(value, attr)
        if sub is None or type(sub) is str:
            continue
        for item in (sub if isinstance(sub, tuple) else (sub,)):
            if isinstance(item, int) and not isinstance(item, bool):
                if not low <= item <= high:  # Go's encoding/json: the innermost struct, then the path without indices
                    found.append(f"json: cannot unmarshal number {item} into Go struct field "
                                 f"{type(value).__name__}.{path + '.' + name if path else name} of type {go_type}")
            elif hasattr(type(item), "__dataclass_fields__"):
                _width_problems(item, f"{path}.{name}" if path else name, found)


def integer_width_problems(obj: Any) -> list[FieldProblem]:
    """Integers too wide for the field's Go type, as the API server refuses them while decoding
    (400 BadRequest, before any validation), e.g. ``Deployment in version "v1" cannot be handled
    as a Deployment: json: cannot unmarshal number 2147483648 into Go struct field
    DeploymentSpec.spec.replicas of type int32``."""
    found: list[str] = []
    _width_problems(obj, "", found)
    version = obj.api_version.rpartition("/")[2] or "v1"
    return [FieldProblem("", f'{obj.KIND} in version "{version}" cannot be handled as a {obj.KIND}: {text}')
            for text in found[:1]]  # Go's decoder reports the first such error only


def validate(obj: Any) -> list[FieldProblem]:
    """Every problem Kubernetes would report when creating ``obj`` (a defaulted object); an
    integer too wide for its Go type is reported alone, as the API server's decoder does."""
    try:
        validator = _VALIDATORS[type(obj)]
    except KeyError:
        raise TypeError(f"not a top-level Kubernetes object: {type(obj).__name__}") from None
    return integer_width_problems(obj) or base64_problems(obj) or validator(obj)


def validate_update(old: Any, new: Any) -> list[FieldProblem]:
    """Every problem Kubernetes would report when ``new`` replaces ``old`` (same kind and name).

    ``new`` should already carry the server-set values (see ``merge_server_fields``).
    """
    if type(old) is not type(new):
        raise TypeError(f"cannot compare a {type(old).__name__} with a {type(new).__name__}")
    too_wide = integer_width_problems(new) or base64_problems(new)
    if too_wide:
        return too_wide
    if isinstance(new, o.ConfigMap):
        return _config_map_update(old, new)
    if isinstance(new, o.Secret):
        return _secret_update(old, new)
    if isinstance(new, o.Service):
        return _service_update(old, new)
    if isinstance(new, o.Deployment):
        return _deployment_update(old, new)
    if isinstance(new, o.ReplicaSet):
        return _replica_set_update(old, new)
    if isinstance(new, o.StatefulSet):
        return _stateful_set_update(old, new)
    if isinstance(new, o.DaemonSet):
        return _daemon_set_update(old, new)
    if isinstance(new, o.Pod):
        return _pod_update(old, new)
    if isinstance(new, o.Job):
        return _batch_rules().validate_job_update(old, new)
    if isinstance(new, o.CronJob):
        return _batch_rules().validate_cron_job_update(old, new)
    if isinstance(new, o.Ingress):
        return _ingress_rules().validate_ingress(new)
    if isinstance(new, o.IngressClass):
        return _ingress_rules().validate_ingress_class_update(old, new)
    if isinstance(new, o.NetworkPolicy):
        return _network_policy_rules().validate_network_policy_update(old, new)
    errs = validate(new)
    if isinstance(new, o.Node) and (new.spec.pod_cidr, new.spec.pod_cidrs) != (old.spec.pod_cidr, old.spec.pod_cidrs) \
            and old.spec.pod_cidrs:
        errs.append(forbidden("spec.podCIDRs", "node updates may not change podCIDR except from \"\" to valid"))
    if isinstance(new, o.EndpointSlice) and new.address_type != old.address_type:
        errs.append(invalid("addressType", new.address_type, "field is immutable"))
    return errs


def merge_server_fields(old: Any, new: Any) -> Any:
    """``new`` keeping what the server set on ``old`` and the manifest does not say.

    Services: ``merge_service_allocations``. Pods: ``spec.nodeName`` (set by the scheduler), and a
    container's ``imagePullPolicy`` when only the image changed and the new policy is just the
    default for the new image (kubectl apply patches the image and leaves the live policy; a full
    re-default would turn ``nginx`` → ``nginx:1.27`` into a forbidden policy change). Other kinds
    are returned unchanged. Metadata (uid, resourceVersion, ...) and status are the store's business.
    """
    if isinstance(new, o.Service) and isinstance(old, o.Service):
        return merge_service_allocations(old, new)
    if isinstance(new, o.Job) and isinstance(old, o.Job):
        return _batch_rules().keep_generated_selector(old, new)
    if isinstance(new, o.Pod) and isinstance(old, o.Pod):
        spec = new.spec
        if not spec.node_name and old.spec.node_name:
            spec = evolve(spec, node_name=old.spec.node_name)
        spec = evolve(spec, containers=_keep_pull_policies(old.spec.containers, spec.containers),
                       init_containers=_keep_pull_policies(old.spec.init_containers, spec.init_containers))
        return evolve(new, spec=spec)
    return new


def _keep_pull_policies(old: Sequence[o.Container], new: Sequence[o.Container]) -> tuple[o.Container, ...]:
    out = []
    for c in new:
        before = next((oc for oc in old if oc.name == c.name), None)
        if (before is not None and before.image != c.image
                and c.image_pull_policy == default_pull_policy(c.image)):
            c = evolve(c, image_pull_policy=before.image_pull_policy)
        out.append(c)
    return tuple(out)

