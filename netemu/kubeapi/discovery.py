"""What a client asks first: ``/version``, and legacy discovery (``/api``, ``/apis`` and each
group version's resource list), built from ``resources.RESOURCES``."""
from __future__ import annotations

import platform
from typing import Any

from .resources import RESOURCES, Resource, group_versions, resources_in

KUBE_VERSION = "v1.31.0"  # the Kubernetes API level netemu speaks (its nodes report v1.31.0-netemu)


def version() -> dict[str, Any]:
    major, minor, _ = KUBE_VERSION.lstrip("v").split(".")
    return {"major": major, "minor": minor, "gitVersion": f"{KUBE_VERSION}-netemu", "gitCommit": "",
            "gitTreeState": "clean", "buildDate": "", "goVersion": f"python{platform.python_version()}",
            "compiler": "cpython", "platform": "linux/amd64"}


def core_versions(server_address: str) -> dict[str, Any]:
    """``/api``."""
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    listed = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": listed, "preferredVersion": listed[0]}


def groups() -> dict[str, Any]:
    """``/apis``: every named group."""
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [_group(name, versions) for name, versions in group_versions().items() if name]}


def group(name: str) -> dict[str, Any] | None:
    versions = group_versions().get(name)
    if not name or versions is None:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def _resource(r: Resource) -> dict[str, Any]:
    out: dict[str, Any] = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                           "kind": r.kind, "verbs": list(r.verbs)}
    if r.short_names:
        out["shortNames"] = list(r.short_names)
    if r.categories:
        out["categories"] = list(r.categories)
    return out


def resource_list(group_name: str, version_name: str) -> dict[str, Any] | None:
    """``/api/v1``, ``/apis/apps/v1`` …; None for a group version netemu does not serve."""
    served = resources_in(group_name, version_name)
    if not served:
        return None
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group_name}/{version_name}" if group_name else version_name,
            "resources": [entry for r in served for entry in (_resource(r), *_subresources(r))]}


# Subresources served by their own modules (podlogs, podexec): (name, kind, verbs) as kube-apiserver lists them.
_SUBRESOURCES = {"Pod": (("log", "Pod", ("get",)), ("exec", "PodExecOptions", ("create", "get")))}


def _subresources(r: Resource) -> list[dict[str, Any]]:
    return [{"name": f"{r.plural}/{name}", "singularName": "", "namespaced": r.namespaced, "kind": kind,
             "verbs": list(verbs)} for name, kind, verbs in _SUBRESOURCES.get(r.kind, ())]


def all_group_versions() -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for r in RESOURCES:
        if (r.group, r.version) not in seen:
            seen.append((r.group, r.version))
    return seen
