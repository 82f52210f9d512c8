"""The plugins as executables (environment + stdin in, JSON + exit status out), and side by
side with the reference host-local from Debian's containernetworking-plugins when installed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent
REFERENCE_HOST_LOCAL = Path("/usr/lib/cni/host-local")


def executable(script: str, module: str) -> list[str]:
    path = BIN / script
    return [str(path)] if path.exists() else [sys.executable, "-m", module]


HOST_LOCAL = executable("netemu-cni-host-local", "netemu.cni.host_local")
LOOPBACK_ALIAS = executable("netemu-cni-loopback-alias", "netemu.cni.loopback_alias")
PLUGINS = pytest.mark.parametrize("plugin", [HOST_LOCAL, LOOPBACK_ALIAS], ids=["host-local", "loopback-alias"])


def run(plugin: list[str], command: str | None, stdin: str | dict, *, container_id: str = "c1",
        ifname: str = "eth0", netns: str = "/var/run/netns/test", args: str = "",
        drop: tuple[str, ...] = ()) -> tuple[int, Any, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_CONTAINERID": container_id,
           "CNI_NETNS": netns, "CNI_IFNAME": ifname, "CNI_PATH": "/usr/lib/cni", "CNI_ARGS": args}
    if command is not None:
        env["CNI_COMMAND"] = command
    env = {k: v for k, v in env.items() if k not in drop}
    data = stdin if isinstance(stdin, str) else json.dumps(stdin)
    proc = subprocess.run(plugin, input=data, env=env, capture_output=True, text=True, timeout=30)
    out = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc.returncode, out, proc.stderr


def config(data_dir: Path, version: str = "1.0.0", subnet: str = "127.244.1.0/24", **ipam: Any) -> dict[str, Any]:
    return {"cniVersion": version, "name": "pods", "type": "netemu",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": str(data_dir), **ipam}}


@PLUGINS
def test_version(plugin: list[str]) -> None:
    rc, out, _ = run(plugin, "VERSION", "")
    assert rc == 0
    assert out == {"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}


@PLUGINS
def test_about_without_any_cni_variable(plugin: list[str]) -> None:
    rc, out, err = run(plugin, None, "", drop=("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH", "CNI_ARGS"))
    assert (rc, out) == (0, None)
    assert "netemu CNI" in err and "CNI protocol versions supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0" in err


def test_host_local_add_check_del(tmp_path: Path) -> None:
    conf = config(tmp_path, routes=[{"dst": "0.0.0.0/0"}])
    rc, out, err = run(HOST_LOCAL, "ADD", conf)
    assert rc == 0, err
    assert out == {"cniVersion": "1.0.0", "ips": [{"address": "127.244.1.2/24", "gateway": "127.244.1.1"}],
                   "routes": [{"dst": "0.0.0.0/0"}]}
    assert run(HOST_LOCAL, "CHECK", {**conf, "prevResult": out})[:2] == (0, None)
    assert run(HOST_LOCAL, "DEL", conf, netns="")[:2] == (0, None)
    assert run(HOST_LOCAL, "DEL", conf, netns="")[:2] == (0, None)
    rc, out, _ = run(HOST_LOCAL, "CHECK", conf)
    assert rc == 1 and out["code"] == 999 and "Failed to find address added by container c1" in out["msg"]


def test_loopback_alias_add_check_del(tmp_path: Path) -> None:
    conf = config(tmp_path, subnet="127.244.3.0/24")
    rc, out, err = run(LOOPBACK_ALIAS, "ADD", conf, container_id="pod-1")
    assert rc == 0, err
    assert out == {"cniVersion": "1.0.0", "interfaces": [{"name": "lo"}],
                   "ips": [{"interface": 0, "address": "127.244.3.2/24", "gateway": "127.244.3.1"}]}
    assert run(LOOPBACK_ALIAS, "CHECK", {**conf, "prevResult": out}, container_id="pod-1")[:2] == (0, None)
    assert run(LOOPBACK_ALIAS, "DEL", conf, container_id="pod-1")[:2] == (0, None)
    assert run(LOOPBACK_ALIAS, "DEL", conf, container_id="pod-1")[:2] == (0, None)
    rc, out, _ = run(LOOPBACK_ALIAS, "CHECK", {**conf, "prevResult": out}, container_id="pod-1")
    assert rc == 1 and "Failed to find address" in out["msg"]


def test_loopback_alias_refuses_range_outside_loopback(tmp_path: Path) -> None:
    rc, out, _ = run(LOOPBACK_ALIAS, "ADD", config(tmp_path, subnet="10.244.1.0/24"))
    assert rc == 1
    assert out == {"cniVersion": "1.0.0", "code": 7,
                   "msg": "ipam range must be inside 127.0.0.0/8 for the loopback backend", "details": "10.244.1.0/24"}


@PLUGINS
@pytest.mark.parametrize("command, stdin, drop, code, msg", [
    ("ADD", "{not json", (), 6, "error unmarshall network config: "),
    ("ADD", "[1, 2]", (), 6, "error unmarshall network config: expected an object"),
    ("ADD", None, ("CNI_IFNAME", "CNI_PATH"), 4, "required env variables [CNI_IFNAME,CNI_PATH] missing"),
    ("CHECK", None, ("CNI_NETNS",), 4, "required env variables [CNI_NETNS] missing"),
    ("ADD", {"cniVersion": "1.0.0", "ipam": {}}, (), 7, "missing network name"),
    ("ADD", {"cniVersion": "1.0.0", "name": "pods", "ipam": {"type": "host-local"}}, (), 7, "no IP ranges specified"),
    ("ADD", {"cniVersion": "1.0.0", "name": "pods",
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "127.9.0.0/31"}]]}}, (), 7,
     "invalid range set 0: Network 127.9.0.0/31 too small to allocate from"),
    ("ADD", {"cniVersion": "9.9.9", "name": "pods"}, (), 1, "incompatible CNI versions"),
    ("CHECK", {"cniVersion": "0.3.1", "name": "pods"}, (), 1, "config version does not allow CHECK"),
    ("FROB", {"cniVersion": "1.0.0", "name": "pods"}, (), 4, "unknown CNI_COMMAND: FROB"),
], ids=["bad-json", "not-object", "missing-env", "check-needs-netns", "no-name", "no-ranges", "tiny-subnet",
        "unsupported-version", "check-too-old", "unknown-command"])
def test_errors(tmp_path: Path, plugin: list[str], command: str, stdin: Any, drop: tuple[str, ...],
                code: int, msg: str) -> None:
    rc, out, _ = run(plugin, command, config(tmp_path) if stdin is None else stdin, drop=drop)
    assert rc == 1
    assert set(out) == {"cniVersion", "code", "msg", "details"}
    assert out["code"] == code and out["msg"].startswith(msg)


def test_unsupported_version_details() -> None:
    _, out, _ = run(HOST_LOCAL, "ADD", {"cniVersion": "9.9.9", "name": "pods"})
    assert out["details"] == 'config is "9.9.9", plugin supports ["0.3.0" "0.3.1" "0.4.0" "1.0.0" "1.1.0"]'
    assert out["cniVersion"] == "9.9.9"  # an answer speaks the request's version, even to refuse it


# ---------------------------------------------------------------- against the reference plugin

needs_reference = pytest.mark.skipif(not REFERENCE_HOST_LOCAL.exists(),
                                     reason="reference /usr/lib/cni/host-local not installed "
                                            "(apt-get install containernetworking-plugins)")


def normalised(out: Any) -> Any:
    """The reference 1.1.1 prints an empty ``"dns": {}``; newer libcni and netemu omit it."""
    if isinstance(out, dict) and out.get("dns") == {}:
        return {k: v for k, v in out.items() if k != "dns"}
    return out


@needs_reference
@pytest.mark.parametrize("version, ipam", [
    ("1.0.0", {"ranges": [[{"subnet": "127.244.1.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}),
    ("0.4.0", {"ranges": [[{"subnet": "127.244.1.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}),
    ("1.0.0", {"subnet": "127.244.1.0/29", "gateway": "127.244.1.6"}),
    ("1.0.0", {"ranges": [[{"subnet": "127.244.1.0/30"}, {"subnet": "127.244.2.0/29", "rangeStart": "127.244.2.4"}],
                          [{"subnet": "127.245.0.0/16", "rangeEnd": "127.245.0.3"}]]}),
], ids=["ranges-routes", "ranges-routes-0.4.0", "old-form-gateway", "multi-range"])
def test_same_as_reference(tmp_path: Path, version: str, ipam: dict[str, Any]) -> None:
    """Same config, separate data dirs: the same results, errors and files, step by step."""
    steps: list[tuple[str, str, str]] = [("ADD", "c1", ""), ("ADD", "c2", ""), ("ADD", "c1", ""),
                                         ("ADD", "c3", "IP=127.244.1.3"), ("DEL", "c1", ""), ("ADD", "c4", ""),
                                         ("ADD", "c5", ""), ("ADD", "c6", ""), ("DEL", "c1", ""),
                                         ("ADD", "c7", "IP=127.244.1.1")]
    outcomes = {}
    for name, plugin in (("reference", [str(REFERENCE_HOST_LOCAL)]), ("netemu", HOST_LOCAL)):
        data_dir = tmp_path / name
        conf = {"cniVersion": version, "name": "pods", "type": "host-local",
                "ipam": {"type": "host-local", "dataDir": str(data_dir), **ipam}}
        seen = []
        for command, cid, args in steps:
            rc, out, _ = run(plugin, command, conf, container_id=cid, args=args)
            # error codes for config problems differ on purpose (netemu: 7, reference: 999)
            seen.append((rc, normalised(out) if rc == 0 else out["msg"]))
        files = {p.name: p.read_bytes() for p in (data_dir / "pods").iterdir() if p.name != "lock"}
        outcomes[name] = (seen, files)
    assert outcomes["netemu"] == outcomes["reference"]


@needs_reference
def test_reference_and_netemu_share_a_data_dir(tmp_path: Path) -> None:
    """netemu's files are the reference's format: each plugin sees and frees the other's."""
    conf = config(tmp_path)
    reference = [str(REFERENCE_HOST_LOCAL)]
    assert run(HOST_LOCAL, "ADD", conf, container_id="a")[0] == 0
    rc, out, _ = run(reference, "ADD", conf, container_id="b")
    assert rc == 0 and out["ips"][0]["address"] == "127.244.1.3/24"
    assert run(reference, "CHECK", conf, container_id="a")[0] == 0
    assert run(HOST_LOCAL, "CHECK", conf, container_id="b")[0] == 0
    assert run(reference, "DEL", conf, container_id="a")[0] == 0
    assert run(HOST_LOCAL, "CHECK", conf, container_id="a")[0] == 1
    rc, out, _ = run(HOST_LOCAL, "ADD", conf, container_id="c")
    assert rc == 0 and out["ips"][0]["address"] == "127.244.1.4/24"
