"""Validation of Ingress and IngressClass, with kube-apiserver's paths and wording
(pkg/apis/networking/validation: ValidateIngressCreate/Update, ValidateIngressClass/Update).

networking.k8s.io/v1 has no defaults for these fields (``pathType`` is required), so there is no
defaulting here. ``validation`` dispatches to this module.
"""
from __future__ import annotations

import re
from typing import Any

from netemu.errors import FieldProblem

from . import ingress as ing
from .labels import (
    DNS1123_SUBDOMAIN_MAX, _DNS1123_SUBDOMAIN_FMT, is_dns1123_subdomain, is_valid_port_name,
    is_valid_port_num, max_len_error, name_is_dns1035_label, name_is_dns_subdomain, regex_error,
)
from .validation import (
    GoValue, invalid, not_supported, required, too_long, validate_object_meta,
)

PATH_TYPES = ("Exact", "ImplementationSpecific", "Prefix")  # sorted, as supportedPathTypes.List()
_INVALID_PATH_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F")
_INVALID_PATH_SUFFIXES = ("/..", "/.")
_WILDCARD_FMT = "\\*\\." + _DNS1123_SUBDOMAIN_FMT
_WILDCARD_MSG = ("a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, "
                 "which must consist of lower case alphanumeric characters, '-' or '.' and end with an "
                 "alphanumeric character")
_wildcard = re.compile(_WILDCARD_FMT)
MAX_CONTROLLER_LEN = 250
_path_segment = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


def is_wildcard_dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(max_len_error(DNS1123_SUBDOMAIN_MAX))
    if not _wildcard.fullmatch(value):
        errs.append(regex_error(_WILDCARD_MSG, _WILDCARD_FMT, "*.example.com"))
    return errs


def _is_ip(host: str) -> bool:
    import ipaddress
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _host_problems(host: str, path: str) -> list[FieldProblem]:
    check = is_wildcard_dns1123_subdomain if "*" in host else is_dns1123_subdomain
    return [invalid(path, host, msg) for msg in check(host)]


def validate_backend(backend: ing.IngressBackend, path: str) -> list[FieldProblem]:
    resource, service = backend.resource, backend.service
    if resource is not None and service is not None:
        return [invalid(path, "", "cannot set both resource and service backends")]
    if resource is not None:
        return _typed_reference(resource, f"{path}.resource")
    if service is None:
        return [invalid(path, "", "resource or service backend is required")]
    errs: list[FieldProblem] = []
    if not service.name:
        errs.append(required(f"{path}.service.name"))
    else:
        errs += [invalid(f"{path}.service.name", service.name, m) for m in name_is_dns1035_label(service.name)]
    port = service.port or ing.ServiceBackendPort()
    number = port.number or 0
    if port.name and number:
        errs.append(invalid(path, "", "cannot set both port name & port number"))
    elif port.name:
        errs += [invalid(f"{path}.service.port.name", port.name, m) for m in is_valid_port_name(port.name)]
    elif number:
        errs += [invalid(f"{path}.service.port.number", number, m) for m in is_valid_port_num(number)]
    else:
        errs.append(required(path, "port name or number is required"))
    return errs


def _typed_reference(ref: Any, path: str) -> list[FieldProblem]:
    ref = ref if isinstance(ref, dict) else {}
    errs: list[FieldProblem] = []
    group = ref.get("apiGroup")
    if group is not None:
        errs += [invalid(f"{path}.apiGroup", group, m) for m in is_dns1123_subdomain(str(group))]
    for key in ("kind", "name"):
        value = str(ref.get(key) or "")
        if not value:
            errs.append(required(f"{path}.{key}", f"{key} is required"))
        elif value in (".", "..") or "/" in value or "%" in value:
            detail = f"may not be '{value}'" if value in (".", "..") else \
                f"may not contain '{'/' if '/' in value else '%'}'"
            errs.append(invalid(f"{path}.{key}", value, detail))
    return errs


def _http_path(hp: ing.HTTPIngressPath, path: str) -> list[FieldProblem]:
    if hp.path_type is None:
        return [required(f"{path}.pathType", "pathType must be specified")]
    errs: list[FieldProblem] = []
    if hp.path_type in ("Exact", "Prefix"):
        if not hp.path.startswith("/"):
            errs.append(invalid(f"{path}.path", hp.path, "must be an absolute path"))
        if hp.path:
            errs += [invalid(f"{path}.path", hp.path, f"must not contain '{seq}'")
                     for seq in _INVALID_PATH_SEQUENCES if seq in hp.path]
            errs += [invalid(f"{path}.path", hp.path, f"cannot end with '{suffix}'")
                     for suffix in _INVALID_PATH_SUFFIXES if hp.path.endswith(suffix)]
    elif hp.path_type == "ImplementationSpecific":
        if hp.path and not hp.path.startswith("/"):
            errs.append(invalid(f"{path}.path", hp.path, "must be an absolute path"))
    else:
        errs.append(not_supported(f"{path}.pathType", hp.path_type, PATH_TYPES))
    return errs + validate_backend(hp.backend, f"{path}.backend")


