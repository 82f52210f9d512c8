"""``pytest --netemu-kubeconfig FILE``: a user's integration tests, written for the ``netemu_cluster``
fixtures, run against a cluster reached only through its Kubernetes API — here a netemu cluster
this test module starts, whose kubeconfig a separate pytest process is given (with no netemu
state of its own). Each test gets a labelled namespace that is gone afterwards; a test that needs
what the cluster lacks is skipped with the reason; a wrong assertion still fails."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from kubernetes import client, config

from kubeapi_support import cluster_with_api
from netemu.kubeapi import KUBECONFIG

PYTEST = str(Path(sys.executable).parent / "pytest")
LABEL = "netemu.dev/scenario"

WEB_YAML = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: echo
          image: hashicorp/http-echo
          args: ["-text=hello", "-listen=:5678"]
          ports: [{containerPort: 5678}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 5678}]
"""

# A user's suite: each test writes down the namespace it ran in, so that the test below can check
# that it is gone.
USER_SUITE = '''\
import pathlib

import pytest

SEEN = pathlib.Path(__file__).parent / "namespaces.txt"


def seen(cluster):
    with SEEN.open("a") as f:
        f.write(cluster.namespace + "\\n")


@pytest.mark.netemu(manifests=["k8s/web.yaml"])
def test_web_answers_through_its_service(netemu_cluster):
    c = netemu_cluster
    seen(c)
    assert c.namespace.startswith("netemu-web-answers-through-its-service-")
    c.wait_rollout("web")
    c.wait_endpoints("web", count=2)
    assert c.http_get(f"http://{c.service_ip('web')}/") == (200, "hello\\n")      # from the client pod
    assert c.http_get(f"http://{c.pod_ip('web-*')}:5678/").body == "hello\\n"
    assert len(c.pods(selector="app=web")) == 2
    assert c.get("deployment", "web").spec.replicas == 2
    assert [s.metadata.name for s in c.list("service")] == ["web"]
    assert c.exec("web-*", ["printenv", "KUBERNETES_SERVICE_HOST"]).stdout.strip() == c.service_ip("kubernetes")
    assert c.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
                    "data": {"mode": "fast"}}) == ["configmap/settings created"]
    assert c.get("configmap", "settings").data == {"mode": "fast"}
    c.scale("web", 1)
    c.wait_endpoints("web", count=1)
    domain = c.cluster.config.cluster_domain
    assert c.lookup(f"web.{c.namespace}.svc.{domain}") == [c.service_ip("web")]


def test_a_slow_backend(netemu_cluster):
    seen(netemu_cluster)
    netemu_cluster.impair(service="web", delay=0.5)
    raise AssertionError("impair ran on a cluster that cannot impair")


@pytest.mark.netemu(requires=["partition"])
def test_a_split_cluster(netemu_cluster):
    raise AssertionError("the marker's requires= did not skip")


def test_a_wrong_expectation(netemu_cluster):
    seen(netemu_cluster)
    assert netemu_cluster.service_ip("kubernetes") == "192.0.2.1"


def test_the_session_namespace(netemu_session_cluster):
    seen(netemu_session_cluster)
    netemu_session_cluster.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared"}})
    assert [m.metadata.name for m in netemu_session_cluster.list("configmap")
            if m.metadata.name == "shared"] == ["shared"]


async def test_the_async_fixture(netemu_async_cluster):
    c = netemu_async_cluster
    seen(c)
    await c.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}})
    assert c.get("configmap", "a").data == {"k": "v"}
'''


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with cluster_with_api(tmp_path_factory.mktemp("state"), "plugin-remote", nodes=2) as handle:
        yield handle


@pytest.fixture(scope="module")
def kubeconfig(api) -> Path:
    return api.cluster.state.directory / KUBECONFIG


@pytest.fixture(scope="module")
def core(kubeconfig):
    with config.new_client_from_config(config_file=str(kubeconfig)) as api_client:
        yield client.CoreV1Api(api_client)


