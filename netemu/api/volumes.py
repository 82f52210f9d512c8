"""Validation of a pod's volumes and of its containers' volume mounts, in the API server's words.

Follows ``ValidateVolumes``, ``validateVolumeSource`` and ``ValidateVolumeMounts`` of
``pkg/apis/core/validation/validation.go``, quirks included: a downwardAPI item's problems are
reported at the ``downwardAPI`` path (``spec.volumes[0].downwardAPI.path: Required value``), a
mount's ``subPath`` at ``volumeMounts.subPath`` without its index, a second source of a
downwardAPI volume at ``downwarAPI``. A volume with any problem is left out of the names mounts
may refer to, so its mounts are also ``Not found``.

``validation.validate_pod_spec`` calls these (this module imports ``validation``, not the reverse).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, Sequence

from netemu.errors import FieldProblem

from . import objects as o
from .labels import is_dns1123_label
from .validation import (
    _invalid_each, _object_field_selector, duplicate, forbidden, invalid, not_found, not_supported, required,
)

FILE_MODE_ERROR = "must be a number between 0 and 0777 (octal), both inclusive"
MORE_THAN_ONE = "may not specify more than 1 volume type"
# The order in which validateVolumeSource looks at the sources (a later one is "more than 1").
SOURCE_ORDER = (
    "emptyDir", "hostPath", "gitRepo", "gcePersistentDisk", "awsElasticBlockStore", "secret", "nfs", "iscsi",
    "glusterfs", "flocker", "persistentVolumeClaim", "rbd", "cinder", "cephfs", "quobyte", "downwardAPI", "fc",
    "flexVolume", "configMap", "azureFile", "vsphereVolume", "photonPersistentDisk", "portworxVolume",
    "azureDisk", "storageos", "projected", "scaleIO", "csi", "ephemeral", "image")
_FORBIDDEN_AT = {"downwardAPI": "downwarAPI"}  # sic: the API server's path for a second downwardAPI source
VOLUME_FIELD_PATHS = ("metadata.annotations", "metadata.labels", "metadata.name", "metadata.namespace",
                      "metadata.uid")
RESOURCE_FIELD_PATHS = ("limits.cpu", "limits.ephemeral-storage", "limits.memory", "requests.cpu",
                        "requests.ephemeral-storage", "requests.memory")
_HUGEPAGES_PREFIXES = ("limits.hugepages-", "requests.hugepages-")
_CPU_DIVISORS = ("1m", "1")
_MEMORY_DIVISORS = ("1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei")
HOST_PATH_TYPES = ("", "BlockDevice", "CharDevice", "Directory", "DirectoryOrCreate", "File", "FileOrCreate",
                   "Socket")
MOUNT_PROPAGATIONS = ("Bidirectional", "HostToContainer", "None")
RECURSIVE_READ_ONLY = ("Disabled", "Enabled", "IfPossible")
MIN_TOKEN_SECONDS = 10 * 60
MAX_TOKEN_SECONDS = 1 << 32


def _wire(obj: Any) -> dict[str, Any]:
    """The sources a volume names, in manifest spelling (emulated ones and those kept in extra)."""
    found = {k: v for k, v in obj.extra.items() if v is not None}
    for attr, name in (("empty_dir", "emptyDir"), ("secret", "secret"), ("downward_api", "downwardAPI"),
                       ("config_map", "configMap"), ("projected", "projected")):
        if getattr(obj, attr) is not None:
            found[name] = getattr(obj, attr)
    return found


def volume_sources(volume: o.Volume) -> list[str]:
    """The sources ``volume`` names, in the API server's order."""
    given = _wire(volume)
    return [name for name in SOURCE_ORDER if name in given]


def unemulated_source(volume: o.Volume) -> str:
    """The first source of ``volume`` netemu keeps without emulating ("" when it emulates it)."""
    return next((s for s in volume_sources(volume) if s in o.UNEMULATED_VOLUME_SOURCES), "")


# --------------------------------------------------------------------------- paths and modes


def _local_descending_path(target: str, path: str) -> list[FieldProblem]:
    """validateLocalDescendingPath: relative, without a ``..`` element."""
    errs = []
    if target.startswith("/"):
        errs.append(invalid(path, target, "must be a relative path"))
    return errs + _no_backsteps(target, path)


