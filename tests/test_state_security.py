"""Nothing another user made is trusted: state directories, state files and the API's credentials.

The attacks are run the way another user would run them against root on a shared machine: in a
private mount namespace with its own tmpfs on /dev/shm (nothing touches the machine's), user
`nobody` prepares the default state root of uid 0 — or root's root holds something nobody
controls — with a cluster that looks alive (its state.json names nobody's own live process), a
kubeconfig, CA and token naming nobody's own HTTPS listener, which answers as a cluster's API
would (its exec plan leaving a mark), and a dead cluster whose ledger names one of root's
processes. Root's real `netemu` then runs there with the default state path. Each command must
refuse with one line saying what is wrong, and nobody's listener must receive no request, no
mark appear and root's process survive.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from netemu.config import ClusterConfig, state_root
from netemu.kubeapi import certs, kubeconfig
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
TLS = "/dev/shm/nobody-tls"           # nobody's own serving certificate and key (and CA)

pytestmark = pytest.mark.skipif(UID != 0, reason="acts as another user (nobody): needs root")

# Run as nobody: plant a cluster set in sys.argv[1] (mode sys.argv[2]): "netemu", alive (its pid
# is this process) with a kubeconfig, CA and token naming nobody's HTTPS listener (certificate and
# key in sys.argv[4]), and "old", dead, whose ledger names the process sys.argv[3]. Answer on the
# listener as a cluster's API would; on EOF of stdin print what was received.
ATTACKER = r'''
import json, os, selectors, socket, ssl, sys
base, mode, victim, tls = sys.argv[1], int(sys.argv[2], 8), sys.argv[3], sys.argv[4]
def start_time(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[19])
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(16)
port = listener.getsockname()[1]
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(f"{tls}/server.crt", f"{tls}/server.key")
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
with open(f"{tls}/kubeconfig") as f:
    kubeconfig = f.read().replace("PORT", str(port))
for entry, text in (("kubeconfig", kubeconfig), ("ca.crt", open(f"{tls}/ca.crt").read()), ("token", "nobody\n")):
    with open(f"{base}/netemu/{entry}", "w") as f:
        f.write(text)
plan = json.dumps({"prefix": [], "argv": ["touch", "/dev/shm/nobody-was-here"], "env": {"PATH": "/usr/bin:/bin"},
                   "cwd": None, "warning": None}).encode()
seen = {"connections": 0, "received": ""}
def serve(conn):
    seen["connections"] += 1
    conn.settimeout(5)
    try:
        with context.wrap_socket(conn, server_side=True) as tls_conn:
            data = tls_conn.recv(1 << 16)
            seen["received"] += data.decode(errors="replace")
            if data:
                tls_conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                                 b"Content-Length: %d\r\n\r\n" % len(plan) + plan)
    except (OSError, ssl.SSLError):
        pass  # the client refused the handshake
    finally:
        conn.close()
sel = selectors.DefaultSelector()
sel.register(sys.stdin, selectors.EVENT_READ)
sel.register(listener, selectors.EVENT_READ)
print(f"ready {port}", flush=True)
running = True
while running:
    for key, _ in sel.select():
        if key.fileobj is sys.stdin:
            running = bool(sys.stdin.readline())
        else:
            serve(listener.accept()[0])
listener.setblocking(False)
while True:  # whatever is still queued
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        break
    conn.setblocking(True)
    serve(conn)
print(json.dumps(seen), flush=True)
'''


def _kubeconfig_text(ca_cert: bytes) -> str:
    """A kubeconfig naming 127.0.0.1:PORT (the attacker puts its port in), as a cluster writes one."""
    return kubeconfig.dump(kubeconfig.build("netemu", "https://127.0.0.1:PORT", ca_cert, b"", b""))


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
    port: int

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
        tls = shm.host_path(TLS)
        if not tls.exists():  # nobody's own CA and serving pair, as a cluster of nobody's would have
            tls.mkdir(mode=0o755)
            own = certs.make_credentials("nobody")
            for name, data in (("ca.crt", own.ca_cert), ("server.crt", own.server_cert),
                               ("server.key", own.server_key), ("kubeconfig", _kubeconfig_text(own.ca_cert).encode())):
                (tls / name).write_bytes(data)
                os.chown(tls / name, NOBODY.pw_uid, NOBODY.pw_gid)
        proc = subprocess.Popen(
            shm.argv(NOBODY_PYTHON, "-c", ATTACKER, directory, f"{mode:o}",
                     f"{victim.pid} {proc_start_time(victim.pid)}", TLS, nobody=True),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = proc.stdout.readline()
        assert ready.startswith("ready "), ready
        started.append(Attacker(proc, int(ready.split()[1])))
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
    """Every command exits 1 with exactly ``line``; nobody's listener got no request, no mark was made,
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
        for entry in ("state.json", "ledger", "kubeconfig", "ca.crt", "token"):
            if shm.host_path(f"{PLANT}/{name}/{entry}").exists():
                (root / name / entry).symlink_to(f"{PLANT}/{name}/{entry}")
    seen = assert_refused(shm, run, victim, ["exec", "get", "gc", "up"],
                          f"state file {ROOT}/netemu/state.json is a symbolic link: "
                          f"remove the cluster directory {ROOT}/netemu")
    assert seen["connections"] == 0


