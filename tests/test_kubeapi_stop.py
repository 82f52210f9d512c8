"""Stopping a cluster while a client of its Kubernetes API holds a connection open. In a module of
its own: the test starts and stops its own cluster, with no other cluster running in the process."""
from __future__ import annotations

import socket
import ssl
import threading

import yaml

from kubeapi_support import cluster_with_api
from netemu.kubeapi import KUBECONFIG


def test_a_client_that_keeps_its_connection_open_does_not_stop_the_cluster_stopping(tmp_path):
    """An idle keep-alive connection (a client library's pool) that never answers TLS's
    close_notify once kept the socket, and so the cluster's event loop, from ever closing."""
    with cluster_with_api(tmp_path / "state", "keepalive") as handle:
        directory = handle.cluster.state.directory
        server = yaml.safe_load((directory / KUBECONFIG).read_text())["clusters"][0]["cluster"]["server"]
        host, port = server.removeprefix("https://").rsplit(":", 1)
        context = ssl.create_default_context(cafile=str(directory / "ca.crt"))
        token = (directory / "token").read_text().strip()
        raw = socket.create_connection((host, int(port)))
        tls = context.wrap_socket(raw, server_hostname=host)
        tls.sendall(f"GET /version HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
                    "Connection: keep-alive\r\n\r\n".encode())
        assert tls.recv(65536).startswith(b"HTTP/1.1 200")
        stopping = threading.Thread(target=handle.close)
        stopping.start()
        stopping.join(timeout=120)  # a hang is the failure; a slow stop is not
        alive = stopping.is_alive()
        tls.close()
        assert not alive, "the cluster did not stop while a client held a connection open"
