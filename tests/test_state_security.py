"""Nothing another user made is trusted: state directories, state files and the control socket.

The attacks are run the way another user would run them against root on a shared machine: in a
private mount namespace with its own tmpfs on /dev/shm (nothing touches the machine's), user
`nobody` prepares the default state root of uid 0 — or root's root holds something nobody
controls — with a cluster that looks alive (its state.json names nobody's own live process) and
a control socket that answers as a cluster would, its exec plan leaving a mark, and a dead
cluster whose ledger names one of root's processes. Root's real `netemu` then runs there with
the default state path. Each command must refuse with one line saying what is wrong, and nobody's
socket must receive nothing, no mark appear and root's process survive.
"""
from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from netemu.config import ClusterConfig, state_root
from netemu.control import MAX_LINE, ControlClient, ControlServer
from netemu.state import ClusterState, proc_start_time

NETEMU = str(Path(sys.executable).parent / "netemu")
NOBODY = pwd.getpwnam("nobody")
# The attacker's programs run on the interpreter itself, not through the venv (whose folder
# another user may not be allowed to traverse); they use the standard library only.
NOBODY_PYTHON = os.path.realpath(sys.executable)
SETPRIV_NOBODY = ["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups", "--"]
UID = os.geteuid()
ROOT = f"/dev/shm/netemu-{UID}"       # the default state root, as root's netemu sees it
PLANT = "/dev/shm/nobody"             # nobody's own directory
MARK = "/dev/shm/nobody-was-here"     # what nobody's exec plan creates when root runs it

pytestmark = pytest.mark.skipif(UID != 0, reason="acts as another user (nobody): needs root")

# Run as nobody: plant a cluster set in sys.argv[1] (mode sys.argv[2]): "netemu", alive (its pid
# is this process) with a control socket, and "old", dead, whose ledger names the process
# sys.argv[3]. Answer on the socket as a cluster would; on EOF of stdin print what was received.
ATTACKER = r'''
import json, os, selectors, socket, sys
base, mode, victim = sys.argv[1], int(sys.argv[2], 8), sys.argv[3]
def start_time(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[19])
os.makedirs(base, exist_ok=True)
os.chmod(base, mode)
me = os.getpid()
for name, start in (("netemu", start_time(me)), ("old", start_time(me) + 1)):
    os.mkdir(f"{base}/{name}", 0o755)
    with open(f"{base}/{name}/state.json", "w") as f:
        json.dump({"name": name, "pid": me, "start_time": start, "backend": "loopback", "ranges": [],
                   "nodes": ["node-1"], "dns_ip": "127.96.0.10"}, f)
with open(f"{base}/old/ledger", "w") as f:
    f.write(f"process {victim}\n")
listener = socket.socket(socket.AF_UNIX)
listener.bind(f"{base}/netemu/control.sock")
os.chmod(f"{base}/netemu/control.sock", 0o777)
listener.listen(16)
replies = {"exec_plan": {"prefix": [], "argv": ["touch", "/dev/shm/nobody-was-here"],
                         "env": {"PATH": "/usr/bin:/bin"}, "cwd": None, "warning": None},
           "get": "NAME READY\nweb 1/1\n", "down": "stopping"}
seen = {"connections": 0, "received": ""}
sel = selectors.DefaultSelector()
sel.register(sys.stdin, selectors.EVENT_READ)
sel.register(listener, selectors.EVENT_READ)
def receive(conn):
    data = conn.recv(1 << 16)
    if not data:
        sel.unregister(conn)
        conn.close()
        return False
    seen["received"] += data.decode(errors="replace")
    for line in data.splitlines():
        op = json.loads(line).get("op")
        conn.sendall(json.dumps({"ok": True, "result": replies.get(op, "ok")}).encode() + b"\n")
    return True
print("ready", flush=True)
running = True
while running:
    for key, _ in sel.select():
        if key.fileobj is sys.stdin:
            running = bool(sys.stdin.readline())
        elif key.fileobj is listener:
            conn, _ = listener.accept()
            seen["connections"] += 1
            sel.register(conn, selectors.EVENT_READ)
        else:
            receive(key.fileobj)
listener.setblocking(False)
while True:  # whatever is still queued
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        break
    seen["connections"] += 1
    sel.register(conn, selectors.EVENT_READ)
for key in list(sel.get_map().values()):
    if key.fileobj not in (sys.stdin, listener):
        key.fileobj.setblocking(False)
        while key.fileobj.fileno() >= 0:
            try:
                if not receive(key.fileobj):
                    break
            except BlockingIOError:
                break
print(json.dumps(seen), flush=True)
'''


