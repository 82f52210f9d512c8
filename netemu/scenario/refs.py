"""``{{ references }}`` in scenario strings: their grammar, and their values in a running cluster.

    svc.NAME.clusterIP | .nodePort | .port | .targetPort   (the first port)
    svc.NAME.ports.PORT.nodePort | .port | .targetPort     (PORT: a port name or index)
    svc.NAME.ingress | .externalName | .name | .namespace
    pod.NAME.ip | .name | .node | .hostIP | .phase | .namespace
    pods.SELECTOR.ips | .names | .nodes | .count           (SELECTOR: run=my-nginx ...)
    node.NAME.ip | .name         nodes.ips | .names | .count
    cluster.dns | .name | .domain | .backend | .serviceCIDR | .podCIDR | .nodeCIDR | .lbCIDR

``svc``/``service`` and ``pod`` names may carry a namespace (``svc.prod/my-svc.clusterIP``);
pod and node names may be globs with an optional index: ``pod.my-nginx-*.ip`` is the oldest
matching pod not being deleted, ``pod.my-nginx-*[1].ip`` the next, ``[-1]`` the newest (nodes go
by name). A string that is exactly
one reference takes the referenced value itself (a number, a list); inside a longer string a
list is joined with commas.

``check_text`` finds grammar mistakes before anything runs; ``Resolver`` fills values in and
raises ``ScenarioError`` naming the reference when the cluster has no such thing.
"""
from __future__ import annotations

import fnmatch
import re
from typing import Any

from netemu.errors import NetemuError, NotFoundError, ScenarioError
from netemu.scenario.fields import suggest
from netemu.scenario.selectors import parse_selector

TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)

SVC_ATTRS = ("clusterIP", "nodePort", "port", "targetPort", "ingress", "externalName", "name", "namespace")
PORT_ATTRS = ("nodePort", "port", "targetPort")
POD_ATTRS = ("ip", "name", "node", "hostIP", "phase", "namespace")
PODS_ATTRS = ("ips", "names", "nodes", "count")
NODE_ATTRS = ("ip", "name")
NODES_ATTRS = ("ips", "names", "count")
CLUSTER_ATTRS = ("dns", "name", "domain", "backend", "serviceCIDR", "podCIDR", "nodeCIDR", "lbCIDR")
KINDS = ("svc", "service", "pod", "pods", "node", "nodes", "cluster")

_NAME = r"(?:(?P<ns>[a-z0-9]([-a-z0-9]*[a-z0-9])?)/)?(?P<name>[^\[\]/]+?)"
_SVC = re.compile(rf"^(?:svc|service)\.{_NAME}\.(?P<attr>ports\.(?P<port>[^.]+)\.(?P<pattr>[A-Za-z]+)|[A-Za-z]+)$")
_POD = re.compile(rf"^pod\.{_NAME}(?:\[(?P<index>-?\d+)\])?\.(?P<attr>[A-Za-z]+)$")
_PODS = re.compile(r"^pods\.(?P<selector>.+)\.(?P<attr>[A-Za-z]+)$")
_NODE = re.compile(r"^node\.(?P<name>[^\[\]/]+?)(?:\[(?P<index>-?\d+)\])?\.(?P<attr>[A-Za-z]+)$")
_NODES = re.compile(r"^nodes\.(?P<attr>[A-Za-z]+)$")
_CLUSTER = re.compile(r"^cluster\.(?P<attr>[A-Za-z]+)$")

USAGE = ("references look like svc.NAME.clusterIP, svc.NAME.nodePort, svc.NAME.ports.PORT.nodePort, "
         "svc.NAME.ingress, pod.NAME.ip, pods.SELECTOR.ips, node.NAME.ip, cluster.dns")


def _attr_problem(kind: str, attr: str, known: tuple[str, ...]) -> str:
    return f'unknown {kind} attribute "{attr}"{suggest(attr, known)}; use one of {", ".join(known)}'


def check_expr(expr: str) -> str | None:
    """None when ``expr`` (the text between the braces) is well formed, else why not."""
    head = expr.split(".", 1)[0]
    if head not in KINDS:
        return f'unknown reference kind "{head}"{suggest(head, KINDS)}; {USAGE}'
    if head in ("svc", "service"):
        m = _SVC.match(expr)
        if not m:
            return f"cannot read a service reference; {USAGE}"
        if m["port"] is not None:
            return None if m["pattr"] in PORT_ATTRS else _attr_problem("service port", m["pattr"], PORT_ATTRS)
        if m["attr"] in SVC_ATTRS:
            return None
        return _attr_problem("service", m["attr"], SVC_ATTRS + ("ports.PORT.nodePort",))
    if head == "pod":
        m = _POD.match(expr)
        if not m:
            return f"cannot read a pod reference; {USAGE}"
        return None if m["attr"] in POD_ATTRS else _attr_problem("pod", m["attr"], POD_ATTRS)
    if head == "pods":
        m = _PODS.match(expr)
        if not m:
            return f"cannot read a pods reference; {USAGE}"
        if m["attr"] not in PODS_ATTRS:
            return _attr_problem("pods", m["attr"], PODS_ATTRS)
        try:
            parse_selector(m["selector"])
        except ValueError as exc:
            return str(exc)
        return None
    if head == "node":
        m = _NODE.match(expr)
        if not m:
            return f"cannot read a node reference; {USAGE}"
        return None if m["attr"] in NODE_ATTRS else _attr_problem("node", m["attr"], NODE_ATTRS)
    if head == "nodes":
        m = _NODES.match(expr)
        return None if m and m["attr"] in NODES_ATTRS else _attr_problem("nodes", expr[6:], NODES_ATTRS)
    m = _CLUSTER.match(expr)
    return None if m and m["attr"] in CLUSTER_ATTRS else _attr_problem("cluster", expr[8:], CLUSTER_ATTRS)


