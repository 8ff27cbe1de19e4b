"""Values as binary frames: compact, exact, and safe to decode from a hostile peer (no pickle, marshal or eval).

A frame carries one value: None, bool, int, float, complex, str, bytes, bytearray, memoryview, list, tuple,
dict, set, frozenset, datetime's datetime, date, time, timedelta and timezone, zoneinfo.ZoneInfo (by key),
Decimal, UUID, and dataclasses and namedtuples registered with `register_value_class`, nested freely. Each
comes back of the same type and equal (floats bit for bit). Unregistered subclasses of builtins travel as
their builtin base type (a namedtuple as a tuple, an OrderedDict as a dict, an IntEnum as an int).

Grammar (n, k: unsigned LEB128 varints; raw: n bytes copied as they are; fixed fields little-endian)::

    frame  := VERSION value                        nothing may follow the value
    value  := "N" | "T" | "F"                      None, True, False
            | "i" n raw                            int: n bytes of two's complement
            | "f" f64 | "c" f64 f64                float, complex: IEEE 754 bits
            | "s" n raw                            str: UTF-8, lone surrogates kept (surrogatepass)
            | "b" n raw | "a" n raw                bytes, bytearray
            | "m" fmt k k*n n raw                  memoryview: format char, k dims of shape, data in C order
            | "l" k value* | "t" k value*          list, tuple (k items)
            | "e" k value* | "z" k value*          set, frozenset
            | "d" k (value value)*                 dict: k keys, each followed by its value
            | "D" u16 u8 u8 u8 u8 u8 u32 u8 value  datetime: year .. second, microsecond, fold, tzinfo
            | "E" u16 u8 u8                        date
            | "H" u8 u8 u8 u32 u8 value            time: hour, minute, second, microsecond, fold, tzinfo
            | "R" i32 u32 u32                      timedelta: days, seconds, microseconds
            | "Z" i32 u32 u32 value                datetime.timezone: offset as in "R", name (None or a str)
            | "K" n raw                            zoneinfo.ZoneInfo: its key in UTF-8
            | "M" n raw                            Decimal: its str(), ASCII
            | "U" raw16                            UUID: its 16 bytes
            | "C" n raw value                      registered class: name, then a dict (dataclass fields
                                                   by name) or a tuple (namedtuple fields in order)

A tzinfo is "N", "Z" or "K". No value sits inside more than max_depth others (containers, datetimes, classes).
"""

from __future__ import annotations

import dataclasses
import operator
import struct
import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

from .errors import ValueEncodingError
from .valuetypes import BY_CLASS, decode_array, decode_registered, encode_registered, numpy_encoder, varint

VERSION = 1
"""First byte of every frame."""
MAX_DEPTH = 200
"""How many values a value may sit inside, when encoding and by default when decoding."""

_BIG = 1 << 16  # binary data this long becomes a part of its own instead of being copied
_MAX_CLASHES = 1000  # hash flooding: distinct keys of one hash make dicts quadratic; real data has few
_F64, _C128 = struct.Struct("<d"), struct.Struct("<dd")
_DATETIME, _DATE, _TIME = struct.Struct("<HBBBBBIB"), struct.Struct("<HBB"), struct.Struct("<BBBIB")
_DELTA = struct.Struct("<iII")
_VIEW_FORMATS = "bBc?hHiIlLqQnNfdP"  # the formats memoryview.cast can restore
_SUPPORTED = (
    "None, bool, int, float, complex, str, bytes, bytearray, memoryview, list, tuple, dict, set, frozenset, "
    "datetime, date, time, timedelta, timezone, ZoneInfo, Decimal, UUID, or a dataclass or namedtuple "
    "registered with pyrodist.register_value_class"
)

_Encoder = Callable[["_Writer", Any, int], None]
_Decoder = Callable[["_Reader", int], Any]


