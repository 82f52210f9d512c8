"""StatefulSet in the API layer: decoding, defaults, validation (create and update) in the API
server's words, the API server's apply/scale/delete, and kubectl-style printing."""
from __future__ import annotations

import copy
import random
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from netemu import api, printers
from netemu.api import codec
from netemu.api.objects import Pod, StatefulSet
from netemu.apiserver import ApiServer, resolve_kind
from netemu.errors import InvalidError, ManifestErrors
from netemu.store import Store

NOW = datetime(2024, 5, 1, 10, 5, 30, tzinfo=UTC)

STS = {
    "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"},
    "spec": {"selector": {"matchLabels": {"app": "nginx"}}, "serviceName": "nginx", "replicas": 2,
             "template": {"metadata": {"labels": {"app": "nginx"}},
                          "spec": {"containers": [{"name": "nginx", "image": "nginx",
                                                   "ports": [{"containerPort": 80, "name": "web"}]}]}}},
}
VOLUME_CLAIM = {"metadata": {"name": "www"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
DNS1123_LABEL = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
                 "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
                 "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
UPDATE_FORBIDDEN = ("spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', "
                    "'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' "
                    "are forbidden")


def merged(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``patch`` merged in (dicts merge, anything else replaces; None deletes)."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def load(data: dict[str, Any]) -> StatefulSet:
    (manifest,) = api.load_text(yaml.safe_dump(data), source="sts.yaml")
    return manifest.obj


def problems_of(data: dict[str, Any]) -> list[str]:
    try:
        load(data)
    except ManifestErrors as err:
        return [str(p) for e in err.errors for p in e.problems]
    return []


# --------------------------------------------------------------------------- decoding and defaults


def test_defaults_as_the_api_server_sets_them() -> None:
    spec = api.to_dict(load(STS))["spec"]
    assert spec["podManagementPolicy"] == "OrderedReady"
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    assert spec["revisionHistoryLimit"] == 10
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    assert spec["template"]["spec"]["restartPolicy"] == "Always"
    assert load(merged(STS, {"spec": {"replicas": None}})).spec.replicas == 1


def test_volume_claim_templates_are_kept_verbatim() -> None:
    sts = load(merged(STS, {"spec": {"volumeClaimTemplates": [VOLUME_CLAIM]}}))
    assert api.to_dict(sts)["spec"]["volumeClaimTemplates"] == [VOLUME_CLAIM]


def test_on_delete_gets_no_rolling_update() -> None:
    sts = load(merged(STS, {"spec": {"updateStrategy": {"type": "OnDelete"}}}))
    assert sts.spec.update_strategy.rolling_update is None


def test_unknown_field_is_refused() -> None:
    assert problems_of(merged(STS, {"spec": {"serviceNmae": "x"}})) == [
        "spec.serviceNmae: unknown field"]


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("patch, expected", [
    ({"spec": {"serviceName": None}}, []),
    ({"metadata": {"name": "web.v1"}}, ['metadata.name: Invalid value: "web.v1": must not contain dots']),
    ({"metadata": {"name": "Web"}}, [f'metadata.name: Invalid value: "Web": {DNS1123_LABEL}']),
    ({"spec": {"selector": None}}, ["spec.selector: Required value",
                                    ("spec.template.metadata.labels: Invalid value: "
                                     'map[string]string{"app":"nginx"}: `selector` does not match template `labels`')]),
    ({"spec": {"selector": {"matchLabels": {"app": "other"}}}},
     [('spec.template.metadata.labels: Invalid value: map[string]string{"app":"nginx"}: '
       "`selector` does not match template `labels`")]),
    ({"spec": {"selector": {"matchLabels": None}}},
     [("spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), "
       "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for statefulset")]),
    ({"spec": {"replicas": -1}}, ["spec.replicas: Invalid value: -1: must be greater than or equal to 0"]),
    ({"spec": {"minReadySeconds": -5}},
     ["spec.minReadySeconds: Invalid value: -5: must be greater than or equal to 0"]),
    ({"spec": {"ordinals": {"start": -1}}},
     ["spec.ordinals.start: Invalid value: -1: must be greater than or equal to 0"]),
    ({"spec": {"podManagementPolicy": "Random"}},
     ["spec.podManagementPolicy: Invalid value: \"Random\": must be 'OrderedReady' or 'Parallel'"]),
    ({"spec": {"updateStrategy": {"type": "Recreate"}}},
     [('spec.updateStrategy: Invalid value: apps.StatefulSetUpdateStrategy{Type:"Recreate", '
       "RollingUpdate:(*apps.RollingUpdateStatefulSetStrategy)(nil)}: must be 'RollingUpdate' or 'OnDelete'")]),
    ({"spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": {"partition": 1}}}},
     [("spec.updateStrategy.rollingUpdate: Invalid value: &apps.RollingUpdateStatefulSetStrategy{Partition:1, "
       "MaxUnavailable:(*intstr.IntOrString)(nil)}: only allowed for updateStrategy 'RollingUpdate'")]),
    ({"spec": {"updateStrategy": {"rollingUpdate": {"partition": -2}}}},
     ["spec.updateStrategy.rollingUpdate.partition: Invalid value: -2: must be greater than or equal to 0"]),
    ({"spec": {"updateStrategy": {"rollingUpdate": {"maxUnavailable": 0}}}},
     ["spec.updateStrategy.rollingUpdate.maxUnavailable: Invalid value: 0: cannot be 0"]),
    ({"spec": {"updateStrategy": {"rollingUpdate": {"maxUnavailable": "150%"}}}},
     ['spec.updateStrategy.rollingUpdate.maxUnavailable: Invalid value: 150%: must not be greater than 100%']),
    ({"spec": {"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Keep"}}},
     [('spec.persistentVolumeClaimRetentionPolicy.whenDeleted: Unsupported value: "Keep": '
       'supported values: "Retain", "Delete"')]),
    ({"spec": {"template": {"spec": {"restartPolicy": "Never"}}}},
     ['spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always"']),
    ({"spec": {"template": {"spec": {"activeDeadlineSeconds": 5}}}},
     ["spec.template.spec.activeDeadlineSeconds: Forbidden: activeDeadlineSeconds in StatefulSet is not Supported"]),
    ({"spec": {"template": {"spec": {"containers": [{"name": "nginx"}]}}}},
     ["spec.template.spec.containers[0].image: Required value"]),
], ids=["no-service-name", "name-with-dots", "name-upper-case", "no-selector", "selector-mismatch", "empty-selector",
        "negative-replicas", "negative-min-ready", "negative-start", "bad-policy", "bad-strategy",
        "rolling-update-with-on-delete", "negative-partition", "max-unavailable-zero", "max-unavailable-over-100",
        "bad-retention", "restart-never", "active-deadline", "template-without-image"])
