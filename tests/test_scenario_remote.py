"""``netemu run --kubeconfig``: the scenario library against a cluster reached only through its
Kubernetes API — here a netemu cluster started by the test, whose kubeconfig the runner (a
separate process, with no netemu state directory of that cluster) is given. Each scenario runs
in a namespace of its own, labelled so that ``--cleanup`` finds what a killed run left."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubernetes import client, config

from kubeapi_support import cluster_with_api
from netemu.kubeapi import KUBECONFIG
from netemu.scenario.remote_api import decode
from netemu.scenario.remote_traffic import classify_probe

NETEMU = str(Path(sys.executable).parent / "netemu")
LIBRARY = Path(__file__).resolve().parent.parent / "scenarios"
LABEL = "netemu.dev/scenario"
PASSING = ["clusterip-single-port", "dns-discovery", "multi-port-service", "env-vars-traffic", "nodeport-traffic",
           "headless-statefulset", "loadbalancer-local", "container-to-container", "rolling-scale-traffic"]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with cluster_with_api(tmp_path_factory.mktemp("state"), "remote", nodes=3) as handle:
        yield handle


@pytest.fixture(scope="module")
def kubeconfig(api) -> Path:
    return api.cluster.state.directory / KUBECONFIG


@pytest.fixture(scope="module")
def core(kubeconfig):
    with config.new_client_from_config(config_file=str(kubeconfig)) as api_client:
        yield client.CoreV1Api(api_client)


@pytest.fixture
def env(kubeconfig, tmp_path):
    """The runner's environment: this test's kubeconfig only, and a netemu state root of its own
    (empty: the runner reaches the cluster through the API alone)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NETEMU_")}
    (tmp_path / "tmp").mkdir()
    return {**clean, "KUBECONFIG": str(kubeconfig), "NETEMU_STATE_DIR": str(tmp_path / "no-state"),
            "HOME": str(tmp_path), "TMPDIR": str(tmp_path / "tmp")}


def netemu_run(env, tmp_path, *args, timeout=300):
    """``netemu run ARGS``, which leaves nothing in its temporary directory (no credentials)."""
    result = subprocess.run([NETEMU, "run", *args], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=timeout)
    assert list(Path(env["TMPDIR"]).iterdir()) == [], "the run left files in its temporary directory"
    return result


def scenario_namespaces(core) -> dict[str, str]:
    """name -> phase of every namespace the runner labelled."""
    return {ns.metadata.name: ns.status.phase for ns in core.list_namespace(label_selector=LABEL).items}


