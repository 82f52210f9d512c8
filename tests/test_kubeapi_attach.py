"""``pods/attach`` through the real kubectl (netemu.kubeapi.podattach, channels).

One cluster for the module (kubeapi_support); each test works in a namespace of its own.
"""
from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import threading

import pytest

from kubeapi_support import KUBECTL, TICKER, api_fixtures


pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")
# Says "waiting", then "done-now" once /tmp/go-<pod name>-<namespace> exists (it removes it), and exits.
WAITER = """
apiVersion: v1
kind: Pod
metadata: {name: waiter}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    stdin: %s
    command: [sh, -c, "echo waiting; while [ ! -e /tmp/go-$HOSTNAME-$NS ]; do sleep 0.1; done; rm /tmp/go-$HOSTNAME-$NS; echo done-now"]
    env:
    - name: NS
      valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
"""


api, kubectl, namespace = api_fixtures("attach")


def _logged(api, namespace: str, pod: str, text: str) -> None:
    def ready() -> bool:
        obj = api.cluster.store.get("Pod", namespace, pod)
        return obj is not None and obj.status.phase == "Running" and text in api.cluster.logs(pod, None, namespace)
    api.wait_for(ready, 30, f"pod {pod} running and logging {text!r}")


def _attach_tasks(api) -> int:
    """The attach sessions' tasks (called on the cluster's loop, as wait_for calls)."""
    return sum("podattach.py" in repr(task) for task in asyncio.all_tasks(api.loop))


