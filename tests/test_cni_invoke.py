"""In-process use of the plugins through ``skel.invoke``: host-local and loopback-alias ADD,
CHECK, DEL and GC, requested IPs, rollback, and the skeleton's shared checks and error codes."""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from netemu.cni import host_local, loopback_alias
from netemu.cni.skel import CmdArgs, Plugin, invoke, version_info
from netemu.cni.types import ErrorCode, Result
from netemu.errors import CNIError


def host_local_config(data_dir: Path, *, version: str = "1.0.0", ranges: list | None = None,
                      **extra: Any) -> dict[str, Any]:
    return {
        "cniVersion": version, "name": "pods", "type": "host-local",
        "ipam": {"type": "host-local", "dataDir": str(data_dir),
                 "ranges": ranges or [[{"subnet": "127.244.1.0/24"}]],
                 "routes": [{"dst": "127.244.0.0/16"}]},
        **extra,
    }


def add(plugin: Plugin, config: dict, cid: str = "c1", ifname: str = "eth0", args: dict | None = None) -> Result:
    result = invoke(plugin, "ADD", config, cid, "/var/run/netns/x", ifname, args)
    assert result is not None
    return result


def addresses(result: Result) -> list[str]:
    return [str(ip.address) for ip in result.ips]


def test_host_local_add_check_del(tmp_path: Path) -> None:
    config = host_local_config(tmp_path)
    result = add(host_local.PLUGIN, config)
    assert result.to_json() == {
        "cniVersion": "1.0.0",
        "ips": [{"address": "127.244.1.2/24", "gateway": "127.244.1.1"}],
        "routes": [{"dst": "127.244.0.0/16"}],
    }
    invoke(host_local.PLUGIN, "CHECK", {**config, "prevResult": result.to_json()}, "c1", "/x", "eth0")
    assert invoke(host_local.PLUGIN, "DEL", config, "c1", "", "eth0") is None
    invoke(host_local.PLUGIN, "DEL", config, "c1", "", "eth0")  # idempotent
    with pytest.raises(CNIError, match="Failed to find address added by container c1"):
        invoke(host_local.PLUGIN, "CHECK", config, "c1", "/x", "eth0")
    assert addresses(add(host_local.PLUGIN, config, "c2")) == ["127.244.1.3/24"]  # round robin


def test_host_local_check_compares_prev_result(tmp_path: Path) -> None:
    config = host_local_config(tmp_path)
    add(host_local.PLUGIN, config)
    forged = {"cniVersion": "1.0.0", "ips": [{"address": "127.244.1.99/24"}]}
    with pytest.raises(CNIError, match="127.244.1.99 of prevResult is not held by container c1"):
        invoke(host_local.PLUGIN, "CHECK", {**config, "prevResult": forged}, "c1", "/x", "eth0")


def test_host_local_result_in_040_has_ip_version(tmp_path: Path) -> None:
    result = add(host_local.PLUGIN, host_local_config(tmp_path, version="0.4.0"))
    assert result.cni_version == "0.4.0"
    assert result.to_json()["ips"] == [{"version": "4", "address": "127.244.1.2/24", "gateway": "127.244.1.1"}]


@pytest.mark.parametrize("how", ["cni-args", "args-cni-ips", "runtime-config"])
def test_host_local_requested_ip(tmp_path: Path, how: str) -> None:
    config = host_local_config(tmp_path)
    args = None
    if how == "cni-args":
        args = {"IP": "127.244.1.50"}
    elif how == "args-cni-ips":
        config["args"] = {"cni": {"ips": ["127.244.1.50"]}}
    else:
        config["runtimeConfig"] = {"ips": ["127.244.1.50/24"]}
    assert addresses(add(host_local.PLUGIN, config, args=args)) == ["127.244.1.50/24"]
    with pytest.raises(CNIError) as caught:
        add(host_local.PLUGIN, config, "c2", args=args)
    assert caught.value.msg == ("failed to allocate for range 0: requested IP address 127.244.1.50 is not "
                                "available in range set 127.244.1.1-127.244.1.254")


def test_host_local_one_ip_per_range_set_and_rollback(tmp_path: Path) -> None:
    config = host_local_config(tmp_path, ranges=[[{"subnet": "127.244.1.0/24"}], [{"subnet": "127.245.1.0/24"}]])
    assert addresses(add(host_local.PLUGIN, config)) == ["127.244.1.2/24", "127.245.1.2/24"]
    add(host_local.PLUGIN, config, "holder", args={"IP": "127.245.1.9"})
    with pytest.raises(CNIError, match="failed to allocate for range 1: requested IP address 127.245.1.9"):
        add(host_local.PLUGIN, config, "c3", args={"IP": "127.245.1.9"})
    files = sorted(p.name for p in (tmp_path / "pods").iterdir() if p.name.startswith("127."))
    assert files == ["127.244.1.2", "127.244.1.3", "127.245.1.2", "127.245.1.9"]  # c3's 127.244.1.4 undone


