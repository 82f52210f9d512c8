"""``pods/log`` and ``pods/exec`` through the real kubectl (netemu.kubeapi.podlogs, podexec).

One cluster for the module (kubeapi_support); kubectl reads the cluster's own kubeconfig from
its state directory under the test's tmp dir. Each test works in a namespace of its own.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import ssl
import subprocess

import aiohttp
import pytest
import yaml

from test_kubelet_logs_exec import TWO_CONTAINERS
from kubeapi_support import KUBECTL, TICKER, api_fixtures, cluster_with_api
from netemu.fabric import routes_outside_loopback
from netemu.kubeapi import KUBECONFIG
from test_netns_helpers import netns_ready  # noqa: F401 - fixture


pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")

FIVE_LINES = """
apiVersion: v1
kind: Pod
metadata: {name: five}
spec:
  containers:
  - name: main
    image: busybox
    command: [sh, -c, "for i in 1 2 3 4 5; do echo line-$i; done; exec sleep 300"]
"""


api, kubectl, namespace = api_fixtures("podio")


def _running(api, namespace: str, pod: str, text: str = "", container: str | None = None) -> None:
    """Wait until the pod runs and (if given) ``text`` is in its container's log."""
    def ready() -> bool:
        obj = api.cluster.store.get("Pod", namespace, pod)
        if obj is None or obj.status.phase != "Running":
            return False
        return not text or text in api.cluster.logs(pod, container, namespace)
    api.wait_for(ready, 30, f"pod {pod} running")


# ---------------------------------------------------------------------- logs

def test_logs_tail_limit_and_timestamps(kubectl, api, namespace):
    api.apply(FIVE_LINES, namespace=namespace)
    _running(api, namespace, "five", "line-5")
    assert kubectl("logs", "-n", namespace, "five").stdout.splitlines() == [f"line-{i}" for i in range(1, 6)]
    assert kubectl("logs", "-n", namespace, "five", "--tail=2").stdout.splitlines() == ["line-4", "line-5"]
    assert kubectl("logs", "-n", namespace, "five", "--tail=0").stdout == ""
    assert kubectl("logs", "-n", namespace, "five", "--limit-bytes=9").stdout == "line-1\nli"
    stamped = kubectl("logs", "-n", namespace, "five", "--timestamps", "--tail=1").stdout
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z line-5\n", stamped), stamped
    assert kubectl("logs", "-n", namespace, "five", "--since=1h").stdout.splitlines()[-1] == "line-5"


def test_logs_container_choice_in_the_api_servers_words(kubectl, api, namespace):
    api.apply(TWO_CONTAINERS, namespace=namespace)
    _running(api, namespace, "duo", "out-b", "b")
    assert kubectl("logs", "-n", namespace, "duo", "-c", "b").stdout == "out-b\n"
    assert kubectl("logs", "-n", namespace, "duo", "-c", "a").stdout.splitlines() == ["out-a", "err-a"]
    raw = kubectl("get", "--raw", f"/api/v1/namespaces/{namespace}/pods/duo/log", check=False)
    assert raw.returncode == 1
    assert "a container name must be specified for pod duo, choose one of: [a b]" in raw.stderr
    unknown = kubectl("logs", "-n", namespace, "duo", "-c", "z", check=False)
    assert unknown.returncode == 1 and "container z is not valid for pod duo" in unknown.stderr
    missing = kubectl("logs", "-n", namespace, "nosuchpod", check=False)
    assert missing.returncode == 1 and 'pods "nosuchpod" not found' in missing.stderr
    previous = kubectl("logs", "-n", namespace, "duo", "-c", "a", "--previous", check=False)
    assert previous.returncode == 1
    assert 'previous terminated container "a" in pod "duo" not found' in previous.stderr
    bad = kubectl("get", "--raw", f"/api/v1/namespaces/{namespace}/pods/duo/log?container=a&tailLines=-1",
                  check=False)
    assert "tailLines: Invalid value: -1: must be greater than or equal to 0" in bad.stderr