@dataclass
class PrivateShm:
    """A mount namespace with its own tmpfs on /dev/shm, held open by one process."""

    holder: subprocess.Popen

    def host_path(self, path: str) -> Path:
        """``path`` inside the namespace, as this (outside) process reaches it."""
        return Path(f"/proc/{self.holder.pid}/root") / path.lstrip("/")

    def argv(self, *cmd: str, nobody: bool = False) -> list[str]:
        return ["nsenter", f"--mount=/proc/{self.holder.pid}/ns/mnt", "--", *(SETPRIV_NOBODY if nobody else []), *cmd]


@pytest.fixture
def shm():
    holder = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
         "mount -t tmpfs -o mode=1777 netemu-attack /dev/shm && echo ready && read _"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "ready\n"
    yield PrivateShm(holder)
    holder.stdin.close()
    holder.wait(timeout=30)
    holder.stdout.close()


@pytest.fixture
def victim():
    """A process of root's that a forged ledger names; no one may signal it."""
    proc = subprocess.Popen(["sleep", "3600"])
    yield proc
    proc.kill()
    proc.wait()


@dataclass
class Attacker:
    proc: subprocess.Popen

    def report(self) -> dict:
        """Stop listening; everything nobody's socket received."""
        self.proc.stdin.close()
        out = self.proc.stdout.read()
        assert self.proc.wait(timeout=30) == 0
        return json.loads(out.splitlines()[-1])


