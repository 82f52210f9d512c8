"""Strategic merge patch as kube-apiserver applies it: lists with a patch merge key merge by it,
the directives act, other lists are replaced; and merge patch (RFC 7386)."""
from __future__ import annotations

from netemu.api.objects import Deployment, Pod
from netemu.kubeapi.patch import merge_patch, strategic_merge_patch

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "1", "b": "2"},
                                                       "finalizers": ["x"]},
       "spec": {"containers": [
           {"name": "app", "image": "nginx", "ports": [{"containerPort": 80}, {"containerPort": 81}],
            "env": [{"name": "A", "value": "1"}], "args": ["one", "two"]},
           {"name": "side", "image": "busybox"}]}}


def test_containers_merge_by_name_and_ports_by_container_port():
    patched = strategic_merge_patch(POD, {"spec": {"containers": [
        {"name": "app", "image": "nginx:1.27", "ports": [{"containerPort": 81, "name": "alt"}],
         "env": [{"name": "B", "value": "2"}]}]}}, Pod)
    app, side = patched["spec"]["containers"]
    assert app["image"] == "nginx:1.27" and side == {"name": "side", "image": "busybox"}
    assert app["ports"] == [{"containerPort": 80}, {"containerPort": 81, "name": "alt"}]
    assert app["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert POD["spec"]["containers"][0]["image"] == "nginx"  # the original is left alone


def test_lists_without_a_merge_key_are_replaced_and_null_removes():
    patched = strategic_merge_patch(POD, {"metadata": {"labels": {"a": None, "c": "3"}, "finalizers": ["y"]},
                                          "spec": {"containers": [{"name": "app", "args": ["three"]}]}}, Pod)
    assert patched["metadata"]["labels"] == {"b": "2", "c": "3"}
    assert patched["metadata"]["finalizers"] == ["x", "y"]  # merged as a set, as Kubernetes does
    assert patched["spec"]["containers"][0]["args"] == ["three"]


def test_directives():
    deleted = strategic_merge_patch(POD, {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}, Pod)
    assert [c["name"] for c in deleted["spec"]["containers"]] == ["app"]
    ordered = strategic_merge_patch(POD, {"spec": {"$setElementOrder/containers": [{"name": "side"}, {"name": "app"}],
                                                   "containers": [{"name": "side", "image": "alpine"}]}}, Pod)
    assert [(c["name"], c["image"]) for c in ordered["spec"]["containers"]] == [("side", "alpine"), ("app", "nginx")]
    replaced = strategic_merge_patch(POD, {"metadata": {"labels": {"$patch": "replace", "only": "this"}}}, Pod)
    assert replaced["metadata"]["labels"] == {"only": "this"}
    primitive = strategic_merge_patch(POD, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}}, Pod)
    assert primitive["metadata"]["finalizers"] == []


def test_retain_keys_drops_what_it_does_not_name():
    deployment = {"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}
    patched = strategic_merge_patch(deployment, {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}},
                                    Deployment)
    assert patched["spec"]["strategy"] == {"type": "Recreate"}


def test_merge_patch_replaces_lists():
    patched = merge_patch(POD, {"spec": {"containers": [{"name": "only"}]}, "metadata": {"labels": {"a": None}}})
    assert patched["spec"]["containers"] == [{"name": "only"}] and patched["metadata"]["labels"] == {"b": "2"}
