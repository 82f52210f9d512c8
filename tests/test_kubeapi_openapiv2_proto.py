"""``/openapi/v2`` as protobuf (gnostic's ``openapi.v2.Document``), and what it is for: the real
kubectl validating a ``kind: List`` client-side (``kubectl get -o yaml > x.yaml; kubectl apply -f
x.yaml``), with kube-apiserver's answers and kubectl's wording."""
from __future__ import annotations

import json
import os

import pytest
import yaml

from kubeapi_support import KUBECTL, api_fixtures, api_request
from netemu.errors import NetemuError
from netemu.kubeapi import openapiv2, openapiv2_proto

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")

PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
PROTOBUF_ANSWERED = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"

api, kubectl, namespace = api_fixtures("openapiv2")

THREE_KINDS = """
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: settings}
  data: {colour: blue}
- apiVersion: v1
  kind: Service
  metadata: {name: web}
  spec: {ports: [{port: 80}], selector: {app: web}}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: web}
  spec:
    replicas: 1
    selector: {matchLabels: {app: web}}
    template:
      metadata: {labels: {app: web}}
      spec: {containers: [{name: web, image: nginx}]}
"""

UNKNOWN_FIELD = """
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: odd}
  data: {colour: blue}
  bogus: 1
"""

WRONG_TYPE = """
apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: typo}
  spec:
    replicas: three
    selector: {matchLabels: {app: typo}}
    template:
      metadata: {labels: {app: typo}}
      spec: {containers: [{name: web, image: nginx}]}
"""


def _get(api, accept: str) -> tuple[int, dict[str, str], bytes]:
    return api_request(api, "/openapi/v2", accept)


def _names(kubectl, namespace: str) -> str:
    return kubectl("get", "configmap,service,deployment", "-n", namespace, "-o", "name").stdout


# ---------------------------------------------------------------------- kubectl and a kind: List


def test_apply_create_and_replace_a_list_of_several_kinds(kubectl, namespace):
    applied = kubectl("apply", "-f", "-", "-n", namespace, input=THREE_KINDS).stdout
    assert applied.split("\n")[:3] == ["configmap/settings created", "service/web created",
                                       "deployment.apps/web created"]
    names = _names(kubectl, namespace)
    assert all(name in names for name in ("configmap/settings", "service/web", "deployment.apps/web"))
    assert "configmap/settings unchanged" in kubectl("apply", "-f", "-", "-n", namespace, input=THREE_KINDS).stdout

    kubectl("delete", "-f", "-", "-n", namespace, input=THREE_KINDS)
    created = kubectl("create", "-f", "-", "-n", namespace, input=THREE_KINDS).stdout
    assert "configmap/settings created" in created and "deployment.apps/web created" in created
    replaced = kubectl("replace", "-f", "-", "-n", namespace, input=THREE_KINDS.replace("blue", "red")).stdout
    assert "configmap/settings replaced" in replaced and "service/web replaced" in replaced
    assert kubectl("get", "configmap", "settings", "-n", namespace, "-o", "jsonpath={.data.colour}").stdout == "red"


def test_what_kubectl_get_o_yaml_wrote_applies_again(kubectl, namespace):
    kubectl("apply", "-f", "-", "-n", namespace, input=THREE_KINDS)
    saved = kubectl("get", "deployment,configmap", "-n", namespace, "-o", "yaml").stdout
    assert yaml.safe_load(saved)["kind"] == "List"
    result = kubectl("apply", "-f", "-", "-n", namespace, input=saved)
    assert "deployment.apps/web configured" in result.stdout or "deployment.apps/web unchanged" in result.stdout


def test_unknown_field_in_a_list_item_strict_and_warn(kubectl, namespace):
    strict = kubectl("apply", "-f", "-", "-n", namespace, "--validate=strict", input=UNKNOWN_FIELD, check=False)
    assert strict.returncode == 1
    assert strict.stderr.strip() == (
        'error: error validating "STDIN": error validating data: ValidationError(ConfigMap): unknown field '
        '"bogus" in io.k8s.api.core.v1.ConfigMap; if you choose to ignore these errors, turn validation off '
        'with --validate=false')
    assert "configmap/odd" not in _names(kubectl, namespace)

    warned = kubectl("apply", "-f", "-", "-n", namespace, "--validate=warn", input=UNKNOWN_FIELD)
    assert 'Warning: unknown field "bogus"' in warned.stderr
    assert "configmap/odd created" in warned.stdout


