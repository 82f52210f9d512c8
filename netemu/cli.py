"""The ``netemu`` command: a thin shell over ``Cluster`` and the cluster's Kubernetes API.

``main(argv) -> int`` runs in-process (tests call it). A NetemuError is one line on stderr and
exit status 1; a traceback appears only with ``-v``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from netemu.config import AUTO, DEFAULT_NAME, state_root
from netemu.errors import ClusterError, NetemuError

log = logging.getLogger("netemu")


def _add_cluster_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default=None, help="cluster name (default: $NETEMU_CLUSTER, or the only running one)")


def _add_ns_flags(p: argparse.ArgumentParser, all_ns: bool = True) -> None:
    p.add_argument("-n", "--namespace", default=None)
    if all_ns:
        p.add_argument("-A", "--all-namespaces", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netemu", description="Kubernetes networking, emulated with real sockets.")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("up", help="start a cluster (foreground; Ctrl-C or `netemu down` stops it)")
    p.add_argument("-f", "--filename", action="append", default=[], help="manifest file or directory")
    p.add_argument("--nodes", default="1", help="number of nodes, or comma-separated node names")
    p.add_argument("--backend", default="loopback", choices=["loopback", "netns"])
    p.add_argument("--proxy-mode", default=None, choices=["userspace", "nftables"],
                   help="how Services are proxied: userspace (default) or nftables (netns: DNAT in each node's kernel)")
    p.add_argument("--proxy-workers", type=_workers_flag, default=None, metavar="N|auto",
                   help="loopback: processes that accept TCP service connections (default auto: one, and "
                        "more while the proxy is busy; they share each listener with SO_REUSEPORT)")
    p.add_argument("--detach", "-d", action="store_true", help="return once everything is ready")
    p.add_argument("--timeout", type=float, default=60, help="seconds to wait for readiness")
    p.add_argument("--service-cidr", default=None)
    p.add_argument("--pod-cidr", default=None)
    p.add_argument("--node-cidr", default=None)
    p.add_argument("--lb-cidr", default=None)
    p.add_argument("--dns-upstream", default="host", metavar="host|none|IP[:PORT],...",
                   help="where cluster DNS forwards names outside the cluster: the host's resolv.conf "
                        "nameservers (default, like CoreDNS's `forward . /etc/resolv.conf`), none (REFUSED), "
                        "or the given servers")
    p.add_argument("--cni-bin-dir", default=None, metavar="DIR",
                   help="netns: wire pods with the CNI plugin executables bridge and host-local from DIR "
                        "(e.g. /usr/lib/cni) instead of netemu's own, run in-process")
    p.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--kubeconfig", default=None, metavar="FILE",
                   help="merge the cluster's kubectl context into FILE (default: $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--no-kubeconfig", action="store_true", help="leave every kubeconfig file alone")
    _add_cluster_flag(p)

    p = sub.add_parser("apply", help="create or update objects from manifests")
    p.add_argument("-f", "--filename", action="append", required=True)
    _add_ns_flags(p, all_ns=False)
    _add_cluster_flag(p)

    p = sub.add_parser("delete", help="delete objects (by manifest, or KIND NAME...)")
    p.add_argument("-f", "--filename", action="append", default=[])
    p.add_argument("args", nargs="*", metavar="KIND NAME")
    _add_ns_flags(p, all_ns=False)
    _add_cluster_flag(p)

    p = sub.add_parser("get", help="list objects, kubectl style")
    p.add_argument("kind", metavar="KIND[,KIND]")
    p.add_argument("names", nargs="*")
    p.add_argument("-o", "--output", default="", help="wide, yaml or json")
    p.add_argument("-l", "--selector", default=None)
    _add_ns_flags(p)
    _add_cluster_flag(p)

    p = sub.add_parser("describe", help="show one object in detail")
    p.add_argument("kind")
    p.add_argument("names", nargs="*")
    _add_ns_flags(p, all_ns=False)
    _add_cluster_flag(p)

    p = sub.add_parser("exec", help="run a command in a pod's container: exec [-it] POD [-c C] -- CMD...")
    p.add_argument("pod")
    p.add_argument("-c", "--container", default=None)
    p.add_argument("-i", "--stdin", action="store_true", help="accepted for kubectl compatibility")
    p.add_argument("-t", "--tty", action="store_true", help="accepted for kubectl compatibility")
    p.add_argument("cmd", nargs="*", metavar="CMD", help="the command; put it after --, as kubectl does")
    _add_ns_flags(p, all_ns=False)
    _add_cluster_flag(p)

    p = sub.add_parser("logs", help="print a container's log")
    p.add_argument("pod")
    p.add_argument("-c", "--container", default=None)
    p.add_argument("-f", "--follow", action="store_true")
    _add_ns_flags(p, all_ns=False)
    _add_cluster_flag(p)

    p = sub.add_parser("scale", help="scale a deployment or statefulset: scale deployment/NAME --replicas=N")
    p.add_argument("target")
    p.add_argument("--replicas", type=int, required=True)
    _add_ns_flags(p, all_ns=False)
    _add_cluster_flag(p)

    p = sub.add_parser("wait", help="wait until every pod is ready")
    p.add_argument("--timeout", type=float, default=60)
    _add_cluster_flag(p)

    p = sub.add_parser("impair", help="delay, rate-limit, drop, duplicate or reset traffic of a service, a node "
                       "or a link: impair (--service [NS/]NAME | --node NAME | --link A B) [--delay 50ms] ... | --clear")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--service", metavar="[NS/]NAME", help="a Service (its namespace from NS/ or -n), at the proxy")
    target.add_argument("--node", metavar="NAME", help="a node: on loopback everything it proxies or serves; "
                        "on netns every frame of its links on the underlay")
    target.add_argument("--link", nargs=2, metavar=("A", "B"), help="netns: every frame between nodes A and B")
    p.add_argument("--delay", help="one-way delay added to each direction: 50ms, 1s, 200us (bare: ms)")
    p.add_argument("--jitter", help="random variation of the delay, ± this much")
    p.add_argument("--rate", help="bandwidth cap per direction: 1mbit, 512kbit, 2mbps (bytes)")
    p.add_argument("--loss", help="share of UDP datagrams (proxy) or frames (netns wire) lost: 10%%")
    p.add_argument("--reset", help="share of new TCP connections reset at once (proxy): 5%%")
    p.add_argument("--duplicate", help="share of frames delivered twice (netns wire): 1%%")
    p.add_argument("--clear", action="store_true", help="remove the impairment")
    _add_ns_flags(p, all_ns=False)
    _add_cluster_flag(p)

    p = sub.add_parser("partition", help="netns: cut the underlay between groups of nodes: "
                       "partition node-1 node-2,node-3 (nodes named nowhere form one more group)")
    p.add_argument("groups", nargs="+", metavar="NODE[,NODE...]", help="one group of nodes")
    _add_cluster_flag(p)

    p = sub.add_parser("capture", help="netns: write the packets of a pod, a node or a link to a pcapng file: "
                       "capture (--pod POD | --node NODE | --link A B) [--filter BPF] -w FILE")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--pod", help="a pod's eth0 (its namespace from -n)")
    target.add_argument("--node", help="a node's eth0, its link to the underlay")
    target.add_argument("--link", nargs=2, metavar=("A", "B"), help="what crosses the link between nodes A and B")
    p.add_argument("--filter", default="", metavar="BPF", help='a tcpdump filter expression, e.g. "tcp port 80"')
    p.add_argument("-w", dest="file", required=True, metavar="FILE", help="the pcapng file to write")
    p.add_argument("--duration", help="stop after this long: 5s, 500ms (default: Ctrl-C)")
    p.add_argument("--count", type=int, default=0, help="stop after this many packets")
    p.add_argument("--summary", action="store_true", help="list the flows seen, named after pods and services")
    _add_ns_flags(p, all_ns=False)
    _add_cluster_flag(p)

    p = sub.add_parser("heal", help="netns: undo the partition")
    _add_cluster_flag(p)

    p = sub.add_parser("down", help="stop a running cluster")
    _add_cluster_flag(p)

    p = sub.add_parser("gc", help="remove what killed clusters left behind")
    p.add_argument("--orphans", action="store_true",
                   help="also remove netemu- network namespaces that no cluster accounts for (and what runs in them)")

    p = sub.add_parser("clusters", help="list clusters")

    p = sub.add_parser("kubeconfig", help="print a running cluster's kubeconfig (for kubectl and client libraries)")
    _add_cluster_flag(p)

    p = sub.add_parser("run", help="run scenario files (each in a fresh cluster) and report")
    p.add_argument("paths", nargs="*", metavar="FILE|DIR", help="scenario files, or directories of them")
    p.add_argument("--kubeconfig", metavar="FILE", default=None,
                   help="run on that cluster, through its Kubernetes API, each scenario in a namespace of its own "
                        "(default: $NETEMU_KUBECONFIG; without either, a fresh netemu cluster each)")
    p.add_argument("--context", metavar="NAME", default=None, help="the kubeconfig context to use")
    p.add_argument("--cleanup", action="store_true",
                   help="with --kubeconfig: delete the namespaces that interrupted runs left, and stop")
    p.add_argument("--client-image", metavar="IMAGE", default=None,
                   help="with --kubeconfig: the image of the client pod that traffic steps run in "
                        "(default registry.k8s.io/e2e-test-images/agnhost:2.53)")
    p.add_argument("--wait-timeout", metavar="SECONDS", type=float, default=None,
                   help="with --kubeconfig: how long waits take at most unless a step says (default 120)")
    p.add_argument("--junit", metavar="FILE", default=None, help="also write JUnit XML here")
    p.add_argument("--keep", action="store_true",
                   help="keep a failed scenario's cluster up for `netemu get/exec --name ...` "
                        "(with --kubeconfig: its namespace, until --cleanup)")
    p.add_argument("-k", dest="pattern", metavar="PATTERN", default=None,
                   help="only scenarios whose name or file name contains PATTERN")
    p.add_argument("--backend", choices=["loopback", "netns"], default=None,
                   help="run every scenario on this backend (default: what each file says, else loopback)")
    p.add_argument("--proxy-mode", choices=["userspace", "nftables"], default=None,
                   help="run every scenario with this service proxy mode (nftables: netns backend only)")
    return parser


# ---------------------------------------------------------------------------- helpers


def _find_cluster(name: str | None) -> Any:
    from netemu.state import list_clusters
    name = name or os.environ.get("NETEMU_CLUSTER")
    live = [c for c in list_clusters(state_root()) if c.alive]
    if name:
        for c in live:
            if c.name == name:
                return c
        raise ClusterError(f'no running cluster named "{name}" (start one with `netemu up --name {name}`)')
    if len(live) == 1:
        return live[0]
    if not live:
        raise ClusterError("no cluster is running; start one with `netemu up` (or `netemu up --detach`)")
    raise ClusterError(f"several clusters are running ({', '.join(c.name for c in live)}); choose one with --name")


def _api_client(target: Any) -> Any:
    """A client of the running cluster's Kubernetes API, from its verified state directory."""
    from netemu.kubeapi.client import ApiClient
    return ApiClient.for_cluster(target.name, target.directory)


