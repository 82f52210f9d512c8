"""Label selectors as scenario authors write them: kubectl's ``-l`` text or a mapping.

``run=my-nginx``, ``app=web,tier!=db``, ``env in (prod, staging)``, ``tier notin (db)``,
``release`` (has the label), ``!canary`` (lacks it) — read by ``netemu.api.labels`` as
``netemu get -l`` reads them; or ``{run: my-nginx}`` (equality only). ``parse_selector``
returns a predicate over a labels mapping or raises ValueError saying what it cannot read.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

from netemu.api import labels as api_labels
from netemu.errors import InvalidError

Predicate = Callable[[Mapping[str, str]], bool]


def parse_selector(selector: Any) -> Predicate:
    if isinstance(selector, dict):
        wanted = {str(k): str(v) for k, v in selector.items()}
        return lambda labels: all(labels.get(k) == v for k, v in wanted.items())
    if not isinstance(selector, str):
        raise ValueError("a selector is a string such as run=my-nginx or a mapping of labels")
    try:
        parsed = api_labels.parse_selector(selector)
    except InvalidError as exc:
        raise ValueError(f'invalid selector "{selector}": {exc}') from None
    return functools.partial(api_labels.selector_matches, parsed)
