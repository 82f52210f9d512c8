"""What the scale work (issue 15) changed on the per-object hot paths keeps its behaviour:
``evolve`` builds what ``dataclasses.replace`` builds, the API classes' direct ``__init__`` builds
what dataclasses' own does, the store hands each change only to the
subscribers of its kind (in subscription order, with the subscribers of the moment it is
delivered), loopback-alias reads a node's network config once and still sees a changed one, and
a Cluster-policy endpoint set is categorised once for all nodes."""
from __future__ import annotations

import dataclasses
import datetime
import functools
import uuid
from pathlib import Path

import pytest

from netemu.api import objects as k8s
from netemu.cni import host_local, loopback_alias
from netemu.cni.skel import invoke
from netemu.frozen import evolve, frozen_dataclass
from netemu.names import new_uid
from netemu.proxy import proxier
from netemu.proxy.serviceport import EndpointInfo, Verdict, categorize
from netemu.store import Store, now_rfc3339


def test_evolve_builds_what_replace_builds() -> None:
    meta = k8s.ObjectMeta(name="web", namespace="default", labels={"app": "web"})
    pod = k8s.Pod(metadata=meta)
    for changes in ({"uid": "u-1", "generation": 2}, {}, {"labels": {"app": "other"}}):
        made, expected = evolve(meta, **changes), dataclasses.replace(meta, **changes)
        assert made == expected and made.__dict__ == expected.__dict__ and made is not meta
    bound = evolve(pod, spec=evolve(pod.spec, node_name="node-1"))
    assert bound == dataclasses.replace(pod, spec=dataclasses.replace(pod.spec, node_name="node-1"))
    assert pod.spec.node_name == ""  # the original is untouched
    with pytest.raises(dataclasses.FrozenInstanceError):
        bound.spec.node_name = "node-2"  # type: ignore[misc]


def test_the_direct_init_builds_what_the_dataclass_init_builds() -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Stock:
        name: str
        count: int = 3
        tags: dict[str, str] = dataclasses.field(default_factory=dict)

    @frozen_dataclass
    class Direct:
        name: str
        count: int = 3
        tags: dict[str, str] = dataclasses.field(default_factory=dict)

    assert "__setattr__" not in Direct.__init__.__code__.co_names  # its own: no object.__setattr__ per field
    for kwargs in ({"name": "a"}, {"name": "b", "count": 0, "tags": {"x": "y"}}):
        stock, direct = Stock(**kwargs), Direct(**kwargs)
        assert stock.__dict__ == direct.__dict__ and list(stock.__dict__) == list(direct.__dict__)
    assert Direct(name="a").tags is not Direct(name="a").tags  # a fresh default each time
    assert repr(Direct(name="a")) == "test_the_direct_init_builds_what_the_dataclass_init_builds.<locals>.Direct(name='a', count=3, tags={})"
    for bad in ({}, {"name": "a", "nope": 1}):
        with pytest.raises(TypeError):
            Direct(**bad)
    with pytest.raises(TypeError):
        Direct("a")  # type: ignore[misc]  # keyword-only, as the stock one
    with pytest.raises(dataclasses.FrozenInstanceError):
        Direct(name="a").count = 4  # type: ignore[misc]
    assert k8s.ObjectMeta(name="web") == dataclasses.replace(k8s.ObjectMeta(), name="web")
    assert "__setattr__" not in k8s.ObjectMeta.__init__.__code__.co_names
    assert "__setattr__" not in k8s.STORED_ONLY_TYPES[0].__init__.__code__.co_names


def test_new_uids_are_random_version_4_uuids() -> None:
    made = {new_uid() for _ in range(5000)}
    assert len(made) == 5000
    for text in made:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    assert {text[19] for text in made} == set("89ab")  # every variant nibble turns up