def test_host_local_request_outside_every_range(tmp_path: Path) -> None:
    config = host_local_config(tmp_path)
    with pytest.raises(CNIError) as caught:
        add(host_local.PLUGIN, config, args={"IP": "127.9.9.9"})
    assert caught.value.msg == "failed to allocate all requested IPs: 127.9.9.9"
    assert not [p for p in (tmp_path / "pods").iterdir() if p.name.startswith("127.")]


def test_host_local_gc_keeps_valid_attachments(tmp_path: Path) -> None:
    config = host_local_config(tmp_path, version="1.1.0")
    for cid in ("keep", "drop"):
        add(host_local.PLUGIN, config, cid)
    gc_config = {**config, "cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]}
    invoke(host_local.PLUGIN, "GC", gc_config)
    invoke(host_local.PLUGIN, "CHECK", config, "keep", "/x", "eth0")
    with pytest.raises(CNIError, match="Failed to find address added by container drop"):
        invoke(host_local.PLUGIN, "CHECK", config, "drop", "/x", "eth0")


def test_loopback_alias_add_check_del(tmp_path: Path) -> None:
    config = loopback_alias.network_config("node-1", "127.244.1.0/24", str(tmp_path))
    result = add(loopback_alias.PLUGIN, config, "pod-uid-1")
    assert result.to_json() == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "lo"}],
        "ips": [{"interface": 0, "address": "127.244.1.2/24", "gateway": "127.244.1.1"}],
    }
    assert result.ips[0].address.ip == ipaddress.ip_address("127.244.1.2")
    check_config = {**config, "prevResult": result.to_json()}
    invoke(loopback_alias.PLUGIN, "CHECK", check_config, "pod-uid-1", "/x", "eth0")
    invoke(loopback_alias.PLUGIN, "DEL", config, "pod-uid-1", "", "eth0")
    invoke(loopback_alias.PLUGIN, "DEL", config, "pod-uid-1", "", "eth0")
    with pytest.raises(CNIError, match="Failed to find address added by container pod-uid-1"):
        invoke(loopback_alias.PLUGIN, "CHECK", check_config, "pod-uid-1", "/x", "eth0")


