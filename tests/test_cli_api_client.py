"""The CLI's client of a cluster's Kubernetes API (netemu.kubeapi.client) trusts only what the
cluster left in its verified state directory: a listener on the kubeconfig's port that cannot
prove itself with the cluster's CA (another user's process on a reused port) gets no request and
no token; a credential file that is not ours is refused before anything is sent."""
from __future__ import annotations

import os
import socket
import ssl
import threading

import pytest

from netemu import statedir
from netemu.errors import ClusterError, UnsafeStateError
from netemu.kubeapi import KUBECONFIG, certs, kubeconfig
from netemu.kubeapi.client import ApiClient


def _state_dir(tmp_path, port: int, credentials: certs.Credentials):
    root = tmp_path / "state"
    root.mkdir(mode=0o700)
    directory = root / "c"
    directory.mkdir(mode=0o700)
    credentials.save(directory)
    config = kubeconfig.build("c", f"https://127.0.0.1:{port}", credentials.ca_cert, credentials.client_cert,
                              credentials.client_key)
    statedir.write_file(directory, KUBECONFIG, kubeconfig.dump(config).encode())
    return directory


def test_a_listener_without_the_clusters_certificate_gets_nothing(tmp_path):
    ours, impostor = certs.make_credentials("c"), certs.make_credentials("c")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    (tmp_path / "impostor.crt").write_bytes(impostor.server_cert)
    (tmp_path / "impostor.key").write_bytes(impostor.server_key)
    context.load_cert_chain(tmp_path / "impostor.crt", tmp_path / "impostor.key")
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    received.append(tls.recv(65536))
            except (ssl.SSLError, OSError):
                pass  # the client refused the handshake

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    directory = _state_dir(tmp_path, listener.getsockname()[1], ours)
    client = ApiClient.for_cluster("c", directory)
    with pytest.raises(ClusterError, match="CERTIFICATE_VERIFY_FAILED"):
        client.get("/api/v1/namespaces/default/pods")
    thread.join(timeout=30)
    listener.close()
    assert not any(received), received  # neither the request nor the token crossed


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_a_token_file_that_is_not_ours_is_refused(tmp_path):
    directory = _state_dir(tmp_path, 1, certs.make_credentials("c"))
    os.chown(directory / certs.TOKEN, 65534, 65534)
    with pytest.raises(UnsafeStateError, match="token"):
        ApiClient.for_cluster("c", directory)
