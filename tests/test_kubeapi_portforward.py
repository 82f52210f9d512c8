"""``pods/portforward`` through the real kubectl and curl (netemu.kubeapi.podportforward, spdy).

kubectl 1.31+ tunnels SPDY through a WebSocket; these tests drive it the way a user does
(``kubectl port-forward pod/… | svc/… | deploy/…``, curl on the local ports) against pods of the
built-in nginx and http-echo images. One cluster for the module (kubeapi_support); each test
works in a namespace of its own.
"""
from __future__ import annotations

import asyncio
import os
import queue
import re
import socket
import subprocess
import threading

import pytest

from kubeapi_support import KUBECTL, api_fixtures, cluster_with_api
from netemu.fabric import routes_outside_loopback
from netemu.kubeapi import KUBECONFIG
from netemu.kubeapi.spdy import DICTIONARY, Codec, encode_data
from test_netns_helpers import netns_ready  # noqa: F401 - fixture

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")

WEB = """
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  containers:
  - {name: nginx, image: nginx, ports: [{containerPort: 80}]}
  - {name: echo, image: hashicorp/http-echo, args: ["-text=echo-two"], ports: [{containerPort: 5678}]}
"""
NGINX_TITLE = "<title>Welcome to nginx!</title>"


api, kubectl, namespace = api_fixtures("portfwd")


def _running(api, namespace: str, pod: str) -> None:
    def ready() -> bool:
        obj = api.cluster.store.get("Pod", namespace, pod)
        return obj is not None and obj.status.phase == "Running" and all(
            s.ready for s in obj.status.container_statuses)
    api.wait_for(ready, 30, f"pod {pod} running")


class PortForward:
    """``kubectl port-forward`` running: its local ports, its output, its end."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen([KUBECTL, "port-forward", "--address=127.0.0.1", *args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.stderr = ""
        threading.Thread(target=self._read_stdout, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def ports(self, count: int) -> list[int]:
        """The local ports of the first ``count`` "Forwarding from" lines, in order."""
        found: list[int] = []
        while len(found) < count:
            try:
                line = self._lines.get(timeout=30)
            except queue.Empty:
                raise AssertionError("kubectl port-forward printed no 'Forwarding from' line in 30s") from None
            if line is None:
                raise AssertionError(f"kubectl port-forward ended: {self.finish()}")
            match = re.match(r"Forwarding from 127\.0\.0\.1:(\d+) -> \d+", line)
            if match:
                found.append(int(match.group(1)))
        return found

    def finish(self, timeout: float = 30) -> str:
        """Wait for kubectl to end (killing it if it outlives ``timeout``); its stderr."""
        try:
            _, self.stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, self.stderr = self.proc.communicate()
        return self.stderr

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.finish()

    def __enter__(self) -> "PortForward":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _curl(port: int, path: str = "/") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "20", f"http://127.0.0.1:{port}{path}"],
                          capture_output=True, text=True, timeout=60)


def test_forwards_two_ports_of_a_pod_in_a_row_and_in_parallel(kubectl, api, namespace):
    api.apply(WEB, namespace=namespace)
    _running(api, namespace, "web")
    with PortForward(kubectl.env, "-n", namespace, "pod/web", "0:80", "0:5678") as forward:
        nginx, echo = forward.ports(2)
        for _ in range(3):  # several connections in a row on each port
            first, second = _curl(nginx), _curl(echo)
            assert first.returncode == 0 and NGINX_TITLE in first.stdout, first.stderr
            assert (second.returncode, second.stdout) == (0, "echo-two\n"), second.stderr
        clients = [subprocess.Popen(["curl", "-sS", "--max-time", "20", f"http://127.0.0.1:{port}/"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for port in [nginx, echo] * 4]  # eight connections at once
        answers = [client.communicate(timeout=60) for client in clients]
        assert [NGINX_TITLE in out if i % 2 == 0 else out == "echo-two\n" for i, (out, _) in enumerate(answers)] \
            == [True] * 8, answers
        assert forward.proc.poll() is None, "kubectl port-forward ended"


ECHO = """
apiVersion: v1
kind: Pod
metadata: {name: echo}
spec:
  containers:
  - name: main
    image: busybox
    command:
    - python3
    - -uc
    - |
      import os, socket
      server = socket.create_server((os.environ.get("POD_IP", "0.0.0.0"), 7000))
      print("listening", flush=True)
      while True:
          conn, _ = server.accept()
          while data := conn.recv(65536):
              conn.sendall(data)
          conn.close()
