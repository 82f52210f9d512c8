"""A cluster with its Kubernetes API for a test module (tests/test_kubeapi_*.py), its state under
the test's tmp dir so that nothing touches the user's ``~/.kube`` or state root."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

from netemu.pytest_plugin import NetemuCluster
from netemu.scenario.clusters import unique_name


@contextlib.contextmanager
def cluster_with_api(state: Path, name: str, **options: Any) -> Iterator[NetemuCluster]:
    saved = os.environ.get("NETEMU_STATE_DIR")
    os.environ["NETEMU_STATE_DIR"] = str(state)
    try:
        with NetemuCluster(1, name=unique_name(name), **options) as handle:
            yield handle
    finally:
        if saved is None:
            os.environ.pop("NETEMU_STATE_DIR", None)
        else:
            os.environ["NETEMU_STATE_DIR"] = saved
