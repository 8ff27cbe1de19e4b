"""Values (arguments and results) encoded for the wire, never pickle: JSON text or a binary frame.

A value made only of ints, finite floats, strings, lists and dicts with string keys travels as JSON text
after one space (JSON_MARK: also a Python literal of the same value, which serpent reads); None, True and
False as their names; anything else as a binary frame (`frames.py`: bytes stay raw, datetimes, Decimals,
UUIDs, sets and registered classes come back as what they were). The master stores and forwards either
form without decoding it. Text written by serpent (older stores, plain callers) is still read.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeGuard

import serpent

from .errors import ValueEncodingError
from .frames import decode_frame, frame_parts, frame_size
from .textshape import MAX_JSON_VALUES, MAX_SERPENT_TOKENS, MEASURED_ABOVE, json_values, serpent_tokens

Payload = str | bytes
"""An encoded value: text (JSON or serpent, see JSON_MARK) or a binary frame (`frames.py`)."""
MAX_PAYLOAD = 8 * 1024 * 1024
"""Largest encoded arguments or result of one task, in bytes."""

# Older pyrodist wrote values serpent cannot express (empty sets, frozensets, dicts with unhashable keys
# or a "__class__" key) as a tagged dict {_TAG: kind, "items": [...]}; such text is still read.
_TAG = "__pyrodist__"


# serpent reads text with ast.literal_eval: 8 µs for "6", 20 µs for "((5,), {})", more than the rest of
# a no-op task costs. So values made only of ints, finite floats, strings, lists and dicts with string
# keys are written as JSON after one space. That text is also a Python literal with the very same value
# (serpent reads it), and `decode_value` reads it with the json module, three to five times faster.
TEXT_AS_FRAME_ABOVE = 64 * 1024
"""Characters of a str value (or argument) above which it travels as a frame: every hop escapes and scans JSON text
inside its JSON message, where a frame's bytes are carried as they are."""
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
        for item in value:  # noqa: SIM110 - a generator for all() cost as much as the checks (per task)
            if type(item) is not int and not _json_exact(item, depth + 1):
                return False
        return True
    if kind is dict:  # keys the tag scheme reserves go the slow way
        for key, item in value.items():
            if type(key) is not str or key == _TAG or key == "__class__" or not _json_exact(key):
                return False
            if type(item) is not int and not _json_exact(item, depth + 1):
                return False
        return True
    return False