def _read_documents(paths: Sequence[str]) -> list[dict[str, str]]:
    """The text of every manifest named by -f (files, directories, ``-``), checked as UTF-8 here:
    the cluster parses it."""
    from netemu.api.yamlload import decode_manifest, manifest_files, read_manifest_file
    docs = []
    for p in paths:
        if p == "-":
            docs.append({"source": "<stdin>", "text": decode_manifest(sys.stdin.buffer.read(), "<stdin>")})
            continue
        path = Path(p)
        if path.is_dir():
            files = manifest_files(path)
        elif path.exists():
            files = [path]
        else:
            raise NetemuError(f'error: the path "{p}" does not exist')
        for f in files:
            docs.append({"source": str(f), "text": read_manifest_file(f)})
    return docs


def _emit(text: str) -> None:
    if text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


# ---------------------------------------------------------------------------- up


def _cluster_name(args: argparse.Namespace) -> str:
    return args.name or os.environ.get("NETEMU_CLUSTER") or DEFAULT_NAME


def _workers_flag(text: str) -> int | str:
    """``--proxy-workers``: a number, or "auto" (the configuration checks the range)."""
    if text == AUTO:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r}: a number of processes or "auto"') from None


def _range_flag(key: str) -> str:
    return "--" + key.replace("_", "-")


