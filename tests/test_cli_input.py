"""What a user types and feeds the netemu command: cluster names, manifests that are not UTF-8
or nest absurdly deep, kubectl's forms of `exec`, and `run --keep`. Every test runs the real
command as a subprocess, in its own state directory."""
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

from netemu.errors import ManifestErrors

NETEMU = str(Path(sys.executable).parent / "netemu")

TWO_CONTAINERS = """\
apiVersion: v1
kind: Pod
metadata: {name: two}
spec:
  containers:
  - {name: a, image: busybox, env: [{name: WHO, value: a}]}
  - {name: b, image: busybox, env: [{name: WHO, value: b}]}
"""


def netemu(env, *args, input=None, timeout=60, cwd=None):
    return subprocess.run([NETEMU, *args], env=env, capture_output=True, text=True, input=input,
                          timeout=timeout, cwd=cwd)


def one_line_error(r: subprocess.CompletedProcess, *parts: str) -> None:
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    for part in parts:
        assert part in r.stderr, r.stderr


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*")) if path.exists() else []


@pytest.fixture
def env(tmp_path):
    clean = {k: v for k, v in os.environ.items() if k != "NETEMU_CLUSTER"}
    return {**clean, "NETEMU_STATE_DIR": str(tmp_path / "state")}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One cluster with the two-container pod, for tests that only read from it."""
    root = tmp_path_factory.mktemp("input")
    env = {**{k: v for k, v in os.environ.items() if k != "NETEMU_CLUSTER"},
           "NETEMU_STATE_DIR": str(root / "state"), "NETEMU_CLUSTER": "input"}
    (root / "two.yaml").write_text(TWO_CONTAINERS)
    r = netemu(env, "up", "--detach", "--dns-upstream", "none", "-f", str(root / "two.yaml"))
    assert r.returncode == 0, r.stderr
    pid = int(re.search(r"pid (\d+)\)", r.stdout).group(1))
    yield env, root
    netemu(env, "down")
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------- --name


@pytest.mark.parametrize("name", ["../escape", "Bad", "", "a/b", "x" * 33])
@pytest.mark.parametrize("detach", [False, True], ids=["foreground", "detach"])
def test_a_bad_name_for_up_is_refused_before_any_file_is_touched(env, tmp_path, name, detach):
    work = tmp_path / "work"
    work.mkdir()
    r = netemu(env, "up", *(["--detach"] if detach else []), "--name", name, cwd=work, timeout=30)
    one_line_error(r, f"--name {name!r}: must be a DNS-1123 label")
    assert files_under(tmp_path) == [work]


@pytest.mark.parametrize("argv", [
    ["get", "pods"], ["describe", "pod", "x"], ["apply", "-f", "x.yaml"], ["delete", "pod", "x"],
    ["exec", "x", "--", "true"], ["logs", "x"], ["scale", "deploy/x", "--replicas", "1"], ["wait"],
    ["impair", "--service", "x", "--delay", "1ms"], ["partition", "node-1"], ["heal"], ["down"],
    ["capture", "--pod", "x", "-w", "x.pcapng"],
], ids=lambda argv: argv[0])
def test_every_command_refuses_a_bad_name(env, tmp_path, argv):
    r = netemu(env, argv[0], "--name", "../escape", *argv[1:], cwd=tmp_path)
    one_line_error(r, "--name '../escape': must be a DNS-1123 label")
    r = netemu({**env, "NETEMU_CLUSTER": "../escape"}, *argv, cwd=tmp_path)
    one_line_error(r, "$NETEMU_CLUSTER '../escape': must be a DNS-1123 label")
    assert files_under(tmp_path) == []


# ---------------------------------------------------------------------------- manifests


def test_a_manifest_that_is_not_utf8_is_named(shared):
    env, root = shared
    latin1 = root / "latin1.yaml"
    latin1.write_bytes(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: caf\xe9\n")
    one_line_error(netemu(env, "apply", "-f", str(latin1)), f"{latin1}: line 4, column 12: not UTF-8 text")
    one_line_error(netemu(env, "apply", "-f", str(root)), f"{latin1}: line 4, column 12: not UTF-8 text")
    r = subprocess.run([NETEMU, "apply", "-f", "-"], env=env, capture_output=True, input=latin1.read_bytes(),
                       timeout=60)
    assert r.returncode == 1 and r.stderr.decode().startswith("error: <stdin>: line 4, column 12: not UTF-8 text")
    latin1.unlink()
    assert netemu(env, "get", "pods", "two").returncode == 0


@pytest.mark.parametrize("suffix, text", [
    (".yaml", "[" * 20000 + "]" * 20000),
    (".json", '{"a":' * 20000 + "1" + "}" * 20000),
    (".json", '{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "deep"}, "spec": '
              + "[" * 500 + "]" * 500 + "}"),
    (".yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: deep}\nspec: " + "{a: " * 500 + "1" + "}" * 500),
], ids=["yaml-flow-20000", "json-20000", "json-500-inside-an-object", "yaml-500-inside-an-object"])
def test_absurd_nesting_is_one_line_and_the_cluster_is_unharmed(shared, suffix, text):
    env, root = shared
    path = root / f"deep{suffix}"
    path.write_text(text)
    try:
        r = netemu(env, "apply", "-f", str(path))
    finally:
        path.unlink()
    one_line_error(r, str(path), "exceeded maximum nesting depth")
    assert netemu(env, "get", "pods", "two").returncode == 0


async def test_absurd_nesting_through_the_python_api(cluster, tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"a":' * 20000 + "1" + "}" * 20000)
    with pytest.raises(ManifestErrors) as caught:
        await cluster.apply(path)
    assert str(caught.value) == f"{path}[doc 1] object: exceeded maximum nesting depth of 100 (lists and " \
                                "mappings inside each other)"
    deep: object = 1
    for _ in range(20000):
        deep = {"a": deep}
    with pytest.raises(ManifestErrors, match=r"^<dict>\[doc 1\] object: exceeded maximum nesting depth of 100"):
        await cluster.apply(deep)
    with pytest.raises(ManifestErrors, match="not UTF-8 text"):
        (tmp_path / "latin1.yaml").write_bytes(b"kind: caf\xe9\n")
        await cluster.apply(tmp_path / "latin1.yaml")
    assert await cluster.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: fine}\n") == \
        ["namespace/fine created"]


# ---------------------------------------------------------------------------- exec


@pytest.mark.parametrize("form", [
    ["two", "-c", "b", "--"],
    ["two", "-it", "-c", "b", "--"],
    ["-it", "two", "-c", "b", "--"],
    ["-i", "-t", "two", "--container=b", "--"],
    ["--stdin", "--tty", "--container", "b", "two", "--"],
    ["-c", "b", "two", "--"],
], ids=["pod-c", "pod-it-c", "it-pod-c", "i-t-container=", "long-flags-first", "c-first"])
def test_exec_takes_kubectl_forms(shared, form):
    env, _ = shared
    r = netemu(env, "exec", *form, "printenv", "WHO")
    assert (r.returncode, r.stdout) == (0, "b\n"), r.stderr


def test_exec_passes_everything_after_the_dashes_to_the_command(shared):
    env, _ = shared
    r = netemu(env, "exec", "two", "-c", "a", "--", "sh", "-c", 'echo "$WHO" "$@"', "sh", "-c", "b", "--", "-it")
    assert (r.returncode, r.stdout) == (0, "a -c b -- -it\n"), r.stderr


@pytest.mark.parametrize("program, refusal", [
    ("nosuch", 'exec: "nosuch": executable file not found in $PATH'),
    ("/nosuch/prog", 'exec: "/nosuch/prog": stat /nosuch/prog: no such file or directory'),
    ("{root}/plain.txt", 'exec: "{root}/plain.txt": permission denied'),
    ("{root}", 'exec: "{root}": is a directory'),
], ids=["not-in-path", "no-such-file", "not-executable", "directory"])
def test_exec_of_a_program_that_cannot_start_is_reported_as_kubectl_does(shared, program, refusal):
    env, root = shared
    (root / "plain.txt").write_text("echo not a program\n")
    (root / "plain.txt").chmod(0o644)
    program, refusal = program.format(root=root), refusal.format(root=root)
    r = netemu(env, "exec", "two", "-c", "a", "--", program, "arg")
    one_line_error(r, "error: Internal error occurred: error executing command in container: failed to exec in "
                      'container: failed to start exec "',
                   f"OCI runtime exec failed: exec failed: unable to start container process: {refusal}: unknown")
    assert "resolv.conf" not in r.stderr and r.stdout == ""


def test_exec_still_takes_a_command_without_dashes(shared):
    env, _ = shared
    r = netemu(env, "exec", "two", "-c", "a", "printenv", "WHO")
    assert (r.returncode, r.stdout) == (0, "a\n"), r.stderr
    assert r.stderr == "netemu: warning: exec POD CMD is deprecated in kubectl; use exec POD -- CMD\n"


# ---------------------------------------------------------------------------- run --keep

FAILING = """\
name: kept
steps:
  - apply:
      apiVersion: v1
      kind: Pod
      metadata: {name: shell}
      spec: {containers: [{name: shell, image: busybox}]}
  - wait: {for: pods-ready}
  - exec: {pod: shell, command: "exit 2"}
