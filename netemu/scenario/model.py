"""Scenario files: reading and validating them whole, before anything runs.

    name: NodePort                   # optional; defaults to the file name
    description: ...
    cluster: {nodes: 3, backend: loopback, serviceCIDR: ..., podCIDR: ..., nodeCIDR: ...,
              lbCIDR: ..., nodePortRange: 30000-32767, clusterDomain: cluster.local}
    requires: [service-proxy]        # capabilities; the scenario is skipped without them
    manifests: [PATH | INLINE YAML | MAPPING, ...]   # applied, then every pod ready, before the steps
    steps:
      - KIND: ...                    # one action per step; name:, timeout:, expect: beside it
        name: ...                    #   (timeout: and expect: may also go inside its mapping)

Every problem in every file is reported at once, as ``FILE: PATH: problem``
(``scenarios/x.yaml: steps[3].curl.expct: unknown field (did you mean "expect"?)``); YAML syntax
errors carry line and column. ``load_scenarios`` raises one ``ScenarioError`` holding them all.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from netemu.api.yamlload import MAX_NESTING_DEPTH
from netemu.config import ClusterConfig
from netemu.errors import ClusterError, ScenarioError
from netemu.scenario import capabilities
from netemu.scenario.fields import Fields, Problems, describe, join, suggest
from netemu.scenario.refs import check_value
from netemu.scenario.step_objects import Source, read_sources
from netemu.scenario.steps import COMMON, Parse, StepKind, StepText, kinds, split_common

SCENARIO_SUFFIXES = (".yaml", ".yml")
BACKENDS = ("loopback", "netns")
CLUSTER_FIELDS = {  # scenario spelling -> ClusterConfig attribute
    "serviceCIDR": "service_cidr", "podCIDR": "pod_cidr", "nodeCIDR": "node_cidr", "lbCIDR": "lb_cidr",
    "nodePortRange": "node_port_range", "clusterDomain": "cluster_domain", "proxyMode": "proxy_mode",
}


@dataclass
class Step:
    index: int
    kind: StepKind
    text: StepText
    spec: Any                         # as parsed at load time (references not yet filled in)

    @property
    def path(self) -> str:
        return f"steps[{self.index}]"


@dataclass
class Scenario:
    path: Path
    name: str
    description: str = ""
    nodes: int | list[str] = 1
    backend: str = "loopback"
    overrides: dict[str, Any] = field(default_factory=dict)   # ClusterConfig keyword arguments
    requires: list[str] = field(default_factory=list)
    manifests: list[Source] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)

    @property
    def label(self) -> str:
        return str(self.path)

    @property
    def base_dir(self) -> Path:
        return self.path.resolve().parent


class _Loader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None and key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f'duplicate field "{key}"', mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_error(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem
    return str(exc)


def _nested_deeper_than(data: Any, limit: int) -> bool:
    """Whether lists and mappings nest more than ``limit`` deep in ``data`` (walked without recursion)."""
    stack = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, (dict, list)):
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def read_yaml(path: Path, label: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{label}: {getattr(exc, 'strerror', None) or exc}") from exc
    too_deep = ScenarioError(f"{label}: lists and mappings nest more than {MAX_NESTING_DEPTH} levels deep")
    try:
        documents = list(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{label}: {_yaml_error(exc)}") from exc
    except RecursionError:  # the YAML composer recurses per level: far too deep to read
        raise too_deep from None
    if any(_nested_deeper_than(d, MAX_NESTING_DEPTH) for d in documents):
        raise too_deep  # every later step walks the data recursively
    documents = [d for d in documents if d is not None]
    if not documents:
        raise ScenarioError(f"{label}: empty file (a scenario is a mapping with steps:)")
    if len(documents) > 1:
        raise ScenarioError(f"{label}: one scenario per file, found {len(documents)} YAML documents")
    return documents[0]


def parse_scenario(data: Any, path: Path, label: str | None = None) -> Scenario:
    """A scenario from its decoded YAML; raises ScenarioError listing every problem."""
    label = label or str(path)
    problems = Problems()
    top = Fields(data, "", problems)
    if not top.ok:
        raise ScenarioError(f"{label}: a scenario is a mapping with steps:, got {describe(data)}")
    scenario = Scenario(path=path, name=path.stem)
    name = top.take("name", "str")
    if name is not None:
        scenario.name = name.strip() or path.stem
    scenario.description = (top.take("description", "str", default="") or "").strip()
    requires = top.take("requires", "str-list", default=[]) or []
    for index, cap in enumerate(requires):
        if cap not in capabilities.KNOWN:
            problems.add(join("requires", index), f'unknown capability "{cap}"{suggest(cap, capabilities.KNOWN)}; '
                                                  f"known: {', '.join(capabilities.KNOWN)}")
    scenario.requires = list(requires)
    _read_cluster(top, scenario, problems)
    base_dir = scenario.base_dir
    if top.has("manifests"):
        raw = top.raw("manifests")
        _check_refs(raw, "manifests", problems)
        p = Parse(raw, None, False, "manifests", "", problems, True, base_dir)
        scenario.manifests = read_sources(p, raw, "manifests", validate=True)
    raw_steps = top.take("steps", "list", default=[]) or []
    table = kinds()
    for index, raw_step in enumerate(raw_steps):
        step = _read_step(index, raw_step, table, problems, base_dir)
        if step is not None:
            scenario.steps.append(step)
    top.finish()
    if problems:
        raise ScenarioError("\n".join(f"{label}: {p}" for p in problems))
    return scenario


def _read_cluster(top: Fields, scenario: Scenario, problems: Problems) -> None:
    if not top.has("cluster"):
        if "netns" in scenario.requires:
            scenario.backend = "netns"
        return
    c = Fields(top.raw("cluster"), "cluster", problems)
    nodes = c.take("nodes")
    if nodes is not None:
        if isinstance(nodes, int) and not isinstance(nodes, bool) and nodes >= 1:
            scenario.nodes = nodes
        elif isinstance(nodes, list) and nodes and all(isinstance(n, str) for n in nodes):
            scenario.nodes = list(nodes)
        else:
            problems.add("cluster.nodes", f"expected a number of nodes or a list of node names, got {describe(nodes)}")
    backend = c.take("backend", "str", choices=BACKENDS)
    scenario.backend = backend or ("netns" if "netns" in scenario.requires else "loopback")
    for key, attr in CLUSTER_FIELDS.items():
        value = c.take(key, "str")
        if value is not None:
            scenario.overrides[attr] = value
    c.finish()
    try:
        ClusterConfig(name="check", nodes=ClusterConfig.node_names(scenario.nodes), backend=scenario.backend,
                      **scenario.overrides).validate()
    except (ClusterError, TypeError) as exc:
        problems.add("cluster", str(exc))


def _check_refs(value: Any, path: str, problems: Problems) -> None:
    for sub, problem in check_value(value):
        where = path
        for key in sub:
            where = join(where, key)
        problems.add(where, problem)


def _read_step(index: int, raw: Any, table: dict[str, StepKind], problems: Problems, base_dir: Path) -> Step | None:
    path = f"steps[{index}]"
    if not isinstance(raw, dict):
        problems.add(path, f"expected a mapping such as {{curl: {{url: ...}}}}, got {describe(raw)}")
        return None
    actions = [k for k in raw if k not in COMMON]
    if not actions and "expect" in raw:
        actions = ["expect"]           # the expect step: {expect: {object: ..., field: ..., equals: ...}}
        outer = {k: v for k, v in raw.items() if k != "expect"}
    else:
        outer = {k: v for k, v in raw.items() if k in COMMON}
    if not actions:
        problems.add(path, "a step needs an action: " + ", ".join(table))
        return None
    if len(actions) > 1:
        unknown = [a for a in actions if a not in table]
        if unknown:
            for a in unknown:
                problems.add(join(path, str(a)), "unknown field" + suggest(str(a), [*table, *COMMON]))
        else:
            problems.add(path, f"one action per step, got {' and '.join(map(str, actions))}")
        return None
    action = str(actions[0])
    if action not in table:
        problems.add(join(path, action), "unknown step kind" + suggest(action, table) + "; known: " + ", ".join(table))
        return None
    kind = table[action]
    _check_refs(raw, path, problems)
    text = split_common(kind, raw[action], outer, path, problems)
    p = Parse(text.value, text.expect, text.has_expect, text.path, text.expect_path, problems, True, base_dir)
    before = len(problems)
    spec = kind.parse(p)
    return Step(index, kind, text, spec) if len(problems) == before else None


def load_scenario(path: str | Path) -> Scenario:
    label = str(path)
    return parse_scenario(read_yaml(Path(path), label), Path(path), label)


def scenario_files(paths: list[str]) -> list[Path]:
    """Files named, and the *.yaml / *.yml files of directories named (sorted, not recursive)."""
    files: list[Path] = []
    missing = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and p.suffix in SCENARIO_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            missing.append(f'the path "{name}" does not exist')
    if missing:
        raise ScenarioError("\n".join(missing))
    if not files:
        raise ScenarioError(f"no scenario files (*.yaml) in {', '.join(paths)}")
    return files


def load_scenarios(paths: list[str]) -> list[Scenario]:
    """Every scenario under ``paths``, all validated; one ScenarioError lists every problem."""
    scenarios, errors = [], []
    for file in scenario_files(paths):
        try:
            scenarios.append(load_scenario(file))
        except ScenarioError as exc:
            errors.append(str(exc))
    if errors:
        raise ScenarioError("\n".join(errors))
    return scenarios
