"""netemu's CNI plugins run as executables, as a container runtime runs them, held to the CNI spec
and to what Debian's reference plugins (``/usr/lib/cni``: bridge, host-local) do.

The executable-only tests need no namespace. The bridge tests (mark ``netns``) make namespaces of
their own (``netemu-t<random>-…``) inside ``scripts/isolated``; IPAM plugins that record what
they were asked are shell scripts in a CNI_PATH directory of the test's own.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from netemu.cni import bridge
from netemu.fabric.netns import ipbatch, namespaces

from test_netns_helpers import new_names, netns_ready, own_network_unchanged  # noqa: F401 - fixtures

BIN = Path(sys.executable).parent
REFERENCE = Path("/usr/lib/cni")


def executable(script: str, module: str) -> list[str]:
    path = BIN / script
    return [str(path)] if path.exists() else [sys.executable, "-m", module]


HOST_LOCAL = executable("netemu-cni-host-local", "netemu.cni.host_local")
LOOPBACK_ALIAS = executable("netemu-cni-loopback-alias", "netemu.cni.loopback_alias")
BRIDGE = executable("netemu-cni-bridge", "netemu.cni.bridge")
PLUGINS = pytest.mark.parametrize("plugin", [HOST_LOCAL, LOOPBACK_ALIAS, BRIDGE],
                                  ids=["host-local", "loopback-alias", "bridge"])


def run(argv: list[str], env: dict[str, str], stdin: str | dict[str, Any] | None, *,
        close_stdin: bool = False) -> tuple[int, Any, str]:
    data = stdin if isinstance(stdin, str) or stdin is None else json.dumps(stdin)
    if close_stdin:  # as a runtime that forgot its pipe would start it: descriptor 0 closed
        argv = ["sh", "-c", 'exec "$@" <&-', "sh", *argv]
    proc = subprocess.run(argv, input=None if close_stdin else (data or ""), env={"PATH": os.environ["PATH"], **env},
                          capture_output=True, text=True, timeout=60, check=False)
    out = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc.returncode, out, proc.stderr


def cni_env(command: str | None, **overrides: str) -> dict[str, str]:
    env = {"CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/none", "CNI_IFNAME": "eth0",
           "CNI_PATH": str(REFERENCE), **overrides}
    if command is not None:
        env["CNI_COMMAND"] = command
    return env


def ipam_config(data_dir: Path, version: str = "1.0.0", subnet: str = "127.244.1.0/24") -> dict[str, Any]:
    return {"cniVersion": version, "name": "pods", "type": "x",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": str(data_dir)}}


# ---------------------------------------------------------------- the executable's I/O

@PLUGINS
def test_a_closed_stdin_is_an_error_object_not_a_traceback(plugin: list[str]) -> None:
    rc, out, err = run(plugin, cni_env("ADD"), None, close_stdin=True)
    assert rc == 1 and "Traceback" not in err
    assert out["code"] == 5 and out["msg"].startswith("error reading from stdin")  # the reference's words


@PLUGINS
def test_a_runtime_call_without_cni_command_fails(plugin: list[str], tmp_path: Path) -> None:
    rc, out, _ = run(plugin, cni_env(None), ipam_config(tmp_path))
    assert rc == 1
    assert out == {"cniVersion": "1.0.0", "code": 4, "msg": "required env variables [CNI_COMMAND] missing",
                   "details": ""}


@PLUGINS
@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_errors_and_version_speak_the_requests_version(plugin: list[str], version: str, tmp_path: Path) -> None:
    rc, out, _ = run(plugin, cni_env("VERSION"), {"cniVersion": version})
    assert rc == 0 and out["cniVersion"] == version and version in out["supportedVersions"]
    bad = {**ipam_config(tmp_path, version), "ipam": {"type": "host-local"}}  # no ranges
    rc, out, _ = run(plugin, cni_env("ADD"), bad)
    assert rc == 1 and out["cniVersion"] == version
    rc, out, _ = run(plugin, cni_env("ADD", CNI_IFNAME=""), ipam_config(tmp_path, version))
    assert rc == 1 and out["code"] == 4 and out["cniVersion"] == version


# ---------------------------------------------------------------- STATUS where ADD would refuse

@pytest.mark.parametrize("plugin", [HOST_LOCAL, LOOPBACK_ALIAS], ids=["host-local", "loopback-alias"])
def test_host_local_status_follows_what_add_would_do(plugin: list[str], tmp_path: Path) -> None:
    tiny = ipam_config(tmp_path, "1.1.0", subnet="127.244.9.0/30")  # one address: .2
    assert run(plugin, cni_env("STATUS"), tiny)[:2] == (0, None)
    assert run(plugin, cni_env("ADD"), tiny)[0] == 0
    rc, out, _ = run(plugin, cni_env("STATUS"), tiny)
    assert rc == 1 and out["code"] == 50 and "no IP addresses available" in out["msg"]
    rc, add_out, _ = run(plugin, cni_env("ADD", CNI_CONTAINERID="c2"), tiny)
    assert rc == 1 and "no IP addresses available" in add_out["msg"]
    rc, out, _ = run(plugin, cni_env("STATUS"), {**tiny, "ipam": {"type": "host-local"}})
    assert rc == 1 and out["code"] == 7 and out["msg"] == "no IP ranges specified"


# ---------------------------------------------------------------- the bridge plugin, in namespaces

def netns_path(name: str) -> str:
    return str(namespaces.NETNS_RUN_DIR / name)


def bridge_run(node: str, command: str, conf: dict[str, Any], *, pod: str = "", container_id: str = "",
               ifname: str = "eth0", path: str = str(REFERENCE), argv: list[str] = BRIDGE) -> tuple[int, Any, str]:
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id or pod, "CNI_NETNS": netns_path(pod) if pod else "",
           "CNI_IFNAME": ifname, "CNI_PATH": path}
    prefix = namespaces.exec_prefix(node) if node else []
    return run([*prefix, *argv], env, conf)


def reservations(data_dir: Path) -> list[str]:
    directory = data_dir / "pods"
    return sorted(p.name for p in directory.iterdir() if p.name[0].isdigit()) if directory.is_dir() else []


def recording_ipam(directory: Path, log: Path, *, fail_add: bool = False) -> Path:
    """A CNI_PATH directory whose ``host-local`` logs each command, writes a line to stderr and
    then runs netemu's host-local executable (or, with ``fail_add``, refuses every ADD)."""
    directory.mkdir()
    script = directory / "host-local"
    refuse = ('if [ "$CNI_COMMAND" = ADD ]; then '
              'echo \'{"cniVersion":"1.0.0","code":11,"msg":"ipam says no"}\'; exit 1; fi\n') if fail_add else ""
    script.write_text(f'#!/bin/sh\necho "$CNI_COMMAND $CNI_IFNAME" >> {log}\necho "ipam-stderr: $CNI_COMMAND" >&2\n'
                      f'{refuse}exec {" ".join(HOST_LOCAL)}\n')
    script.chmod(0o755)
    return directory


