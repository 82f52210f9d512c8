"""`netemu run`: progress and summary output, exit codes, JUnit XML, -k, --keep, and the whole
scenario library (every scenario passes or is skipped with its reason)."""
from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from netemu import cli
from netemu.scenario import run_files, runner

REPO = Path(__file__).resolve().parent.parent

PASSING = """
    name: passing
    manifests:
      - |
        apiVersion: v1
        kind: Pod
        metadata: {name: shell}
        spec: {containers: [{name: shell, image: busybox}]}
    steps:
      - name: say hello
        exec: {pod: shell, command: "echo hello"}
        expect: {stdout: "hello\\n"}
"""
FAILING = """
    name: failing
    steps:
      - expect: {object: svc/kubernetes, field: spec.type, equals: ClusterIP}
      - name: echo and fail
        apply:
          apiVersion: v1
          kind: Pod
          metadata: {name: shell}
          spec: {containers: [{name: shell, image: busybox}]}
      - wait: {for: pods-ready}
      - exec: {pod: shell, command: "echo some output; exit 2"}
      - name: never runs
        sleep: 1ms
"""
SKIPPED = """
    name: skipped
    requires: [partition]
    steps:
      - partition: [[node-1], [node-2]]
"""


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.setenv("NETEMU_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    # what a cluster offers is its own business; these tests fix it so "skipped" stays skipped
    monkeypatch.setattr(runner, "cluster_capabilities", lambda cluster: frozenset({"loopback"}))
    for name, text in (("a-passing.yaml", PASSING), ("b-failing.yaml", FAILING), ("c-skipped.yaml", SKIPPED)):
        Path(name).write_text(textwrap.dedent(text))
    return tmp_path


def normalized(text: str) -> str:
    """Durations as 0.00s (same width, so the table keeps its alignment)."""
    return re.sub(r"\d\.\d\ds", "0.00s", text)


def test_progress_summary_and_exit_status(files):
    out = io.StringIO()
    assert run_files(["."], out) == 1
    assert normalized(out.getvalue()) == textwrap.dedent("""\
        passing  (a-passing.yaml)
         ✓ apply manifests: pod/shell; all pods ready (0.00s)
         ✓ say hello (0.00s)

        failing  (b-failing.yaml)
         ✓ expect service/kubernetes spec.type equals "ClusterIP" (0.00s)
         ✓ echo and fail (0.00s)
         ✓ wait for all pods ready (0.00s)
         ✗ exec shell -- echo some output; exit 2 (0.00s)
             exit: expected 0, got 2
               | some output
               | (exit status 2)

        skipped  (c-skipped.yaml)
         – skipped: needs partition (network partitions between nodes, Cluster.partition and heal), which this \
cluster lacks

        SCENARIO  STEPS  TIME   RESULT
        passing   2/2    0.00s  passed
        failing   3/5    0.00s  FAILED at steps[3]
        skipped   -      0.00s  skipped (needs partition)
        1 passed, 1 failed, 1 skipped in 0.00s
        """)


@pytest.mark.parametrize("pattern, status", [("passing", 0), ("skip", 0), ("fail", 1), ("A-PASS", 0)])
def test_k_selects_by_name_or_file(files, pattern, status):
    out = io.StringIO()
    assert run_files(["."], out, pattern=pattern) == status
    assert out.getvalue().count("  (") == 1


def test_junit_xml(files):
    assert run_files(["."], io.StringIO(), junit="report.xml") == 1
    suites = ET.parse("report.xml").getroot()
    assert (suites.tag, suites.get("tests"), suites.get("failures"), suites.get("skipped")) == (
        "testsuites", "3", "1", "1")
    cases = {case.get("name"): case for case in suites.iter("testcase")}
    assert [c.get("classname") for c in cases.values()] == ["a-passing", "b-failing", "c-skipped"]
    assert cases["passing"].find("failure") is None and cases["passing"].find("skipped") is None
    failure = cases["failing"].find("failure")
    assert failure.get("message") == "steps[3] exec shell -- echo some output; exit 2: exit: expected 0, got 2"
    assert failure.text == "some output\n(exit status 2)"
    assert "PASS steps[1] echo and fail" in cases["failing"].find("system-out").text
    assert cases["skipped"].find("skipped").get("message").startswith("needs partition")


def test_the_cli_runs_scenarios(files, capsys):
    assert cli.main(["run", "a-passing.yaml", "--junit", "r.xml"]) == 0
    out = capsys.readouterr().out
    assert " ✓ say hello (" in out and "1 passed in" in out and "JUnit XML written to r.xml" in out


@pytest.mark.parametrize("argv, message", [
    (["run", "nowhere.yaml"], 'error: the path "nowhere.yaml" does not exist\n'),
    (["run", "bad/bad.yaml"], 'error: bad/bad.yaml: steps[0].sleeep: unknown step kind (did you mean "sleep"?); '
                              "known: "),
    (["run", ".", "-k", "zzz"], 'error: no scenario matches -k "zzz" (names: '),
], ids=["missing", "invalid", "no-match"])
def test_the_cli_refuses_before_running_anything(files, capsys, argv, message):
    Path("bad").mkdir()
    Path("bad/bad.yaml").write_text("steps:\n  - sleeep: 1s\n")
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(message) and captured.out == ""


def _netemu(*argv: str) -> list[str]:
    return [sys.executable, "-m", "netemu.cli", *argv]


def _read_until(proc: subprocess.Popen, marker: str) -> str:
    seen = ""
    for line in proc.stdout:
        seen += line
        if marker in line:
            return seen
    raise AssertionError(f"the run ended before {marker!r}:\n{seen}")


@pytest.fixture
def kept_env(files):
    env = dict(os.environ, NETEMU_STATE_DIR=str(files / "state"))
    Path("fail.yaml").write_text(textwrap.dedent(FAILING).replace("name: failing", "name: kept"))
    return env


def test_keep_leaves_a_failed_cluster_up_until_netemu_down(kept_env):
    with subprocess.Popen(_netemu("run", "--keep", "fail.yaml"), env=kept_env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        try:
            seen = _read_until(proc, "is kept for inspection")
            name = re.search(r'cluster "(kept-[0-9a-f]+)"', seen).group(1)
            pods = subprocess.run(_netemu("get", "pods", "--name", name), env=kept_env, capture_output=True,
                                  text=True, timeout=30)
            assert re.search(r"^shell +1/1 +Running", pods.stdout, re.MULTILINE), pods.stdout + pods.stderr
            down = subprocess.run(_netemu("down", "--name", name), env=kept_env, capture_output=True, text=True,
                                  timeout=30)
            assert down.returncode == 0, down.stderr
            rest = proc.stdout.read()
            assert proc.wait(timeout=30) == 1
        finally:
            if proc.poll() is None:
                proc.kill()
    assert re.search(r"^kept +3/5 .* FAILED at steps\[3\]$", rest, re.MULTILINE) and "1 failed in" in rest


def test_ctrl_c_on_a_kept_cluster_stops_the_run(kept_env):
    Path("z-after.yaml").write_text(textwrap.dedent(PASSING))
    with subprocess.Popen(_netemu("run", "--keep", "fail.yaml", "z-after.yaml"), env=kept_env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        try:
            _read_until(proc, "Ctrl-C stops it")
            proc.send_signal(signal.SIGINT)
            rest = proc.stdout.read()
            assert proc.wait(timeout=30) == 1
        finally:
            if proc.poll() is None:
                proc.kill()
    assert "interrupted: the remaining scenarios did not run" in rest and "passing" not in rest
    # the kept cluster was stopped and its state removed
    assert [p.name for p in Path("state").iterdir() if not p.name.startswith(".")] == []


def test_the_scenario_library_passes_or_skips(tmp_path, monkeypatch, capsys):
    """`netemu run scenarios/` (what `make run` will do): nothing fails; skips say why."""
    monkeypatch.setenv("NETEMU_STATE_DIR", str(tmp_path / "state"))
    status = cli.main(["run", str(REPO / "scenarios"), "--junit", str(tmp_path / "library.xml")])
    out = capsys.readouterr().out
    assert status == 0, out
    suites = ET.parse(tmp_path / "library.xml").getroot()
    assert suites.get("failures") == "0" and suites.get("errors") == "0"
    for case in suites.iter("testcase"):
        skipped = case.find("skipped")
        assert skipped is None or skipped.get("message").startswith("needs ") or "not available" in \
            skipped.get("message"), ET.tostring(case, encoding="unicode")


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="the netns backend needs root")
def test_the_scenario_library_passes_on_the_netns_backend(tmp_path, monkeypatch, capsys):
    """`netemu run --backend netns scenarios/`: every topic on the packet-level backend too; only
    what exists on loopback alone (a host client's own 127.x address inside the cluster) skips."""
    monkeypatch.setenv("NETEMU_STATE_DIR", str(tmp_path / "state"))
    status = cli.main(["run", "--backend", "netns", str(REPO / "scenarios"), "--junit", str(tmp_path / "netns.xml")])
    out = capsys.readouterr().out
    assert status == 0, out
    suites = ET.parse(tmp_path / "netns.xml").getroot()
    assert suites.get("failures") == "0" and suites.get("errors") == "0"
    skipped = [case.get("name") for case in suites.iter("testcase") if case.find("skipped") is not None]
    assert skipped == ["LoadBalancer with externalTrafficPolicy Local, a client on the host"], out
