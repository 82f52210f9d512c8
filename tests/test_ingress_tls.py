"""Ingress TLS termination and WebSocket passthrough, through the real kubectl, real curl and
aiohttp's websocket client.

TLS: two hosts with certificates from two different CAs (made here with ``cryptography``) in
``kubernetes.io/tls`` Secrets created by ``kubectl create secret tls``; curl ``--resolve
host:443:ADDR --cacert`` trusts each host's CA only; a host without a TLS entry gets the default
"Kubernetes Ingress Controller Fake Certificate"; an updated Secret reaches new connections; the
backend sees ``X-Forwarded-Proto: https``. The backend is a small aiohttp server run as the pod's
command with this venv's python (``/headers`` answers the request headers, ``/ws`` echoes
WebSocket messages).
"""
from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kubeapi_support import KUBECTL, api_fixtures, poll

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")

api, kubectl, namespace = api_fixtures("ingress-tls")
CURL = shutil.which("curl") or "/usr/bin/curl"

BACKEND_SCRIPT = """
import os
from aiohttp import web

async def headers(request):
    return web.json_response(dict(request.headers))

async def echo(request):
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        if message.type == web.WSMsgType.TEXT:
            await ws.send_str("echo:" + message.data)
        elif message.type == web.WSMsgType.BINARY:
            await ws.send_bytes(message.data[::-1])
    return ws

app = web.Application()
app.add_routes([web.get("/headers", headers), web.get("/ws", echo)])
web.run_app(app, host=os.environ["POD_IP"], port=8765, print=None, access_log=None)
"""


def backend(name: str) -> str:
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
      - name: main
        image: python
        command: [{json.dumps(sys.executable)}, -c, {json.dumps(BACKEND_SCRIPT)}]
        ports: [{{name: http, containerPort: 8765}}]
        readinessProbe: {{tcpSocket: {{port: 8765}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"""


def ingress(name: str, hosts: dict[str, str], tls: dict[str, str]) -> str:
    """``hosts``: host → Service; ``tls``: host → Secret."""
    rules = "".join(f"""
  - host: {host}
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}]}}"""
                    for host, svc in hosts.items())
    entries = "".join(f"\n  - {{hosts: [{host}], secretName: {secret}}}" for host, secret in tls.items())
    return f"""
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}}}
spec:
  tls:{entries or " []"}
  rules:{rules}
"""


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(directory: Path, label: str) -> tuple[Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(f"test CA {label}")).issuer_name(_name(f"test CA {label}"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path = directory / f"ca-{label}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, cert, key


def make_leaf(directory: Path, host: str, ca: tuple[Path, x509.Certificate, ec.EllipticCurvePrivateKey],
              label: str) -> tuple[Path, Path]:
    _, ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(host)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = directory / f"{label}.crt", directory / f"{label}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(_pem_key(key))
    return cert_path, key_path


def secret(kubectl, ns: str, name: str, cert: Path, key: Path) -> None:
    """Create or replace a kubernetes.io/tls Secret, as users do with kubectl."""
    manifest = kubectl("create", "secret", "tls", name, "-n", ns, f"--cert={cert}", f"--key={key}",
                       "--dry-run=client", "-o", "yaml").stdout
    assert "type: kubernetes.io/tls" in manifest
    kubectl("apply", "-n", ns, "-f", "-", input=manifest)


def https(ip: str, host: str, path: str, cacert: Path) -> tuple[int, str]:
    """curl's exit code and body for https://host/path with ``cacert`` as the only trusted CA."""
    result = subprocess.run([CURL, "-sS", "-m", "5", "--resolve", f"{host}:443:{ip}", "--cacert", str(cacert),
                             f"https://{host}{path}"], capture_output=True, text=True, timeout=10)
    return result.returncode, result.stdout


def address(kubectl, ns: str, name: str) -> str:
    def found() -> str:
        obj = json.loads(kubectl("get", "ingress", name, "-n", ns, "-o", "json").stdout)
        return "".join(i.get("ip", "") for i in obj.get("status", {}).get("loadBalancer", {}).get("ingress", []))
    return poll(found, f"ingress {ns}/{name} to get an address", timeout=30)


