"""JSON values: the only data shape that crosses the core's boundary.

Payloads, step inputs and outputs, run context and error details are all JSON
objects. This module owns the type and the one pure check that says whether a
value from the outside may be stored.

Rules kept here:

1. Only ``None``, ``bool``, ``int``, ``float``, ``str``, lists and string-keyed
   mappings are JSON values. Tuples are accepted on input and stored as lists.
2. Floats must be finite; NaN and infinities are not JSON.
3. Strings may not contain NUL characters or lone surrogates: the durable
   stores cannot hold them, so they are refused before anything is written.
   :func:`storable_text_problem` is that check, for every string the core or
   the shell stores (JSON strings and keys, names, idempotency keys), and
   :func:`make_storable_text` the one repair, for text that must be stored
   whatever it holds (failure messages, bodies of HTTP answers).
4. Nesting and total size are bounded by :class:`JsonLimits`. The size is that
   of the text the stores write (:func:`dump_json`), escapes included, so what
   is accepted is what is stored.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeAlias

from returns.result import Failure, Result, Success

JsonValue: TypeAlias = (
    bool | int | float | str | Sequence["JsonValue"] | Mapping[str, "JsonValue"] | None
)
JsonObject: TypeAlias = Mapping[str, JsonValue]

EMPTY_OBJECT: JsonObject = MappingProxyType({})
"""A shared, read-only empty object (safe as a dataclass default)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JsonLimits:
    """Bounds on values the core agrees to store."""

    max_bytes: int = 1024 * 1024
    """Largest accepted size of the value as stored (the text of :func:`dump_json`;
    escapes count: ``\\n`` takes two bytes, another control or non-ASCII character
    six, one beyond the BMP twelve). Default 1 MiB."""

    max_depth: int = 64
    """Deepest accepted nesting of lists and objects."""


DEFAULT_LIMITS = JsonLimits()

MAX_INT_BITS = 1024
"""Integers wider than this are refused (about 308 decimal digits)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JsonProblem:
    """Why a value is not storable JSON: where (a path like ``$.items[2]``) and what."""

    path: str
    reason: str


_UNSTORABLE_CHARACTER = re.compile(r"[\x00\ud800-\udfff]")
"""NUL and every surrogate code point: in a ``str`` a surrogate always stands alone."""

ELLIPSIS = "..."
"""Ends a text that :func:`make_storable_text` cut to its limit."""


def storable_text_problem(text: str) -> str | None:
    r"""Why ``text`` cannot be stored (no store holds NUL or a lone surrogate), or ``None``.

    >>> storable_text_problem("fine") is None
    True
    >>> storable_text_problem("a\x00b")
    'contains a NUL character'
    >>> storable_text_problem("\ud800")
    'contains a lone surrogate'
    """
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate"
    return None


def make_storable_text(
    text: object, *, limit: int | None = None, replacement: str | None = None
) -> str:
    r"""``text`` made storable: every NUL and lone surrogate replaced, the length bounded.

    Args:
        text: a string; anything else is described by its ``repr``.
        limit: most characters kept; a longer text is cut and ends with
            ``"..."`` (``limit`` characters in all). ``None`` keeps any length.
        replacement: put in place of each unstorable character. By default it
            is written as its backslash escape (``\x00``, ``\ud800``), so the
            text still shows what was there.

    Returns:
        A string :func:`storable_text_problem` accepts; ``text`` itself when it
        was storable and within ``limit``.

    Raises:
        ValueError: ``limit`` is negative or ``replacement`` is not storable.

    >>> make_storable_text("nul\x00 and \ud800")
    'nul\\x00 and \\ud800'
    >>> make_storable_text("nul\x00", replacement="?")
    'nul?'
    >>> make_storable_text("abcdefgh", limit=6)
    'abc...'
    >>> make_storable_text(b"raw")
    "b'raw'"
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    if replacement is not None and storable_text_problem(replacement) is not None:
        raise ValueError(f"the replacement {replacement!r} is not storable itself")
    raw = text if isinstance(text, str) else repr(text)
    if storable_text_problem(raw) is None:
        cleaned = raw
    elif replacement is None:
        cleaned = _UNSTORABLE_CHARACTER.sub(_escape, raw)
    else:
        substitute = replacement
        cleaned = _UNSTORABLE_CHARACTER.sub(lambda _: substitute, raw)
    if limit is None or len(cleaned) <= limit:
        return cleaned
    return (cleaned[: max(limit - len(ELLIPSIS), 0)] + ELLIPSIS)[:limit]