"""


@pytest.mark.parametrize("stop", ["netemu down", "SIGTERM", "SIGINT"])
def test_run_keep_stops_the_kept_cluster_cleanly(env, tmp_path, stop):
    (tmp_path / "fail.yaml").write_text(textwrap.dedent(FAILING))
    (tmp_path / "next.yaml").write_text("name: next\nsteps:\n  - sleep: 1ms\n")
    with subprocess.Popen([NETEMU, "run", "--keep", "fail.yaml", "next.yaml"], env=env, cwd=tmp_path, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            seen = ""
            for line in proc.stdout:
                seen += line
                if "Ctrl-C stops it" in line:
                    break
            name = re.search(r'cluster "(kept-[0-9a-f]+)"', seen).group(1)
            if stop == "netemu down":
                down = netemu(env, "down", "--name", name)
                assert (down.returncode, down.stdout) == (0, f'cluster "{name}" stopped\n'), down.stderr
            else:  # `kill` (or a CI runner's timeout) and Ctrl-C stop the cluster and the run
                proc.send_signal(getattr(signal, stop))
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 1
    assert err == "", err
    if stop == "netemu down":
        assert "1 passed, 1 failed in" in out
    else:
        assert "interrupted: the remaining scenarios did not run" in out and "next  (" not in out
    assert files_under(tmp_path / "state") == []
