"""No descriptor of netemu's reaches a process it starts: each holds only 0, 1 and 2.

Every spawn path is checked with a real program that records the descriptors it was started with
(``fdreport``, a small Python script: it lists ``/proc/self/fd`` and keeps only those still open
after the listing, so the listing's own descriptor does not count): a container's command, an exec
probe, ``Cluster.exec``, ``netemu exec``, a CNI plugin executable, and host-side commands (``ip``
through a recording stand-in first in ``PATH``, ``ip netns exec``, a scenario's host tool). The test
process holds an inheritable pipe meanwhile, as netemu does when a caller hands it descriptors
(``up --detach`` hands the cluster process its ready pipe): a child that got it would list it.
In-process paths run on both event loops netemu uses, asyncio's and uvloop (the CLI's), since
uvloop's process spawning closes nothing by itself.

And the bug that showed it: ``netemu up --detach -f FILE`` never returned when a pod ran a
``command:``, because the container kept the write end of the ready pipe open.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

import netemu
from netemu.cni import execplugin
from netemu.fabric.netns import fabric as netns_fabric
from netemu.fabric.netns import ipbatch, namespaces
from netemu.scenario.probes import run_host

NETEMU = str(Path(sys.executable).parent / "netemu")
CLI_TIMEOUT = 120  # seconds: a guard against a hang (the bug), not a performance bound
STDIO = "0 1 2"
LOOPS: dict[str, Callable[[Any], Any]] = {"asyncio": asyncio.run, "uvloop": uvloop.run}

RECORDER = '''\
#!{python} -I
"""Write the descriptors this process was started with to OUT/<label>-<pid>.fds; then, for a
stand-in of a real program, run that program; as the CNI plugin, answer ADD."""
import fcntl, os, sys

def is_open(fd):
    try:
        fcntl.fcntl(fd, fcntl.F_GETFD)
        return True
    except OSError:
        return False

fds = sorted(fd for fd in map(int, os.listdir("/proc/self/fd")) if is_open(fd))
name = os.path.basename(sys.argv[0])
label = sys.argv[1] if name == "fdreport" and len(sys.argv) > 1 else name
with open(os.path.join({out!r}, f"{{label}}-{{os.getpid()}}.fds"), "w") as f:
    f.write(" ".join(map(str, fds)))
real = {real!r}.get(name)
if real:
    os.execv(real, [real, *sys.argv[1:]])
if name == "fdplugin" and os.environ.get("CNI_COMMAND") == "ADD":
    print('{{"cniVersion": "1.0.0", "interfaces": [], "ips": []}}')
'''


class Recorder:
    """``fdreport LABEL`` and stand-ins named after real programs, all in ``bin``; ``seen(label)``
    is what each process of that label held when it started."""

    def __init__(self, directory: Path, real: dict[str, str]):
        self.bin = directory / "bin"
        self.out = directory / "fds"
        self.bin.mkdir()
        self.out.mkdir()
        script = RECORDER.format(python=sys.executable, out=str(self.out), real=real)
        for name in ["fdreport", "fdplugin", *real]:
            path = self.bin / name
            path.write_text(script)
            path.chmod(0o755)
        self.fdreport = str(self.bin / "fdreport")

    def seen(self, label: str) -> list[str]:
        return [p.read_text() for p in sorted(self.out.glob(f"{label}-*.fds"))]

    def wait_seen(self, label: str, timeout: float = 30) -> list[str]:
        deadline = time.monotonic() + timeout
        while not self.seen(label) and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.seen(label)


@pytest.fixture
def inherited_fd() -> Iterator[int]:
    """An inheritable pipe held by the test process while netemu starts things."""
    r, w = os.pipe()
    os.set_inheritable(w, True)
    yield w
    os.close(r)
    os.close(w)


@pytest.fixture
def recorder(tmp_path) -> Recorder:
    return Recorder(tmp_path, real={})


def _pod(recorder: Recorder) -> str:
    return textwrap.dedent(f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: recorded}}
        spec:
          containers:
          - name: main
            image: busybox
            command: [sh, -c, "{recorder.fdreport} container; exec sleep 3600"]
            readinessProbe:
              exec: {{command: [{recorder.fdreport}, probe]}}
              periodSeconds: 1
        """)


