"""What every node's nftables should hold, kept up to date change by change, as a controller does.

``PolicyState`` is fed pods, namespaces and policies one change at a time (``set_pod``,
``set_namespace``, ``set_policy``; ``None`` deletes) and answers ``node_rules(local)``, always equal
to ``nftables.render`` of everything it was told, without redoing what a change does not touch:

- policies are indexed by namespace, and each policy knows the pods it selects (and each pod the
  policies selecting it), so a pod change tests only the policies of its namespace;
- what each distinct selector matches (pods of a namespace, namespaces) is kept once and updated
  per change, so every rule naming that selector shares it;
- each selector rule's set knows its member pods: a pod change looks the pod up in each set's
  selections, a namespace change recomputes only the sets with a ``namespaceSelector`` that now
  answers differently for it, a policy change computes only its own sets;
- each pod's chains are cached and rebuilt only when the pod or a policy selecting it (before or
  after) changes, from each policy's rules cached per direction (rules with named ports depend on
  the pod: rebuilt for it; egress rules with named ports depend on every pod: rebuilt on any pod or
  namespace change).
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from netemu.api.labels import selector_matches
from netemu.api.networkpolicy import NetworkPolicy, NetworkPolicyPeer, policy_types
from netemu.api.objects import LabelSelector

from . import nftables
from .model import EGRESS, INGRESS, PodFacts

Key = tuple[str, str]  # (namespace, name)
DIRECTIONS = (INGRESS, EGRESS)


def pod_key(pod: PodFacts) -> Key:
    return (pod.namespace, pod.name)


def policy_key(policy: NetworkPolicy) -> Key:
    return (policy.metadata.namespace, policy.metadata.name)


class _RuleSet:
    """The set of one policy rule: the pods its selector peers match."""

    def __init__(self, namespace: str, peers: Sequence[NetworkPolicyPeer]):
        self.namespace = namespace
        self.peers = [(p.namespace_selector, p.pod_selector) for p in peers if p.ip_block is None]
        self.namespace_keys = {nftables.selector_key(n) for n, _pods in self.peers if n is not None}
        self.members: dict[Key, str] = {}  # pod -> its address
        self.ips: frozenset[str] = frozenset()

    def assign(self, members: dict[Key, str]) -> None:
        """Hold exactly ``members``."""
        self.members = members
        self.ips = frozenset(members.values())

    def update(self, key: Key, ip: str | None) -> None:
        """Put ``key`` in (with ``ip``) or out (None)."""
        if self.members.get(key) == ip:
            return
        if ip is None:
            del self.members[key]
        else:
            self.members[key] = ip
        self.ips = frozenset(self.members.values())


class PolicyState:
    """Pods, namespaces and policies, and what each pod's chains are, updated per change."""

    def __init__(self) -> None:
        self.pods: dict[Key, PodFacts] = {}          # pods with an IPv4 address
        self._ip: dict[Key, str] = {}                # and that address
        self.pods_by_namespace: dict[str, set[Key]] = {}
        self.labels: dict[str, dict[str, str]] = {}
        self.policies: dict[Key, NetworkPolicy] = {}
        self.policies_by_namespace: dict[str, set[Key]] = {}
        self._selected: dict[Key, set[Key]] = {}     # policy -> pods it selects
        self._selecting: dict[Key, set[Key]] = {}    # pod -> policies selecting it
        self._sets: dict[str, _RuleSet] = {}
        # selections shared by every rule that names the same selector:
        self._pod_selection: dict[str, dict[object, tuple[LabelSelector | None, set[Key]]]] = {}  # ns -> key ->
        self._namespace_match: dict[object, tuple[LabelSelector, dict[str, bool]]] = {}  # key -> ns -> matches
        self._policy_sets: dict[Key, dict[tuple[str, int], str]] = {}  # policy -> (direction, rule) -> set
        self._fragments: dict[tuple[Key, str], list[str]] = {}  # pod-independent rules of a policy
        self._egress_named: set[Key] = set()         # policies whose rules depend on every pod
        self._chains: dict[Key, dict[str, tuple[tuple[str, ...], frozenset[str]]]] = {}
        self._stale: set[Key] = set()                # pods whose chains must be rebuilt

    # --- changes -----------------------------------------------------------------------------

    def set_pod(self, key: Key, pod: PodFacts | None) -> None:
        """``pod`` is now what ``key`` is (None: gone, or no IPv4 address)."""
        if pod is not None and nftables.ipv4(pod) is None:
            pod = None
        old = self.pods.get(key)
        if old == pod:
            return
        namespace = key[0]
        if pod is None:
            self.pods.pop(key, None)
            self._ip.pop(key, None)
            self.pods_by_namespace.get(namespace, set()).discard(key)
            self._chains.pop(key, None)
            self._stale.discard(key)
        else:
            self.pods[key] = pod
            self._ip[key] = nftables.ipv4(pod) or ""
            self.pods_by_namespace.setdefault(namespace, set()).add(key)
            self._stale.add(key)
        for policy_key in self.policies_by_namespace.get(namespace, ()):
            self._reselect(policy_key, key)
        for selector, selected in self._pod_selection.get(namespace, {}).values():
            if pod is not None and (selector is None or selector_matches(selector, pod.labels)):
                selected.add(key)
            else:
                selected.discard(key)
        ip = self._ip.get(key)
        for rule_set in self._sets.values():
            rule_set.update(key, ip if pod is not None and self._in_set(rule_set, key) else None)
        self._egress_named_changed()

    def set_namespace(self, name: str, labels: Mapping[str, str] | None) -> None:
        """The namespace ``name`` now has ``labels`` (None: gone)."""
        old = self.labels.get(name, {})
        new = dict(labels) if labels is not None else {}
        if labels is None:
            self.labels.pop(name, None)
        else:
            self.labels[name] = new
        if old == new:
            return
        changed = set()
        for selector_key, (selector, matches) in self._namespace_match.items():
            if name in matches:
                now = selector_matches(selector, new)
                if matches[name] != now:
                    matches[name] = now
                    changed.add(selector_key)
        for rule_set in self._sets.values():
            if rule_set.namespace_keys & changed:
                rule_set.assign({key: self._ip[key] for key in self._set_members(rule_set)})
        self._egress_named_changed()

    def set_policy(self, key: Key, policy: NetworkPolicy | None) -> None:
        """``policy`` is now what ``key`` is (None: gone)."""
        namespace = key[0]
        if key in self.policies:
            for pod_key in self._selected.pop(key, set()):
                self._selecting[pod_key].discard(key)
                self._stale.add(pod_key)
            for name in self._policy_sets.pop(key, {}).values():
                self._sets.pop(name, None)
            for direction in DIRECTIONS:
                self._fragments.pop((key, direction), None)
            self._egress_named.discard(key)
            self.policies_by_namespace[namespace].discard(key)
            del self.policies[key]
        if policy is None:
            return
        self.policies[key] = policy
        self.policies_by_namespace.setdefault(namespace, set()).add(key)
        self._selected[key] = set()
        for pod_key in self.pods_by_namespace.get(namespace, ()):
            self._reselect(key, pod_key)
        if nftables.has_egress_named_ports(policy):
            self._egress_named.add(key)
        sets: dict[tuple[str, int], str] = {}
        for direction in policy_types(policy):
            rules = policy.spec.ingress if direction == INGRESS else policy.spec.egress
            for index, rule in enumerate(rules):
                peers = rule.from_ if direction == INGRESS else rule.to  # type: ignore[union-attr]
                if not any(p.ip_block is None for p in peers):
                    continue
                if direction == EGRESS and any(isinstance(p.port, str) for p in rule.ports):
                    continue
                name = nftables.set_name(policy, direction, index)
                rule_set = _RuleSet(namespace, peers)
                rule_set.assign({key: self._ip[key] for key in self._set_members(rule_set)})
                self._sets[name] = rule_set
                sets[(direction, index)] = name
        self._policy_sets[key] = sets

    def _pods_selected(self, namespace: str, selector: LabelSelector | None) -> set[Key]:
        """The pods of ``namespace`` that ``selector`` matches (None: all), kept up to date."""
        cached = self._pod_selection.setdefault(namespace, {})
        key = nftables.selector_key(selector) if selector is not None else None
        if key not in cached:
            cached[key] = (selector, {k for k in self.pods_by_namespace.get(namespace, ())
                                      if selector is None or selector_matches(selector, self.pods[k].labels)})
        return cached[key][1]

    def _namespace_matches(self, selector: LabelSelector, namespace: str) -> bool:
        """Whether ``selector`` matches the namespace's labels (none: no labels), kept up to date."""
        _selector, matches = self._namespace_match.setdefault(nftables.selector_key(selector), (selector, {}))
        if namespace not in matches:
            matches[namespace] = selector_matches(selector, self.labels.get(namespace, {}))
        return matches[namespace]

    def _in_set(self, rule_set: _RuleSet, key: Key) -> bool:
        namespace = key[0]
        return any((namespaces is None and namespace == rule_set.namespace
                    or namespaces is not None and self._namespace_matches(namespaces, namespace))
                   and key in self._pods_selected(namespace, pods) for namespaces, pods in rule_set.peers)

    def _set_members(self, rule_set: _RuleSet) -> set[Key]:
        members: set[Key] = set()
        for namespaces, pods in rule_set.peers:
            spaces = [rule_set.namespace] if namespaces is None else [
                ns for ns in self.pods_by_namespace if self._namespace_matches(namespaces, ns)]
            for ns in spaces:
                members |= self._pods_selected(ns, pods)
        return members

    def _reselect(self, policy_key: Key, pod_key: Key) -> None:
        policy = self.policies[policy_key]
        pod = self.pods.get(pod_key)
        now = pod is not None and selector_matches(policy.spec.pod_selector, pod.labels)
        was = pod_key in self._selected[policy_key]
        if now:
            self._selected[policy_key].add(pod_key)
            self._selecting.setdefault(pod_key, set()).add(policy_key)
        elif was:
            self._selected[policy_key].discard(pod_key)
            self._selecting[pod_key].discard(policy_key)
        if now or was:
            self._stale.add(pod_key)

    def _egress_named_changed(self) -> None:
        for policy_key in self._egress_named:
            self._stale.update(self._selected[policy_key])

    # --- what nodes hold ---------------------------------------------------------------------

    def _policy_rules(self, policy_key: Key, direction: str, pod: PodFacts) -> list[str]:
        policy = self.policies[policy_key]
        depends_on_pod = (policy_key in self._egress_named if direction == EGRESS
                          else nftables.has_ingress_named_ports(policy))
        cached = None if depends_on_pod else self._fragments.get((policy_key, direction))
        if cached is not None:
            return cached
        sets = self._policy_sets[policy_key]
        rules = nftables.policy_rules(
            policy, direction, pod.named_ports, lambda index, _peers: sets[(direction, index)],
            lambda ports, peers, ns: nftables.egress_named_rules(self.pods.values(), self.labels, ports, peers, ns))
        if not depends_on_pod:
            self._fragments[(policy_key, direction)] = rules
        return rules

    def _chains_of(self, key: Key) -> dict[str, tuple[tuple[str, ...], frozenset[str]]]:
        """The pod's chain per direction it is isolated for, with the sets the chain uses."""
        if key not in self._stale and key in self._chains:
            return self._chains[key]
        pod = self.pods[key]
        chains = {}
        selecting = sorted(self._selecting.get(key, ()))
        for direction in DIRECTIONS:
            policy_keys = [k for k in selecting if direction in policy_types(self.policies[k])]
            if not policy_keys:
                continue
            rules: list[str] = []
            used: set[str] = set()
            for policy_key in policy_keys:
                rules += self._policy_rules(policy_key, direction, pod)
                used.update(name for (d, _i), name in self._policy_sets[policy_key].items() if d == direction)
            rules.append("drop")
            chains[direction] = (tuple(rules), frozenset(used))
        self._chains[key] = chains
        self._stale.discard(key)
        return chains

    def node_rules(self, local: Iterable[Key]) -> nftables.NodeRules:
        """What a node whose pods are ``local`` should hold (equal to ``nftables.render``)."""
        sets: dict[str, frozenset[str]] = {}
        chains: dict[str, tuple[str, ...]] = {}
        maps: dict[str, dict[str, str]] = {INGRESS: {}, EGRESS: {}}
        for key in local:
            pod = self.pods.get(key)
            if pod is None:
                continue
            ip = self._ip[key]
            for direction, (rules, used) in self._chains_of(key).items():
                name = nftables.chain_name(direction, ip)
                chains[name] = rules
                maps[direction][ip] = name
                for set_name in used:
                    sets[set_name] = self._sets[set_name].ips
        return nftables.NodeRules(sets, chains, maps[INGRESS], maps[EGRESS])

    @classmethod
    def of(cls, pods: Iterable[PodFacts], labels: Mapping[str, Mapping[str, str]],
           policies: Iterable[NetworkPolicy]) -> "PolicyState":
        """A state holding everything at once (what a controller's first list gives)."""
        state = cls()
        for name, namespace_labels in labels.items():
            state.set_namespace(name, namespace_labels)
        for pod in pods:
            state.set_pod(pod_key(pod), pod)
        for policy in policies:
            state.set_policy(policy_key(policy), policy)
        return state