def _utf8_ok(text: str) -> bool:
    """Whether text can be written as UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)
# json.dumps builds its C encoder again on every call, a microsecond per small value; one built once serves
# the values `_json_exact` passed (no cycles: its depth is bounded; finite floats only).
_c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_encode_json: Any = (
    None
    if _c_make_encoder is None
    else _c_make_encoder(
        None, _JSON_ENCODER.default, json.encoder.encode_basestring, None, ": ", ", ", False, False, False
    )
)
_scan_json: Any = json.decoder.JSONDecoder().scan_once  # type: ignore[attr-defined]
"""One JSON value from an index: json.loads without its Python-level checks around the C scanner."""
_JSON_ONLY = re.compile(r"\\/|\\u[dD][89abAB]")
"""Escapes that mean something else to Python: an escaped slash, and surrogates (json pairs them up).
With these absent, a JSON text whose value is `_json_exact` (no true, false, null, NaN) means the same
to serpent, however it is spaced."""


def _json_text(value: Any) -> str:
    if type(value) is int:
        return JSON_MARK + repr(value)
    if _encode_json is None:
        return JSON_MARK + _JSON_ENCODER.encode(value)
    return JSON_MARK + "".join(_encode_json(value, 0))


def _as_json(value: Any, what: str, limit: int) -> str:
    try:
        text = _json_text(value)
    except ValueError as exc:  # an int past Python's 4,300 digits for text
        raise ValueEncodingError(f"{what} cannot be sent: {exc}") from None
    return _limited(text, what, limit)


def _long_text(value: Any) -> bool:
    """Whether value is a str long enough to travel better as a frame (raw UTF-8) than as JSON text in JSON."""
    return type(value) is str and len(value) > TEXT_AS_FRAME_ABOVE


@dataclass
class BigValue:
    """A value too big for one message: its payload as parts (big buffers not copied), to send in chunks."""

    parts: list[bytes | memoryview]
    size: int


def encode_value(value: Any, what: str = "value", limit: int = MAX_PAYLOAD) -> Payload:
    """Encode a value as JSON text where that means the same, else as a frame, refusing what would not come back."""
    encoded = encode_big(value, what, limit, limit)
    assert not isinstance(encoded, BigValue)
    return encoded


def encode_big(value: Any, what: str, limit: int, inline: int) -> Payload | BigValue:
    """Like encode_value, up to limit bytes; a payload over inline bytes comes back as a BigValue."""
    return encode_known(value, _json_exact(value) and not _long_text(value), what, limit, inline)


def json_exact_items(items: Iterable[Any]) -> bool:
    """Whether lists of these items, in a list, would be `_json_exact`, none a long text (checked in one loop)."""
    for item in items:  # noqa: SIM110 - a generator for all() cost as much as the checks (per call)
        if type(item) is not int and (not _json_exact(item, 2) or _long_text(item)):
            return False
    return True


def encode_known(value: Any, json_exact: bool, what: str, limit: int, inline: int) -> Payload | BigValue:
    """Like encode_big, for a value whose `_json_exact` (and no long text at its top) is known already."""
    if json_exact:
        text = _as_json(value, what, limit)
        return text if len(text) <= inline // 4 else _big_text(text, inline)
    if value is None or type(value) is bool:
        return repr(value)
    parts = frame_parts(value, what)
    size = frame_size(parts)
    if size > limit:
        raise ValueEncodingError(f"{what} is {size} bytes encoded; the limit is {limit} (max_value, --max-value)")
    if size > inline:
        return BigValue(parts, size)
    return parts[0] if len(parts) == 1 and type(parts[0]) is bytes else b"".join(parts)


def _limited(text: str, what: str, limit: int) -> str:
    if not payload_fits(text, limit):
        raise ValueEncodingError(
            f"{what} is {len(text.encode('utf-8', 'surrogatepass'))} bytes encoded; the limit is {limit}"
        )
    return text


def decode_value(text: Payload, bounded: bool = False) -> Any:
    """Decode what `encode_value` made (or serpent text); bounded: refuse (ValueError) more values than a call holds."""
    if isinstance(text, bytes | bytearray):  # a frame's items are counted as they are read
        return decode_frame(text, max_items=MAX_SERPENT_TOKENS if bounded else None)
    assert isinstance(text, str)
    if text.startswith(BLOB_MARK):
        raise ValueError("the value is kept on the master as a blob: download it (blob_get) before decoding it")
    if text in _LITERAL_WORDS:
        return _LITERAL_WORDS[text]
    measured = bounded and len(text) > MEASURED_ABOVE  # the master decodes for plain callers: not a gigabyte
    if text[:1] == JSON_MARK and not (measured and json_values(text.encode()) > MAX_JSON_VALUES):
        with contextlib.suppress(ValueError, StopIteration):
            value, end = _scan_json(text, len(JSON_MARK))
            if end == len(text) and _json_exact(value) and not _JSON_ONLY.search(text):
                return value  # what serpent would read too
        # json's own words (" true", " NaN"), escapes, other spacing: serpent decides, as for any other text
    if measured and serpent_tokens(text) > MAX_SERPENT_TOKENS:
        raise ValueError(f"the value holds more than {MAX_SERPENT_TOKENS} serpent tokens, too many to decode here")
    value = serpent.loads(text.encode("utf-8"))
    if _TAG in text or "__class__" in text:
        value = _restore(value)
    return value


BLOB_MARK = "@blob "
"""First characters of a payload that stands for a value kept on the master as a blob (`blobs.py`)."""


def is_blob_ref(payload: Payload | None) -> bool:
    """Whether a payload stands for a blob (cheap: one check per task on the hot paths)."""
    return type(payload) is str and payload.startswith(BLOB_MARK)


class BlobRef(NamedTuple):
    """A value too big for one message, uploaded to the master in chunks: its blob id, size and CRC-32."""

    blob_id: str
    size: int
    crc: int

    def payload(self) -> str:
        """The reference as a payload: `@blob ID SIZE CRC`."""
        return f"{BLOB_MARK}{self.blob_id} {self.size} {self.crc}"

    @classmethod
    def parse(cls, payload: Payload | None) -> BlobRef | None:
        """The reference a payload is, or None for an ordinary payload; ValueError for a malformed one."""
        if type(payload) is not str or not payload.startswith(BLOB_MARK):
            return None
        fields = payload[len(BLOB_MARK) :].split(" ")
        if len(fields) != 3 or not fields[1].isdigit() or not fields[2].isdigit() or len(payload) > 200:
            raise ValueError(f"a blob reference is '@blob ID SIZE CRC', not {payload[:100]!r}")
        return cls(fields[0], int(fields[1]), int(fields[2]))


def is_payload(value: Any) -> TypeGuard[Payload]:
    """Whether value is an encoded value's type (text or a frame)."""
    return type(value) is str or type(value) is bytes


