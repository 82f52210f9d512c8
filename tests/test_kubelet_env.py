"""The environment a real container process gets: literal env, the downward API, ``$(VAR)``
expansion, service variables (specs.md "Environment variables (kubelet)"), HOSTNAME, and a real
server bound to ``$(POD_IP)`` that real curl reaches."""
from __future__ import annotations

import asyncio
import ipaddress
import json
import subprocess

import pytest

DUMP_ENV = ["python3", "-c", "import json, os, sys; print(json.dumps(dict(os.environ))); print(json.dumps(sys.argv[1:]))"]


def _pod_yaml(name: str, *, env: str = "", args: str = "[]", extra_spec: str = "",
              labels: str = "app: envtest") -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    {labels}
spec:
  restartPolicy: Never
  {extra_spec}
  containers:
  - name: main
    image: python
    command: {json.dumps(DUMP_ENV)}
    args: {args}
    env: {env or "[]"}
"""


async def _run_and_dump(cluster, manifest: str, name: str) -> tuple[dict[str, str], list[str]]:
    await cluster.apply(manifest)
    await cluster.wait_for(lambda: cluster.get("pod", name).status.phase in ("Succeeded", "Failed"), 10,
                           f"pod {name} to finish")
    assert cluster.get("pod", name).status.phase == "Succeeded", cluster.logs(name)
    lines = cluster.logs(name).strip().splitlines()
    return json.loads(lines[-2]), json.loads(lines[-1])


SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: redis-master}
spec:
  selector: {app: redis}
  ports:
  - {name: redis, port: 6379, targetPort: 6379}
  - {name: metrics, port: 9121, protocol: TCP}
---
apiVersion: v1
kind: Service
metadata: {name: headless-db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: outside}
spec:
  type: ExternalName
  externalName: example.com
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: v1
kind: Service
metadata: {name: elsewhere, namespace: other}
spec:
  selector: {app: x}
  ports: [{port: 80}]
"""


async def test_literal_downward_and_expansion(cluster):
    env = """
    - {name: GREETING, value: hello}
    - {name: MY_POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: MY_HOST_IP, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}
    - {name: MY_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: MY_NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    - {name: MY_NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
    - {name: MY_APP, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
    - {name: COMBINED, value: "$(GREETING)-$(MY_NAME)"}
    - {name: ESCAPED, value: "$$(GREETING)"}
    - {name: UNDEFINED, value: "$(NOPE)"}
    - {name: FORWARD, value: "$(LATER)"}
    - {name: LATER, value: later}
"""
    dumped, argv = await _run_and_dump(
        cluster, _pod_yaml("envpod", env=env, args='["$(GREETING)", "$$(GREETING)", "$(NOPE)", "$(MY_POD_IP)"]'),
        "envpod")
    pod = cluster.get("pod", "envpod")
    assert pod.status.pod_ip and pod.status.host_ip
    expected = {
        "GREETING": "hello", "MY_POD_IP": pod.status.pod_ip, "MY_HOST_IP": pod.status.host_ip,
        "MY_NAME": "envpod", "MY_NS": "default", "MY_NODE": pod.spec.node_name, "MY_APP": "envtest",
        "COMBINED": "hello-envpod", "ESCAPED": "$(GREETING)", "UNDEFINED": "$(NOPE)",
        "FORWARD": "$(LATER)", "LATER": "later", "HOSTNAME": "envpod",
    }
    assert {k: dumped.get(k) for k in expected} == expected
    assert argv == ["hello", "$(GREETING)", "$(NOPE)", pod.status.pod_ip]


async def test_hostname_follows_spec_hostname(cluster):
    dumped, _ = await _run_and_dump(cluster, _pod_yaml("hostpod", extra_spec="hostname: custom-host"), "hostpod")
    assert dumped["HOSTNAME"] == "custom-host"


async def test_service_variables(cluster):
    await cluster.apply(SERVICES)
    redis_ip = cluster.service_ip("redis-master")
    kube_ip = cluster.service_ip("kubernetes")
    dumped, _ = await _run_and_dump(cluster, _pod_yaml("svcpod", env="[{name: REDIS_MASTER_SERVICE_PORT, value: '1'}]"),
                                    "svcpod")
    expected = {
        "REDIS_MASTER_SERVICE_HOST": redis_ip,
        "REDIS_MASTER_SERVICE_PORT": "1",  # explicit env wins
        "REDIS_MASTER_SERVICE_PORT_REDIS": "6379",
        "REDIS_MASTER_SERVICE_PORT_METRICS": "9121",
        "REDIS_MASTER_PORT": f"tcp://{redis_ip}:6379",
        "REDIS_MASTER_PORT_6379_TCP": f"tcp://{redis_ip}:6379",
        "REDIS_MASTER_PORT_6379_TCP_PROTO": "tcp",
        "REDIS_MASTER_PORT_6379_TCP_PORT": "6379",
        "REDIS_MASTER_PORT_6379_TCP_ADDR": redis_ip,
        "REDIS_MASTER_PORT_9121_TCP": f"tcp://{redis_ip}:9121",
        "REDIS_MASTER_PORT_9121_TCP_PROTO": "tcp",
        "REDIS_MASTER_PORT_9121_TCP_PORT": "9121",
        "REDIS_MASTER_PORT_9121_TCP_ADDR": redis_ip,
        "KUBERNETES_SERVICE_HOST": kube_ip,
        "KUBERNETES_SERVICE_PORT": "443",
        "KUBERNETES_SERVICE_PORT_HTTPS": "443",
        "KUBERNETES_PORT": f"tcp://{kube_ip}:443",
        "KUBERNETES_PORT_443_TCP": f"tcp://{kube_ip}:443",
    }
    assert {k: dumped.get(k) for k in expected} == expected
    redis_family = {k for k in expected if k.startswith("REDIS_MASTER_")}
    assert {k for k in dumped if k.startswith("REDIS_MASTER_")} == redis_family  # nothing more
    assert not [k for k in dumped if k.startswith(("HEADLESS_DB", "OUTSIDE", "ELSEWHERE"))]