@pytest.fixture
def node_and_pods(new_names: Callable[[int], list[str]]) -> tuple[str, list[str]]:  # noqa: F811
    node, *pods = new_names(9)
    namespaces.create([node, *pods])  # no node setup: the plugin makes cni0
    return node, pods


def conf_for(data_dir: Path, **overrides: Any) -> dict[str, Any]:
    return {**bridge.network_config("pods", "10.244.1.0/24", str(data_dir)), **overrides}


@pytest.mark.netns
@pytest.mark.parametrize("plugin", ["netemu", "reference"])
def test_parallel_adds_on_a_node_without_a_bridge_all_succeed(new_names, tmp_path: Path, plugin: str) -> None:  # noqa: F811
    argv = BRIDGE if plugin == "netemu" else [str(REFERENCE / "bridge")]
    for trial in range(3):
        node, *pods = new_names(9)
        namespaces.create([node, *pods])
        data_dir = tmp_path / f"ipam-{trial}"
        conf = conf_for(data_dir, **({"type": "bridge"} if plugin == "reference" else {}))
        with concurrent.futures.ThreadPoolExecutor(len(pods)) as pool:
            results = list(pool.map(lambda pod: bridge_run(node, "ADD", conf, pod=pod, argv=argv), pods))
        failures = [(out, err) for rc, out, err in results if rc != 0]
        assert failures == []
        assert len(reservations(data_dir)) == len(pods)
        (cni0,) = ipbatch.query(node, "-4", "addr", "show", "dev", "cni0")
        assert [a["local"] for a in cni0["addr_info"]] == ["10.244.1.1"]
        namespaces.collect([node, *pods])


@pytest.mark.netns
def test_host_local_comes_from_cni_path_and_its_stderr_is_passed_on(node_and_pods, tmp_path: Path) -> None:
    node, pods = node_and_pods
    log = tmp_path / "ipam.log"
    path = recording_ipam(tmp_path / "bin", log)
    conf = conf_for(tmp_path / "ipam")
    rc, out, err = bridge_run(node, "ADD", conf, pod=pods[0], path=str(path))
    assert rc == 0, (out, err)
    assert out["ips"] == [{"interface": 2, "address": "10.244.1.2/24", "gateway": "10.244.1.1"}]
    assert "ipam-stderr: ADD" in err
    rc, _, err = bridge_run(node, "DEL", conf, pod=pods[0], path=str(path))
    assert rc == 0 and "ipam-stderr: DEL" in err
    assert log.read_text().split("\n")[:2] == ["ADD eth0", "DEL eth0"]
    assert reservations(tmp_path / "ipam") == []