@pytest.fixture
def attacker(shm, victim):
    started: list[Attacker] = []

    def plant(directory: str, mode: int = 0o755) -> Attacker:
        proc = subprocess.Popen(
            shm.argv(NOBODY_PYTHON, "-c", ATTACKER, directory, f"{mode:o}",
                     f"{victim.pid} {proc_start_time(victim.pid)}", nobody=True),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "ready\n"
        started.append(Attacker(proc))
        return started[-1]

    yield plant
    for a in started:
        if a.proc.returncode is None:
            a.proc.kill()
            a.proc.wait()
        a.proc.stdin.close()
        a.proc.stdout.close()


def root_netemu(shm: PrivateShm, *args: str) -> subprocess.CompletedProcess:
    """Root's netemu in the namespace, with the default state path."""
    env = {k: v for k, v in os.environ.items() if k not in ("NETEMU_STATE_DIR", "NETEMU_CLUSTER", "XDG_RUNTIME_DIR")}
    return subprocess.run(shm.argv(NETEMU, *args), env=env, capture_output=True, text=True, timeout=60)


COMMANDS = {"exec": ["exec", "web", "--", "true"], "get": ["get", "pods"], "describe": ["describe", "pod", "web"],
            "gc": ["gc"], "down": ["down"],
            "up": ["up", "--name", "other", "--dns-upstream", "none"],
            "up-detach": ["up", "--detach", "--name", "other", "--dns-upstream", "none", "--timeout", "20"]}


def assert_refused(shm, attacker_run, victim, commands, line):
    """Every command exits 1 with exactly ``line``; nobody's socket got no byte, no mark was made,
    root's process lives and nothing was created in the state root."""
    root = shm.host_path(ROOT)
    before = sorted(p.name for p in root.iterdir())
    for name in commands:
        r = root_netemu(shm, *COMMANDS[name])
        assert (name, r.returncode, r.stderr) == (name, 1, f"error: {line}\n")
    seen = attacker_run.report()
    assert seen["received"] == ""
    assert not shm.host_path(MARK).exists()
    assert victim.poll() is None and proc_start_time(victim.pid) is not None
    assert sorted(p.name for p in root.iterdir()) == before
    return seen


def test_a_state_root_planted_by_another_user_is_refused(shm, attacker, victim):
    run = attacker(ROOT, 0o777)  # nobody got there first: /dev/shm/netemu-0, mode 0777
    seen = assert_refused(shm, run, victim, ["exec", "get", "gc", "down", "up", "up-detach"],
                          f"state directory {ROOT} is owned by uid {NOBODY.pw_uid}, not you (uid {UID}): "
                          "remove it or set NETEMU_STATE_DIR to a directory of your own")
    assert seen["connections"] == 0


def _own_root(shm: PrivateShm, mode: int = 0o700) -> Path:
    root = shm.host_path(ROOT)
    root.mkdir()
    os.chmod(root, mode)
    return root


def test_a_symlinked_cluster_directory_is_refused(shm, attacker, victim):
    run = attacker(PLANT)
    root = _own_root(shm)
    for name in ("netemu", "old"):
        (root / name).symlink_to(f"{PLANT}/{name}")
    seen = assert_refused(shm, run, victim, ["exec", "get", "gc", "up"],
                          f"cluster directory {ROOT}/netemu is a symbolic link: remove it")
    assert seen["connections"] == 0


def test_a_group_writable_state_root_is_refused(shm, attacker, victim):
    run = attacker(PLANT)
    root = _own_root(shm, 0o770)
    for name in ("netemu", "old"):  # what a member of the group could have put there
        os.rename(shm.host_path(f"{PLANT}/{name}"), root / name)
    seen = assert_refused(shm, run, victim, ["exec", "get", "gc", "up"],
                          f"state directory {ROOT} is writable by its group (mode 0770): "
                          "remove it or set NETEMU_STATE_DIR to a directory of your own")
    assert seen["connections"] == 0


def test_a_symlinked_state_file_is_refused(shm, attacker, victim):
    run = attacker(PLANT)
    root = _own_root(shm)
    for name in ("netemu", "old"):
        (root / name).mkdir(mode=0o700)
        for entry in ("state.json", "ledger", "control.sock"):
            if shm.host_path(f"{PLANT}/{name}/{entry}").exists():
                (root / name / entry).symlink_to(f"{PLANT}/{name}/{entry}")
    seen = assert_refused(shm, run, victim, ["exec", "get", "gc", "up"],
                          f"state file {ROOT}/netemu/state.json is a symbolic link: "
                          f"remove the cluster directory {ROOT}/netemu")
    assert seen["connections"] == 0


def _root_cluster_with_nobodys_socket(shm: PrivateShm) -> Path:
    """Root's own root and cluster directory, a state.json root wrote (naming nobody's live
    process), and nobody's listening socket moved in as control.sock."""
    cluster = _own_root(shm) / "netemu"
    cluster.mkdir(mode=0o700)
    shutil.copy(shm.host_path(f"{PLANT}/netemu/state.json"), cluster / "state.json")
    os.rename(shm.host_path(f"{PLANT}/netemu/control.sock"), cluster / "control.sock")
    return cluster


def test_a_control_socket_of_another_owner_is_refused(shm, attacker, victim):
    run = attacker(PLANT)
    _root_cluster_with_nobodys_socket(shm)
    seen = assert_refused(shm, run, victim, ["exec", "describe", "down"],
                          f"control socket {ROOT}/netemu/control.sock is owned by uid {NOBODY.pw_uid}, "
                          f"not you (uid {UID}): remove the cluster directory {ROOT}/netemu")
    assert seen["connections"] == 0


def test_a_control_socket_served_by_another_user_gets_nothing(shm, attacker, victim):
    """The file looks like root's (owner, mode) but the process listening on it is nobody's."""
    run = attacker(PLANT)
    sock = _root_cluster_with_nobodys_socket(shm) / "control.sock"
    os.chown(sock, UID, 0)
    os.chmod(sock, 0o600)
    seen = assert_refused(shm, run, victim, ["exec", "describe", "down"],
                          f"control socket {ROOT}/netemu/control.sock is served by uid {NOBODY.pw_uid}, not you "
                          f"(uid {UID}); nothing was sent: remove the cluster directory {ROOT}/netemu")
    assert seen["connections"] == 3  # connected, checked the peer, hung up without a byte


def test_a_state_root_in_a_world_writable_directory_is_refused(tmp_path):
    """Anyone could rename it away and put their own in its place between two uses."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # no sticky bit: unlike /tmp and /dev/shm
    env = {**os.environ, "NETEMU_STATE_DIR": str(shared / "state")}
    r = subprocess.run([NETEMU, "up", "--dns-upstream", "none"], env=env, capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (1, f"error: state directory {shared}/state lies in {shared}, which any user "
                                           "may write and which is not sticky (mode 0777), so another user could "
                                           "replace it: set NETEMU_STATE_DIR to a directory in one of your own\n")


def test_state_is_created_private(tmp_path):
    state = ClusterState(ClusterConfig(name="private", state_dir=tmp_path / "state"))
    state.create()
    try:
        modes = {p: os.lstat(p).st_mode & 0o777 for p in (tmp_path / "state", state.directory,
                                                         state.path("state.json"))}
        assert list(modes.values()) == [0o700, 0o700, 0o600]
    finally:
        state.remove()


def test_another_users_runtime_dir_is_not_used(tmp_path, monkeypatch):
    """After `sudo`, XDG_RUNTIME_DIR may still name the calling user's directory."""
    runtime = tmp_path / "run-user"
    runtime.mkdir(mode=0o700)
    os.chown(runtime, NOBODY.pw_uid, NOBODY.pw_gid)
    monkeypatch.delenv("NETEMU_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert not state_root().is_relative_to(runtime)
    os.chown(runtime, UID, 0)
    assert state_root() == runtime / "netemu"


@pytest.fixture
def open_socket_dir():
    """A directory nobody can reach (the cluster's own is 0700): to show the server's own check."""
    directory = Path(tempfile.mkdtemp(prefix="netemu-control-", dir="/dev/shm"))
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory)


async def test_the_control_server_refuses_a_client_of_another_uid(make_cluster, open_socket_dir):
    cluster = await make_cluster(control_socket=True)
    path = open_socket_dir / "control.sock"
    server = ControlServer(cluster, path)
    await server.start()
    try:
        os.chmod(path, 0o666)  # file permissions no longer stand in the way: peer credentials must
        client = ("import contextlib, socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\n"
                  "with contextlib.suppress(BrokenPipeError):  # refused at once, maybe before this is sent\n"
                  "    s.sendall(b'{\"op\": \"down\"}\\n')\nprint(s.makefile().readline(), end='')\n")
        proc = await asyncio.create_subprocess_exec(*SETPRIV_NOBODY, NOBODY_PYTHON, "-c", client, str(path),
                                                    stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        assert json.loads(out) == {"ok": False, "error": f"the cluster refused the connection: uid {NOBODY.pw_uid} "
                                                         f"is not its owner (uid {UID}) or root"}
        assert not server.down_requested.is_set()
        info = await asyncio.to_thread(ControlClient(cluster.state.control_socket).call, "info")
        assert info["name"] == cluster.name
    finally:
        await server.stop()


async def test_a_request_over_the_size_limit_is_one_line_and_harms_nothing(make_cluster, tmp_path):
    cluster = await make_cluster(control_socket=True)
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_LINE + "\n")
    proc = await asyncio.create_subprocess_exec(
        NETEMU, "apply", "-f", str(big), env={**os.environ, "NETEMU_CLUSTER": cluster.name},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert (proc.returncode, out, err.decode()) == (
        1, b"", f"error: {big}: the apply request is 64.0 MiB, more than the control socket's limit of 64 MiB; "
                "apply the manifests in smaller files\n")

    def raw_oversized_request() -> bytes:  # a client that does not check: the server's side
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(cluster.state.control_socket))
            try:
                s.sendall(b"x" * (MAX_LINE + 1024))
            except BrokenPipeError:
                pass  # the server refused before reading it all; its reason is waiting
            return s.makefile("rb").readline()

    reply = json.loads(await asyncio.to_thread(raw_oversized_request))
    assert reply == {"ok": False, "error": "request refused: it is larger than the control socket's limit of 64 MiB"}
    info = await asyncio.to_thread(ControlClient(cluster.state.control_socket).call, "info")
    assert info["name"] == cluster.name