async def _start_cluster(args: argparse.Namespace) -> Any:
    """Start the cluster `up` asks for. Ranges not given as flags come from the first free address
    slot (another cluster may hold the defaults); a given range that a running cluster holds is
    refused with the flag to change and a free range."""
    from netemu.scenario.clusters import fixed_range_conflict, start_cluster
    nodes: Any = int(args.nodes) if args.nodes.isdigit() else [n.strip() for n in args.nodes.split(",") if n.strip()]
    options = {k: getattr(args, k) for k in ("service_cidr", "pod_cidr", "node_cidr", "lb_cidr", "cni_bin_dir",
                                             "proxy_mode") if getattr(args, k)}
    if args.proxy_workers is not None:  # 0 is refused by the configuration, not taken for "not given"
        options["proxy_workers"] = args.proxy_workers
    options["dns_upstreams"] = _dns_upstreams(args.dns_upstream)
    for p in args.filename:
        if not Path(p).exists():
            raise NetemuError(f'error: the path "{p}" does not exist')
    conflict = fixed_range_conflict(nodes, {**options, "backend": args.backend}, _range_flag)
    if conflict is not None:
        raise conflict
    return await start_cluster(nodes, name=_cluster_name(args), backend=args.backend,
                               manifests=[Path(p) for p in args.filename], **options)


