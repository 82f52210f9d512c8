"""Reading manifests: files, directories and text → decoded, defaulted, validated objects.

``load_paths`` and ``load_text`` return one ``Manifest`` per object, in input order, or raise a
single ``ManifestErrors`` naming every bad document of the whole input (so the caller applies
nothing). Per document: multi-document YAML (empty documents skipped), ``kind: List`` expanded,
``apiVersion``/``kind`` looked up in ``objects.KINDS`` (kubectl's ``no matches for kind "Foo" in
version "v1"``), strict decoding (``codec.from_dict``: unknown fields are errors; decoding
problems stop that document before validation, as the API server's strict decoding does), the
namespace settled as kubectl does, then ``apply_defaults`` and ``validate``.

YAML is read as kubectl's sigs.k8s.io/yaml (go-yaml v2) reads it: YAML 1.1 booleans
(``yes``/``on``), but timestamps and ``1:20`` sexagesimals stay strings, keys become strings, and
a key given twice in one mapping is an error (Kubernetes' strict field validation refuses
duplicate fields). Syntax errors name the file, line and column (1-based):
``deploy.yaml: line 7, column 3: did not find expected '-' indicator``.

Two limits keep hostile input from costing more than an error line: a file must be UTF-8 text
(``decode_manifest`` names the file, line and column of the first bad byte), and lists and
mappings may nest at most ``MAX_NESTING_DEPTH`` deep (libyaml stops deeper flow or block
nesting itself; JSON and anything under the libyaml limit is checked here), so nothing later —
decoding, printing, the control socket — can run out of stack. ``read_manifest_file`` is the one
way a manifest file is read, by the CLI and by ``load_paths`` alike.

The only I/O here is reading the named files.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from netemu.errors import FieldProblem, ManifestError, ManifestErrors, ObjectRef
from netemu.frozen import evolve

from . import objects
from .codec import from_dict
from .defaults import apply_defaults
from .validation import validate

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
DEFAULT_NAMESPACE = "default"
# No object of a supported kind comes near this (a Deployment's deepest field is ~15 levels down).
MAX_NESTING_DEPTH = 100
_TOO_DEEP = object()  # stands for a document whose decoding ran out of stack


@dataclass(frozen=True)
class Manifest:
    """One object read from the input: decoded, defaulted and valid, and where it came from."""

    obj: objects.KubeObject
    ref: ObjectRef


class _SourceRef(ObjectRef):
    """A place in the input that is not (yet) an object: prints as just the file name."""

    def __str__(self) -> str:
        return self.source or "<input>"


# --------------------------------------------------------------------------- YAML reading

_Base: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_STR, _NULL, _BOOL = "tag:yaml.org,2002:str", "tag:yaml.org,2002:null", "tag:yaml.org,2002:bool"
_MAP, _SEQ, _MERGE = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:merge"


_RESOLVED: dict[tuple[str, Any], str] = {}  # scalar (text, implicit) → tag, for _Loader.resolve
_RESOLVED_TEXT_LIMIT = 64
_RESOLVED_LIMIT = 20_000


class _Loader(_Base):  # type: ignore[misc, valid-type]
    """A safe loader that resolves scalars and keys like go-yaml v2 and records repeated keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[str, yaml.Mark]] = []

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:
        """The tag of a node: remembered per (kind, text, implicit) for short texts, as manifests
        repeat the same keys and values many times (the resolvers depend on nothing else here:
        there are no path resolvers)."""
        if kind is not yaml.ScalarNode or len(value) > _RESOLVED_TEXT_LIMIT:
            return super().resolve(kind, value, implicit)
        key = (value, implicit)
        tag = _RESOLVED.get(key)
        if tag is None:
            if len(_RESOLVED) >= _RESOLVED_LIMIT:
                _RESOLVED.clear()
            tag = _RESOLVED[key] = super().resolve(kind, value, implicit)
        return tag

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        pass  # only path resolvers use the path; there are none

    def ascend_resolver(self) -> None:
        pass

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[str, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE:
                if key_node.value in seen:
                    self.duplicates.append((key_node.value, key_node.start_mark))
                seen.add(key_node.value)
        mapping = super().construct_mapping(node, deep=deep)
        return {_json_key(k): v for k, v in mapping.items()}


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    return str(key)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_TIMESTAMP, _INT, _FLOAT)]
    for first, resolvers in _Base.yaml_implicit_resolvers.items()
}
# YAML 1.1 numbers without the sexagesimal forms, which go-yaml v2 does not know.
_Loader.add_implicit_resolver(_INT, re.compile(
    r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"))
_Loader.add_implicit_resolver(_FLOAT, re.compile(
    r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


class _NotPlain(Exception):
    """A document the fast construction leaves to PyYAML's constructor (see ``_PlainBuilder``)."""


class _PlainBuilder:
    """What ``loader.construct_document(node)`` returns, built directly from the node tree.

    PyYAML's constructor spends most of a manifest's reading in its general machinery (per-node
    dispatch, generators for recursive structures, merge keys). Manifests are almost always plain
    mappings, lists and str/int/float/bool/null scalars: those are built here in one walk.
    Anything else — another tag, a merge key, a non-scalar key, a node that contains itself
    (an alias), a key given twice (so the error is found and worded by the one route that
    reports it), nesting too deep for this walk — raises ``_NotPlain`` and the document goes
    through ``construct_document`` as before. (A class rather than a recursive closure: a
    closure refers to itself, and such cycles wait for the collector, which a big apply pauses.)"""

    __slots__ = ("loader", "built", "depth")

    def __init__(self, loader: _Loader) -> None:
        self.loader = loader
        self.built: dict[int, Any] = {}  # collection node → what it became: an alias shares it, as in PyYAML
        self.depth = 0  # collections entered and not left

    def document(self, node: yaml.Node) -> Any:
        """The document's data, or ``_TOO_DEEP`` when lists and mappings nest deeper than
        ``MAX_NESTING_DEPTH`` (counted during the walk, so a plain document needs no second one)."""
        try:
            return self.build(node)
        except _TooDeep:
            return _TOO_DEEP
        except RecursionError:
            raise _NotPlain from None

    def build(self, node: yaml.Node) -> Any:
        kind, tag = type(node), node.tag
        if kind is yaml.ScalarNode:
            if tag == _STR:
                return node.value
            if tag == _NULL:
                return None
            if tag == _BOOL:
                return self.loader.bool_values[node.value.lower()]
            if tag == _INT:
                return self.loader.construct_yaml_int(node)
            if tag == _FLOAT:
                return self.loader.construct_yaml_float(node)
            raise _NotPlain
        key = id(node)
        built = self.built
        if key in built:
            if built[key] is None:
                raise _NotPlain  # a node inside itself, through an alias
            return built[key]
        built[key] = None
        self.depth += 1
        if self.depth > MAX_NESTING_DEPTH:
            raise _TooDeep
        out: Any
        if kind is yaml.MappingNode and tag == _MAP:
            out = {}
            for key_node, value_node in node.value:
                if type(key_node) is not yaml.ScalarNode or key_node.tag == _MERGE:
                    raise _NotPlain
                name = _json_key(self.build(key_node))
                if name in out:
                    raise _NotPlain
                out[name] = self.build(value_node)
        elif kind is yaml.SequenceNode and tag == _SEQ:
            out = [self.build(item) for item in node.value]
        else:
            raise _NotPlain
        self.depth -= 1
        built[key] = out
        return out


class _TooDeep(Exception):
    """Lists and mappings nest deeper than ``MAX_NESTING_DEPTH``."""


def _document_data(loader: _Loader, node: yaml.Node) -> Any:
    """A document's data, or ``_TOO_DEEP``."""
    try:
        return _PlainBuilder(loader).document(node)
    except _NotPlain:
        data = loader.construct_document(node)
        return _TOO_DEEP if _too_deep(data) else data


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _yaml_error_text(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        text = f"{_where(mark)}: {problem}" if mark is not None else problem
        if exc.context and exc.problem and exc.context_mark is not None:
            text += f" ({exc.context} at {_where(exc.context_mark)})"
        return text
    return str(exc)


def _split_documents(text: str, source: str,
                     errors: list[ManifestError]) -> list[tuple[int, Any, list[FieldProblem]]]:
    """(1-based document index, data, problems found while reading it) for each document; the
    data of one nested deeper than ``MAX_NESTING_DEPTH`` is ``_TOO_DEEP``.

    A syntax error ends the stream (nothing after it can be trusted); documents before it are
    still returned so their own problems are reported too.
    """
    if text.lstrip().startswith("{"):
        json_errors: list[ManifestError] = []
        docs = _split_json(text, source, json_errors)
        if docs or not json_errors:
            errors += json_errors
            return [(index, _TOO_DEEP if _too_deep(data) else data, problems) for index, data, problems in docs]
        # Not JSON after all: a YAML flow mapping such as ``{apiVersion: v1, ...}``.
    docs: list[tuple[int, Any, list[FieldProblem]]] = []
    loader = _Loader(text)
    try:
        while loader.check_node():
            data = _document_data(loader, loader.get_node())
            dups = [FieldProblem("", f'{_where(mark)}: duplicate field "{key}"') for key, mark in loader.duplicates]
            loader.duplicates = []
            docs.append((len(docs) + 1, data, dups))
    except yaml.YAMLError as exc:
        errors.append(ManifestError(_SourceRef(source=source), [_yaml_error_text(exc)]))
    finally:
        loader.dispose()
    return docs


def _split_json(text: str, source: str, errors: list[ManifestError]) -> list[tuple[int, Any, list[FieldProblem]]]:
    """kubectl's YAMLOrJSONDecoder: input starting with '{' is a stream of JSON objects.

    When even the first object is not JSON, the text is read as YAML instead (and a syntax error
    is reported in YAML's words).
    """
    docs: list[tuple[int, Any, list[FieldProblem]]] = []
    dups: list[FieldProblem] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                dups.append(FieldProblem("", f'duplicate field "{key}"'))
            out[key] = value
        return out

    decoder = json.JSONDecoder(object_pairs_hook=pairs)
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        try:
            data, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            errors.append(ManifestError(_SourceRef(source=source), [f"line {exc.lineno}, column {exc.colno}: {exc.msg}"]))
            break
        except RecursionError:  # nested far beyond MAX_NESTING_DEPTH: the rest cannot be trusted
            docs.append((len(docs) + 1, _TOO_DEEP, []))
            break
        docs.append((len(docs) + 1, data, dups))
        dups = []
    return docs


def _nested_deeper_than(data: Any, limit: int) -> bool:
    """Whether lists and mappings nest more than ``limit`` deep in ``data`` (walked without recursion)."""
    stack = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _too_deep(data: Any) -> bool:
    return data is _TOO_DEEP or (isinstance(data, (dict, list)) and _nested_deeper_than(data, MAX_NESTING_DEPTH))


# --------------------------------------------------------------------------- documents → objects


def _type_name(data: Any) -> str:
    if isinstance(data, list):
        return "a list"
    if isinstance(data, str):
        return "a string"
    if isinstance(data, bool):
        return "a boolean"
    if isinstance(data, (int, float)):
        return "a number"
    return type(data).__name__


def _compact(data: Any, limit: int = 300) -> str:
    text = json.dumps(data, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def _is_list(api_version: Any, kind: Any) -> bool:
    if kind == "List":
        return True
    return isinstance(kind, str) and kind.endswith("List") and (api_version, kind[:-4]) in objects.KINDS


def _raw_meta(data: dict[str, Any]) -> tuple[str, str]:
    meta = data.get("metadata")
    if not isinstance(meta, dict):
        return "", ""
    ns, name = meta.get("namespace"), meta.get("name") or meta.get("generateName")
    return (ns if isinstance(ns, str) else ""), (name if isinstance(name, str) else "")


class _Reader:
    """Turns documents into manifests, collecting the problems of every document."""

    def __init__(self, namespace: str | None):
        self.namespace = namespace
        self.manifests: list[Manifest] = []
        self.errors: list[ManifestError] = []
        self.documents = 0  # read so far, empty ones included

    def read_text(self, text: str, source: str) -> None:
        syntax_errors: list[ManifestError] = []
        documents = _split_documents(text, source, syntax_errors)
        self.documents += len(documents)
        for index, data, problems in documents:
            if data is None and not problems:
                continue  # an empty document
            if data is _TOO_DEEP:
                self.errors.append(ManifestError(ObjectRef(source, index), [
                    f"exceeded maximum nesting depth of {MAX_NESTING_DEPTH} (lists and mappings inside each other)"]))
                continue
            self.read_document(data, source, index, problems)
        self.errors += syntax_errors  # after the documents before it, in input order

    def read_document(self, data: Any, source: str, index: int, problems: list[FieldProblem]) -> None:
        if not isinstance(data, dict):
            self.errors.append(ManifestError(ObjectRef(source, index), problems + [FieldProblem(
                "", f"expected an object with apiVersion and kind, got {_type_name(data)}")]))
            return
        api_version, kind = data.get("apiVersion"), data.get("kind")
        raw_ns, raw_name = _raw_meta(data)
        ref = ObjectRef(source, index, kind if isinstance(kind, str) else "", raw_ns, raw_name)
        if not kind or not isinstance(kind, str):
            self.errors.append(ManifestError(ref, problems + [FieldProblem(
                "", f"Object 'Kind' is missing in '{_compact(data)}'")]))
            return
        if not api_version or not isinstance(api_version, str):
            self.errors.append(ManifestError(ref, problems + [FieldProblem(
                "", f"Object 'apiVersion' is missing in '{_compact(data)}'")]))
            return
        if _is_list(api_version, kind):
            self._read_list(data, source, index, ref, problems)
            return
        cls = objects.KINDS.get((api_version, kind))
        if cls is None:
            why = (": netemu serves no custom resources (remove the definition, and its custom objects, from what "
                   "you apply)" if kind == "CustomResourceDefinition" else "")
            self.errors.append(ManifestError(ref, problems + [FieldProblem(
                "", f'no matches for kind "{kind}" in version "{api_version}"{why}')]))
            return
        namespace, problem = self._namespace(cls, raw_ns)
        ref = ObjectRef(source, index, kind, namespace, raw_name)
        obj, decode_problems = from_dict(cls, data)
        if problems or decode_problems:
            self.errors.append(ManifestError(ref, problems + decode_problems))
            return
        if problem:
            self.errors.append(ManifestError(ref, [problem]))
            return
        obj = apply_defaults(evolve(obj, metadata=evolve(obj.metadata, namespace=namespace)))
        invalid = validate(obj)
        if invalid:
            self.errors.append(ManifestError(ref, invalid))
            return
        self.manifests.append(Manifest(obj=obj, ref=ref))

    def _read_list(self, data: dict[str, Any], source: str, index: int, ref: ObjectRef,
                   problems: list[FieldProblem]) -> None:
        items = data.get("items")
        if items is None:
            items = []
        if not isinstance(items, list) or problems:
            self.errors.append(ManifestError(ref, problems or [FieldProblem("items", "Invalid value: expected an array")]))
            return
        for item in items:
            self.read_document(item, source, index, [])

    def _namespace(self, cls: type, given: str) -> tuple[str, FieldProblem | None]:
        """kubectl's rule: ``-n`` fills an empty namespace and must agree with a given one."""
        if not cls.NAMESPACED:  # type: ignore[attr-defined]
            return "", None  # kubectl ignores a namespace on cluster-scoped objects
        if self.namespace is not None:
            if given and given != self.namespace:
                return given, FieldProblem("", (
                    f'the namespace from the provided object "{given}" does not match the namespace '
                    f'"{self.namespace}". You must pass \'--namespace={given}\' to perform this operation.'))
            return self.namespace, None
        return given or DEFAULT_NAMESPACE, None

    def result(self) -> list[Manifest]:
        if self.errors:
            raise ManifestErrors(self.errors)
        return self.manifests


# --------------------------------------------------------------------------- entry points


def load_text(text: str, source: str = "<stdin>", namespace: str | None = None) -> list[Manifest]:
    """Every object in ``text`` (YAML or JSON). ``namespace`` acts like ``kubectl -n``."""
    reader = _Reader(namespace)
    reader.read_text(text, source)
    return reader.result()


def split_stream(text: str) -> tuple[str, str] | None:
    """A YAML stream cut in two at a document marker (a ``---`` line) past its middle, so that
    each part is a stream of whole documents (for reading them side by side, ``load_part``);
    None when there is no such line, or the text is JSON or uses directives (``%``)."""
    if text.lstrip().startswith("{") or text.startswith("%") or "\n%" in text:
        return None
    at = text.find("\n---", len(text) // 2)
    while at != -1:
        if text[at + 4:at + 5] in ("", "\n", "\r", " ", "\t"):
            return text[:at + 1], text[at + 1:]
        at = text.find("\n---", at + 4)
    return None


def load_part(text: str, source: str = "<stdin>", namespace: str | None = None) -> tuple[list[Manifest], int] | None:
    """``load_text`` for one part of a stream (``split_stream``): its manifests and how many
    documents it held (``join_parts`` numbers the next part's after them), or None when anything
    in it is wrong: the caller then reads the whole stream with ``load_text``, whose errors are
    worded and placed as always."""
    reader = _Reader(namespace)
    reader.read_text(text, source)
    return None if reader.errors else (reader.manifests, reader.documents)


def join_parts(*parts: tuple[list[Manifest], int]) -> list[Manifest]:
    """The manifests of consecutive parts of one stream, documents numbered across them."""
    out: list[Manifest] = []
    before = 0
    for manifests, documents in parts:
        out += manifests if not before else [
            Manifest(obj=m.obj, ref=m.ref._replace(doc=m.ref.doc + before)) for m in manifests]
        before += documents
    return out


def load_data(data: Any, source: str = "<dict>", namespace: str | None = None) -> list[Manifest]:
    """Every object in ``data`` (a dict, as ``yaml.safe_load`` gives one), read exactly as its YAML
    text would be; nesting deeper than ``MAX_NESTING_DEPTH`` is refused before anything walks it."""
    if isinstance(data, (dict, list)) and _nested_deeper_than(data, MAX_NESTING_DEPTH):
        raise ManifestErrors([ManifestError(ObjectRef(source, 1), [
            f"exceeded maximum nesting depth of {MAX_NESTING_DEPTH} (lists and mappings inside each other)"])])
    return load_text(yaml.safe_dump(data), source=source, namespace=namespace)


def decode_manifest(data: bytes, source: str) -> str:
    """``data`` as text; a ``ManifestError`` naming the file and where the first byte that is not
    UTF-8 sits (kubectl reads manifests as UTF-8 only)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ManifestError(_SourceRef(source=source), [
            f"line {line}, column {column}: not UTF-8 text ({exc.reason}, byte 0x{data[exc.start]:02x}); "
            "save the file as UTF-8"]) from None


def read_manifest_file(path: Path) -> str:
    """The text of one manifest file, or a ``ManifestError`` that names it and the problem."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(_SourceRef(source=str(path)), ["the path does not exist"]) from None
    except OSError as exc:
        raise ManifestError(_SourceRef(source=str(path)), [exc.strerror or str(exc)]) from None
    return decode_manifest(data, str(path))


def manifest_files(path: Path) -> list[Path]:
    """The manifest files of a directory (*.yaml, *.yml, *.json; sorted; not recursive)."""
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in MANIFEST_SUFFIXES)


def load_paths(paths: list[str], namespace: str | None = None) -> list[Manifest]:
    """Every object in the given files and directories, in order; see ``load_text``."""
    reader = _Reader(namespace)
    for name in paths:
        path = Path(name)
        try:
            files = manifest_files(path) if path.is_dir() else [path]
        except OSError as exc:
            reader.errors.append(ManifestError(_SourceRef(source=name), [exc.strerror or str(exc)]))
            continue
        for file in files:
            try:
                text = read_manifest_file(file)
            except ManifestError as exc:
                reader.errors.append(exc)
                continue
            reader.read_text(text, str(file))
    return reader.result()