@pytest.mark.parametrize("loop", LOOPS)
def test_container_probe_and_exec_get_only_stdio(loop, recorder, inherited_fd, tmp_path, monkeypatch):
    monkeypatch.setenv("NETEMU_STATE_DIR", str(tmp_path / "state"))

    async def scenario() -> str:
        async with netemu.Cluster(nodes=1, name=f"fd-{loop}", dns_upstreams=()) as cluster:
            await cluster.apply(_pod(recorder))
            await cluster.wait_ready(30)
            result = await cluster.exec("recorded", [recorder.fdreport, "exec"])
            assert result.returncode == 0, result.stderr
            return result.stdout

    LOOPS[loop](scenario())
    assert recorder.seen("container") == [STDIO]
    assert recorder.seen("probe") and set(recorder.seen("probe")) == {STDIO}
    assert recorder.seen("exec") == [STDIO]


def test_cni_plugin_executable_gets_only_stdio(recorder, inherited_fd):
    config = {"cniVersion": "1.0.0", "name": "fd-test", "type": "fdplugin"}
    execplugin.exec_plugin("ADD", config, container_id="c1", netns="/proc/self/ns/net", ifname="eth0",
                           path=[str(recorder.bin)])
    assert recorder.seen("fdplugin") == [STDIO]


@pytest.mark.parametrize("loop", LOOPS)
def test_scenario_host_tool_gets_only_stdio(loop, recorder, inherited_fd):
    code, _out, err = LOOPS[loop](run_host([recorder.fdreport, "host-tool"], 30))
    assert code == 0, err
    assert recorder.seen("host-tool") == [STDIO]


@pytest.fixture
def ip_recorder(tmp_path, monkeypatch) -> Iterator[Recorder]:
    """A recording ``ip`` first in PATH, in front of the real one."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    real_ip = ipbatch.ip_binary()
    recorder = Recorder(tmp_path, real={"ip": real_ip})
    monkeypatch.setenv("PATH", f"{recorder.bin}{os.pathsep}{os.environ['PATH']}")
    ipbatch.ip_binary.cache_clear()
    assert ipbatch.ip_binary() == str(recorder.bin / "ip")
    yield recorder
    ipbatch.ip_binary.cache_clear()


@pytest.mark.netns
@pytest.mark.parametrize("loop", LOOPS)
def test_host_commands_get_only_stdio(loop, ip_recorder, inherited_fd):
    name = f"netemu-t{secrets.token_hex(4)}-fd"

    async def scenario() -> None:
        try:
            await namespaces.acreate([name])  # ip -batch, from the loop
            await ipbatch.abatch(name, ["link set lo up"])
            await netns_fabric._run_in(name, [ip_recorder.fdreport, "run-in"])  # ip netns exec
        finally:
            await namespaces.adelete([name])

    LOOPS[loop](scenario())
    assert ip_recorder.seen("ip") and set(ip_recorder.seen("ip")) == {STDIO}
    assert ip_recorder.seen("run-in") == [STDIO]


@pytest.mark.netns
def test_sync_host_commands_get_only_stdio(ip_recorder, inherited_fd):
    name = f"netemu-t{secrets.token_hex(4)}-fd"
    try:
        namespaces.create([name])
        ipbatch.batch(name, ["link set lo up"])
    finally:
        namespaces.delete([name])
    assert ip_recorder.seen("ip") and set(ip_recorder.seen("ip")) == {STDIO}


# ---------------------------------------------------------------------------- the CLI


def _netemu(env: dict[str, str], *args: str, pass_fds: tuple[int, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NETEMU, *args], env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT,
                          pass_fds=pass_fds, stdin=subprocess.DEVNULL)


def test_up_detach_returns_with_a_command_pod_and_cli_exec_gets_only_stdio(recorder, inherited_fd, tmp_path):
    env = {**os.environ, "NETEMU_STATE_DIR": str(tmp_path / "state"), "NETEMU_CLUSTER": "fds"}
    manifest = tmp_path / "sleeper.yaml"
    manifest.write_text(_pod(recorder))
    try:
        # Before the fix this never returned: the container held the ready pipe's write end.
        r = _netemu(env, "up", "--detach", "--dns-upstream", "none", "-f", str(manifest), pass_fds=(inherited_fd,))
        assert r.returncode == 0, r.stderr
        assert recorder.wait_seen("container") == [STDIO]
        assert set(recorder.wait_seen("probe")) == {STDIO}
        r = _netemu(env, "exec", "recorded", "--", recorder.fdreport, "cli-exec", pass_fds=(inherited_fd,))
        assert r.returncode == 0, r.stderr
        assert recorder.seen("cli-exec") == [STDIO]
    finally:
        _netemu(env, "down")
        _netemu(env, "gc")
    assert not (tmp_path / "state" / "fds").exists()
