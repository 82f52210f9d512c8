"""A pod's volumes as the kubelet's volume plugins make them: real files in one directory per
volume, under the pod's directory of the cluster's state (``<pod dir>/volumes/<volume name>``).

- ``configMap``, ``secret``, ``downwardAPI`` and ``projected`` volumes are written with the
  kubelet's AtomicWriter layout (``atomicwriter``): ``items`` choose keys and paths, file modes
  come from ``items[].mode`` or ``defaultMode``, a Secret's values are its decoded bytes, a
  ConfigMap's ``binaryData`` is written too. A ConfigMap or Secret change rewrites the volumes that
  use it (a new timestamped directory and a ``..data`` swap); a change of the pod's labels or
  annotations rewrites its downward API files. Environment variables never change.
- ``emptyDir``: an empty directory, shared by the pod's containers, removed with the pod.
- A source netemu does not emulate (``persistentVolumeClaim``, ``hostPath``, ...): an empty
  directory as well (``kubectl describe pod`` says so).
- A required ConfigMap or Secret (or key) that is missing keeps the pod in ContainerCreating with
  the kubelet's ``FailedMount`` warning (``MountVolume.SetUp failed for volume "config" :
  configmap "app-config" not found``), retried at every ConfigMap or Secret change and every
  RESYNC seconds; an ``optional`` one gives an empty volume.
- ``serviceAccountToken`` projections are minted by the kubelet's ``service_account_token``
  callable (set by whoever issues tokens; without one the mount fails) and re-minted at 80% of
  their lifetime, as the kubelet's token manager does.

``mounts_for`` says which directory or file each of a container's ``volumeMounts`` shows at its
``mountPath`` (``subPath`` included); ``mountns`` presents them to the container's processes.
"""
from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Mapping

from netemu.api import objects as k8s
from netemu.api.validation import decoded
from netemu.api.volumes import unemulated_source
from netemu import sandbox
from netemu.errors import NetemuError
from netemu.sandbox import SandboxHelper
from netemu.sandboxd import UNSIGNED, Payload, volume_files

from . import atomicwriter, envvars
from .atomicwriter import FileProjection

log = logging.getLogger(__name__)

VOLUMES_ENV = "NETEMU_POD_VOLUMES"  # the pod's volume directory, in every process's environment
RESYNC = 10.0  # seconds between retries of a failed mount (besides every ConfigMap/Secret change)
TOKEN_REFRESH_FRACTION = 0.8  # a projected token is re-minted at this fraction of its lifetime
TOKEN_REFRESH_MAX = 24 * 3600.0
VOLUME_DIR_MODE = 0o777
SECRET_DIR_MODE = 0o1777

# token(namespace, service_account, pod_name, pod_uid, audience, expiration_seconds) -> JWT
TokenSource = Callable[[str, str, str, str, str, int], str]
Lookup = Callable[[str, str], Any]


class VolumeError(NetemuError):
    """A volume cannot be set up (yet): the kubelet's SetUp error, without the prefix."""


@dataclass(frozen=True)
class Mount:
    """What one ``volumeMounts`` entry shows: ``source`` (a directory or a file of the pod's
    volume directory) at ``target`` (the mountPath), read-only or not."""
    source: Path
    target: str
    read_only: bool
    volume: str


# --------------------------------------------------------------------------- quantities, downward API

_SUFFIXES = {"n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": Fraction(1),
             "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
             "P": Fraction(10**15), "E": Fraction(10**18), "Ki": Fraction(2**10), "Mi": Fraction(2**20),
             "Gi": Fraction(2**30), "Ti": Fraction(2**40), "Pi": Fraction(2**50), "Ei": Fraction(2**60)}
_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:([eE][+-]?[0-9]+)|([a-zA-Z]*))$")


