"""Ingress through the real kubectl and real curl: validation messages, the documentation's simple
fanout and name-based virtual hosting, Exact/Prefix precedence, 404 and 503, a route change under
an open keep-alive connection, and ``kubectl get ingress`` showing the controller's address.

One cluster for the module; each test works in a namespace of its own. Backends are built-in
images (hashicorp/http-echo ``-text``) so each Service answers with its own body.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from kubeapi_support import KUBECTL, api_fixtures, poll

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")

api, kubectl, namespace = api_fixtures("ingress")
CURL = shutil.which("curl") or "/usr/bin/curl"


def echo(name: str, text: str | None = None) -> str:
    """A Deployment of http-echo answering ``text`` (default: the name) and its Service on port 80."""
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: echo
        image: hashicorp/http-echo
        args: ["-text={text or name}"]
        ports: [{{name: http, containerPort: 5678}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"""


def apply(kubectl, ns: str, text: str) -> None:
    kubectl("apply", "-n", ns, "-f", "-", input=text)


def address(kubectl, ns: str, name: str) -> str:
    def found() -> str:
        obj = json.loads(kubectl("get", "ingress", name, "-n", ns, "-o", "json").stdout)
        return "".join(i.get("ip", "") for i in obj.get("status", {}).get("loadBalancer", {}).get("ingress", []))
    return poll(found, f"ingress {ns}/{name} to get an address", timeout=30)


def curl(ip: str, host: str, path: str, *extra: str) -> tuple[int, str]:
    result = subprocess.run([CURL, "-s", "-m", "5", "--resolve", f"{host}:80:{ip}", "-w", "\n%{http_code}",
                             *extra, f"http://{host}{path}"], capture_output=True, text=True, timeout=10)
    body, _, code = result.stdout.rpartition("\n")
    return int(code or 0), body


def serves(ip: str, host: str, path: str, body: str) -> bool:
    return curl(ip, host, path) == (200, body + "\n")


def ready(kubectl, ns: str, *names: str) -> None:
    for name in names:
        kubectl("rollout", "status", f"deployment/{name}", "-n", ns, "--timeout=30s")


FANOUT = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: simple-fanout-example}
spec:
  rules:
  - host: foo.bar.com
    http:
      paths:
      - {path: /foo, pathType: Prefix, backend: {service: {name: service1, port: {number: 4200}}}}
      - {path: /bar, pathType: Prefix, backend: {service: {name: service2, port: {number: 8080}}}}
"""


def test_invalid_ingresses_are_refused_with_the_api_servers_words(kubectl, namespace) -> None:
    bad = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bad}
spec:
  rules:
  - host: "*.*.foo.com"
    http:
      paths:
      - {path: foo, pathType: Prefix, backend: {service: {name: s, port: {number: 80, name: http}}}}
      - {path: /x, backend: {service: {name: s, port: {number: 80}}}}
"""
    result = kubectl("apply", "-n", namespace, "-f", "-", input=bad, check=False)
    assert result.returncode == 1
    err = result.stderr
    assert 'spec.rules[0].host: Invalid value: "*.*.foo.com": a wildcard DNS-1123 subdomain must start with' in err
    assert 'spec.rules[0].http.paths[0].path: Invalid value: "foo": must be an absolute path' in err
    assert 'spec.rules[0].http.paths[0].backend: Invalid value: "": cannot set both port name & port number' in err
    assert "spec.rules[0].http.paths[1].pathType: Required value: pathType must be specified" in err
    empty = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: empty}\nspec: {}\n"
    result = kubectl("apply", "-n", namespace, "-f", "-", input=empty, check=False)
    assert result.returncode == 1 and "either `defaultBackend` or `rules` must be specified" in result.stderr
    no_controller = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: nope}\nspec: {}\n"
    result = kubectl("apply", "-f", "-", input=no_controller, check=False)
    assert result.returncode == 1 and "spec.controller: Required value" in result.stderr