def test_wrong_type_in_a_list_item_is_refused(kubectl, namespace):
    for verb in ("apply", "create"):
        result = kubectl(verb, "-f", "-", "-n", namespace, "--validate=true", input=WRONG_TYPE, check=False)
        assert result.returncode == 1
        assert ('error validating data: ValidationError(Deployment.spec.replicas): invalid type for '
                'io.k8s.api.apps.v1.DeploymentSpec.replicas: got "string", expected "integer"') in result.stderr
    assert "deployment.apps/typo" not in _names(kubectl, namespace)
    assert "FIELD: replicas <integer>" in kubectl("explain", "deployment.spec.replicas").stdout


# ---------------------------------------------------------------------- the protobuf document


def test_protobuf_says_what_the_json_says(api):
    status, headers, body = _get(api, PROTOBUF)
    assert status == 200 and headers["Content-Type"] == PROTOBUF_ANSWERED and headers["Vary"] == "Accept"
    _, json_headers, json_body = _get(api, "application/json")
    assert headers["ETag"] == json_headers["ETag"]
    swagger = json.loads(json_body)

    decoded = openapiv2_proto.message_classes()["Document"].FromString(body)
    assert decoded.swagger == "2.0" and decoded.info.title == "Kubernetes"
    definitions = {named.name: named.value for named in decoded.definitions.additional_properties}
    assert list(definitions) == list(swagger["definitions"])
    deployment = definitions["io.k8s.api.apps.v1.Deployment"]
    extensions = {named.name: yaml.safe_load(named.value.yaml) for named in deployment.vendor_extension}
    assert extensions["x-kubernetes-group-version-kind"] == \
        swagger["definitions"]["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"]
    spec = {p.name: p.value for p in definitions["io.k8s.api.apps.v1.DeploymentSpec"].properties.additional_properties}
    assert list(spec["replicas"].type.value) == ["integer"] and spec["replicas"].format == "int32"
    assert spec["template"]._ref == "#/definitions/io.k8s.api.core.v1.PodTemplateSpec"

    paths = {p.name: p.value for p in decoded.paths.path}
    assert list(paths) == list(swagger["paths"])
    patch = paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"].patch
    assert patch.operation_id == "patchAppsV1NamespacedDeployment"
    parameters = [p.parameter for p in patch.parameters]
    assert parameters[-1].body_parameter.schema.ListFields()
    assert "namespace" in [p.non_body_parameter.path_parameter_sub_schema.name for p in parameters]


def test_negotiated_as_kube_apiserver_does(api):
    for accept, wanted in ((PROTOBUF, PROTOBUF_ANSWERED), (PROTOBUF_ANSWERED, PROTOBUF_ANSWERED),
                           ("", "application/json"), ("*/*", "application/json"),
                           (f"application/json;q=0.8, {PROTOBUF}", PROTOBUF_ANSWERED),
                           (f"{PROTOBUF};q=0.5, application/json", "application/json"),
                           (f"{PROTOBUF};q=0, */*", "application/json")):
        status, headers, _ = _get(api, accept)
        assert (status, headers["Content-Type"]) == (200, wanted), accept
    assert _get(api, "text/html")[0] == 406


def test_every_key_of_the_json_document_has_its_field():
    # the encoder refuses a key it has no field for: the document must encode whole
    assert openapiv2.protobuf_document()
    empty = openapiv2_proto.message_classes()["Document"].FromString(openapiv2_proto.encode({"definitions": {"X": {}}}))
    assert empty.definitions.additional_properties[0].HasField("value")  # an empty schema is still there
    with pytest.raises(NetemuError, match=r"definitions\.X\.nosuch: no field in Schema"):
        openapiv2_proto.encode({"definitions": {"X": {"nosuch": 1}}})