def arrived_payload(value: Any) -> Any:
    """A payload as a plain caller sent it: Pyro4's serpent sends bytes as {"data": base64, "encoding": "base64"}."""
    if type(value) is dict and value.get("encoding") == "base64" and type(value.get("data")) is str and len(value) == 2:
        try:
            return base64.b64decode(value["data"], validate=True)
        except ValueError:
            return value  # refused as not a payload
    return value


def payload_fits(payload: Payload, limit: int = MAX_PAYLOAD) -> bool:
    """Whether an encoded value is at most limit bytes (text in UTF-8, counted only when it could be over)."""
    if isinstance(payload, bytes):
        return len(payload) <= limit
    return len(payload) <= limit // 4 or len(payload.encode("utf-8", "surrogatepass")) <= limit


def encode_call(args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any], limit: int = MAX_PAYLOAD) -> Payload:
    """Encode a call's arguments as one payload."""
    encoded = encode_big_call(args, kwargs, limit, limit)
    assert not isinstance(encoded, BigValue)
    return encoded


def encode_big_call(
    args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any], limit: int, inline: int
) -> Payload | BigValue:
    """Encode a call's arguments, up to limit bytes; over inline bytes, as a BigValue."""
    for key in kwargs:
        if not isinstance(key, str):
            raise ValueEncodingError(f"keyword argument names must be strings, not {key!r}")
    json_exact = _json_exact(kwargs)
    for arg in args:
        if not json_exact:
            break
        json_exact = type(arg) is int or (_json_exact(arg) and not _long_text(arg))
    if json_exact:  # a list, which decode_call makes a tuple
        text = _as_json([list(args), kwargs], "the task's arguments", limit)
        return text if len(text) <= inline // 4 else _big_text(text, inline)
    return encode_big((tuple(args), dict(kwargs)), "the task's arguments", limit, inline)


def _big_text(text: str, inline: int) -> Payload | BigValue:
    """Text, or a BigValue of its UTF-8 when longer than inline bytes."""
    if len(text) <= inline // 4:
        return text
    data = text.encode("utf-8", "surrogatepass")
    return BigValue([data], len(data)) if len(data) > inline else text


def decode_call(payload: Payload) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Decode a payload made by `encode_call`."""
    return as_call(decode_value(payload))


def as_call(arguments: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A decoded call payload as (args, kwargs)."""
    args, kwargs = arguments
    return tuple(args), kwargs


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
