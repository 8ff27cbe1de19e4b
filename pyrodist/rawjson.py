"""JSON with raw bytes: how pyrodist's own processes frame messages, so binary never travels as text.

json cannot hold `bytes`; base64 or escapes would inflate them (serpent's `b'...'` text is about 2.9x
random bytes). A packed message is JSON whose bytes-like values are replaced by markers, followed by
those values' raw bytes::

    b"J" json                                   no bytes inside (the common case: no walk, no copy)
    b"B" u32 header_length header raw...        header = [value, [length, ...]]; each bytes-like value in
                                                value is {"__bytes__": index}, its bytes follow in order

Unpacking gives `bytes` back for every marker. A marker-shaped dict can only be made by a peer, and it
only ever becomes bytes: the receiver checks types as for any other value. Used on the Pyro4 wire
(`remote_serializer`) and on the pipes between a worker and its children (`runner`).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

MARKER = "__bytes__"
"""The key of the dict that stands for the index-th bytes value."""
PLAIN, WITH_BYTES = b"J", b"B"
_LENGTH = struct.Struct("!I")
_BYTES_LIKE = (bytes, bytearray, memoryview)
_PLAIN_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# json.dumps and JSONEncoder.encode build a C encoder on every call and json.loads wraps the C scanner in
# Python-level checks: at several messages per task, both built once here. Without a circular-reference
# check (a shared one would not be thread-safe): messages are made by pyrodist's own code.
_c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_encode_plain: Any = (
    None
    if _c_make_encoder is None
    else _c_make_encoder(None, _PLAIN_JSON.default, json.encoder.encode_basestring, None, ":", ",", False, False, True)
)
_scan: Any = json.decoder.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _dumps(value: Any) -> str:
    """JSON text of value, compact (TypeError for what JSON cannot hold, bytes among them)."""
    return _PLAIN_JSON.encode(value) if _encode_plain is None else "".join(_encode_plain(value, 0))


def _loads(text: str) -> Any:
    """The JSON value of text: the C scanner when the text is one value and nothing else, json.loads otherwise."""
    try:
        value, end = _scan(text, 0)
        if end == len(text):
            return value
    except (StopIteration, ValueError):
        pass  # json.loads says what is wrong
    return json.loads(text)


def pack_parts(value: Any, default: Callable[[Any], Any] | None = None) -> list[bytes | memoryview]:
    """value packed, as parts to write one after the other (big bytes values are not copied)."""
    try:
        return [PLAIN + _dumps(value).encode("utf-8", "surrogatepass")]
    except TypeError:  # bytes inside, or an object only default knows
        pass
    buffers: list[bytes | memoryview] = []

    def replace(obj: Any) -> Any:
        if isinstance(obj, _BYTES_LIKE):
            buffers.append(obj if isinstance(obj, bytes) else memoryview(obj).cast("B"))
            return {MARKER: len(buffers) - 1}
        if default is None:
            raise TypeError(f"{type(obj).__name__} cannot be packed")
        return default(obj)

    text = json.dumps(value, ensure_ascii=False, default=replace, separators=(",", ":"))
    if not buffers:
        return [PLAIN + text.encode("utf-8", "surrogatepass")]
    lengths = [len(b) if isinstance(b, bytes) else b.nbytes for b in buffers]
    encoded = f"[{text},{json.dumps(lengths)}]".encode("utf-8", "surrogatepass")
    return [WITH_BYTES + _LENGTH.pack(len(encoded)) + encoded, *buffers]


def pack(value: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """value packed as one message."""
    return b"".join(pack_parts(value, default))


def header_span(data: bytes | bytearray | memoryview) -> tuple[int, int]:
    """Where the JSON text of a packed message starts and ends; ValueError if malformed."""
    kind = bytes(data[:1])
    if kind == PLAIN:
        return 1, len(data)
    if kind == WITH_BYTES and len(data) >= 5:
        (length,) = _LENGTH.unpack_from(data, 1)
        if 5 + length <= len(data):
            return 5, 5 + length
    raise ValueError("not a packed message: it must start with J, or B and a header length within it")


def header_of(data: bytes | bytearray | memoryview) -> memoryview:
    """The JSON text of a packed message (what to measure before unpacking it), not copied."""
    start, end = header_span(data)
    return memoryview(data)[start:end]


def unpack(data: bytes | bytearray | memoryview) -> Any:
    """The value of a packed message, its bytes values as bytes; ValueError if malformed."""
    if data[:1] == PLAIN:  # no bytes inside: json reads it as it is (UTF-8, surrogates kept)
        try:
            return _loads(str(memoryview(data)[1:], "utf-8", "surrogatepass"))
        except RecursionError:
            raise ValueError("a packed message is nested too deeply to unpack") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"a packed message's JSON cannot be read: {exc}") from None
    view = memoryview(data)
    header = header_of(view)
    try:
        text = bytes(header).decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise ValueError(f"a packed message's JSON is not UTF-8: {exc}") from None
    try:
        value, lengths = _loads(text)
    except RecursionError:
        raise ValueError("a packed message is nested too deeply to unpack") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a packed message's header must be JSON [value, [length, ...]]: {exc}") from None
    if not isinstance(lengths, list) or not all(type(n) is int and n >= 0 for n in lengths):
        raise ValueError("a packed message's lengths must be a list of sizes")
    start, buffers = 5 + len(header), []
    for length in lengths:
        if start + length > len(view):
            raise ValueError(f"a packed message is {len(view)} bytes; its header says more follow")
        buffers.append(bytes(view[start : start + length]))
        start += length
    if start != len(view):
        raise ValueError(f"a packed message has {len(view) - start} bytes after its last value")
    try:
        return _restore(value, buffers)
    except RecursionError:
        raise ValueError("a packed message is nested too deeply to unpack") from None


def _restore(value: Any, buffers: list[bytes]) -> Any:
    kind = type(value)
    if kind is list:
        return [_restore(v, buffers) for v in value]
    if kind is not dict:
        return value
    if len(value) == 1 and MARKER in value:
        index = value[MARKER]
        if type(index) is not int or not 0 <= index < len(buffers):
            raise ValueError(f"a packed message refers to bytes value {index!r}, which it does not hold")
        return buffers[index]
    return {k: _restore(v, buffers) for k, v in value.items()}
