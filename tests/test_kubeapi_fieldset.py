"""Field sets, comparison, merge and conflicts of server-side apply (netemu.kubeapi.fieldset,
serverapply), on objects in their JSON form."""
from __future__ import annotations

import pytest

from netemu.api.objects import Deployment, Service
from netemu.kubeapi import fieldset, serverapply
from netemu.kubeapi.resources import BY_KIND
from netemu.kubeapi.status import ApiError

DEPLOY = fieldset.schema(Deployment)


def _deployment(replicas=1, image="nginx", ports=(80,)):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                         {"name": "app", "image": image, "ports": [{"containerPort": p} for p in ports]}]}}}}


def test_field_set_of_an_applied_configuration():
    members = fieldset.field_set(fieldset.owned_part(_deployment()), DEPLOY)
    assert sorted(fieldset.path_string(p) for p in members) == [
        ".metadata.labels.app", ".spec.replicas", ".spec.selector", ".spec.template.metadata.labels.app",
        '.spec.template.spec.containers[name="app"]', '.spec.template.spec.containers[name="app"].image',
        '.spec.template.spec.containers[name="app"].name',
        '.spec.template.spec.containers[name="app"].ports[containerPort=80,protocol="TCP"]',
        '.spec.template.spec.containers[name="app"].ports[containerPort=80,protocol="TCP"].containerPort']


def test_fields_v1_round_trip_and_dot_marks_members_with_children():
    members = frozenset({("f:metadata", "f:labels"), ("f:metadata", "f:labels", "f:app"), ("f:spec", "f:replicas"),
                         ("f:metadata", "f:finalizers", 'v:"x"')})
    tree = fieldset.to_fields_v1(members)
    assert tree == {"f:metadata": {"f:finalizers": {'v:"x"': {}}, "f:labels": {".": {}, "f:app": {}}},
                    "f:spec": {"f:replicas": {}}}
    assert fieldset.from_fields_v1(tree) == members


def test_compare_sees_added_modified_and_removed_fields():
    old = fieldset.owned_part(_deployment(replicas=1, ports=(80, 81)))
    new = fieldset.owned_part(_deployment(replicas=2, ports=(80,)))
    new["metadata"]["labels"]["tier"] = "front"
    result = fieldset.compare(old, new, DEPLOY)
    assert result.modified == {("f:spec", "f:replicas")}
    assert result.added == {("f:metadata", "f:labels", "f:tier")}
    port = ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"app"}', "f:ports",
            'k:{"containerPort":81,"protocol":"TCP"}')
    assert result.removed == {port, port + ("f:containerPort",)}


def test_merge_joins_list_maps_by_key_and_replaces_atomic_lists():
    live = {"spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}], "selector": {"a": "1"}}}
    config = {"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443}], "selector": {"b": "2"}}}
    merged = fieldset.merge(live, config, fieldset.schema(Service))
    assert merged["spec"]["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 8080, "name": "http"},
                                       {"port": 443}]
    assert merged["spec"]["selector"] == {"b": "2"}  # a service's selector is an atomic map


def test_apply_conflicts_then_force_takes_over():
    r = BY_KIND["ConfigMap"]
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}
    live = serverapply.apply(r, None, cm, "first", force=False)
    changed = {**cm, "data": {"a": "2"}}
    with pytest.raises(ApiError) as refused:
        serverapply.apply(r, live, changed, "second", force=False)
    assert refused.value.code == 409
    assert refused.value.message == 'Apply failed with 1 conflict: conflict with "first": .data.a'
    assert refused.value.details == {"causes": [{"reason": "FieldManagerConflict", "message": 'conflict with "first"',
                                                 "field": ".data.a"}]}
    forced = serverapply.apply(r, live, changed, "second", force=True)
    assert forced["data"] == {"a": "2"}
    assert [(m["manager"], m["fieldsV1"]) for m in forced["metadata"]["managedFields"]] == [
        ("second", {"f:data": {"f:a": {}}})]


def test_an_object_without_managed_fields_belongs_to_before_first_apply():
    r = BY_KIND["ConfigMap"]
    live = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "uid": "u"}, "data": {"a": "1"}}
    with pytest.raises(ApiError) as refused:
        serverapply.apply(r, live, {**live, "data": {"a": "2"}}, "kubectl", force=False)
    assert refused.value.message == ('Apply failed with 1 conflict: conflict with "before-first-apply" using v1: '
                                     ".data.a")