class _Writer:
    __slots__ = ("out", "parts", "what")

    def __init__(self, what: str) -> None:
        self.out, self.what = bytearray((VERSION,)), what
        self.parts: list[bytes | memoryview] = []

    def value(self, value: Any, depth: int) -> None:
        if depth > MAX_DEPTH:
            self.refuse(f"it is nested more than {MAX_DEPTH} deep")
        (_ENCODERS.get(type(value)) or self.other(value))(self, value, depth)

    def other(self, value: Any) -> _Encoder:
        """The encoder of a registered class or a builtin's subclass; else a refusal."""
        if type(value) in BY_CLASS:
            return encode_registered
        if type(value).__module__ == "numpy":
            encoder: _Encoder = numpy_encoder(self, value)
            return encoder
        for base, convert in _BASES:  # converted: a subclass's own __len__ or __iter__ must not skew the frame
            if isinstance(value, base):
                return lambda w, v, d: _ENCODERS[base](w, convert(v), d)
        kind = f"{type(value).__module__}.{type(value).__qualname__}"
        if dataclasses.is_dataclass(value):
            self.refuse(
                f"{kind} is a dataclass not registered for frames; call pyrodist.register_value_class"
                f"({type(value).__qualname__}) on both the client and the worker"
            )
        if isinstance(value, tzinfo):
            self.refuse(f"{kind} is a tzinfo frames do not carry (use datetime.timezone or ZoneInfo(key))")
        self.refuse(f"{kind} is not a type pyrodist carries (use {_SUPPORTED})")

    def refuse(self, reason: str) -> NoReturn:
        raise ValueEncodingError(f"{self.what} cannot be sent: {reason}")

    def data(self, tag: bytes, data: bytes | bytearray | memoryview) -> None:
        """Write tag, length and data (bytes, or a 1-D memoryview of bytes)."""
        self.out += tag
        varint(self.out, len(data))
        if len(data) < _BIG:
            self.out += data
        else:  # not copied: the frame refers to the caller's buffer
            self.parts += (bytes(self.out), memoryview(data))  # a view of its own: the caller may release theirs
            self.out.clear()


def _enc_int(w: _Writer, v: int, depth: int) -> None:
    size = (v.bit_length() + 8) >> 3  # one bit more for the sign
    w.out += b"i"
    varint(w.out, size)
    w.out += int.to_bytes(v, size, "little", signed=True)


def _enc_view(w: _Writer, v: memoryview, depth: int) -> None:
    fmt = v.format[1:] if v.format[:1] == "@" else v.format
    if len(fmt) != 1 or fmt not in _VIEW_FORMATS or not v.c_contiguous or (v.ndim > 1 and 0 in (v.shape or ())):
        layout = "" if v.c_contiguous else ", not C-contiguous,"
        w.refuse(
            f"a memoryview of format {v.format!r}, shape {v.shape}{layout} would not come back as it is (frames "
            f"carry C-contiguous memoryviews of one native format of {_VIEW_FORMATS!r}; send bytes(view) instead)"
        )
    w.out += b"m" + fmt.encode()
    varint(w.out, v.ndim)
    for n in v.shape or ():
        varint(w.out, n)
    w.data(b"", v if v.format == "B" and v.ndim == 1 else v.cast("B"))


def _enc_items(tag: bytes) -> _Encoder:
    def encode(w: _Writer, v: Any, depth: int) -> None:
        w.out += tag
        varint(w.out, len(v))
        for item in v:
            w.value(item, depth + 1)

    return encode


def _enc_dict(w: _Writer, v: dict[Any, Any], depth: int) -> None:
    w.out += b"d"
    varint(w.out, len(v))
    for key, item in dict.items(v):
        w.value(key, depth + 1)
        w.value(item, depth + 1)


def _enc_clock(tag: bytes, layout: struct.Struct, fields: str) -> _Encoder:
    get = operator.attrgetter(*fields.split())

    def encode(w: _Writer, v: datetime | time, depth: int) -> None:
        w.out += tag + layout.pack(*get(v))
        w.value(v.tzinfo, depth + 1)

    return encode