@pytest.mark.parametrize("config_change, code, msg", [
    ({"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]]}},
     ErrorCode.INVALID_NETWORK_CONFIG, "ipam range must be inside 127.0.0.0/8 for the loopback backend"),
    ({"ipam": {"type": "host-local", "ranges": [[{"subnet": "127.244.1.0/24"}], [{"subnet": "fd00::/64"}]]}},
     ErrorCode.INVALID_NETWORK_CONFIG, "ipam range must be inside 127.0.0.0/8 for the loopback backend"),
    ({"ipam": {"type": "dhcp"}}, ErrorCode.INVALID_NETWORK_CONFIG, "unsupported ipam type 'dhcp'"),
    ({"ipam": None}, ErrorCode.INVALID_NETWORK_CONFIG, "IPAM config missing 'ipam' key"),
], ids=["outside-loopback", "ipv6-range", "other-ipam", "no-ipam"])
def test_loopback_alias_rejects(tmp_path: Path, config_change: dict, code: int, msg: str) -> None:
    config = {**loopback_alias.network_config("node-1", "127.244.1.0/24", str(tmp_path)), **config_change}
    if isinstance(config["ipam"], dict) and config["ipam"].get("type") == "host-local":
        config["ipam"]["dataDir"] = str(tmp_path)
    with pytest.raises(CNIError) as caught:
        add(loopback_alias.PLUGIN, config)
    assert (caught.value.code, caught.value.msg) == (code, msg)
    assert not list(tmp_path.glob("*/127.*"))


def test_loopback_alias_check_needs_prev_result(tmp_path: Path) -> None:
    config = loopback_alias.network_config("node-1", "127.244.1.0/24", str(tmp_path))
    add(loopback_alias.PLUGIN, config)
    with pytest.raises(CNIError) as caught:
        invoke(loopback_alias.PLUGIN, "CHECK", config, "c1", "/x", "eth0")
    assert (caught.value.code, caught.value.msg) == (ErrorCode.INVALID_NETWORK_CONFIG, "required prevResult missing")


BASE = {"cniVersion": "1.0.0", "name": "pods", "ipam": {"type": "host-local", "ranges": [[{"subnet": "127.3.0.0/24"}]]}}


@pytest.mark.parametrize("command, config_change, cid, ifname, args, code, msg", [
    ("ADD", {"name": ""}, "c1", "eth0", None, ErrorCode.INVALID_NETWORK_CONFIG, "missing network name"),
    ("ADD", {"name": "a/b"}, "c1", "eth0", None, ErrorCode.INVALID_NETWORK_CONFIG,
     "invalid characters found in network name"),
    ("ADD", {}, "", "eth0", None, ErrorCode.UNKNOWN_CONTAINER, "missing containerID"),
    ("ADD", {}, "c%", "eth0", None, ErrorCode.INVALID_ENVIRONMENT, "invalid characters in containerID"),
    ("ADD", {}, "c1", "eth0:1", None, ErrorCode.INVALID_ENVIRONMENT,
     "interface name contains / or : or whitespace characters"),
    ("ADD", {}, "c1", "a-very-long-ifname", None, ErrorCode.INVALID_ENVIRONMENT, "interface name is too long"),
    ("ADD", {"cniVersion": "0.2.0"}, "c1", "eth0", None, ErrorCode.INCOMPATIBLE_VERSION, "incompatible CNI versions"),
    ("ADD", {"cniVersion": None}, "c1", "eth0", None, ErrorCode.INCOMPATIBLE_VERSION, "incompatible CNI versions"),
    ("CHECK", {"cniVersion": "0.3.1"}, "c1", "eth0", None, ErrorCode.INCOMPATIBLE_VERSION,
     "config version does not allow CHECK"),
    ("GC", {}, "", "", None, ErrorCode.INCOMPATIBLE_VERSION, "config version does not allow GC"),
    ("ADD", {"ipam": {}}, "c1", "eth0", None, ErrorCode.INVALID_NETWORK_CONFIG, "IPAM config missing 'ipam' key"),
    ("ADD", {"ipam": {"type": "host-local"}}, "c1", "eth0", None, ErrorCode.INVALID_NETWORK_CONFIG,
     "no IP ranges specified"),
    ("ADD", {}, "c1", "eth0", {"K8S_POD_NAME": "web"}, ErrorCode.INVALID_ENVIRONMENT,
     "ARGS: unknown args ['K8S_POD_NAME=web']"),
    ("ADD", {}, "c1", "eth0", {"IP": "not-an-ip"}, ErrorCode.INVALID_NETWORK_CONFIG, "cannot understand ip: not-an-ip"),
    ("FROB", {}, "c1", "eth0", None, ErrorCode.INVALID_ENVIRONMENT, "unknown CNI_COMMAND: FROB"),
], ids=["no-name", "bad-name", "no-container", "bad-container", "bad-ifname", "long-ifname", "old-version",
        "no-version", "check-too-old", "gc-too-old", "empty-ipam", "no-ranges", "unknown-arg", "bad-ip-arg",
        "unknown-command"])
def test_invoke_errors(tmp_path: Path, command: str, config_change: dict, cid: str, ifname: str,
                       args: dict | None, code: int, msg: str) -> None:
    config = {**BASE, **config_change}
    if config["ipam"]:
        config["ipam"] = {**config["ipam"], "dataDir": str(tmp_path)}
    config = {k: v for k, v in config.items() if v is not None}
    with pytest.raises(CNIError) as caught:
        invoke(host_local.PLUGIN, command, config, cid, "/x", ifname, args)
    assert (caught.value.code, caught.value.msg) == (code, msg)


def test_ignore_unknown_args(tmp_path: Path) -> None:
    config = host_local_config(tmp_path)
    args = {"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "web"}
    assert addresses(add(host_local.PLUGIN, config, args=args)) == ["127.244.1.2/24"]


def test_foreign_exception_becomes_internal_error() -> None:
    def broken(args: CmdArgs) -> Result:
        raise RuntimeError("boom")

    plugin = Plugin(add=broken, check=lambda a: None, delete=lambda a: None)
    with pytest.raises(CNIError) as caught:
        invoke(plugin, "ADD", {"cniVersion": "1.0.0", "name": "n"}, "c1", "/x", "eth0")
    assert (caught.value.code, caught.value.msg) == (ErrorCode.INTERNAL, "boom")
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_status_without_handler_succeeds() -> None:
    plugin = Plugin(host_local.cmd_add, host_local.cmd_check, host_local.cmd_del)
    assert invoke(plugin, "STATUS", {"cniVersion": "1.1.0", "name": "n"}) is None


def test_version_info() -> None:
    assert version_info(host_local.PLUGIN) == {
        "cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}


def test_loopback_backend_needs_no_namespace(tmp_path: Path) -> None:
    config = loopback_alias.network_config("node-2", "127.244.2.0/24", str(tmp_path))
    result = invoke(loopback_alias.PLUGIN, "ADD", config, container_id="pod-uid-2", netns="", ifname="eth0")
    assert result is not None and str(result.ips[0].address.ip) == "127.244.2.2"
    assert (tmp_path / "node-2" / "127.244.2.2").read_bytes() == b"pod-uid-2\r\neth0"
    invoke(loopback_alias.PLUGIN, "DEL", config, container_id="pod-uid-2", netns="", ifname="eth0")
    assert not (tmp_path / "node-2" / "127.244.2.2").exists()