def test_logs_follow_streams_new_lines(kubectl, api, namespace):
    api.apply(TICKER, namespace=namespace)
    _running(api, namespace, "ticker", "tick-0")
    seen: list[str] = []
    with subprocess.Popen([KUBECTL, "logs", "-f", "-n", namespace, "ticker", "--tail=1"], env=kubectl.env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as follower:
        try:
            assert follower.stdout is not None
            for line in follower.stdout:  # lines written after kubectl started: streamed, not polled by it
                seen.append(line.strip())
                if len(seen) == 6:
                    break
        finally:
            follower.terminate()
            follower.wait(10)
    numbers = [int(s.removeprefix("tick-")) for s in seen]
    assert numbers == list(range(numbers[0], numbers[0] + 6)), seen


def test_logs_follow_ends_with_the_container(kubectl, api, namespace):
    api.apply("""
apiVersion: v1
kind: Pod
metadata: {name: brief}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    command: [sh, -c, "echo first; sleep 1; echo last"]
""", namespace=namespace)
    _running(api, namespace, "brief", "first")
    result = kubectl("logs", "-f", "-n", namespace, "brief")
    assert result.stdout.splitlines() == ["first", "last"]


def test_logs_of_a_deployment(kubectl, api, namespace):
    kubectl("create", "deployment", "talker", "-n", namespace, "--image=busybox", "--",
            "sh", "-c", "echo hello-from-deploy; exec sleep 300")

    def logged() -> bool:
        pods = api.cluster.store.list("Pod", namespace)
        return bool(pods) and pods[0].status.phase == "Running" and \
            "hello-from-deploy" in api.cluster.logs(pods[0].metadata.name, None, namespace)
    api.wait_for(logged, 30, "the deployment's pod logging")
    assert kubectl("logs", "-n", namespace, "deploy/talker").stdout == "hello-from-deploy\n"


# ---------------------------------------------------------------------- exec

def test_exec_streams_and_passes_the_exit_code(kubectl, api, namespace):
    api.apply(TWO_CONTAINERS, namespace=namespace)
    _running(api, namespace, "duo")
    result = kubectl("exec", "-n", namespace, "duo", "-c", "a", "--", "sh", "-c", "echo out; echo err >&2; exit 3",
                     check=False)
    assert result.returncode == 3
    assert result.stdout == "out\n"
    assert result.stderr.splitlines()[0] == "err" and "command terminated with exit code 3" in result.stderr
    assert kubectl("exec", "-n", namespace, "duo", "-c", "b", "--", "sh", "-c", "echo $MY_VAR").stdout == "from-b\n"


def test_exec_with_stdin(kubectl, api, namespace):
    api.apply(FIVE_LINES, namespace=namespace)
    _running(api, namespace, "five")
    assert kubectl("exec", "-i", "-n", namespace, "five", "--", "cat", input="hi\nthere\n").stdout == "hi\nthere\n"
    counted = kubectl("exec", "-i", "-n", namespace, "five", "--", "wc", "-c", input="x" * 100_000)
    assert counted.stdout.strip() == "100000"


def test_exec_missing_program_in_the_runtimes_words(kubectl, api, namespace):
    api.apply(FIVE_LINES, namespace=namespace)
    _running(api, namespace, "five")
    result = kubectl("exec", "-n", namespace, "five", "--", "no-such-program", check=False)
    assert result.returncode == 1
    assert 'exec: "no-such-program": executable file not found in $PATH' in result.stderr
    assert result.stderr.startswith("error: Internal error occurred: error executing command in container")
    unknown = kubectl("exec", "-n", namespace, "five", "-c", "z", "--", "true", check=False)
    assert unknown.returncode == 1 and "container z is not valid for pod five" in unknown.stderr


def _v4_exec(api, path: str) -> tuple[str, bytes, dict]:
    """An exec by a client that speaks only v4.channel.k8s.io: (protocol, stdout, status)."""
    directory = api.cluster.state.directory
    token = (directory / "token").read_text().strip()
    context = ssl.create_default_context(cafile=str(directory / "ca.crt"))

    async def talk() -> tuple[str, bytes, dict]:
        server = _server_url(api)
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(server + path, protocols=("v4.channel.k8s.io",), ssl=context,
                                          headers={"Authorization": f"Bearer {token}"}) as ws:
                out, status = b"", {}
                async for msg in ws:
                    if msg.data[0] == 1:
                        out += msg.data[1:]
                    elif msg.data[0] == 3:
                        status = json.loads(msg.data[1:])
                return ws.protocol or "", out, status
    return api.run(talk())  # on the cluster's loop, which outlives the TLS connection's shutdown


def _server_url(api) -> str:
    config = yaml.safe_load((api.cluster.state.directory / KUBECONFIG).read_text())
    return config["clusters"][0]["cluster"]["server"]


def test_exec_speaks_v4_to_a_client_that_asks_for_it(api, namespace):
    api.apply(FIVE_LINES, namespace=namespace)
    _running(api, namespace, "five")
    base = f"/api/v1/namespaces/{namespace}/pods/five/exec?stdout=true&command=sh&command=-c"
    protocol, out, status = _v4_exec(api, base + "&command=echo+v4")
    assert (protocol, out, status["status"]) == ("v4.channel.k8s.io", b"v4\n", "Success")
    _, _, failed = _v4_exec(api, base + "&command=exit+7")
    assert failed["reason"] == "NonZeroExitCode"
    assert failed["details"]["causes"] == [{"reason": "ExitCode", "message": "7"}]


def test_exec_with_a_terminal(kubectl, api, namespace):
    api.apply(FIVE_LINES, namespace=namespace)
    _running(api, namespace, "five")
    command = shlex.join([KUBECTL, "exec", "-it", "-n", namespace, "five", "--", "sh", "-c",
                          "tty; stty size; test -t 0 && echo stdin-is-a-terminal; exit 4"])
    # script(1) gives kubectl a terminal of its own (30 rows, 100 columns), as a user's shell would;
    # kubectl sends that size on the resize channel
    result = subprocess.run(["script", "-qec", f"stty rows 30 cols 100; {command}", "/dev/null"], env=kubectl.env,
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    lines = result.stdout.replace("\r", "").splitlines()
    assert "/dev/pts/" in lines[0], result.stdout
    assert "30 100" in lines and "stdin-is-a-terminal" in lines, result.stdout
    assert "command terminated with exit code 4" in lines
    assert result.returncode == 4


def test_exec_terminal_input(kubectl, api, namespace):
    api.apply(FIVE_LINES, namespace=namespace)
    _running(api, namespace, "five")
    command = shlex.join([KUBECTL, "exec", "-it", "-n", namespace, "five", "--", "sh", "-c", "read x; echo got-$x"])
    result = subprocess.run(["script", "-qec", command, "/dev/null"], env=kubectl.env, capture_output=True,
                            text=True, timeout=60, input="hello\n")
    assert "got-hello" in result.stdout.replace("\r", "").splitlines(), result.stdout
    assert result.returncode == 0


def _processes_with(argv: list[str]) -> list[int]:
    wanted = "\0".join(argv).encode() + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read() == wanted:
                        found.append(int(entry))
            except OSError:
                pass
    return found


def test_exec_command_ends_when_the_client_goes_away(kubectl, api, namespace):
    api.apply(FIVE_LINES, namespace=namespace)
    _running(api, namespace, "five")
    marker = ["sleep", "917.25"]
    with subprocess.Popen([KUBECTL, "exec", "-n", namespace, "five", "--", *marker], env=kubectl.env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as client:
        api.wait_for(lambda: bool(_processes_with(marker)), 30, "the exec'd command running")
        client.kill()
    api.wait_for(lambda: not _processes_with(marker), 30, "the exec'd command gone with its client")


def test_logs_follow_ends_when_the_pod_is_deleted(kubectl, api, namespace):
    api.apply(FIVE_LINES, namespace=namespace)
    _running(api, namespace, "five", "line-5")
    with subprocess.Popen([KUBECTL, "logs", "-f", "-n", namespace, "five"], env=kubectl.env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as follower:
        try:
            assert follower.stdout is not None
            assert follower.stdout.readline() == "line-1\n"
            kubectl("delete", "pod", "-n", namespace, "five", "--grace-period=0", "--force")
            assert follower.wait(30) == 0
            assert follower.stdout.read().splitlines()[-1] == "line-5"
        finally:
            if follower.returncode is None:
                follower.kill()


@pytest.mark.netns
@pytest.mark.skipif(bool(routes_outside_loopback()),
                    reason="the netns backend runs only in a namespace without outside routes (make test)")
def test_exec_and_logs_in_a_netns_pod(netns_ready, tmp_path):  # noqa: F811
    with cluster_with_api(tmp_path / "state", "podio-netns", backend="netns") as api:
        env = dict(os.environ, KUBECONFIG=str(api.cluster.state.directory / KUBECONFIG), HOME=str(tmp_path))
        api.apply(FIVE_LINES)
        _running(api, "default", "five", "line-5")

        def kubectl(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
            return subprocess.run([KUBECTL, *args], env=env, capture_output=True, text=True, input=input, timeout=60)
        logs = kubectl("logs", "five", "--tail=1")
        assert (logs.returncode, logs.stdout) == (0, "line-5\n"), logs.stderr
        pod_ip = api.cluster.store.get("Pod", "default", "five").status.pod_ip
        inside = kubectl("exec", "-i", "five", "--", "sh", "-c", "hostname; cat /etc/resolv.conf; ip -o -4 addr; cat",
                         input="from-stdin\n")
        assert inside.returncode == 0, inside.stderr
        assert inside.stdout.splitlines()[0] == "five"
        assert "nameserver " in inside.stdout and "search default.svc.cluster.local" in inside.stdout
        assert f" {pod_ip}/" in inside.stdout and inside.stdout.endswith("from-stdin\n")


def test_discovery_lists_the_pod_subresources(kubectl):
    listing = json.loads(kubectl("get", "--raw", "/api/v1").stdout)
    entries = {r["name"]: r for r in listing["resources"]}
    assert entries["pods/log"]["verbs"] == ["get"]
    assert entries["pods/exec"]["kind"] == "PodExecOptions" and "create" in entries["pods/exec"]["verbs"]
    names = kubectl("api-resources", "--api-group=", "-o", "name").stdout.split()
    assert "pods" in names and not any("/" in n for n in names)
