"""CNI types: CNI_ARGS, results in each spec version, network and IPAM configuration decoding."""
from __future__ import annotations

import ipaddress

import pytest

from netemu.cni.types import (DNS, ErrorCode, Interface, IPAMConfig, IPConfig, NetConf, RangeSpec, Result,
                              Route, check_known_args, format_cni_args, parse_cni_args)
from netemu.errors import CNIError


@pytest.mark.parametrize("text, expected", [
    ("", {}),
    ("IP=127.244.1.9", {"IP": "127.244.1.9"}),
    ("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
     {"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "web-0"}),
    ("K=", {"K": ""}),
], ids=["empty", "one", "kubernetes", "empty-value"])
def test_parse_cni_args(text: str, expected: dict[str, str]) -> None:
    assert parse_cni_args(text) == expected
    assert parse_cni_args(format_cni_args(expected)) == expected


@pytest.mark.parametrize("text, msg", [
    ("FOO", 'ARGS: invalid pair "FOO"'),
    ("A=1;B", 'ARGS: invalid pair "B"'),
    ("A=1=2", 'ARGS: invalid pair "A=1=2"'),
], ids=["no-equals", "second-pair", "two-equals"])
def test_parse_cni_args_rejects(text: str, msg: str) -> None:
    with pytest.raises(CNIError) as caught:
        parse_cni_args(text)
    assert (caught.value.code, caught.value.msg) == (ErrorCode.INVALID_ENVIRONMENT, msg)


@pytest.mark.parametrize("args, ok", [
    ({"IP": "1.2.3.4"}, True),
    ({"FOO": "1"}, False),
    ({"IgnoreUnknown": "1", "FOO": "1"}, True),
    ({"IgnoreUnknown": "true", "FOO": "1"}, True),
    ({"IgnoreUnknown": "0", "FOO": "1"}, False),
], ids=["known", "unknown", "ignore-1", "ignore-true", "ignore-0"])
def test_check_known_args(args: dict[str, str], ok: bool) -> None:
    if ok:
        check_known_args(args, {"IP"})
    else:
        with pytest.raises(CNIError, match="ARGS: unknown args"):
            check_known_args(args, {"IP"})


FULL_RESULT = Result(
    "1.0.0",
    interfaces=(Interface("lo"), Interface("eth0", mac="0a:58:0a:f4:01:02", sandbox="/var/run/netns/p")),
    ips=(IPConfig(ipaddress.ip_interface("127.244.1.2/24"), ipaddress.ip_address("127.244.1.1"), 0),
         IPConfig(ipaddress.ip_interface("fd00::2/64"), None, 1)),
    routes=(Route(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_address("127.244.1.1")),
            Route(ipaddress.ip_network("10.96.0.0/12"), extra={"mtu": 1400})),
    dns=DNS(("10.96.0.10",), "cluster.local", ("default.svc.cluster.local",), ("ndots:5",)),
)


@pytest.mark.parametrize("version, ip_version_field", [
    ("0.3.0", True), ("0.3.1", True), ("0.4.0", True), ("1.0.0", False), ("1.1.0", False),
], ids=lambda v: str(v))
def test_result_json_per_version(version: str, ip_version_field: bool) -> None:
    data = FULL_RESULT.to_json(version)
    assert data["cniVersion"] == version
    assert [("version" in ip) for ip in data["ips"]] == [ip_version_field] * 2
    assert data["ips"][0]["address"] == "127.244.1.2/24"
    assert data["ips"][0]["gateway"] == "127.244.1.1"
    assert data["routes"][1] == {"dst": "10.96.0.0/12", "mtu": 1400}
    back = Result.from_json(data)
    assert back.ips == FULL_RESULT.ips and back.interfaces == FULL_RESULT.interfaces
    assert back.routes == FULL_RESULT.routes and back.dns == FULL_RESULT.dns


def test_ipam_result_omits_empty_parts() -> None:
    result = Result("1.0.0", ips=(IPConfig(ipaddress.ip_interface("127.244.1.2/24"),
                                            ipaddress.ip_address("127.244.1.1")),))
    assert result.to_json() == {"cniVersion": "1.0.0",
                                "ips": [{"address": "127.244.1.2/24", "gateway": "127.244.1.1"}]}


def test_result_refuses_pre_030_shape() -> None:
    with pytest.raises(CNIError) as caught:
        FULL_RESULT.to_json("0.2.0")
    assert caught.value.code == ErrorCode.INCOMPATIBLE_VERSION


def test_netconf_keeps_plugin_specific_keys() -> None:
    data = {"cniVersion": "1.0.0", "name": "pods", "type": "bridge", "bridge": "cni0", "isGateway": True,
            "ipam": {"type": "host-local"}, "args": {"cni": {"ips": ["127.244.1.9"]}},
            "prevResult": FULL_RESULT.to_json()}
    conf = NetConf.from_json(data)
    assert conf.extra == {"bridge": "cni0", "isGateway": True}
    assert conf.prev_result is not None and conf.prev_result.ips == FULL_RESULT.ips
    assert NetConf.from_json(conf.to_json()) == conf


@pytest.mark.parametrize("data, code", [
    ([], ErrorCode.DECODING_FAILURE),
    ({"name": 5}, ErrorCode.DECODING_FAILURE),
    ({"name": "n", "ipam": []}, ErrorCode.DECODING_FAILURE),
    ({"name": "n", "prevResult": {"ips": [{"address": "nonsense"}]}}, ErrorCode.INVALID_NETWORK_CONFIG),
    ({"name": "n", "dns": {"nameservers": [1]}}, ErrorCode.DECODING_FAILURE),
], ids=["not-object", "name-number", "ipam-array", "prev-bad-address", "dns-number"])
def test_netconf_rejects(data: object, code: int) -> None:
    with pytest.raises(CNIError) as caught:
        NetConf.from_json(data)
    assert caught.value.code == code


def test_netconf_without_version_is_010() -> None:
    assert NetConf.from_json({"name": "n"}).cni_version == "0.1.0"


@pytest.mark.parametrize("ipam, expected_ranges", [
    ({"ranges": [[{"subnet": "127.244.1.0/24"}]]}, [[RangeSpec(ipaddress.ip_network("127.244.1.0/24"))]]),
    ({"subnet": "127.244.1.0/24", "rangeStart": "127.244.1.10", "gateway": "127.244.1.254"},
     [[RangeSpec(ipaddress.ip_network("127.244.1.0/24"), ipaddress.ip_address("127.244.1.10"), None,
                 ipaddress.ip_address("127.244.1.254"))]]),
    ({"subnet": "127.244.2.0/24", "ranges": [[{"subnet": "127.244.1.0/24"}, {"subnet": "127.245.1.0/24"}]]},
     [[RangeSpec(ipaddress.ip_network("127.244.2.0/24"))],
      [RangeSpec(ipaddress.ip_network("127.244.1.0/24")), RangeSpec(ipaddress.ip_network("127.245.1.0/24"))]]),
], ids=["ranges", "old-single-subnet", "old-form-comes-first"])
def test_ipam_config_forms(ipam: dict, expected_ranges: list[list[RangeSpec]]) -> None:
    config = IPAMConfig.from_json({"type": "host-local", "dataDir": "/tmp/x", **ipam})
    assert [list(rs) for rs in config.ranges] == expected_ranges
    assert config.data_dir == "/tmp/x"


@pytest.mark.parametrize("ipam, code, msg", [
    ({"ranges": [[{"subnet": "300.1.1.0/24"}]]}, ErrorCode.INVALID_NETWORK_CONFIG, "invalid CIDR address"),
    ({"ranges": [[{}]]}, ErrorCode.INVALID_NETWORK_CONFIG, "ipam.ranges[0][0].subnet: required"),
    ({"ranges": [{"subnet": "127.0.0.0/8"}]}, ErrorCode.DECODING_FAILURE, "ipam.ranges[0]: expected array"),
    ({"routes": [{"gw": "127.0.0.1"}]}, ErrorCode.INVALID_NETWORK_CONFIG, "ipam.routes[0].dst: required"),
], ids=["bad-cidr", "no-subnet", "set-not-list", "route-without-dst"])
def test_ipam_config_rejects(ipam: dict, code: int, msg: str) -> None:
    with pytest.raises(CNIError) as caught:
        IPAMConfig.from_json(ipam)
    assert caught.value.code == code and msg in caught.value.msg
