"""The ServiceAccount admission plugin: what kube-apiserver does to every pod it creates.

- ``spec.serviceAccountName`` defaults to ``default``; ``spec.serviceAccount`` (deprecated)
  mirrors it.
- The service account must exist in the pod's namespace, else the pod is refused:
  ``pods "x" is forbidden: error looking up service account NS/NAME: serviceaccount "NAME" not
  found`` (a pod with ``generateName`` is named by it, as admission runs before names are
  generated). kube-apiserver waits a moment for ``default``, which the serviceaccounts controller
  makes when a namespace appears; netemu's lookup asks the controller to make it at once.
- Unless ``automountServiceAccountToken`` is false (the pod's wins over the account's), the pod
  gets the projected volume ``kube-api-access-<5 chars>`` (a bound token, the cluster's CA from
  the ``kube-root-ca.crt`` ConfigMap, the namespace) mounted read-only at
  ``/var/run/secrets/kubernetes.io/serviceaccount`` in every container and init container that
  does not mount something there already.
- A pod without ``imagePullSecrets`` gets the account's.

``admit_pod`` is pure: the caller says how to find a service account (the API server looks in
the batch being planned, the cluster's components in the store).
"""
from __future__ import annotations

from typing import Any, Callable

from netemu.api.objects import (
    ConfigMapProjection, DownwardAPIProjection, DownwardAPIVolumeFile, KeyToPath, ObjectFieldSelector, ObjectMeta, Pod,
    PodSpec, ProjectedVolumeSource, ServiceAccount, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
)
from netemu.errors import AlreadyExistsError, InvalidError
from netemu.frozen import evolve
from netemu.names import random_suffix

DEFAULT_SERVICE_ACCOUNT = "default"
TOKEN_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_VOLUME_PREFIX = "kube-api-access-"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
ROOT_CA_KEY = "ca.crt"
TOKEN_EXPIRATION_SECONDS = 3607  # the kubelet refreshes it; kube-apiserver extends it (tokens.py)
PROJECTED_DEFAULT_MODE = 0o644

FindServiceAccount = Callable[[str, str], Any]  # (namespace, name) → ServiceAccount or None


def ensure_default(store: Any, namespace: str) -> Any | None:
    """The namespace's ``default`` account, made now when missing; None when the namespace is
    gone or terminating."""
    sa = store.get("ServiceAccount", namespace, DEFAULT_SERVICE_ACCOUNT)
    if sa is not None:
        return sa
    ns = store.get("Namespace", "", namespace)
    if ns is None or ns.metadata.deletion_timestamp is not None:
        return None
    try:
        return store.create(ServiceAccount(metadata=ObjectMeta(name=DEFAULT_SERVICE_ACCOUNT, namespace=namespace)))
    except AlreadyExistsError:
        return store.get("ServiceAccount", namespace, DEFAULT_SERVICE_ACCOUNT)



class ServiceAccountForbiddenError(InvalidError):
    """The pod names a service account its namespace does not have."""


def forbidden_message(pod: Pod, name: str) -> str:
    meta = pod.metadata
    shown = meta.generate_name or meta.name
    return (f'pods "{shown}" is forbidden: error looking up service account {meta.namespace}/{name}: '
            f'serviceaccount "{name}" not found')


def token_volume(name: str) -> Volume:
    """The projected volume kube-apiserver injects (``kube-api-access-xxxxx``)."""
    return Volume(name=name, projected=ProjectedVolumeSource(default_mode=PROJECTED_DEFAULT_MODE, sources=(
        VolumeProjection(service_account_token=ServiceAccountTokenProjection(
            expiration_seconds=TOKEN_EXPIRATION_SECONDS, path="token")),
        VolumeProjection(config_map=ConfigMapProjection(
            name=ROOT_CA_CONFIGMAP, items=(KeyToPath(key=ROOT_CA_KEY, path=ROOT_CA_KEY),))),
        VolumeProjection(downward_api=DownwardAPIProjection(items=(DownwardAPIVolumeFile(
            path="namespace", field_ref=ObjectFieldSelector(api_version="v1", field_path="metadata.namespace")),))),
    )))


def is_token_volume(volume: Volume) -> bool:
    return volume.name.startswith(TOKEN_VOLUME_PREFIX) and volume.projected is not None


