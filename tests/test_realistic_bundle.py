"""Issue 12's acceptance: a realistic application bundle applied in one go with the real kubectl,
behaving as on a real cluster.

The bundle: a ServiceAccount; a ConfigMap read as environment variables and as a mounted file; a
Secret with a database password consumed by env, and a `kubernetes.io/tls` Secret mounted as
the web server's certificate; a database Deployment; a migration Job that fails once (a transient
error) and succeeds on its retry; a web Deployment whose init container waits for the migration,
so that no web pod serves before the Job has finished; a DaemonSet of node agents; a CronJob.
One 3-node cluster for the module; the tests run in order on the one bundle.
"""
from __future__ import annotations

import datetime
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kubeapi_support import KUBECTL, api_fixtures, poll

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")

api, kubectl, _ = api_fixtures("bundle", nodes=3)
NS = "shop"


def self_signed(host: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


HOST = f"web.{NS}.svc.cluster.local"
CERT, KEY = self_signed(HOST)

# The migration: count attempts in redis; the first attempt fails as a transient error would, the
# second writes the schema version.
MIGRATE = """
import os, socket, sys
s = socket.create_connection((os.environ["DB_SERVICE_HOST"], int(os.environ["DB_SERVICE_PORT"])), timeout=5)
f = s.makefile("rb")
def call(*words):
    s.sendall(b"*%d\\r\\n" % len(words) + b"".join(b"$%d\\r\\n%s\\r\\n" % (len(w), w) for w in words))
    return f.readline().strip()
assert call(b"AUTH", os.environ["DB_PASSWORD"].encode()) == b"+OK"
if call(b"INCR", b"migration-attempts") == b":1":
    print("transient failure, retrying", flush=True)
    sys.exit(1)
assert call(b"SET", b"schema", b"v2") == b"+OK"
print("migrated to v2", flush=True)
"""

# The web pods' init container: wait until the schema is v2.
WAIT_FOR_MIGRATION = """
import os, socket, time
while True:
    try:
        s = socket.create_connection((os.environ["DB_SERVICE_HOST"], int(os.environ["DB_SERVICE_PORT"])), timeout=5)
        f = s.makefile("rb")
        s.sendall(b"*2\\r\\n$4\\r\\nAUTH\\r\\n$%d\\r\\n%s\\r\\n" % (len(os.environ["DB_PASSWORD"]), os.environ["DB_PASSWORD"].encode()))
        f.readline()
        s.sendall(b"*2\\r\\n$3\\r\\nGET\\r\\n$6\\r\\nschema\\r\\n")
        if f.readline().startswith(b"$2"):
            break
    except OSError:
        pass
    time.sleep(0.1)
print("schema ready", flush=True)
"""

# The web server: HTTPS with the mounted certificate, answering with the mounted config's greeting
# and the LOG_LEVEL from the ConfigMap's env.
WEB = """
import http.server, os, ssl
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        greeting = open("/etc/web/web.conf").read().split("=", 1)[1].strip()
        body = f"{greeting} {os.environ['LOG_LEVEL']}\\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
server = http.server.HTTPServer((os.environ["POD_IP"], 8443), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain("/etc/tls/tls.crt", "/etc/tls/tls.key")
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"""


def block(text: str, indent: int) -> str:
    pad = " " * indent
    return "|\n" + "".join(pad + line + "\n" for line in text.strip("\n").splitlines())


def bundle() -> str:
    import base64
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: web, namespace: {NS}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: web-config, namespace: {NS}}}
data:
  LOG_LEVEL: info
  web.conf: |
    greeting = hello
---
apiVersion: v1
kind: Secret
metadata: {{name: db-credentials, namespace: {NS}}}
stringData: {{password: s3cr3t}}
---
apiVersion: v1
kind: Secret
metadata: {{name: web-tls, namespace: {NS}}}
type: kubernetes.io/tls
data: {{tls.crt: {b64(CERT)}, tls.key: {b64(KEY)}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: db, namespace: {NS}}}
spec:
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: node-1}}  # kept out of the node stop test: its data is in memory
      containers:
      - name: redis
        image: redis:7
        args: [--requirepass, $(DB_PASSWORD)]
        env:
        - name: DB_PASSWORD
          valueFrom: {{secretKeyRef: {{name: db-credentials, key: password}}}}
        ports: [{{containerPort: 6379}}]
---
apiVersion: v1
kind: Service
metadata: {{name: db, namespace: {NS}}}
spec:
  selector: {{app: db}}
  ports: [{{port: 6379}}]
