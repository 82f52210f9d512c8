"""`netemu up` and kubeconfig files, like kind: the cluster's context is merged into $KUBECONFIG
(made current, other contexts kept, mode kept, written atomically) and removed at `down` and
`gc`; `--kubeconfig FILE` writes elsewhere, `--no-kubeconfig` writes nothing; `netemu
kubeconfig` prints the cluster's own."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from netemu.errors import ClusterError
from netemu.kubeapi import kubeconfig

NETEMU = str(Path(sys.executable).parent / "netemu")
OTHER = {"apiVersion": "v1", "kind": "Config", "current-context": "work",
         "clusters": [{"name": "work", "cluster": {"server": "https://127.0.0.1:1"}}],
         "users": [{"name": "work", "user": {"token": "t"}}],
         "contexts": [{"name": "work", "context": {"cluster": "work", "user": "work"}}]}


def netemu(env, *args, timeout=90):
    return subprocess.run([NETEMU, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def env(tmp_path):
    clean = {k: v for k, v in os.environ.items() if k != "NETEMU_CLUSTER"}
    return {**clean, "NETEMU_STATE_DIR": str(tmp_path / "state"), "KUBECONFIG": str(tmp_path / "kube" / "config"),
            "HOME": str(tmp_path / "home")}


def _pid(stdout: str) -> int:
    return int(stdout.rsplit("pid ", 1)[1].split(")")[0])


def _names(config: dict, key: str) -> list[str]:
    return [entry["name"] for entry in config.get(key) or []]


def test_up_merges_the_context_and_down_removes_it(env, tmp_path):
    user_file = Path(env["KUBECONFIG"])
    user_file.parent.mkdir()
    user_file.write_text(yaml.safe_dump(OTHER))
    user_file.chmod(0o640)
    r = netemu(env, "up", "--detach", "--name", "kc", "--dns-upstream", "none")
    assert r.returncode == 0, r.stderr
    pid = _pid(r.stdout)
    try:
        assert f'kubectl: context "netemu-kc" in {user_file} (current)' in r.stdout
        merged = yaml.safe_load(user_file.read_text())
        assert merged["current-context"] == "netemu-kc"
        assert _names(merged, "contexts") == ["work", "netemu-kc"] and _names(merged, "users") == ["work", "netemu-kc"]
        assert user_file.stat().st_mode & 0o777 == 0o640
        nodes = subprocess.run(["kubectl", "get", "nodes", "-o", "name"], env=env, capture_output=True, text=True,
                               timeout=60)
        assert nodes.stdout.split() == ["node/node-1"], nodes.stderr
        printed = netemu(env, "kubeconfig", "--name", "kc")
        assert printed.returncode == 0
        own = yaml.safe_load(printed.stdout)
        assert own["current-context"] == "netemu-kc" and _names(own, "contexts") == ["netemu-kc"]
    finally:
        down = netemu(env, "down", "--name", "kc")
    assert down.returncode == 0, down.stderr
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    left = yaml.safe_load(user_file.read_text())
    assert _names(left, "contexts") == ["work"] and _names(left, "clusters") == ["work"]
    assert left["current-context"] == ""


def test_kubeconfig_flag_and_no_kubeconfig(env, tmp_path):
    elsewhere = tmp_path / "elsewhere.yaml"
    r = netemu(env, "up", "--detach", "--name", "kf", "--dns-upstream", "none", "--kubeconfig", str(elsewhere))
    assert r.returncode == 0, r.stderr
    try:
        assert yaml.safe_load(elsewhere.read_text())["current-context"] == "netemu-kf"
        assert elsewhere.stat().st_mode & 0o777 == 0o600
        assert not Path(env["KUBECONFIG"]).exists()
    finally:
        netemu(env, "down", "--name", "kf")
    r = netemu(env, "up", "--detach", "--name", "kn", "--dns-upstream", "none", "--no-kubeconfig")
    assert r.returncode == 0, r.stderr
    try:
        assert "kubectl: context" not in r.stdout
        assert not Path(env["KUBECONFIG"]).exists()
    finally:
        netemu(env, "down", "--name", "kn")


def test_gc_removes_the_context_of_a_killed_cluster(env):
    r = netemu(env, "up", "--detach", "--name", "kk", "--dns-upstream", "none")
    assert r.returncode == 0, r.stderr
    pid = _pid(r.stdout)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "netemu-kk" in _names(yaml.safe_load(Path(env["KUBECONFIG"]).read_text()), "contexts")
    gc = netemu(env, "gc")
    assert f'kk: kubeconfig: context "netemu-kk" removed from {env["KUBECONFIG"]}' in gc.stdout
    assert _names(yaml.safe_load(Path(env["KUBECONFIG"]).read_text()), "contexts") == []


def test_merge_replaces_its_own_entries_and_keeps_others(tmp_path):
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(OTHER))
    first = kubeconfig.build("a", "https://127.0.0.1:1000", b"ca", b"cert", b"key")
    kubeconfig.merge(path, first)
    kubeconfig.merge(path, kubeconfig.build("a", "https://127.0.0.1:2000", b"ca", b"cert", b"key"))
    merged = yaml.safe_load(path.read_text())
    assert _names(merged, "clusters") == ["work", "netemu-a"]
    assert merged["clusters"][1]["cluster"]["server"] == "https://127.0.0.1:2000"
    assert kubeconfig.remove(path, "a") and not kubeconfig.remove(path, "a")
    assert yaml.safe_load(path.read_text())["contexts"] == OTHER["contexts"]
    assert [p.name for p in tmp_path.iterdir()] == ["config"]  # no temporary file left


def test_a_broken_kubeconfig_is_left_alone(tmp_path):
    path = tmp_path / "config"
    path.write_text("clusters: [unclosed")
    with pytest.raises(ClusterError) as caught:
        kubeconfig.merge(path, kubeconfig.build("a", "https://127.0.0.1:1", b"", b"", b""))
    assert f"kubeconfig {path}: not valid YAML, left as it is" in str(caught.value)
    assert path.read_text() == "clusters: [unclosed"
