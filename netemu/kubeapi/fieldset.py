"""Field sets as Kubernetes' structured-merge-diff has them, over objects in their JSON form.

A path is a tuple of elements written as ``managedFields`` writes them: ``f:<field>`` (a field
of a struct or a key of a map), ``k:{"name":"app"}`` (the item of a list map with these key
values), ``v:"x"`` (the item of a set), ``i:0`` (an index, never produced here: lists without
keys are atomic). A set is a frozenset of member paths; ``to_fields_v1``/``from_fields_v1``
convert it to and from the FieldsV1 trie (``{"f:spec": {"f:replicas": {}}}``, ``"."`` marking a
member that also has children).

The schema comes from ``typeinfo``: a list with a patch merge key is a list map (ports keyed by
port and protocol, as ``x-kubernetes-list-map-keys`` say), ``MERGED_SETS`` are sets, other lists
are atomic; maps are granular except the atomic ones below; label selectors are atomic structs.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any, Iterable

from .typeinfo import MERGED_SETS, PATCH_MERGE_KEYS, FieldType, attributes_of, fields_of

Path = tuple[str, ...]
FieldSet = frozenset[Path]

# Where the list-map keys of server-side apply differ from the strategic merge patch key.
_LIST_MAP_KEYS: dict[tuple[str, str], tuple[str, ...]] = {
    ("Container", "ports"): ("containerPort", "protocol"), ("ServiceSpec", "ports"): ("port", "protocol"),
}
_KEY_DEFAULTS = {"protocol": "TCP"}  # a key field the item leaves out takes its schema default
_ATOMIC_STRUCTS = frozenset({"LabelSelector"})
_ATOMIC_MAPS = frozenset({("ServiceSpec", "selector"), ("PodSpec", "nodeSelector")})
# What no manager owns (the fieldmanager's stripped fields): identity and server-set metadata.
_SERVER_META = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp", "generation", "managedFields",
                "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds")
_MISSING: Any = object()
_METADATA: Path = ("f:metadata",)


@dataclasses.dataclass(frozen=True)
class Node:
    """The schema of one value: ``struct`` (with ``cls``), ``map``, ``listmap`` (with ``keys``),
    ``set``, ``atomic`` or ``any`` (untyped: maps granular, lists atomic)."""
    kind: str
    cls: type | None = None
    keys: tuple[str, ...] = ()
    item: "Node | None" = None

    def child(self, name: str) -> "Node":
        if self.kind == "struct":
            assert self.cls is not None
            ftype = fields_of(self.cls).get(name)
            return _node_of(ftype, self.cls.__name__, name) if ftype is not None else ANY
        if self.kind == "map":
            return self.item or ANY
        return ANY

    @property
    def granular_map(self) -> bool:
        return self.kind in ("struct", "map", "any")


ANY = Node("any")
ATOMIC = Node("atomic")


def _node_of(ftype: FieldType, owner: str, name: str) -> Node:
    if ftype.shape == "object" and ftype.cls is not None:
        return ATOMIC if ftype.cls.__name__ in _ATOMIC_STRUCTS else Node("struct", ftype.cls)
    if ftype.shape == "array":
        item = _node_of(ftype.item, "", "") if ftype.item is not None else ANY
        keys = _LIST_MAP_KEYS.get((owner, name)) or (
            (PATCH_MERGE_KEYS[(owner, name)],) if (owner, name) in PATCH_MERGE_KEYS else ())
        if keys:
            return Node("listmap", keys=keys, item=item)
        return Node("set") if (owner, name) in MERGED_SETS else ATOMIC
    if ftype.shape == "map":
        if (owner, name) in _ATOMIC_MAPS:
            return ATOMIC
        return Node("map", item=_node_of(ftype.item, "", "") if ftype.item is not None else ANY)
    if ftype.shape == "any":
        return ANY
    return ATOMIC


def schema(cls: type) -> Node:
    return Node("struct", cls)


# ---------------------------------------------------------------------- path elements


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def key_element(item: Any, node: Node) -> str:
    """The path element of one list item: ``k:{...}`` in a list map, ``v:...`` in a set."""
    if node.kind == "listmap":
        fields = item if isinstance(item, dict) else {}
        key = {k: fields.get(k, _KEY_DEFAULTS.get(k)) for k in node.keys}
        return "k:" + _json({k: v for k, v in key.items() if v is not None})
    return "v:" + _json(item)


def path_string(path: Path) -> str:
    """A path as messages print it: ``.spec.template.spec.containers[name="app"].image``."""
    out = []
    for element in path:
        kind, text = element[:2], element[2:]
        if kind == "f:":
            out.append("." + text)
        elif kind == "k:":
            fields = json.loads(text)
            out.append("[" + ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(fields.items())) + "]")
        elif kind == "v:":
            out.append(f"[={text}]")
        else:
            out.append(f"[{text}]")
    return "".join(out)


# ---------------------------------------------------------------------- the FieldsV1 trie


def to_fields_v1(members: Iterable[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    marked: list[dict[str, Any]] = []
    for path in sorted(members):
        node = tree
        for element in path:
            node = node.setdefault(element, {})
        marked.append(node)
    for node in marked:  # a member with children says so with "."
        if node and "." not in node:
            node["."] = {}
    return _sorted(tree)


def _sorted(tree: dict[str, Any]) -> dict[str, Any]:
    return {k: _sorted(tree[k]) for k in sorted(tree, key=lambda k: (k != ".", k))}


def from_fields_v1(tree: Any, prefix: Path = ()) -> FieldSet:
    out: set[Path] = set()
    if not isinstance(tree, dict):
        return frozenset()
    for element, sub in tree.items():
        if element == ".":
            if prefix:
                out.add(prefix)
            continue
        path = prefix + (str(element),)
        if not sub:
            out.add(path)
        else:
            out |= from_fields_v1(sub, path)
    return frozenset(out)


# ---------------------------------------------------------------------- what an object sets


def owned_part(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without what no manager owns: apiVersion, kind, status, server-set metadata."""
    out = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "status")}
    meta = out.get("metadata")
    if isinstance(meta, dict):
        out["metadata"] = {k: v for k, v in meta.items() if k not in _SERVER_META}
    return out


