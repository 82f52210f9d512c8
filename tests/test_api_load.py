"""Loading manifests: walkthrough examples, fixtures, YAML/JSON errors, kinds, namespaces."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from netemu import api
from netemu.errors import ManifestError, ManifestErrors

FIXTURES = Path(__file__).parent / "fixtures" / "manifests"
LIBYAML = getattr(yaml, "__with_libyaml__", False)


def load_errors(text: str, **kw) -> list[str]:
    """The lines of the ManifestErrors that loading ``text`` raises."""
    with pytest.raises(ManifestErrors) as info:
        api.load_text(text, "t.yaml", **kw)
    return str(info.value).splitlines()


# --------------------------------------------------------------------------- walkthrough examples

WALKTHROUGH = [
    ("single-port-service", "Service", "default", "my-service"),
    ("multi-port-service", "Service", "default", "my-service"),
    ("nodeport-service", "Service", "default", "my-service"),
    ("loadbalancer-service", "Service", "default", "my-service"),
    ("externalname-service", "Service", "prod", "my-service"),
    ("dns-example-pod", "Pod", "default", "dns-example"),
    ("my-nginx-deployment", "Deployment", "default", "my-nginx"),
    ("my-nginx-service", "Service", "default", "my-nginx"),
]


@pytest.mark.parametrize("name,kind,namespace,obj_name", WALKTHROUGH, ids=[w[0] for w in WALKTHROUGH])
def test_walkthrough_examples_load(name: str, kind: str, namespace: str, obj_name: str) -> None:
    (m,) = api.load_paths([str(FIXTURES / f"walkthrough-{name}.yaml")])
    assert (m.obj.KIND, m.obj.metadata.namespace, m.obj.metadata.name) == (kind, namespace, obj_name)
    assert (m.ref.kind, m.ref.namespace, m.ref.name, m.ref.doc) == (kind, namespace, obj_name, 1)
    assert api.validate(m.obj) == []


def test_walkthrough_nodeport_verbatim_is_a_yaml_error() -> None:
    """The walkthrough's NodePort example has ``nodePort: 30007`` indented like the ``-`` of the
    ports list, after the list's only item: YAML cannot continue the sequence there, so the file
    does not parse at all (kubectl 1.32: ``error converting YAML to JSON: yaml: line 14: did not
    find expected '-' indicator`` — go-yaml counts lines from 0 here; the line is the 15th)."""
    path = str(FIXTURES / "walkthrough-nodeport-service-verbatim.yaml")
    with pytest.raises(ManifestErrors) as info:
        api.load_paths([path])
    (err,) = info.value.errors
    message = str(err)
    assert message.startswith(f"{path}: line 15, column 5: ")
    if LIBYAML:
        assert message == (f"{path}: line 15, column 5: did not find expected '-' indicator "
                           "(while parsing a block collection at line 11, column 5)")


def test_walkthrough_nodeport_corrected_keeps_the_node_port() -> None:
    (m,) = api.load_paths([str(FIXTURES / "walkthrough-nodeport-service.yaml")])
    (port,) = m.obj.spec.ports
    assert (port.port, port.target_port, port.node_port, port.protocol) == (80, 80, 30007, "TCP")
    assert m.obj.spec.external_traffic_policy == "Cluster"


def test_walkthrough_loadbalancer_keeps_status_and_cluster_ip() -> None:
    (m,) = api.load_paths([str(FIXTURES / "walkthrough-loadbalancer-service.yaml")])
    svc = m.obj
    assert svc.spec.cluster_ip == "10.0.171.239" and svc.spec.cluster_ips == ("10.0.171.239",)
    (ingress,) = svc.status.load_balancer.ingress
    assert (ingress.ip, ingress.ip_mode) == ("192.0.2.127", "VIP")


def test_walkthrough_dns_example_pod_keeps_dns_config() -> None:
    (m,) = api.load_paths([str(FIXTURES / "walkthrough-dns-example-pod.yaml")])
    cfg = m.obj.spec.dns_config
    assert m.obj.spec.dns_policy == "None"
    assert cfg.nameservers == ("1.2.3.4",)
    assert cfg.searches == ("ns1.svc.cluster-domain.example", "my.dns.search.suffix")
    assert [(o.name, o.value) for o in cfg.options] == [("ndots", "2"), ("edns0", None)]


# --------------------------------------------------------------------------- fixtures

VALID_FIXTURES = {
    "valid-shop.yaml": ["Namespace /shop", "Deployment shop/web", "Service shop/web", "Service shop/db",
                        "Service shop/payments", "Pod shop/db-0", "EndpointSlice shop/legacy-abc12"],
    "valid-list.yaml": ["Service default/alpha", "Service default/beta"],
    "valid-node.json": ["Node /node-1"],
}


@pytest.mark.parametrize("name", sorted(VALID_FIXTURES), ids=sorted(VALID_FIXTURES))
def test_valid_fixtures_load(name: str) -> None:
    manifests = api.load_paths([str(FIXTURES / name)])
    got = [f"{m.obj.KIND} {m.obj.metadata.namespace}/{m.obj.metadata.name}" for m in manifests]
    assert got == VALID_FIXTURES[name]
    for m in manifests:
        assert api.validate(m.obj) == []


def test_every_fixture_is_in_a_table() -> None:
    names = {p.name for p in FIXTURES.iterdir()}
    listed = set(VALID_FIXTURES) | set(INVALID_FIXTURES) | {f"walkthrough-{w[0]}.yaml" for w in WALKTHROUGH}
    assert names - listed == {"walkthrough-nodeport-service-verbatim.yaml"}


INVALID_FIXTURES = {
    "invalid-bad-indent.yaml": [
        "{path}: line 11, column 8: did not find expected key (while parsing a block mapping at line 8, column 7)",
    ],
    "invalid-unknown-fields.yaml": [
        "{path}[doc 1] Service default/web: metadata.lables: unknown field",
        "{path}[doc 1] Service default/web: spec.ports[0].targetport: unknown field",
    ],
    "invalid-service-rules.yaml": [
        "{path}[doc 1] Service default/Web_Frontend: metadata.name: Invalid value: \"Web_Frontend\": a DNS-1035 "
        "label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, "
        "and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is "
        "'[a-z]([-a-z0-9]*[a-z0-9])?')",
        "{path}[doc 1] Service default/Web_Frontend: spec.ports[1].name: Required value",
        "{path}[doc 1] Service default/Web_Frontend: spec.ports[1].protocol: Unsupported value: \"HTTP\": "
        "supported values: \"SCTP\", \"TCP\", \"UDP\"",
        "{path}[doc 1] Service default/Web_Frontend: spec.ports[0].nodePort: Forbidden: may not be used when "
        "`type` is 'ClusterIP'",
        "{path}[doc 3] Service default/edge: spec.clusterIPs[0]: Invalid value: \"None\": may not be set to "
        "'None' for NodePort services",
        "{path}[doc 3] Service default/edge: spec.ports[0].targetPort: Invalid value: \"http-web-service-port\": "
        "must be no more than 15 characters",
        "{path}[doc 3] Service default/edge: spec.ports[1].name: Duplicate value: \"http\"",
        "{path}[doc 3] Service default/edge: spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: "
        "0: must be greater than 0 and less than 86400",
        "{path}[doc 3] Service default/edge: spec.ports[1]: Duplicate value: core.ServicePort{Name:\"\", "
        "Protocol:\"TCP\", AppProtocol:(*string)(nil), Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, "
        "StrVal:\"\"}, NodePort:0}",
        "{path}[doc 4] Service default/ext: spec.clusterIPs: Forbidden: may not be set for ExternalName services",
        "{path}[doc 4] Service default/ext: spec.externalName: Required value",
        "{path}[doc 4] Service default/ext: spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set "
        "for externally-accessible services",
    ],
}


@pytest.mark.parametrize("name", sorted(INVALID_FIXTURES), ids=sorted(INVALID_FIXTURES))
def test_invalid_fixtures_report_every_problem(name: str) -> None:
    path = str(FIXTURES / name)
    if "bad-indent" in name and not LIBYAML:
        pytest.skip("the message text is libyaml's")
    with pytest.raises(ManifestErrors) as info:
        api.load_paths([path])
    assert str(info.value).splitlines() == [line.replace("{path}", path) for line in INVALID_FIXTURES[name]]


def test_bad_documents_are_all_reported_and_nothing_is_returned() -> None:
    text = (FIXTURES / "invalid-service-rules.yaml").read_text()
    with pytest.raises(ManifestErrors) as info:
        api.load_text(text, "rules.yaml")
    errors = info.value.errors
    assert [(e.ref.doc, e.ref.name) for e in errors] == [(1, "Web_Frontend"), (3, "edge"), (4, "ext")]
    assert all(isinstance(e, ManifestError) for e in errors)
    assert errors[0].problems[1].path == "spec.ports[1].name"


# --------------------------------------------------------------------------- YAML and JSON syntax

SYNTAX_ERRORS = [
    ("tab-indent", "a: b\n\tc: d\n", 2, 1, "found a tab character that violates indentation"),
    ("unclosed-quote", "metadata:\n  name: 'web\n", 3, 1, "found unexpected end of stream"),
    ("sequence-then-key", "ports:\n  - port: 80\n  nodePort: 1\n", 3, 3, "did not find expected '-' indicator"),
    ("mapping-dedent", "spec:\n  a: 1\n b: 2\n", 3, 2, "did not find expected key"),
    ("bad-flow", "spec: {a: 1\n", 2, 1, "did not find expected ',' or '}'"),
]


@pytest.mark.parametrize("text,line,column,problem", [c[1:] for c in SYNTAX_ERRORS],
                         ids=[c[0] for c in SYNTAX_ERRORS])
def test_yaml_syntax_errors_name_file_line_and_column(text: str, line: int, column: int, problem: str) -> None:
    (message,) = load_errors(text)
    assert message.startswith(f"t.yaml: line {line}, column {column}: ")
    if LIBYAML:
        assert problem in message


def test_documents_before_a_syntax_error_are_still_checked() -> None:
    text = "apiVersion: v1\nkind: Service\nmetadata: {name: Bad}\nspec: {ports: [{port: 1}]}\n---\na: 'b\n"
    lines = load_errors(text)
    assert len(lines) == 2
    assert lines[0].startswith('t.yaml[doc 1] Service default/Bad: metadata.name: Invalid value: "Bad"')
    assert lines[1].startswith("t.yaml: line 7, column 1: ")


def test_json_syntax_error_names_line_and_column() -> None:
    (line,) = load_errors('{"apiVersion": "v1",\n "kind": "Namespace" "metadata": {}}')
    assert line.startswith("t.yaml: line 2, column 22: ")


def test_json_error_after_the_first_object_is_a_json_error() -> None:
    text = '{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}\n{"kind": }'
    assert load_errors(text) == ["t.yaml: line 2, column 10: Expecting value"]


def test_yaml_flow_mapping_document() -> None:
    (m,) = api.load_text("{apiVersion: v1, kind: Namespace, metadata: {name: a}}\n")
    assert m.obj.metadata.name == "a"


def test_json_stream_of_objects() -> None:
    text = "".join(json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}) for n in "ab")
    assert [m.obj.metadata.name for m in api.load_text(text)] == ["a", "b"]


def test_duplicate_keys_are_refused_with_their_position() -> None:
    text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  name: b\n"
    assert load_errors(text) == ['t.yaml[doc 1] Namespace b: line 5, column 3: duplicate field "name"']


def test_merge_keys_are_not_duplicates() -> None:
    text = ("apiVersion: v1\nkind: Namespace\nmetadata:\n  labels: &l {a: x, b: y}\n"
            "  annotations:\n    <<: *l\n    a: z\n  name: n\n")
    (m,) = api.load_text(text)
    assert dict(m.obj.metadata.annotations) == {"a": "z", "b": "y"}


SCALARS = [
    ("timestamp-stays-string", "2024-01-01", "2024-01-01"),
    ("sexagesimal-stays-string", "1:20", "1:20"),
    ("quoted-number", "'80'", "80"),
    ("null-is-empty", "", ""),
]


@pytest.mark.parametrize("literal,expected", [c[1:] for c in SCALARS], ids=[c[0] for c in SCALARS])
def test_scalars_read_as_kubectl_reads_them(literal: str, expected: str) -> None:
    text = f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: n\n  annotations:\n    k: {literal}\n"
    (m,) = api.load_text(text)
    assert m.obj.metadata.annotations["k"] == expected


def test_number_where_a_string_belongs_is_a_decoding_error() -> None:
    text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: n\n  labels: {version: 1.5}\n"
    assert load_errors(text) == [
        "t.yaml[doc 1] Namespace n: metadata.labels.version: Invalid value: 1.5: expected string, got number"]


# --------------------------------------------------------------------------- documents, kinds, lists

def test_empty_documents_are_skipped_but_counted() -> None:
    text = "---\n# nothing\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n"
    (m,) = api.load_text(text, "t.yaml")
    assert (m.ref.source, m.ref.doc) == ("t.yaml", 2)


DOCUMENT_ERRORS = [
    ("missing-kind", "apiVersion: v1\nmetadata: {name: a}\n",
     "t.yaml[doc 1] object a: Object 'Kind' is missing in '{\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"a\"}}'"),
    ("missing-api-version", "kind: Pod\n", "t.yaml[doc 1] Pod: Object 'apiVersion' is missing in '{\"kind\":\"Pod\"}'"),
    ("unknown-kind", "apiVersion: v1\nkind: Foo\nmetadata: {name: a}\n",
     't.yaml[doc 1] Foo a: no matches for kind "Foo" in version "v1"'),
    ("wrong-version", "apiVersion: v1\nkind: Deployment\nmetadata: {name: a}\n",
     't.yaml[doc 1] Deployment a: no matches for kind "Deployment" in version "v1"'),
    ("old-version", "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: a}\n",
     't.yaml[doc 1] Deployment a: no matches for kind "Deployment" in version "extensions/v1beta1"'),
    ("list-document", "- a\n- b\n", "t.yaml[doc 1] object: expected an object with apiVersion and kind, got a list"),
    ("string-document", "hello\n", "t.yaml[doc 1] object: expected an object with apiVersion and kind, got a string"),
    ("unknown-field", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {selctor: {a: b}, ports: [{port: 1}]}\n",
     "t.yaml[doc 1] Service default/a: spec.selctor: unknown field"),
    ("wrong-type", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: {port: 1}}\n",
     "t.yaml[doc 1] Service default/a: spec.ports: Invalid value: object: expected array, got object"),
]


@pytest.mark.parametrize("text,expected", [c[1:] for c in DOCUMENT_ERRORS], ids=[c[0] for c in DOCUMENT_ERRORS])
def test_document_errors(text: str, expected: str) -> None:
    assert load_errors(text) == [expected]


def test_list_items_are_expanded_and_keep_the_list_document_index() -> None:
    text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n" + (FIXTURES / "valid-list.yaml").read_text()
    manifests = api.load_text(text, "t.yaml")
    assert [(m.ref.doc, m.obj.metadata.name) for m in manifests] == [(1, "a"), (2, "alpha"), (2, "beta")]


def test_typed_list_is_expanded() -> None:
    text = "apiVersion: v1\nkind: NamespaceList\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n"
    assert [m.obj.metadata.name for m in api.load_text(text)] == ["a"]


def test_bad_list_item_names_the_list_document() -> None:
    text = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: A}}\n"
    (line,) = load_errors(text)
    assert line.startswith('t.yaml[doc 1] Namespace A: metadata.name: Invalid value: "A": a lowercase RFC 1123 label')


# --------------------------------------------------------------------------- namespaces

SVC = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n{ns}spec:\n  ports: [{{port: 80}}]\n"

NAMESPACES = [
    ("empty-gets-default", "", None, "default"),
    ("given-is-kept", "  namespace: shop\n", None, "shop"),
    ("override-fills-empty", "", "shop", "shop"),
    ("override-agrees", "  namespace: shop\n", "shop", "shop"),
]


@pytest.mark.parametrize("ns_line,override,expected", [c[1:] for c in NAMESPACES], ids=[c[0] for c in NAMESPACES])
def test_namespace_rules(ns_line: str, override: str | None, expected: str) -> None:
    (m,) = api.load_text(SVC.format(ns=ns_line), namespace=override)
    assert m.obj.metadata.namespace == expected == m.ref.namespace


def test_namespace_override_must_agree_with_the_manifest() -> None:
    assert load_errors(SVC.format(ns="  namespace: a\n"), namespace="b") == [
        't.yaml[doc 1] Service a/web: the namespace from the provided object "a" does not match the namespace "b". '
        "You must pass '--namespace=a' to perform this operation."]


def test_cluster_scoped_objects_have_no_namespace() -> None:
    text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, namespace: b}\n"
    (m,) = api.load_text(text, namespace="c")
    assert m.obj.metadata.namespace == "" and m.ref.namespace == ""


# --------------------------------------------------------------------------- paths

def test_directory_is_read_sorted_and_not_recursively(tmp_path: Path) -> None:
    ns = "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {}}}\n"
    (tmp_path / "b.yml").write_text(ns.format("b"))
    (tmp_path / "a.yaml").write_text(ns.format("a"))
    (tmp_path / "c.json").write_text(json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "c"}}))
    (tmp_path / "notes.txt").write_text("not a manifest")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.yaml").write_text(ns.format("d"))
    manifests = api.load_paths([str(tmp_path), str(tmp_path / "sub" / "d.yaml")])
    assert [m.obj.metadata.name for m in manifests] == ["a", "b", "c", "d"]
    assert manifests[0].ref.source == str(tmp_path / "a.yaml")


def test_problems_of_all_files_are_collected(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: A}\n")
    (tmp_path / "b.yaml").write_text("a: 'b\n")
    with pytest.raises(ManifestErrors) as info:
        api.load_paths([str(tmp_path), str(tmp_path / "missing.yaml")])
    sources = [e.ref.source for e in info.value.errors]
    assert sources == [str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"), str(tmp_path / "missing.yaml")]
    assert str(info.value.errors[2]) == f"{tmp_path / 'missing.yaml'}: the path does not exist"


def test_manifest_is_frozen() -> None:
    (m,) = api.load_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")
    with pytest.raises(AttributeError):
        m.obj = None  # type: ignore[misc]


@pytest.mark.parametrize("name", sorted(VALID_FIXTURES), ids=sorted(VALID_FIXTURES))
def test_loaded_objects_round_trip_through_the_codec(name: str) -> None:
    for m in api.load_paths([str(FIXTURES / name)]):
        again, problems = api.from_dict(type(m.obj), api.to_dict(m.obj))
        assert problems == []
        assert again == m.obj
        assert api.apply_defaults(again) == again
