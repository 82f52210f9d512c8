"""The chaos commands of the CLI against a running netns cluster: impair, partition, heal.

One two-node cluster runs as its own process for the module (``netemu up --backend netns
--detach``, a tmp ``NETEMU_STATE_DIR``, a unique name); every command goes through the real CLI
in a subprocess (cwd is the tmp dir, so the repo's ``dns/`` folder never shadows dnspython) and
reaches the cluster over its control socket. Each command that changes the wire prints what it
set; each wrong one fails with exit status 1 and one line on stderr that names the problem,
never a traceback. No test depends on another or on their order: before each one the cluster is
brought up if a test stopped it (``netemu down`` has its own test) and its wire is reset to whole
and unimpaired. When the module ends the fixture stops the cluster (down, else SIGKILL by
recorded pid and start time, then gc).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from netemu.cni.bridge import NETNS_PREFIX
from test_netns_helpers import netns_ready, own_network_unchanged, poll  # noqa: F401 - fixtures

from netemu import cli_api
from netemu.fabric import routes_outside_loopback
from netemu.fabric.netns import namespaces
from netemu.fabric.netns.namespaces import collect_cluster_garbage
from netemu.kubeapi.client import ApiClient
from netemu.state import gc_all, list_clusters, proc_start_time

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(bool(routes_outside_loopback()),
                       reason="the netns backend runs only in a namespace without outside routes (make test)"),
]

CLI_TIMEOUT = 120  # seconds: a guard against a hung command, not a performance bound


@dataclass
class CliCluster:
    """The cluster this module started: its name and the environment the CLI runs with."""

    name: str
    workdir: Path
    state_root: Path
    env: dict[str, str]
    pid: int = 0
    start_time: int | None = None

    def netemu(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "netemu", *args, "--name", self.name], check=False,
                              env=self.env, cwd=self.workdir, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=CLI_TIMEOUT)

    def ok(self, *args: str) -> str:
        result = self.netemu(*args)
        assert result.returncode == 0, \
            f"netemu {' '.join(args)}: exit {result.returncode}\n{result.stdout}{result.stderr}"
        assert result.stderr == "", result.stderr
        return result.stdout

    @property
    def running(self) -> bool:
        return self.start_time is not None and proc_start_time(self.pid) == self.start_time

    def namespaces(self) -> list[str]:
        return sorted(p.name for p in namespaces.NETNS_RUN_DIR.glob(f"{NETNS_PREFIX}{self.name}-*"))

    def up(self) -> None:
        self.ok("up", "--backend", "netns", "--nodes", "2", "--dns-upstream", "none", "--detach", "--timeout", "60")
        info = json.loads((self.state_root / self.name / "state.json").read_text())
        self.pid, self.start_time = info["pid"], info["start_time"]

    def reset_wire(self) -> None:
        """Every node hears every other, no link or node impaired: what each test starts from (the
        Impairment and Partition objects deleted through the API directly, which is quicker than
        CLI processes)."""
        (cluster,) = [c for c in list_clusters(self.state_root) if c.name == self.name]
        api = ApiClient.for_cluster(cluster.name, cluster.directory)
        for obj in api.list("/apis/netemu.dev/v1/impairments"):
            api.delete(f"/apis/netemu.dev/v1/namespaces/{obj['metadata']['namespace']}/impairments/"
                       f"{obj['metadata']['name']}")
        for obj in api.list("/apis/netemu.dev/v1/partitions"):
            api.delete(f"/apis/netemu.dev/v1/partitions/{obj['metadata']['name']}")
        assert not api.list("/apis/netemu.dev/v1/impairments")  # answered once the deletions are in force
        described = cli_api.describe(api, "node", ["node-1", "node-2"], None)
        assert "Link impairments" not in described and "Partition" not in described, described

    def stop(self) -> None:
        """``netemu down``, else SIGKILL by recorded pid and start time; then collect what is left."""
        if self.running:
            self.netemu("down")
        if self.running:
            os.kill(self.pid, signal.SIGKILL)
            poll(lambda: not self.running, timeout=10)
        gc_all(self.state_root, collect_cluster_garbage)
        namespaces.collect(self.namespaces())


@pytest.fixture(scope="module")
def shared_cluster(netns_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliCluster]:  # noqa: F811
    workdir = tmp_path_factory.mktemp("cli-netns")
    env = {k: v for k, v in os.environ.items() if k != "NETEMU_CLUSTER"}
    env["NETEMU_STATE_DIR"] = str(workdir / "state")
    cluster = CliCluster(name=f"cli-{secrets.token_hex(4)}", workdir=workdir, state_root=workdir / "state", env=env)
    try:
        yield cluster
    finally:
        cluster.stop()  # only what this module started


@pytest.fixture
def cli_cluster(shared_cluster: CliCluster) -> CliCluster:
    """The module's cluster, running, with a whole and unimpaired wire, whatever ran before."""
    if not shared_cluster.running:
        shared_cluster.up()
    shared_cluster.reset_wire()
    return shared_cluster