def field_set(value: Any, node: Node, path: Path = ()) -> FieldSet:
    """Every field ``value`` sets (structured-merge-diff's ToFieldSet)."""
    out: set[Path] = set()
    _collect(value, node, path, out)
    out.discard(_METADATA)  # the metadata is no one's, only fields in it
    return frozenset(out)


def _collect(value: Any, node: Node, path: Path, out: set[Path]) -> None:
    if node.kind == "atomic" or not isinstance(value, (dict, list)):
        if path:
            out.add(path)
        return
    if isinstance(value, dict):
        if not node.granular_map:
            out.add(path)
            return
        for key, sub in value.items():
            child = path + (f"f:{key}",)
            _collect(sub, node.child(key), child, out)
            if node.kind != "struct" or sub is None or sub == {}:
                out.add(child)
        return
    if node.kind == "listmap":
        item = node.item or ANY
        for sub in value:
            child = path + (key_element(sub, node),)
            _collect(sub, item, child, out)
            out.add(child)
    elif node.kind == "set":
        out.update(path + (key_element(sub, node),) for sub in value)
    elif path:
        out.add(path)


@dataclasses.dataclass
class Comparison:
    added: set[Path] = dataclasses.field(default_factory=set)
    modified: set[Path] = dataclasses.field(default_factory=set)
    removed: set[Path] = dataclasses.field(default_factory=set)

    @property
    def changed(self) -> set[Path]:
        return self.added | self.modified


def compare(old: Any, new: Any, node: Node) -> Comparison:
    """What changed from ``old`` to ``new`` (structured-merge-diff's Compare)."""
    result = Comparison()
    _compare(old, new, node, (), result)
    for paths in (result.added, result.modified, result.removed):
        paths.discard(_METADATA)
    return result


def _empty(value: Any) -> bool:
    return value is None or value == {} or value == []