def served_certificate(ip: str, server_name: str) -> x509.Certificate:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((ip, 443), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def test_tls_per_host_certificates_by_sni_and_updates(kubectl, namespace, tmp_path) -> None:
    ca_one, ca_two = make_ca(tmp_path, "one"), make_ca(tmp_path, "two")
    secret(kubectl, namespace, "one-tls", *make_leaf(tmp_path, "one.tls.test", ca_one, "one"))
    secret(kubectl, namespace, "two-tls", *make_leaf(tmp_path, "two.tls.test", ca_two, "two"))
    kubectl("apply", "-n", namespace, "-f", "-", input=backend("web") + "---" + ingress(
        "secure", {"one.tls.test": "web", "two.tls.test": "web", "plain.tls.test": "web"},
        {"one.tls.test": "one-tls", "two.tls.test": "two-tls"}))
    kubectl("rollout", "status", "deployment/web", "-n", namespace, "--timeout=30s")
    ip = address(kubectl, namespace, "secure")
    poll(lambda: https(ip, "one.tls.test", "/headers", ca_one[0])[0] == 0, "one.tls.test to answer over HTTPS")
    code, body = https(ip, "one.tls.test", "/headers", ca_one[0])
    seen = json.loads(body)
    assert seen["X-Forwarded-Proto"] == "https" and seen["Host"] == "one.tls.test"
    assert https(ip, "two.tls.test", "/headers", ca_two[0])[0] == 0
    assert https(ip, "two.tls.test", "/headers", ca_one[0])[0] == 60    # two's certificate is not from CA one
    assert https(ip, "one.tls.test", "/headers", ca_two[0])[0] == 60
    fake = served_certificate(ip, "plain.tls.test")
    assert fake.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
        "Kubernetes Ingress Controller Fake Certificate"
    assert served_certificate(ip, "two.tls.test").subject == _name("two.tls.test")
    # plain HTTP still answers, with X-Forwarded-Proto http
    result = subprocess.run([CURL, "-sS", "-m", "5", "--resolve", f"one.tls.test:80:{ip}",
                             "http://one.tls.test/headers"], capture_output=True, text=True, timeout=10)
    assert json.loads(result.stdout)["X-Forwarded-Proto"] == "http"

    # the Secret changes: new connections get the new certificate (now from CA two)
    secret(kubectl, namespace, "one-tls", *make_leaf(tmp_path, "one.tls.test", ca_two, "one-renewed"))
    poll(lambda: https(ip, "one.tls.test", "/headers", ca_two[0])[0] == 0, "the renewed certificate to be served")
    assert https(ip, "one.tls.test", "/headers", ca_one[0])[0] == 60

    # the Ingress drops two's TLS entry: two gets the default certificate
    kubectl("apply", "-n", namespace, "-f", "-", input=ingress(
        "secure", {"one.tls.test": "web", "two.tls.test": "web"}, {"one.tls.test": "one-tls"}))
    poll(lambda: served_certificate(ip, "two.tls.test").subject != _name("two.tls.test"),
         "two.tls.test to fall back to the default certificate")


async def _websocket_round_trips(url: str, host: str, context: ssl.SSLContext | bool) -> list[object]:
    big = os.urandom(200_000)
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, headers={"Host": host}, ssl=context, server_hostname=host
                                      if context is not False else None) as ws:
            sock = ws.get_extra_info("socket")
            answers: list[object] = []
            for text in ("hello", "again"):
                await ws.send_str(text)
                answers.append((await ws.receive(timeout=5)).data)
            await ws.send_bytes(big)
            answers.append((await ws.receive(timeout=5)).data == big[::-1])
            await ws.close()
    assert sock is not None
    # A TLS transport finishes closing a moment after the session: wait for its socket to close
    # before the loop ends, or it is reported unclosed later.
    deadline = asyncio.get_running_loop().time() + 5
    while sock.fileno() != -1 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    return answers