---
apiVersion: batch/v1
kind: Job
metadata: {{name: migrate, namespace: {NS}}}
spec:
  backoffLimit: 3
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: migrate
        image: busybox
        command:
        - python3
        - -c
        - {block(MIGRATE, 10)}
        env:
        - name: DB_PASSWORD
          valueFrom: {{secretKeyRef: {{name: db-credentials, key: password}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {NS}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      serviceAccountName: web
      initContainers:
      - name: wait-for-migration
        image: busybox
        command:
        - python3
        - -c
        - {block(WAIT_FOR_MIGRATION, 10)}
        env:
        - name: DB_PASSWORD
          valueFrom: {{secretKeyRef: {{name: db-credentials, key: password}}}}
      containers:
      - name: web
        image: busybox
        command:
        - python3
        - -c
        - {block(WEB, 10)}
        envFrom:
        - configMapRef: {{name: web-config}}
        env:
        - name: DB_PASSWORD
          valueFrom: {{secretKeyRef: {{name: db-credentials, key: password}}}}
        ports: [{{containerPort: 8443}}]
        readinessProbe:
          tcpSocket: {{port: 8443}}
          periodSeconds: 1
        volumeMounts:
        - {{name: config, mountPath: /etc/web, readOnly: true}}
        - {{name: tls, mountPath: /etc/tls, readOnly: true}}
      volumes:
      - name: config
        configMap:
          name: web-config
          items: [{{key: web.conf, path: web.conf}}]
      - name: tls
        secret: {{secretName: web-tls, defaultMode: 0400}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {NS}}}
spec:
  selector: {{app: web}}
  ports: [{{port: 443, targetPort: 8443}}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: node-agent, namespace: {NS}}}
spec:
  selector: {{matchLabels: {{app: node-agent}}}}
  template:
    metadata: {{labels: {{app: node-agent}}}}
    spec:
      containers:
      - name: agent
        image: busybox
        command: [sleep, "3600"]
---
apiVersion: batch/v1
kind: CronJob
metadata: {{name: report, namespace: {NS}}}
spec:
  schedule: "*/5 * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
          - name: report
            image: busybox
            command: [sh, -c, "echo report done"]
"""


def get(kubectl, *args: str) -> Any:
    return json.loads(kubectl("get", "-n", NS, *args, "-o", "json").stdout)


def live_pods(kubectl, selector: str) -> list[dict[str, Any]]:
    return [p for p in get(kubectl, "pods", "-l", selector)["items"] if not p["metadata"].get("deletionTimestamp")]


def rolled_out(kubectl, deployment: str = "web") -> None:
    """``kubectl rollout status``; on a timeout the failure shows the pods and their events."""
    out = kubectl("rollout", "status", "-n", NS, f"deployment/{deployment}", "--timeout=50s", check=False)
    if out.returncode != 0:
        pods = kubectl("get", "pods", "-n", NS, "-o", "wide", check=False).stdout
        described = kubectl("describe", "pods", "-n", NS, "-l", f"app={deployment}", check=False).stdout
        raise AssertionError(f"deployment/{deployment} did not roll out: {out.stdout}{out.stderr}\n{pods}\n{described}")


def running_web_pod(kubectl) -> str:
    pods = poll(lambda: [p for p in live_pods(kubectl, "app=web") if p["status"].get("phase") == "Running"],
                "a running web pod")
    return pods[0]["metadata"]["name"]


@pytest.fixture(scope="module")
def applied(api, tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")
    from kubeapi_support import kubectl_runner
    from netemu.kubeapi import KUBECONFIG
    run = kubectl_runner(api.cluster.state.directory / KUBECONFIG, home)
    out = run("apply", "-f", "-", input=bundle())
    assert out.returncode == 0, out.stderr
    return home


def test_the_bundle_applies_in_one_go(applied, kubectl):
    kinds = {(o["kind"], o["metadata"]["name"])
             for o in get(kubectl, "sa,cm,secret,deploy,svc,job,ds,cronjob")["items"]}
    assert {("ServiceAccount", "web"), ("ConfigMap", "web-config"), ("Secret", "db-credentials"),
            ("Secret", "web-tls"), ("Deployment", "web"), ("Deployment", "db"), ("Job", "migrate"),
            ("DaemonSet", "node-agent"), ("CronJob", "report"), ("ServiceAccount", "default")} <= kinds


def test_the_migration_job_retries_once_then_completes(applied, kubectl):
    kubectl("wait", "-n", NS, "--for=condition=complete", "job/migrate", "--timeout=90s")
    job = get(kubectl, "job", "migrate")
    assert job["status"]["succeeded"] == 1
    assert job["status"]["failed"] == 1
    pods = get(kubectl, "pods", "-l", "job-name=migrate")["items"]
    assert sorted(p["status"]["phase"] for p in pods) == ["Failed", "Succeeded"]


def test_no_web_pod_serves_before_the_migration_finished(applied, kubectl):
    rolled_out(kubectl)
    finished = get(kubectl, "job", "migrate")["status"]["completionTime"]
    for pod in live_pods(kubectl, "app=web"):
        (web,) = pod["status"]["containerStatuses"]
        assert web["state"]["running"]["startedAt"] >= finished


def test_env_values_and_mounted_files(applied, kubectl):
    rolled_out(kubectl)
    pod = running_web_pod(kubectl)
    env = kubectl("exec", "-n", NS, pod, "--", "sh", "-c", 'echo "$LOG_LEVEL $DB_PASSWORD"').stdout
    assert env == "info s3cr3t\n"
    files = kubectl("exec", "-n", NS, pod, "--", "sh", "-c",
                    "cat /etc/web/web.conf; stat -L -c '%a %n' /etc/tls/tls.crt /etc/tls/tls.key").stdout
    assert files == "greeting = hello\n400 /etc/tls/tls.crt\n400 /etc/tls/tls.key\n"
    assert kubectl("exec", "-n", NS, pod, "--", "cat", "/etc/tls/tls.crt").stdout.encode() == CERT
    token_dir = "/var/run/secrets/kubernetes.io/serviceaccount"
    listed = kubectl("exec", "-n", NS, pod, "--", "ls", token_dir).stdout.split()
    assert listed == ["ca.crt", "namespace", "token"]


def test_https_through_the_service_with_the_secret_certificate(applied, kubectl, api, tmp_path):
    rolled_out(kubectl)
    ca = tmp_path / "ca.crt"
    ca.write_bytes(CERT)
    ip = get(kubectl, "svc", "web")["spec"]["clusterIP"]
    out = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", str(ca), "--resolve", f"{HOST}:443:{ip}",
                          f"https://{HOST}/"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "hello info\n"


def test_config_map_update_reaches_the_file_not_the_env(applied, kubectl):
    rolled_out(kubectl)
    pod = running_web_pod(kubectl)
    kubectl("patch", "-n", NS, "configmap", "web-config", "--type=merge",
            "-p", json.dumps({"data": {"web.conf": "greeting = bonjour\n", "LOG_LEVEL": "debug"}}))
    poll(lambda: kubectl("exec", "-n", NS, pod, "--", "cat", "/etc/web/web.conf").stdout == "greeting = bonjour\n",
         "the mounted file to change")
    assert kubectl("exec", "-n", NS, pod, "--", "printenv", "LOG_LEVEL").stdout == "info\n"


def test_daemonset_has_one_pod_per_node_across_node_stop_and_start(applied, kubectl, api):
    def by_node() -> dict[str, str]:
        return {p["spec"]["nodeName"]: p["metadata"]["name"] for p in live_pods(kubectl, "app=node-agent")
                if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))}
    before = poll(lambda: (lambda m: m if len(m) == 3 else None)(by_node()), "3 ready node agents")
    assert sorted(before) == ["node-1", "node-2", "node-3"]
    api.run(api.cluster.stop_node("node-2"))
    poll(lambda: "node-2" not in by_node(), "node-2's agent to be not ready")
    assert {p["spec"]["nodeName"] for p in live_pods(kubectl, "app=node-agent")} == {"node-1", "node-2", "node-3"}
    api.run(api.cluster.start_node("node-2"))
    after = poll(lambda: (lambda m: m if len(m) == 3 else None)(by_node()), "3 ready node agents again")
    assert sorted(after) == ["node-1", "node-2", "node-3"]
    ds = get(kubectl, "ds", "node-agent")
    assert ds["status"]["desiredNumberScheduled"] == 3 and ds["status"]["numberReady"] == 3


def test_web_rolling_update_and_undo(applied, kubectl):
    rolled_out(kubectl)
    first = {rs["metadata"]["name"] for rs in get(kubectl, "rs", "-l", "app=web")["items"]}
    kubectl("set", "env", "-n", NS, "deployment/web", "FEATURE=on")
    rolled_out(kubectl)
    sets = {rs["metadata"]["name"]: rs for rs in get(kubectl, "rs", "-l", "app=web")["items"]}
    assert len(sets) == 2 and first <= set(sets)
    (old,) = first
    assert sets[old]["spec"]["replicas"] == 0
    kubectl("rollout", "undo", "-n", NS, "deployment/web")
    rolled_out(kubectl)
    sets = {rs["metadata"]["name"]: rs for rs in get(kubectl, "rs", "-l", "app=web")["items"]}
    assert sets[old]["spec"]["replicas"] == 2
    assert sets[old]["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"


def test_cronjob_runs_its_job_when_the_clock_reaches_the_schedule(applied, kubectl, api):
    # The real clock may have crossed a five-minute mark since the bundle was applied (a Job of
    # that run would exist): the Job looked for is one made after the clock is moved.
    before = {j["metadata"]["name"] for j in get(kubectl, "jobs")["items"]}
    api.cluster.clock.advance(5 * 60)
    jobs = poll(lambda: [j for j in get(kubectl, "jobs")["items"]
                         if j["metadata"]["name"].startswith("report-") and j["metadata"]["name"] not in before],
                "the CronJob's Job")
    name = jobs[0]["metadata"]["name"]
    kubectl("wait", "-n", NS, "--for=condition=complete", f"job/{name}", "--timeout=60s")
    cron = get(kubectl, "cronjob", "report")
    assert cron["status"]["lastSuccessfulTime"]