def check_text(text: str) -> list[str]:
    """Every grammar problem in the references of ``text``."""
    problems = []
    for m in TEMPLATE.finditer(text):
        expr = m.group(1).strip()
        why = check_expr(expr)
        if why:
            problems.append(f"{{{{ {expr} }}}}: {why}")
    if "{{" in TEMPLATE.sub("", text):
        problems.append('a "{{" without its "}}"')
    return problems


def check_value(value: Any) -> list[tuple[list[str | int], str]]:
    """(relative path, problem) for every string inside ``value``."""
    out: list[tuple[list[str | int], str]] = []
    if isinstance(value, str):
        out += [([], p) for p in check_text(value)]
    elif isinstance(value, dict):
        for k, v in value.items():
            out += [([str(k), *sub], p) for sub, p in check_value(v)]
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += [([i, *sub], p) for sub, p in check_value(v)]
    return out


def _pick(names: list[str], pattern: str, index: int, what: str) -> str:
    """The ``index``-th of ``names`` (already in order) matching ``pattern``; negative counts from the end."""
    if any(c in pattern for c in "*?"):
        matches = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    else:
        matches = [pattern] if pattern in names else []
    if not matches:
        raise LookupError(f'no {what} matches "{pattern}"')
    if not -len(matches) <= index < len(matches):
        raise LookupError(f'{len(matches)} {what}(s) match "{pattern}", so there is no [{index}]')
    return matches[index]


def dns_server(cluster: Any) -> str:
    """``IP`` or ``IP:PORT`` of the cluster DNS: the kube-dns Service's address and port (53, or a
    high port where this process may not bind 53)."""
    ip = cluster.config.dns_ip
    try:
        port = cluster.get("Service", "kube-dns", "kube-system").spec.ports[0].port
    except (NetemuError, IndexError):
        port = 53
    return ip if port == 53 else f"{ip}:{port}"