CHANGES = [
    pytest.param(["impair", "--link", "node-1", "node-2", "--delay", "20ms"],
                 "link node-1<->node-2 impaired: delay 20ms", id="link-delay"),
    pytest.param(["impair", "--link", "node-2", "node-1", "--delay", "50ms", "--jitter", "2ms", "--loss", "10%",
                  "--rate", "1mbit", "--duplicate", "1%"],
                 "link node-2<->node-1 impaired: delay 50ms jitter 2ms loss 10% rate 1000kbit duplicate 1%",
                 id="link-every-setting"),
    pytest.param(["impair", "--link", "node-1", "node-2", "--clear"],
                 "link node-1<->node-2: impairment cleared", id="link-clear"),
    pytest.param(["impair", "--node", "node-2", "--loss", "5%"], "node/node-2 impaired: loss 5%", id="node-loss"),
    pytest.param(["impair", "--node", "node-2", "--clear"], "node/node-2: impairment cleared", id="node-clear"),
    pytest.param(["heal"], "healed: every node hears every other", id="heal-when-whole"),
]


@pytest.mark.parametrize(("args", "printed"), CHANGES)
def test_a_change_prints_what_it_set(cli_cluster: CliCluster, args: list[str], printed: str) -> None:
    assert cli_cluster.ok(*args) == printed + "\n"


def _groups(printed: str) -> set[frozenset[str]]:
    """``partitioned: node-2 | node-1,node-3`` → the groups, in no order."""
    label, _, groups = printed.strip().partition(": ")
    assert label == "partitioned", printed
    return {frozenset(group.split(",")) for group in groups.split(" | ")}


@pytest.mark.parametrize("groups", [
    pytest.param(["node-1"], id="unnamed-nodes-form-a-group"),
    pytest.param(["node-1", "node-2"], id="two-groups"),
    pytest.param(["node-2", "node-1"], id="two-groups-other-order"),
])
def test_partition_prints_the_groups_and_heal_undoes_it(cli_cluster: CliCluster, groups: list[str]) -> None:
    assert _groups(cli_cluster.ok("partition", *groups)) == {frozenset({"node-1"}), frozenset({"node-2"})}
    assert cli_cluster.ok("heal") == "healed: every node hears every other\n"