def _root_cluster_with_nobodys_credentials(shm: PrivateShm) -> Path:
    """Root's own root and cluster directory, a state.json root wrote (naming nobody's live
    process), and nobody's kubeconfig, CA and token (naming nobody's listener) moved in."""
    cluster = _own_root(shm) / "netemu"
    cluster.mkdir(mode=0o700)
    shutil.copy(shm.host_path(f"{PLANT}/netemu/state.json"), cluster / "state.json")
    for entry in ("kubeconfig", "ca.crt", "token"):
        os.rename(shm.host_path(f"{PLANT}/netemu/{entry}"), cluster / entry)
    return cluster


def test_api_credentials_of_another_owner_are_refused(shm, attacker, victim):
    run = attacker(PLANT)
    _root_cluster_with_nobodys_credentials(shm)
    seen = assert_refused(shm, run, victim, ["exec", "get", "describe", "down"],
                          f"state file {ROOT}/netemu/kubeconfig is owned by uid {NOBODY.pw_uid}, "
                          f"not you (uid {UID}): remove the cluster directory {ROOT}/netemu")
    assert seen["connections"] == 0


def test_a_listener_that_cannot_prove_itself_the_cluster_gets_no_request(shm, attacker, victim):
    """Root's own kubeconfig, CA and token, but nobody listens at the address they name (the
    cluster died and nobody took its port): without a certificate of root's cluster CA the
    handshake fails, and neither the token nor a request is sent."""
    run = attacker(PLANT)
    cluster = _root_cluster_with_nobodys_credentials(shm)
    own = certs.make_credentials("netemu")
    for entry, data in (("kubeconfig", _kubeconfig_text(own.ca_cert).replace("PORT", str(run.port)).encode()),
                        ("ca.crt", own.ca_cert), ("token", own.token.encode())):
        (cluster / entry).unlink()
        (cluster / entry).write_bytes(data)
        os.chmod(cluster / entry, 0o600)
    root = shm.host_path(ROOT)
    for name in ("exec", "describe", "down"):
        r = root_netemu(shm, *COMMANDS[name])
        assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, (name, r.stderr)
        assert r.stderr.startswith(f"error: cannot reach the cluster's API at https://127.0.0.1:{run.port}: ") \
            and "CERTIFICATE_VERIFY_FAILED" in r.stderr, (name, r.stderr)
    seen = run.report()
    assert seen == {"connections": 3, "received": ""}  # each handshake refused: no token, no request
    assert not shm.host_path(MARK).exists()
    assert victim.poll() is None and sorted(p.name for p in root.iterdir()) == ["netemu"]


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
