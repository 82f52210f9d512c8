"""A cluster with its Kubernetes API for a test module (tests/test_kubeapi_*.py), its state under
the test's tmp dir so that nothing touches the user's ``~/.kube`` or state root."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from netemu.kubeapi import KUBECONFIG
from netemu.pytest_plugin import NetemuCluster
from netemu.scenario.clusters import unique_name


@contextlib.contextmanager
def cluster_with_api(state: Path, name: str, **options: Any) -> Iterator[NetemuCluster]:
    saved = os.environ.get("NETEMU_STATE_DIR")
    os.environ["NETEMU_STATE_DIR"] = str(state)
    try:
        nodes = options.pop("nodes", 1)
        with NetemuCluster(nodes, name=unique_name(name), **options) as handle:
            yield handle
    finally:
        if saved is None:
            os.environ.pop("NETEMU_STATE_DIR", None)
        else:
            os.environ["NETEMU_STATE_DIR"] = saved


KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"


# A pod that writes one numbered line every 0.2 s, for following logs and attaching.
TICKER = """
apiVersion: v1
kind: Pod
metadata: {name: ticker}
spec:
  containers:
  - name: main
    image: busybox
    command: [sh, -c, "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.2; done"]
"""


def kubectl_runner(kubeconfig: Path, home: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run(*args, check=True, input=None)``: the real kubectl against ``kubeconfig`` (its cache in
    ``home``); ``check`` turns a non-zero exit into an AssertionError with kubectl's stderr."""
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), HOME=str(home))

    def run(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([KUBECTL, *args], env=env, capture_output=True, text=True, input=input, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result
    run.env = env  # type: ignore[attr-defined]
    return run


def poll(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """``check()``'s first truthy result, asked every 0.1 s; an AssertionError naming ``what``
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def namespace_for(kubectl: Callable[..., Any], request: Any) -> str:
    """A fresh namespace named after the test, created with kubectl."""
    name = unique_name(request.node.name.removeprefix("test_")[:20].replace("_", "-"), limit=40)
    kubectl("create", "namespace", name)
    return name


def api_fixtures(name: str, **options: Any) -> tuple[Any, Any, Any]:
    """The ``api``, ``kubectl`` and ``namespace`` fixtures of a test module, assigned at its top
    (``api, kubectl, namespace = api_fixtures("rollout")``): one cluster with its API for the
    module, the real kubectl against its kubeconfig, a fresh namespace for each test."""
    @pytest.fixture(scope="module")
    def api(tmp_path_factory: Any) -> Iterator[NetemuCluster]:
        with cluster_with_api(tmp_path_factory.mktemp("state"), name, **options) as handle:
            yield handle

    @pytest.fixture
    def kubectl(api: NetemuCluster, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
        return kubectl_runner(api.cluster.state.directory / KUBECONFIG, tmp_path)

    @pytest.fixture
    def namespace(kubectl: Callable[..., Any], request: Any) -> str:
        return namespace_for(kubectl, request)

    return api, kubectl, namespace


def api_request(api: Any, path: str, accept: str = "application/json", *, method: str = "GET",
                body: dict[str, Any] | None = None, content_type: str = "application/json",
                ) -> tuple[int, dict[str, str], bytes]:
    """``method`` ``path`` of the module's API server with ``accept`` (and ``body``), authenticated
    by the cluster's bearer token: status, headers and body, an error status included."""
    directory = api.cluster.state.directory
    context = ssl.create_default_context(cafile=str(directory / "ca.crt"))
    headers = {"Accept": accept, "Authorization": f"Bearer {(directory / 'token').read_text()}",
               "Content-Type": content_type}
    request = urllib.request.Request(api.cluster.kube_api.url + path, headers=headers, method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()