def _enc_timezone(w: _Writer, v: timezone, depth: int) -> None:
    offset, *name = v.__getinitargs__()  # type: ignore[attr-defined]  # (offset,) or (offset, name) if named
    w.out += b"Z" + _DELTA.pack(offset.days, offset.seconds, offset.microseconds)
    w.value(name[0] if name else None, depth + 1)


def _enc_zoneinfo(w: _Writer, v: ZoneInfo, depth: int) -> None:
    if v.key is None:
        w.refuse("a zoneinfo.ZoneInfo without a key (made from a file) cannot be rebuilt; use ZoneInfo(key)")
    w.data(b"K", v.key.encode("utf-8", "surrogatepass"))


_ENCODERS: dict[type, _Encoder] = {
    type(None): lambda w, v, d: w.out.extend(b"N"), bool: lambda w, v, d: w.out.extend(b"T" if v else b"F"),
    int: _enc_int, float: lambda w, v, d: w.out.extend(b"f" + _F64.pack(v)),
    complex: lambda w, v, d: w.out.extend(b"c" + _C128.pack(v.real, v.imag)),
    str: lambda w, v, d: w.data(b"s", str.encode(v, "utf-8", "surrogatepass")),
    bytes: lambda w, v, d: w.data(b"b", v), bytearray: lambda w, v, d: w.data(b"a", v), memoryview: _enc_view,
    list: _enc_items(b"l"), tuple: _enc_items(b"t"), set: _enc_items(b"e"), frozenset: _enc_items(b"z"),
    dict: _enc_dict, datetime: _enc_clock(b"D", _DATETIME, "year month day hour minute second microsecond fold"),
    time: _enc_clock(b"H", _TIME, "hour minute second microsecond fold"),
    date: lambda w, v, d: w.out.extend(b"E" + _DATE.pack(v.year, v.month, v.day)),
    timedelta: lambda w, v, d: w.out.extend(b"R" + _DELTA.pack(v.days, v.seconds, v.microseconds)),
    timezone: _enc_timezone, ZoneInfo: _enc_zoneinfo, uuid.UUID: lambda w, v, d: w.out.extend(b"U" + v.bytes),
    Decimal: lambda w, v, d: w.data(b"M", str(v).encode("ascii")),
}  # fmt: skip
_BASES: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    (int, int), (float, float), (complex, complex), (str, str.__str__), (bytes, bytes), (bytearray, bytearray),
    (tuple, tuple), (list, list), (dict, dict), (set, set), (frozenset, frozenset),
)  # fmt: skip


