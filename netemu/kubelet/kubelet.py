"""The kubelet of one emulated node: the lifecycle of the pods bound to it.

For each pod: CNI ADD through the fabric, init containers in order (native sidecars, init
containers with ``restartPolicy: Always``, keep running beside the app), then every container (a
real process or a built-in image emulation) with its environment, probes and restart policy with
the kubelet's crash-loop back-off, and the pod status Kubernetes would report (phase by the
kubelet's getPhase, conditions, container states, restart counts).
Graceful deletion follows Kubernetes' order: the pod's endpoints are withdrawn first (the
EndpointSlice controller marks them terminating), and only when no EndpointSlice still lists the
pod as ready do the containers get SIGTERM (sidecars after the app containers); SIGKILL follows
after the grace period; then CNI DEL, and the pod object is removed.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import time
import weakref
from collections import ChainMap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from netemu import events, sandbox
from netemu.api import objects as k8s
from netemu.errors import InvalidError, NetemuError, NotFoundError
from netemu.fabric.base import Fabric, NodeNetwork
from netemu.forkserver import ForkServer
from netemu.frozen import evolve
from netemu.images.golang import go_duration
from netemu.sandbox import SandboxHelper
from netemu.store import DELETED, Event, Store, now_rfc3339

from . import envvars, podfiles, probes
from .mountns import HostMountTable, MountPointError
from .volumes import VOLUMES_ENV, PodVolumes, TokenSource, VolumeError
from .runtime import ContainerStartError, EmulatedContainer, ProcessContainer
from .logfiles import LogFiles
from .serviceenv import ServiceEnvIndex
from .sockets import held_listeners, wildcard_sockets_this_turn

log = logging.getLogger(__name__)

WILDCARD_CHECKS = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)  # seconds after start, then every 10 s
# A container waiting in CreateContainerConfigError is retried at once when a ConfigMap or Secret
# changes, and at least this often otherwise (the kubelet's pod resync).
CONFIG_RESYNC = 10.0
KUBELET = "kubelet"  # the source component of the kubelet's events


class CrashBackOff:
    """The kubelet's per-container restart back-off (client-go flowcontrol.Backoff).

    The first restart after a crash is immediate; later ones wait ``initial``, doubling up to
    ``maximum``; a container that ran without crashing for twice ``maximum`` starts over.
    """

    def __init__(self, initial: float, maximum: float):
        self.initial, self.maximum = initial, maximum
        self._current = 0.0
        self._last_crash: float | None = None

    def next_delay(self, now: float) -> float:
        if self._last_crash is None or now - self._last_crash > 2 * self.maximum:
            delay, self._current = 0.0, self.initial
        else:
            delay, self._current = self._current, min(self._current * 2, self.maximum)
        self._last_crash = now
        return delay


@dataclass
class ExecPlan:
    """How to run a command "inside" a container: the CLI or the Python API executes it."""

    argv: list[str]
    env: dict[str, str]
    cwd: str | None = None
    prefix: list[str] = field(default_factory=list)  # run argv behind this (pod network, pod files)
    warning: str = ""  # why the command cannot see the pod's resolv.conf/hostname, if it cannot


@dataclass(frozen=True)
class PodDNS:
    """What the kubelet needs to write a pod's resolv.conf (kubelet --cluster-dns, --cluster-domain,
    --resolv-conf)."""

    dns_ip: str
    zone: str = "cluster.local"
    node_resolv_conf: str | None = None


def _cond(type_: str, ok: bool, reason: str = "", message: str = "") -> k8s.PodCondition:
    return k8s.PodCondition(type=type_, status="True" if ok else "False", reason=reason, message=message,
                            last_transition_time=now_rfc3339())


class ContainerWorker:
    """Runs one container of a pod through starts, probes, exits and restarts."""

    def __init__(self, pod_worker: "PodWorker", spec: k8s.Container, *, init: bool = False):
        self.pw = pod_worker
        self.spec = spec
        self.init = init
        # A native sidecar: an init container with restartPolicy Always. It starts in init order,
        # lets the next one start once it has started, and then runs (and restarts) like an app.
        self.sidecar = init and spec.restart_policy == "Always"
        waiting = "PodInitializing" if not init and pod_worker.pod.spec.init_containers else "ContainerCreating"
        self.state = k8s.ContainerState(waiting=k8s.ContainerStateWaiting(reason=waiting))
        self.last_state = k8s.ContainerState()
        self.restart_count = 0
        self.ready = False
        self.started: bool | None = False
        self.env: Mapping[str, str] = {}
        self.runtime: ProcessContainer | EmulatedContainer | None = None
        self.task: asyncio.Task | None = None
        self.finished = asyncio.Event()
        self.started_event = asyncio.Event()  # set once it has run with its startup probe passed
        self.exit_code: int | None = None
        self._kill_reason = ""
        self._kill_message = ""
        self._stopping = False
        self._killer: asyncio.Task | None = None

    # ------------------------------------------------------------------ status

    def status(self) -> k8s.ContainerStatus:
        # As the kubelet's prober reports: only a running container is started; an init
        # container is ready once it has exited 0.
        running = self.state.running is not None
        ready = (self.state.terminated is not None and self.state.terminated.exit_code == 0) \
            if self.init and not self.sidecar else self.ready and running
        return k8s.ContainerStatus(
            name=self.spec.name, image=self.spec.image, ready=ready, started=bool(self.started and running),
            restart_count=self.restart_count, state=self.state, last_state=self.last_state,
            image_id=f"netemu://{self.spec.image}",
            container_id=f"netemu://{self.pw.uid[:8]}-{self.spec.name}" if self.state.waiting is None else "")

    def _set(self, state: k8s.ContainerState) -> None:
        self.state = state
        self.pw.publish()

    def event(self, type_: str, reason: str, message: str) -> None:
        """An event about this container (the kubelet's recorder, with the container's fieldPath)."""
        self.pw.event(type_, reason, message, field_path=events.container_path(self.spec.name, init=self.init))

    # ------------------------------------------------------------------ lifecycle

    def _make_runtime(self) -> ProcessContainer | EmulatedContainer:
        kl = self.pw.kubelet
        pod = self.pw.pod
        extra = {"POD_IP": self.pw.ip} if kl.fabric.name == "loopback" else {}
        kube_env = envvars.container_env(pod, self.spec, (), extra=extra, lookup=kl.config_lookup(pod),
                                         warn=self._warn, service_vars=kl.service_env.env(pod))
        # The runtime adds these (image ENV, sandbox hostname); $(VAR) in command/args cannot see them.
        base = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
                "HOSTNAME": self.pw.hostname, "HOME": os.environ.get("HOME", "/root"), **self.pw.volume_env()}
        # Layered, not copied (the service variables are shared by every container of the namespace):
        # the cluster's token wins over all, since gc finds processes by it.
        self.env = ChainMap(kl.process_env, kube_env, base)
        command, args = envvars.command_line(self.spec, kube_env)
        log_path = kl.log_path(pod, self.spec.name)
        stdin = {"stdin": bool(self.spec.stdin), "stdin_once": bool(self.spec.stdin_once)}
        if command:
            return ProcessContainer(command + args, self.env, cwd=self.spec.working_dir or None,
                                    log_path=log_path, **self.pw.process_start(self),
                                    record=kl.record_process, forkserver=kl.forkserver, **stdin)
        from netemu import images
        emulation = kl.extra_images.get(self.spec.image) or images.resolve(self.spec.image)
        if emulation is None:
            raise ContainerStartError(
                "ErrImagePull",
                f'netemu has no built-in emulation of image "{self.spec.image}"; give the container a '
                f"command: to run a real program (built-in images: {', '.join(images.known_images())})")
        program = emulation.real_program(tuple(args))
        if program:  # e.g. busybox with args [sleep, 3600]: the image's entrypoint runs them
            return ProcessContainer(list(program), self.env, cwd=self.spec.working_dir or None,
                                    log_path=log_path, **self.pw.process_start(self),
                                    record=kl.record_process, forkserver=kl.forkserver, **stdin)
        writer = kl.log_writer(pod, self.spec.name)
        ctx = images.ContainerContext(
            pod_name=pod.metadata.name, namespace=pod.metadata.namespace, pod_ip=self.pw.ip,
            hostname=self.pw.hostname, container_name=self.spec.name, image=self.spec.image,
            args=tuple(args), env=self.env,
            ports=tuple((p.name, p.container_port, p.protocol) for p in self.spec.ports),
            log=writer,
            start_server=lambda cb, host, port, **kw: kl.fabric.start_server(self.pw.uid, cb, host, port, **kw),
            create_datagram_endpoint=lambda factory, local_addr, **kw: kl.fabric.create_datagram_endpoint(
                self.pw.uid, factory, local_addr, **kw),
            new_socket=lambda family, type: kl.fabric.socket(self.pw.uid, family, type),
            datagram_socket=lambda local_addr: kl.fabric.datagram_socket(self.pw.uid, local_addr))
        return EmulatedContainer(emulation, ctx)

    async def run(self) -> None:
        policy = self.pw.pod.spec.restart_policy
        backoff = CrashBackOff(self.pw.kubelet.restart_backoff, self.pw.kubelet.restart_backoff_max)
        while True:
            code = await self._run_once()
            if self._stopping:
                break
            restart = self.sidecar or policy == "Always" or (policy == "OnFailure" and code != 0)
            if self.init and not self.sidecar and code == 0:
                break
            if not restart or code is None:
                break
            self.last_state = self.state
            delay = backoff.next_delay(time.monotonic())
            if delay > 0:
                # restartCount stays at the dead instance's attempt number until the next starts
                pod = self.pw.pod
                self.event(events.WARNING, "BackOff",
                           f"Back-off restarting failed container {self.spec.name} in pod "
                           f"{pod.metadata.name}_{pod.metadata.namespace}({self.pw.uid})")
                self._set(k8s.ContainerState(waiting=k8s.ContainerStateWaiting(
                    reason="CrashLoopBackOff",
                    message=f"back-off {go_duration(delay)} restarting failed container={self.spec.name} "
                            f"pod={self.pw.pod.metadata.name}_{self.pw.pod.metadata.namespace}({self.pw.uid})")))
                await asyncio.sleep(delay)
            self.restart_count += 1
        self.finished.set()

    def _warn(self, message: str) -> None:
        """The kubelet's InvalidEnvironmentVariableNames warning (envFrom keys skipped): an event
        about the pod, and a line in the container's log and netemu's."""
        pod = self.pw.pod
        log.warning("pod %s/%s: %s", pod.metadata.namespace, pod.metadata.name, message)
        self.pw.kubelet.append_log(pod, self.spec.name, f"netemu: Warning: {message}")
        self.pw.event(events.WARNING, "InvalidEnvironmentVariableNames", message)

    async def _configured_runtime(self) -> ProcessContainer | EmulatedContainer:
        """``_make_runtime`` once the container's ConfigMaps and Secrets are there: until then it
        waits in CreateContainerConfigError with the kubelet's message, retried on every change
        of a ConfigMap or Secret (and every CONFIG_RESYNC seconds)."""
        kl = self.pw.kubelet
        while True:
            changed = kl.config_changed_event()
            try:
                return self._make_runtime()
            except envvars.ContainerConfigError as exc:
                waiting = self.state.waiting
                if waiting is None or waiting.reason != envvars.CREATE_CONTAINER_CONFIG_ERROR \
                        or waiting.message != str(exc):
                    kl.append_log(self.pw.pod, self.spec.name, f"netemu: Error: {exc}")
                    self.event(events.WARNING, "Failed", f"Error: {exc}")
                    self._set(k8s.ContainerState(waiting=k8s.ContainerStateWaiting(
                        reason=envvars.CREATE_CONTAINER_CONFIG_ERROR, message=str(exc))))
            try:
                await asyncio.wait_for(changed.wait(), CONFIG_RESYNC)
            except asyncio.TimeoutError:
                pass

    async def _run_once(self) -> int | None:
        """Start the container, watch it until it exits; its exit code, or None when it never ran."""
        image = self.spec.image
        try:
            self.runtime = await self._configured_runtime()
            self.event(events.NORMAL, "Pulled", f'Container image "{image}" already present on machine')
            self.event(events.NORMAL, "Created", f"Created container: {self.spec.name}")
            await self.runtime.start()
        except ContainerStartError as exc:
            self.pw.kubelet.append_log(self.pw.pod, self.spec.name, f"netemu: {exc}")
            if exc.reason == "ErrImagePull":
                self.event(events.NORMAL, "Pulling", f'Pulling image "{image}"')
                self.event(events.WARNING, "Failed", f'Failed to pull image "{image}": {exc}')
                self.event(events.WARNING, "Failed", "Error: ErrImagePull")
                self._set(k8s.ContainerState(waiting=k8s.ContainerStateWaiting(reason=exc.reason, message=str(exc))))
                return None
            self.event(events.WARNING, "Failed", f"Error: {exc}")
            self._set(k8s.ContainerState(terminated=k8s.ContainerStateTerminated(
                exit_code=128, reason=exc.reason, message=str(exc), started_at=now_rfc3339(),
                finished_at=now_rfc3339())))
            return 128
        self.event(events.NORMAL, "Started", f"Started container {self.spec.name}")
        started_at = now_rfc3339()
        self._kill_reason = ""
        self.started = self.spec.startup_probe is None
        self.ready = False
        self.state = k8s.ContainerState(running=k8s.ContainerStateRunning(started_at=started_at))
        if not self.init or self.sidecar:
            self.ready = self.started and self.spec.readiness_probe is None
        if self.started:
            self.started_event.set()
        self.pw.publish()
        spec = self.spec
        probed = (spec.startup_probe or spec.liveness_probe or spec.readiness_probe) and (not self.init or self.sidecar)
        helpers = [asyncio.ensure_future(self._probe_loop())] if probed else []
        if isinstance(self.runtime, ProcessContainer) and self.pw.kubelet.fabric.name == "loopback":
            helpers.append(asyncio.ensure_future(self._watch_wildcard()))
        try:
            code = await self.runtime.wait()
        finally:
            for h in helpers:
                h.cancel()
        self.ready = False
        self.exit_code = code
        reason = self._kill_reason or ("Completed" if code == 0 else "Error")
        message = self._kill_message if self._kill_reason else ""
        self.state = k8s.ContainerState(terminated=k8s.ContainerStateTerminated(
            exit_code=code, reason=reason, message=message, started_at=started_at, finished_at=now_rfc3339(),
            container_id=f"netemu://{self.pw.uid[:8]}-{self.spec.name}"))
        self.pw.publish()
        return code

    async def _kill(self, reason: str, message: str) -> None:
        self._kill_reason, self._kill_message = reason, message
        self.pw.kubelet.append_log(self.pw.pod, self.spec.name, f"netemu: {message}")
        if self.runtime is not None:
            # Its own task: the probe loop that asks for the kill is cancelled when the container exits.
            self._killer = asyncio.ensure_future(self.runtime.stop(self.pw.grace_period()))

    async def _watch_wildcard(self) -> None:
        assert isinstance(self.runtime, ProcessContainer)
        delays = list(WILDCARD_CHECKS)
        elapsed = 0.0
        while True:
            step = delays.pop(0) - elapsed if delays else 10.0
            elapsed += step
            await asyncio.sleep(step)
            for pid in self.runtime.pids:
                listening = await wildcard_sockets_this_turn()  # one look for every container due now
                found = await asyncio.to_thread(held_listeners, pid, listening) if listening else []
                if found:
                    await self._kill(
                        "WildcardBind",
                        f"container listens on {', '.join(found)}; on the loopback backend all pods share the "
                        f"host's network, so a container must listen on its pod IP {self.pw.ip} (given to it as "
                        "$POD_IP, or through the downward API status.podIP); or run with --backend netns")
                    return

    async def _probe_loop(self) -> None:
        spec, pw = self.spec, self.pw
        exec_probes = any(p is not None and p.exec is not None
                          for p in (spec.startup_probe, spec.liveness_probe, spec.readiness_probe))
        prefix = pw.process_prefix(self) if exec_probes else []  # only exec probes run processes
        node, fabric = pw.kubelet.node.name, pw.kubelet.fabric
        make_socket = (lambda family, type_: fabric.socket(node, family, type_)) if hasattr(fabric, "socket") else None
        startup = probes.ProbeState(spec.startup_probe, False) if spec.startup_probe else None
        live = probes.ProbeState(spec.liveness_probe, True) if spec.liveness_probe else None
        ready = probes.ProbeState(spec.readiness_probe, False) if spec.readiness_probe else None
        if (self.init and not self.sidecar) or not (startup or live or ready):
            return
        next_run: dict[int, float] = {}
        t0 = time.monotonic()
        for st in (startup, live, ready):
            if st is not None:
                next_run[id(st)] = t0 + st.probe.initial_delay_seconds
        while True:
            active = [st for st in ((startup,) if startup and not startup.result else (live, ready)) if st]
            if not active:
                return
            now = time.monotonic()
            due = min(next_run[id(st)] for st in active)
            if due > now:
                await asyncio.sleep(due - now)
                continue
            for st in active:
                if next_run[id(st)] > time.monotonic():
                    continue
                ok, output = await probes.check_output(st.probe, spec, pw.ip, self.env, prefix, make_socket)
                next_run[id(st)] = time.monotonic() + max(st.probe.period_seconds, 1)
                if not ok:
                    kind = "Startup" if st is startup else "Liveness" if st is live else "Readiness"
                    self.event(events.WARNING, "Unhealthy", f"{kind} probe failed: {output}")
                changed = st.record(ok)
                if st is startup:
                    if changed and st.result:
                        self.started = True
                        self.started_event.set()
                        self.ready = ready is None
                        now2 = time.monotonic()
                        for other in (live, ready):
                            if other is not None:
                                next_run[id(other)] = now2 + other.probe.initial_delay_seconds
                        pw.publish()
                    elif not ok and st.failures >= max(st.probe.failure_threshold, 1):
                        self.event(events.NORMAL, "Killing",
                                   f"Container {spec.name} failed startup probe, will be restarted")
                        await self._kill("Error", f"Startup probe failed {st.failures} times; restarting")
                        return
                elif st is live and changed and not st.result:
                    self.event(events.NORMAL, "Killing",
                               f"Container {spec.name} failed liveness probe, will be restarted")
                    await self._kill("Error", f"Liveness probe failed {st.failures} times; restarting")
                    return
                elif st is ready and changed:
                    self.ready = st.result
                    pw.publish()

    async def stop(self, grace: float) -> None:
        self._stopping = True
        if self.task is not None and not self.task.done():
            if self.runtime is not None and isinstance(self.state.running, k8s.ContainerStateRunning):
                await self.runtime.stop(grace)
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass
            if self.runtime is not None:  # started, but not yet marked Running: its sockets and processes go too
                await self.runtime.stop(grace)
        elif self.runtime is not None:
            await self.runtime.stop(grace)


class PodWorker:
    """One pod on this node: sandbox (pod network), containers, status, termination."""

    def __init__(self, kubelet: "Kubelet", pod: k8s.Pod):
        self.kubelet = kubelet
        self.pod = pod
        self.uid = pod.metadata.uid
        self.ip = ""
        self.hostname = pod.spec.hostname or pod.metadata.name
        self.start_time = now_rfc3339()
        self.init_workers = [ContainerWorker(self, c, init=True) for c in pod.spec.init_containers]
        self.workers = [ContainerWorker(self, c) for c in pod.spec.containers]
        self.initialized = not self.init_workers
        self.sandbox_ready = False
        self.files: podfiles.PodFiles | None = None
        self.volumes: PodVolumes | None = None
        self.task: asyncio.Task | None = None
        self.terminating: asyncio.Task | None = None
        self._publish_scheduled = False
        self.done = asyncio.Event()

    def grace_period(self) -> float:
        p = self.pod
        if p.metadata.deletion_grace_period_seconds is not None:
            return float(p.metadata.deletion_grace_period_seconds)
        return float(p.spec.termination_grace_period_seconds)

    def container(self, name: str | None) -> ContainerWorker:
        if name is None:
            return self.workers[0]
        for w in self.workers + self.init_workers:
            if w.spec.name == name:
                return w
        raise NotFoundError(f"container {name} is not valid for pod {self.pod.metadata.name}")

    # ------------------------------------------------------------------ status

    def event(self, type_: str, reason: str, message: str, *, field_path: str = "") -> None:
        """An event about this pod from this node's kubelet."""
        kl = self.kubelet
        events.recorder(kl.store).record(self.pod, type_, reason, message, component=KUBELET,
                                         host=kl.node.name, field_path=field_path)

    def publish(self) -> None:
        """Write the pod's status soon (several changes in one loop turn make one write)."""
        if not self._publish_scheduled:
            self._publish_scheduled = True
            asyncio.get_running_loop().call_soon(self._write_status)

    @property
    def sidecars(self) -> list[ContainerWorker]:
        return [w for w in self.init_workers if w.sidecar]

    def _phase(self) -> str:
        """The kubelet's getPhase: a container waiting after a termination counts as stopped,
        one waiting to start keeps the pod Pending; sidecars count only while running."""
        policy = self.pod.spec.restart_policy
        pending_init = failed_init = pending_sidecars = 0
        running = waiting = stopped = succeeded = 0
        for w in self.init_workers:
            state, last = w.state, w.last_state.terminated
            if w.sidecar:
                if state.running:
                    running += 1
                    pending_sidecars += not w.started
                elif state.waiting and last is None:
                    pending_sidecars += 1
                    waiting += 1
            elif state.terminated:
                failed_init += state.terminated.exit_code != 0
            elif state.waiting and last is not None:
                failed_init += last.exit_code != 0
            else:
                pending_init += 1
        for w in self.workers:
            state = w.state
            if state.running:
                running += 1
            elif state.terminated:
                stopped += 1
                succeeded += state.terminated.exit_code == 0
            elif state.waiting and w.last_state.terminated is not None:
                stopped += 1
            else:
                waiting += 1
        if failed_init and policy == "Never":
            return "Failed"
        if not self.sandbox_ready or pending_init or waiting or (pending_sidecars and not self.initialized):
            return "Pending"
        if running:
            return "Running"
        if not stopped:
            return "Pending"
        if all(w.finished.is_set() for w in self.workers):  # terminal: nothing restarts any more
            return "Succeeded" if stopped == succeeded else "Failed"
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        return "Failed" if policy == "Never" else "Running"

    def _incomplete_init(self) -> list[str]:
        return [w.spec.name for w in self.init_workers
                if not (w.state.running and w.started if w.sidecar
                        else w.state.terminated and w.state.terminated.exit_code == 0)]

    def build_status(self) -> k8s.PodStatus:
        old = {c.type: c for c in self.pod.status.conditions}
        phase = self._phase()
        gated = self.sidecars + self.workers  # sidecars' readiness counts, as in Kubernetes 1.29+
        not_ready = [w.spec.name for w in gated if not w.ready]
        ready = self.initialized and self.sandbox_ready and not not_ready
        ready_reason = "" if ready else "ContainersNotReady"
        msg = f"containers with unready status: [{' '.join(not_ready)}]" if not_ready else ""
        if phase in ("Succeeded", "Failed"):
            ready, ready_reason, msg = False, "PodCompleted" if phase == "Succeeded" else "PodFailed", ""
        if phase == "Succeeded":
            init_ok, init_reason, init_msg = True, "PodCompleted", ""
        elif self.initialized:
            init_ok, init_reason, init_msg = True, "", ""
        else:
            init_ok, init_reason = False, "ContainersNotInitialized"
            init_msg = f"containers with incomplete status: [{' '.join(self._incomplete_init())}]"
        wanted = [
            ("PodReadyToStartContainers", self.sandbox_ready, "", ""),
            ("Initialized", init_ok, init_reason, init_msg),
            ("Ready", ready, ready_reason, msg),
            ("ContainersReady", ready, ready_reason, msg),
        ]
        conds = []
        if "PodScheduled" in old:
            conds.append(old["PodScheduled"])
        for type_, ok, reason, message in wanted:
            prev = old.get(type_)
            if prev is not None and prev.status == ("True" if ok else "False") and prev.reason == reason \
                    and prev.message == message:
                conds.append(prev)
            else:
                conds.append(_cond(type_, ok, reason, message))
        current = self.pod.status
        # The same tuples as the last status when they hold the same: every reader that compares
        # two versions of the pod (endpoints, DNS, the store) then sees them equal at once.
        ips = current.pod_ips if _only_ip(current.pod_ips, self.ip) else ((k8s.PodIP(ip=self.ip),) if self.ip else ())
        node_ip = self.kubelet.node.ip
        host_ips = current.host_ips if _only_ip(current.host_ips, node_ip) else (k8s.PodIP(ip=node_ip),)
        return evolve(
            current, phase=phase, conditions=tuple(conds), host_ip=node_ip,
            host_ips=host_ips, pod_ip=self.ip, pod_ips=ips, start_time=self.start_time,
            container_statuses=tuple(w.status() for w in self.workers),
            init_container_statuses=tuple(w.status() for w in self.init_workers),
            qos_class=self.pod.status.qos_class or "BestEffort")

    def _write_status(self) -> None:
        self._publish_scheduled = False
        store = self.kubelet.store
        current = store.get("Pod", self.pod.metadata.namespace, self.pod.metadata.name)
        if current is None or current.metadata.uid != self.uid:
            return
        self.pod = current
        status = self.build_status()
        if status != current.status:
            self.pod = store.update(evolve(current, status=status))

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        kl = self.kubelet
        meta = self.pod.metadata
        try:
            net = await kl.fabric.add_pod(kl.node.name, self.uid, meta.namespace, meta.name)
        except NetemuError as exc:
            log.warning("pod %s/%s: sandbox failed: %s", meta.namespace, meta.name, exc)
            for w in self.workers:
                w.state = k8s.ContainerState(waiting=k8s.ContainerStateWaiting(
                    reason="ContainerCreating", message=f"FailedCreatePodSandBox: {exc}"))
            self.publish()
            return
        self.ip = net.ip
        self.files = await self._write_files()
        if self.files is not None and self.pod.spec.volumes:  # mounted before anything starts
            self.volumes = PodVolumes(self.files.volumes, self.pod, lookup=kl.config_lookup(self.pod),
                                      token_source=lambda: kl.service_account_token,
                                      event=lambda reason, message: self.event(events.WARNING, reason, message),
                                      helper=kl.sandbox)
            # ContainerCreating (with the address) while a volume cannot be written yet; written
            # at once, they show with the sandbox, in one status write
            await self.volumes.set_up(kl.config_changed_event, waiting=self.publish)
        self.sandbox_ready = True
        self.publish()
        for w in self.init_workers:
            w.task = asyncio.ensure_future(w.run())
            if w.sidecar:  # the next one starts once this one has started; it keeps running
                await _first_of(w.started_event, w.finished)
                if w.started_event.is_set():
                    continue
            else:
                await w.finished.wait()
                if w.exit_code == 0:
                    continue
            self.publish()
            if self.pod.spec.restart_policy == "Never" and w.state.terminated is not None:
                await self._stop_sidecars()  # the pod has failed: nothing of it keeps running
            return
        self.initialized = True
        for w in self.workers:
            w.task = asyncio.ensure_future(w.run())
        self.publish()
        if self.sidecars:
            # Once the app containers are done for good (restartPolicy Never or OnFailure), the
            # sidecars are stopped so the pod can complete.
            await asyncio.gather(*(w.finished.wait() for w in self.workers))
            if all(w.state.terminated is not None for w in self.workers):  # not stuck before a start
                await self._stop_sidecars()

    async def _stop_sidecars(self, deadline: float | None = None) -> None:
        """Stop the sidecars in reverse order, sharing the grace period up to ``deadline``."""
        if deadline is None:
            deadline = time.monotonic() + self.grace_period()
        for w in reversed(self.sidecars):
            await asyncio.gather(w.stop(max(deadline - time.monotonic(), 0.0)), return_exceptions=True)
        self.publish()

    async def _write_files(self) -> podfiles.PodFiles | None:
        kl = self.kubelet
        if kl.pod_dir is None:
            return None
        spec, meta = self.pod.spec, self.pod.metadata
        zone = kl.dns.zone if kl.dns else "cluster.local"
        fqdn = f"{self.hostname}.{spec.subdomain}.{meta.namespace}.svc.{zone}" if spec.subdomain else ""
        text = ""
        if kl.dns is not None:
            from netemu.dns import resolv_conf
            text = resolv_conf(self.pod, kl.dns.dns_ip, zone, kl.dns.node_resolv_conf)
        directory = kl.pod_dir / self.uid
        await sandbox.run(kl.sandbox, "pod_files", str(directory), text, self.ip, self.hostname, fqdn)
        return podfiles.PodFiles(directory, self.hostname)

    def process_prefix(self, container: ContainerWorker | None = None) -> list[str]:
        """argv before any process of this pod: into its network, then its files and hostname,
        and ``container``'s volumes at their mountPaths."""
        start = self.process_start(container, renew=False)
        return start["prefix"] + podfiles.shell_prefix(start["setup"])

    def process_start(self, container: ContainerWorker | None, *, renew: bool = True) -> dict[str, Any]:
        """How a process of this pod starts (ProcessContainer's ``prefix`` and ``setup``): argv into
        its network, then its files, hostname and ``container``'s volumes as data (podfiles;
        ``renew``: for the container itself)."""
        mounts = []
        try:
            if container is not None and self.volumes is not None and self.volumes.mounted:
                mounts = self.volumes.mounts_for(container.spec, container.env, renew=renew)
            setup = podfiles.enter_setup(self.files, mounts, self.kubelet.host_mounts)
        except (VolumeError, MountPointError) as exc:
            raise ContainerStartError("CreateContainerError", str(exc)) from exc
        return {"prefix": self.kubelet.fabric.process_prefix(self.uid), "setup": setup}

    def volume_env(self) -> dict[str, str]:
        """``$NETEMU_POD_VOLUMES``: where the pod's volumes are, for processes that cannot see
        them at their mountPaths (not root)."""
        return {VOLUMES_ENV: str(self.volumes.directory)} if self.volumes is not None else {}

    def kill_now(self) -> None:
        """SIGKILL every process of the pod: it was deleted for good (``--force``) during its
        grace period, so the termination under way ends now instead of when the grace runs out."""
        for w in self.init_workers + self.workers:
            if isinstance(w.runtime, ProcessContainer):
                for pid in w.runtime.pids:
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

    def update(self, pod: k8s.Pod) -> None:
        self.pod = pod
        if self.volumes is not None:
            self.volumes.pod_changed(pod)
        if pod.metadata.deletion_timestamp and self.terminating is None:
            self.terminating = asyncio.ensure_future(self.terminate())

    def _still_listed_ready(self) -> bool:
        for s in self.kubelet.store.list("EndpointSlice", self.pod.metadata.namespace):
            for ep in s.endpoints:
                if ep.target_ref is not None and ep.target_ref.uid == self.uid and ep.conditions.ready:
                    return True
        return False

    async def terminate(self, *, graceful: bool = True, remove: bool = True) -> None:
        """Withdraw endpoints, stop containers (SIGTERM, then SIGKILL), CNI DEL, remove the pod."""
        if graceful:
            deadline = time.monotonic() + 2.0
            for _ in range(3):
                await asyncio.sleep(0)
            while self._still_listed_ready() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0)  # let the proxies take the slice change before any signal
        if self.task is not None and not self.task.done():
            self.task.cancel()
        grace = self.grace_period() if graceful else 0.0
        deadline = time.monotonic() + grace
        for w in self.init_workers + self.workers:
            if w.state.running is not None:
                w.event(events.NORMAL, "Killing", f"Stopping container {w.spec.name}")
        # The app containers first; sidecars after them, in reverse order (Kubernetes 1.29+).
        await asyncio.gather(*(w.stop(grace) for w in self.workers + self.init_workers if not w.sidecar),
                             return_exceptions=True)
        await self._stop_sidecars(deadline)
        self.kubelet.close_logs(self.pod)
        if self.volumes is not None:
            self.volumes.close()
        if self.files is not None:
            shutil.rmtree(self.files.directory, ignore_errors=True)
        try:
            await self.kubelet.fabric.remove_pod(self.kubelet.node.name, self.uid)
        except NetemuError as exc:
            log.warning("pod %s: CNI DEL failed: %s", self.pod.metadata.name, exc)
        if remove:
            cur = self.kubelet.store.get("Pod", self.pod.metadata.namespace, self.pod.metadata.name)
            if cur is not None and cur.metadata.uid == self.uid:
                self.kubelet.store.delete("Pod", cur.metadata.namespace, cur.metadata.name)
        self.done.set()


