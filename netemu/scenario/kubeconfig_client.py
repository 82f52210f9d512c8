"""The official client's ``ApiClient`` for one kubeconfig context, with its credentials kept in memory.

The client (``kubernetes.config``) hands the TLS layer file paths, so it writes what a kubeconfig
embeds (``certificate-authority-data``, ``client-certificate-data``, ``client-key-data``) to
files of its own in the temporary directory and deletes them at interpreter exit. A run that is
killed (``kill -9``, a CI runner's timeout, SIGTERM) never gets there, and the cluster's admin key
stays in /tmp. Here the client writes them into a private directory (mode 0700) that is removed at
once, each file first copied into a memory file (``netemu.memfiles``), which the client reaches as
``/proc/self/fd/N`` and which goes with the process however it ends.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from netemu.memfiles import memory_file, path_of

# The Configuration fields the kubeconfig loader sets to file paths (data written to files).
_PATH_FIELDS = ("ssl_ca_cert", "cert_file", "key_file")


class KubeconfigClient:
    """``api_client``: an ``ApiClient`` for ``context`` of ``kubeconfig`` (None: its current one);
    ``close`` closes it and the memory files."""

    def __init__(self, kubeconfig: str, context: str | None = None) -> None:
        from kubernetes.client import ApiClient, Configuration
        from kubernetes.config import load_kube_config
        configuration = Configuration()
        self._memory_files: list[int] = []
        # A credential plugin's refreshed certificate is written here later (the loader makes
        # the directory again), and goes at ``close`` or, like the loader's files, at exit.
        self._private = private = tempfile.mkdtemp(prefix="netemu-kubeconfig-")
        try:
            load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration,
                             persist_config=False, temp_file_path=private)
            for field in _PATH_FIELDS:
                path = getattr(configuration, field)
                if path and os.path.dirname(os.path.abspath(path)) == private:
                    setattr(configuration, field, self._in_memory(field, path))
        except BaseException:
            self._close_memory_files()
            raise
        finally:
            shutil.rmtree(private, ignore_errors=True)
        self.api_client: Any = ApiClient(configuration=configuration)

    def _in_memory(self, field: str, path: str) -> str:
        with open(path, "rb") as written:
            fd = memory_file(f"netemu-kubeconfig-{field}", written.read())
        self._memory_files.append(fd)
        return path_of(fd)

    def _close_memory_files(self) -> None:
        for fd in self._memory_files:
            os.close(fd)
        self._memory_files.clear()

    def close(self) -> None:
        self.api_client.close()
        self._close_memory_files()
        shutil.rmtree(self._private, ignore_errors=True)
