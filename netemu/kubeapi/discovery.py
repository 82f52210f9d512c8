"""What a client asks first: ``/version``, and legacy discovery (``/api``, ``/apis`` and each
group version's resource list), built from ``resources.RESOURCES`` and the subresources served
(``subresources``, which aggregated discovery lists too)."""
from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass
from typing import Any

from .resources import RESOURCES, Resource, group_versions, resources_in
from .rest import SCALABLE
from .statusresource import STATUS_VERBS, has_status

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


@dataclass(frozen=True)
class Subresource:
    """One subresource as discovery lists it: its name, the kind its answers are (group, version,
    kind; "" group and version: the resource's own) and its verbs."""
    name: str
    kind: str
    verbs: tuple[str, ...]
    group: str = ""
    version: str = ""

    def response_kind(self, r: Resource) -> dict[str, str]:
        if self.version:
            return {"group": self.group, "version": self.version, "kind": self.kind}
        return {"group": r.group, "version": r.version, "kind": self.kind}


_STATUS = Subresource("status", "", STATUS_VERBS)  # kind: the resource's own
_SCALE = Subresource("scale", "Scale", ("get", "patch", "update"), "autoscaling", "v1")
# The subresources served (pods/log, pods/exec and pods/attach by podlogs, podexec and podattach,
# pods/portforward by podportforward, scale by rest, status by statusresource), as kube-apiserver
# lists them.
_POD_STREAMS = (Subresource("attach", "PodAttachOptions", ("create", "get")),
                Subresource("exec", "PodExecOptions", ("create", "get")), Subresource("log", "Pod", ("get",)),
                Subresource("portforward", "PodPortForwardOptions", ("create", "get")))
_TOKEN = Subresource("token", "TokenRequest", ("create",), "authentication.k8s.io", "v1")  # tokenrequest


def subresources(r: Resource) -> list[Subresource]:
    found = list(_POD_STREAMS) if (r.group, r.kind) == ("", "Pod") else []
    if (r.group, r.kind) == ("", "ServiceAccount"):
        found.append(_TOKEN)
    if r.kind in SCALABLE and r.group == "apps":
        found.append(_SCALE)
    if has_status(r):
        found.append(dataclasses.replace(_STATUS, kind=r.kind))
    return sorted(found, key=lambda s: s.name)


def _subresources(r: Resource) -> list[dict[str, Any]]:
    out = []
    for sub in subresources(r):
        entry: dict[str, Any] = {"name": f"{r.plural}/{sub.name}", "singularName": "", "namespaced": r.namespaced}
        if sub.version:
            entry |= {"group": sub.group, "version": sub.version}
        out.append(entry | {"kind": sub.kind, "verbs": list(sub.verbs)})
    return out


def all_group_versions() -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for r in RESOURCES:
        if (r.group, r.version) not in seen:
            seen.append((r.group, r.version))
    return seen