def test_validation(patch: dict[str, Any], expected: list[str]) -> None:
    assert problems_of(merged(STS, patch)) == expected


@pytest.mark.parametrize("patch, allowed", [
    ({"spec": {"replicas": 5}}, True),
    ({"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}}}, True),
    ({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 1}}}}, True),
    ({"spec": {"minReadySeconds": 3}}, True),
    ({"spec": {"ordinals": {"start": 2}}}, True),
    ({"spec": {"serviceName": "other"}}, False),
    ({"spec": {"podManagementPolicy": "Parallel"}}, False),
    ({"spec": {"volumeClaimTemplates": [VOLUME_CLAIM]}}, False),
    ({"spec": {"revisionHistoryLimit": 3}}, False),
], ids=["replicas", "template", "strategy", "min-ready", "ordinals", "service-name", "policy",
        "volume-claims", "history-limit"])
def test_update_validation(patch: dict[str, Any], allowed: bool) -> None:
    old, new = load(STS), load(merged(STS, patch))
    assert [str(p) for p in api.validate_update(old, new)] == ([] if allowed else [UPDATE_FORBIDDEN])


# --------------------------------------------------------------------------- API server


@pytest.fixture
def server() -> ApiServer:
    s = ApiServer(Store(), service_cidr="10.96.0.0/12", rng=random.Random(7))
    s.bootstrap()
    return s


@pytest.mark.parametrize("alias", ["sts", "statefulset", "statefulsets", "statefulset.apps", "statefulsets.apps",
                                   "StatefulSet"])
def test_kind_aliases(alias: str) -> None:
    from netemu.cluster import resolve_kind as cluster_resolve_kind
    assert resolve_kind(alias) == cluster_resolve_kind(alias) == "StatefulSet"
    assert printers.resolve_kind(alias) is StatefulSet


