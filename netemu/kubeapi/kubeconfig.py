"""kubeconfig files, like kind's: the cluster's own (0600, in its state directory) and a context
``netemu-<name>`` merged into the user's (``$KUBECONFIG``'s first file or ``~/.kube/config``),
made current, and removed again when the cluster goes.

A merge never touches other clusters, users or contexts, and every write is atomic: a temporary
file in the same directory, the old file's mode kept (0600 for a new one), then a rename.
"""
from __future__ import annotations

import base64
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from netemu.errors import ClusterError


def context_name(cluster: str) -> str:
    return f"netemu-{cluster}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def build(cluster: str, server: str, ca_cert: bytes, client_cert: bytes, client_key: bytes) -> dict[str, Any]:
    """The cluster's kubeconfig: one cluster, one user (client certificate), one current context."""
    name = context_name(cluster)
    return {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)}}],
        "users": [{"name": name, "user": {"client-certificate-data": _b64(client_cert),
                                          "client-key-data": _b64(client_key)}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }


def dump(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, default_flow_style=False, sort_keys=False)


def default_path() -> Path:
    """Where kubectl looks: the first file of ``$KUBECONFIG``, else ``~/.kube/config``."""
    env = os.environ.get("KUBECONFIG", "")
    first = next((p for p in env.split(os.pathsep) if p), "")
    return Path(first) if first else Path.home() / ".kube" / "config"


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ClusterError(f"kubeconfig {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ClusterError(f"kubeconfig {path}: not valid YAML, left as it is: {exc}") from exc
    if not isinstance(data, dict):
        raise ClusterError(f"kubeconfig {path}: not a kubeconfig (a mapping), left as it is")
    return data


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: a temporary file beside it, the old mode (or 0600), a rename."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _entries(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    return value if isinstance(value, list) else []


def _without(entries: list[Any], name: str) -> list[Any]:
    return [e for e in entries if not (isinstance(e, dict) and e.get("name") == name)]


def merge(path: Path, config: dict[str, Any]) -> None:
    """Add (or replace) ``config``'s cluster, user and context in the kubeconfig at ``path`` and
    make its context current; everything else there stays as it was."""
    data = _read(path)
    for key in ("clusters", "users", "contexts"):
        entries = _entries(data, key)
        for entry in config[key]:
            entries = _without(entries, entry["name"]) + [entry]
        data[key] = entries
    data.setdefault("apiVersion", "v1")
    data.setdefault("kind", "Config")
    data["current-context"] = config["current-context"]
    write_atomic(path, dump(data))


def remove(path: Path, cluster: str) -> bool:
    """Take cluster ``cluster``'s entries out of the kubeconfig at ``path``; whether any were there.
    The current context is cleared only when it was this cluster's."""
    data = _read(path)
    name = context_name(cluster)
    found = False
    for key in ("clusters", "users", "contexts"):
        entries = _entries(data, key)
        kept = _without(entries, name)
        found |= len(kept) != len(entries)
        if key in data:
            data[key] = kept
    if data.get("current-context") == name:
        data["current-context"] = ""
        found = True
    if found:
        write_atomic(path, dump(data))
    return found


# --------------------------------------------------------------------------- the user's kubeconfig

RECORD_KEY = "kubeconfig"  # in state.json: the user's file this cluster's context was merged into


def publish(cluster: Any, target: Path) -> str:
    """Merge a running cluster's context into the user's kubeconfig ``target`` and record where
    (so ``down`` and ``gc`` take it out again); the line to tell the user."""
    merge(target, cluster.kube_api.kubeconfig)
    cluster.state.update_info(**{RECORD_KEY: str(target)})
    return f'kubectl: context "{context_name(cluster.name)}" in {target} (current)'


def withdraw(cluster_name: str, info: dict[str, Any]) -> str | None:
    """Take a cluster's context out of the kubeconfig its state records; what was done, or None."""
    recorded = info.get(RECORD_KEY)
    if not isinstance(recorded, str) or not recorded:
        return None
    try:
        removed = remove(Path(recorded), cluster_name)
    except ClusterError as exc:
        return f"kubeconfig left as it is: {exc}"
    return f'kubeconfig: context "{context_name(cluster_name)}" removed from {recorded}' if removed else None
