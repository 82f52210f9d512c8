"""Field paths into objects, jsonpath-ish, in the manifest's spelling.

``spec.ports[0].nodePort``, ``status.loadBalancer.ingress[0].ip``, ``spec.ports[*].name`` (a
list, one value per port), ``metadata.labels['app.kubernetes.io/name']``. A missing field gives
None; ``[*]`` over a missing list gives ``[]``.
"""
from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(r"""\.?([A-Za-z_$][-A-Za-z0-9_$]*)|\[(\d+|\*|'[^']*'|"[^"]*")\]""")

Token = str | int | None   # a key, an index, or None for [*]


def parse_field_path(path: str) -> list[Token]:
    """Tokens of ``path``, or ValueError pointing at the character that cannot be read."""
    text = path.strip()
    if text.startswith("."):
        text = text[1:]
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        dotted = bool(m) and m.group(0).startswith(".")
        if not m or (m.group(1) is not None and dotted != (pos > 0)):
            raise ValueError(f'invalid field path "{path}" at "{text[pos:]}" (write e.g. spec.ports[0].nodePort)')
        if m.group(1) is not None:
            tokens.append(m.group(1))
        else:
            inner = m.group(2)
            if inner == "*":
                tokens.append(None)
            elif inner.isdigit():
                tokens.append(int(inner))
            else:
                tokens.append(inner[1:-1])
        pos = m.end()
    if not tokens:
        raise ValueError("empty field path")
    return tokens


def get_field(data: Any, tokens: list[Token]) -> Any:
    if not tokens:
        return data
    head, rest = tokens[0], tokens[1:]
    if head is None:
        if not isinstance(data, list):
            return []
        return [get_field(item, rest) for item in data]
    if isinstance(head, int):
        if isinstance(data, list) and head < len(data):
            return get_field(data[head], rest)
        return None
    if isinstance(data, dict) and head in data:
        return get_field(data[head], rest)
    return None