def _automount(pod: Pod, sa: Any) -> bool:
    """shouldAutomount: the pod's setting, else the account's, else true."""
    own = pod.spec.extra.get("automountServiceAccountToken")
    if own is not None:
        return bool(own)
    if sa.automount_service_account_token is not None:
        return bool(sa.automount_service_account_token)
    return True


def _with_mount(containers: tuple[Any, ...], volume: str) -> tuple[Any, ...]:
    out = []
    for c in containers:
        if not any(m.mount_path == TOKEN_MOUNT_PATH for m in c.volume_mounts):
            c = evolve(c, volume_mounts=c.volume_mounts + (
                VolumeMount(name=volume, mount_path=TOKEN_MOUNT_PATH, read_only=True),))
        out.append(c)
    return tuple(out)


def _mount_token(spec: PodSpec) -> PodSpec:
    if any(is_token_volume(v) for v in spec.volumes):
        return spec  # admitted already
    taken = {v.name for v in spec.volumes}
    name = TOKEN_VOLUME_PREFIX + random_suffix()
    while name in taken:
        name = TOKEN_VOLUME_PREFIX + random_suffix()
    return evolve(spec, volumes=spec.volumes + (token_volume(name),),
                               containers=_with_mount(spec.containers, name),
                               init_containers=_with_mount(spec.init_containers, name))


def admit_pod(pod: Pod, find: FindServiceAccount, *, mount_token: bool = True) -> Pod:
    """The pod as the plugin admits it; ServiceAccountForbiddenError when its account is missing.
    ``mount_token`` false (the cluster serves no Kubernetes API, so there is no token to mount)
    leaves the token volume out."""
    spec = pod.spec
    name = spec.service_account_name or spec.extra.get("serviceAccount") or DEFAULT_SERVICE_ACCOUNT
    sa = find(pod.metadata.namespace, name)
    if sa is None:
        raise ServiceAccountForbiddenError(forbidden_message(pod, name))
    extra = {**spec.extra, "serviceAccount": name}
    if not extra.get("imagePullSecrets") and sa.image_pull_secrets:
        extra["imagePullSecrets"] = [{"name": ref.name} for ref in sa.image_pull_secrets]
    spec = evolve(spec, service_account_name=name, extra=extra)
    if mount_token and _automount(pod, sa):
        spec = _mount_token(spec)
    return evolve(pod, spec=spec)


def keep_admitted(live: Pod, new: Pod) -> Pod:
    """``new`` (a pod update, as a re-applied manifest gives it) keeping what admission added to
    ``live``: the account's name and the token volume and mounts (the pod spec is immutable, and
    kubectl apply's patch would keep them too)."""
    spec = new.spec
    if spec.service_account_name and spec.service_account_name != live.spec.service_account_name:
        return new  # a real change: validation says it is not allowed
    extra = dict(spec.extra)
    for key in ("serviceAccount", "imagePullSecrets"):
        if key not in extra and key in live.spec.extra:
            extra[key] = live.spec.extra[key]
    spec = evolve(spec, service_account_name=live.spec.service_account_name, extra=extra)
    injected = next((v for v in live.spec.volumes if is_token_volume(v)), None)
    if injected is not None and not any(v.name == injected.name for v in spec.volumes):
        def keep_mounts(old: tuple[Any, ...], containers: tuple[Any, ...]) -> tuple[Any, ...]:
            mounted = {c.name for c in old if any(m.name == injected.name for m in c.volume_mounts)}
            return tuple(evolve(c, volume_mounts=c.volume_mounts + (
                VolumeMount(name=injected.name, mount_path=TOKEN_MOUNT_PATH, read_only=True),))
                if c.name in mounted and not any(m.name == injected.name for m in c.volume_mounts) else c
                for c in containers)
        spec = evolve(spec, volumes=spec.volumes + (injected,),
                                   containers=keep_mounts(live.spec.containers, spec.containers),
                                   init_containers=keep_mounts(live.spec.init_containers, spec.init_containers))
    return evolve(new, spec=spec)


__all__ = ["DEFAULT_SERVICE_ACCOUNT", "ROOT_CA_CONFIGMAP", "ROOT_CA_KEY", "ServiceAccountForbiddenError",
           "TOKEN_MOUNT_PATH", "admit_pod", "forbidden_message", "keep_admitted", "token_volume"]