def quantity(value: Any) -> Fraction:
    """A Kubernetes resource quantity (``250m``, ``1Gi``, ``1e3``, ``2``) as an exact number."""
    m = _QUANTITY.match(str(value).strip())
    if not m or (m.group(3) or "") not in _SUFFIXES:
        raise VolumeError("quantities must match the regular expression "
                          f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {value}")
    number = Fraction(m.group(1))
    if m.group(2):
        return number * Fraction(10) ** int(m.group(2)[1:])
    return number * _SUFFIXES[m.group(3) or ""]


def _meminfo_bytes() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def node_allocatable(resource: str) -> Fraction:
    """What the kubelet gives a container without a limit: the node's capacity (here, the host's)."""
    if resource == "cpu":
        return Fraction(os.cpu_count() or 1)
    if resource == "memory":
        return Fraction(_meminfo_bytes())
    if resource == "ephemeral-storage":
        return Fraction(shutil.disk_usage("/").total)
    return Fraction(0)


def resource_value(pod: k8s.Pod, ref: k8s.ResourceFieldSelector) -> str:
    """resourceFieldRef as the kubelet resolves it: the container's limit (else the node's
    allocatable) or request (else its limit, else 0), divided by ``divisor`` and rounded up."""
    container = next((c for c in pod.spec.containers + pod.spec.init_containers if c.name == ref.container_name),
                     None)
    if container is None:
        raise VolumeError(f"container {ref.container_name} not found")
    section, _, resource = ref.resource.partition(".")
    resources = container.extra.get("resources") or {}
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    given = limits.get(resource) if section == "limits" else requests.get(resource, limits.get(resource))
    if given is not None:
        value = quantity(given)
    elif section == "limits":
        value = node_allocatable(resource)
    else:
        value = Fraction(0)
    divisor = quantity(ref.divisor) if ref.divisor not in (None, "", 0, "0") else Fraction(1)
    return str(math.ceil(value / divisor))


def format_map(values: Mapping[str, str]) -> str:
    """fieldpath.FormatMap: ``key="value"`` lines (Go-quoted), sorted, no final newline."""
    from netemu.api.validation import go_quote
    return "\n".join(f"{k}={go_quote(values[k])}" for k in sorted(values))


def field_value(pod: k8s.Pod, path: str) -> str:
    if path == "metadata.labels":
        return format_map(pod.metadata.labels)
    if path == "metadata.annotations":
        return format_map(pod.metadata.annotations)
    return envvars.field_ref(pod, path)


# --------------------------------------------------------------------------- payloads


def _config_map_data(cm: k8s.ConfigMap) -> dict[str, bytes]:
    data = {k: v.encode("utf-8", "surrogateescape") for k, v in cm.data.items()}
    data.update({k: decoded(v) for k, v in cm.binary_data.items()})
    return data


def _keyed_payload(data: Mapping[str, bytes], items: tuple[k8s.KeyToPath, ...], mode: int, optional: bool,
                   missing_key: str) -> dict[str, FileProjection]:
    """configmap.MakePayload / secret.MakePayload: every key, or the chosen items."""
    if not items:
        return {k: FileProjection(v, mode) for k, v in data.items()}
    out = {}
    for item in items:
        if item.key not in data:
            if optional:
                continue
            raise VolumeError(f"{missing_key}: {item.key}")
        out[item.path] = FileProjection(data[item.key], mode if item.mode is None else item.mode)
    return out


def _object(lookup: Lookup, kind: str, name: str, optional: bool) -> Any:
    obj = lookup(kind, name)
    if obj is None and not optional:
        raise VolumeError(f'{kind.lower()} "{name}" not found')
    return obj


def _config_map_payload(lookup: Lookup, name: str, items: tuple[k8s.KeyToPath, ...], mode: int,
                        optional: bool) -> dict[str, FileProjection]:
    cm = _object(lookup, "ConfigMap", name, optional)
    if cm is None:
        return {}
    return _keyed_payload(_config_map_data(cm), items, mode, optional, "configmap references non-existent config key")


def _secret_payload(lookup: Lookup, name: str, items: tuple[k8s.KeyToPath, ...], mode: int,
                    optional: bool) -> dict[str, FileProjection]:
    secret = _object(lookup, "Secret", name, optional)
    if secret is None:
        return {}
    data = {k: decoded(v) for k, v in secret.data.items()}
    return _keyed_payload(data, items, mode, optional, "references non-existent secret key")


def _downward_payload(pod: k8s.Pod, items: tuple[k8s.DownwardAPIVolumeFile, ...],
                      mode: int) -> dict[str, FileProjection]:
    out = {}
    for item in items:
        if item.field_ref is not None:
            text = field_value(pod, item.field_ref.field_path)
        elif item.resource_field_ref is not None:
            text = resource_value(pod, item.resource_field_ref)
        else:
            continue
        out[item.path] = FileProjection(text.encode(), mode if item.mode is None else item.mode)
    return out


def _default(mode: int | None) -> int:
    return 0o644 if mode is None else mode


# --------------------------------------------------------------------------- the pod's volumes


class PodVolumes:
    """The volumes of one pod on this node (see the module's docstring)."""

    def __init__(self, directory: Path, pod: k8s.Pod, *, lookup: Lookup,
                 token_source: Callable[[], TokenSource | None], event: Callable[[str, str], None],
                 helper: SandboxHelper | None = None):
        self.directory = directory
        self._helper = helper  # writes the files at set-up when it is ready (netemu.sandbox)
        self.pod = pod
        self._lookup = lookup
        self._token_source = token_source
        self._event = event  # (reason, message) of a Warning about the pod
        self.mounted = False
        self._timer: asyncio.TimerHandle | None = None
        self._tokens: dict[tuple[str, int], bytes] = {}  # (audience, lifetime) -> the token minted last

    @property
    def volumes(self) -> tuple[k8s.Volume, ...]:
        return self.pod.spec.volumes

    def path(self, name: str) -> Path:
        return self.directory / name

    # ------------------------------------------------------------------ set-up

    def payload(self, volume: k8s.Volume, *, unsigned: bool = False) -> dict[str, FileProjection] | None:
        """The files of ``volume`` (None: a plain directory); VolumeError when not possible yet.
        ``unsigned``: a token not minted yet is left for the sandbox helper to sign
        (``(sandboxd.UNSIGNED, signing input)`` as its data)."""
        pod = self.pod
        if volume.config_map is not None:
            src = volume.config_map
            return _config_map_payload(self._lookup, src.name, src.items, _default(src.default_mode),
                                       bool(src.optional))
        if volume.secret is not None:
            src = volume.secret
            return _secret_payload(self._lookup, src.secret_name, src.items, _default(src.default_mode),
                                   bool(src.optional))
        if volume.downward_api is not None:
            return _downward_payload(pod, volume.downward_api.items, _default(volume.downward_api.default_mode))
        if volume.projected is not None:
            return self._projected_payload(volume.projected, unsigned)
        return None

    def _projected_payload(self, projected: k8s.ProjectedVolumeSource,
                           unsigned: bool = False) -> dict[str, FileProjection]:
        mode = _default(projected.default_mode)
        out: dict[str, FileProjection] = {}
        errors = []
        for src in projected.sources:
            try:
                if src.config_map is not None:
                    ref = src.config_map
                    out.update(_config_map_payload(self._lookup, ref.name, ref.items, mode, bool(ref.optional)))
                elif src.secret is not None:
                    ref = src.secret
                    out.update(_secret_payload(self._lookup, ref.name, ref.items, mode, bool(ref.optional)))
                elif src.downward_api is not None:
                    out.update(_downward_payload(self.pod, src.downward_api.items, mode))
                elif src.service_account_token is not None:
                    out[src.service_account_token.path] = FileProjection(
                        self._token(src.service_account_token, unsigned), mode)
            except VolumeError as exc:
                errors.append(str(exc))
        if errors:
            raise VolumeError(errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]")
        return out

    def _token(self, token: k8s.ServiceAccountTokenProjection, unsigned: bool = False) -> Any:
        """The pod's token for ``token``'s audience: the one minted last until it is due for a
        refresh (the kubelet's token manager caches them too); ``unsigned``, when the issuer
        drafts tokens (``drafts``: the API server's), a new one is ``(UNSIGNED, signing input)``
        for the sandbox helper to sign (``_keep_signed`` caches what it made)."""
        key = (token.audience, token.expiration_seconds or 3600)
        if key in self._tokens:
            return self._tokens[key]
        issue = self._token_source()
        if issue is None:
            raise VolumeError("failed to fetch token: netemu has no service account token issuer")
        meta = self.pod.metadata
        try:
            if unsigned and getattr(issue, "drafts", False):
                return (UNSIGNED, issue(meta.namespace, self.pod.spec.service_account_name or "default", meta.name,
                                        meta.uid, token.audience, token.expiration_seconds or 3600, signed=False))
            jwt = issue(meta.namespace, self.pod.spec.service_account_name or "default", meta.name, meta.uid,
                        token.audience, token.expiration_seconds or 3600)
        except NetemuError as exc:
            raise VolumeError(f"failed to fetch token: {exc}") from exc
        self._tokens[key] = jwt.encode()
        return self._tokens[key]

    def _request(self, volume: k8s.Volume, unsigned: bool = False) -> tuple[str, int, Payload | None]:
        """What writing ``volume`` takes (netemu.sandboxd.volume_files' arguments); VolumeError
        when its payload cannot be made (yet)."""
        payload = self.payload(volume, unsigned=unsigned)  # first: a failure leaves what is there untouched
        return (str(self.path(volume.name)), SECRET_DIR_MODE if volume.secret is not None else VOLUME_DIR_MODE,
                {path: (fp.data, fp.mode) for path, fp in payload.items()} if payload is not None else None)

    def write(self, volume: k8s.Volume) -> None:
        """Make ``volume``'s directory and (re)write its files; VolumeError when it cannot."""
        try:
            volume_files(*self._request(volume))
        except atomicwriter.PayloadError as exc:
            raise VolumeError(str(exc)) from exc

    async def _write_through_helper(self, volume: k8s.Volume) -> None:
        """``write``, the files written (and new tokens signed) by the sandbox helper when it is
        ready."""
        helper = self._helper
        try:
            if helper is not None and helper.can_sign:
                try:
                    self._keep_signed(volume, await helper.call("volume_files", *self._request(volume, True)))
                    return
                except sandbox.Unavailable:
                    pass  # gone, or too big: here, with tokens minted here
            await sandbox.run(helper, "volume_files", *self._request(volume))
        except atomicwriter.PayloadError as exc:
            raise VolumeError(str(exc)) from exc

    def _keep_signed(self, volume: k8s.Volume, signed: dict[str, bytes]) -> None:
        """Cache the tokens the helper signed for ``volume``, as ``_token`` caches its own."""
        if not signed or volume.projected is None:
            return
        for src in volume.projected.sources:
            token = src.service_account_token
            if token is not None and token.path in signed:
                self._tokens[(token.audience, token.expiration_seconds or 3600)] = signed[token.path]

    def _write_each(self, volumes: tuple[k8s.Volume, ...]) -> tuple[k8s.Volume, ...]:
        """Write ``volumes``; those that failed, each reported by the kubelet's FailedMount warning."""
        failed = []
        for volume in volumes:
            try:
                self.write(volume)
            except VolumeError as exc:
                failed.append(self._failed(volume, exc))
        return tuple(failed)

    async def _set_up_each(self, volumes: tuple[k8s.Volume, ...]) -> tuple[k8s.Volume, ...]:
        """``_write_each`` at set-up: through the sandbox helper."""
        failed = []
        for volume in volumes:
            try:
                await self._write_through_helper(volume)
            except VolumeError as exc:
                failed.append(self._failed(volume, exc))
        return tuple(failed)

    def _failed(self, volume: k8s.Volume, exc: VolumeError) -> k8s.Volume:
        self._event("FailedMount", f'MountVolume.SetUp failed for volume "{volume.name}" : {exc}')
        return volume

    async def set_up(self, changed: Callable[[], asyncio.Event], waiting: Callable[[], None] = lambda: None) -> None:
        """Write every volume, retrying the failed ones at each change of a ConfigMap or Secret
        (``changed()``: an event set at the next one) and every RESYNC seconds; ``waiting()``
        after each pass that left some unwritten."""
        pending = self.volumes
        for volume in pending:
            source = unemulated_source(volume)
            if source:
                log.warning("pod %s/%s: volume %s: %s volumes are not emulated: an empty directory",
                            self.pod.metadata.namespace, self.pod.metadata.name, volume.name, source)
        while True:
            next_change = changed()
            pending = await self._set_up_each(pending)
            if not pending:
                break
            waiting()
            try:
                await asyncio.wait_for(next_change.wait(), RESYNC)
            except asyncio.TimeoutError:
                pass
        self.mounted = True
        self._schedule_token_refresh()

    # ------------------------------------------------------------------ updates

    def config_changed(self, kind: str, namespace: str, name: str) -> None:
        """A ConfigMap or Secret changed: rewrite the mounted volumes that use it."""
        if not self.mounted or namespace != self.pod.metadata.namespace:
            return
        self._write_each(tuple(v for v in self.volumes if (kind, name) in _references(v)))

    def pod_changed(self, pod: k8s.Pod) -> None:
        """The pod object changed: new labels or annotations reach its downward API files."""
        old = self.pod.metadata
        self.pod = pod
        if not self.mounted or (old.labels == pod.metadata.labels and old.annotations == pod.metadata.annotations):
            return
        self._write_each(tuple(v for v in self.volumes if _has_downward_api(v)))

    def _schedule_token_refresh(self) -> None:
        lifetimes = [src.service_account_token.expiration_seconds or 3600 for v in self.volumes if v.projected
                     for src in v.projected.sources if src.service_account_token is not None]
        if not lifetimes:
            return
        delay = min(min(lifetimes) * TOKEN_REFRESH_FRACTION, TOKEN_REFRESH_MAX)
        self._timer = asyncio.get_running_loop().call_later(delay, self._refresh_tokens)

    def _refresh_tokens(self) -> None:
        self._tokens.clear()
        self._write_each(tuple(v for v in self.volumes if v.projected and any(
            s.service_account_token is not None for s in v.projected.sources)))
        self._schedule_token_refresh()

    def close(self) -> None:
        """Stop refreshing (the pod is going); its directory goes with the pod's."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ------------------------------------------------------------------ mounts

    def mounts_for(self, container: k8s.Container, env: Mapping[str, str], *, renew: bool = False) -> list[Mount]:
        """Each of ``container``'s volumeMounts: the directory (or, with subPath, the directory
        or file inside the volume, made as a directory when missing, as the kubelet does) to show
        at its mountPath. VolumeError for a subPath that leaves its volume.

        A subPath file is pinned when the container starts (``renew``), as the kubelet binds it
        once: a hard link keeps the version it started with for the container's lifetime (its
        execs included), so later updates of a ConfigMap do not reach it, as in Kubernetes."""
        mounts = []
        for index, m in enumerate(container.volume_mounts):
            root = self.path(m.name)
            source = root
            sub = envvars.expand(m.sub_path_expr, env) if m.sub_path_expr else m.sub_path
            if sub:
                source = root / sub
                if not os.path.lexists(source):
                    source.mkdir(parents=True, exist_ok=True)
                resolved = Path(os.path.realpath(source))
                if resolved != root and root.resolve() not in resolved.parents:
                    raise VolumeError(f'subpath "{sub}" not within volume path "{root}"')
                if resolved.is_file():
                    source = self._pinned(container.name, index, source, renew)
            mounts.append(Mount(source, m.mount_path, m.read_only, m.name))
        return mounts

    def _pinned(self, container: str, index: int, source: Path, renew: bool) -> Path:
        pin = self.directory.parent / "subpaths" / container / str(index)
        if renew or not pin.exists():
            pin.parent.mkdir(parents=True, exist_ok=True)
            for _ in range(5):  # the file may be replaced by an update between the two calls
                try:
                    pin.unlink(missing_ok=True)
                    os.link(os.path.realpath(source), pin)
                    break
                except FileNotFoundError:
                    continue
        return pin


def _references(volume: k8s.Volume) -> set[tuple[str, str]]:
    """The (kind, name) of each ConfigMap and Secret ``volume`` reads."""
    found = set()
    if volume.config_map is not None:
        found.add(("ConfigMap", volume.config_map.name))
    if volume.secret is not None:
        found.add(("Secret", volume.secret.secret_name))
    for src in volume.projected.sources if volume.projected else ():
        if src.config_map is not None:
            found.add(("ConfigMap", src.config_map.name))
        if src.secret is not None:
            found.add(("Secret", src.secret.name))
    return found


def _has_downward_api(volume: k8s.Volume) -> bool:
    return volume.downward_api is not None or (
        volume.projected is not None and any(s.downward_api is not None for s in volume.projected.sources))