def _no_backsteps(target: str, path: str) -> list[FieldProblem]:
    if ".." in target.split("/"):
        return [invalid(path, target, "must not contain '..'")]
    return []


def _local_non_reserved_path(target: str, path: str) -> list[FieldProblem]:
    """ValidateLocalNonReservedPath: also no leading ``..`` (the ``..data`` names are the kubelet's)."""
    errs = _local_descending_path(target, path)
    if target.startswith("..") and not target.startswith("../"):
        errs.append(invalid(path, target, "must not start with '..'"))
    return errs


def _mode(mode: int | None, path: str) -> list[FieldProblem]:
    if mode is not None and not 0 <= mode <= 0o777:
        return [invalid(path, mode, FILE_MODE_ERROR)]
    return []


def _key_to_path(kp: o.KeyToPath, path: str) -> list[FieldProblem]:
    errs = []
    if not kp.key:
        errs.append(required(f"{path}.key"))
    if not kp.path:
        errs.append(required(f"{path}.path"))
    errs += _local_non_reserved_path(kp.path, f"{path}.path")
    return errs + _mode(kp.mode, f"{path}.mode")


def _items(items: Sequence[o.KeyToPath], path: str) -> list[FieldProblem]:
    return [e for i, kp in enumerate(items) for e in _key_to_path(kp, f"{path}[{i}]")]


# --------------------------------------------------------------------------- sources


_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[a-zA-Z]*)$")


def _negative_quantity(value: Any) -> bool:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value < 0
    m = _QUANTITY.match(str(value).strip())
    return bool(m) and m.group(1).startswith("-") and float(m.group(1)) != 0


def _divisor_text(divisor: Any) -> str:
    return "" if divisor in (None, 0, "0", "") else str(divisor)


def _resource_field_ref(ref: o.ResourceFieldSelector, path: str) -> list[FieldProblem]:
    """validateContainerResourceFieldSelector (for a volume: containerName is required) and
    validateContainerResourceDivisor."""
    errs = []
    if not ref.container_name:
        errs.append(required(f"{path}.containerName"))
    elif not ref.resource:
        errs.append(required(f"{path}.resource"))
    elif ref.resource not in RESOURCE_FIELD_PATHS and not ref.resource.startswith(_HUGEPAGES_PREFIXES):
        errs.append(not_supported(f"{path}.resource", ref.resource, RESOURCE_FIELD_PATHS))
    divisor = _divisor_text(ref.divisor)
    if divisor:
        if ref.resource in ("limits.cpu", "requests.cpu") and divisor not in _CPU_DIVISORS:
            errs.append(invalid(f"{path}.divisor", ref.resource,
                                "only divisor's values 1m and 1 are supported with the cpu resource"))
        elif ref.resource in ("limits.memory", "requests.memory") and divisor not in _MEMORY_DIVISORS:
            errs.append(invalid(f"{path}.divisor", ref.resource,
                                f"only divisor's values {', '.join(_MEMORY_DIVISORS)} are supported with the "
                                "memory resource"))
        elif ref.resource in ("limits.ephemeral-storage", "requests.ephemeral-storage") \
                and divisor not in _MEMORY_DIVISORS:
            errs.append(invalid(f"{path}.divisor", ref.resource,
                                f"only divisor's values {', '.join(_MEMORY_DIVISORS)} are supported with the "
                                "local ephemeral storage resource"))
    return errs


def _downward_file(f: o.DownwardAPIVolumeFile, path: str) -> list[FieldProblem]:
    """validateDownwardAPIVolumeFile; ``path`` is the source's, not the item's (as upstream)."""
    errs = []
    if not f.path:
        errs.append(required(f"{path}.path"))
    errs += _local_non_reserved_path(f.path, f"{path}.path")
    if f.field_ref is not None:
        errs += _object_field_selector(f.field_ref, f"{path}.fieldRef", VOLUME_FIELD_PATHS)
        if f.resource_field_ref is not None:
            errs.append(invalid(path, "resource", "fieldRef and resourceFieldRef can not be specified simultaneously"))
    elif f.resource_field_ref is not None:
        errs += _resource_field_ref(f.resource_field_ref, f"{path}.resourceFieldRef")
    else:
        errs.append(required(path, "one of fieldRef and resourceFieldRef is required"))
    return errs + _mode(f.mode, f"{path}.mode")