def _rules(rules: tuple[ing.IngressRule, ...], path: str) -> list[FieldProblem]:
    errs: list[FieldProblem] = []
    for i, rule in enumerate(rules):
        where = f"{path}[{i}]"
        if rule.host:
            if _is_ip(rule.host):
                errs.append(invalid(f"{where}.host", rule.host, "must be a DNS name, not an IP address"))
            errs += _host_problems(rule.host, f"{where}.host")
        if rule.http is not None:
            if not rule.http.paths:
                errs.append(required(f"{where}.http.paths"))
            for j, hp in enumerate(rule.http.paths):
                errs += _http_path(hp, f"{where}.http.paths[{j}]")
    return errs


def _tls(tls: tuple[ing.IngressTLS, ...], path: str) -> list[FieldProblem]:
    errs: list[FieldProblem] = []
    for i, entry in enumerate(tls):
        for j, host in enumerate(entry.hosts):
            errs += _host_problems(host, f"{path}[{i}].hosts[{j}]")
        if entry.secret_name:
            errs += [invalid(f"{path}[{i}].secretName", entry.secret_name, m)
                     for m in name_is_dns_subdomain(entry.secret_name, False)]
    return errs


def validate_ingress(obj: ing.Ingress) -> list[FieldProblem]:
    errs = validate_object_meta(obj.metadata, True, name_is_dns_subdomain)
    spec = obj.spec
    if not spec.rules and spec.default_backend is None:
        errs.append(invalid("spec", GoValue("null"), "either `defaultBackend` or `rules` must be specified"))
    if spec.default_backend is not None:
        errs += validate_backend(spec.default_backend, "spec.defaultBackend")
    errs += _rules(spec.rules, "spec.rules")
    errs += _tls(spec.tls, "spec.tls")
    if spec.ingress_class_name is not None:
        errs += [invalid("spec.ingressClassName", spec.ingress_class_name, m)
                 for m in name_is_dns_subdomain(spec.ingress_class_name, False)]
    return errs


def validate_ingress_create(obj: ing.Ingress) -> list[FieldProblem]:
    errs = validate_ingress(obj)
    legacy = (obj.metadata.annotations or {}).get(ing.LEGACY_CLASS_ANNOTATION)
    if legacy is not None and obj.spec.ingress_class_name is not None and legacy != obj.spec.ingress_class_name:
        errs.append(invalid(f"annotations.{ing.LEGACY_CLASS_ANNOTATION}", legacy,
                            "must match `ingressClassName` when both are specified"))
    return errs


def _domain_prefixed_path(value: str, path: str) -> list[FieldProblem]:
    """apimachinery's IsDomainPrefixedPath."""
    if not value:
        return [required(path)]
    host, slash, rest = value.partition("/")
    if not slash:
        return [invalid(path, value, "must be a domain-prefixed path (such as \"acme.io/foo\")")]
    errs = [invalid(path, host, m) for m in is_dns1123_subdomain(host)]
    if not re.fullmatch(r"[A-Za-z0-9/\-._~%!$&'()*+,;=:]+", rest):
        errs.append(invalid(path, rest, "Invalid path"))
    return errs


def validate_ingress_class(obj: ing.IngressClass) -> list[FieldProblem]:
    errs = validate_object_meta(obj.metadata, False, name_is_dns_subdomain)
    controller = obj.spec.controller
    if len(controller) > MAX_CONTROLLER_LEN:
        errs.append(too_long("spec.controller", MAX_CONTROLLER_LEN))
    errs += _domain_prefixed_path(controller, "spec.controller")
    params = obj.spec.extra.get("parameters")
    if params is not None:
        errs += _typed_reference(params, "spec.parameters")
    return errs


def validate_ingress_class_update(old: ing.IngressClass, new: ing.IngressClass) -> list[FieldProblem]:
    errs = []
    if new.spec.controller != old.spec.controller:
        errs.append(invalid("spec.controller", new.spec.controller, "field is immutable"))
    return errs + validate_ingress_class(new)


__all__ = ["validate_ingress", "validate_ingress_create", "validate_ingress_class",
           "validate_ingress_class_update"]