MISTAKES = [
    pytest.param(["impair", "--link", "node-1", "node-1", "--delay", "1ms"],
                 ['spec.target.link: Invalid value: ["node-1", "node-1"]: must name two different nodes'],
                 id="link-to-itself"),
    pytest.param(["impair", "--link", "node-1", "nope", "--delay", "1ms"], ['spec.target.link[1]: Not found: "nope"'],
                 id="link-unknown-node"),
    pytest.param(["impair", "--node", "nope", "--delay", "1ms"], ['spec.target.node: Not found: "nope"'],
                 id="node-unknown"),
    pytest.param(["impair", "--service", "kube-system/kube-dns", "--duplicate", "1%"],
                 ["spec.duplicate: Forbidden: duplicate acts on frames on the netns backend's wire"],
                 id="service-duplicate"),
    pytest.param(["impair", "--link", "node-1", "node-2", "--reset", "5%"],
                 ["spec.reset: Forbidden: reset acts on new TCP connections at the service proxy"], id="link-reset"),
    pytest.param(["impair", "--link", "node-1", "node-2", "--delay", "soon"], ['spec.delay: Invalid value: "soon"'],
                 id="bad-delay"),
    pytest.param(["partition", "nope"], ['spec.groups[0].nodes[0]: Not found: "nope"'], id="partition-unknown-node"),
    pytest.param(["partition", "node-1", "node-1,node-2"],
                 ['spec.groups[1].nodes[0]: Duplicate value: "node-1": already in spec.groups[0]'],
                 id="partition-node-twice"),
]


@pytest.mark.parametrize(("args", "named"), MISTAKES)
def test_a_mistake_is_one_line_naming_it(cli_cluster: CliCluster, args: list[str], named: list[str]) -> None:
    result = cli_cluster.netemu(*args)
    lines = result.stderr.splitlines()
    assert (result.returncode, result.stdout, len(lines)) == (1, "", 1), result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    for words in named:
        assert words in lines[0], lines[0]


def test_the_cluster_still_works_after_the_mistakes(cli_cluster: CliCluster) -> None:
    assert cli_cluster.ok("impair", "--link", "node-1", "node-2", "--delay", "1ms") == \
        "link node-1<->node-2 impaired: delay 1ms\n"
    assert cli_cluster.ok("get", "nodes").count(" Ready ") == 2


def test_describe_node_shows_its_link_impairments_and_partition(cli_cluster: CliCluster) -> None:
    cli_cluster.ok("impair", "--link", "node-1", "node-2", "--delay", "20ms")
    cli_cluster.ok("partition", "node-1")
    described = cli_cluster.ok("describe", "node", "node-2")
    assert "Link impairments:\n  link node-1<->node-2  delay 20ms" in described
    assert "Partition:\n  hears only  node-2" in described
    cli_cluster.ok("heal")
    assert "Partition" not in cli_cluster.ok("describe", "node", "node-2")


def test_capture_writes_a_pcapng_file_for_the_time_asked(cli_cluster: CliCluster, tmp_path) -> None:
    out = tmp_path / "node-1.pcapng"
    result = cli_cluster.netemu("capture", "--node", "node-1", "--filter", "tcp", "-w", str(out), "--duration",
                                "300ms", "--summary")
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"capturing on node-1:eth0 to {out}\n"  # the progress line, apart from the data
    assert result.stdout.splitlines()[0].endswith(f"packets captured to {out}")
    assert out.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"  # a pcapng section header
    if shutil.which("tcpdump"):
        read = subprocess.run(["tcpdump", "-r", str(out)], capture_output=True, text=True, check=False)
        assert read.returncode == 0, read.stderr


@pytest.mark.parametrize(("args", "named"), [
    pytest.param(["--node", "node-1", "--filter", "tcp prot 80"], 'capture filter "tcp prot 80"', id="bad-filter"),
    pytest.param(["--pod", "nope"], 'pods "nope" not found', id="unknown-pod"),
    pytest.param(["--link", "node-1", "node-1"], "two different nodes", id="self-link"),
])
def test_capture_mistakes_are_one_line(cli_cluster: CliCluster, tmp_path, args: list[str], named: str) -> None:
    result = cli_cluster.netemu("capture", *args, "-w", str(tmp_path / "x.pcapng"), "--duration", "100ms")
    assert result.returncode == 1 and named in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_down_stops_the_cluster(cli_cluster: CliCluster) -> None:
    assert cli_cluster.namespaces(), "the cluster made its namespaces"
    assert cli_cluster.ok("down") == f'cluster "{cli_cluster.name}" stopped\n'
    assert not cli_cluster.running
    assert cli_cluster.namespaces() == []