async def test_enable_service_links_false_keeps_only_kubernetes(cluster):
    await cluster.apply(SERVICES)
    dumped, _ = await _run_and_dump(cluster, _pod_yaml("nolinks", extra_spec="enableServiceLinks: false"), "nolinks")
    service_hosts = sorted(k for k in dumped if k.endswith("_SERVICE_HOST"))
    assert service_hosts == ["KUBERNETES_SERVICE_HOST"]


async def test_service_created_after_start_gives_no_variables(cluster):
    await cluster.apply("""
apiVersion: v1
kind: Pod
metadata: {name: sleeper}
spec:
  containers:
  - {name: main, image: busybox, command: [sleep, "30"]}
""")
    await cluster.wait_ready(10)
    await cluster.apply("""
apiVersion: v1
kind: Service
metadata: {name: late}
spec:
  selector: {app: late}
  ports: [{port: 80}]
""")
    result = await cluster.exec("sleeper", ["env"])
    assert result.returncode == 0
    assert "KUBERNETES_SERVICE_HOST=" in result.stdout
    assert "LATE_SERVICE_HOST" not in result.stdout


async def test_http_server_on_pod_ip_answers_real_curl(cluster):
    await cluster.apply("""
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: main
    image: python
    command: [python3, -m, http.server, "18080", --bind, "$(POD_IP)"]
    readinessProbe:
      tcpSocket: {port: 18080}
      periodSeconds: 1
""")
    await cluster.wait_ready(10)
    ip = cluster.pod_ip("web")
    result = await asyncio.to_thread(
        subprocess.run, ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
                         f"http://{ip}:18080/"], capture_output=True, text=True)
    assert result.stdout == "200", result.stderr
    assert '"GET / HTTP/1.1" 200' in cluster.logs("web")


async def test_command_expands_only_kubernetes_variables(cluster):
    """HOSTNAME, PATH and HOME come from the runtime, not from env: $(HOSTNAME) stays as written."""
    _, argv = await _run_and_dump(
        cluster, _pod_yaml("onlyk8s", args='["$(HOSTNAME)", "$(PATH)", "$(MY)", "$(KUBERNETES_SERVICE_PORT)"]',
                           env="[{name: MY, value: mine}]"), "onlyk8s")
    assert argv == ["$(HOSTNAME)", "$(PATH)", "mine", "443"]


@pytest.mark.parametrize("text, expected", [
    ("$(A)", "1"),
    ("$$(A)", "$(A)"),
    ("$(NOPE)", "$(NOPE)"),
    ("$(A)-$(A)", "1-1"),
    ("$$$(A)", "$1"),
    ("$(A", "$(A"),
    ("$(abc $$", "$(abc $"),
    ("$()", "$()"),
    ("$A", "$A"),
    ("x$", "x$"),
], ids=["ref", "escaped", "undefined", "twice", "escape-then-ref", "unclosed", "unclosed-then-escape",
        "empty-name", "no-parens", "trailing-dollar"])
def test_expansion_follows_kubernetes(text, expected):
    from netemu.kubelet.envvars import expand
    assert expand(text, {"A": "1"}) == expected


async def test_downward_api_on_a_second_node(make_cluster):
    cluster = await make_cluster(nodes=2)
    env = """
    - {name: MY_NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
    - {name: MY_HOST_IP, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}
    - {name: MY_POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
"""
    dumped, _ = await _run_and_dump(cluster, _pod_yaml("far", env=env, extra_spec="nodeName: node-2"), "far")
    assert (dumped["MY_NODE"], dumped["MY_HOST_IP"]) == ("node-2", cluster.node_ip("node-2"))
    assert dumped["MY_POD_IP"] == cluster.pod_ip("far")
    node_cidr = ipaddress.ip_network(cluster.get("node", "node-2").spec.pod_cidr)
    assert ipaddress.ip_address(dumped["MY_POD_IP"]) in node_cidr
