"""Running a CNI plugin executable, as a container runtime does (libcni's ``invoke.ExecPlugin*``).

``exec_plugin`` finds the plugin named by a network configuration's ``type`` in CNI_PATH, runs it
with the CNI environment and the configuration on stdin, and turns its answer into a ``Result``
(ADD) or None, or its error JSON into ``CNIError`` with the plugin's code. Whatever the plugin
writes to stderr is passed on to ``stderr`` (default: this process's), success or failure, as the
spec's delegation rules ask. The child inherits the calling thread's network namespace (call it
on a thread switched into the node's namespace) and none of this process's descriptors beyond
0-2.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from netemu.errors import CNIError

from .types import ErrorCode, Result, format_cni_args

TIMEOUT = 30.0


def find_plugin(plugin_type: str, path: Sequence[str]) -> str:
    if not plugin_type or "/" in plugin_type or plugin_type in (".", ".."):
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"invalid plugin type {plugin_type!r}")
    for directory in path:
        candidate = os.path.join(directory, plugin_type)
        if os.access(candidate, os.X_OK):
            return candidate
    raise CNIError(ErrorCode.INTERNAL, f'failed to find plugin "{plugin_type}" in path {list(path)}')


def exec_plugin(command: str, config: Mapping[str, Any], *, container_id: str, netns: str, ifname: str,
                path: Sequence[str], args: Mapping[str, str] | None = None,
                plugin_type: str | None = None, stderr: TextIO | None = None) -> Result | None:
    """Run the plugin ``plugin_type`` (default: the configuration's ``type``) for ``command``."""
    plugin = find_plugin(plugin_type or str(config.get("type", "")), path)
    env = {**os.environ, "CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns,
           "CNI_IFNAME": ifname, "CNI_ARGS": format_cni_args(args or {}), "CNI_PATH": os.pathsep.join(path)}
    try:
        proc = subprocess.run([plugin], input=json.dumps(dict(config)), env=env, capture_output=True, check=False,
                              text=True, errors="replace", timeout=TIMEOUT, close_fds=True)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CNIError(ErrorCode.INTERNAL, f"{plugin}: {exc}") from exc
    _pass_on(proc.stderr, stderr if stderr is not None else sys.stderr)
    try:
        out = json.loads(proc.stdout) if proc.stdout.strip() else None
    except ValueError as exc:
        raise CNIError(ErrorCode.DECODING_FAILURE, f"{plugin}: unreadable output: {proc.stdout[:200]!r}") from exc
    if proc.returncode != 0:
        if isinstance(out, dict) and isinstance(out.get("code"), int):
            raise CNIError(out["code"], str(out.get("msg", "")), str(out.get("details", "")))
        raise CNIError(ErrorCode.INTERNAL, f"{plugin} failed with status {proc.returncode}: {proc.stderr.strip()}")
    return Result.from_json(out) if command == "ADD" else None


def _pass_on(text: str, stream: TextIO) -> None:
    """The delegated plugin's stderr, on ours (informational: a closed stderr is no error)."""
    if not text:
        return
    try:
        stream.write(text if text.endswith("\n") else text + "\n")
        stream.flush()
    except (OSError, ValueError):
        pass
