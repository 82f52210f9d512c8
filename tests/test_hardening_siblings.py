"""Siblings of issue 10's findings: every door bad input comes through (CLI numbers, impairment
settings, scenario files, pytest markers) refuses it in one line, and nothing waits forever on
what cannot happen (`netemu wait` and scenarios on a stuck pod, `logs -f` on a deleted pod).
The CLI runs as a real subprocess, in its own state directory."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from netemu.errors import InvalidError, ScenarioError

NETEMU = str(Path(sys.executable).parent / "netemu")
PYTEST = str(Path(sys.executable).parent / "pytest")

LOGGER = """\
apiVersion: v1
kind: Pod
metadata: {name: logger}
spec:
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "echo started; exec sleep 3600"]
"""

UNKNOWN_IMAGE = """\
apiVersion: v1
kind: Pod
metadata: {name: stuck}
spec:
  containers: [{name: main, image: nosuch/image}]
"""


def netemu(env, *args, timeout=90):
    return subprocess.run([NETEMU, *args], env=env, capture_output=True, text=True, timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess, *parts: str) -> None:
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    for part in parts:
        assert part in r.stderr, r.stderr


def wait_exit(proc: subprocess.Popen, timeout: float) -> int | None:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


@pytest.fixture
def env(tmp_path):
    clean = {k: v for k, v in os.environ.items() if k != "NETEMU_CLUSTER"}
    return {**clean, "NETEMU_STATE_DIR": str(tmp_path / "state")}


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """One detached cluster with a pod that logs and sleeps."""
    root = tmp_path_factory.mktemp("siblings")
    env = {**{k: v for k, v in os.environ.items() if k != "NETEMU_CLUSTER"},
           "NETEMU_STATE_DIR": str(root / "state"), "NETEMU_CLUSTER": "siblings"}
    (root / "logger.yaml").write_text(LOGGER)
    r = netemu(env, "up", "--detach", "--dns-upstream", "none", "-f", str(root / "logger.yaml"))
    assert r.returncode == 0, r.stderr
    pid = int(re.search(r"pid (\d+)\)", r.stdout).group(1))
    yield env, root
    netemu(env, "down")
    deadline = time.monotonic() + 15
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------- numbers on the command line


@pytest.mark.parametrize("args", [
    ["wait", "--timeout", "-1"], ["wait", "--timeout", "nan"], ["wait", "--timeout", "inf"],
    ["up", "--timeout", "-1"], ["up", "--detach", "--timeout", "nan"],
], ids=lambda a: " ".join(a))
def test_a_timeout_out_of_range_is_refused_before_anything_starts(env, tmp_path, args):
    r = netemu(env, *args)
    one_line_error(r, "--timeout")
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").iterdir())


def test_a_negative_capture_count_is_refused(env):
    one_line_error(netemu(env, "capture", "--pod", "p", "-w", "x.pcapng", "--count", "-1"), "--count -1")


@pytest.mark.parametrize("setting, problem", [
    ({"rate": "0"}, "rate '0': must be at least 1bit"),
    ({"rate": "0.0001bit"}, "rate '0.0001bit': must be at least 1bit"),
    ({"delay": "99999999999999s"}, "delay '99999999999999s': must be at most 3600s"),
    ({"jitter": "3600001ms"}, "jitter '3600001ms': must be at most 3600s"),
])
def test_impairment_settings_out_of_range_are_refused_by_proxy_and_wire(setting, problem):
    from netemu.fabric.netns.wire import LinkImpairment
    from netemu.proxy import Impairment
    for kind in (Impairment, LinkImpairment):
        with pytest.raises(InvalidError, match=re.escape(problem)):
            kind.parse(**setting)


def test_impairment_settings_at_their_bounds_are_accepted():
    from netemu.proxy import Impairment
    impairment = Impairment.parse(delay="3600s", jitter="0", rate="1bit")
    assert impairment.delay_ms == 3_600_000 and impairment.rate_kbit == 0.001


def test_impair_rate_0_is_refused_not_taken_as_clear(running):
    env, _ = running
    r = netemu(env, "impair", "--node", "node-1", "--rate", "0")
    one_line_error(r, 'spec.rate: Invalid value: "0"')
    assert "cleared" not in r.stdout


# ---------------------------------------------------------------------------- waits that cannot end well


def test_wait_fails_fast_naming_a_pod_that_will_never_be_ready(running, tmp_path):
    env, _ = running
    (tmp_path / "stuck.yaml").write_text(UNKNOWN_IMAGE)
    assert netemu(env, "apply", "-f", str(tmp_path / "stuck.yaml")).returncode == 0
    try:
        r = netemu(env, "wait", "--timeout", "45")
        assert r.returncode == 1, r.stderr
        assert "will not become ready" in r.stderr and "timed out" not in r.stderr, r.stderr
        assert "pod default/stuck: container main: ErrImagePull" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    finally:
        netemu(env, "delete", "pod", "stuck")


def test_logs_follow_ends_when_the_pod_is_deleted(running, tmp_path):
    env, root = running
    (tmp_path / "short.yaml").write_text(LOGGER.replace("name: logger", "name: short-lived"))
    assert netemu(env, "apply", "-f", str(tmp_path / "short.yaml")).returncode == 0
    assert netemu(env, "wait", "--timeout", "30").returncode == 0
    with subprocess.Popen([NETEMU, "logs", "-f", "short-lived"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as follower:
        try:
            assert follower.stdout.readline() == "started\n"
            assert netemu(env, "delete", "pod", "short-lived").returncode == 0
            assert wait_exit(follower, 30) == 0, "logs -f kept following a deleted pod"
        finally:
            if follower.poll() is None:
                follower.kill()


# ---------------------------------------------------------------------------- scenario files


def scenario(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("value, problem", [
    (".inf", "must be at most 24h"), (".nan", "must be a number of seconds"), ("1.0e+300", "must be at most 24h"),
    ("99999999999999999999h", "must be at most 24h"), ("25h", "must be at most 24h"),
])
def test_a_scenario_duration_out_of_range_is_refused_at_load(tmp_path, value, problem):
    from netemu.scenario.model import load_scenario
    path = scenario(tmp_path, f"name: sleepy\nsteps:\n  - sleep: {value}\n")
    with pytest.raises(ScenarioError, match=re.escape(problem)) as info:
        load_scenario(path)
    assert "steps[0].sleep" in str(info.value)


def test_a_scenario_repeat_out_of_range_is_refused_at_load(tmp_path):
    from netemu.scenario.model import load_scenario
    path = scenario(tmp_path, """\
        name: many
        steps:
          - curl: {url: "http://127.0.0.1:1/", repeat: 1000000000000}
            expect: {outcome: refused}
        """)
    with pytest.raises(ScenarioError, match=r"steps\[0\]\.curl\.repeat: must be at most 100000"):
        load_scenario(path)


def test_a_scenario_nested_absurdly_deep_is_one_line_naming_the_file(env, tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("name: deep\nsteps:\n  - sleep: " + "[" * 20000 + "]" * 20000 + "\n")
    one_line_error(netemu(env, "run", str(path)), str(path), "nest more than 100 levels deep")


def test_a_scenario_with_a_stuck_pod_fails_at_once_naming_it(env, tmp_path):
    path = scenario(tmp_path, """\
        name: stuck
        manifests:
          - |
            apiVersion: v1
            kind: Pod
            metadata: {name: stuck}
            spec:
              containers: [{name: main, image: nosuch/image}]
        steps:
          - sleep: 1ms
        """)
    r = netemu(env, "run", str(path))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAILED at manifests" in r.stdout, r.stdout
    assert "ErrImagePull" in r.stdout and "timed out" not in r.stdout, r.stdout


# ---------------------------------------------------------------------------- pytest markers


def test_bad_marker_keywords_fail_their_test_in_one_line_without_a_traceback(tmp_path, env):
    (tmp_path / "test_marked.py").write_text(textwrap.dedent("""\
        import pytest

        @pytest.mark.netemu(nodez=3)
        def test_unknown_keyword(netemu_cluster):
            pass

        @pytest.mark.netemu(nodes="ab")
        def test_nodes_as_a_string(netemu_cluster):
            pass

        @pytest.mark.netemu(manifests=5)
        def test_manifests_as_a_number(netemu_cluster):
            pass

        @pytest.mark.netemu(timeout=-1)
        def test_negative_timeout(netemu_cluster):
            pass
        """))
    r = subprocess.run([PYTEST, "-q", "-p", "no:cacheprovider", "test_marked.py"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    out = r.stdout
    assert "4 errors" in out, out
    assert "TypeError" not in out and "Traceback" not in out, out
    for expected in ("unknown keyword nodez=", "nodes='ab': expected a number of nodes or a list",
                     "manifests=5: expected a path", "timeout=-1: expected a number of seconds"):
        assert expected in out, out