class _NodePods:
    """One store subscription for every kubelet of a store: a Pod event goes only to the kubelet
    of the pod's node (``spec.nodeName``: unbound pods go nowhere, and a bound pod's node never
    changes), not to each of 20 kubelets to be filtered out by 19."""

    _by_store: "weakref.WeakKeyDictionary[Store, _NodePods]" = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, store: Store) -> "_NodePods":
        router = cls._by_store.get(store)
        if router is None:
            router = cls._by_store[store] = cls(store)
        return router

    def __init__(self, store: Store) -> None:
        self._store = store
        self._handlers: dict[str, Callable[[Event], None]] = {}
        self._unsubscribe: Callable[[], None] | None = None

    def add(self, node: str, handler: Callable[[Event], None]) -> Callable[[], None]:
        """Send the events of ``node``'s pods to ``handler``; returns the function that stops it."""
        self._handlers[node] = handler
        if self._unsubscribe is None:
            self._unsubscribe = self._store.subscribe(self._route, kinds=["Pod"])

        def remove() -> None:
            if self._handlers.get(node) is handler:
                del self._handlers[node]
            if not self._handlers and self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None
        return remove

    def _route(self, event: Event) -> None:
        handler = self._handlers.get(event.obj.spec.node_name)
        if handler is not None:
            handler(event)


