"""Label selectors as scenario authors write them: kubectl's ``-l`` text or a mapping.

``run=my-nginx``, ``app=web,tier!=db``, ``env in (prod, staging)``, ``tier notin (db)``,
``release`` (has the label), ``!canary`` (lacks it); or ``{run: my-nginx}`` (equality only).
``parse_selector`` returns a predicate over a labels mapping or raises ValueError naming the
part it cannot read.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping

Predicate = Callable[[Mapping[str, str]], bool]

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_SET = re.compile(rf"^\s*(?P<key>{_KEY})\s+(?P<op>in|notin)\s+\((?P<values>[^()]*)\)\s*$")
_EQ = re.compile(rf"^\s*(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>[-A-Za-z0-9_.]*)\s*$")
_EXISTS = re.compile(rf"^\s*(?P<neg>!)?\s*(?P<key>{_KEY})\s*$")


def _split(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def parse_selector(selector: Any) -> Predicate:
    if isinstance(selector, dict):
        wanted = {str(k): str(v) for k, v in selector.items()}
        return lambda labels: all(labels.get(k) == v for k, v in wanted.items())
    if not isinstance(selector, str):
        raise ValueError("a selector is a string such as run=my-nginx or a mapping of labels")
    rules: list[Predicate] = []
    for part in _split(selector):
        if not part.strip():
            raise ValueError(f'invalid selector "{selector}": empty requirement')
        if m := _SET.match(part):
            key, values = m["key"], {v.strip() for v in m["values"].split(",") if v.strip()}
            if m["op"] == "in":
                rules.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                rules.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif m := _EQ.match(part):
            key, value = m["key"], m["value"]
            if m["op"] == "!=":
                rules.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                rules.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif m := _EXISTS.match(part):
            key = m["key"]
            if m["neg"]:
                rules.append(lambda labels, k=key: k not in labels)
            else:
                rules.append(lambda labels, k=key: k in labels)
        else:
            raise ValueError(f'invalid selector "{selector}": cannot read "{part.strip()}"')
    return lambda labels: all(rule(labels) for rule in rules)
