"""The kubelet's shared index of service variables (netemu.kubelet.serviceenv) and its bounded
set of open log files (netemu.kubelet.logfiles): what thousands of pods need to start in linear
time and memory, with the variables and logs each container had before."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from netemu.kubelet.envvars import service_env, visible_services
from netemu.kubelet.logfiles import LogFiles
from netemu.kubelet.serviceenv import ServiceEnvIndex
from netemu.store import Store

from test_controllers_helpers import pod, service


def add_service(store: Store, name: str, ip: str, namespace: str = "default", port: int = 80) -> None:
    store.create(service(name, {"app": name}, ports=[{"port": port, "name": "http"}], namespace=namespace,
                         clusterIP=ip))
    store.drain()


def expected(store: Store, p) -> dict[str, str]:
    """What the kubelet's rule gives, computed from scratch over every service."""
    return service_env(visible_services(p, store.list("Service")))


def test_variables_match_the_kubelets_rule_through_adds_changes_and_deletes() -> None:
    store = Store()
    index = ServiceEnvIndex(store)
    add_service(store, "kubernetes", "127.96.0.1", port=443)
    web, other = pod("web-1", {}, namespace="shop"), pod("x", {}, namespace="other")
    unlinked = pod("quiet", {}, namespace="shop", enableServiceLinks=False)
    steps = [
        lambda: add_service(store, "db", "127.96.0.7", "shop"),
        lambda: add_service(store, "api", "127.96.0.8", "shop", port=8080),
        lambda: add_service(store, "cache", "127.96.0.9", "other"),
        lambda: store.modify("Service", "shop", "db", lambda s: dataclasses.replace(
            s, spec=dataclasses.replace(s.spec, ports=(dataclasses.replace(s.spec.ports[0], port=5432),)))),
        lambda: store.delete("Service", "shop", "api"),
        lambda: add_service(store, "kubernetes", "127.96.0.20", "shop"),  # the namespace's own wins
        lambda: store.modify("Service", "default", "kubernetes", lambda s: dataclasses.replace(
            s, spec=dataclasses.replace(s.spec, ports=(dataclasses.replace(s.spec.ports[0], port=6443),)))),
        lambda: store.delete("Service", "shop", "kubernetes"),
    ]
    for step in steps:
        step()
        store.drain()
        for p in (web, other, unlinked):
            assert dict(index.env(p)) == expected(store, p)
    assert index.env(web)["DB_SERVICE_PORT"] == "5432" and "API_SERVICE_HOST" not in index.env(web)
    assert index.env(unlinked) == {k: v for k, v in expected(store, unlinked).items()}
    assert "DB_SERVICE_HOST" not in index.env(unlinked)


def test_containers_of_a_namespace_share_one_mapping_and_keep_theirs_when_services_come() -> None:
    store = Store()
    index = ServiceEnvIndex(store)
    add_service(store, "a", "127.96.0.2")
    first, second = index.env(pod("p1", {})), index.env(pod("p2", {}))
    assert first is second, "one mapping for the namespace, not a copy per container"
    add_service(store, "b", "127.96.0.3")
    later = index.env(pod("p3", {}))
    assert "B_SERVICE_HOST" not in first, "a started container's variables are fixed"
    assert later["B_SERVICE_HOST"] == "127.96.0.3" and later["A_SERVICE_HOST"] == "127.96.0.2"


def test_services_added_between_container_starts_stay_in_few_layers() -> None:
    store = Store()
    index = ServiceEnvIndex(store)
    n = 1000
    for i in range(n):
        add_service(store, f"svc-{i}", f"127.96.{i // 250}.{i % 250 + 1}")
        env = index.env(pod(f"p{i}", {}))  # a container starts after every new service
    assert dict(env) == expected(store, pod("p", {}))
    layers = len(getattr(env, "maps", [env]))
    assert layers <= math.log2(n) + 2, f"{layers} layers for {n} services"


def test_an_unlinked_pod_sees_only_the_kubernetes_service() -> None:
    store = Store()
    index = ServiceEnvIndex(store)
    add_service(store, "kubernetes", "127.96.0.1", port=443)
    add_service(store, "db", "127.96.0.7")
    env = index.env(pod("quiet", {}, enableServiceLinks=False))
    assert env["KUBERNETES_SERVICE_HOST"] == "127.96.0.1" and "DB_SERVICE_HOST" not in env
    index.close()
    add_service(store, "late", "127.96.0.8")
    assert "LATE_SERVICE_HOST" not in index.env(pod("p", {})), "closed: no longer follows the store"


def test_log_files_stay_under_the_limit_and_keep_every_line(tmp_path: Path) -> None:
    logs = LogFiles(limit=2)
    writers = [logs.writer(f"uid-{i}", "c", tmp_path / f"{i}.log") for i in range(5)]
    assert all((tmp_path / f"{i}.log").exists() for i in range(5)), "each log exists from the start"
    for round_ in range(3):
        for i, write in enumerate(writers):
            write(f"line {round_} of {i}")
            assert logs.open_count <= 2
    logs.close()
    for i in range(5):
        assert (tmp_path / f"{i}.log").read_text() == "".join(f"line {r} of {i}\n" for r in range(3))


def test_a_closed_pods_writer_writes_nothing_and_a_new_one_appends(tmp_path: Path) -> None:
    logs = LogFiles(limit=4)
    path = tmp_path / "p.log"
    write = logs.writer("uid", "c", path)
    write("before")
    logs.close_pod("uid")
    write("after close")
    assert path.read_text() == "before\n" and logs.open_count == 0
    logs.writer("uid", "c", path)("again")
    assert path.read_text() == "before\nagain\n"
    logs.close()
    assert logs.open_count == 0


def test_kubelets_share_one_budget_of_open_log_files(tmp_path: Path) -> None:
    from netemu.kubelet import logfiles
    nodes = [LogFiles() for _ in range(3)]
    writers = [n.writer(f"uid-{i}-{j}", "c", tmp_path / f"{i}-{j}.log")
               for i, n in enumerate(nodes) for j in range(logfiles.OPEN_FILES)]
    for write in writers:
        write("hello")
    assert sum(n.open_count for n in nodes) <= logfiles.OPEN_FILES
    for n in nodes:
        n.close()
    assert all(p.read_text() == "hello\n" for p in tmp_path.iterdir())
