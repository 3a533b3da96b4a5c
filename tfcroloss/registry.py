"""Named choices: one lookup and one "unknown name" message for every registry in tfcroloss.

Each registry (kernels, weightings, towers, loss presets, optimizers, negative modes, strategies,
retrieval back-ends, input formats, ...) owns its names; configs, CLI choices and error messages
are derived from it through these two functions. Pure Python, so any layer may use it.

>>> lookup({"mean": 1, "gru": 2}, "gru", "tower")
2
>>> lookup({"mean": 1, "gru": 2}, "lstm", "tower")
Traceback (most recent call last):
...
ValueError: unknown tower 'lstm'; valid towers: mean, gru
>>> unknown_name("key", "alpah", ["alpha", "kernel", "margin"])
"unknown key 'alpah' (did you mean 'alpha'?); valid keys: alpha, kernel, margin"
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import TypeVar

T = TypeVar("T")


def unknown_name(what: str, name: object, valid: Iterable[str], *, plural: str | None = None) -> str:
    """The message for a name that is not one of ``valid``: what was given, the closest valid name
    if one is close, and what is allowed."""
    valid = [str(v) for v in valid]
    close = difflib.get_close_matches(name, valid, n=1) if isinstance(name, str) else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {what} {name!r}{hint}; valid {plural or what + 's'}: {', '.join(valid)}"


def lookup(
    table: Mapping[str, T],
    name: str,
    what: str,
    *,
    plural: str | None = None,
    error: type[Exception] = ValueError,
) -> T:
    """``table[name]``, or ``error`` with the ``unknown_name`` message."""
    if not isinstance(name, str) or name not in table:
        raise error(unknown_name(what, name, table, plural=plural))
    return table[name]
