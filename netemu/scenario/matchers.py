"""Expectations on values: the small vocabulary every step shares.

A matcher is written as a plain value (``200``, ``"ok"``, ``[a, b]``: equals) or as a mapping of
operators, all of which must hold::

    equals: V        notEquals: V      contains: S | [S...]   notContains: S | [S...]
    matches: REGEX   in: [V...]        atLeast: N             atMost: N
    exists: BOOL     count: N | MATCHER (items of a list, characters of a string)
    distinct: N | MATCHER (distinct items of a list)        each: MATCHER (every item)

``contains`` looks for substrings in text, items in a list and keys in a mapping. A field that is
absent counts as its zero value for ``equals`` (Kubernetes leaves out ``false``, ``0`` and empty
values), and as absent for ``exists``.

``compile_matcher`` validates (problems with field paths) and ``Matcher.check(actual)`` returns
None or a sentence saying what did not hold.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from netemu.scenario.fields import Fields, Problems, describe, is_templated, join

OPERATORS = ("equals", "notEquals", "contains", "notContains", "matches", "in", "atLeast", "atMost",
             "exists", "count", "distinct", "each")


def show(value: Any, limit: int = 200) -> str:
    """A value as it appears in a failure message."""
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _loose_equal(actual: Any, expected: Any) -> bool:
    if actual is None and expected is not None and expected in (False, 0, "", [], {}):
        return True
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected or actual == expected and type(actual) is type(expected)
    if isinstance(actual, (int, float)) and isinstance(expected, str) or \
            isinstance(actual, str) and isinstance(expected, (int, float)):
        return str(actual) == str(expected)
    if isinstance(actual, (list, tuple)) and isinstance(expected, (list, tuple)):
        return len(actual) == len(expected) and all(_loose_equal(a, e) for a, e in zip(actual, expected, strict=True))
    return actual == expected


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, (dict, list)) else value


@dataclass
class Matcher:
    """All of ``checks`` must hold; ``text`` says what is expected, for messages."""

    checks: list[tuple[str, Callable[[Any], str | None]]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return ", ".join(what for what, _ in self.checks)

    def check(self, actual: Any) -> str | None:
        for _what, check in self.checks:
            failure = check(actual)
            if failure is not None:
                return failure
        return None


def equals(expected: Any) -> Matcher:
    return Matcher([(f"equals {show(expected)}", lambda a: None if _loose_equal(a, expected)
                     else f"expected {show(expected)}, got {show(a)}")])


def _contains(actual: Any, needle: Any) -> bool:
    if isinstance(actual, str):
        return str(needle) in actual
    if isinstance(actual, dict):
        return str(needle) in actual
    if isinstance(actual, (list, tuple)):
        return any(_loose_equal(item, needle) for item in actual)
    return False


def compile_matcher(value: Any, path: str, problems: Problems, *, templated: bool = False) -> Matcher:
    """The matcher written at ``path``; problems are added for anything malformed."""
    if not isinstance(value, dict):
        return equals(value)
    reader = Fields(value, path, problems, templated=templated)
    return compile_operators(reader, problems, templated=templated, empty_ok=False)


def compile_operators(reader: Fields, problems: Problems, *, templated: bool = False,
                      empty_ok: bool = False) -> Matcher:
    """The operators found in ``reader`` (other fields are left to the caller's ``finish``)."""
    matcher = Matcher()
    add = matcher.checks.append
    path = reader.path
    reader.suggestible.update(OPERATORS)
    found = [op for op in OPERATORS if reader.has(op)]
    if not found and not empty_ok:
        problems.add(path, "an expectation needs at least one of " + ", ".join(OPERATORS))
    for op in found:
        raw = reader.raw(op)
        where = join(path, op)
        if op == "equals":
            matcher.checks += equals(raw).checks
        elif op == "notEquals":
            add((f"not equal to {show(raw)}", lambda a, e=raw: f"expected anything but {show(e)}"
                 if _loose_equal(a, e) else None))
        elif op in ("contains", "notContains"):
            needles = raw if isinstance(raw, list) else [raw]
            if not needles or any(isinstance(n, (dict, list)) or n is None for n in needles):
                problems.add(where, f"expected a string or a list of strings, got {describe(raw)}")
                continue
            if op == "contains":
                add((f"contains {show(raw)}", lambda a, ns=needles: next(
                    (f"expected {show(n)} in {show(a, 120)}" for n in ns if not _contains(a, n)), None)))
            else:
                add((f"does not contain {show(raw)}", lambda a, ns=needles: next(
                    (f"expected no {show(n)} in {show(a, 120)}" for n in ns if _contains(a, n)), None)))
        elif op == "matches":
            if templated and is_templated(raw):
                continue
            try:
                rx = re.compile(str(raw), re.MULTILINE)
            except re.error as exc:
                problems.add(where, f"invalid regular expression: {exc}")
                continue
            add((f"matches /{raw}/", lambda a, rx=rx: None if a is not None and rx.search(
                a if isinstance(a, str) else show(a)) else f"expected a match for /{rx.pattern}/ in {show(a, 120)}"))
        elif op == "in":
            if not isinstance(raw, list):
                problems.add(where, f"expected a list, got {describe(raw)}")
                continue
            add((f"one of {show(raw)}", lambda a, options=raw: None if any(_loose_equal(a, o) for o in options)
                 else f"expected one of {show(options)}, got {show(a)}"))
        elif op in ("atLeast", "atMost"):
            if _number(raw) is None and not (templated and is_templated(raw)):
                problems.add(where, f"expected a number, got {describe(raw)}")
                continue
            add(_bound(op, raw))
        elif op == "exists":
            if not isinstance(raw, bool):
                problems.add(where, f"expected true or false, got {describe(raw)}")
                continue
            add(("exists" if raw else "absent", lambda a, want=raw: None if (a is not None) == want else
                 ("expected a value, got none" if want else f"expected no value, got {show(a)}")))
        elif op in ("count", "distinct"):
            inner = compile_matcher(raw, where, problems, templated=templated)
            add(_sized(op, inner))
        elif op == "each":
            inner = compile_matcher(raw, where, problems, templated=templated)
            add((f"each {inner.text}", lambda a, m=inner: _each(a, m)))
    return matcher


def _bound(op: str, raw: Any) -> tuple[str, Callable[[Any], str | None]]:
    limit = _number(raw)
    word = "at least" if op == "atLeast" else "at most"

    def check(actual: Any) -> str | None:
        number = _number(actual)
        if number is None or limit is None:
            return f"expected a number {word} {raw}, got {show(actual)}"
        ok = number >= limit if op == "atLeast" else number <= limit
        return None if ok else f"expected {word} {raw}, got {show(actual)}"
    return (f"{word} {raw}", check)


def _sized(op: str, inner: Matcher) -> tuple[str, Callable[[Any], str | None]]:
    def check(actual: Any) -> str | None:
        if not isinstance(actual, (list, tuple, str, dict)):
            return f"expected a list to {op}, got {show(actual)}"
        size = len({_hashable(x) for x in actual}) if op == "distinct" else len(actual)
        failure = inner.check(size)
        if failure is None:
            return None
        noun = "distinct values" if op == "distinct" else ("characters" if isinstance(actual, str) else "items")
        return f"{noun}: {failure} (in {show(actual, 1000)})"
    return (f"{op} {inner.text}", check)


def _each(actual: Any, inner: Matcher) -> str | None:
    if not isinstance(actual, (list, tuple)):
        return f"expected a list, got {show(actual)}"
    for index, item in enumerate(actual):
        failure = inner.check(item)
        if failure is not None:
            return f"item {index}: {failure}"
    return None
