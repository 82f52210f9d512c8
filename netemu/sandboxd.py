"""The sandbox helper's own loop, and the work it does (see netemu.sandbox, which starts it).

Run as ``python -c 'from netemu.sandboxd import main; main()'`` with its standard input a
SOCK_SEQPACKET socket to the cluster process, started like any process of the cluster
(netemu.spawn.cluster_child_setup: own session, dies with the cluster, recorded in the ledger).
Each request is one message, a pickled ``(id, operation, arguments)``; the answer is
``(id, True, value)`` or ``(id, False, error)`` with ``error`` one of the tuples ``encode_error``
makes, in the order the requests came (one at a time: a pod's CNI DEL is never served before its
ADD). When the cluster closes its end (or dies), the helper exits.

The operations are the functions of ``OPERATIONS``: the cluster calls the same functions itself
while the helper is not there, so a request gives the same files and the same answer either way.
Pickle is safe here: the socket is a socketpair the cluster made for this child alone.
"""
from __future__ import annotations

import errno
import os
import pickle
import socket
from pathlib import Path
from typing import Any, Callable

from netemu.errors import CNIError
from netemu.kubelet import atomicwriter
from netemu.kubelet.atomicwriter import FileProjection

MAX_MESSAGE = 1 << 20

Payload = dict[str, tuple[Any, int]]  # path -> (bytes, or a token to sign: (UNSIGNED, input)), mode


def loopback_cni(command: str, conf: dict[str, Any], container_id: str, ifname: str) -> tuple[str, str] | None:
    """netemu's loopback-alias plugin, called as the loopback fabric calls it: the address and
    gateway of the ADD result's first IP (None for other commands); CNIError on failure."""
    from netemu.cni import loopback_alias, skel
    result = skel.invoke(loopback_alias.PLUGIN, command, conf, container_id=container_id, netns="", ifname=ifname)
    if result is None:
        return None
    ip = result.ips[0]
    return str(ip.address.ip), str(ip.gateway or "")


def pod_files(directory: str, resolv_conf: str, pod_ip: str, hostname: str, fqdn: str) -> None:
    """A pod's resolv.conf and hosts (netemu.kubelet.podfiles.write)."""
    from netemu.kubelet import podfiles  # here: podfiles needs the kubelet's volumes, which need this module
    podfiles.write(Path(directory), resolv_conf=resolv_conf, pod_ip=pod_ip, hostname=hostname, fqdn=fqdn)


def volume_files(target: str, mode: int, payload: Payload | None) -> dict[str, bytes]:
    """A volume's directory (made with ``mode`` when new) and, when given, its files written
    atomically (netemu.kubelet.atomicwriter); atomicwriter.PayloadError for a path it refuses.

    A file whose data is ``(UNSIGNED, signing_input)`` is a service account token to sign first,
    with the key ``set_signing_key`` gave (the helper's alone): the tokens made are returned, by
    path."""
    signed: dict[str, bytes] = {}
    make_volume_dir(Path(target), mode)
    if payload is not None:
        files = {}
        for path, (data, file_mode) in payload.items():
            if isinstance(data, tuple):
                data = signed[path] = _sign(data)
            files[path] = FileProjection(data, file_mode)
        atomicwriter.write(Path(target), files)
    return signed


UNSIGNED = "unsigned token"
_signing_key: Any = None  # the cluster's token signing key, in the helper's process only


def set_signing_key(pem: bytes) -> None:
    """Keep the cluster's service account signing key (PKCS#8 PEM) for ``volume_files``."""
    global _signing_key
    from cryptography.hazmat.primitives import serialization
    _signing_key = serialization.load_pem_private_key(pem, password=None)


def _sign(data: tuple[str, str]) -> bytes:
    from netemu.kubeapi.tokens import sign
    if data[0] != UNSIGNED or _signing_key is None:
        raise RuntimeError("a token to sign without a signing key")
    return sign(_signing_key, data[1]).encode()


def make_volume_dir(target: Path, mode: int) -> None:
    """``target`` as a directory with ``mode`` when it is new; one that is there is left as it is."""
    try:
        os.mkdir(target)
    except FileExistsError:
        if not target.is_dir():
            raise
        return
    except FileNotFoundError:  # the pod's volumes directory is not there yet either
        os.makedirs(target, exist_ok=True)
    os.chmod(target, mode)


def read_manifests(text_path: str, source: str, namespace: str | None, out_path: str) -> bool:
    """Read the manifests in the file ``text_path`` (part of a stream, netemu.api.load_part) and
    pickle what it gives into ``out_path`` (both in the cluster's state directory); False, and
    nothing written, when that part has a problem."""
    from netemu.api import load_part
    part = load_part(Path(text_path).read_text(), source, namespace)
    if part is None:
        return False
    with open(out_path, "wb") as out:
        pickle.dump(part, out, pickle.HIGHEST_PROTOCOL)
    return True


OPERATIONS: dict[str, Callable[..., Any]] = {
    "loopback_cni": loopback_cni, "pod_files": pod_files, "volume_files": volume_files,
    "set_signing_key": set_signing_key, "read_manifests": read_manifests}


def encode_error(exc: BaseException) -> tuple[Any, ...]:
    """An operation's failure as plain data (``decode_error`` raises it again in the cluster)."""
    if isinstance(exc, CNIError):
        return ("cni", int(exc.code), exc.msg, exc.details)
    if isinstance(exc, atomicwriter.PayloadError):
        return ("payload", str(exc))
    if isinstance(exc, OSError):
        return ("os", exc.errno or errno.EIO, exc.strerror or str(exc), exc.filename)
    return ("internal", f"{type(exc).__name__}: {exc}")


def decode_error(error: tuple[Any, ...]) -> BaseException:
    kind = error[0]
    if kind == "cni":
        return CNIError(error[1], error[2], error[3])
    if kind == "payload":
        return atomicwriter.PayloadError(error[1])
    if kind == "os":
        return OSError(error[1], error[2], error[3]) if error[3] is not None else OSError(error[1], error[2])
    return RuntimeError(f"sandbox helper: {error[1]}")


def serve(sock: socket.socket) -> None:
    """Answer requests until the cluster closes its end."""
    while True:
        try:
            data = sock.recv(MAX_MESSAGE)
        except InterruptedError:
            continue
        if not data:
            return
        request_id, operation, args = pickle.loads(data)
        try:
            answer = (request_id, True, OPERATIONS[operation](*args))
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller
            answer = (request_id, False, encode_error(exc))
        sock.send(pickle.dumps(answer, pickle.HIGHEST_PROTOCOL))


def main() -> None:
    sock = socket.socket(fileno=0)
    try:
        serve(sock)
    except (BrokenPipeError, ConnectionResetError):
        pass