def _projected(p: o.ProjectedVolumeSource, path: str) -> list[FieldProblem]:
    """validateProjectedVolumeSource / validateProjectionSources."""
    errs = _mode(p.default_mode, f"{path}.defaultMode")
    seen: set[str] = set()

    def claim(item_path: str, value: Any) -> None:
        if item_path in seen:
            errs.append(invalid(path, value, "conflicting duplicate paths"))
        seen.add(item_path)

    for i, src in enumerate(p.sources):
        sp = f"{path}.sources[{i}]"
        count = 0
        for ref, name in ((src.secret, "secret"), (src.config_map, "configMap")):
            if ref is None:
                continue
            count += 1
            if not ref.name:
                errs.append(required(f"{sp}.{name}.name"))
            for j, kp in enumerate(ref.items):
                errs += _key_to_path(kp, f"{sp}.{name}.items[{j}]")
                if kp.path:
                    claim(kp.path, ref.name)
        if src.downward_api is not None:
            count += 1
            for f in src.downward_api.items:
                errs += _downward_file(f, f"{sp}.downwardAPI")
                if f.path:
                    claim(f.path, f.path)
        token = src.service_account_token
        if token is not None:
            count += 1
            seconds = token.expiration_seconds or 0
            if seconds < MIN_TOKEN_SECONDS:
                errs.append(invalid(f"{sp}.serviceAccountToken.expirationSeconds", seconds,
                                    "may not specify a duration less than 10 minutes"))
            if seconds > MAX_TOKEN_SECONDS:
                errs.append(invalid(f"{sp}.serviceAccountToken.expirationSeconds", seconds,
                                    "may not specify a duration larger than 2^32 seconds"))
            if not token.path:
                errs.append(required(f"{path}.path"))
            else:
                errs += _local_non_reserved_path(token.path, f"{path}.path")
        count += sum(1 for k in ("clusterTrustBundle", "podCertificate") if src.extra.get(k) is not None)
        if count > 1:
            errs.append(forbidden(sp, "may not specify more than 1 volume type per source"))
    return errs


def _source_problems(name: str, source: Any, path: str) -> list[FieldProblem]:
    """The checks of one source (netemu checks the fields it reads of the ones it keeps)."""
    if name == "emptyDir":
        limit = source.extra.get("sizeLimit")
        if limit is not None and _negative_quantity(limit):
            return [forbidden(f"{path}.sizeLimit", "SizeLimit field must be a valid resource quantity")]
        return []
    if name == "secret":
        errs = [required(f"{path}.secretName")] if not source.secret_name else []
        return errs + _mode(source.default_mode, f"{path}.defaultMode") + _items(source.items, f"{path}.items")
    if name == "configMap":
        errs = [required(f"{path}.name")] if not source.name else []
        return errs + _mode(source.default_mode, f"{path}.defaultMode") + _items(source.items, f"{path}.items")
    if name == "downwardAPI":
        errs = _mode(source.default_mode, f"{path}.defaultMode")
        return errs + [e for f in source.items for e in _downward_file(f, path)]
    if name == "projected":
        return _projected(source, path)
    given: Mapping[str, Any] = source if isinstance(source, dict) else {}
    if name == "hostPath":
        host_path = given.get("path") or ""
        if not host_path:
            return [required(f"{path}.path")]
        errs = _no_backsteps(host_path, f"{path}.path")
        kind = given.get("type")
        if kind is not None and kind not in HOST_PATH_TYPES:
            errs.append(not_supported(f"{path}.type", kind, HOST_PATH_TYPES))
        return errs
    if name == "persistentVolumeClaim" and not given.get("claimName"):
        return [required(f"{path}.claimName")]
    return []


def _volume_source(volume: o.Volume, path: str) -> list[FieldProblem]:
    given = _wire(volume)
    errs: list[FieldProblem] = []
    count = 0
    for name in volume_sources(volume):
        if count:
            errs.append(forbidden(f"{path}.{_FORBIDDEN_AT.get(name, name)}", MORE_THAN_ONE))
            continue
        count += 1
        errs += _source_problems(name, given[name], f"{path}.{name}")
    if count == 0:
        errs.append(required(path, "must specify a volume type"))
    return errs