class Attached:
    """``kubectl attach`` running, its stdout lines read as they come."""

    def __init__(self, env: dict[str, str], *args: str, stdin: bool = False) -> None:
        self.proc = subprocess.Popen([KUBECTL, "attach", *args], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line(self) -> str | None:
        try:
            return self.lines.get(timeout=30)
        except queue.Empty:
            raise AssertionError("kubectl attach printed nothing in 30s") from None

    def finish(self) -> tuple[int, str]:
        try:
            _, stderr = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, stderr = self.proc.communicate()
        return self.proc.returncode, stderr


def _last_tick(api, namespace: str) -> int:
    ticks = [line for line in api.cluster.logs("ticker", None, namespace).splitlines() if line.startswith("tick-")]
    return int(ticks[-1].removeprefix("tick-"))


def test_attach_shows_the_output_from_now_on(kubectl, api, namespace):
    api.apply(TICKER, namespace=namespace)
    _logged(api, namespace, "ticker", "tick-3")
    before = _last_tick(api, namespace)
    attached = Attached(kubectl.env, "-n", namespace, "ticker")
    try:
        seen = [attached.line() for _ in range(5)]
    finally:
        attached.proc.kill()
        attached.finish()
    numbers = [int(str(s).removeprefix("tick-")) for s in seen]
    assert numbers[0] > before, (before, seen)  # not the log's history
    assert numbers == list(range(numbers[0], numbers[0] + 5)), seen
    api.wait_for(lambda: _attach_tasks(api) == 0, 30, "the attach session gone with its client")


def test_attach_ends_when_the_container_does_and_drops_input(kubectl, api, namespace):
    """Input to a container without ``stdin: true`` is dropped (containerd drops it); the
    session ends with the container, and kubectl with 0."""
    api.apply(WAITER % "false", namespace=namespace)
    _logged(api, namespace, "waiter", "waiting")
    attached = Attached(kubectl.env, "-i", "-n", namespace, "waiter", stdin=True)
    assert attached.proc.stdin is not None
    attached.proc.stdin.write("ignored\n")
    attached.proc.stdin.flush()
    api.wait_for(lambda: _attach_tasks(api) > 0, 30, "the attach session open")
    kubectl("exec", "-n", namespace, "waiter", "--", "sh", "-c", "touch /tmp/go-$HOSTNAME-$NS")
    assert attached.line() == "done-now"
    code, stderr = attached.finish()  # its stdin closed: kubectl's end of input changes nothing
    assert code == 0, stderr
    assert "If you don't see a command prompt, try pressing enter." in stderr


READER = """
apiVersion: v1
kind: Pod
metadata: {name: reader}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    stdin: true
    stdinOnce: true
    command: [sh, -c, "echo reading; while read line; do echo got-$line; done; echo stdin-closed"]
"""


def test_attach_feeds_a_stdin_container_and_stdin_once_closes_it(kubectl, api, namespace):
    """A real process in a ``stdin: true`` container reads what ``kubectl attach -i`` sends; with
    ``stdinOnce`` its stdin ends with the first attach (it sees EOF and exits)."""
    api.apply(READER, namespace=namespace)
    _logged(api, namespace, "reader", "reading")
    attached = kubectl("attach", "-i", "-n", namespace, "reader", input="hello\nworld\n", check=False)
    assert attached.returncode == 0, attached.stderr
    assert attached.stdout.splitlines()[-3:] == ["got-hello", "got-world", "stdin-closed"]
    api.wait_for(lambda: api.cluster.store.get("Pod", namespace, "reader").status.phase == "Succeeded", 30,
                 "the reader to end at EOF")


def test_kubectl_run_interactive_remove(kubectl, api, namespace):
    """``kubectl run -i --rm``: the pod gets ``stdin``/``stdinOnce``, kubectl attaches, feeds it,
    prints its output and deletes it."""
    ran = kubectl("run", "once", "-i", "--rm", "--restart=Never", "--image=busybox", "-n", namespace, "--",
                  "sh", "-c", "read x; echo got-$x", input="typed\n", check=False)
    assert ran.returncode == 0, ran.stderr
    assert "got-typed" in ran.stdout.splitlines()
    api.wait_for(lambda: api.cluster.store.get("Pod", namespace, "once") is None, 30, "the pod removed")


def test_attach_stdin_to_an_emulation_is_refused(kubectl, api, namespace):
    """A built-in image emulation reads no input: ``-i`` says so; without ``-i`` attach works."""
    api.apply("""
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - {name: main, image: nginx, stdin: true}
""", namespace=namespace)
    api.wait_for(lambda: api.cluster.store.get("Pod", namespace, "web").status.phase == "Running", 30, "web running")
    refused = kubectl("attach", "-i", "-n", namespace, "web", input="hello\n", check=False)
    assert refused.returncode == 1
    assert 'container "main" runs a built-in image emulation, which reads no stdin' in refused.stderr


def test_attach_refusals_in_the_api_servers_words(kubectl, api, namespace):
    api.apply(WAITER % "false", namespace=namespace)
    _logged(api, namespace, "waiter", "waiting")
    base = f"/api/v1/namespaces/{namespace}/pods/waiter/attach"
    plain = kubectl("get", "--raw", base + "?stdout=true", check=False)  # not a WebSocket
    assert plain.returncode == 1 and "netemu serves attach over WebSocket only" in plain.stderr
    none = kubectl("get", "--raw", base, check=False)
    assert none.returncode == 1 and "you must specify at least 1 of stdin, stdout, stderr" in none.stderr
    unknown = kubectl("get", "--raw", base + "?stdout=true&container=z", check=False)
    assert "container z is not valid for pod waiter" in unknown.stderr
    missing = kubectl("attach", "-n", namespace, "nosuch", check=False)
    assert missing.returncode == 1 and 'pods "nosuch" not found' in missing.stderr
    kubectl("exec", "-n", namespace, "waiter", "--", "sh", "-c", "touch /tmp/go-$HOSTNAME-$NS")
    api.wait_for(lambda: api.cluster.store.get("Pod", namespace, "waiter").status.phase == "Succeeded", 30,
                 "the pod completed")
    done = kubectl("attach", "-n", namespace, "waiter", check=False)
    assert done.returncode == 1
    assert "cannot attach a container in a completed pod; current phase is Succeeded" in done.stderr


def test_discovery_lists_attach_and_portforward(kubectl):
    entries = {r["name"]: r for r in json.loads(kubectl("get", "--raw", "/api/v1").stdout)["resources"]}
    assert entries["pods/attach"]["kind"] == "PodAttachOptions"
    assert entries["pods/portforward"]["kind"] == "PodPortForwardOptions"
    assert {"create", "get"} <= set(entries["pods/attach"]["verbs"]) & set(entries["pods/portforward"]["verbs"])