def _dns_upstreams(text: str) -> tuple[str, ...]:
    if text == "none":
        return ()
    if text == "host":
        from netemu.dns import host_upstreams
        return tuple(host_upstreams())
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _summary(cluster: Any, elapsed: float) -> str:
    from netemu.scenario.clusters import slot_of
    lines = [f'cluster "{cluster.name}" is up ({cluster.config.backend} backend, {elapsed:.2f}s); '
             f"state in {cluster.state.directory}"]
    for name, net in cluster.nodes.items():
        lines.append(f"  node {name:<12} {net.ip:<15} pods {net.pod_cidr}")
    for svc in cluster.store.list("Service"):
        spec = svc.spec
        where = spec.cluster_ip or "-"
        ports = ",".join(f"{p.port}" + (f":{p.node_port}" if p.node_port else "") + f"/{p.protocol}" for p in spec.ports)
        ingress = ",".join(i.ip or i.hostname for i in svc.status.load_balancer.ingress)
        extra = f" lb {ingress}" if ingress else (" lb <pending>" if spec.type == "LoadBalancer" else "")
        if spec.type == "ExternalName":
            where = spec.external_name
        lines.append(f"  service {svc.metadata.namespace}/{svc.metadata.name:<20} {spec.type:<12} {where} {ports}{extra}")
    port = "" if cluster.dns_port == 53 else f" port {cluster.dns_port} (not 53: not root, so pods cannot use it)"
    if cluster.fabric.shared_stack:
        lines.append(f"  cluster DNS {cluster.config.dns_ip}{port}: dig @{cluster.config.dns_ip}"
                     + ("" if cluster.dns_port == 53 else f" -p {cluster.dns_port}") + " my-svc.default.svc.cluster.local")
    else:  # pods and ClusterIPs live in the cluster's namespaces; the host reaches node and LB addresses
        hosts = ", ".join(f"{name} {getattr(net, 'host_ip', '')}" for name, net in cluster.nodes.items())
        lines.append(f"  cluster DNS {cluster.config.dns_ip}, inside the cluster: netemu exec POD -- nslookup my-svc")
        lines.append(f"  from the host: NodePorts on {hosts}; LoadBalancers on {cluster.config.lb_cidr}")
    slot = slot_of(cluster.config)
    if slot != 0:  # the defaults were taken (or ranges were given): say which ones this cluster has
        from netemu.scenario.clusters import RANGE_LABELS, held_ranges
        ranges = ", ".join(f"{RANGE_LABELS[k]} {v}" for k, v in held_ranges(cluster.config).items())
        lines.append(f"  address slot {slot}: {ranges} (the default ranges are in use by another cluster)"
                     if slot is not None else f"  address ranges: {ranges}")
    lines.append("try: netemu get pods -o wide   |   stop: netemu down" + _name_flag(cluster.name))
    return "\n".join(lines)


def _name_flag(name: str) -> str:
    return f" --name {name}" if name != DEFAULT_NAME else ""


def _inspect_hint(name: str, pod: str, pid: int) -> str:
    flag = _name_flag(name)
    return (f'the cluster "{name}" is still up (pid {pid}): inspect it with `netemu get pods{flag}` and '
            f"`netemu describe pod {pod or 'POD'}{flag}`; stop it with `netemu down{flag}`")


def _run_loop(coro: Any) -> Any:
    try:
        import uvloop
        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