def test_ingress_class_controller_is_immutable(kubectl) -> None:
    kubectl("apply", "-f", "-", input="apiVersion: networking.k8s.io/v1\nkind: IngressClass\n"
                                      "metadata: {name: other}\nspec: {controller: example.com/other}\n")
    result = kubectl("apply", "-f", "-", check=False,
                     input="apiVersion: networking.k8s.io/v1\nkind: IngressClass\n"
                           "metadata: {name: other}\nspec: {controller: example.com/changed}\n")
    assert result.returncode == 1 and "spec.controller: Invalid value: \"example.com/changed\": field is immutable" \
        in result.stderr
    table = kubectl("get", "ingressclass").stdout.splitlines()
    assert table[0].split() == ["NAME", "CONTROLLER", "PARAMETERS", "AGE"]
    assert any(line.split()[:3] == ["netemu", "netemu.dev/ingress", "<none>"] for line in table)


def test_simple_fanout(kubectl, namespace) -> None:
    apply(kubectl, namespace, echo("service1").replace("port: 80,", "port: 4200,")
          + "---" + echo("service2").replace("port: 80,", "port: 8080,") + "---" + FANOUT)
    ready(kubectl, namespace, "service1", "service2")
    ip = address(kubectl, namespace, "simple-fanout-example")
    poll(lambda: serves(ip, "foo.bar.com", "/foo", "service1"), "/foo to reach service1")
    assert curl(ip, "foo.bar.com", "/foo/deeper") == (200, "service1\n")
    assert curl(ip, "foo.bar.com", "/bar") == (200, "service2\n")
    assert curl(ip, "foo.bar.com", "/foobar")[0] == 404   # Prefix matches whole path elements
    assert curl(ip, "other.com", "/foo") != (200, "service1\n")
    rows = kubectl("get", "ingress", "-n", namespace).stdout.splitlines()
    assert rows[0].split() == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    assert rows[1].split()[:5] == ["simple-fanout-example", "netemu", "foo.bar.com", ip, "80"]
    described = kubectl("describe", "ingress", "simple-fanout-example", "-n", namespace).stdout
    assert "foo.bar.com" in described and "/foo" in described and "service1:4200" in described


def test_name_based_virtual_hosting(kubectl, namespace) -> None:
    ingress = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: name-virtual-host-ingress}
spec:
  ingressClassName: netemu
  rules:
  - host: first.bar.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: service1, port: {number: 80}}}}]}
  - host: second.bar.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: service2, port: {name: http}}}}]}
  - http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: service3, port: {number: 80}}}}]}
"""
    apply(kubectl, namespace, echo("service1") + "---" + echo("service2") + "---" + echo("service3") + "---" + ingress)
    ready(kubectl, namespace, "service1", "service2", "service3")
    ip = address(kubectl, namespace, "name-virtual-host-ingress")
    poll(lambda: serves(ip, "first.bar.com", "/", "service1"), "first.bar.com to reach service1")
    assert curl(ip, "second.bar.com", "/any") == (200, "service2\n")
    assert curl(ip, "third.example", "/") == (200, "service3\n")
    # -H Host: against the address itself
    result = subprocess.run([CURL, "-s", "-m", "5", "-H", "Host: second.bar.com", f"http://{ip}/"],
                            capture_output=True, text=True, timeout=10)
    assert result.stdout == "service2\n"
    # its host-less rule would catch every other test's unknown hosts (one controller for the cluster)
    kubectl("delete", "ingress", "name-virtual-host-ingress", "-n", namespace)


def test_exact_over_prefix_wildcards_404_and_503(kubectl, namespace) -> None:
    ingress = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: precedence}
spec:
  rules:
  - host: "*.wild.test"
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: wild, port: {number: 80}}}}]}
  - host: exact.wild.test
    http:
      paths:
      - {path: /app, pathType: Prefix, backend: {service: {name: prefix, port: {number: 80}}}}
      - {path: /app, pathType: Exact, backend: {service: {name: exact, port: {number: 80}}}}
      - {path: /app/v2, pathType: Prefix, backend: {service: {name: longer, port: {number: 80}}}}
      - {path: /down, pathType: Prefix, backend: {service: {name: nobody, port: {number: 80}}}}
"""
    nobody = "apiVersion: v1\nkind: Service\nmetadata: {name: nobody}\nspec:\n  selector: {app: nobody}\n" \
             "  ports: [{port: 80, targetPort: 80}]\n"
    apply(kubectl, namespace, "\n---\n".join([echo("wild"), echo("prefix"), echo("exact"), echo("longer"), nobody,
                                          ingress]))
    ready(kubectl, namespace, "wild", "prefix", "exact", "longer")
    ip = address(kubectl, namespace, "precedence")
    poll(lambda: serves(ip, "exact.wild.test", "/app", "exact"), "Exact /app to win over Prefix /app")
    assert curl(ip, "exact.wild.test", "/app/") == (200, "prefix\n")
    assert curl(ip, "exact.wild.test", "/app/v2/x") == (200, "longer\n")
    assert curl(ip, "other.wild.test", "/app") == (200, "wild\n")
    # a wildcard covers exactly one label (what answers instead depends on other tests' host-less rules)
    assert curl(ip, "a.b.wild.test", "/") != (200, "wild\n")
    assert curl(ip, "exact.wild.test", "/nothing")[0] == 404
    code, body = curl(ip, "exact.wild.test", "/down")
    assert code == 503 and "503 Service Temporarily Unavailable" in body


