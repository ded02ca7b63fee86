"""Parse a JSON document whose bulk is one top-level array of objects, a chunk at a time.

Parsed whole, a COCO-train-size keypoint file (86 MB) becomes ~380 MB of Python objects, and
orjson adds a transient ~300 MB document tree on top. :func:`split_array` instead parses the
document with the array cut out, then hands out the array's elements a few MB at a time, so that
a reader can turn each chunk into columns and drop it.

Exactness: the pieces are the document's own bytes, cut only at ``}``/``,``/``{`` gaps and the
final ``}``/``]`` that lie outside strings (the file has no backslash, so an even number of
quotes before a byte means the byte is not in a string). Every piece is parsed by orjson on its
own; if all of them parse, each starts at depth 1 of the array and is balanced, so they are
whole elements and the file is valid JSON, read to the same values as one parse. Whenever
anything is not this simple case, :func:`split_array` returns ``None`` and the caller parses the
whole file as before.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson

__all__ = ["CHUNK_BYTES", "InvalidPiece", "split_array"]

#: Bytes of array elements parsed at once.
CHUNK_BYTES = 4 << 20

_SENTINEL = "posebh:array-read-in-chunks"
_ELEMENT_GAP = re.compile(rb"\}[ \t\n\r]*,[ \t\n\r]*\{")
_ARRAY_END = re.compile(rb"\}[ \t\n\r]*\]")
_WHITESPACE = b" \t\n\r"


def _outside_strings(raw: bytes, start: int, positions: Iterator[re.Match[bytes]]) -> int | None:
    """The first match start at an even number of quotes after ``start`` (None if none)."""
    parity, last = 0, start
    for m in positions:
        parity ^= raw.count(b'"', last, m.start()) & 1
        last = m.start()
        if not parity:
            return last
    return None


def split_array(
    raw: bytes, key: str, chunk_bytes: int | None = None
) -> tuple[dict[str, Any], Iterator[list[Any]], int] | None:
    """(the document with its top-level ``key`` array taken out, an iterator of the array's
    elements in chunks (lists, file order), the array's byte length) or ``None`` when ``raw``
    is not the simple case (a backslash anywhere, ``key`` not found exactly once, elements that
    are not objects, ...) or a piece is not valid JSON: then parse ``raw`` whole. The iterator
    raises :class:`InvalidPiece` for a chunk that is not valid JSON (parse ``raw`` whole then
    too).
    """
    if b"\\" in raw or _SENTINEL.encode() in raw:
        return None
    opening = re.compile(rb'"' + re.escape(key.encode()) + rb'"[ \t\n\r]*:[ \t\n\r]*\[')
    m = opening.search(raw)
    if m is None or opening.search(raw, m.end()) is not None:
        return None
    if raw.count(b'"', 0, m.start()) & 1:
        return None
    start = m.end()  # just after '['
    first = start
    while first < len(raw) and raw[first] in _WHITESPACE:
        first += 1
    if first >= len(raw):
        return None
    if raw[first] == ord("]"):
        end = first  # the ']' of an empty array
        bounds: list[tuple[int, int]] = []
    elif raw[first] == ord("{"):
        last_brace = _outside_strings(raw, start, _ARRAY_END.finditer(raw, first))
        if last_brace is None:
            return None
        end = raw.index(b"]", last_brace)
        bounds = _chunk_bounds(raw, first, last_brace + 1, chunk_bytes or CHUNK_BYTES)
    else:
        return None
    try:
        doc = orjson.loads(raw[: start - 1] + orjson.dumps(_SENTINEL) + raw[end + 1 :])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or doc.get(key) != _SENTINEL:
        return None
    return doc, _chunks(raw, bounds), end + 1 - (start - 1)


def _chunk_bounds(raw: bytes, first: int, stop: int, chunk_bytes: int) -> list[tuple[int, int]]:
    """Byte ranges [a, b) of consecutive element runs of about ``chunk_bytes`` between the
    first element's '{' at ``first`` and the last element's '}' + 1 at ``stop``."""
    bounds = []
    a = first
    while stop - a > chunk_bytes:
        gap = _outside_strings(raw, a, _ELEMENT_GAP.finditer(raw, a + chunk_bytes, stop))
        if gap is None:
            break
        bounds.append((a, gap + 1))
        a = raw.index(b"{", gap + 1)
    bounds.append((a, stop))
    return bounds


class InvalidPiece(ValueError):
    """A chunk is not valid JSON: the caller must parse the whole file."""


def _chunks(raw: bytes, bounds: list[tuple[int, int]]) -> Iterator[list[Any]]:
    for a, b in bounds:
        try:
            yield orjson.loads(b"[" + raw[a:b] + b"]")
        except orjson.JSONDecodeError as e:
            raise InvalidPiece(str(e)) from None
