"""``key=value`` pairs from the command line, parsed one way for every flag that takes them
(``posebh eval --override``, ``posebh train --set``): the value is JSON where it parses
(numbers, booleans, null, lists, objects; lists become tuples, as the frozen configs hold
them), else the string itself.  What a pair then changes is the caller's business."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

__all__ = ["KeyValueError", "parse_pairs", "parse_value"]


class KeyValueError(ValueError):
    """An item that is not ``key=value``; the message names the flag and the item."""


def parse_value(text: str) -> Any:
    """``text`` as JSON (lists → tuples, recursively), or ``text`` itself when it is not."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return _tuplify(value)


def _tuplify(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuplify(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuplify(v) for k, v in value.items()}
    return value


def parse_pairs(items: Iterable[str], *, flag: str, example: str) -> list[tuple[str, Any]]:
    """``["a=1", "b.c=[1,2]"]`` → ``[("a", 1), ("b.c", (1, 2))]``, in order (a later pair
    for the same key wins where the caller builds a dict); ``flag`` and ``example`` (a valid
    pair) go into the error message."""
    pairs: list[tuple[str, Any]] = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise KeyValueError(f"{flag} takes key=value, got {item!r} (e.g. {flag} {example})")
        pairs.append((key.strip(), parse_value(value.strip())))
    return pairs
