"""Values (arguments and results) as text: what crosses the wire inside records, never pickle.

Values travel as text serpent reads (`encode_value`: JSON after a space where that is a Python literal
of the same value, see JSON_MARK, else serpent's own), which the master stores and forwards without
decoding. Only types that come back equal and of the same type are accepted: None, bool, int, float,
complex, str, bytes, list, tuple, dict, set and frozenset, nested freely. Subclasses of those (a
namedtuple, an OrderedDict, an IntEnum) arrive as their builtin base type.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Callable
from typing import Any

import serpent

from .errors import ValueEncodingError
from .textshape import MAX_JSON_VALUES, MAX_SERPENT_TOKENS, MEASURED_ABOVE, json_values, serpent_tokens

MAX_PAYLOAD = 8 * 1024 * 1024
"""Largest encoded arguments or result of one task, in bytes."""

# serpent has no literal for an empty set or a frozenset, refuses unhashable set members and dict
# keys, and reads dicts with a "__class__" key as its own markers. Such values travel as a tagged
# dict {_TAG: kind, "items": [...]}; a user dict that holds the tag key or "__class__" is tagged too,
# so decoding can never mistake user data for a marker.
_TAG = "__pyrodist__"
_HEADER = b"# serpent utf-8 python3.2\n"
_SCALARS = (type(None), bool, int, float, complex, str, bytes)
# Subclasses (namedtuple, OrderedDict, IntEnum, str enums) are sent as their builtin base type.
_BASES: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    (int, int), (float, float), (complex, complex), (str, str.__str__), (bytes, bytes),
    (tuple, tuple), (list, list), (dict, dict), (set, set), (frozenset, frozenset),
)  # fmt: skip


# serpent reads text with ast.literal_eval: 8 µs for "6", 20 µs for "((5,), {})", more than the rest of
# a no-op task costs. So values made only of ints, finite floats, strings, lists and dicts with string
# keys are written as JSON after one space. That text is also a Python literal with the very same value
# (serpent reads it), and `decode_value` reads it with the json module, three to five times faster.
JSON_MARK = " "
"""First character of a payload written as JSON (serpent never writes one)."""
_LITERAL_WORDS = {"None": None, "True": True, "False": False}


def _json_exact(value: Any, depth: int = 0) -> bool:
    """Whether json.dumps(value) is a Python literal of this very value (see JSON_MARK)."""
    kind = type(value)
    if kind is int:
        return True
    if kind is str:
        return value.isascii() or _utf8_ok(value)
    if kind is float:
        return math.isfinite(value)
    if depth > 32:
        return False
    if kind is list:
        return all(_json_exact(v, depth + 1) for v in value)
    if kind is dict:  # keys the tag scheme reserves go the slow way
        return all(
            type(k) is str and k != _TAG and k != "__class__" and _json_exact(k) and _json_exact(v, depth + 1)
            for k, v in value.items()
        )
    return False


def _utf8_ok(text: str) -> bool:
    """Whether text can be written as UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)
_JSON_ONLY = re.compile(r"\\/|\\u[dD][89abAB]")
"""Escapes that mean something else to Python: an escaped slash, and surrogates (json pairs them up).
With these absent, a JSON text whose value is `_json_exact` (no true, false, null, NaN) means the same
to serpent, however it is spaced."""


def _json_text(value: Any) -> str:
    return JSON_MARK + (repr(value) if type(value) is int else _JSON_ENCODER.encode(value))


def _as_json(value: Any, what: str, limit: int) -> str:
    try:
        text = _json_text(value)
    except ValueError as exc:  # an int past Python's 4,300 digits for text
        raise ValueEncodingError(f"{what} cannot be sent: {exc}") from None
    return _limited(text, what, limit)


def encode_value(value: Any, what: str = "value", limit: int = MAX_PAYLOAD) -> str:
    """Encode a value as text serpent reads (JSON where that means the same), refusing what would not come back."""
    if _json_exact(value):
        return _as_json(value, what, limit)
    if value is None or type(value) is bool:
        return repr(value)
    try:
        checked = _check(value, what)
        data = serpent.dumps(checked, bytes_repr=True)
    except RecursionError:
        raise ValueEncodingError(f"{what} cannot be sent: it is nested too deeply") from None
    except ValueEncodingError:
        raise
    except (TypeError, ValueError) as exc:
        raise ValueEncodingError(f"{what} cannot be sent: {exc}") from None
    text: bytes = data[len(_HEADER) :] if data.startswith(_HEADER) else data
    if len(text) > limit:
        raise ValueEncodingError(f"{what} is {len(text)} bytes encoded; the limit is {limit}")
    return text.decode("utf-8")