def test_websocket_upgrade_is_relayed_both_ways(kubectl, namespace, tmp_path) -> None:
    ca = make_ca(tmp_path, "ws")
    secret(kubectl, namespace, "ws-tls", *make_leaf(tmp_path, "ws.tls.test", ca, "ws"))
    kubectl("apply", "-n", namespace, "-f", "-", input=backend("sockets") + "---" + ingress(
        "sockets", {"ws.tls.test": "sockets"}, {"ws.tls.test": "ws-tls"}))
    kubectl("rollout", "status", "deployment/sockets", "-n", namespace, "--timeout=30s")
    ip = address(kubectl, namespace, "sockets")
    poll(lambda: https(ip, "ws.tls.test", "/headers", ca[0])[0] == 0, "ws.tls.test to answer")
    expected = ["echo:hello", "echo:again", True]
    assert asyncio.run(_websocket_round_trips(f"ws://{ip}/ws", "ws.tls.test", False)) == expected
    trusting = ssl.create_default_context(cafile=str(ca[0]))
    assert asyncio.run(_websocket_round_trips(f"wss://{ip}/ws", "ws.tls.test", trusting)) == expected
    # an upgrade the endpoint refuses comes back as its answer
    result = subprocess.run([CURL, "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                             "Connection: Upgrade", "-H", "Upgrade: websocket", "--resolve",
                             f"ws.tls.test:80:{ip}", "http://ws.tls.test/headers"],
                            capture_output=True, text=True, timeout=10)
    assert result.stdout == "200"


def test_certificate_table_rules(tmp_path) -> None:
    """tls.build: wildcard hosts, an entry without hosts covering the rule hosts, the oldest Ingress
    winning a host, a missing or broken Secret falling back to the default certificate, and
    contexts reused while a Secret's bytes stay the same."""
    import base64

    from netemu.api import codec
    from netemu.api.ingress import Ingress
    from netemu.api.objects import ObjectMeta, Secret
    from netemu.ingress import tls

    def ing(name: str, created: str, entries: list, hosts: list[str]) -> Ingress:
        obj, problems = codec.from_dict(Ingress, {
            "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
            "spec": {"tls": entries, "rules": [{"host": h, "http": {"paths": [{"path": "/", "pathType": "Prefix",
                     "backend": {"service": {"name": "s", "port": {"number": 80}}}}]}} for h in hosts]}})
        assert not problems
        return obj

    def tls_secret(name: str, files: tuple[Path, Path]) -> Secret:
        return Secret(metadata=ObjectMeta(name=name, namespace="ns"), type="kubernetes.io/tls",
                      data={"tls.crt": base64.b64encode(files[0].read_bytes()).decode(),
                            "tls.key": base64.b64encode(files[1].read_bytes()).decode()})

    ca = make_ca(tmp_path, "unit")
    secrets = {("ns", "wild"): tls_secret("wild", make_leaf(tmp_path, "*.wild.test", ca, "wild")),
               ("ns", "old"): tls_secret("old", make_leaf(tmp_path, "a.test", ca, "old")),
               ("ns", "new"): tls_secret("new", make_leaf(tmp_path, "a.test", ca, "new")),
               ("ns", "broken"): Secret(metadata=ObjectMeta(name="broken", namespace="ns"),
                                        data={"tls.crt": base64.b64encode(b"not a pem").decode(), "tls.key": ""})}
    ingresses = [
        ing("newer", "2026-01-02T00:00:00Z", [{"secretName": "new"}], ["a.test"]),
        ing("older", "2026-01-01T00:00:00Z", [{"hosts": ["*.wild.test"], "secretName": "wild"},
                                               {"secretName": "old"}], ["a.test", "b.test"]),
        ing("broken", "2026-01-03T00:00:00Z", [{"hosts": ["c.test"], "secretName": "broken"},
                                                {"hosts": ["d.test"], "secretName": "missing"}], ["c.test"]),
    ]
    table = tls.build(ingresses, secrets)
    assert table.context_for("x.wild.test") is table.context_for("Y.WILD.TEST") is not tls.default_context()
    assert table.context_for("x.y.wild.test") is tls.default_context()   # one label only
    assert table.context_for("a.test") is table.context_for("b.test")     # "older"'s host-less entry
    assert table.context_for("a.test") is not table.context_for("x.wild.test")
    for host in ("c.test", "d.test", "other.test", None):
        assert table.context_for(host) is tls.default_context()
    again = tls.build(ingresses, secrets, table)
    assert again.context_for("a.test") is table.context_for("a.test")
    assert set(again.contexts.values()) == set(table.contexts.values()) and len(table.contexts) == 3