@pytest.fixture
def suite(tmp_path) -> Path:
    root = tmp_path / "suite"
    (root / "k8s").mkdir(parents=True)
    (root / "k8s" / "web.yaml").write_text(WEB_YAML)
    (root / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    (root / "test_app.py").write_text(USER_SUITE)
    return root


def env_for(kubeconfig: Path, tmp_path: Path) -> dict[str, str]:
    """The inner pytest's environment: this test's kubeconfig only, no netemu state, no outer pytest's."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("NETEMU_", "PYTEST_"))}
    return {**clean, "KUBECONFIG": str(kubeconfig), "NETEMU_STATE_DIR": str(tmp_path / "no-state"),
            "HOME": str(tmp_path)}


def inner_pytest(suite: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTEST, "-p", "no:cacheprovider", "-rfs", *args], cwd=suite, env=env,
                          capture_output=True, text=True, timeout=600)


def outcomes(stdout: str) -> dict[str, int]:
    last = stdout.strip().splitlines()[-1]
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", last)}


def labelled_namespaces(core) -> set[str]:
    return {ns.metadata.name for ns in core.list_namespace(label_selector=LABEL).items}


def test_a_users_suite_runs_on_the_cluster_the_kubeconfig_names(kubeconfig, core, suite, tmp_path):
    before = {ns.metadata.name for ns in core.list_namespace().items}
    # `--netemu-kubeconfig=FILE`, in one word: pytest takes the rootdir (and so its ini file) from
    # the arguments that name files before it knows a plugin's options and their values
    result = inner_pytest(suite, env_for(kubeconfig, tmp_path), f"--netemu-kubeconfig={kubeconfig}")
    report = result.stdout + result.stderr
    assert outcomes(result.stdout) == {"passed": 3, "skipped": 2, "failed": 1}, report
    assert result.returncode == 1, report
    # the skips say why, in the runner's words
    assert "impair (link impairments (delay, jitter, loss, rate), Cluster.impair): netemu's own; " \
           "on a real cluster it needs a chaos tool such as Chaos Mesh's NetworkChaos" in report
    assert "partition (network partitions between nodes" in report
    assert "FAILED test_app.py::test_a_wrong_expectation" in report and "== '192.0.2.1'" in report
    # every namespace a test ran in was labelled, and is gone; nothing else changed
    used = (suite / "namespaces.txt").read_text().split()
    assert len(used) == len(set(used)) == 5, used
    assert all(ns.startswith("netemu-") for ns in used)
    assert labelled_namespaces(core) == set()
    assert {ns.metadata.name for ns in core.list_namespace().items} == before


def test_the_environment_variable_works_as_the_flag(kubeconfig, core, suite, tmp_path):
    env = {**env_for(kubeconfig, tmp_path), "NETEMU_KUBECONFIG": str(kubeconfig)}
    result = inner_pytest(suite, env, "-k", "wrong_expectation or session")
    assert outcomes(result.stdout) == {"passed": 1, "failed": 1}, result.stdout + result.stderr
    used = (suite / "namespaces.txt").read_text().split()
    assert len(used) == 2 and all(ns.startswith("netemu-") for ns in used)
    assert labelled_namespaces(core) == set()


def test_a_kubeconfig_that_does_not_exist_is_one_usage_error(suite, tmp_path):
    missing = tmp_path / "missing"
    result = inner_pytest(suite, env_for(missing, tmp_path), f"--netemu-kubeconfig={missing}")
    assert result.returncode == 4, result.stdout + result.stderr
    assert f"ERROR: netemu: kubeconfig {missing}: " in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_without_the_switch_the_same_helpers_skip_where_netemu_lacks_the_power(suite, tmp_path):
    """In-process, the loopback backend has no partitions: the same skip, in netemu's words; the
    faults it has run."""
    (suite / "test_app.py").write_text(textwrap.dedent('''
        import pytest

        @pytest.mark.netemu(requires=["partition"])
        def test_a_split_cluster(netemu_cluster):
            raise AssertionError("not skipped")

        def test_heal(netemu_cluster):
            netemu_cluster.heal()
            raise AssertionError("not skipped")

        @pytest.mark.netemu(manifests=["k8s/web.yaml"], nodes=2)
        def test_the_faults_it_has(netemu_cluster):
            c = netemu_cluster
            assert c.namespace == "default"
            c.impair(service="web", delay=0.3)
            status, _ = c.http_get(f"http://{c.service_ip('web')}/")
            assert status == 200
            c.impair(service="web")
            victim = c.pods()[0].metadata.name
            c.kill(victim)
            c.wait_for(lambda: c.cluster.get("pod", victim).status.container_statuses[0].restart_count == 1)
            node = c.get("pod", victim).spec.node_name
            c.stop_node(node)
            c.wait_for(lambda: c.cluster.get("node", node).status.conditions[0].status != "True")
            c.start_node(node)
            c.wait_rollout("web")
    '''))
    result = inner_pytest(suite, env_for(tmp_path / "unused", tmp_path))
    assert outcomes(result.stdout) == {"skipped": 2, "passed": 1}, result.stdout + result.stderr
    assert result.stdout.count("needs partition (network partitions between nodes") == 2
