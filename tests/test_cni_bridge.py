"""The CNI bridge plugin, run as an executable inside test node namespaces (``ip netns exec``):
ADD/CHECK/DEL results and traffic between two pods on one node, config and environment errors,
the guard that refuses to work anywhere but in a netemu node namespace (and on anything but a
netemu pod namespace), in-process use on a switched thread, IPAM executables from CNI_PATH, and
a side-by-side run of Debian's reference ``bridge`` + ``host-local``.

Every namespace is the test's own (``netemu-t<random>-…``) and none has a link to the namespace
the tests run in, which the module checks is unchanged at the end. Traffic stays between the
test pods' 10.244.1.x addresses and their node's gateway.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from netemu.cni import bridge, skel
from netemu.errors import CNIError
from netemu.fabric.netns import ipbatch, namespaces

from test_netns_helpers import NameBook, netns_ready, network_snapshot, new_names, own_network_unchanged, poll

pytestmark = pytest.mark.netns

BIN = Path(sys.executable).parent
PLUGIN = [str(BIN / "netemu-cni-bridge")] if (BIN / "netemu-cni-bridge").exists() else [
    sys.executable, "-m", "netemu.cni.bridge"]
CNI_DIR = Path("/usr/lib/cni")
REFERENCE_BRIDGE = CNI_DIR / "bridge"
SUBNET = "10.244.1.0/24"
GATEWAY = "10.244.1.1"
MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")

__all__ = ["netns_ready", "new_names", "own_network_unchanged"]  # fixtures used by name


@dataclass
class Node:
    """One test node namespace with two empty pod namespaces and an IPAM data dir."""

    name: str
    pods: list[str]
    data_dir: Path

    def conf(self, **overrides: Any) -> dict[str, Any]:
        return {**bridge.network_config("pods", SUBNET, str(self.data_dir)), **overrides}


def netns_path(name: str) -> str:
    return str(namespaces.NETNS_RUN_DIR / name)


def run(plugin: list[str], command: str, stdin: str | dict[str, Any], *, node: str | None, container_id: str = "",
        netns: str = "", ifname: str = "eth0", drop: tuple[str, ...] = ()) -> tuple[int, Any, str]:
    """The plugin with CNI environment and stdin, inside namespace ``node`` (None: right here)."""
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "CNI_COMMAND": command,
           "CNI_CONTAINERID": container_id, "CNI_NETNS": netns, "CNI_IFNAME": ifname, "CNI_PATH": str(CNI_DIR)}
    env = {k: v for k, v in env.items() if k not in drop}
    argv = [*namespaces.exec_prefix(node), *plugin] if node else plugin
    data = stdin if isinstance(stdin, str) else json.dumps(stdin)
    proc = subprocess.run(argv, input=data, env=env, capture_output=True, text=True, timeout=60, check=False)
    out = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc.returncode, out, proc.stderr


def add(node: Node, pod: str, conf: dict[str, Any] | None = None, plugin: list[str] = PLUGIN) -> dict[str, Any]:
    rc, out, err = run(plugin, "ADD", conf or node.conf(), node=node.name, container_id=pod, netns=netns_path(pod))
    assert rc == 0, (out, err)
    return out


def links(netns: str) -> dict[str, dict[str, Any]]:
    return {link["ifname"]: link for link in ipbatch.query(netns, "-d", "link", "show")}


def reservations(data_dir: Path) -> list[str]:
    directory = data_dir / "pods"
    return sorted(p.name for p in directory.iterdir() if p.name[0].isdigit()) if directory.is_dir() else []


def pod_ip(result: dict[str, Any]) -> str:
    return result["ips"][0]["address"].split("/")[0]


def tcp_exchange(client_ns: str, server_ns: str, server_ip: str) -> str:
    """Connects from ``client_ns`` to a listener in ``server_ns``; returns the client address
    the server saw (sockets are made in the namespaces, then used from this thread)."""
    listener = namespaces.call_in(server_ns, socket.create_server, (server_ip, 0))
    with listener:
        client = namespaces.call_in(client_ns, socket.create_connection, listener.getsockname(), 2)
        served, peer = listener.accept()
        with client, served:
            client.sendall(b"hello")
            assert served.recv(5) == b"hello"
    return peer[0]


def pings(netns: str, ip: str) -> bool:
    def once() -> bool:
        return subprocess.run([*namespaces.exec_prefix(netns), "ping", "-c1", "-W1", ip], check=False,
                              capture_output=True, timeout=10).returncode == 0
    return poll(once, timeout=5.0)


needs_ping = pytest.mark.skipif(shutil.which("ping") is None, reason="ping is not installed (Debian iputils-ping)")


@pytest.fixture
def node(new_names, tmp_path: Path) -> Node:
    name, *pods = new_names(3)
    namespaces.create([name, *pods])
    namespaces.setup_node(name)
    return Node(name, pods, tmp_path / "ipam")


@pytest.fixture
def two_pods(node: Node) -> tuple[Node, list[dict[str, Any]]]:
    """Two pods added on a node, for tests that change them."""
    return node, [add(node, pod) for pod in node.pods]


@pytest.fixture(scope="module")
def shared_pods(netns_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, list[dict[str, Any]]]]:
    """Two pods added on a node, shared by the tests that only look."""
    book = NameBook()
    try:
        name, *pods = book(3)
        namespaces.create([name, *pods])
        namespaces.setup_node(name)
        node = Node(name, pods, tmp_path_factory.mktemp("ipam"))
        yield node, [add(node, pod) for pod in pods]
    finally:
        book.collect()


def nothing_made(node: Node, node_links_before: set[str]) -> None:
    assert reservations(node.data_dir) == []
    assert set(links(node.name)) == node_links_before
    for pod in node.pods:
        assert set(links(pod)) == {"lo"}


# ---------------------------------------------------------------- results and traffic

def test_version() -> None:
    rc, out, _ = run(PLUGIN, "VERSION", "", node=None)
    assert rc == 0
    assert out == {"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}


def test_add_results_have_the_spec_fields(shared_pods) -> None:
    node, results = shared_pods
    node_links = links(node.name)
    for index, (pod, result) in enumerate(zip(node.pods, results)):
        assert set(result) == {"cniVersion", "interfaces", "ips", "routes"}
        assert result["cniVersion"] == "1.0.0"
        bridge_if, host_if, pod_if = result["interfaces"]
        assert bridge_if == {"name": "cni0", "mac": node_links["cni0"]["address"]}
        veth = bridge.host_veth_name(pod, "eth0")
        assert len(veth) <= 15 and host_if == {"name": veth, "mac": node_links[veth]["address"]}
        assert node_links[veth]["master"] == "cni0"
        assert pod_if == {"name": "eth0", "mac": links(pod)["eth0"]["address"], "sandbox": netns_path(pod)}
        assert all(MAC.match(i["mac"]) for i in result["interfaces"])
        assert result["ips"] == [{"interface": 2, "address": f"10.244.1.{index + 2}/24", "gateway": GATEWAY}]
        assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": GATEWAY}]
    (cni0,) = ipbatch.query(node.name, "-4", "addr", "show", "dev", "cni0")
    assert [(a["local"], a["prefixlen"]) for a in cni0["addr_info"]] == [(GATEWAY, 24)]
    forwarding = namespaces.call_in(node.name, Path("/proc/sys/net/ipv4/ip_forward").read_text)
    assert forwarding.strip() == "1"


def test_pods_have_lo_an_address_and_a_default_route(shared_pods) -> None:
    node, _ = shared_pods
    pod = node.pods[0]
    assert {name: "UP" in link["flags"] for name, link in links(pod).items()} == {"lo": True, "eth0": True}
    routes = ipbatch.query(pod, "-4", "route", "show")
    assert {"dst": "default", "gateway": GATEWAY, "dev": "eth0"}.items() <= next(
        r for r in routes if r["dst"] == "default").items()


@needs_ping
@pytest.mark.parametrize("target", ["peer", "gateway", "back"])
def test_pods_ping(shared_pods, target: str) -> None:
    node, results = shared_pods
    source, ip = {"peer": (node.pods[0], pod_ip(results[1])), "gateway": (node.pods[0], GATEWAY),
                  "back": (node.pods[1], pod_ip(results[0]))}[target]
    assert pings(source, ip)


def test_pods_talk_tcp_and_see_each_others_pod_ip(shared_pods) -> None:
    node, results = shared_pods
    assert tcp_exchange(node.pods[0], node.pods[1], pod_ip(results[1])) == pod_ip(results[0])


def test_check_passes_on_what_add_made(shared_pods) -> None:
    node, results = shared_pods
    for pod, result in zip(node.pods, results):
        assert run(PLUGIN, "CHECK", {**node.conf(), "prevResult": result}, node=node.name, container_id=pod,
                   netns=netns_path(pod))[:2] == (0, None)


CHECK_FAILURES = [
    ("no-prev-result", None, [], "Required prevResult missing"),
    ("mac", lambda prev: prev["interfaces"][2].update(mac="02:00:00:00:00:01"), [], "Mac doesn't match"),
    ("bridge-mac", lambda prev: prev["interfaces"][0].update(mac="02:00:00:00:00:02"), [], "Mac doesn't match"),
    ("sandbox", lambda prev: prev["interfaces"][2].update(sandbox="/run/netns/other"), [],
     "Sandbox in prevResult doesn't match"),
    ("address-gone", lambda prev: None, ["addr flush dev eth0"], "Failed to match addr 10.244.1.2/24"),
    ("route-gone", lambda prev: None, ["route del default"], "Failed to match route"),
]


@pytest.mark.parametrize("mutate, pod_commands, message", [c[1:] for c in CHECK_FAILURES],
                         ids=[c[0] for c in CHECK_FAILURES])
def test_check_finds_what_differs(mutate: Callable[[dict[str, Any]], None] | None, pod_commands: list[str],
                                  message: str, request: pytest.FixtureRequest) -> None:
    """``mutate`` edits the prevResult in place (None: no prevResult at all); ``pod_commands``
    change the pod (then it gets pods of its own)."""
    node, results = request.getfixturevalue("two_pods" if pod_commands else "shared_pods")
    pod = node.pods[0]
    conf = node.conf()
    if mutate is not None:
        conf["prevResult"] = copy.deepcopy(results[0])
        mutate(conf["prevResult"])
    ipbatch.batch(pod, pod_commands)
    rc, out, err = run(PLUGIN, "CHECK", conf, node=node.name, container_id=pod, netns=netns_path(pod))
    assert rc == 1, err
    assert message in out["msg"]


def test_del_is_idempotent_and_releases_the_address(two_pods) -> None:
    node, _ = two_pods
    pod = node.pods[0]
    for _ in range(2):
        assert run(PLUGIN, "DEL", node.conf(), node=node.name, container_id=pod, netns=netns_path(pod))[:2] == (0, None)
        assert set(links(pod)) == {"lo"}
        assert bridge.host_veth_name(pod, "eth0") not in links(node.name)
        assert reservations(node.data_dir) == ["10.244.1.3"]


def test_del_succeeds_when_the_pod_namespace_is_gone(two_pods) -> None:
    node, _ = two_pods
    pod = node.pods[1]
    namespaces.delete([pod])
    assert run(PLUGIN, "DEL", node.conf(), node=node.name, container_id=pod, netns=netns_path(pod))[:2] == (0, None)
    assert reservations(node.data_dir) == ["10.244.1.2"]
    assert set(links(node.name)) == {"lo", "cni0", bridge.host_veth_name(node.pods[0], "eth0")}


def test_add_twice_fails_and_reserves_nothing_more(shared_pods) -> None:
    node, _ = shared_pods
    pod = node.pods[0]
    rc, out, _ = run(PLUGIN, "ADD", node.conf(), node=node.name, container_id=pod, netns=netns_path(pod))
    assert rc == 1 and out["msg"] == "container veth name provided (eth0) already exists"
    assert reservations(node.data_dir) == ["10.244.1.2", "10.244.1.3"]


def test_the_plugin_makes_the_bridge_with_mtu_hairpin_and_port_isolation(new_names, tmp_path: Path) -> None:
    name, pod = new_names(2)
    namespaces.create([name, pod])  # no node setup: only lo
    node = Node(name, [pod], tmp_path)
    result = add(node, pod, node.conf(bridge="br-pods", mtu=1400, hairpinMode=True, portIsolation=True))
    assert [i["name"] for i in result["interfaces"]] == ["br-pods", bridge.host_veth_name(pod, "eth0"), "eth0"]
    node_links = links(name)
    assert node_links["br-pods"]["linkinfo"]["info_kind"] == "bridge"
    assert node_links["br-pods"]["ifalias"].startswith(namespaces.OWNED_ALIAS)
    host = node_links[bridge.host_veth_name(pod, "eth0")]
    assert host["mtu"] == 1400 and host["linkinfo"]["info_slave_data"]["hairpin"] is True
    assert host["linkinfo"]["info_slave_data"]["isolated"] is True
    assert links(pod)["eth0"]["mtu"] == 1400


def test_an_ipam_executable_from_cni_path(node: Node) -> None:
    if not (CNI_DIR / "static").exists():
        pytest.skip(f"{CNI_DIR}/static is not installed (Debian containernetworking-plugins)")
    pod = node.pods[0]
    conf = node.conf(ipam={"type": "static", "addresses": [{"address": "10.244.1.50/24", "gateway": GATEWAY}]})
    result = add(node, pod, conf)
    assert result["ips"] == [{"interface": 2, "address": "10.244.1.50/24", "gateway": GATEWAY}]
    assert run(PLUGIN, "DEL", conf, node=node.name, container_id=pod, netns=netns_path(pod))[:2] == (0, None)


# ---------------------------------------------------------------- errors

ERRORS = [
    ("ipmasq", {"ipMasq": True}, None, (), 2, "ipMasq"),
    ("vlan", {"vlan": 10}, None, (), 2, "vlan"),
    ("hairpin-and-promisc", {"hairpinMode": True, "promiscMode": True}, None, (), 7, "hairpin"),
    ("mtu-type", {"mtu": "1400"}, None, (), 6, "mtu"),
    ("ipam-type-path", {"ipam": {"type": "../host-local"}}, None, (), 7, "invalid ipam type"),
    ("missing-netns", {}, None, ("CNI_NETNS",), 4, "CNI_NETNS"),
    ("bad-json", {}, "{not json", (), 6, "error unmarshall network config"),
]


@pytest.mark.parametrize("overrides, stdin, drop, code, message", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_leave_nothing_behind(node: Node, overrides: dict[str, Any], stdin: str | None,
                                     drop: tuple[str, ...], code: int, message: str) -> None:
    before = set(links(node.name))
    pod = node.pods[0]
    rc, out, _ = run(PLUGIN, "ADD", stdin if stdin is not None else node.conf(**overrides), node=node.name,
                     container_id=pod, netns=netns_path(pod), drop=drop)
    assert rc == 1 and out["code"] == code and message in out["msg"], out
    nothing_made(node, before)


# ---------------------------------------------------------------- the guard

@pytest.mark.parametrize("command", ["ADD", "CHECK", "DEL"])
def test_the_guard_refuses_to_run_outside_a_node_namespace(node: Node, command: str) -> None:
    before_here, before_node = network_snapshot(), set(links(node.name))
    pod = node.pods[0]
    rc, out, _ = run(PLUGIN, command, node.conf(), node=None, container_id=pod, netns=netns_path(pod))
    assert rc == 1 and out["code"] == bridge.NOT_A_NODE_NAMESPACE, out
    assert "refusing to run" in out["msg"]
    assert network_snapshot() == before_here
    nothing_made(node, before_node)


def test_the_guard_refuses_a_node_namespace_with_interfaces_netemu_did_not_make(node: Node) -> None:
    ipbatch.batch(node.name, ["link add stray0 type veth peer name stray1"])
    before = set(links(node.name))
    pod = node.pods[0]
    rc, out, _ = run(PLUGIN, "ADD", node.conf(), node=node.name, container_id=pod, netns=netns_path(pod))
    assert rc == 1 and out["code"] == bridge.NOT_A_NODE_NAMESPACE
    assert "did not make: stray" in out["msg"]
    nothing_made(node, before)


@pytest.fixture
def unnamed_namespace() -> Any:
    """A process alone in a fresh, unnamed network namespace: not one netemu made."""
    proc = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    try:
        mine = namespaces.namespace_id("/proc/self/ns/net")
        assert poll(lambda: namespaces.namespace_id(f"/proc/{proc.pid}/ns/net") != mine)
        yield f"/proc/{proc.pid}/ns/net"
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("case", ["node-itself", "unnamed", "stray-interface", "missing"])
def test_the_guard_refuses_a_pod_namespace_netemu_did_not_make(node: Node, case: str, request) -> None:
    pod = node.pods[0]
    if case == "stray-interface":
        ipbatch.batch(pod, ["link add stray0 type veth peer name stray1"])
    netns = {"node-itself": lambda: netns_path(node.name),
             "unnamed": lambda: request.getfixturevalue("unnamed_namespace"),
             "stray-interface": lambda: netns_path(pod),
             "missing": lambda: netns_path(node.name + "-missing")}[case]()
    before_node, before_pod = set(links(node.name)), set(links(pod))
    rc, out, _ = run(PLUGIN, "ADD", node.conf(), node=node.name, container_id=pod, netns=netns)
    assert rc == 1
    if case == "missing":
        assert out["code"] == 999 and out["msg"].startswith("failed to open netns")
    else:
        assert out["code"] == bridge.NOT_A_POD_NAMESPACE and out["msg"].startswith(f"refusing CNI_NETNS {netns}")
    assert reservations(node.data_dir) == []
    assert set(links(node.name)) == before_node and set(links(pod)) == before_pod


# ---------------------------------------------------------------- in-process

def test_in_process_on_a_thread_switched_into_the_node(node: Node) -> None:
    pod = node.pods[0]
    conf = node.conf()
    invoke = lambda command: skel.invoke(bridge.PLUGIN, command, conf, container_id=pod,
                                         netns=netns_path(pod), ifname="eth0", path=(str(CNI_DIR),))
    result = namespaces.call_in(node.name, invoke, "ADD")
    assert str(result.ips[0].address) == "10.244.1.2/24"
    assert [i.name for i in result.interfaces] == ["cni0", bridge.host_veth_name(pod, "eth0"), "eth0"]
    assert namespaces.call_in(node.name, invoke, "DEL") is None
    assert set(links(pod)) == {"lo"} and reservations(node.data_dir) == []


def test_in_process_on_an_unswitched_thread_is_refused(node: Node) -> None:
    before_here, before_node = network_snapshot(), set(links(node.name))
    pod = node.pods[0]
    with pytest.raises(CNIError) as caught:
        skel.invoke(bridge.PLUGIN, "ADD", node.conf(), container_id=pod, netns=netns_path(pod), ifname="eth0",
                    path=(str(CNI_DIR),))
    assert caught.value.code == bridge.NOT_A_NODE_NAMESPACE
    assert network_snapshot() == before_here
    nothing_made(node, before_node)


# ---------------------------------------------------------------- the reference plugins

def shape(result: dict[str, Any]) -> dict[str, Any]:
    """A result with what differs between runs (MACs, veth names, sandbox paths) blanked out."""
    out = copy.deepcopy(result)
    if not out.get("dns"):
        out.pop("dns", None)
    for interface in out["interfaces"]:
        interface["mac"] = "MAC" if MAC.match(interface.get("mac", "")) else interface.get("mac")
        if re.fullmatch(r"veth[0-9a-f]{8,11}", interface["name"]):
            interface["name"] = "VETH"
        if "sandbox" in interface:
            interface["sandbox"] = "SANDBOX"
    return out


def test_the_reference_bridge_and_host_local_agree(shared_pods, new_names, tmp_path: Path) -> None:
    if not (REFERENCE_BRIDGE.exists() and (CNI_DIR / "host-local").exists()):
        pytest.skip(f"{CNI_DIR}/bridge and host-local are not installed (Debian containernetworking-plugins)")
    ours, our_results = shared_pods
    name, *pods = new_names(3)
    namespaces.create([name, *pods])  # the reference makes its own cni0
    reference = Node(name, pods, tmp_path / "reference-ipam")
    conf = {**reference.conf(), "type": "bridge"}
    reference_results = [add(reference, pod, conf, plugin=[str(REFERENCE_BRIDGE)]) for pod in pods]

    assert [shape(r) for r in reference_results] == [shape(r) for r in our_results]
    for result, pod in zip(reference_results, pods):
        assert result["interfaces"][2]["sandbox"] == netns_path(pod)
    assert tcp_exchange(pods[0], pods[1], pod_ip(reference_results[1])) == pod_ip(reference_results[0])
    assert tcp_exchange(ours.pods[0], ours.pods[1], pod_ip(our_results[1])) == pod_ip(our_results[0])
    for pod in pods:
        for _ in range(2):
            assert run([str(REFERENCE_BRIDGE)], "DEL", conf, node=name, container_id=pod,
                       netns=netns_path(pod))[:2] == (0, None)
    assert reservations(reference.data_dir) == []