def _limited(text: str, what: str, limit: int) -> str:
    if not payload_fits(text, limit):
        raise ValueEncodingError(
            f"{what} is {len(text.encode('utf-8', 'surrogatepass'))} bytes encoded; the limit is {limit}"
        )
    return text


def decode_value(text: str, bounded: bool = False) -> Any:
    """Decode serpent text made by `encode_value`; bounded: refuse (ValueError) more values than a call may hold."""
    if text in _LITERAL_WORDS:
        return _LITERAL_WORDS[text]
    measured = bounded and len(text) > MEASURED_ABOVE  # the master decodes for plain callers: not a gigabyte
    if text[:1] == JSON_MARK and not (measured and json_values(text.encode()) > MAX_JSON_VALUES):
        with contextlib.suppress(ValueError):
            value = json.loads(text)
            if _json_exact(value) and not _JSON_ONLY.search(text):
                return value  # what serpent would read too
        # json's own words (" true", " NaN") and escapes: serpent decides, as for any other text
    if measured and serpent_tokens(text) > MAX_SERPENT_TOKENS:
        raise ValueError(f"the value holds more than {MAX_SERPENT_TOKENS} serpent tokens, too many to decode here")
    value = serpent.loads(text.encode("utf-8"))
    if _TAG in text or "__class__" in text:
        value = _restore(value)
    return value


def payload_fits(text: str, limit: int = MAX_PAYLOAD) -> bool:
    """Whether encoded text is at most limit bytes in UTF-8 (counting only when it could be over)."""
    return len(text) <= limit // 4 or len(text.encode("utf-8", "surrogatepass")) <= limit


def encode_call(args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any], limit: int = MAX_PAYLOAD) -> str:
    """Encode a call's arguments as one payload."""
    for key in kwargs:
        if not isinstance(key, str):
            raise ValueEncodingError(f"keyword argument names must be strings, not {key!r}")
    if all(_json_exact(a) for a in args) and _json_exact(kwargs):  # a list, which decode_call makes a tuple
        return _as_json([list(args), kwargs], "the task's arguments", limit)
    return encode_value((tuple(args), dict(kwargs)), "the task's arguments", limit)


def decode_call(payload: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Decode a payload made by `encode_call`."""
    args, kwargs = decode_value(payload)
    return tuple(args), kwargs


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _check(value: Any, what: str) -> Any:
    """Return value, or a copy where subclasses became their base type and awkward containers got tagged."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is list or kind is tuple:
        items = [_check(v, what) for v in value]
        return items if kind is list else tuple(items)
    if kind is dict:
        pairs = [(_check(k, what), _check(v, what)) for k, v in value.items()]
        if _TAG in value or "__class__" in value or not all(_hashable(k) for k, _ in pairs):
            return {_TAG: "dict", "items": [list(pair) for pair in pairs]}
        return dict(pairs)
    if kind is set or kind is frozenset:
        items = [_check(v, what) for v in value]
        if kind is set and items and all(_hashable(v) for v in items):
            return set(items)
        return {_TAG: kind.__name__, "items": items}
    for base, convert in _BASES:
        if isinstance(value, base):
            return _check(convert(value), what)
    raise ValueEncodingError(
        f"{what} cannot be sent: {kind.__module__}.{kind.__qualname__} is not a type serpent carries "
        "faithfully (use None, bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset)"
    )


def _restore(value: Any) -> Any:
    kind = type(value)
    if kind is list:
        return [_restore(v) for v in value]
    if kind is tuple:
        return tuple(_restore(v) for v in value)
    if kind is set:
        return value  # members are scalars or tuples of them: nothing tagged inside
    if kind is not dict:
        return value
    tag = value.get(_TAG)
    if tag is not None and len(value) == 2 and "items" in value:
        if tag == "dict":
            return {_restore(k): _restore(v) for k, v in value["items"]}
        items = [_restore(v) for v in value["items"]]
        return frozenset(items) if tag == "frozenset" else set(items)
    if "__class__" in value:  # serpent's own markers: floats and complex numbers with nan parts
        keys, marker = set(value), value["__class__"]
        if marker == "float" and keys == {"__class__", "value"}:
            return float(value["value"])
        if marker == "complex" and keys == {"__class__", "real", "imag"}:
            return complex(_restore(value["real"]), _restore(value["imag"]))
        raise ValueError(f"not a value encode_value writes: a dict with a '__class__' key {marker!r}")
    return {k: _restore(v) for k, v in value.items()}