class Resolver:
    """Fills references in from ``cluster`` (a ``netemu.Cluster``) at the moment of the call."""

    def __init__(self, cluster: Any):
        self.cluster = cluster
        self._seen: dict[str, int] = {}   # pod uid -> when this resolver first saw it

    def pods_in_order(self, namespace: str) -> list[Any]:
        """The pods of ``namespace``, oldest first: by creation time (whole seconds), then by when
        this resolver first saw them, then by name."""
        pods = sorted(self.cluster.pods(namespace),
                      key=lambda p: (p.metadata.creation_timestamp or "", p.metadata.name))
        for pod in pods:
            self._seen.setdefault(pod.metadata.uid, len(self._seen))
        return sorted(pods, key=lambda p: (p.metadata.creation_timestamp or "", self._seen[p.metadata.uid]))

    def resolve(self, value: Any, path: str = "") -> Any:
        """``value`` with every reference filled in; a failure names the field at ``path``."""
        if isinstance(value, str):
            try:
                return self.resolve_text(value)
            except ScenarioError as exc:
                raise ScenarioError(f"{path}: {exc}" if path else str(exc)) from None
        if isinstance(value, dict):
            return {k: self.resolve(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    def resolve_text(self, text: str) -> Any:
        if "{{" not in text:
            return text
        whole = TEMPLATE.fullmatch(text)
        if whole and "}}" not in whole.group(1):  # one reference and nothing else: keep its type
            return self.value(whole.group(1).strip())

        def one(m: re.Match[str]) -> str:
            value = self.value(m.group(1).strip())
            return ",".join(map(str, value)) if isinstance(value, list) else str(value)
        return TEMPLATE.sub(one, text)

    def value(self, expr: str) -> Any:
        why = check_expr(expr)
        if why:
            raise ScenarioError(f"{{{{ {expr} }}}}: {why}")
        try:
            return self._value(expr)
        except (LookupError, NetemuError) as exc:
            message = exc.args[0] if isinstance(exc, LookupError) else str(exc)
            raise ScenarioError(f"{{{{ {expr} }}}}: {message}") from None

    # ------------------------------------------------------------------ by kind

    def _value(self, expr: str) -> Any:
        head = expr.split(".", 1)[0]
        if head in ("svc", "service"):
            return self._service(_SVC.match(expr))
        if head == "pod":
            m = _POD.match(expr)
            return self._pod_attr(self.pod(m["ns"] or "default", m["name"], int(m["index"] or 0)), m["attr"])
        if head == "pods":
            m = _PODS.match(expr)
            match = parse_selector(m["selector"])
            pods = [p for p in self.pods_in_order("default") if match(p.metadata.labels)
                    and not p.metadata.deletion_timestamp]
            if m["attr"] == "count":
                return len(pods)
            attr = {"ips": "ip", "names": "name", "nodes": "node"}[m["attr"]]
            return [self._pod_attr(p, attr) for p in pods]
        if head == "node":
            m = _NODE.match(expr)
            name = _pick(self._node_names(), m["name"], int(m["index"] or 0), "node")
            return self.cluster.node_ip(name) if m["attr"] == "ip" else name
        if head == "nodes":
            names = self._node_names()
            attr = _NODES.match(expr)["attr"]
            if attr == "count":
                return len(names)
            return [self.cluster.node_ip(n) for n in names] if attr == "ips" else names
        attr = _CLUSTER.match(expr)["attr"]
        config = self.cluster.config
        return {"dns": config.dns_ip, "name": config.name, "domain": config.cluster_domain,
                "backend": config.backend, "serviceCIDR": config.service_cidr, "podCIDR": config.pod_cidr,
                "nodeCIDR": config.node_cidr, "lbCIDR": config.lb_cidr}[attr]

    def _node_names(self) -> list[str]:
        return sorted(n.metadata.name for n in self.cluster.list("node"))

    def _service(self, m: re.Match[str]) -> Any:
        ns, name = m["ns"] or "default", m["name"]
        try:
            svc = self.cluster.get("Service", name, ns)
        except NotFoundError:
            raise LookupError(f"service {ns}/{name} not found") from None
        spec = svc.spec
        attr = m["attr"]
        if attr == "name":
            return name
        if attr == "namespace":
            return ns
        if attr == "clusterIP":
            if not spec.cluster_ip or spec.cluster_ip == "None":
                raise LookupError(f"service {ns}/{name} has no cluster IP (type {spec.type}"
                                  + (", headless" if spec.cluster_ip == "None" else "") + ")")
            return spec.cluster_ip
        if attr == "externalName":
            if not spec.external_name:
                raise LookupError(f"service {ns}/{name} has no externalName (type {spec.type})")
            return spec.external_name
        if attr == "ingress":
            ingress = svc.status.load_balancer.ingress
            if not ingress:
                raise LookupError(f"service {ns}/{name} has no load-balancer ingress yet (type {spec.type}, "
                                  "<pending>); wait for it with `wait: {for: lb-ingress, service: ...}`")
            return ingress[0].ip or ingress[0].hostname
        if not spec.ports:
            raise LookupError(f"service {ns}/{name} has no ports")
        if m["port"] is not None:
            key = m["port"]
            if key.isdigit():
                if int(key) >= len(spec.ports):
                    raise LookupError(f"service {ns}/{name} has {len(spec.ports)} port(s), so there is no port {key}")
                port = spec.ports[int(key)]
            else:
                port = next((p for p in spec.ports if p.name == key), None)
                if port is None:
                    names = ", ".join(p.name or "(unnamed)" for p in spec.ports)
                    raise LookupError(f'service {ns}/{name} has no port named "{key}" (ports: {names})')
            attr = m["pattr"]
        else:
            port = spec.ports[0]
        if attr == "nodePort":
            if not port.node_port:
                raise LookupError(f"service {ns}/{name} has no nodePort (type {spec.type})")
            return port.node_port
        if attr == "targetPort":
            return port.target_port if port.target_port is not None else port.port
        return port.port

    def pod(self, namespace: str, pattern: str, index: int = 0) -> Any:
        pods = {p.metadata.name: p for p in self.pods_in_order(namespace)}
        if any(c in pattern for c in "*?"):
            live = [n for n, p in pods.items() if not p.metadata.deletion_timestamp]
        else:
            live = list(pods)
        what = "pod" if namespace == "default" else f"pod in namespace {namespace}"
        return pods[_pick(live, pattern, index, what)]

    @staticmethod
    def _pod_attr(pod: Any, attr: str) -> Any:
        name = f"{pod.metadata.namespace}/{pod.metadata.name}"
        if attr == "name":
            return pod.metadata.name
        if attr == "namespace":
            return pod.metadata.namespace
        if attr == "phase":
            return pod.status.phase or "Pending"
        if attr == "node":
            if not pod.spec.node_name:
                raise LookupError(f"pod {name} is not scheduled yet")
            return pod.spec.node_name
        if attr == "hostIP":
            if not pod.status.host_ip:
                raise LookupError(f"pod {name} has no host IP yet")
            return pod.status.host_ip
        if not pod.status.pod_ip:
            raise LookupError(f"pod {name} has no IP yet (phase {pod.status.phase or 'Pending'})")
        return pod.status.pod_ip