class _Reader:
    __slots__ = ("clashes", "end", "items_left", "max_depth", "pos", "view")

    def __init__(self, view: memoryview, max_depth: int, max_items: int | None = None) -> None:
        self.view, self.pos, self.end, self.max_depth, self.clashes = view, 1, len(view), max_depth, 0
        self.items_left = self.end if max_items is None else max_items

    def value(self, depth: int) -> Any:
        pos = self.pos
        if depth > self.max_depth:
            raise ValueError(f"the frame nests values more than {self.max_depth} deep")
        if pos >= self.end:
            raise ValueError("the frame ends where a value should start")
        self.pos = pos + 1
        return _DECODERS[self.view[pos]](self, depth)

    def varint(self) -> int:
        n = shift = 0
        for pos in range(self.pos, min(self.pos + 10, self.end)):  # 10 bytes: up to 70 bits, no more
            byte = self.view[pos]
            n |= (byte & 0x7F) << shift
            if byte < 0x80:
                self.pos = pos + 1
                return n
            shift += 7
        raise ValueError(f"the frame's length at offset {self.pos} runs past its end or past 10 bytes")

    def blob(self) -> memoryview:
        """A length, then that many bytes."""
        pos = self.pos
        size = self.view[pos] if pos < self.end else 0x80
        if size < 0x80:  # a one-byte length: most of them
            self.pos = pos + 1
            return self.take(size)
        return self.take(self.varint())

    def take(self, size: int) -> memoryview:
        pos = self.pos
        if size > self.end - pos:
            raise ValueError(f"the frame's length {size} at offset {pos} runs past its end")
        self.pos = pos + size
        return self.view[pos : pos + size]

    def count(self) -> int:
        """A count of items, each at least one byte: no more than the bytes left (checked before allocating)."""
        n = self.varint()
        if n > self.end - self.pos:
            raise ValueError(f"the frame's count {n} at offset {self.pos} is more than its bytes left")
        self.items_left -= n
        if self.items_left < 0:
            raise ValueError("the frame holds more items than may be decoded here: too many to decode here")
        return n

    def keys(self, keys: list[Any]) -> list[Any]:
        """Refuse many distinct keys of one hash: a dict or set of them takes quadratic time to build."""
        if len(keys) > 16:  # smaller ones cost little however they clash
            self.clashes += len(keys) - len(set(map(hash, keys)))
            if self.clashes > _MAX_CLASHES:
                raise ValueError(f"the frame has more than {_MAX_CLASHES} dict keys or set members of equal hashes")
        return keys

    def text(self, encoding: str = "utf-8") -> str:
        return str(self.blob(), encoding, "surrogatepass")


def _dec_items(build: Callable[[list[Any]], Any], hashed: bool = False) -> _Decoder:
    def decode(r: _Reader, depth: int) -> Any:
        items = [r.value(depth + 1) for _ in range(r.count())]
        return build(r.keys(items) if hashed else items)

    return decode


def _dec_dict(r: _Reader, depth: int) -> dict[Any, Any]:
    items = [r.value(depth + 1) for _ in range(2 * r.count())]
    return dict(zip(r.keys(items[::2]), items[1::2], strict=True))


def _dec_view(r: _Reader, depth: int) -> memoryview:
    fmt = chr(r.take(1)[0])
    shape = [r.varint() for _ in range(r.count())]
    data = bytes(r.blob())
    if fmt not in _VIEW_FORMATS:
        raise ValueError(f"the frame has a memoryview of unknown format {fmt!r}")
    raw: Any = memoryview(data)  # typeshed wants the format as a literal
    view: memoryview = raw.cast(fmt) if len(shape) == 1 else raw.cast(fmt, shape)
    if list(view.shape or ()) != shape:
        raise ValueError(f"the frame's memoryview holds {len(data)} bytes, not shape {shape} of {fmt!r}")
    return view


def _dec_clock(kind: Callable[..., datetime | time], layout: struct.Struct) -> _Decoder:
    def decode(r: _Reader, depth: int) -> datetime | time:
        *fields, fold = layout.unpack(r.take(layout.size))
        tz = r.value(depth + 1)
        if tz is not None and type(tz) is not timezone and type(tz) is not ZoneInfo:
            raise ValueError(f"the frame has a {type(tz).__name__} where a tzinfo should be")
        return kind(*fields, tz, fold=fold)

    return decode


def _dec_timezone(r: _Reader, depth: int) -> timezone:
    offset = timedelta(*_DELTA.unpack(r.take(_DELTA.size)))
    name = r.value(depth + 1)
    if name is not None and type(name) is not str:
        raise ValueError(f"the frame has a timezone named by a {type(name).__name__}")
    return timezone(offset) if name is None else timezone(offset, name)


def _dec_zoneinfo(r: _Reader, depth: int) -> ZoneInfo:
    key = r.text()
    try:
        return ZoneInfo(key)
    except (ValueError, LookupError, OSError) as exc:  # zoneinfo refuses paths out of its tree itself
        raise ValueError(f"the frame's time zone {key!r} is not known here: {exc}") from None


