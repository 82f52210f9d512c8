"""Kinds a real bundle carries that netemu keeps without emulating (objects.STORED_ONLY): stored
as given and served like any kind, said to have no effect at apply and in describe, never
blocking the rest of the bundle. A CustomResourceDefinition is refused, saying why."""
from __future__ import annotations

import datetime
import os

import pytest
import yaml

from kubeapi_support import KUBECTL, api_fixtures
from netemu import printers
from netemu.errors import ManifestErrors
from netemu.networkpolicy import NOT_ENFORCED


pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")

BUNDLE = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: app}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: "app:reader"}
rules: [{apiGroups: [""], resources: [pods], verbs: [get, list]}]
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 3
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {mode: fast}
"""

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec: {group: example.com, names: {kind: Widget, plural: widgets}, scope: Namespaced, versions: []}
"""


api, kubectl, namespace = api_fixtures("stored")


def test_the_bundle_applies_and_says_what_is_only_stored(api, namespace):
    lines = api.apply(BUNDLE, namespace=namespace)
    note = " (stored only: netemu does not emulate this kind)"
    assert lines == ["serviceaccount/app created", "persistentvolumeclaim/data created" + note,
                     "networkpolicy.networking.k8s.io/deny-all created", f"Warning: {NOT_ENFORCED}",
                     "role.rbac.authorization.k8s.io/app:reader created" + note,
                     "horizontalpodautoscaler.autoscaling/web created" + note, "configmap/settings created"]
    assert api.get("ConfigMap", "settings", namespace).data == {"mode": "fast"}
    again = api.apply(BUNDLE.replace("maxReplicas: 3", "maxReplicas: 4"), namespace=namespace)
    assert again[4] == "horizontalpodautoscaler.autoscaling/web configured" + note and \
        all(line.split()[1] == "unchanged" for line in again[:4] + again[5:])
    assert api.get("HorizontalPodAutoscaler", "web", namespace).extra["spec"]["maxReplicas"] == 4


def test_served_as_given_through_the_api(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=BUNDLE)
    pvc = yaml.safe_load(kubectl("get", "pvc", "data", "-n", namespace, "-o", "yaml").stdout)
    assert pvc["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    role = yaml.safe_load(kubectl("get", "role", "app:reader", "-n", namespace, "-o", "yaml").stdout)
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
    rows = kubectl("get", "hpa,netpol,sa", "-n", namespace, "-o", "name").stdout.split()
    assert rows == ["horizontalpodautoscaler.autoscaling/web", "networkpolicy.networking.k8s.io/deny-all",
                    "serviceaccount/app", "serviceaccount/default"]  # ServiceAccount is emulated: default is there
    kubectl("patch", "hpa", "web", "-n", namespace, "--type=merge", "-p", '{"spec":{"maxReplicas":5}}')
    hpa = yaml.safe_load(kubectl("get", "hpa", "web", "-n", namespace, "-o", "yaml").stdout)
    assert hpa["spec"]["maxReplicas"] == 5 and hpa["metadata"]["generation"] == 2
    kubectl("delete", "-n", namespace, "-f", "-", input=BUNDLE)
    assert kubectl("get", "pvc,hpa,netpol,sa,roles", "-n", namespace, "-o", "name").stdout == "serviceaccount/default\n"


def test_describe_says_it_has_no_effect(api, kubectl, namespace):
    api.apply(BUNDLE, namespace=namespace)
    assert kubectl("describe", "pvc", "data", "-n", namespace).stdout.startswith("Name:")  # kubectl's own describer
    text = printers.describe(api.get("PersistentVolumeClaim", "data", namespace), now=datetime.datetime.now())
    assert "netemu does not emulate PersistentVolumeClaim objects (they have no effect)" in text
    assert "AccessModes:" in text and "Storage:  1Gi" in text


def test_a_namespace_takes_them_along(api, kubectl, namespace):
    api.apply(BUNDLE, namespace=namespace)
    kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=60s")
    assert all(not api.list(kind, namespace) for kind in ("PersistentVolumeClaim", "NetworkPolicy", "Role"))


def test_names_are_still_validated(kubectl, namespace):
    bad = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: Bad_Name}\nspec: {}\n"
    r = kubectl("apply", "-n", namespace, "-f", "-", input=bad, check=False)
    assert r.returncode == 1 and 'metadata.name: Invalid value: "Bad_Name"' in r.stderr, r.stderr


def test_a_custom_resource_definition_is_refused_saying_why(api, namespace):
    with pytest.raises(ManifestErrors) as refused:
        api.apply(CRD + "---\n" + BUNDLE, namespace=namespace)
    assert ('no matches for kind "CustomResourceDefinition" in version "apiextensions.k8s.io/v1": netemu serves '
            "no custom resources") in str(refused.value)
    # all or nothing: the only ConfigMap is the cluster's own CA bundle (controllers.rootcacert)
    assert [cm.metadata.name for cm in api.list("ConfigMap", namespace)] == ["kube-root-ca.crt"]