def test_apply_scale_and_delete(server: ApiServer) -> None:
    manifests = api.load_text(yaml.safe_dump(STS), source="sts.yaml")
    assert server.apply(manifests) == ["statefulset.apps/web created"]
    assert server.apply(manifests) == ["statefulset.apps/web unchanged"]
    assert server.scale("sts", "default", "web", 5) == "statefulset.apps/web scaled"
    assert server.store.must_get("StatefulSet", "default", "web").spec.replicas == 5
    with pytest.raises(InvalidError, match='The StatefulSet "web" is invalid: spec.replicas: Invalid value: -1'):
        server.scale("statefulset", "default", "web", -1)
    with pytest.raises(InvalidError, match="cannot be scaled"):
        server.scale("svc", "default", "kubernetes", 1)
    assert server.delete("statefulsets.apps", "default", "web") == 'statefulset.apps "web" deleted'
    assert server.store.get("StatefulSet", "default", "web") is None


def test_update_of_an_immutable_field_is_refused(server: ApiServer) -> None:
    server.apply(api.load_text(yaml.safe_dump(STS), source="sts.yaml"))
    changed = api.load_text(yaml.safe_dump(merged(STS, {"spec": {"serviceName": "other"}})), source="sts.yaml")
    with pytest.raises(ManifestErrors) as err:
        server.apply(changed)
    assert str(err.value) == f"sts.yaml[doc 1] StatefulSet default/web: {UPDATE_FORBIDDEN}"


def test_deleting_the_statefulset_deletes_its_pods(server: ApiServer) -> None:
    server.apply(api.load_text(yaml.safe_dump(STS), source="sts.yaml"))
    sts = server.store.must_get("StatefulSet", "default", "web")
    owner = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": sts.metadata.uid,
             "controller": True}
    pod, _ = codec.from_dict(Pod, {"metadata": {"name": "web-0", "namespace": "default", "ownerReferences": [owner]},
                                   "spec": {"containers": [{"name": "nginx", "image": "nginx"}]},
                                   "status": {"phase": "Pending"}})
    server.store.create(pod)
    server.delete("sts", "default", "web")
    assert server.store.get("Pod", "default", "web-0") is None  # never bound: removed at once


# --------------------------------------------------------------------------- printing


def printed_sts(**status: Any) -> StatefulSet:
    data = merged(STS, {"metadata": {"namespace": "default", "creationTimestamp": "2024-05-01T10:00:00Z",
                                     "labels": {"app": "nginx"}},
                        "spec": {"volumeClaimTemplates": [VOLUME_CLAIM]},
                        "status": {"replicas": 2, "readyReplicas": 2, **status}})
    sts, problems = codec.from_dict(StatefulSet, data)
    assert not problems, problems
    return api.apply_defaults(sts)


@pytest.mark.parametrize("kind, wide, expected", [
    ("statefulsets", False, "NAME   READY   AGE\nweb    1/2     5m30s\n"),
    ("sts", True, "NAME   READY   AGE     CONTAINERS   IMAGES\nweb    1/2     5m30s   nginx        nginx\n"),
    ("all", False, "NAME                   READY   AGE\nstatefulset.apps/web   1/2     5m30s\n"),
], ids=["plain", "wide", "all"])
def test_get_statefulsets(kind: str, wide: bool, expected: str) -> None:
    out = printers.render_table(kind, [printed_sts(readyReplicas=1)], wide=wide, now=NOW)
    assert out == expected


def test_describe_statefulset() -> None:
    pods = [Pod(status=codec.from_dict(Pod, {"status": {"phase": phase}})[0].status)
            for phase in ("Running", "Running", "Pending")]
    text = printers.describe(printed_sts(), events=[], related={"pods": pods}, now=NOW)
    assert text == (
        "Name:               web\n"
        "Namespace:          default\n"
        "CreationTimestamp:  Wed, 01 May 2024 10:00:00 +0000\n"
        "Selector:           app=nginx\n"
        "Labels:             app=nginx\n"
        "Annotations:        <none>\n"
        "Replicas:           2 desired | 2 total\n"
        "Update Strategy:    RollingUpdate\n"
        "  Partition:        0\n"
        "Pods Status:        2 Running / 1 Waiting / 0 Succeeded / 0 Failed\n"
        "Pod Template:\n"
        "  Labels:  app=nginx\n"
        "  Containers:\n"
        "   nginx:\n"
        "    Image:         nginx\n"
        "    Port:          80/TCP\n"
        "    Host Port:     0/TCP\n"
        "    Environment:   <none>\n"
        "    Mounts:        <none>\n"
        "  Volumes:         <none>\n"
        "  Node-Selectors:  <none>\n"
        "  Tolerations:     <none>\n"
        "Volume Claims:\n"
        "  Name:          www\n"
        "  StorageClass:  \n"
        "  Labels:        <none>\n"
        "  Annotations:   <none>\n"
        "  Capacity:      1Gi\n"
        "  Access Modes:  [ReadWriteOnce]\n"
        "Events:          <none>\n")
