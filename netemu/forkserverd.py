"""The fork server's own loop (see netemu.forkserver, which starts it and talks to it).

Run as ``python -I -S -c 'from netemu.forkserverd import main; main()' LEDGER`` with its standard
input a SOCK_SEQPACKET socket to the cluster process. It is started like any process of the
cluster (netemu.spawn.cluster_child_setup: own session, dies with the cluster, recorded in the
ledger), while the cluster process is still small, and it stays small: it imports this, the
standard library modules it names, and netemu.podsetup, netemu.childproc and netemu.errors, none
of which brings in dataclasses, inspect or asyncio; not even the site packages (``-S``). Each fork
copies the server's page tables and marks its pages copy-on-write, and every page the child or
the server then writes is copied: with the 11 MiB that netemu.spawn's imports made, a start cost
the child and the server about 1.2 ms more than with the 6 MiB of now.

Each request is one JSON message ``{"id", "argv", "env", "cwd", "setup"}`` carrying three
descriptors (SCM_RIGHTS) that become the child's 0, 1 and 2. The child leads a new session, dies
with this server (PR_SET_PDEATHSIG SIGKILL, or at once should the server be gone already), appends
its ``process PID STARTTIME SID`` line to the cluster's ledger, holds nothing but 0, 1 and 2
(netemu.childproc.close_inherited_fds), changes to ``cwd``, carries out ``setup`` when there is one
(a pod's namespaces, files and mounts: netemu.podsetup, with the mounts planned by the server
before it forks from the mount table it keeps; a failed step exits 127 with the reason on its
standard error, as the shell prefix it replaces does) and runs ``argv`` with ``env`` (the program
looked up in ``env``'s PATH). The answer is ``{"id", "pid"}``, or ``{"id", "errno",
"error"}`` when the program could not be run (reported through a close-on-exec pipe, as
subprocess does); it comes once that child has run its program, and other requests are served
meanwhile (on a busy machine a child may wait a while for a CPU). Each child's end is reported
as ``{"pid", "status"}`` (a wait status), after its answer. When the cluster closes its end (or
dies), the server exits, and with it (PDEATHSIG) whatever still runs.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sys

from netemu import podsetup
from netemu.childproc import close_inherited_fds, process_line, set_parent_death_signal

MAX_MESSAGE = 1 << 20


def _set_up(setup: dict, prepared: tuple[podsetup.PodSetup, list | None] | None) -> None:
    """The pod's namespaces, files, hostname and mounts (netemu.podsetup), as ``prepared`` by the
    server (the setup and its planned mounts) or else from ``setup`` itself; a failed step ends
    the child with status 127 and its reason on the child's standard error, as the shell prefix
    does."""
    try:
        podsetup.apply(*(prepared or (podsetup.PodSetup.from_json(setup), None)))
    except BaseException as exc:  # noqa: BLE001 - the program must not run without its setup
        os.write(2, f"netemu-pod: {exc}\n".encode(errors="replace"))
        os._exit(127)


def _child(request: dict, prepared: tuple[podsetup.PodSetup, list | None] | None, fds: list[int], ledger: int,
           server: int, report: int) -> None:
    """In the forked child: never returns."""
    try:
        os.setsid()
        set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != server:
            os._exit(1)
        os.write(ledger, (process_line(os.getpid()) or "").encode())
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        if request.get("cwd"):
            os.chdir(request["cwd"])
        if request.get("setup"):
            _set_up(request["setup"], prepared)
        close_inherited_fds()
        os.execvpe(request["argv"][0], request["argv"], request["env"])
    except OSError as exc:
        os.write(report, json.dumps({"errno": exc.errno, "error": exc.strerror or str(exc)}).encode())
    except BaseException as exc:  # noqa: BLE001 - nothing may escape into the server's loop
        os.write(report, json.dumps({"errno": 0, "error": repr(exc)}).encode())
    os._exit(127)


class Starting:
    """A child between fork and exec: the answer waits for its report pipe to close (exec) or to
    carry an error; its exit, should it come first, waits with it."""

    __slots__ = ("request_id", "pid", "report", "status")

    def __init__(self, request_id: int, pid: int) -> None:
        self.request_id = request_id
        self.pid = pid
        self.report = b""
        self.status: int | None = None


class Server:
    def __init__(self, sock: socket.socket, ledger: int):
        self.sock = sock
        self.ledger = ledger
        self.selector = selectors.DefaultSelector()
        self.starting: dict[int, Starting] = {}   # by report pipe
        self.starting_pids: dict[int, Starting] = {}
        self.mounts = podsetup.MountTable()  # this server's namespace: the children's before they unshare

    def send(self, message: dict) -> None:
        self.sock.send(json.dumps(message).encode())

    def start(self, request: dict, fds: list[int]) -> None:
        """Fork one request's child; it is answered once it has run its program (or failed to):
        other requests are served meanwhile."""
        prepared = self.prepare(request.get("setup"))
        read_end, write_end = os.pipe()
        server = os.getpid()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            _child(request, prepared, fds, self.ledger, server, write_end)
        os.close(write_end)
        entry = Starting(request["id"], pid)
        self.starting[read_end] = entry
        self.starting_pids[pid] = entry
        self.selector.register(read_end, selectors.EVENT_READ)

    def prepare(self, setup: dict | None) -> tuple[podsetup.PodSetup, list | None] | None:
        """A request's setup and the mounts of its new layer, planned here from the mount table
        this server keeps (netemu.podsetup.planned_mounts), so that the child neither reads nor
        parses /proc/self/mountinfo (0.4 ms of a child's 3). None when there is no setup, or it
        is not as expected: the child then reads it itself, and says what is wrong."""
        if not setup:
            return None
        try:
            parsed = podsetup.PodSetup.from_json(setup)
            return parsed, (podsetup.planned_mounts(parsed, self.mounts.entries()) if parsed.root is not None else None)
        except Exception:  # noqa: BLE001 - reported by the child, which tries again
            return None

    def on_report(self, read_end: int) -> None:
        entry = self.starting[read_end]
        chunk = os.read(read_end, 65536)
        if chunk:
            entry.report += chunk
            return
        self.selector.unregister(read_end)
        os.close(read_end)
        del self.starting[read_end]
        del self.starting_pids[entry.pid]
        if entry.report:  # it never ran the program: its end is no news
            if entry.status is None:
                os.waitpid(entry.pid, 0)
            self.send({"id": entry.request_id, **json.loads(entry.report)})
            return
        self.send({"id": entry.request_id, "pid": entry.pid})
        if entry.status is not None:
            self.send({"pid": entry.pid, "status": entry.status})

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            entry = self.starting_pids.get(pid)
            if entry is not None:
                entry.status = status  # reported after its answer
            else:
                self.send({"pid": pid, "status": status})

    def serve(self) -> None:
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.selector.register(self.sock, selectors.EVENT_READ)
        self.selector.register(wake_read, selectors.EVENT_READ)
        while True:
            for key, _ in self.selector.select():
                if key.fd == wake_read:
                    try:
                        while os.read(wake_read, 4096):
                            pass
                    except BlockingIOError:
                        pass
                    self.reap()
                elif key.fd in self.starting:
                    self.on_report(key.fd)
                elif not self.on_request():
                    return

    def on_request(self) -> bool:
        """Serve one request; False once the cluster has closed its end (or is gone)."""
        try:
            message, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, 3)
        except ConnectionError:
            return False
        if not message:
            return False
        try:
            self.start(json.loads(message), fds)
        finally:
            for fd in fds:
                os.close(fd)
        return True


def main() -> None:
    ledger = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    sock = socket.socket(fileno=0)
    # The requests' socket must not be a child's stdin: move it off descriptor 0.
    sock = socket.socket(fileno=os.dup(sock.detach()))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    try:
        Server(sock, ledger).serve()
    except ConnectionError:  # the cluster closed its end (or died) while a child's news was going out
        pass
