"""Reading the mappings of a scenario file strictly: typed fields, durations, and problems with paths.

``Fields(data, path, problems)`` wraps one mapping; ``take(key, kind)`` reads a field and
converts it, ``finish()`` reports every key nobody took as ``<path>.<key>: unknown field`` (with
a suggestion when a known key is close). Problems are collected, never raised, so a whole file
is checked at once; ``load`` turns them into one ``ScenarioError``.

A string holding a ``{{ reference }}`` cannot be typed before the cluster runs: when
``templated`` is set (the check made at load time) such strings pass as they are; the runner
resolves the references and reads the step again with ``templated`` off.
"""
from __future__ import annotations

import difflib
import re
from typing import Any, Iterable, Sequence

TEMPLATE_MARK = "{{"

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_DURATION = 24 * 3600.0  # longer is a typo, and a step that waits it wedges the run


def parse_duration(value: Any) -> float:
    """``5s``, ``250ms``, ``1m30s``, ``1.5s`` or a plain number of seconds → seconds, at most
    ``MAX_DURATION``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 5s or 250ms")
    if isinstance(value, (int, float)):
        if value != value or value < 0:  # NaN, or negative
            raise ValueError(f"must be a number of seconds, 0 or more, got {describe(value)}")
        return _bounded_duration(float(value), value)
    if not isinstance(value, str):
        raise ValueError("expected a duration such as 5s or 250ms")
    text = value.strip()
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f'invalid duration "{value}" (use e.g. 5s, 250ms, 1m30s)')
    return _bounded_duration(total, value)


def _bounded_duration(seconds: float, value: Any) -> float:
    if seconds > MAX_DURATION:
        raise ValueError(f"must be at most 24h, got {describe(value)}")
    return seconds


def parse_fraction(value: Any) -> float:
    """``10%`` or ``0.1`` → 0.1 (loss and reset probabilities)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        number = float(value.strip()[:-1])
        result = number / 100
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        result = float(value)
    else:
        raise ValueError(f"expected a percentage such as 10% or a fraction such as 0.1, got {describe(value)}")
    if not 0 <= result <= 1:
        raise ValueError(f"must be between 0% and 100%, got {value}")
    return result


def describe(value: Any) -> str:
    """How a YAML value is named in messages: ``a list``, ``the string "x"``, ``the number 3``."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f'the string "{value}"' if len(value) < 60 and "\n" not in value else "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def is_templated(value: Any) -> bool:
    return isinstance(value, str) and TEMPLATE_MARK in value


def suggest(key: str, known: Iterable[str]) -> str:
    """`` (did you mean "x"?)`` for the known name closest to ``key`` (ignoring case), or nothing."""
    by_lower = {k.lower(): k for k in known}
    if key.lower() in by_lower and by_lower[key.lower()] != key:
        return f' (did you mean "{by_lower[key.lower()]}"?)'
    close = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.6)
    return f' (did you mean "{by_lower[close[0]]}"?)' if close else ""


class Problems(list):
    """Messages of the form ``<path>: <what is wrong>``, in file order."""

    def add(self, path: str, message: str) -> None:
        self.append(f"{path}: {message}" if path else message)


KINDS = ("str", "int", "bool", "number", "duration", "fraction", "list", "str-list", "mapping", "any")
_EXPECTED = {
    "str": "a string", "int": "an integer", "bool": "true or false", "number": "a number",
    "list": "a list", "str-list": "a list of strings", "mapping": "a mapping",
}


class Fields:
    """One mapping of the file, read field by field."""

    def __init__(self, data: Any, path: str, problems: Problems, *, templated: bool = False):
        self.path = path
        self.problems = problems
        self.templated = templated
        self.taken: set[str] = set()
        self.suggestible: set[str] = set()   # known elsewhere: offered as "did you mean" too
        self.ok = isinstance(data, dict)
        self.data: dict[str, Any] = data if isinstance(data, dict) else {}
        if not self.ok:
            problems.add(path, f"expected a mapping, got {describe(data)}")

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str) -> Any:
        self.taken.add(key)
        return self.data.get(key)

    def take(self, key: str, kind: str = "any", *, required: bool = False, default: Any = None,
             choices: Sequence[str] | None = None, minimum: float | None = None,
             maximum: float | None = None) -> Any:
        self.taken.add(key)
        if key not in self.data:
            if required and self.ok:
                self.problems.add(join(self.path, key), "required field")
            return default
        return self.convert(self.data[key], kind, join(self.path, key), choices=choices, minimum=minimum,
                            maximum=maximum, default=default)

    def convert(self, value: Any, kind: str, path: str, *, choices: Sequence[str] | None = None,
                minimum: float | None = None, maximum: float | None = None, default: Any = None) -> Any:
        if self.templated and is_templated(value) and kind not in ("list", "mapping", "str-list"):
            return value
        try:
            result = convert(value, kind)
        except ValueError as exc:
            self.problems.add(path, str(exc))
            return default
        if choices is not None and result not in choices:
            self.problems.add(path, f'must be one of {", ".join(choices)}; got {describe(result)}')
            return default
        if minimum is not None and isinstance(result, (int, float)) and result < minimum:
            self.problems.add(path, f"must be at least {minimum:g}, got {result}")
            return default
        if maximum is not None and isinstance(result, (int, float)) and not result <= maximum:
            self.problems.add(path, f"must be at most {maximum:g}, got {result}")
            return default
        return result

    def finish(self) -> None:
        """Report the keys nobody asked for."""
        for key in self.data:
            if key not in self.taken:
                known = self.taken | self.suggestible
                self.problems.add(join(self.path, str(key)), "unknown field" + suggest(str(key), known))


def convert(value: Any, kind: str) -> Any:
    """``value`` as ``kind`` (one of ``KINDS``), or ValueError saying what was expected."""
    if kind == "any":
        return value
    if kind == "duration":
        return parse_duration(value)
    if kind == "fraction":
        return parse_fraction(value)
    ok = {
        "str": lambda v: isinstance(v, str),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "list": lambda v: isinstance(v, list),
        "str-list": lambda v: isinstance(v, list) and all(isinstance(x, (str, int)) and not isinstance(x, bool)
                                                       for x in v),
        "mapping": lambda v: isinstance(v, dict),
    }[kind]
    if kind == "int" and isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)  # a resolved reference such as "{{ svc.x.nodePort }}" inside a string
    if kind == "str" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not ok(value):
        raise ValueError(f"expected {_EXPECTED[kind]}, got {describe(value)}")
    if kind == "str-list":
        return [str(v) for v in value]
    return value
