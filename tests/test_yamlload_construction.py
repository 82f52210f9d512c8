"""yamlload builds plain documents itself (``_PlainBuilder``) and leaves the rest to PyYAML's
constructor: both routes must give exactly what PyYAML's constructor gives, and the same errors."""
from __future__ import annotations

import pytest
import yaml

from netemu.api import yamlload
from netemu.errors import ManifestErrors

CASES = [
    "a: 1\nb: [x, 'y', 2.5, .inf, -.Inf, .nan, 0x1F, 0o17, 017, 0b101, 1_000, +3, -4]\n",
    "yes: on\nno: off\nTrue: FALSE\nnull: ~\nempty:\nquoted: 'true'\n1: one\n2.0: two\n",
    "time: 2026-12-05T10:00:00Z\nsexagesimal: 1:20\nversion: 1.10\nport: '8080'\n",
    "base: &b {x: 1, y: [1, 2]}\nuse: *b\nlist: [*b, *b]\n",
    "base: &b {x: 1}\nmerged:\n  <<: *b\n  y: 2\n",
    "tagged: !!str 12\nbinary: !!binary aGVsbG8=\nset: !!set {a, b}\nexplicit: !!int '7'\n",
    "- 1\n- - nested\n  - {a: {b: {c: [d]}}}\n",
    "1: int key\n'1': str key\n",
    "a: 1\na: 2\nb: {c: 1, c: 2}\n",
    "--- \n---\nkey: value\n...\n--- plain scalar\n",
    "empty_map: {}\nempty_list: []\nmultiline: |\n  line 1\n  line 2\nfolded: >\n  a\n  b\n",
]


def pyyaml_documents(text: str) -> list:
    """What PyYAML's own construction gives, with the repeated keys each document records."""
    loader = yamlload._Loader(text)
    out = []
    try:
        while loader.check_data():
            data = loader.get_data()
            out.append((data, [(key, mark.line, mark.column) for key, mark in loader.duplicates]))
            loader.duplicates = []
    finally:
        loader.dispose()
    return out


def netemu_documents(text: str) -> list:
    errors: list = []
    docs = yamlload._split_documents(text, "t.yaml", errors)
    assert not errors
    return [(data, [str(p) for p in problems]) for _index, data, problems in docs]


def same(a, b) -> bool:
    """Equal, NaN included, with the same types (True is not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and a != a:
        return b != b
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("text", CASES)
def test_documents_are_built_as_pyyaml_builds_them(text: str) -> None:
    ours, theirs = netemu_documents(text), pyyaml_documents(text)
    assert len(ours) == len(theirs)
    for (data, problems), (expected, duplicates) in zip(ours, theirs):
        assert same(data, expected), (data, expected)
        assert problems == [f'line {line + 1}, column {column + 1}: duplicate field "{key}"'
                            for key, line, column in duplicates]


def test_an_alias_shares_one_object_so_nested_aliases_stay_cheap() -> None:
    # Each level names the one before nine times: copying instead of sharing would build 9**8 lists.
    lines = ["l0: &l0 [x]"] + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    (index, data, problems), = yamlload._split_documents("\n".join(lines) + "\n", "t.yaml", [])
    assert data["l8"][0] is data["l8"][8] is data["l7"]
    assert data["l1"][0] is data["l0"]


def test_a_node_inside_itself_is_left_to_pyyaml_and_refused_as_endlessly_deep() -> None:
    (index, data, problems), = yamlload._split_documents("a: &a [1, *a]\n", "t.yaml", [])
    assert data is yamlload._TOO_DEEP  # PyYAML builds a list inside itself: deeper than any limit
    with pytest.raises(ManifestErrors) as err:
        yamlload.load_text("a: &a [1, *a]\n", source="t.yaml")
    assert "exceeded maximum nesting depth of 100" in str(err.value)


def test_a_repeated_key_is_still_named_with_its_place() -> None:
    text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  name: b\n"
    with pytest.raises(ManifestErrors) as err:
        yamlload.load_text(text, source="t.yaml")
    assert str(err.value) == 't.yaml[doc 1] Namespace b: line 5, column 3: duplicate field "name"'


@pytest.mark.parametrize("text", ["a: !!str {b: 1}\n", "{? [1, 2] : complex key}\n", "a: !!bool {}\n"])
def test_what_pyyaml_refuses_is_refused_in_its_words(text: str) -> None:
    errors: list = []
    yamlload._split_documents(text, "t.yaml", errors)
    with pytest.raises(yaml.YAMLError) as refused:
        pyyaml_documents(text)
    assert [str(e) for e in errors] == [f"t.yaml: {yamlload._yaml_error_text(refused.value)}"]


def test_a_stream_read_in_two_parts_is_what_it_is_read_whole() -> None:
    docs = [f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}}}\ndata: {{k: v{i}}}\n" for i in range(40)]
    text = "---\n".join(docs[:20]) + "---\n---\n" + "---\n".join(docs[20:])  # an empty document in between
    head, tail = yamlload.split_stream(text)
    assert head + tail == text and tail.startswith("---") and len(head) >= len(text) // 2
    whole = yamlload.load_text(text, source="t.yaml")
    joined = yamlload.join_parts(yamlload.load_part(head, "t.yaml"), yamlload.load_part(tail, "t.yaml"))
    assert joined == whole
    assert [m.ref.doc for m in joined][-1] == 41  # 40 objects and an empty document, numbered across the cut
    bad = text.replace("name: c35", "name: C35")
    assert yamlload.load_part(yamlload.split_stream(bad)[1], "t.yaml") is None  # the caller reads it whole
    for unsplittable in ('{"apiVersion": "v1"}', "%YAML 1.1\n---\na: 1\n", "a: 1\n"):
        assert yamlload.split_stream(unsplittable) is None