def wait_gone(core, names, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = set(names) & set(scenario_namespaces(core))
        if not left:
            return set()
        time.sleep(0.1)
    return left


def test_library_scenarios_pass_through_the_api(kubeconfig, env, core, tmp_path):
    files = [str(LIBRARY / f"{name}.yaml") for name in PASSING]
    result = netemu_run(env, tmp_path, "--kubeconfig", str(kubeconfig), *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(PASSING)} passed" in result.stdout, result.stdout
    assert "FAILED" not in result.stdout
    # the default namespace of a scenario is its own: DNS names were written in it
    assert "web-1.nginx.netemu-headless-service-and-statefulset-names-" in result.stdout
    assert scenario_namespaces(core) == {}, "every scenario's namespace is deleted when it ends"


def test_netemu_only_steps_are_skipped_with_the_reason(kubeconfig, env, tmp_path):
    env = {**env, "NETEMU_KUBECONFIG": str(kubeconfig)}   # the environment variable works as the flag
    result = netemu_run(env, tmp_path, str(LIBRARY / "node-delay.yaml"), str(LIBRARY / "node-failure.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 skipped" in result.stdout
    assert "impair (link impairments" in result.stdout
    assert "Chaos Mesh's NetworkChaos, which this cluster does not have" in result.stdout
    assert "kill (killing a container's process" in result.stdout


NODES = """
name: {name}
cluster: {{nodes: {nodes}}}
steps:
  - expect: {{object: node/{node}, field: metadata.name, equals: {node}}}
"""


def test_a_scenario_whose_nodes_the_cluster_lacks_is_skipped(kubeconfig, env, tmp_path):
    (tmp_path / "four.yaml").write_text(NODES.format(name="four nodes", nodes=4, node="node-1"))
    (tmp_path / "named.yaml").write_text(NODES.format(name="named", nodes="[node-1, edge-7]", node="edge-7"))
    (tmp_path / "fits.yaml").write_text(NODES.format(name="fits", nodes="[node-1, node-3]", node="node-3"))
    result = netemu_run(env, tmp_path, "--kubeconfig", str(kubeconfig), "four.yaml", "named.yaml", "fits.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "needs 4 nodes (cluster: nodes), and this cluster has 3" in result.stdout
    assert "names nodes this cluster lacks: edge-7 (its nodes: node-1, node-2, node-3)" in result.stdout
    assert "1 passed, 2 skipped" in result.stdout


FAILING = """
name: a wrong expectation
manifests:
  - |
    apiVersion: v1
    kind: Service
    metadata: {name: lonely}
    spec:
      ports: [{port: 8080}]
steps:
  - expect: {object: svc/lonely, field: "spec.ports[0].port", equals: 9999}
"""


def test_a_failing_scenario_fails_and_still_leaves_nothing(kubeconfig, env, core, tmp_path):
    (tmp_path / "failing.yaml").write_text(FAILING)
    result = netemu_run(env, tmp_path, "--kubeconfig", str(kubeconfig), "--wait-timeout", "30", "failing.yaml")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "expected 9999, got 8080" in result.stdout
    assert scenario_namespaces(core) == {}


def test_keep_leaves_a_failed_namespace_that_cleanup_removes_and_nothing_else(kubeconfig, env, core, tmp_path):
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "not-netemus"}})
    (tmp_path / "failing.yaml").write_text(FAILING)
    result = netemu_run(env, tmp_path, "--kubeconfig", str(kubeconfig), "--keep", "failing.yaml")
    assert result.returncode == 1
    kept = scenario_namespaces(core)
    assert len(kept) == 1 and next(iter(kept)).startswith("netemu-a-wrong-expectation-")
    assert f"the namespace {next(iter(kept))} is kept" in result.stdout
    assert [s.metadata.name for s in core.list_namespaced_service(next(iter(kept))).items] == ["lonely"]

    cleaned = netemu_run(env, tmp_path, "--kubeconfig", str(kubeconfig), "--cleanup")
    assert cleaned.returncode == 0, cleaned.stderr
    assert cleaned.stdout.strip() == f'namespace "{next(iter(kept))}" deleted'
    assert wait_gone(core, kept) == set()
    names = {ns.metadata.name for ns in core.list_namespace().items}
    assert {"not-netemus", "default", "kube-system"} <= names
    core.delete_namespace("not-netemus")


UNSCHEDULABLE = """
name: nowhere to run
steps:
  - apply: |
      apiVersion: v1
      kind: Pod
      metadata: {name: picky}
      spec:
        nodeSelector: {disk: none-has-it}
        containers: [{name: c, image: registry.k8s.io/e2e-test-images/agnhost:2.53, args: [pause]}]
  - wait: {for: pods-ready}
    timeout: 1s
"""


def test_a_wait_that_times_out_says_what_is_pending_and_why(kubeconfig, env, core, tmp_path):
    (tmp_path / "unschedulable.yaml").write_text(UNSCHEDULABLE)
    result = netemu_run(env, tmp_path, "--kubeconfig", str(kubeconfig), "unschedulable.yaml")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "timed out after 1s waiting for all pods ready (now 0/1 ready: picky Pending)" in result.stdout
    assert "event: pod/picky: FailedScheduling: 0/3 nodes are available" in result.stdout
    assert scenario_namespaces(core) == {}


SLOW = """
name: interrupted
manifests:
  - |
    apiVersion: v1
    kind: Namespace
    metadata: {name: declared-by-the-scenario}
  - |
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: settings}
    data: {mode: slow}
steps:
  - sleep: 60s
"""


def test_cleanup_after_kill_9_removes_what_the_run_created(kubeconfig, env, core, tmp_path):
    (tmp_path / "slow.yaml").write_text(SLOW)
    temporary = Path(env["TMPDIR"])   # a killed run leaves no credentials in it either
    runner = subprocess.Popen([NETEMU, "run", "--kubeconfig", str(kubeconfig), "slow.yaml"], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(scenario_namespaces(core)) < 2:
            assert runner.poll() is None, runner.communicate()
            time.sleep(0.1)
        created = scenario_namespaces(core)
        assert "declared-by-the-scenario" in created and len(created) == 2
        own = next(n for n in created if n != "declared-by-the-scenario")
        deadline = time.monotonic() + 30   # until the manifests are in: the ConfigMap exists
        while time.monotonic() < deadline and not core.list_namespaced_config_map(own, label_selector="").items:
            time.sleep(0.1)
        held = {os.readlink(f"/proc/{runner.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{runner.pid}/fd")}
        assert {"/memfd:netemu-kubeconfig-ssl_ca_cert (deleted)", "/memfd:netemu-kubeconfig-cert_file (deleted)",
                "/memfd:netemu-kubeconfig-key_file (deleted)"} <= held, held
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.communicate(timeout=30)
    assert set(scenario_namespaces(core)) == set(created), "a killed run deletes nothing"
    assert list(temporary.iterdir()) == [], "the kubeconfig's key and certificates outlived the run"

    cleaned = netemu_run(env, tmp_path, "--kubeconfig", str(kubeconfig), "--cleanup")
    assert cleaned.returncode == 0, cleaned.stderr
    assert sorted(cleaned.stdout.split("\n")[:-1]) == sorted(f'namespace "{n}" deleted' for n in created)
    assert wait_gone(core, created) == set()


OUTSIDE = """
name: reaches outside
steps:
  - apply: |
      apiVersion: v1
      kind: ConfigMap
      metadata: {name: intruder, namespace: kube-system}
    expect: {error: {contains: "is not one of this scenario's"}}
  - expect: {object: svc/kubernetes, field: spec.clusterIP, exists: true}
"""


def test_nothing_outside_the_scenarios_namespaces_is_changed(kubeconfig, env, core, tmp_path):
    (tmp_path / "outside.yaml").write_text(OUTSIDE)
    result = netemu_run(env, tmp_path, "--kubeconfig", str(kubeconfig), "outside.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "intruder" not in {c.metadata.name for c in core.list_namespaced_config_map("kube-system").items}


def test_a_kubeconfig_that_does_not_exist_is_one_line_and_exit_1(env, tmp_path):
    result = netemu_run(env, tmp_path, "--kubeconfig", str(tmp_path / "missing"), str(LIBRARY / "pod-to-pod.yaml"))
    assert result.returncode == 1
    assert result.stderr.startswith("error: kubeconfig ") and len(result.stderr.strip().splitlines()) == 1


def test_a_context_the_kubeconfig_lacks_is_one_line_and_exit_1(kubeconfig, env, tmp_path):
    result = netemu_run(env, tmp_path, "--kubeconfig", str(kubeconfig), "--context", "no-such-context",
                        str(LIBRARY / "pod-to-pod.yaml"))
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: kubeconfig {kubeconfig}: ") and "no-such-context" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cleanup_needs_a_kubeconfig(env, tmp_path):
    result = netemu_run(env, tmp_path, "--cleanup")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: --cleanup goes with --kubeconfig FILE (or NETEMU_KUBECONFIG)"


# --------------------------------------------------------------------------- pieces


def test_objects_of_a_real_cluster_decode_without_the_fields_netemu_does_not_model():
    pod = decode({"apiVersion": "v1", "kind": "Pod",
                  "metadata": {"name": "p", "namespace": "n", "managedFields": [{"manager": "x"}]},
                  "spec": {"containers": [{"name": "c", "image": "i", "someFutureField": {"a": 1}}],
                           "anotherNewField": True},
                  "status": {"podIP": "10.0.0.5", "qosClass": "BestEffort"}})
    assert pod.metadata.name == "p" and pod.spec.containers[0].image == "i"
    assert pod.status.pod_ip == "10.0.0.5"


@pytest.mark.parametrize(("protocol", "code", "out", "err", "outcome", "reply"), [
    ("tcp", 0, "", "NETEMU-CONNECTED\n", "ok", ""),
    ("tcp", 0, "+PONG\r\n", "NETEMU-CONNECTED\n", "ok", "+PONG\r\n"),
    ("tcp", 1, "", "bash: connect: Connection refused\nbash: line 3: /dev/tcp/10.0.0.1/81: Connection refused\n",
     "refused", ""),
    ("tcp", 124, "", "", "timeout", ""),
    ("tcp", 1, "", "NETEMU-CONNECTED\nbash: line 10: read: read error: 0: Connection reset by peer\n", "reset", ""),
    ("udp", 124, "", "NETEMU-CONNECTED\n", "timeout", ""),
    ("udp", 0, "pong", "NETEMU-CONNECTED\n", "ok", "pong"),
    ("udp", 1, "", "NETEMU-CONNECTED\nbash: read error: Connection refused\n", "refused", ""),
    ("tcp", 127, "", 'exec: "bash": executable file not found in $PATH\n', "error", ""),
])
def test_the_shell_probe_is_classified_as_netemus_probe(protocol, code, out, err, outcome, reply):
    result = classify_probe(protocol, 2.0, code, out, err)
    assert (result.outcome, result.reply) == (outcome, reply), json.dumps(result.__dict__)
