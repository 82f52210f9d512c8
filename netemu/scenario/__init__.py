"""Scenario files: Kubernetes manifests plus steps that assert what Kubernetes guarantees.

    from netemu.scenario import run_files
    status = run_files(["scenarios/"], sys.stdout, junit="report.xml")

Modules: ``model`` (reading and validating files), ``steps`` and ``step_*`` (the step kinds),
``refs`` (``{{ svc.NAME.clusterIP }}`` references), ``matchers`` (expectations), ``fieldpath``,
``selectors``, ``probes`` (curl, dig, nslookup, TCP/UDP connects), ``capabilities``
(``requires:``), ``clusters`` (unique names and address slots), ``runner`` and ``report``.
The runner sits on ``netemu.Cluster`` and nothing below it. ``netemu run --kubeconfig`` runs the
same steps on any cluster through its API: ``remote_runner`` (namespaces, capabilities,
``--cleanup``), ``remote`` (``RemoteCluster``, the surface the steps use), ``remote_traffic``
(tools run in pods through ``pods/exec``) and ``remote_api`` (the official ``kubernetes`` client).
"""
from __future__ import annotations

from typing import Any

__all__ = [
    "Scenario", "Step", "cluster_capabilities", "host_capabilities", "load_scenario", "load_scenarios",
    "parse_scenario", "run_files", "run_scenario", "run_scenarios", "slot_ranges", "start_cluster",
    "unique_name",
]
_HOME = {
    "Scenario": "model", "Step": "model", "load_scenario": "model", "load_scenarios": "model",
    "parse_scenario": "model", "run_files": "runner", "run_scenario": "runner", "run_scenarios": "runner",
    "cluster_capabilities": "capabilities", "host_capabilities": "capabilities", "slot_ranges": "clusters",
    "start_cluster": "clusters", "unique_name": "clusters",
}


def __getattr__(name: str) -> Any:  # lazy: the pytest plugin imports small parts of this package
    if name not in _HOME:
        raise AttributeError(name)
    import importlib
    return getattr(importlib.import_module(f"netemu.scenario.{_HOME[name]}"), name)