"""


def _echo_through(port: int, payload: bytes) -> bytes:
    """Send ``payload`` (then the end of input) and read until the other side closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        sender = threading.Thread(target=lambda: (conn.sendall(payload), conn.shutdown(socket.SHUT_WR)))
        sender.start()
        received = bytearray()
        while chunk := conn.recv(1 << 16):
            received += chunk
        sender.join(30)
    return bytes(received)


def test_bytes_both_ways_and_the_end_of_input(kubectl, api, namespace):
    """4 MiB to a TCP echo server in the pod and back; the client's end of input reaches the
    server (a half-close), whose close ends the client's connection."""
    api.apply(ECHO, namespace=namespace)
    _running(api, namespace, "echo")
    api.wait_for(lambda: "listening" in api.cluster.logs("echo", None, namespace), 30, "the echo server listening")
    payload = os.urandom(4 << 20)
    with PortForward(kubectl.env, "-n", namespace, "pod/echo", "0:7000") as forward:
        (port,) = forward.ports(1)
        assert _echo_through(port, payload) == payload
        assert _echo_through(port, b"again") == b"again"
        assert forward.proc.poll() is None


def test_forwards_to_a_service_and_a_deployment(kubectl, api, namespace):
    kubectl("create", "deployment", "site", "-n", namespace, "--image=nginx", "--port=80")
    kubectl("expose", "deployment", "site", "-n", namespace, "--port=8080", "--target-port=80")
    api.wait_for(lambda: any(p.status.phase == "Running" for p in api.cluster.store.list("Pod", namespace)), 30,
                 "the deployment's pod running")
    for target, remote in (("svc/site", "8080"), ("deploy/site", "80"), ("service/site", "8080")):
        with PortForward(kubectl.env, "-n", namespace, target, f"0:{remote}") as forward:
            (port,) = forward.ports(1)
            result = _curl(port)
            assert result.returncode == 0 and NGINX_TITLE in result.stdout, (target, result.stderr)


def test_a_port_nothing_listens_on_gets_the_kubelets_error(kubectl, api, namespace):
    """kubectl 1.32 prints the error the kubelet sends on the error stream, then ends with
    "lost connection to pod" and exit 1, as it does against a real cluster."""
    api.apply(WEB, namespace=namespace)
    _running(api, namespace, "web")
    uid = api.cluster.store.get("Pod", namespace, "web").metadata.uid
    forward = PortForward(kubectl.env, "-n", namespace, "pod/web", "0:81")
    (port,) = forward.ports(1)
    assert _curl(port).returncode != 0
    stderr = forward.finish()
    assert forward.proc.returncode == 1, stderr
    assert f"error forwarding port 81 to pod {uid}, uid : failed to execute portforward" in stderr
    assert "dial tcp 127." in stderr and ":81: connect: connection refused" in stderr
    assert stderr.rstrip().endswith("error: lost connection to pod"), stderr


def test_refusals_before_the_upgrade(kubectl, api, namespace):
    api.apply(WEB, namespace=namespace)
    _running(api, namespace, "web")
    spdy_only = dict(kubectl.env, KUBECTL_PORT_FORWARD_WEBSOCKETS="false")
    result = subprocess.run([KUBECTL, "port-forward", "-n", namespace, "pod/web", "0:80"], env=spdy_only,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "netemu serves port-forward over WebSocket only, with the subprotocol SPDY/3.1+portforward.k8s.io" \
        in result.stderr
    missing = kubectl("port-forward", "-n", namespace, "pod/nosuch", "0:80", check=False)
    assert missing.returncode == 1 and 'pods "nosuch" not found' in missing.stderr


def _portforward_tasks(api) -> int:
    """The tasks of the port-forward sessions (called on the cluster's loop, as wait_for calls)."""
    return sum("podportforward.py" in repr(task) for task in asyncio.all_tasks(api.loop))


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))  # the cluster runs in this process