async def _up(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    if args.ready_fd is not None:  # `up --detach` waits for this pipe to close: no child may hold it
        os.set_inheritable(args.ready_fd, False)
    from netemu.readiness import wait_for_pods
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    ready_fd = args.ready_fd
    cluster = None
    try:
        cluster = await _start_cluster(args)
        cluster.state.update_info(process="up")  # `down` waits for this process to end, too
        kubeconfig_line = _publish_kubeconfig(cluster, args)
        not_ready = await wait_for_pods(cluster, args.timeout)
        summary = _summary(cluster, time.monotonic() - t0) + (f"\n  {kubeconfig_line}" if kubeconfig_line else "")
        if ready_fd is not None:  # `up --detach` is waiting: OK, or FAIL with what is wrong (the cluster stays up)
            report = "OK\n" + summary + "\n" if not_ready is None else "FAIL\n" + json.dumps(
                {"summary": summary, "problem": not_ready.lines(), "pod": not_ready.first_pod})
            os.write(ready_fd, report.encode())
            os.close(ready_fd)
            ready_fd = None
        else:
            print(summary, flush=True)
            if not_ready is not None:
                print("\n".join(f"warning: {line}" if i == 0 else line for i, line in enumerate(not_ready.lines())),
                      file=sys.stderr, flush=True)
        down = cluster.kube_api.operations.wait_for_down() if cluster.kube_api else None  # `netemu down`
        waiters = [asyncio.ensure_future(stop.wait())] + ([asyncio.ensure_future(down)] if down else [])
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()
    except NetemuError as exc:
        if ready_fd is not None:
            os.write(ready_fd, f"ERR\n{exc}\n".encode())
            os.close(ready_fd)
            ready_fd = None
        raise
    finally:
        if cluster is not None:
            _withdraw_kubeconfig(cluster)
            await cluster.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if args.ready_fd is not None:  # detached: the parent's log of this process goes too
            _detached_log(_cluster_name(args)).unlink(missing_ok=True)
    if ready_fd is None and args.ready_fd is None:
        print(f'cluster "{cluster.name}" stopped', flush=True)
    return 0


def _publish_kubeconfig(cluster: Any, args: argparse.Namespace) -> str:
    """`up`: the cluster's kubectl context in the user's kubeconfig (or --kubeconfig FILE)."""
    if args.no_kubeconfig or cluster.kube_api is None:
        return ""
    from netemu.kubeapi import kubeconfig
    return kubeconfig.publish(cluster, Path(args.kubeconfig) if args.kubeconfig else kubeconfig.default_path())


def _withdraw_kubeconfig(cluster: Any) -> None:
    """`up` ending: the context it merged leaves the user's kubeconfig again."""
    from netemu import statedir
    from netemu.kubeapi import kubeconfig
    from netemu.state import STATE_FILE
    try:
        info = json.loads(statedir.read_file(cluster.state.directory, STATE_FILE) or b"{}")
    except (OSError, ValueError, NetemuError):
        return
    line = kubeconfig.withdraw(cluster.name, info)
    if line and line.startswith("kubeconfig left"):
        print(f"warning: {line}", file=sys.stderr, flush=True)


def _detached_log(name: str) -> Path:
    """The log of `up --detach`'s cluster process, in the state root (created 0700, verified)."""
    from netemu.statedir import ensure_root
    return ensure_root(state_root()) / f"{name}.up.log"


def _up_detached(args: argparse.Namespace, argv: Sequence[str]) -> int:
    log_path = _detached_log(_cluster_name(args))
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    read_fd, write_fd = os.pipe()
    child_argv = [sys.executable, "-m", "netemu.cli", *[a for a in argv if a not in ("-d", "--detach")],
                  "--ready-fd", str(write_fd)]
    with os.fdopen(log_fd, "ab") as logf:
        proc = subprocess.Popen(child_argv, pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=os.getcwd())
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as r:
        data = r.read().decode(errors="replace")
    if data.startswith("OK\n"):
        print(data[3:], end="")
        print(f"(running in the background as pid {proc.pid})")
        return 0
    if data.startswith("FAIL\n"):  # up, but some pods will not become ready (or the wait timed out)
        report = json.loads(data[5:])
        print(report["summary"])
        print(f"(running in the background as pid {proc.pid})", flush=True)
        problem = report["problem"]
        print("\n".join(["error: " + problem[0], *problem[1:], _inspect_hint(_cluster_name(args), report["pod"],
                                                                            proc.pid)]), file=sys.stderr)
        return 1
    proc.wait()
    message = data[4:].strip() if data.startswith("ERR\n") else ""
    if not message:
        try:
            message = log_path.read_text().strip().splitlines()[-1]
        except (OSError, IndexError):
            message = f"the cluster process exited with status {proc.returncode}"
    raise ClusterError(message)


# ---------------------------------------------------------------------------- other commands


def _impair_settings(args: argparse.Namespace) -> dict[str, str] | None:
    """The settings ``impair`` asks for, as given (None for ``--clear``); the cluster reads them."""
    settings = {k: getattr(args, k) for k in ("delay", "jitter", "rate", "loss", "reset", "duplicate")
                if getattr(args, k)}
    if args.clear:
        if settings:
            raise NetemuError(f"error: --clear takes no settings (got --{' --'.join(settings)})")
        return None
    if not settings:
        raise NetemuError("error: say what to impair: --delay, --jitter, --rate, --loss, --reset or --duplicate "
                          "(or --clear)")
    return settings


def _cmd_capture(args: argparse.Namespace, client: Any) -> int:
    from netemu import cli_api
    from netemu.units import TIME_UNITS, parse_quantity
    duration = parse_quantity(args.duration, TIME_UNITS, "s", "duration") / 1000 if args.duration else 0.0
    path = os.path.abspath(args.file)
    started = cli_api.capture_start(client, pod=args.pod, node=args.node, link=args.link, namespace=args.namespace,
                                    filter=args.filter, count=args.count, path=path)
    print(f"capturing on {started['on']} to {args.file}"
          + ("" if duration or args.count else " (Ctrl-C to stop)"), file=sys.stderr, flush=True)
    deadline = time.monotonic() + duration if duration else None
    try:
        while deadline is None or time.monotonic() < deadline:
            if cli_api.capture_status(client, started["id"])["done"]:
                break
            time.sleep(0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finished = cli_api.capture_stop(client, started["id"])
    _emit(f"{finished['frames']} packets captured to {args.file}")
    if args.summary:
        _emit("\n".join(finished["summary"]))
    return 0


def _split_exec_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``exec``'s own arguments and its command: everything after the first ``--`` (kubectl's
    form), so flags may come before or after POD (``exec -it POD -c C -- CMD``). None when the
    command line has no ``--`` or is not ``exec``."""
    command_at = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if command_at is None or argv[command_at] != "exec" or "--" not in argv[command_at:]:
        return argv, None
    dash = argv.index("--", command_at)
    return argv[:dash], argv[dash + 1:]


def _cmd_exec(args: argparse.Namespace) -> int:
    cmd = args.cmd
    if not cmd:
        raise NetemuError("you must specify at least one command for the container: netemu exec POD -- CMD")
    from netemu import cli_api
    plan = cli_api.exec_plan(_api_client(_find_cluster(args.name)), args.pod, cmd, container=args.container,
                             namespace=args.namespace)
    from netemu.kubelet.runtime import exec_failure, start_refusal
    refusal = start_refusal(cmd[0], plan["env"], plan.get("cwd"))
    if refusal:
        raise NetemuError(exec_failure(refusal))
    if plan.get("warning"):
        print(f"netemu: warning: {plan['warning']}", file=sys.stderr)
    argv = plan["prefix"] + plan["argv"]
    if plan.get("cwd"):
        os.chdir(plan["cwd"])
    sys.stdout.flush()
    from netemu.spawn import close_inherited_fds
    close_inherited_fds()  # the command gets 0, 1 and 2, none of the descriptors this process inherited
    try:
        os.execvpe(argv[0], argv, plan["env"])
    except OSError as exc:  # the prefix's own program (unshare, nsenter) is missing or refused
        raise NetemuError(exec_failure(f'exec: "{argv[0]}": {exc.strerror or exc}')) from None
    return 0  # not reached


def _cmd_logs(args: argparse.Namespace) -> int:
    from netemu import cli_api
    cli_api.logs(_api_client(_find_cluster(args.name)), args.pod, container=args.container, namespace=args.namespace,
                 follow=args.follow, out=sys.stdout.buffer)
    return 0


def _check_cluster_names(args: argparse.Namespace) -> None:
    """--name (or $NETEMU_CLUSTER) names files under the state root: refuse a bad one before any is touched."""
    from netemu.config import check_cluster_name
    if not hasattr(args, "name"):
        return
    if args.name is not None:
        check_cluster_name(args.name, "--name")
    elif os.environ.get("NETEMU_CLUSTER"):
        check_cluster_name(os.environ["NETEMU_CLUSTER"], "$NETEMU_CLUSTER")


def _check_numbers(args: argparse.Namespace) -> None:
    """Numeric flags out of their range, refused before anything starts or is sent."""
    timeout = getattr(args, "timeout", None)
    if timeout is not None and not 0 <= timeout < float("inf"):
        raise NetemuError(f"error: --timeout {timeout:g}: must be a number of seconds, 0 or more")
    if getattr(args, "count", 0) < 0:
        raise NetemuError(f"error: --count {args.count}: must be 0 (no limit) or more")


def _run_remote(args: argparse.Namespace) -> int | None:
    """``netemu run --kubeconfig FILE`` (or $NETEMU_KUBECONFIG): scenarios on that cluster, or
    ``--cleanup``; None when the run is on netemu's own clusters."""
    kubeconfig = args.kubeconfig or os.environ.get("NETEMU_KUBECONFIG") or None
    remote_only = [flag for flag, given in (("--cleanup", args.cleanup), ("--context", args.context),
                                            ("--client-image", args.client_image),
                                            ("--wait-timeout", args.wait_timeout is not None)) if given]
    if kubeconfig is None:
        if remote_only:
            raise NetemuError(f"error: {remote_only[0]} goes with --kubeconfig FILE (or NETEMU_KUBECONFIG)")
        return None
    if args.backend is not None:
        raise NetemuError("error: --backend chooses a netemu backend; with --kubeconfig the cluster is given")
    if args.proxy_mode is not None:
        raise NetemuError("error: --proxy-mode chooses how netemu proxies; with --kubeconfig the cluster is given")
    from netemu.scenario.remote_runner import run_command
    return run_command(args.paths, sys.stdout, kubeconfig=kubeconfig, context=args.context, cleanup_only=args.cleanup,
                       junit=args.junit, keep=args.keep, pattern=args.pattern, client_image=args.client_image,
                       wait_timeout=args.wait_timeout)


def run(argv: Sequence[str]) -> int:
    parser = build_parser()
    argv, exec_command = _split_exec_command(list(argv))
    args, extra = parser.parse_known_args(argv)
    if extra and isinstance(getattr(args, "names", None), list) and not any(a.startswith("-") for a in extra):
        args.names += extra  # kubectl takes names after flags too: get svc -n kube-system kube-dns
    elif extra and args.command == "exec" and exec_command is None and not any(a.startswith("-") for a in extra):
        args.cmd += extra  # the old form without --: exec POD -c C CMD ARGS
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 2
    if exec_command is not None:
        if args.cmd:
            parser.error(f"exec takes one pod before --, got also: {' '.join(args.cmd)}")
        args.cmd = exec_command
    elif args.command == "exec" and args.cmd:
        print("netemu: warning: exec POD CMD is deprecated in kubectl; use exec POD -- CMD", file=sys.stderr)
    _check_cluster_names(args)
    _check_numbers(args)
    cmd = args.command
    if cmd == "up":
        if args.detach:
            return _up_detached(args, argv)
        return _run_loop(_up(args))
    if cmd == "run":
        remote = _run_remote(args)
        if remote is not None:
            return remote
        if not args.paths:
            raise NetemuError("error: run: the following arguments are required: FILE|DIR")
        from netemu.scenario import run_files
        return run_files(args.paths, sys.stdout, junit=args.junit, keep=args.keep, pattern=args.pattern,
                         backend=args.backend, proxy_mode=args.proxy_mode)
    if cmd == "gc":
        from netemu.fabric.netns.namespaces import collect, collect_cluster_garbage, orphans
        from netemu.kubeapi import kubeconfig
        from netemu.state import gc_all, list_clusters
        removed = [f"{c.name}: {line}" for c in list_clusters(state_root()) if not c.alive
                   for line in [kubeconfig.withdraw(c.name, c.info)] if line]
        removed += gc_all(state_root(), collect_cluster_garbage)
        unaccounted = orphans(state_root())
        if args.orphans:
            removed += [f"orphan: {line}" for line in collect(unaccounted)]
        else:
            removed += [f"orphan: netns {name} (no cluster accounts for it; `netemu gc --orphans` removes it)"
                        for name in unaccounted]
        _emit("\n".join(removed) if removed else "nothing to collect")
        return 0
    if cmd == "kubeconfig":
        from netemu import statedir
        from netemu.kubeapi import KUBECONFIG
        target = _find_cluster(args.name)
        text = statedir.read_file(target.directory, KUBECONFIG)
        if text is None:
            raise ClusterError(f'cluster "{target.name}" serves no Kubernetes API (it has no kubeconfig)')
        print(text.decode(), end="")
        return 0
    if cmd == "clusters":
        from netemu.state import list_clusters
        rows = [f"{c.name}\t{'running' if c.alive else 'dead (run netemu gc)'}\tpid {c.info.get('pid')}"
                for c in list_clusters(state_root())]
        _emit("\n".join(rows) if rows else "no clusters")
        return 0
    if cmd == "down":
        target = _find_cluster(args.name)
        from netemu import cli_api
        cli_api.down(_api_client(target))
        pid = target.info["pid"]
        deadline = time.monotonic() + 30
        # Stopped once its state directory is gone and, for `netemu up`, its process has ended
        # (`run --keep` goes on with the next scenario in the same process).
        def stopping() -> bool:
            return target.alive and (target.directory.exists() or target.info.get("process") == "up")
        while stopping() and time.monotonic() < deadline:
            time.sleep(0.05)
        if stopping():
            raise ClusterError(f"cluster {target.name} (pid {pid}) did not stop within 30s")
        _emit(f'cluster "{target.name}" stopped')
        return 0
    if cmd in ("impair", "partition", "heal"):  # through the Kubernetes API: netemu.dev objects
        from netemu import cli_chaos
        target = _find_cluster(args.name)
        api = _api_client(target)
        if cmd == "impair":
            _emit(cli_chaos.impair(api, args, _impair_settings(args)))
        elif cmd == "partition":
            _emit(cli_chaos.partition(api, args.groups))
        else:
            _emit(cli_chaos.heal(api, target.info.get("backend", "")))
        return 0
    documents = _read_documents(getattr(args, "filename", None) or []) if cmd in ("apply", "delete") else []
    from netemu import cli_api
    client = _api_client(_find_cluster(args.name))
    if cmd == "apply":
        _emit("\n".join(cli_api.apply_documents(client, documents, args.namespace)))
    elif cmd == "delete":
        if args.filename:
            lines = cli_api.apply_documents(client, documents, args.namespace, delete=True)
        else:
            if not args.args:
                raise NetemuError("error: you must provide one or more resources by argument or filename")
            first = args.args[0]
            if "/" in first:
                lines = []
                for ref in args.args:
                    kind, _, name = ref.partition("/")
                    lines += cli_api.delete(client, kind, [name], args.namespace)
            else:
                if len(args.args) < 2:
                    raise NetemuError("error: resource(s) were provided, but no name was specified")
                lines = cli_api.delete(client, first, args.args[1:], args.namespace)
        _emit("\n".join(lines))
    elif cmd == "get":
        kinds = args.kind.split(",")
        names = args.names
        if len(kinds) == 1 and "/" in kinds[0]:
            kind, _, name = kinds[0].partition("/")
            kinds, names = [kind], [name, *names]
        from netemu import cli_api
        _emit(cli_api.get(_api_client(_find_cluster(args.name)), ",".join(kinds), names, namespace=args.namespace,
                          all_namespaces=args.all_namespaces, output=args.output or "", selector=args.selector or ""))
    elif cmd == "describe":
        kind, names = args.kind, args.names
        if "/" in kind:
            kind, _, name = kind.partition("/")
            names = [name, *names]
        _emit(cli_api.describe(client, kind, names, args.namespace))
    elif cmd == "exec":
        return _cmd_exec(args)
    elif cmd == "logs":
        return _cmd_logs(args)
    elif cmd == "scale":
        kind, _, name = args.target.rpartition("/")
        kinds = {"": "Deployment", "deployment": "Deployment", "deploy": "Deployment", "deployments": "Deployment",
                 "deployment.apps": "Deployment", "deployments.apps": "Deployment", "statefulset": "StatefulSet",
                 "statefulsets": "StatefulSet", "sts": "StatefulSet", "statefulset.apps": "StatefulSet",
                 "statefulsets.apps": "StatefulSet", "rs": "ReplicaSet", "replicaset": "ReplicaSet",
                 "replicasets": "ReplicaSet", "replicaset.apps": "ReplicaSet", "replicasets.apps": "ReplicaSet"}
        if kind not in kinds:
            raise NetemuError(f"error: scaling {kind} is not supported; deployments, replicasets and "
                              "statefulsets scale")
        from netemu import cli_api
        _emit(cli_api.scale(_api_client(_find_cluster(args.name)), kinds[kind], name, args.replicas, args.namespace))
    elif cmd == "wait":
        _emit(cli_api.wait_ready(client, args.timeout))
    elif cmd == "capture":
        return _cmd_capture(args, client)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv or "--verbose" in argv
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(argv)
    except NetemuError as exc:
        msg = str(exc)
        print(msg if msg.startswith("error:") else f"error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug in netemu: say so plainly; the traceback only with -v
        if verbose:
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (run with -v for details and please report it)",
              file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