def _children(value: Any, node: Node) -> dict[str, tuple[Any, Node]]:
    """A container's children by path element (none for a leaf, an atomic value or null)."""
    if isinstance(value, dict) and node.granular_map:
        return {f"f:{k}": (v, node.child(k)) for k, v in value.items()}
    if isinstance(value, list) and node.kind in ("listmap", "set"):
        item = (node.item or ANY) if node.kind == "listmap" else ATOMIC
        return {key_element(v, node): (v, item) for v in value}
    return {}


def _is_container(value: Any, node: Node) -> bool:
    return value is None or (isinstance(value, dict) and node.granular_map) or (
        isinstance(value, list) and node.kind in ("listmap", "set"))


def _compare(old: Any, new: Any, node: Node, path: Path, result: Comparison) -> None:
    if old is not _MISSING and new is not _MISSING and _empty(old) and _empty(new):
        if old != new and path:
            result.modified.add(path)
        return
    if old is _MISSING or new is _MISSING:
        present = new if old is _MISSING else old
        if path:
            (result.added if old is _MISSING else result.removed).add(path)
        for element, (sub, sub_node) in _children(present, node).items():
            _compare(_MISSING if old is _MISSING else sub, sub if old is _MISSING else _MISSING, sub_node,
                     path + (element,), result)
        return
    if not (_is_container(old, node) and _is_container(new, node)):
        if old != new and path:
            result.modified.add(path)
        return
    before, after = _children(old, node), _children(new, node)
    for element in {**before, **after}:
        sub_old, old_node = before.get(element, (_MISSING, ANY))
        sub_new, new_node = after.get(element, (_MISSING, old_node))
        _compare(sub_old, sub_new, new_node, path + (element,), result)


# ---------------------------------------------------------------------- merging and removing


def merge(live: Any, config: Any, node: Node) -> Any:
    """``config`` (an applied configuration) merged into ``live``: maps and list maps field by
    field and item by item, sets as sets, everything else replaced."""
    if isinstance(config, dict) and isinstance(live, dict) and node.granular_map:
        out = dict(live)
        for key, value in config.items():
            out[key] = merge(live.get(key, _MISSING), value, node.child(key))
        return out
    if isinstance(config, list) and isinstance(live, list) and node.kind == "listmap":
        item = node.item or ANY
        out_items = list(live)
        index = {key_element(v, node): i for i, v in enumerate(out_items)}
        for value in config:
            element = key_element(value, node)
            if element in index:
                out_items[index[element]] = merge(out_items[index[element]], value, item)
            else:
                index[element] = len(out_items)
                out_items.append(copy.deepcopy(value))
        return out_items
    if isinstance(config, list) and isinstance(live, list) and node.kind == "set":
        return list(live) + [v for v in config if v not in live]
    return copy.deepcopy(config)


def remove(obj: dict[str, Any], paths: Iterable[Path], node: Node) -> dict[str, Any]:
    """``obj`` without the fields and list items at ``paths``."""
    out = copy.deepcopy(obj)
    for path in sorted(paths, key=len):  # an item before its fields: its key is still whole
        _remove(out, path, node)
    return out


def _remove(value: Any, path: Path, node: Node) -> None:
    element, rest = path[0], path[1:]
    if isinstance(value, dict) and element.startswith("f:"):
        key = element[2:]
        if key not in value:
            return
        if not rest:
            del value[key]
        else:
            _remove(value[key], rest, node.child(key))
    elif isinstance(value, list) and node.kind in ("listmap", "set"):
        item = node.item or ANY
        for i, sub in enumerate(value):
            if key_element(sub, node) == element:
                if not rest:
                    del value[i]
                else:
                    _remove(sub, rest, item)
                return


def skeleton(cls: type) -> dict[str, Any]:
    """An object as a zero value of its Go type serializes: the structs that are not pointers,
    present and empty (what an Update from nothing, a create, compares against)."""
    out: dict[str, Any] = {}
    defaults = {f.name: f for f in dataclasses.fields(cls)}
    for name, ftype in fields_of(cls).items():
        field = defaults[attributes_of(cls)[name]]
        if ftype.shape == "object" and ftype.cls is not None and ftype.cls.__name__ not in _ATOMIC_STRUCTS \
                and field.default_factory is not dataclasses.MISSING:
            out[name] = skeleton(ftype.cls)
    return out