def _unknown(r: _Reader, depth: int) -> NoReturn:
    raise ValueError(f"the frame has an unknown tag {r.view[r.pos - 1]:#04x} at offset {r.pos - 1}")


_KNOWN: dict[str, _Decoder] = {
    "N": lambda r, d: None, "T": lambda r, d: True, "F": lambda r, d: False,
    "i": lambda r, d: int.from_bytes(r.blob(), "little", signed=True),
    "f": lambda r, d: _F64.unpack(r.take(8))[0], "c": lambda r, d: complex(*_C128.unpack(r.take(16))),
    "s": lambda r, d: r.text(), "b": lambda r, d: bytes(r.blob()),
    "a": lambda r, d: bytearray(r.blob()), "m": _dec_view,
    "l": _dec_items(list), "t": _dec_items(tuple), "e": _dec_items(set, True), "z": _dec_items(frozenset, True),
    "d": _dec_dict, "D": _dec_clock(datetime, _DATETIME), "E": lambda r, d: date(*_DATE.unpack(r.take(_DATE.size))),
    "H": _dec_clock(time, _TIME), "R": lambda r, d: timedelta(*_DELTA.unpack(r.take(_DELTA.size))),
    "Z": _dec_timezone, "K": _dec_zoneinfo, "M": lambda r, d: Decimal(r.text("ascii")),  # linear, any exponent
    "U": lambda r, d: uuid.UUID(bytes=bytes(r.take(16))), "C": decode_registered, "A": decode_array,
}  # fmt: skip
_DECODERS: tuple[_Decoder, ...] = tuple(_KNOWN.get(chr(tag), _unknown) for tag in range(256))  # indexed by tag


def frame_parts(value: Any, what: str = "value") -> list[bytes | memoryview]:
    """Encode a value as the parts of a frame; large binary data stays a view of the caller's buffer: keep it intact."""
    writer = _Writer(what)
    try:
        writer.value(value, 0)
    except RecursionError:
        raise ValueEncodingError(f"{what} cannot be sent: it is nested too deeply") from None
    if writer.out or not writer.parts:
        writer.parts.append(bytes(writer.out))
    return writer.parts


def frame_size(parts: Sequence[bytes | memoryview]) -> int:
    """The size in bytes of a frame given as parts."""
    return sum(part.nbytes if type(part) is memoryview else len(part) for part in parts)


def encode_frame(value: Any, what: str = "value", limit: int | None = None) -> bytes:
    """Encode a value as one frame, refusing (ValueEncodingError) what would not come back or exceeds limit."""
    parts = frame_parts(value, what)
    if limit is not None and (size := frame_size(parts)) > limit:
        raise ValueEncodingError(f"{what} is {size} bytes encoded; the limit is {limit}")
    return parts[0] if len(parts) == 1 and type(parts[0]) is bytes else b"".join(parts)


def decode_frame(data: bytes | bytearray | memoryview, max_depth: int = MAX_DEPTH, max_items: int | None = None) -> Any:
    """Decode a frame; anything malformed (or, with max_items, holding more items) raises ValueError."""
    try:
        view = memoryview(data).cast("B")  # a view of bytes, whatever the format
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a frame must be contiguous bytes: {exc}") from None
    if not view or view[0] != VERSION:
        raise ValueError(f"not a frame of version {VERSION}: it starts with {bytes(view[:1])!r}")
    reader = _Reader(view, max_depth, max_items)
    try:
        value = reader.value(0)
    except ValueError as exc:
        if type(exc) is ValueError:
            raise
        raise ValueError(f"the frame is malformed: {exc}") from exc  # UnicodeDecodeError and the like
    except (LookupError, TypeError, OverflowError, ArithmeticError, RecursionError, MemoryError, struct.error) as exc:
        raise ValueError(f"the frame is malformed: {exc!r}") from exc
    if reader.pos != reader.end:
        raise ValueError(f"the frame has {reader.end - reader.pos} bytes after its value")
    return value