def _escape(found: re.Match[str]) -> str:
    # The escapes Python's "backslashreplace" error handler writes.
    code = ord(found.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_ESCAPED = re.compile(r'["\\\x00-\x1f\x7f]')
"""ASCII characters JSON writes escaped: the quote, the backslash, C0 controls and DEL."""
_SHORT_ESCAPED = re.compile(r'["\\\b\f\n\r\t]')
"""The escaped ASCII characters written in two bytes (``\\n``); other controls take six."""
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_ASTRAL = re.compile(r"[\U00010000-\U0010ffff]")
"""Characters beyond the BMP: written as a pair of ``\\uXXXX`` escapes (twelve bytes)."""


def dump_json(value: JsonValue) -> str:
    r"""The text a store writes for ``value``: compact JSON in ASCII.

    Every character outside ASCII is written as its ``\uXXXX`` escape, so the
    text can be stored whatever the database's encoding. :class:`JsonLimits`
    bounds exactly this text.

    >>> dump_json({"a": ["é", 1.5, None]})
    '{"a":["\\u00e9",1.5,null]}'
    """
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _encoded_size(text: str) -> int:
    """Bytes ``text`` takes as a JSON string in :func:`dump_json`'s text, quotes included."""
    size = len(text) + 2
    if _ESCAPED.search(text) is not None:
        size += 5 * len(_ESCAPED.findall(text)) - 4 * len(_SHORT_ESCAPED.findall(text))
    if not text.isascii():
        size += 5 * len(_NON_ASCII.findall(text)) + 6 * len(_ASTRAL.findall(text))
    return size


def check_json(
    value: object, *, limits: JsonLimits = DEFAULT_LIMITS
) -> Result[JsonValue, JsonProblem]:
    """Check that ``value`` is storable JSON and return it with tuples made lists.

    Args:
        value: any Python value.
        limits: size and depth bounds.

    Returns:
        ``Success`` with the normalised value, or ``Failure(JsonProblem)`` naming
        the first offending path.

    >>> check_json({"a": [1, 2.5, "x"]}).unwrap()
    {'a': [1, 2.5, 'x']}
    >>> check_json({"a": float("nan")}).failure().reason
    'is not a finite number'
    """
    budget = [limits.max_bytes]

    def spend(n: int, path: str) -> JsonProblem | None:
        budget[0] -= n
        if budget[0] < 0:
            return JsonProblem(
                path=path, reason=f"exceeds the size limit of {limits.max_bytes} bytes"
            )
        return None

    def walk(item: object, path: str, depth: int) -> Result[JsonValue, JsonProblem]:
        if depth > limits.max_depth:
            return Failure(
                JsonProblem(path=path, reason=f"is nested deeper than {limits.max_depth} levels")
            )
        if item is None or isinstance(item, bool):
            over = spend(5, path)
            return Failure(over) if over else Success(item)
        if isinstance(item, int):
            if item.bit_length() > MAX_INT_BITS:
                return Failure(JsonProblem(path=path, reason="is an integer too large to store"))
            over = spend(len(str(item)), path)
            return Failure(over) if over else Success(item)
        if isinstance(item, float):
            if not math.isfinite(item):
                return Failure(JsonProblem(path=path, reason="is not a finite number"))
            over = spend(len(repr(item)), path)
            return Failure(over) if over else Success(item)
        if isinstance(item, str):
            problem = storable_text_problem(item)
            if problem:
                return Failure(JsonProblem(path=path, reason=problem))
            over = spend(_encoded_size(item), path)
            return Failure(over) if over else Success(item)
        if isinstance(item, Mapping):
            out: dict[str, JsonValue] = {}
            over = spend(2, path)
            if over:
                return Failure(over)
            for key, sub in item.items():
                if not isinstance(key, str):
                    return Failure(JsonProblem(path=path, reason=f"has a non-string key {key!r}"))
                key_problem = storable_text_problem(key)
                if key_problem:
                    return Failure(JsonProblem(path=path, reason=f"has a key that {key_problem}"))
                over = spend(_encoded_size(key) + 2, path)
                if over:
                    return Failure(over)
                checked = walk(sub, f"{path}.{key}", depth + 1)
                if isinstance(checked, Failure):
                    return checked
                out[key] = checked.unwrap()
            return Success(out)
        if isinstance(item, list | tuple):
            items: list[JsonValue] = []
            over = spend(2, path)
            if over:
                return Failure(over)
            for index, sub in enumerate(item):
                checked = walk(sub, f"{path}[{index}]", depth + 1)
                if isinstance(checked, Failure):
                    return checked
                items.append(checked.unwrap())
                over = spend(1, path)
                if over:
                    return Failure(over)
            return Success(items)
        return Failure(
            JsonProblem(path=path, reason=f"is a {type(item).__name__}, which is not JSON")
        )

    return walk(value, "$", 0)


def check_json_object(
    value: object, *, limits: JsonLimits = DEFAULT_LIMITS
) -> Result[JsonObject, JsonProblem]:
    """Like :func:`check_json`, but the value must be a JSON object (a mapping)."""
    if not isinstance(value, Mapping):
        return Failure(
            JsonProblem(path="$", reason=f"is a {type(value).__name__}, expected an object")
        )
    return check_json(value, limits=limits).map(_as_object)


def _as_object(value: JsonValue) -> JsonObject:
    # check_json preserves the outer kind, so a mapping in gives a mapping out.
    return value if isinstance(value, Mapping) else EMPTY_OBJECT
