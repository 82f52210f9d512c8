"""Scenario files: validation messages (a table of bad files), defaults, and the small grammars
(references, field paths, matchers, durations, selectors) - no cluster needed."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from netemu.errors import ScenarioError
from netemu.scenario.clusters import slot_ranges, unique_name
from netemu.scenario.fieldpath import get_field, parse_field_path
from netemu.scenario.fields import Problems, parse_duration
from netemu.scenario.matchers import compile_matcher
from netemu.scenario.model import load_scenario, load_scenarios
from netemu.scenario.refs import check_expr, check_text
from netemu.scenario.selectors import parse_selector

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Work in tmp_path so files are named by their short relative path in messages."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "svc.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n")
    return tmp_path


def load_error(text: str) -> str:
    Path("x.yaml").write_text(textwrap.dedent(text))
    with pytest.raises(ScenarioError) as info:
        load_scenario("x.yaml")
    return str(info.value)


BAD = [
    ("unknown-field", """
        steps:
          - curl: {url: "http://127.0.0.1/", expct: {status: 200}}
     """, 'x.yaml: steps[0].curl.expct: unknown field (did you mean "expect"?)'),
    ("unknown-step-kind", """
        steps:
          - curlz: {url: x}
     """, 'x.yaml: steps[0].curlz: unknown step kind (did you mean "curl"?); known: apply, delete, scale, restart, '
          "expect, wait, logs, sleep, curl, exec, connect, dig, nslookup, background, kill, stop, capture, start, impair, "
          "partition, heal"),
    ("two-actions", """
        steps:
          - {apply: m/svc.yaml, scale: {deployment: x, replicas: 1}}
     """, "x.yaml: steps[0]: one action per step, got apply and scale"),
    ("no-action", """
        steps:
          - name: just a name
     """, "x.yaml: steps[0]: a step needs an action: apply, delete, scale, restart, expect, wait, logs, sleep, curl, "
          "exec, connect, dig, nslookup, background, kill, stop, capture, start, impair, partition, heal"),
    ("step-not-a-mapping", """
        steps: [42]
     """, "x.yaml: steps[0]: expected a mapping such as {curl: {url: ...}}, got the number 42"),
    ("unknown-top-level", """
        step: []
     """, 'x.yaml: step: unknown field (did you mean "steps"?)'),
    ("unknown-capability", """
        requires: [service-prxy]
     """, 'x.yaml: requires[0]: unknown capability "service-prxy" (did you mean "service-proxy"?); known: root, '
          "privileged-ports, loopback, netns, pod-resolv-conf, pod-volume-mounts, dns-port-53, service-proxy, cluster-dns, kill, "
          "node-lifecycle, impair, partition, capture, load-balancer, network-policy"),
    ("cluster-field", """
        cluster: {nodes: 0, backnd: netns}
     """, "x.yaml: cluster.nodes: expected a number of nodes or a list of node names, got the number 0\n"
          'x.yaml: cluster.backnd: unknown field (did you mean "backend"?)'),
    ("cluster-range", """
        cluster: {serviceCIDR: 10.0.0.0/16}
     """, "x.yaml: cluster: service_cidr 10.0.0.0/16: the loopback backend needs ranges inside 127.0.0.0/8"),
    ("yaml-syntax", """
        steps:
          - curl: {url: x
     """, "x.yaml: line 4, column 1: expected ',' or '}', but got '<stream end>'"),
    ("duplicate-key", """
        steps:
          - curl: {url: x}
            curl: {url: y}
     """, 'x.yaml: line 4, column 5: duplicate field "curl"'),
    ("empty-file", "", "x.yaml: empty file (a scenario is a mapping with steps:)"),
    ("two-documents", "steps: []\n---\nsteps: []\n", "x.yaml: one scenario per file, found 2 YAML documents"),
    ("not-a-mapping", "- a\n", "x.yaml: a scenario is a mapping with steps:, got a list"),
    ("missing-manifest", """
        manifests: [nothere.yaml]
     """, 'x.yaml: manifests[0]: the path "nothere.yaml" does not exist (paths are relative to the scenario file)'),
    ("invalid-inline-manifest", """
        manifests:
          - |
            apiVersion: v1
            kind: Service
            metadata: {name: x}
            spec: {ports: [{port: 70000, targetPort: 80}]}
     """, "x.yaml: manifests[0]: Service default/x: spec.ports[0].port: Invalid value: 70000: must be between 1 and "
          "65535, inclusive"),
    ("inline-yaml-syntax", """
        steps:
          - apply: |
              apiVersion: v1
              kind: [
     """, "x.yaml: steps[0].apply: inline YAML, line 3, column 1: did not find expected node content "
          "(while parsing a flow node at line 3, column 1)"),
    ("reference-attribute", """
        steps:
          - curl: {url: "http://{{ svc.web.clusterIp }}/"}
     """, 'x.yaml: steps[0].curl.url: {{ svc.web.clusterIp }}: unknown service attribute "clusterIp" (did you mean '
          '"clusterIP"?); use one of clusterIP, nodePort, port, targetPort, ingress, externalName, name, namespace, '
          "ports.PORT.nodePort"),
    ("reference-kind", """
        steps:
          - curl: {url: "http://{{ sevice.web.clusterIP }}/"}
     """, 'x.yaml: steps[0].curl.url: {{ sevice.web.clusterIP }}: unknown reference kind "sevice" (did you mean '
          '"service"?); references look like svc.NAME.clusterIP, svc.NAME.nodePort, svc.NAME.ports.PORT.nodePort, '
          "svc.NAME.ingress, pod.NAME.ip, pods.SELECTOR.ips, node.NAME.ip, cluster.dns"),
    ("reference-unclosed", """
        steps:
          - curl: {url: "http://{{ svc.web.clusterIP/"}
     """, 'x.yaml: steps[0].curl.url: a "{{" without its "}}"'),
    ("duration", """
        steps:
          - sleep: forever
     """, 'x.yaml: steps[0].sleep: invalid duration "forever" (use e.g. 5s, 250ms, 1m30s)'),
    ("timeout", """
        steps:
          - curl: {url: x}
            timeout: 5 seconds
     """, 'x.yaml: steps[0].timeout: invalid duration "5 seconds" (use e.g. 5s, 250ms, 1m30s)'),
    ("given-twice", """
        steps:
          - curl: {url: x, timeout: 1s}
            timeout: 2s
     """, "x.yaml: steps[0].curl.timeout: given twice (also at steps[0].timeout)"),
    ("wait-for", """
        steps:
          - wait: {for: ready}
     """, "x.yaml: steps[0].wait.for: must be one of pods-ready, rollout, endpoints, lb-ingress, condition, deleted, "
          'background; got the string "ready"'),
    ("required", """
        steps:
          - scale: {deployment: web}
     """, "x.yaml: steps[0].scale.replicas: required field"),
    ("type", """
        steps:
          - scale: {deployment: web, replicas: many}
     """, 'x.yaml: steps[0].scale.replicas: expected an integer, got the string "many"'),
    ("matcher-operator", """
        steps:
          - expect: {object: svc/web, field: spec.type, equls: NodePort}
     """, "x.yaml: steps[0].expect: an expectation needs at least one of equals, notEquals, contains, notContains, "
          "matches, in, atLeast, atMost, exists, count, distinct, each\n"
          'x.yaml: steps[0].expect.equls: unknown field (did you mean "equals"?)'),
    ("matcher-regex", """
        steps:
          - logs: {pod: web}
            expect: {matches: "("}
     """, "x.yaml: steps[0].expect.matches: invalid regular expression: missing ), unterminated subpattern at "
          "position 0"),
    ("field-path", """
        steps:
          - expect: {object: svc/web, field: "spec..type", exists: true}
     """, 'x.yaml: steps[0].expect.field: invalid field path "spec..type" at "..type" (write e.g. '
          "spec.ports[0].nodePort)"),
    ("object", """
        steps:
          - expect: {object: web, exists: true}
     """, 'x.yaml: steps[0].expect.object: expected KIND/NAME such as svc/my-nginx, got "web"'),
    ("connect-target", """
        steps:
          - connect: {tcp: nohost}
     """, 'x.yaml: steps[0].connect.tcp: expected HOST:PORT such as 127.96.0.10:53, got "nohost"'),
    ("outcome", """
        steps:
          - curl: {url: x, expect: {outcome: refused, status: 200}}
     """, "x.yaml: steps[0].curl.expect: outcome refused means no HTTP response: status, body and headers cannot "
          "be checked"),
    ("exec-command", """
        steps:
          - exec: {pod: web, command: {sh: x}}
     """, "x.yaml: steps[0].exec.command: expected a list of arguments or a shell line, got a mapping"),
    ("selector", """
        steps:
          - wait: {for: pods-ready, selector: "app in (web"}
     """, 'x.yaml: steps[0].wait.selector: invalid selector "app in (web": unable to parse requirement: cannot read "app in (web"'),
    ("impair-nothing", """
        steps:
          - impair: {service: web}
     """, "x.yaml: steps[0].impair: give delay, jitter, loss, reset, rate or duplicate (or clear: true)"),
    ("background-probe", """
        steps:
          - background: {name: load}
     """, "x.yaml: steps[0].background: give exactly one probe: curl, connect, exec"),
]


@pytest.mark.parametrize("text, expected", [(t, e) for _, t, e in BAD], ids=[i for i, _, _ in BAD])
def test_bad_files_are_refused_with_exact_messages(in_tmp, text, expected):
    assert load_error(text) == expected


def test_every_problem_of_every_file_is_reported_at_once(in_tmp):
    Path("a.yaml").write_text("steps:\n  - curlz: {}\n  - sleep: never\n")
    Path("b.yaml").write_text("nme: b\n")
    Path("good.yaml").write_text("steps: []\n")
    with pytest.raises(ScenarioError) as info:
        load_scenarios(["."])
    assert str(info.value).splitlines() == [
        'a.yaml: steps[0].curlz: unknown step kind (did you mean "curl"?); known: apply, delete, scale, restart, '
        "expect, wait, logs, sleep, curl, exec, connect, dig, nslookup, background, kill, stop, capture, start, impair, "
        "partition, heal",
        'a.yaml: steps[1].sleep: invalid duration "never" (use e.g. 5s, 250ms, 1m30s)',
        'b.yaml: nme: unknown field (did you mean "name"?)',
    ]


@pytest.mark.parametrize("paths, message", [
    (["nowhere"], 'the path "nowhere" does not exist'),
    (["empty"], "no scenario files (*.yaml) in empty"),
], ids=["missing", "empty-dir"])
def test_paths_that_hold_no_scenario(in_tmp, paths, message):
    (in_tmp / "empty").mkdir()
    with pytest.raises(ScenarioError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        load_scenarios(paths)


def test_defaults_and_what_a_step_keeps(in_tmp):
    Path("sub").mkdir()
    Path("sub/my-test.yaml").write_text(textwrap.dedent("""
        requires: [netns]
        manifests: [../m/svc.yaml]
        steps:
          - scale: {deployment: web, replicas: "{{ pods.app=web.count }}", timeout: 2s}
            name: scale by a reference
          - curl: {url: x}
            expect: {status: 200}
    """))
    scenario = load_scenario("sub/my-test.yaml")
    assert (scenario.name, scenario.nodes, scenario.backend) == ("my-test", 1, "netns")
    assert scenario.manifests[0].path == in_tmp / "m" / "svc.yaml"
    scale, curl = scenario.steps
    assert (scale.text.name, scale.text.timeout, scale.text.value) == (
        "scale by a reference", 2.0, {"deployment": "web", "replicas": "{{ pods.app=web.count }}"})
    assert (curl.text.expect, curl.text.expect_path) == ({"status": 200}, "steps[1].expect")


def test_every_library_scenario_loads():
    scenarios = load_scenarios([str(REPO / "scenarios")])
    assert len(scenarios) >= 20
    assert len({s.name for s in scenarios}) == len(scenarios)


# --------------------------------------------------------------------------- small grammars

@pytest.mark.parametrize("expr, problem", [
    ("svc.web.clusterIP", None),
    ("service.prod/web.nodePort", None),
    ("svc.web.ports.http.nodePort", None),
    ("svc.web.ports.0.targetPort", None),
    ("svc.web.ingress", None),
    ("pod.my-nginx-*.ip", None),
    ("pod.my-nginx-*[-1].name", None),
    ("pod.prod/db-0.node", None),
    ("pods.app=web,tier!=db.ips", None),
    ("node.node-1.ip", None),
    ("nodes.ips", None),
    ("cluster.dns", None),
    ("svc.web.ports.http.nodeport", 'unknown service port attribute "nodeport" (did you mean "nodePort"?); '
                                    "use one of nodePort, port, targetPort"),
    ("pod.web.IP", 'unknown pod attribute "IP" (did you mean "ip"?); use one of ip, name, node, hostIP, phase, '
                   "namespace"),
    ("pods.app in (web.ips", 'invalid selector "app in (web": unable to parse requirement: cannot read "app in (web"'),
    ("cluster.dnsIP", 'unknown cluster attribute "dnsIP" (did you mean "dns"?); use one of dns, name, domain, '
                      "backend, serviceCIDR, podCIDR, nodeCIDR, lbCIDR"),
    ("svc", "cannot read a service reference; references look like svc.NAME.clusterIP, svc.NAME.nodePort, "
            "svc.NAME.ports.PORT.nodePort, svc.NAME.ingress, pod.NAME.ip, pods.SELECTOR.ips, node.NAME.ip, "
            "cluster.dns"),
], ids=lambda v: str(v))
def test_reference_grammar(expr, problem):
    assert check_expr(expr) == problem


def test_references_inside_text():
    assert check_text("http://{{ svc.a.clusterIP }}:{{svc.a.port}}/") == []
    assert check_text("{fieldRef: {fieldPath: metadata.name}}") == []   # YAML flow mappings are not references
    assert check_text("{{ svc.a.clusterIP ") == ['a "{{" without its "}}"']


@pytest.mark.parametrize("path, tokens, value", [
    ("spec.ports[0].nodePort", ["spec", "ports", 0, "nodePort"], 30007),
    ("spec.ports[*].name", ["spec", "ports", None, "name"], ["http", "https"]),
    ("metadata.labels['app.kubernetes.io/name']", ["metadata", "labels", "app.kubernetes.io/name"], "web"),
    (".spec.type", ["spec", "type"], "NodePort"),
    ("spec.ports[5].name", ["spec", "ports", 5, "name"], None),
    ("status.loadBalancer.ingress", ["status", "loadBalancer", "ingress"], None),
], ids=lambda v: str(v))
def test_field_paths(path, tokens, value):
    data = {"metadata": {"labels": {"app.kubernetes.io/name": "web"}},
            "spec": {"type": "NodePort", "ports": [{"name": "http", "nodePort": 30007}, {"name": "https"}]}}
    assert parse_field_path(path) == tokens
    assert get_field(data, tokens) == value


@pytest.mark.parametrize("written, actual, failure", [
    (200, 200, None),
    (200, 404, "expected 200, got 404"),
    ("30007", 30007, None),
    (False, None, None),                                   # absent counts as the zero value
    ({"contains": "nginx"}, "Welcome to nginx!", None),
    ({"contains": ["a", "z"]}, "abc", 'expected "z" in "abc"'),
    ({"notContains": "MY_"}, "MY_NGINX=1", 'expected no "MY_" in "MY_NGINX=1"'),
    ({"contains": 9376}, [9376, 9377], None),
    ({"matches": "^web-[a-z0-9]+$"}, "web-7f9", None),
    ({"in": ["a", "b"]}, "c", 'expected one of ["a", "b"], got "c"'),
    ({"atLeast": 30000, "atMost": 32767}, 31999, None),
    ({"atLeast": 30000}, 8080, "expected at least 30000, got 8080"),
    ({"exists": False}, None, None),
    ({"exists": True}, None, "expected a value, got none"),
    ({"count": 2}, ["a", "b"], None),
    ({"distinct": 2}, ["node-1", "node-1"], 'distinct values: expected 2, got 1 (in ["node-1", "node-1"])'),
    ({"distinct": {"atLeast": 2}}, [1, 2, 3], None),
    ({"each": {"matches": "^127\\."}}, ["127.0.0.1", "10.0.0.1"],
     'item 1: expected a match for /^127\\./ in "10.0.0.1"'),
    ({"notEquals": "a"}, "a", 'expected anything but "a"'),
], ids=lambda v: str(v))
def test_matchers(written, actual, failure):
    problems = Problems()
    matcher = compile_matcher(written, "m", problems)
    assert problems == []
    assert matcher.check(actual) == failure


@pytest.mark.parametrize("text, seconds", [
    ("5s", 5.0), ("250ms", 0.25), ("1m30s", 90.0), ("1.5s", 1.5), (2, 2.0), ("1h", 3600.0),
], ids=lambda v: str(v))
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("selector, labels, match", [
    ("run=my-nginx", {"run": "my-nginx"}, True),
    ("app=web,tier!=db", {"app": "web", "tier": "db"}, False),
    ("env in (prod, staging)", {"env": "staging"}, True),
    ("env notin (prod)", {"env": "prod"}, False),
    ("release", {"release": "1"}, True),
    ("!canary", {"canary": "yes"}, False),
    ({"app": "web"}, {"app": "web", "x": "y"}, True),
], ids=lambda v: str(v))
def test_selectors(selector, labels, match):
    assert parse_selector(selector)(labels) is match


def test_address_slots_do_not_overlap():
    import ipaddress
    nets = [ipaddress.IPv4Network(cidr) for slot in range(12) for cidr in slot_ranges(slot).values()]
    assert all(not a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1:])
    assert slot_ranges(0) == {"node_cidr": "127.10.0.0/16", "pod_cidr": "127.244.0.0/16",
                              "service_cidr": "127.96.0.0/16", "lb_cidr": "127.200.0.0/16"}
    assert slot_ranges(1)["pod_cidr"] == "127.245.0.0/16"


@pytest.mark.parametrize("hint", ["NodePort allocation", "---", "x" * 80, "Ünïcode ✓"], ids=str)
def test_unique_names_are_dns_labels(hint):
    import re
    name = unique_name(hint)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 32
    assert unique_name(hint) != name