class Kubelet:
    def __init__(self, node: NodeNetwork, store: Store, fabric: Fabric, *, log_dir: Path,
                 record_process: Callable[[int], None], process_env: Mapping[str, str] | None = None,
                 restart_backoff: float = 10.0,
                 restart_backoff_max: float = 300.0, pod_dir: Path | None = None, dns: PodDNS | None = None,
                 extra_images: Mapping[str, Any] | None = None, service_env: ServiceEnvIndex | None = None,
                 forkserver: ForkServer | None = None, sandbox: SandboxHelper | None = None,
                 host_mounts: HostMountTable | None = None):
        self.node = node
        self.store = store
        self.fabric = fabric
        self.log_dir = log_dir
        self.record_process = record_process  # called in each container's child, with its own pid
        self.forkserver = forkserver  # starts the containers' processes (netemu.forkserver), when given
        self.sandbox = sandbox  # writes pods' files in a process of its own (netemu.sandbox), when given
        self.process_env = dict(process_env or {})  # added to every process of a pod
        self.restart_backoff = restart_backoff
        self.restart_backoff_max = restart_backoff_max
        self.pod_dir = pod_dir
        self.dns = dns
        self.extra_images = dict(extra_images or {})
        # The service variables of each namespace (shared by the cluster's kubelets when it passes one).
        self._own_service_env = service_env is None
        self.service_env = service_env if service_env is not None else ServiceEnvIndex(store)
        # The host's mounts, for volumes whose mount points must be made (shared by the cluster's kubelets).
        self._own_host_mounts = host_mounts is None
        self.host_mounts = host_mounts if host_mounts is not None else HostMountTable()
        # Mints a projected serviceAccountToken (set by the cluster's token issuer); without it
        # such a volume cannot be mounted.
        self.service_account_token: TokenSource | None = None
        self.workers: dict[str, PodWorker] = {}
        self._logs = LogFiles()  # built-in images' logs, through a bounded number of open files
        self._config_changed = asyncio.Event()
        self._unsubscribe = _NodePods.of(store).add(self.node.name, self._on_pod)
        self._unsubscribe_config = store.subscribe(self._on_config, kinds=["ConfigMap", "Secret"])
        for pod in store.list("Pod"):
            self._on_pod(Event("ADDED", None, pod))

    # ------------------------------------------------------------------ logs

    def log_path(self, pod: k8s.Pod, container: str) -> Path:
        return self.log_dir / f"{pod.metadata.namespace}_{pod.metadata.name}_{pod.metadata.uid[:8]}_{container}.log"

    def log_writer(self, pod: k8s.Pod, container: str) -> Callable[[str], None]:
        # By uid: a pod re-created under its name has its own log.
        return self._logs.writer(pod.metadata.uid, container, self.log_path(pod, container))

    def append_log(self, pod: k8s.Pod, container: str, line: str) -> None:
        with open(self.log_path(pod, container), "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def close_logs(self, pod: k8s.Pod) -> None:
        self._logs.close_pod(pod.metadata.uid)

    # ------------------------------------------------------------------ config maps, secrets

    def config_lookup(self, pod: k8s.Pod) -> Callable[[str, str], Any]:
        """(kind, name) → that ConfigMap or Secret of the pod's namespace, or None."""
        namespace = pod.metadata.namespace
        return lambda kind, name: self.store.get(kind, namespace, name)

    def config_changed_event(self) -> asyncio.Event:
        """An event set at the next change of any ConfigMap or Secret."""
        return self._config_changed

    def _on_config(self, event: Event) -> None:
        self._config_changed.set()
        self._config_changed = asyncio.Event()
        meta = event.obj.metadata
        for worker in list(self.workers.values()):
            if worker.volumes is not None:
                worker.volumes.config_changed(event.obj.KIND, meta.namespace, meta.name)

    # ------------------------------------------------------------------ events

    def _on_pod(self, event: Event) -> None:
        pod = event.obj
        if pod.spec.node_name != self.node.name:
            return
        uid = pod.metadata.uid
        worker = self.workers.get(uid)
        if event.type == DELETED:
            if worker is not None:
                self.workers.pop(uid, None)
                if worker.terminating is None:  # deleted without grace (force): stop now
                    worker.terminating = asyncio.ensure_future(worker.terminate(graceful=False, remove=False))
                elif not worker.terminating.done():  # force-deleted while terminating: no more grace
                    worker.kill_now()
            return
        if worker is None:
            if k8s_is_finished(pod):
                return
            worker = self.workers[uid] = PodWorker(self, pod)
            worker.task = asyncio.ensure_future(worker.run())
        worker.update(pod)

    def worker_for(self, namespace: str, name: str) -> PodWorker:
        for w in self.workers.values():
            if w.pod.metadata.namespace == namespace and w.pod.metadata.name == name:
                return w
        raise NotFoundError(f'pods "{name}" not found')

    def exec_plan(self, namespace: str, name: str, container: str | None, argv: list[str]) -> ExecPlan:
        pod_worker = self.worker_for(namespace, name)
        phase = pod_worker.pod.status.phase
        if phase in ("Succeeded", "Failed"):
            raise InvalidError(f"cannot exec into a container in a completed pod; current phase is {phase}")
        w = pod_worker.container(container)
        if w.state.running is None:
            raise NotFoundError(f'unable to upgrade connection: container not found ("{w.spec.name}")')
        return ExecPlan(argv=list(argv), env=dict(w.env), cwd=w.spec.working_dir or None,
                        prefix=pod_worker.process_prefix(w),
                        warning=podfiles.prefix_problem() if pod_worker.files is not None else "")

    async def kill_container(self, namespace: str, name: str, container: str | None, signal_name: str) -> None:
        w = self.worker_for(namespace, name).container(container)
        runtime = w.runtime
        if runtime is None or w.state.running is None:
            raise InvalidError(f'container "{w.spec.name}" of pod "{name}" is not running')
        if isinstance(runtime, ProcessContainer):
            sig = getattr(signal, f"SIG{signal_name.upper().removeprefix('SIG')}", None)
            if sig is None:
                raise InvalidError(f"unknown signal {signal_name!r}")
            for pid in runtime.pids:
                try:
                    os.killpg(pid, sig)
                except ProcessLookupError:
                    pass
        else:  # an emulation dies as a killed process would: exit status 128 + SIGKILL
            runtime.running.exit(137)

    async def stop(self, *, release_networks: bool = True, keep_logs: bool = True) -> None:
        """Stop every pod at once (cluster shutdown): SIGTERM, a short grace, SIGKILL.
        ``release_networks`` False leaves the pods' networks (addresses, namespaces) to the
        fabric's own stop and the state directory's removal, which take them all at once;
        ``keep_logs`` False closes the built-in images' logs first, for the same removal: their
        last lines (nginx's shutdown) would open and write 10,000 files about to be deleted."""
        self._unsubscribe()
        self._unsubscribe_config()
        if not keep_logs:
            self._logs.close()
        if self._own_service_env:
            self.service_env.close()
        if self._own_host_mounts:
            self.host_mounts.close()
        workers = list(self.workers.values())
        self.workers.clear()
        for w in workers:
            if w.task is not None and not w.task.done():
                w.task.cancel()
        await asyncio.gather(*(self._stop_worker(w, release_networks) for w in workers), return_exceptions=True)
        self._logs.close()

    async def _stop_worker(self, w: PodWorker, release_network: bool) -> None:
        if w.terminating is not None and not w.terminating.done():
            w.terminating.cancel()
        if w.volumes is not None:
            w.volumes.close()
        for cw in w.workers + w.init_workers:
            cw._stopping = True
        await asyncio.gather(*(cw.stop(1.0) for cw in w.workers + w.init_workers), return_exceptions=True)
        if not release_network:
            return
        try:
            await self.fabric.remove_pod(self.node.name, w.uid)
        except NetemuError:
            pass


async def _first_of(*events: asyncio.Event) -> None:
    """Return as soon as one of ``events`` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _only_ip(ips: tuple[k8s.PodIP, ...], ip: str) -> bool:
    """Whether ``ips`` is exactly ``ip`` (none for no address)."""
    return (len(ips) == 1 and ips[0].ip == ip) if ip else not ips


def k8s_is_finished(pod: k8s.Pod) -> bool:
    return pod.status.phase in ("Succeeded", "Failed")