def test_route_change_keeps_an_open_keep_alive_connection(kubectl, namespace) -> None:
    def ingress(service: str) -> str:
        return f"""
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: switch}}
spec:
  rules:
  - host: switch.test
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}]}}
"""
    apply(kubectl, namespace, echo("blue") + "---" + echo("green") + "---" + ingress("blue"))
    ready(kubectl, namespace, "blue", "green")
    ip = address(kubectl, namespace, "switch")
    poll(lambda: serves(ip, "switch.test", "/", "blue"), "switch.test to reach blue")
    import http.client
    conn = http.client.HTTPConnection(ip, 80, timeout=5)
    conn.request("GET", "/", headers={"Host": "switch.test"})
    first = conn.getresponse()
    assert first.read() == b"blue\n"
    local = conn.sock.getsockname()
    apply(kubectl, namespace, ingress("green"))

    def answer() -> bytes:
        conn.request("GET", "/", headers={"Host": "switch.test"})
        return conn.getresponse().read()
    poll(lambda: answer() == b"green\n", "the open connection to see the new route")
    assert conn.sock.getsockname() == local   # the same connection all along
    conn.request("POST", "/echo", body=iter([b"chunk-1", b"chunk-2"]), headers={"Host": "switch.test"},
                 encode_chunked=True)
    assert conn.getresponse().status == 200   # a chunked request body streams through
    conn.close()


def test_default_backend_by_port_name(kubectl, namespace) -> None:
    agnhost = """
apiVersion: v1
kind: Pod
metadata: {name: netexec, labels: {app: netexec}}
spec:
  containers:
  - {name: main, image: "registry.k8s.io/e2e-test-images/agnhost:2.47", args: [netexec, --http-port=8080],
     ports: [{name: http, containerPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: netexec}
spec:
  selector: {app: netexec}
  ports: [{name: web, port: 8080, targetPort: http}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: fallback}
spec:
  defaultBackend: {service: {name: netexec, port: {name: web}}}
"""
    apply(kubectl, namespace, agnhost)
    kubectl("wait", "--for=condition=Ready", "pod/netexec", "-n", namespace, "--timeout=30s")
    ip = address(kubectl, namespace, "fallback")
    poll(lambda: curl(ip, "unknown-host.test", "/hostname") == (200, "netexec"), "the default backend to answer")


def test_default_ingress_class_is_filled_in_at_create(kubectl, namespace) -> None:
    """kube-apiserver's DefaultIngressClass admission: an Ingress naming no class gets the default
    IngressClass's name at create; one with the legacy annotation is left alone."""
    from netemu.ingress.system import CLASS_NAME
    apply(kubectl, namespace, FANOUT)
    legacy = FANOUT.replace("name: simple-fanout-example}",
                            "name: legacy, annotations: {kubernetes.io/ingress.class: other}}")
    apply(kubectl, namespace, legacy)
    path = "jsonpath={.spec.ingressClassName}"
    assert kubectl("get", "ingress", "simple-fanout-example", "-n", namespace, "-o", path).stdout == CLASS_NAME
    assert kubectl("get", "ingress", "legacy", "-n", namespace, "-o", path).stdout == ""
    assert kubectl("get", "ingress", "-n", namespace, "simple-fanout-example").stdout.split("\n")[1].split()[1] \
        == CLASS_NAME
