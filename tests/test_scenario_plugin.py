"""The pytest plugin, driven through pytester: a user's service tested against emulated redis,
clusters torn down after failures, several clusters in one session, the async fixture."""
from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

# A user's app and its dependency, as they would keep them in k8s/app.yaml.
APP_YAML = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: redis
spec:
  selector:
    matchLabels: {app: redis}
  template:
    metadata:
      labels: {app: redis}
    spec:
      containers:
        - name: redis
          image: redis:7
          ports: [{containerPort: 6379}]
---
apiVersion: v1
kind: Service
metadata:
  name: redis
spec:
  selector: {app: redis}
  ports: [{port: 6379}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: counter
spec:
  replicas: 2
  selector:
    matchLabels: {app: counter}
  template:
    metadata:
      labels: {app: counter}
    spec:
      containers:
        - name: counter
          image: python:3.12-slim
          command: [python3, -c]
          args:
            - |
              import http.server, os, socket
              REDIS = (os.environ["REDIS_SERVICE_HOST"], int(os.environ["REDIS_SERVICE_PORT"]))

              def incr(key):
                  with socket.create_connection(REDIS, timeout=5) as s:
                      s.sendall(f"INCR {key}\\r\\n".encode())
                      return int(s.recv(64).decode().strip().lstrip(":"))

              class Handler(http.server.BaseHTTPRequestHandler):
                  def do_GET(self):
                      body = str(incr("hits")).encode()
                      self.send_response(200)
                      self.send_header("Content-Length", str(len(body)))
                      self.end_headers()
                      self.wfile.write(body)

              http.server.HTTPServer((os.environ["POD_IP"], 8080), Handler).serve_forever()
          ports: [{containerPort: 8080}]
          readinessProbe:
            tcpSocket: {port: 8080}
            periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: counter
spec:
  selector: {app: counter}
  ports: [{port: 80, targetPort: 8080}]
"""

USER_TEST = '''\
import pytest


@pytest.mark.netemu(manifests=["k8s/app.yaml"], nodes=2)
def test_counter_counts_in_redis(netemu_cluster):
    first = netemu_cluster.pod_ip("counter-*")           # the oldest counter pod
    second = netemu_cluster.ref("pod.counter-*[1].ip")   # the other replica
    assert netemu_cluster.http_get(f"http://{first}:8080/") == (200, "1")
    assert netemu_cluster.http_get(f"http://{second}:8080/").body == "2"   # one redis for both
    service = netemu_cluster.service_ip("counter")
    assert netemu_cluster.http_get(f"http://{service}/").body == "3"       # through the Service
    env = netemu_cluster.exec("counter-*", ["printenv", "REDIS_SERVICE_HOST"]).stdout
    assert env.strip() == netemu_cluster.service_ip("redis")
'''

# Light manifests for the tests of the plugin's own mechanics.
ECHO_YAML = """\
apiVersion: v1
kind: Pod
metadata:
  name: echo
spec:
  containers:
    - name: echo
      image: hashicorp/http-echo
      args: ["-text=hello", "-listen=:5678"]
"""


@pytest.fixture(scope="module", autouse=True)
def imported_once():
    """pytester's in-process runs drop the modules a run imported; import netemu's whole stack
    here first (a cluster start, exec and curl) so every run shares the same classes."""
    from netemu.pytest_plugin import NetemuCluster
    command_pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                   "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "30"],
                                            "readinessProbe": {"tcpSocket": {"port": 9}}}]}}
    with NetemuCluster(1, name="plugin-warm-up", manifests=[ECHO_YAML, command_pod], ready=False) as cluster:
        def echo_running() -> bool:  # exec needs the container running, not only the pod's IP
            status = cluster.cluster.get("pod", "echo").status
            return bool(status.pod_ip) and any(c.state.running for c in status.container_statuses or ())
        cluster.wait_for(echo_running, 10)
        cluster.exec("echo", ["true"])
        cluster.http_get(f"http://{cluster.pod_ip('echo')}:5678/")


@pytest.fixture
def project(pytester, tmp_path, monkeypatch):
    monkeypatch.setenv("NETEMU_STATE_DIR", str(tmp_path / "state"))
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    pytester.mkdir("k8s")
    (pytester.path / "k8s" / "app.yaml").write_text(APP_YAML)
    (pytester.path / "k8s" / "echo.yaml").write_text(ECHO_YAML)
    return pytester


def states(tmp_path) -> list[str]:
    root = tmp_path / "state"
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) if root.exists() else []


def test_a_users_service_against_emulated_redis(project, tmp_path):
    project.makepyfile(test_app=USER_TEST)
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert states(tmp_path) == []


def test_the_cluster_goes_even_when_the_test_fails(project, tmp_path):
    project.makepyfile(test_fails='''
        import pytest

        @pytest.mark.netemu(manifests=["k8s/echo.yaml"])
        def test_fails(netemu_cluster):
            assert netemu_cluster.pods()
            assert netemu_cluster.http_get(f"http://{netemu_cluster.pod_ip('echo')}:5678/").body == "42"
    ''')
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError*"])
    assert states(tmp_path) == []


def test_clusters_in_one_session_do_not_collide(project, tmp_path):
    project.makeconftest('''
        import pytest

        @pytest.fixture(scope="session")
        def netemu_session_config():
            return {"manifests": ["k8s/echo.yaml"], "nodes": 2}
    ''')
    project.makepyfile(test_two='''
        import pytest

        @pytest.mark.netemu(manifests=["k8s/echo.yaml"])
        def test_both_at_once(netemu_session_cluster, netemu_cluster):
            shared, mine = netemu_session_cluster, netemu_cluster
            assert shared.name != mine.name
            assert shared.node_ip("node-1") != mine.node_ip("node-1")
            assert shared.pod_ip("echo") != mine.pod_ip("echo")
            for cluster in (shared, mine):
                assert cluster.http_get(f"http://{cluster.pod_ip('echo')}:5678/") == (200, "hello\\n")
            shared.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "left-behind"},
                          "spec": {"containers": [{"name": "c", "image": "busybox"}]}})

        def test_the_session_cluster_is_shared(netemu_session_cluster):
            assert [p.metadata.name for p in netemu_session_cluster.pods()] == ["echo", "left-behind"]
    ''')
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert states(tmp_path) == []


def test_the_async_fixture(project):
    project.makepyfile(test_async='''
        import pytest

        @pytest.mark.netemu(manifests=["k8s/echo.yaml"], nodes=2)
        async def test_async(netemu_async_cluster):
            c = netemu_async_cluster
            status, body = await c.http_get(f"http://{c.pod_ip('echo')}:5678/")
            assert (status, body) == (200, "hello\\n")
            assert (await c.exec("echo", ["printenv", "POD_IP"])).stdout.strip() == c.pod_ip("echo")
            assert len(c.list("node")) == 2
    ''')
    project.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_helpers_without_manifests_and_the_marker(project):
    project.makepyfile(test_bare='''
        import pytest

        def test_defaults(netemu_cluster):
            assert [n.metadata.name for n in netemu_cluster.list("node")] == ["node-1"]
            with pytest.raises(ConnectionRefusedError):
                netemu_cluster.http_get(f"http://{netemu_cluster.node_ip('node-1')}:9/")
            if "cluster-dns" in netemu_cluster.capabilities:
                assert netemu_cluster.lookup("kubernetes.default.svc.cluster.local") == [
                    netemu_cluster.service_ip("kubernetes")]
            else:
                with pytest.raises(NotImplementedError):
                    netemu_cluster.lookup("kubernetes.default.svc.cluster.local")

        @pytest.mark.netemu("three")
        def test_positional_arguments_are_refused(netemu_cluster):
            pass
    ''')
    result = project.runpytest("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*netemu takes keyword arguments only*"])
    assert "netemu(manifests=" in project.runpytest("--markers").stdout.str()


def test_the_readme_example_is_this_test():
    """The README's pytest section shows USER_TEST and APP_YAML; keep them runnable (above)."""
    assert "netemu_cluster.http_get" in USER_TEST and "REDIS_SERVICE_HOST" in textwrap.dedent(APP_YAML)