def test_a_client_killed_mid_connection_leaves_nothing_behind(kubectl, api, namespace):
    api.apply(WEB, namespace=namespace)
    _running(api, namespace, "web")
    with PortForward(kubectl.env, "-n", namespace, "pod/web", "0:80") as warm_up:  # lazily made things, made
        assert _curl(warm_up.ports(1)[0]).returncode == 0
    api.wait_for(lambda: _portforward_tasks(api) == 0, 30, "the warm-up's session gone")
    baseline = _open_descriptors()
    forward = PortForward(kubectl.env, "-n", namespace, "pod/web", "0:80")
    (port,) = forward.ports(1)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")  # keep-alive: the pod's connection stays open
        answer = b""
        while NGINX_TITLE.encode() not in answer:
            chunk = client.recv(65536)
            assert chunk, answer
            answer += chunk
        assert api.call(_portforward_tasks, api) > 0 and _open_descriptors() > baseline  # the session and its connections
        forward.proc.kill()
        forward.finish()
    api.wait_for(lambda: _portforward_tasks(api) == 0, 30, "the port-forward session's tasks gone")
    api.wait_for(lambda: _open_descriptors() <= baseline, 30,
                 f"the server's descriptors back to {baseline} (now {_open_descriptors()})")


def test_the_spdy_dictionary_is_spdy3s():
    """Header blocks compressed by a SPDY/3 peer carry the dictionary's Adler-32 (0xe3c6a7c2 in
    draft 3); a block round-trips through two codecs."""
    import struct
    import zlib
    assert zlib.adler32(DICTIONARY) == 0xE3C6A7C2 and len(DICTIONARY) == 1423
    sender, receiver = Codec(), Codec()
    reply = sender.encode_reply(1, headers={"port": "80", "streamType": "data"})
    (frame,) = receiver.feed(reply[:5]) + receiver.feed(reply[5:])  # split anywhere: a byte stream
    assert (frame.kind, frame.stream_id, frame.header("streamtype"), frame.header("port")) == (2, 1, "data", "80")
    data = receiver.feed(encode_data(3, b"hello", fin=True))[0]
    assert (data.kind, data.stream_id, data.data, data.fin) == (0, 3, b"hello", True)
    assert struct.unpack(">I", reply[8:12])[0] == 1


@pytest.mark.netns
@pytest.mark.skipif(bool(routes_outside_loopback()),
                    reason="the netns backend runs only in a namespace without outside routes (make test)")
def test_forwards_into_a_netns_pod(netns_ready, tmp_path):  # noqa: F811
    """In a pod's own network namespace: localhost first (a server bound to 127.0.0.1 only is
    reached, as containerd reaches it), then the pod IP."""
    with cluster_with_api(tmp_path / "state", "portfwd-netns", backend="netns") as api:
        env = dict(os.environ, KUBECONFIG=str(api.cluster.state.directory / KUBECONFIG), HOME=str(tmp_path))
        api.apply(WEB)
        api.apply("""
apiVersion: v1
kind: Pod
metadata: {name: local}
spec:
  containers:
  - name: main
    image: busybox
    command: [python3, -u, -m, http.server, "8001", --bind, 127.0.0.1]
""")
        _running(api, "default", "web")
        _running(api, "default", "local")
        with PortForward(env, "pod/web", "0:80", "0:5678") as forward:
            nginx, echo = forward.ports(2)
            assert NGINX_TITLE in _curl(nginx).stdout
            assert _curl(echo).stdout == "echo-two\n"
        api.wait_for(lambda: "Serving HTTP" in api.cluster.logs("local"), 30, "the http.server listening")
        with PortForward(env, "pod/local", "0:8001") as forward:
            (port,) = forward.ports(1)
            listing = _curl(port)
            assert listing.returncode == 0 and "Directory listing" in listing.stdout, listing.stderr
        refused = PortForward(env, "pod/web", "0:81")
        (port,) = refused.ports(1)
        _curl(port)
        stderr = refused.finish()
        assert 'failed to execute portforward in network namespace \\"netemu-' in stderr  # kubectl quotes it
        assert "dial tcp4 127.0.0.1:81: connect: connection refused" in stderr, stderr
