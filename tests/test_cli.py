"""The netemu command as a user runs it: up --detach, get, exec, logs, describe, down, gc."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

NETEMU = str(Path(sys.executable).parent / "netemu")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "NETEMU_STATE_DIR": str(tmp_path / "state"), "NETEMU_CLUSTER": "cli"}


def netemu(env, *args, input=None, check=True, timeout=60):
    r = subprocess.run([NETEMU, *args], env=env, capture_output=True, text=True, input=input, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"netemu {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return r


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not alive(pid)


@pytest.fixture
def cluster(env):
    r = netemu(env, "up", "--detach", "--dns-upstream", "none", "--nodes", "3", "-f", str(EXAMPLES / "my-nginx-deployment.yaml"))
    pid = int(r.stdout.rsplit("pid ", 1)[1].split(")")[0])
    yield pid
    if alive(pid):
        netemu(env, "down", check=False)
        if not wait_gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_up_get_exec_logs_describe_down(env, cluster, tmp_path):
    pid = cluster
    pods = netemu(env, "get", "pods", "-o", "wide").stdout.splitlines()
    assert pods[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED", "NODE",
                               "READINESS", "GATES"]
    assert len(pods) == 3 and all(" 1/1 " in p and " Running " in p for p in pods[1:])
    name = pods[1].split()[0]

    assert netemu(env, "apply", "-f", str(EXAMPLES / "my-nginx-service.yaml")).stdout == "service/my-nginx created\n"
    svc = netemu(env, "get", "svc", "my-nginx").stdout.splitlines()
    assert svc[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert svc[1].split()[1:5] == ["ClusterIP", svc[1].split()[2], "<none>", "80/TCP"]
    dns = netemu(env, "get", "svc", "-n", "kube-system", "kube-dns").stdout.splitlines()  # flags before the name
    assert dns[1].split()[0] == "kube-dns"

    # exec: the container's environment (variables from when it started), exit code, stdin
    r = netemu(env, "exec", name, "--", "sh", "-c", "printenv KUBERNETES_SERVICE_HOST; cat; exit 7",
               input="from stdin\n", check=False)
    assert (r.returncode, r.stdout) == (7, "127.96.0.1\nfrom stdin\n")

    ip = next(line.split()[5] for line in pods[1:] if line.startswith(name))
    assert subprocess.run(["curl", "-sS", "-o", "/dev/null", f"http://{ip}/"], timeout=10).returncode == 0
    logs = netemu(env, "logs", name).stdout
    assert '"GET / HTTP/1.1" 200 615' in logs

    desc = netemu(env, "describe", "svc", "my-nginx").stdout
    assert "Endpoints:" in desc and f"{ip}:80" in desc

    assert netemu(env, "down").stdout == 'cluster "cli" stopped\n'
    assert wait_gone(pid)
    state = Path(env["NETEMU_STATE_DIR"])
    assert [p.name for p in state.iterdir()] == []
    r = subprocess.run(["curl", "-sS", "--max-time", "2", f"http://{ip}/"], capture_output=True, text=True)
    assert r.returncode == 7  # connection refused: nothing listens any more


@pytest.mark.parametrize("args, message", [
    (["get", "pods"], 'error: no running cluster named "cli" (start one with `netemu up --name cli`)'),
    (["down"], 'error: no running cluster named "cli"'),
    (["apply", "-f", "/nonexistent.yaml"], 'error: the path "/nonexistent.yaml" does not exist'),
], ids=["get", "down", "apply-missing-file"])
def test_errors_without_a_cluster_are_one_line(env, args, message):
    r = netemu(env, *args, check=False)
    assert r.returncode == 1
    assert r.stderr.startswith(message) and len(r.stderr.splitlines()) == 1
    assert "Traceback" not in r.stderr


def test_user_mistakes_are_one_line_errors(env, cluster, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {a: b}\n"
                   "  ports:\n  - port: 80\n  - port: 81\n    prot: TCP\n")
    r = netemu(env, "apply", "-f", str(bad), check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{bad}[doc 1] Service default/web: spec.ports[1].prot: unknown field" in r.stderr
    r = netemu(env, "get", "pods", "nope", check=False)
    assert (r.returncode, r.stderr) == (1, 'error: pods "nope" not found\n')
    r = netemu(env, "get", "widgets", check=False)
    assert r.returncode == 1 and 'the server doesn\'t have a resource type "widgets"' in r.stderr
    r = netemu(env, "exec", "nope", "--", "true", check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    r = netemu(env, "up", "--detach", check=False)
    assert r.returncode == 1 and 'cluster "cli" is already running' in r.stderr


def test_kill_9_then_gc_removes_everything(env, tmp_path):
    r = netemu(env, "up", "--detach", "--dns-upstream", "none")
    pid = int(r.stdout.rsplit("pid ", 1)[1].split(")")[0])
    netemu(env, "apply", "-f", "-", input="""
apiVersion: v1
kind: Pod
metadata: {name: sleeper}
spec:
  containers:
  - name: main
    image: busybox
    command: [sh, -c, "trap '' TERM; sleep 300 & wait"]
""")
    netemu(env, "wait", "--timeout", "20")
    ledger = (Path(env["NETEMU_STATE_DIR"]) / "cli" / "ledger").read_text().split()
    child = int(ledger[ledger.index("process") + 1])
    assert alive(child)
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid)
    # PR_SET_PDEATHSIG takes the direct child down with the cluster; its own children remain for gc.
    out = netemu(env, "gc").stdout
    assert "state directory" in out
    assert wait_gone(child)
    assert list(Path(env["NETEMU_STATE_DIR"]).iterdir()) == []
    assert netemu(env, "gc").stdout == "nothing to collect\n"


def test_foreground_up_stops_cleanly_on_ctrl_c(env):
    proc = subprocess.Popen([NETEMU, "up", "--dns-upstream", "none", "-f", str(EXAMPLES / "my-nginx-deployment.yaml")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith('cluster "cli" is up'), first + proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert 'cluster "cli" stopped' in out
    assert list(Path(env["NETEMU_STATE_DIR"]).iterdir()) == []
