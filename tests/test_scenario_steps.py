"""Step kinds on real clusters: every kind that works today passes, failures say what failed,
references resolve against a live cluster, and dig/nslookup run the real tools against a DNS
server on 127.0.0.1."""
from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest
from dnslib.server import DNSLogger, DNSServer
from dnslib.zoneresolver import ZoneResolver

from netemu.errors import ScenarioError
from netemu.scenario import run_files
from netemu.scenario.refs import Resolver

ZONE = """\
web.example. 60 IN A 127.0.0.80
_http._tcp.web.example. 60 IN SRV 0 100 80 web.example.
alias.example. 60 IN CNAME web.example.
"""

SERVERS = textwrap.dedent("""\
    apiVersion: v1
    kind: Pod
    metadata:
      name: netexec
      labels: {app: netexec}
    spec:
      nodeName: node-1
      containers:
        - name: netexec
          image: registry.k8s.io/e2e-test-images/agnhost:2.53
          args: [netexec, --http-port=8080, --udp-port=8081]
    ---
    apiVersion: v1
    kind: Pod
    metadata:
      name: client
    spec:
      nodeName: node-2
      containers: [{name: shell, image: busybox}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: netexec}
    spec:
      selector: {app: netexec}
      ports: [{port: 8080}]
    """)


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("NETEMU_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    Path("servers.yaml").write_text(SERVERS)
    return tmp_path


@pytest.fixture(scope="module")
def dns_server():
    server = DNSServer(ZoneResolver(ZONE), address="127.0.0.1", port=0, logger=DNSLogger(logf=lambda s: None))
    server.start_thread()
    yield f"127.0.0.1:{server.server.server_address[1]}"
    server.stop()
    server.server.server_close()


def run(text: str, name: str = "x.yaml") -> tuple[int, str]:
    Path(name).write_text(textwrap.dedent(text))
    out = io.StringIO()
    code = run_files([name], out)
    return code, out.getvalue()


EVERY_STEP = """
    name: every step kind that works today
    cluster: {nodes: 2}
    manifests: [servers.yaml]
    steps:
      - apply:
          - |
            apiVersion: apps/v1
            kind: Deployment
            metadata: {name: echo}
            spec:
              replicas: 2
              selector: {matchLabels: {app: echo}}
              template:
                metadata: {labels: {app: echo}}
                spec:
                  containers:
                    - name: echo
                      image: hashicorp/http-echo
                      args: ["-text=echo $(POD_NAME)", "-listen=:5678"]
                      env: [{name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
          - apiVersion: v1
            kind: Service
            metadata: {name: echo}
            spec:
              type: LoadBalancer
              selector: {app: echo}
              ports: [{name: http, port: 5678}]
        expect: {output: {contains: [deployment.apps/echo created, service/echo created]}}
      - wait: {for: rollout, deployment: echo}
      - wait: {for: pods-ready, selector: app=echo, count: 2}
      - wait: {for: endpoints, service: echo, count: 2}
      - wait: {for: lb-ingress, service: echo}
      - wait: {for: condition, object: deploy/echo, field: status.readyReplicas, equals: 2}
      - expect: {objects: pods, selector: app=echo, field: spec.nodeName, distinct: 2, count: 2}
      - expect: {object: "svc/echo", field: "spec.ports[0].nodePort", equals: "{{ svc.echo.ports.http.nodePort }}"}
      - expect: {object: "endpointslice/echo-*", field: "endpoints[*].addresses[0]",
                 contains: "{{ pods.app=echo.ips }}"}
      - curl: {url: "http://{{ pod.echo-*[0].ip }}:5678/", headers: {X-Test: "1"}}
        expect:
          status: 200
          body: "echo {{ pod.echo-*[0].name }}\\n"
          headers: {X-App-Name: http-echo}
      - curl: {url: "http://{{ pod.netexec.ip }}:8080/clientip", from: client}
        expect: {body: {matches: "^{{ pod.client.ip }}:"}}
      - curl: {url: "http://{{ pod.netexec.ip }}:8080/clientip", from: node/node-2}
        expect: {body: {matches: "^{{ node.node-2.ip }}:"}}
      - curl: {url: "http://{{ pod.echo-*.ip }}:5678/", repeat: 3}
        expect: {distinct: {body: 1}}
      - curl: {url: "http://{{ pod.netexec.ip }}:8081/"}
        expect: {outcome: refused}
      - curl: {url: "http://{{ pod.netexec.ip }}:8080/echo?msg=hi", method: POST, data: "x=1"}
        expect: {status: 200, body: hi}
      - exec: {pod: client, command: [printenv, POD_IP]}
        expect: {stdout: "{{ pod.client.ip }}\\n"}
      - exec: {pod: client, command: "cat; echo oops >&2; exit 3", stdin: "in\\n"}
        expect: {exit: 3, stdout: "in\\n", stderr: {contains: oops}, output: {contains: [in, oops]}}
      - connect: {tcp: "{{ pod.netexec.ip }}:8080", from: client, send: "GET /hostname HTTP/1.0\\r\\n\\r\\n"}
        expect: {reply: {contains: netexec}}
      - connect: {tcp: "{{ pod.netexec.ip }}:9"}
        expect: {outcome: refused}
      - connect: {udp: "{{ pod.netexec.ip }}:8081", send: "echo hello"}
        expect: {reply: hello}
      - connect: {udp: "{{ pod.netexec.ip }}:9", send: "x"}
        expect: {outcome: refused}
      - logs: {pod: "echo-*"}
        expect: {contains: "GET /"}
      - background: {name: load, every: 10ms, curl: {url: "http://{{ pod.echo-*[1].ip }}:5678/"}}
      - wait: {for: background, background: load, count: 3}
      - stop: {background: load}
        expect: {failures: 0, successes: {atLeast: 3}}
      - scale: {deployment: echo, replicas: 1}
        expect: {output: deployment.apps/echo scaled}
      - wait: {for: pods-ready, selector: app=echo, count: 1}
      - restart: {deployment: echo}
      - wait: {for: rollout, deployment: echo}
      - delete: "pod/{{ pod.echo-*.name }}"
      - wait: {for: pods-ready, selector: app=echo, count: 1}
      - delete: {kind: pod, selector: app=netexec, wait: true}
      - wait: {for: deleted, object: pod/netexec}
      - apply: servers.yaml
      - delete: servers.yaml
        expect: {output: {contains: service "netexec" deleted}}
      - expect: {object: svc/netexec, exists: false}
      - sleep: 10ms
"""


def test_every_step_kind_that_works_today(state):
    code, output = run(EVERY_STEP)
    assert code == 0, output
    lines = [line for line in output.splitlines() if line.startswith(" ✓") or line.startswith(" ✗")]
    assert len(lines) == 1 + EVERY_STEP.count("\n      - ")   # the manifests, then every step
    assert all(line.startswith(" ✓") for line in lines), output


def test_dns_steps_run_the_real_tools(state, dns_server):
    code, output = run(f"""
        manifests:
          - |
            apiVersion: v1
            kind: Pod
            metadata: {{name: client}}
            spec: {{containers: [{{name: shell, image: busybox}}]}}
        steps:
          - dig: {{name: web.example., server: "{dns_server}"}}
            expect: {{answers: [127.0.0.80]}}
          - dig: {{name: _http._tcp.web.example., type: SRV, server: "{dns_server}"}}
            expect: {{answers: [0 100 80 web.example.]}}
          - dig: {{name: nope.example., server: "{dns_server}"}}
            expect: {{rcode: NXDOMAIN}}
          - nslookup: {{name: web.example, server: "{dns_server}", from: client}}
            expect: {{answers: {{contains: 127.0.0.80}}}}
          - nslookup: {{name: alias.example, server: "{dns_server}"}}
            expect: {{answers: [web.example.]}}
          - nslookup: {{name: nope.example, server: "{dns_server}"}}
            expect: {{rcode: NXDOMAIN}}
    """)
    assert code == 0, output


FAILURES = [
    ("status", 'curl: {url: "http://{{ pod.netexec.ip }}:8080/hostname"}\n    expect: {status: 404}',
     "status: expected 404, got 200"),
    ("body", 'curl: {url: "http://{{ pod.netexec.ip }}:8080/hostname"}\n    expect: {body: {contains: nginx}}',
     'body: expected "nginx" in "netexec"'),
    ("http-error-by-default", 'curl: {url: "http://{{ pod.netexec.ip }}:8080/shell"}',
     "status: expected a success (below 400), got 403"),
    ("distinct", 'curl: {url: "http://{{ pod.netexec.ip }}:8080/hostname", repeat: 3}\n'
                 "    expect: {distinct: {body: 2}}",
     'distinct bodies over 3 requests: expected 2, got 1 (saw ["netexec"])'),
    ("exit", 'exec: {pod: client, command: "exit 3"}', "exit: expected 0, got 3"),
    ("field", "expect: {object: svc/netexec, field: spec.type, equals: NodePort}",
     'service/netexec spec.type: expected "NodePort", got "ClusterIP"'),
    ("connect", 'connect: {tcp: "{{ pod.netexec.ip }}:9"}', "expected outcome ok, got refused"),
    ("reply", 'connect: {udp: "{{ pod.netexec.ip }}:8081", send: hostname}\n    expect: {reply: other}',
     'reply: expected "other", got "netexec"'),
    ("wait", "wait: {for: endpoints, service: netexec, count: 3}\n    timeout: 100ms",
     "timed out after 0.1s waiting for 3 ready endpoints of service netexec"),
    ("logs", "logs: {pod: netexec}\n    expect: {contains: never}\n    timeout: 100ms",
     'logs of netexec: expected "never" in'),
    ("reference", 'curl: {url: "http://{{ svc.nope.clusterIP }}/"}',
     "x.yaml: steps[0].curl.url: {{ svc.nope.clusterIP }}: service default/nope not found"),
    ("pod-glob", "exec: {pod: 'web-*', command: [true]}", 'no pod matches "web-*"'),
    ("apply-succeeded", "apply: servers.yaml\n    expect: {error: {contains: refused}}",
     'expected an error (contains "refused"), but it succeeded'),
    ("apply-error", "apply: {apiVersion: v1, kind: Service, metadata: {name: other},"
                    " spec: {clusterIP: 1.2.3.4, ports: [{port: 80}]}}",
     "the provided IP (1.2.3.4) is not in the valid range. The range of valid IPs is 127.96.0.0/16"),
    ("background", 'background: {name: b, every: 10ms, connect: {tcp: "{{ pod.netexec.ip }}:9"}}\n'
                   "  - wait: {for: background, background: b, count: 2}\n  - stop: {background: b}",
     'background "b" failures: expected 0, got'),
    ("partition", "partition: [[node-1], [node-2]]", "partition: needs the netns backend"),
    ("heal", "heal: {}", "heal: needs the netns backend"),
]


@pytest.mark.parametrize("step, message", [(s, m) for _, s, m in FAILURES], ids=[i for i, _, _ in FAILURES])
def test_failing_steps_say_what_failed(state, step, message):
    code, output = run(f"cluster: {{nodes: 2}}\nmanifests: [servers.yaml]\nsteps:\n  - {step}\n")
    assert code == 1
    failed = output.split(" ✗ ", 1)[1].splitlines()
    assert message in failed[1], output


async def test_references_resolve_against_a_live_cluster(make_cluster):
    cluster = await make_cluster(nodes=2)
    await cluster.apply(SERVERS, textwrap.dedent("""\
        apiVersion: v1
        kind: Namespace
        metadata: {name: prod}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: lb, namespace: prod}
        spec:
          type: LoadBalancer
          selector: {app: x}
          ports: [{name: http, port: 80, targetPort: 8080}, {name: dns, port: 53, protocol: UDP}]
        """))
    await cluster.wait_ready()
    await cluster.wait_for(lambda: bool(cluster.get("svc", "lb", "prod").status.load_balancer.ingress), 5)
    resolver = Resolver(cluster)
    lb = cluster.get("svc", "lb", "prod")
    pods = {p.metadata.name: p for p in cluster.pods()}
    expected = {
        "svc.netexec.clusterIP": cluster.service_ip("netexec"),
        "svc.netexec.port": 8080,
        "service.prod/lb.nodePort": lb.spec.ports[0].node_port,
        "svc.prod/lb.ports.dns.nodePort": lb.spec.ports[1].node_port,
        "svc.prod/lb.ports.1.port": 53,
        "svc.prod/lb.ports.http.targetPort": 8080,
        "svc.prod/lb.ingress": lb.status.load_balancer.ingress[0].ip,
        "pod.netexec.ip": pods["netexec"].status.pod_ip,
        "pod.net*.node": "node-1",
        "pod.*[-1].name": "client" if resolver.pods_in_order("default")[-1].metadata.name == "client" else "netexec",
        "pods.app=netexec.ips": [pods["netexec"].status.pod_ip],
        "pods.app=nobody.count": 0,
        "node.node-2.ip": cluster.node_ip("node-2"),
        "nodes.names": ["node-1", "node-2"],
        "cluster.dns": cluster.config.dns_ip,
        "cluster.domain": "cluster.local",
    }
    assert {expr: resolver.value(expr) for expr in expected} == expected
    assert resolver.resolve({"url": "http://{{ svc.netexec.clusterIP }}:{{ svc.netexec.port }}/",
                             "ips": "{{ pods.app=netexec.ips }}", "n": ["{{ nodes.count }}"],
                             "tcp": "{{ svc.netexec.clusterIP }}:{{ svc.netexec.port }}"}) == {
        "url": f"http://{cluster.service_ip('netexec')}:8080/", "ips": [pods["netexec"].status.pod_ip], "n": [2],
        "tcp": f"{cluster.service_ip('netexec')}:8080"}  # two references, nothing around them


@pytest.mark.parametrize("expr, message", [
    ("svc.nope.clusterIP", "{{ svc.nope.clusterIP }}: service default/nope not found"),
    ("svc.netexec.nodePort", "{{ svc.netexec.nodePort }}: service default/netexec has no nodePort (type ClusterIP)"),
    ("svc.netexec.ports.web.port", '{{ svc.netexec.ports.web.port }}: service default/netexec has no port named '
                                   '"web" (ports: (unnamed))'),
    ("svc.netexec.ingress", "{{ svc.netexec.ingress }}: service default/netexec has no load-balancer ingress yet"),
    ("pod.web-*.ip", '{{ pod.web-*.ip }}: no pod matches "web-*"'),
    ("pod.net*[1].ip", '{{ pod.net*[1].ip }}: 1 pod(s) match "net*", so there is no [1]'),
    ("node.node-9.ip", '{{ node.node-9.ip }}: no node matches "node-9"'),
], ids=lambda v: str(v))
async def test_references_that_cannot_resolve(make_cluster, expr, message):
    cluster = await make_cluster(nodes=2)
    await cluster.apply(SERVERS)
    await cluster.wait_ready()
    with pytest.raises(ScenarioError) as info:
        Resolver(cluster).value(expr)
    assert str(info.value).startswith(message)


async def test_dns_steps_need_a_cluster_dns_or_a_server(tmp_path):
    from netemu.errors import AssertionFailed
    from netemu.scenario.fields import Problems
    from netemu.scenario.step_traffic import Dig
    from netemu.scenario.steps import Context, Parse
    problems = Problems()
    spec = Dig().parse(Parse({"name": "my-nginx"}, None, False, "steps[0].dig", "steps[0].dig.expect", problems,
                             False, tmp_path))
    context = Context(cluster=None, base_dir=tmp_path, capabilities=frozenset({"service-proxy"}))
    with pytest.raises(AssertionFailed, match=r"this cluster has no DNS server yet \(capability cluster-dns\)"):
        await Dig().run(context, spec)