def test_evolve_refuses_unknown_fields_and_keeps_post_init() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
        evolve(k8s.ObjectMeta(), nope=1)

    @dataclasses.dataclass(frozen=True)
    class Checked:
        value: int
        double: int = 0

        def __post_init__(self) -> None:
            object.__setattr__(self, "double", self.value * 2)

    assert evolve(Checked(1), value=5).double == 10  # through dataclasses.replace, __post_init__ runs

    @dataclasses.dataclass(frozen=True)
    class Cached:
        value: int = 1

        @functools.cached_property
        def double(self) -> int:
            return self.value * 2

    cached = Cached()
    assert cached.double == 2
    assert evolve(cached, value=5).double == 10  # the cached 2 is not carried over


def test_evolve_copies_api_objects_without_calling_init(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of ``evolve``: no second ``__init__`` for an API object (``replace`` makes one)."""
    meta = evolve(k8s.ObjectMeta(name="web"), uid="u-0")  # the class is looked at once, unpatched
    calls = []
    real_init = k8s.ObjectMeta.__init__
    monkeypatch.setattr(k8s.ObjectMeta, "__init__", lambda self, **kw: calls.append(kw) or real_init(self, **kw))
    assert evolve(meta, uid="u-1").uid == "u-1"
    assert calls == []


def test_store_delivers_each_change_to_its_kinds_subscribers_in_order() -> None:
    store = Store()
    seen: list[tuple[str, str]] = []
    store.subscribe(lambda e: seen.append(("any", e.kind)))
    unsubscribe_services = store.subscribe(lambda e: seen.append(("services", e.kind)), kinds=["Service"])
    store.subscribe(lambda e: seen.append(("pods", e.kind)), kinds=["Pod"])
    store.create(k8s.Pod(metadata=k8s.ObjectMeta(name="p", namespace="default")))
    store.create(k8s.Service(metadata=k8s.ObjectMeta(name="s", namespace="default")))
    store.drain()
    assert seen == [("any", "Pod"), ("pods", "Pod"), ("any", "Service"), ("services", "Service")]
    seen.clear()
    unsubscribe_services()
    store.create(k8s.Service(metadata=k8s.ObjectMeta(name="t", namespace="default")))
    store.drain()
    assert seen == [("any", "Service")]


def test_store_subscribers_of_the_moment_get_the_change() -> None:
    """One subscribed while a change is delivered gets the next change, not that one; one
    unsubscribed meanwhile still gets that change (the old list-copy semantics)."""
    store = Store()
    seen: list[str] = []
    late: list[str] = []
    unsubscribe_second = None

    def first(event) -> None:
        seen.append(f"first {event.obj.metadata.name}")
        if event.obj.metadata.name == "a":
            store.subscribe(lambda e: late.append(e.obj.metadata.name), kinds=["Pod"])
            unsubscribe_second()

    store.subscribe(first, kinds=["Pod"])
    unsubscribe_second = store.subscribe(lambda e: seen.append(f"second {e.obj.metadata.name}"), kinds=["Pod"])
    store.create(k8s.Pod(metadata=k8s.ObjectMeta(name="a", namespace="default")))
    store.create(k8s.Pod(metadata=k8s.ObjectMeta(name="b", namespace="default")))
    store.drain()
    assert seen == ["first a", "second a", "first b"]
    assert late == ["b"]


def _parsed(stamp: str) -> datetime.datetime:
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)


def test_store_timestamps_are_the_current_second() -> None:
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    stamp = now_rfc3339()
    created = Store().create(k8s.Pod(metadata=k8s.ObjectMeta(name="p", namespace="default")))
    after = datetime.datetime.now(datetime.timezone.utc)
    assert before <= _parsed(stamp) <= _parsed(created.metadata.creation_timestamp) <= after


def test_loopback_alias_reads_a_network_config_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads = []
    real_load = host_local.load_config
    monkeypatch.setattr(host_local, "load_config", lambda *a: loads.append(a) or real_load(*a))
    config = loopback_alias.network_config("node-cache", "127.244.7.0/24", str(tmp_path))
    ips = [str(invoke(loopback_alias.PLUGIN, "ADD", config, f"pod-{i}", "", "eth0").ips[0].address) for i in range(3)]
    assert ips == ["127.244.7.2/24", "127.244.7.3/24", "127.244.7.4/24"]
    assert len(loads) == 1  # one parse for the node's three pods (was one per ADD)
    changed = loopback_alias.network_config("node-cache", "127.244.7.0/24", str(tmp_path), range_start="127.244.7.50")
    result = invoke(loopback_alias.PLUGIN, "ADD", changed, "pod-9", "", "eth0")
    assert str(result.ips[0].address) == "127.244.7.50/24"  # a changed config is read again
    assert len(loads) == 2


def test_cluster_policy_endpoints_are_categorised_once_for_every_node() -> None:
    endpoints = (EndpointInfo("127.244.1.2", 8080, node="node-1", ready=True),
                 EndpointInfo("127.244.2.2", 8080, node="node-2", ready=False, serving=True, terminating=True))
    first = proxier._categorized(endpoints, "node-1", False)
    assert first == categorize(endpoints, "node-1", False) == (Verdict.SERVE, endpoints[:1])
    assert proxier._categorized(endpoints, "node-2", False) is first  # the same answer object
    assert proxier._categorized(endpoints, "node-2", True) == (Verdict.SERVE, endpoints[1:])  # Local: per node
    assert proxier._categorized(endpoints, "node-3", True) == (Verdict.DROP, ())
    assert proxier._categorized(endpoints, "node-1", True) == (Verdict.SERVE, endpoints[:1])


def test_a_watched_deletion_carries_the_deletions_resource_version() -> None:
    """The change log copies a deleted object with the deletion's version only when a watcher
    looks at it; what the watcher gets is what it got when the copy was made at once."""
    from netemu.kubeapi.history import ChangeLog
    store = Store()
    changes = ChangeLog(store)
    store.create(k8s.ConfigMap(metadata=k8s.ObjectMeta(name="a", namespace="default")))
    store.drain()
    created = store.resource_version
    gone = store.delete("ConfigMap", "default", "a")
    store.drain()
    watcher = changes.watch("ConfigMap", lambda obj: True, created)
    change = watcher.queue.get_nowait()
    assert change.type == "DELETED" and change.rv == created + 1
    assert change.obj.metadata.resource_version == str(created + 1) and change.obj.metadata.name == "a"
    assert change.obj is change.obj  # made once
    assert gone.metadata.resource_version == str(created)  # the store's last state is untouched


async def test_the_collector_waits_for_a_big_apply_to_settle_and_comes_back() -> None:
    """After a big apply the cycle collector stays off while the cluster is not quiet (small
    applies meanwhile do not cut that short), then comes back with what was built frozen; after
    a small apply at once; a stopped cluster gives it back."""
    import asyncio
    import gc

    from netemu.cluster import _CyclePause

    assert gc.isenabled()
    store = Store()
    pause = _CyclePause(store)
    try:
        pause.hold()
        assert not gc.isenabled()
        pause.release(big=False)
        assert gc.isenabled()

        pause.QUIET = 3600.0  # never quiet during this part
        pause.hold()
        pause.release(big=True)
        store.create(k8s.ConfigMap(metadata=k8s.ObjectMeta(name="c", namespace="default")))
        await asyncio.sleep(0)
        pause.hold()
        pause.release(big=False)  # a small apply meanwhile
        assert not gc.isenabled()
        pause.close()  # the cluster stops before it is quiet
        assert gc.isenabled()

        pause.QUIET = 0.01
        pause.hold()
        built = [object()]  # what the apply built
        pause.release(big=True)
        for _ in range(3000):  # quiet: it comes back
            if gc.isenabled():
                break
            await asyncio.sleep(0.01)
        assert gc.isenabled(), "the collector did not come back once the cluster was quiet"
        assert not any(obj is built for obj in gc.get_objects())  # frozen: no collection walks it
    finally:
        pause.close()
        gc.enable()
        gc.unfreeze()


def test_the_collector_comes_back_when_the_loop_ends_without_the_cluster_stopping() -> None:
    import asyncio
    import gc

    from netemu.cluster import _CyclePause

    async def big_apply_then_return() -> None:
        pause = _CyclePause(Store())
        pause.hold()
        pause.release(big=True)  # waiting for quiet when asyncio.run cancels what is left
    try:
        asyncio.run(big_apply_then_return())
        assert gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