def validate_volumes(volumes: Sequence[o.Volume], path: str) -> tuple[dict[str, o.Volume], list[FieldProblem]]:
    """ValidateVolumes: the volumes mounts may name (those without problems), and the problems."""
    named: dict[str, o.Volume] = {}
    errs: list[FieldProblem] = []
    for i, volume in enumerate(volumes):
        vp = f"{path}[{i}]"
        found = _volume_source(volume, vp)
        if not volume.name:
            found.append(required(f"{vp}.name"))
        else:
            found += _invalid_each(f"{vp}.name", volume.name, is_dns1123_label(volume.name))
        if volume.name in named:  # as upstream: only among the volumes without problems
            found.append(duplicate(f"{vp}.name", volume.name))
        if found:
            errs += found
        else:
            named[volume.name] = volume
    return named, errs


# --------------------------------------------------------------------------- mounts


def _privileged(container: o.Container) -> bool:
    ctx = container.extra.get("securityContext")
    return isinstance(ctx, dict) and ctx.get("privileged") is True


def validate_volume_mounts(container: o.Container, volumes: Mapping[str, o.Volume], path: str) -> list[FieldProblem]:
    """ValidateVolumeMounts for one container (``path``: its ``volumeMounts``)."""
    errs: list[FieldProblem] = []
    mount_points: set[str] = set()
    for i, m in enumerate(container.volume_mounts):
        mp = f"{path}[{i}]"
        if not m.name:
            errs.append(required(f"{mp}.name"))
        if m.name not in volumes:
            errs.append(not_found(f"{mp}.name", m.name))
        if not m.mount_path:
            errs.append(required(f"{mp}.mountPath"))
        if m.mount_path in mount_points:
            errs.append(invalid(f"{mp}.mountPath", m.mount_path, "must be unique"))
        mount_points.add(m.mount_path)
        if m.sub_path:
            errs += _local_descending_path(m.sub_path, f"{path}.subPath")
        if m.sub_path_expr:
            if m.sub_path:
                errs.append(invalid(f"{mp}.subPathExpr", m.sub_path_expr,
                                    "subPathExpr and subPath are mutually exclusive"))
            errs += _local_descending_path(m.sub_path_expr, f"{path}.subPathExpr")
        if m.mount_propagation:
            if m.mount_propagation not in MOUNT_PROPAGATIONS:
                errs.append(not_supported(f"{path}.mountPropagation", m.mount_propagation, MOUNT_PROPAGATIONS))
            if m.mount_propagation == "Bidirectional" and not _privileged(container):
                errs.append(forbidden(f"{path}.mountPropagation",
                                      "Bidirectional mount propagation is available only to privileged containers"))
        rro = m.extra.get("recursiveReadOnly")
        if rro is not None and rro != "Disabled":
            rp = f"{path}.recursiveReadOnly"
            if rro in ("Enabled", "IfPossible"):
                if not m.read_only:
                    errs.append(forbidden(rp, "may only be specified when readOnly is true"))
                if m.mount_propagation and m.mount_propagation != "None":
                    errs.append(forbidden(rp, "may only be specified when mountPropagation is None or not specified"))
            else:
                errs.append(not_supported(rp, rro, RECURSIVE_READ_ONLY))
    return errs


# --------------------------------------------------------------------------- stateful sets


def with_claim_volumes(spec: o.PodSpec, claim_templates: Any, set_name: str, ordinal: int | None) -> o.PodSpec:
    """The StatefulSet controller's updateStorage: one persistentVolumeClaim volume per claim
    template (claim ``<template>-<set>-<ordinal>``), in place of a pod volume of the same name.
    With ``ordinal`` None, for validating the template: the volumes its mounts may name."""
    names = [t.get("metadata", {}).get("name", "") for t in claim_templates or () if isinstance(t, dict)]
    names = [n for n in names if n]
    if not names:
        return spec
    suffix = f"-{set_name}-{ordinal}" if ordinal is not None else f"-{set_name}"
    claims = tuple(o.Volume(name=n, extra={"persistentVolumeClaim": {"claimName": n + suffix}}) for n in names)
    return dataclasses.replace(spec, volumes=claims + tuple(v for v in spec.volumes if v.name not in names))