@pytest.mark.netns
def test_a_failed_ipam_add_is_followed_by_ipam_del(node_and_pods, tmp_path: Path) -> None:
    node, pods = node_and_pods
    log = tmp_path / "ipam.log"
    path = recording_ipam(tmp_path / "bin", log, fail_add=True)
    rc, out, _ = bridge_run(node, "ADD", conf_for(tmp_path / "ipam"), pod=pods[0], path=str(path))
    assert rc == 1 and (out["code"], out["msg"]) == (11, "ipam says no")
    assert log.read_text().splitlines() == ["ADD eth0", "DEL eth0"]
    assert bridge.host_veth_name(pods[0], "eth0") not in {link["ifname"] for link in ipbatch.query(node, "link", "show")}


def _pod_routes(pod: str) -> list[tuple[str, str, str]]:
    return [(r["dst"], r.get("gateway", ""), r["dev"]) for r in ipbatch.query(pod, "-4", "route", "show")]


@pytest.mark.netns
def test_a_second_attachment_of_a_container_keeps_both_default_routes_as_the_reference(
        node_and_pods, tmp_path: Path) -> None:
    node, pods = node_and_pods
    reference_node, ours, theirs = pods[0], pods[1], pods[2]
    seen = {}
    for who, where, pod, argv in (("netemu", node, ours, BRIDGE),
                                  ("reference", reference_node, theirs, [str(REFERENCE / "bridge")])):
        conf = conf_for(tmp_path / f"ipam-{who}", **({"type": "bridge"} if who == "reference" else {}))
        for ifname in ("eth0", "net1"):
            rc, out, err = bridge_run(where, "ADD", conf, pod=pod, ifname=ifname, argv=argv)
            assert rc == 0, (who, ifname, out, err)
            assert out["ips"][0]["address"] == f"10.244.1.{2 if ifname == 'eth0' else 3}/24"
        seen[who] = _pod_routes(pod)
    assert seen["netemu"] == seen["reference"]
    assert ("default", "10.244.1.1", "eth0") in seen["netemu"] and ("default", "10.244.1.1", "net1") in seen["netemu"]
    conf = conf_for(tmp_path / "ipam-netemu")
    for ifname in ("net1", "eth0"):
        assert bridge_run(node, "DEL", conf, pod=ours, ifname=ifname)[:2] == (0, None)
    assert reservations(tmp_path / "ipam-netemu") == []


@pytest.mark.netns
def test_del_releases_the_ip_when_the_node_holds_an_interface_netemu_did_not_make(node_and_pods, tmp_path: Path) -> None:
    node, pods = node_and_pods
    conf = conf_for(tmp_path / "ipam")
    assert bridge_run(node, "ADD", conf, pod=pods[0])[0] == 0
    ipbatch.batch(node, ["link add stray0 type veth peer name stray1"])
    rc, out, err = bridge_run(node, "DEL", conf, pod=pods[0])
    assert (rc, out) == (0, None), err
    assert reservations(tmp_path / "ipam") == []
    node_links = {link["ifname"] for link in ipbatch.query(node, "link", "show")}
    assert bridge.host_veth_name(pods[0], "eth0") not in node_links
    assert {"stray0", "stray1"} <= node_links  # not netemu's: left alone
    rc, out, _ = bridge_run(node, "ADD", conf, pod=pods[1])  # ADD still refuses such a node
    assert rc == 1 and out["code"] == bridge.NOT_A_NODE_NAMESPACE


@pytest.mark.netns
def test_bridge_status_fails_wherever_add_would_refuse(node_and_pods, tmp_path: Path) -> None:
    node, pods = node_and_pods
    path = recording_ipam(tmp_path / "bin", tmp_path / "ipam.log")  # netemu's host-local: it speaks 1.1.0
    tiny = conf_for(tmp_path / "ipam", cniVersion="1.1.0",
                    ipam={"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/30"}]],
                          "dataDir": str(tmp_path / "ipam")})

    def status(where: str, conf: dict[str, Any], cni_path: str = str(path)) -> tuple[int, Any]:
        return bridge_run(where, "STATUS", conf, path=cni_path)[:2]

    assert status(node, tiny) == (0, None)
    rc, out = status("", tiny)  # the test's own namespace: ADD refuses to run here
    assert rc == 1 and out["code"] == bridge.NOT_AVAILABLE and "refusing to run" in out["msg"]
    rc, out = status(node, {**tiny, "ipMasq": True})
    assert rc == 1 and out["code"] == 2
    rc, out = status(node, tiny, cni_path=str(tmp_path / "nothing-here"))
    assert rc == 1 and out["code"] == bridge.NOT_AVAILABLE and 'failed to find plugin "host-local"' in out["msg"]
    assert bridge_run(node, "ADD", tiny, pod=pods[0], path=str(path))[0] == 0  # takes the only address
    rc, out = status(node, tiny)
    assert rc == 1 and out["code"] == bridge.NOT_AVAILABLE and "no IP addresses available" in out["msg"]
    assert bridge_run(node, "DEL", tiny, pod=pods[0], path=str(path))[0] == 0
    ipbatch.batch(node, ["link add stray0 type veth peer name stray1"])
    rc, out = status(node, tiny)
    assert rc == 1 and out["code"] == bridge.NOT_AVAILABLE and "did not make: stray" in out["msg"]
