"""Binary frames (pyrodist.frames): values come back exact, refusals are clear, hostile bytes raise only ValueError."""

from __future__ import annotations

import collections
import dataclasses
import enum
import io
import math
import struct
import subprocess
import sys
import tracemalloc
import uuid
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from datetime import time as dtime
from decimal import Decimal
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyrodist.errors import ValueEncodingError
from pyrodist.frames import MAX_DEPTH, VERSION, decode_frame, encode_frame, frame_parts, frame_size
from pyrodist.valuetypes import register_value_class

MiB = 1024 * 1024


def _zone(key: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(key)
    except ZoneInfoNotFoundError:
        return None


PARIS, NEW_YORK = _zone("Europe/Paris"), _zone("America/New_York")
needs_tzdata = pytest.mark.skipif(PARIS is None or NEW_YORK is None, reason="no time zone database here")


@register_value_class
@dataclasses.dataclass
class Point:
    x: int
    y: float = 0.0
    label: str = ""


@register_value_class
@dataclasses.dataclass(frozen=True)
class Key:
    name: str
    parts: tuple[int, ...] = ()


@dataclasses.dataclass
class Tree:
    value: Any
    children: list[Tree] = dataclasses.field(default_factory=list)


register_value_class(Tree, name="tests.Tree")


class Pair(NamedTuple):
    left: Any
    right: Any = None


register_value_class(Pair)


@dataclasses.dataclass
class Unregistered:
    x: int


class Color(enum.IntEnum):
    RED = 1


class Mode(enum.StrEnum):
    FAST = "fast"


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def same(a: Any, b: Any) -> bool:
    """Equal and of the same type all the way down; floats bit for bit, tzinfo and fold included."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return bits(a) == bits(b)
    if type(a) is complex:
        return bits(a.real) == bits(b.real) and bits(a.imag) == bits(b.imag)
    if type(a) is Decimal:
        return a.as_tuple() == b.as_tuple()
    if type(a) is memoryview:
        return (a.format, a.shape, a.tobytes()) == (b.format, b.shape, b.tobytes())
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb) for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    if type(a) in (set, frozenset):
        return a == b and collections.Counter(map(type, a)) == collections.Counter(map(type, b))
    if type(a) in (datetime, dtime):
        return a == b and a.fold == b.fold and same(a.tzinfo, b.tzinfo)
    if type(a) is timezone:
        return repr(a) == repr(b)  # offset and name, if one was given
    if dataclasses.is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, tuple):  # a registered namedtuple
        return same(tuple(a), tuple(b))
    return bool(a == b)


def round_trip(value: Any) -> Any:
    data = encode_frame(value)
    assert data[0] == VERSION
    assert frame_size(frame_parts(value)) == len(data)
    return decode_frame(data)


def check(value: Any) -> None:
    back = round_trip(value)
    assert same(back, value), (value, back)


# ---- round trips ---------------------------------------------------------------------------------

VALUES = [
    None, True, False, 0, 1, -1, 127, 128, -128, -129, 255, 256, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1,
    10**5000, -(10**5000), 1.5, -0.0, 0.0, math.inf, -math.inf, math.nan, 5e-324, 1 + 2j, complex(-0.0, math.nan),
    "", "héllo \u2028 wörld", "\udc80 lone \ud800", "\x00", "😀" * 3, b"", b"\x00\xff", bytearray(), bytearray(b"ab"),
    [], [1, [2, [3]]], (), (1,), ((),), {}, {"a": {"b": b"c"}}, {(1, 2): b"k", b"x": None, 3: "i", None: 1},
    {"__class__": "float", "value": "nan", "__pyrodist__": 1}, set(), {1, 2, 3}, frozenset(), frozenset({"a", (1, 2)}),
    [set(), frozenset(), (b"",), bytearray(b"x")], {frozenset({1}): {2}},
    datetime(2024, 5, 6, 7, 8, 9, 123456), datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999),
    datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=-5), "EST")),
    datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=23, minutes=59, microseconds=1))),
    datetime(2024, 1, 1, 1, 30, fold=1), date(2024, 2, 29), date(1, 1, 1), dtime(), dtime(23, 59, 59, 999999, fold=1),
    dtime(12, tzinfo=timezone(timedelta(minutes=30))), timedelta(), timedelta(days=-999999999),
    timedelta(days=999999999, seconds=86399, microseconds=999999), timedelta(microseconds=-1),
    UTC, timezone(timedelta(0), "UTC"), timezone(timedelta(hours=2)),
    Decimal("1.10"), Decimal("-0"), Decimal("-0E-7"), Decimal("NaN"), Decimal("-NaN12"), Decimal("sNaN"),
    Decimal("Infinity"), Decimal("-Infinity"), Decimal("1E+999999"), Decimal("123456789" * 50 + "E-1000"),
    uuid.UUID(int=0), uuid.UUID(int=2**128 - 1), uuid.uuid4(),
    Point(1, 2.5, "p"), Key("k", (1, 2)), {Key("a"): [Point(0)]}, {Key("b"), Key("c")},
    Tree(1, [Tree(2), Tree((3, Point(4)))]), Pair(1, Pair("x")), [Pair(b"", None)],
]  # fmt: skip


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_values_come_back_equal_and_of_the_same_type(value: Any) -> None:
    check(value)
    check([value, (value,), {"k": value}])


def test_everything_nested_in_one_value() -> None:
    check(dict(enumerate(VALUES)))
    check(tuple(VALUES))


@needs_tzdata
def test_zoneinfo_comes_back_by_key_with_fold() -> None:
    for value in (
        datetime(2021, 11, 7, 1, 30, fold=1, tzinfo=NEW_YORK),
        datetime(2021, 11, 7, 1, 30, fold=0, tzinfo=NEW_YORK),
        dtime(3, tzinfo=PARIS),
        PARIS,
    ):
        back = round_trip(value)
        assert same(back, value)
    back = round_trip(datetime(2021, 11, 7, 1, 30, fold=1, tzinfo=NEW_YORK))
    assert back.tzinfo is NEW_YORK and back.fold == 1 and back.utcoffset() == timedelta(hours=-5)
    assert round_trip(ZoneInfo.no_cache("Europe/Paris")).key == "Europe/Paris"


def test_type_exactness() -> None:
    assert type(round_trip(bytearray(b"x"))) is bytearray
    assert type(round_trip(frozenset())) is frozenset
    assert type(round_trip(set())) is set
    assert math.copysign(1.0, round_trip(-0.0)) == -1.0
    payload = struct.unpack("<d", struct.pack("<Q", 0xFFF8_0000_DEAD_BEEF))[0]  # a negative NaN with payload bits
    assert math.isnan(payload) and bits(round_trip(payload)) == bits(payload)
    signalling = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000001))[0]
    assert bits(round_trip(signalling)) == bits(signalling)
    assert round_trip(timezone(timedelta(hours=1), "CET")).tzname(None) == "CET"
    assert round_trip(timezone(timedelta(hours=1))).tzname(None) == "UTC+01:00"
    assert round_trip(timezone(timedelta(0))) is UTC
    assert str(round_trip(Decimal("sNaN42"))) == "sNaN42"
    assert round_trip(True) is True and round_trip(None) is None


def test_subclasses_travel_as_their_builtin_base() -> None:
    for value, expected in [
        (collections.namedtuple("P", "a b")(1, 2), (1, 2)),
        (collections.OrderedDict(a=1), {"a": 1}),
        (collections.defaultdict(list, a=[1]), {"a": [1]}),
        (Color.RED, 1),
        (Mode.FAST, "fast"),
        (type("L", (list,), {})([1]), [1]),
        (type("B", (bytes,), {})(b"b"), b"b"),
        (type("F", (float,), {})(-0.0), -0.0),
        (type("S", (frozenset,), {})({1}), frozenset({1})),
    ]:
        assert same(round_trip(value), expected), value


@pytest.mark.parametrize("size", [0, 1, 127, 128, 129, 16383, 16384, 65535, 65536, 3 * MiB + 5])
def test_binary_sizes_round_trip(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    check(data)
    check(bytearray(data))
    check(memoryview(data))
    check(data.decode("latin-1"))
    check([data, bytearray(data), data])


def test_big_binary_is_not_copied_by_frame_parts() -> None:
    data, buffer = bytes(5 * MiB), bytearray(b"y" * MiB)
    parts = frame_parts([data, 1, buffer])
    views = [p for p in parts if type(p) is memoryview]
    assert [v.obj for v in views] == [data, buffer]
    joined = encode_frame([data, 1, buffer])
    assert frame_size(parts) == len(joined) == len(b"".join(parts))
    assert len(joined) < len(data) + len(buffer) + 32  # compact: raw data, a few bytes of framing
    assert same(decode_frame(joined), [data, 1, buffer])
    assert len(frame_parts({"small": b"x" * 100})) == 1


def test_parts_outlive_the_callers_view() -> None:
    view = memoryview(b"z" * MiB)
    parts = frame_parts(view)
    view.release()
    assert decode_frame(b"".join(parts)).tobytes() == b"z" * MiB


def test_decode_accepts_any_contiguous_bytes() -> None:
    data = encode_frame({"a": [1, b"b"]})
    for form in (data, bytearray(data), memoryview(data), memoryview(bytearray(data)), memoryview(data).cast("c")):
        assert decode_frame(form) == {"a": [1, b"b"]}


@pytest.mark.parametrize("fmt", list("bBc?hHiIlLqQnNfdP"))
def test_memoryview_formats_and_shapes(fmt: str) -> None:
    size = struct.calcsize(fmt)
    raw = bytes(range(1, 1 + 24 * size)) if fmt != "?" else bytes([0, 1] * 12)
    flat = memoryview(raw).cast(fmt)
    for view in (flat, flat.cast("B").cast(fmt, [4, 6]), flat.cast("B").cast(fmt, [2, 3, 4]), flat[:0]):
        back = round_trip(view)
        assert (back.format, back.shape, back.tobytes()) == (view.format, view.shape, view.tobytes())
        assert back.readonly
    scalar = memoryview(raw[:size]).cast(fmt, [])
    back = round_trip(scalar)
    assert (back.format, back.shape, back.tobytes()) == (fmt, (), raw[:size])


def test_encode_limit() -> None:
    assert encode_frame(b"x" * 90, limit=100)
    with pytest.raises(ValueEncodingError, match=r"the result is 10\d bytes encoded; the limit is 100"):
        encode_frame(b"x" * 100, what="the result", limit=100)


# ---- registered classes ----------------------------------------------------------------------------


def test_registration_rules() -> None:
    assert register_value_class(Point) is Point  # again, same name: fine

    @dataclasses.dataclass
    class Other:
        x: int

    with pytest.raises(ValueError, match="already registered"):
        register_value_class(Other, name=f"{Point.__module__}.{Point.__qualname__}")
    with pytest.raises(ValueError, match="another name"):
        register_value_class(Point, name="tests.point-again")

    @dataclasses.dataclass
    class Computed:
        x: int
        total: int = dataclasses.field(init=False, default=0)

    with pytest.raises(ValueError, match="init=False"):
        register_value_class(Computed)

    @dataclasses.dataclass
    class WithInitVar:
        x: int
        scale: dataclasses.InitVar[int]

    with pytest.raises(ValueError, match="cannot be registered"):
        register_value_class(WithInitVar)
    for wrong in (dict, int, type("Plain", (), {})):
        with pytest.raises(TypeError, match="only dataclasses and namedtuple"):
            register_value_class(wrong)
    with pytest.raises(TypeError):
        register_value_class(Point(1))  # type: ignore[arg-type]


def test_registered_namedtuple_keeps_its_class_and_the_subclass_of_a_registered_dataclass_is_refused() -> None:
    back = round_trip(Pair(1, [Pair(2)]))
    assert type(back) is Pair and type(back.right[0]) is Pair

    @dataclasses.dataclass
    class SubPoint(Point):
        pass

    with pytest.raises(ValueEncodingError, match="register_value_class"):
        encode_frame(SubPoint(1))


def _registered_frame(name: str, fields: Any) -> bytes:
    body = encode_frame(fields)[1:]
    raw = name.encode()
    return bytes([VERSION]) + b"C" + bytes([len(raw)]) + raw + body


def test_registered_decoding_refuses_what_does_not_fit() -> None:
    point = f"{Point.__module__}.{Point.__qualname__}"
    assert decode_frame(_registered_frame(point, {"x": 1})) == Point(1)
    with pytest.raises(ValueError, match=r"'no\.such\.Class'.*not registered on this side"):
        decode_frame(_registered_frame("no.such.Class", {"x": 1}))
    for fields in ({"x": 1, "nope": 2}, {}, {1: 2}, (1, 2), [1]):
        with pytest.raises(ValueError) as info:
            decode_frame(_registered_frame(point, fields))
        assert type(info.value) is ValueError
    with pytest.raises(ValueError):
        decode_frame(_registered_frame(f"{Pair.__module__}.{Pair.__qualname__}", (1, 2, 3)))
    with pytest.raises(ValueError):  # not hashable: a plain dataclass as a set member
        decode_frame(bytes([VERSION]) + b"e\x01" + _registered_frame(point, {"x": 1})[1:])


# ---- refusals ------------------------------------------------------------------------------------


class Custom(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=1)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def tzname(self, dt: datetime | None) -> str:
        return "custom"


def _file_zone() -> ZoneInfo:
    tzif = b"TZif2" + bytes(15) + struct.pack(">6l", 0, 0, 0, 0, 1, 4) + struct.pack(">lBB", 0, 0, 0) + b"UTC\0"
    return ZoneInfo.from_file(io.BytesIO(tzif + tzif + b"\nUTC0\n"))


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (object(), "builtins.object"),
        (len, "builtin_function_or_method"),
        (lambda: 1, "builtins.function"),
        ([1, {"k": object()}], "builtins.object"),
        (Unregistered(1), "Unregistered is a dataclass not registered"),
        (Custom(), "Custom is a tzinfo frames do not carry"),
        (datetime(2024, 1, 1, tzinfo=Custom()), "Custom is a tzinfo"),
        (dtime(1, tzinfo=Custom()), "Custom is a tzinfo"),
        (_file_zone(), "ZoneInfo without a key"),
        (datetime(2024, 1, 1, tzinfo=_file_zone()), "ZoneInfo without a key"),
        (memoryview(b"abcdef")[::2], "not C-contiguous"),
        (memoryview(struct.pack("<2d", 1, 2)).cast("B").cast("d")[::-1], "not C-contiguous"),
        (type("Sub", (datetime,), {})(2024, 1, 1), "Sub is not a type pyrodist carries"),
        (Decimal, "builtins.type"),
        (enum.Enum("E", "A").A, "is not a type pyrodist carries"),
    ],
    ids=lambda v: type(v).__name__,
)
def test_unsupported_values_are_refused_naming_the_type(value: Any, named: str) -> None:
    with pytest.raises(ValueEncodingError, match=r"^the result cannot be sent: ") as info:
        encode_frame(value, what="the result")
    assert named in str(info.value)
    with pytest.raises(ValueEncodingError):
        frame_parts(value)


def test_unregistered_dataclass_message_says_what_to_do() -> None:
    with pytest.raises(ValueEncodingError) as info:
        encode_frame([Unregistered(1)])
    assert "pyrodist.register_value_class(Unregistered) on both the client and the worker" in str(info.value)


def test_memoryview_of_a_non_native_format_is_refused() -> None:
    import ctypes

    with pytest.raises(ValueEncodingError, match="format '<d'"):
        encode_frame(memoryview((ctypes.c_double * 2)()))
    with pytest.raises(ValueEncodingError, match=r"send bytes\(view\) instead"):
        encode_frame(memoryview(b"ab")[::-1])


def nested(depth: int, leaf: Any = None) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def test_depth_is_bounded_both_ways() -> None:
    assert round_trip(nested(MAX_DEPTH)) == nested(MAX_DEPTH)
    with pytest.raises(ValueEncodingError, match=f"nested more than {MAX_DEPTH} deep"):
        encode_frame(nested(MAX_DEPTH + 1))
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(ValueEncodingError, match="cannot be sent"):
        encode_frame(cyclic)
    data = bytes([VERSION]) + b"l\x01" * 10 + b"N"
    assert decode_frame(data, max_depth=10) == nested(10)
    with pytest.raises(ValueError, match="more than 9 deep"):
        decode_frame(data, max_depth=9)
    with pytest.raises(ValueError, match="deep"):
        decode_frame(bytes([VERSION]) + b"l\x01" * 100_000 + b"N")
    with pytest.raises(ValueError) as info:  # past Python's own recursion limit: still only a ValueError
        decode_frame(bytes([VERSION]) + b"l\x01" * 100_000 + b"N", max_depth=10**9)
    assert type(info.value) is ValueError
    with pytest.raises(ValueError, match="deep"):  # datetimes whose tzinfo is a datetime...
        decode_frame(bytes([VERSION]) + (b"D" + bytes(12)) * 1000 + b"N")


# ---- hostile input -------------------------------------------------------------------------------

SAMPLES = [
    [1, -(2**70), 1.5, 2j, "té\udc80xt", b"\x00" * 200, bytearray(b"ab")],
    {"a": {1: (None, True, False)}, frozenset({1}): {b"k"}},
    datetime(2024, 5, 6, 7, 8, 9, 10, tzinfo=timezone(timedelta(hours=3), "X")),
    (date(2020, 1, 1), dtime(1, fold=1), timedelta(days=-3), Decimal("-1.5E-9"), uuid.UUID(int=7)),
    [Point(1, 2.0, "z"), Pair(Key("k"), Tree(0))],
    memoryview(struct.pack("<6i", *range(6))).cast("B").cast("i", [2, 3]),
]


def raises_value_error_only(data: bytes | bytearray | memoryview, **kwargs: Any) -> None:
    with pytest.raises(ValueError) as info:
        decode_frame(data, **kwargs)
    assert type(info.value) is ValueError, info.value


@pytest.mark.parametrize("value", SAMPLES, ids=lambda v: type(v).__name__)
def test_every_truncation_and_any_trailing_byte_is_refused(value: Any) -> None:
    data = encode_frame(value)
    for end in range(len(data)):
        raises_value_error_only(data[:end])
    raises_value_error_only(data + b"N")
    raises_value_error_only(data + b"\x00")


def test_malformed_frames_are_refused() -> None:
    v = bytes([VERSION])
    for data in [
        b"", bytes([VERSION + 1]) + b"N", b"N", v + b"\xff", v + b"?", v + b"x",  # version, unknown tags
        v + b"s\x02\xff\xfe", v + b"s\x01\x80", v + b"M\x03abc", v + b"M\x02\xc3\xa9", v + b"M\x00",  # text
        v + b"i" + b"\xff" * 11 + b"\x01", v + b"b\x80", v + b"f\x00",  # lengths
        v + b"d\x01l\x00N", v + b"e\x01l\x00", v + b"z\x01d\x00",  # unhashable keys and members
        v + b"D" + struct.pack("<HBBBBBIB", 2024, 13, 1, 0, 0, 0, 0, 0) + b"N",  # month 13
        v + b"D" + struct.pack("<HBBBBBIB", 2024, 1, 1, 0, 0, 0, 0, 2) + b"N",  # fold 2
        v + b"D" + struct.pack("<HBBBBBIB", 2024, 1, 1, 0, 0, 0, 0, 0) + b"i\x01\x01",  # an int as tzinfo
        v + b"H" + struct.pack("<BBBIB", 24, 0, 0, 0, 0) + b"N", v + b"E" + struct.pack("<HBB", 0, 1, 1),
        v + b"R" + struct.pack("<iII", 2**31 - 1, 2**32 - 1, 2**32 - 1),
        v + b"Z" + struct.pack("<iII", 1, 0, 0) + b"N", v + b"Z" + struct.pack("<iII", 0, 60, 0) + b"b\x00",
        v + b"K\x0e../etc/passwd", v + b"K\x0b/etc/passwd", v + b"K\x00", v + b"K\x07America", v + b"K\x03a\x00b",
        v + b"m?\x01\x02\x00\x02\x05", v + b"mx\x01\x01\x01\x01", v + b"md\x01\x02\x08" + bytes(8),
        v + b"md\x02\x00\x02\x00", v + b"mB\x41" + b"\x01" * 0x41 + b"\x01\x00",
        v + b"U" + bytes(15), v + b"C\x03a.b\x00", v + b"Cx",
    ]:  # fmt: skip
        raises_value_error_only(data)


@pytest.mark.parametrize("tag", list(b"lteszdbasKMCm"))
def test_huge_counts_and_lengths_fail_fast_without_allocating(tag: int) -> None:
    huge = 2**60
    varint = bytearray()
    while huge >= 0x80:
        varint.append((huge & 0x7F) | 0x80)
        huge >>= 7
    varint.append(huge)
    head = b"d" if tag == ord("m") else b""  # a memoryview's format comes before its counts
    tracemalloc.start()
    try:
        raises_value_error_only(bytes([VERSION, tag]) + head + bytes(varint) + b"N" * 64)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def test_hash_flooding_is_refused_before_the_dict_is_built() -> None:
    clashing = [i * (2**61 - 1) for i in range(1, 5001)]  # ints of one hash: a dict of them builds in n**2 time
    for value in (dict.fromkeys(clashing), frozenset(clashing), set(clashing), [dict.fromkeys(clashing[:500], 0)] * 3):
        with pytest.raises(ValueError, match="equal hashes"):
            decode_frame(encode_frame(value))
    few = dict.fromkeys([*clashing[:100], -1, -2, 0.5, *range(1000)], 1)  # some clashes, as real data may have
    check(few)


# ---- properties ----------------------------------------------------------------------------------

FIXED_ZONES = st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
) | st.builds(
    timezone,
    st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23)),
    st.text(st.characters(exclude_categories=()), max_size=5),
)
ZONES = st.none() | FIXED_ZONES | (st.sampled_from([PARIS, NEW_YORK]) if PARIS and NEW_YORK else st.none())
HASHABLE = (
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**300), max_value=2**300)
    | st.floats(allow_nan=False) | st.text(st.characters(exclude_categories=()), max_size=20) | st.binary(max_size=20)
    | st.dates() | st.timedeltas() | st.uuids() | st.decimals(allow_nan=False)
    | st.datetimes(timezones=ZONES) | st.times(timezones=FIXED_ZONES | st.none())
    | st.builds(Key, st.text(max_size=5), st.lists(st.integers(), max_size=3).map(tuple))
)  # fmt: skip
LEAVES = (
    HASHABLE | st.floats() | st.complex_numbers(allow_nan=True, allow_infinity=True) | st.decimals()
    | st.binary(max_size=70_000).map(bytearray) | st.binary(max_size=64).map(memoryview)
)  # fmt: skip


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keys = HASHABLE | st.frozensets(HASHABLE, max_size=3) | st.tuples(HASHABLE, HASHABLE)
    return (
        st.lists(children, max_size=5) | st.lists(children, max_size=5).map(tuple)
        | st.dictionaries(keys, children, max_size=5) | st.sets(keys, max_size=5) | st.frozensets(keys, max_size=5)
        | st.builds(Point, st.integers(), st.floats(), st.text(max_size=5))
        | st.builds(Pair, children, children)
        | st.builds(Tree, children, st.lists(st.builds(Tree, children), max_size=2))
    )  # fmt: skip


VALUES_STRATEGY = st.recursive(LEAVES, _containers, max_leaves=20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(VALUES_STRATEGY)
def test_property_round_trip(value: Any) -> None:
    check(value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_property_random_bytes_raise_value_error_or_decode(data: bytes) -> None:
    for frame in (data, bytes([VERSION]) + data):
        try:
            decode_frame(frame)
        except ValueError as exc:
            assert type(exc) is ValueError


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(VALUES_STRATEGY, st.data())
def test_property_damaged_frames_raise_value_error_or_decode(value: Any, draw: st.DataObject) -> None:
    frame = bytearray(encode_frame(value))
    where = draw.draw(st.integers(min_value=0, max_value=len(frame) - 1))
    frame[where] = draw.draw(st.integers(min_value=0, max_value=255))
    cut = draw.draw(st.integers(min_value=0, max_value=len(frame)))
    for damaged in (frame, frame[:cut], frame[:where] + frame[where + 1 :]):
        try:
            decode_frame(bytes(damaged))
        except ValueError as exc:
            assert type(exc) is ValueError


# ---- NumPy arrays (the numpy extra) ---------------------------------------------------------------


def test_nothing_imports_numpy_unless_an_array_is_sent() -> None:
    code = (
        "import sys, datetime, decimal; import pyrodist; from pyrodist.values import encode_value, decode_value; "
        "v = [1, b'x', (2.5, {3}), datetime.date.today(), decimal.Decimal('1.5')]; "
        "assert decode_value(encode_value(v)) == v; assert 'numpy' not in sys.modules, 'numpy was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


NUMPY_DTYPES = ["<f8", "<f4", "<i8", "<i4", "|u1", "|b1", "<c16", "<U5", "|S3", "<M8[s]"]


@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
def test_numpy_arrays_come_back_exact_and_writable(dtype: str) -> None:
    numpy = pytest.importorskip("numpy")
    for shape in [(), (0,), (7,), (3, 4), (2, 0, 3)]:
        array = numpy.arange(math.prod(shape) or 0).reshape(shape).astype(dtype)
        back = decode_frame(encode_frame(array))
        assert type(back) is numpy.ndarray and back.dtype == array.dtype and back.shape == array.shape
        assert numpy.array_equal(back, array) and back.flags.writeable


def test_a_numpy_array_travels_as_its_raw_bytes_and_views_come_back_as_copies() -> None:
    numpy = pytest.importorskip("numpy")
    big = numpy.random.default_rng(1).random(1 << 17)  # 1 MiB of float64
    parts = frame_parts(big)
    assert frame_size(parts) < big.nbytes + 64  # dtype, shape and the bytes: nothing else
    assert numpy.array_equal(decode_frame(b"".join(parts)), big)
    for view in (big[::3], big.reshape(512, 256).T, big[10:20]):  # strided, Fortran-ordered, sliced
        assert numpy.array_equal(decode_frame(encode_frame(view)), view)


def test_numpy_scalars_travel_as_the_python_values_they_hold() -> None:
    numpy = pytest.importorskip("numpy")
    assert decode_frame(encode_frame([numpy.int64(3), numpy.bool_(True), numpy.float32(0.5)])) == [3, True, 0.5]
    assert type(decode_frame(encode_frame(numpy.int64(3)))) is int


@pytest.mark.parametrize("dtype", ["O", [("a", "<i4"), ("b", "<f8")], "V0"])
def test_numpy_arrays_frames_do_not_carry_are_refused(dtype: Any) -> None:
    numpy = pytest.importorskip("numpy")
    with pytest.raises(ValueEncodingError, match="dtype"):
        encode_frame(numpy.zeros(3, dtype=dtype))


def test_a_numpy_array_whose_parts_disagree_is_refused() -> None:
    numpy = pytest.importorskip("numpy")
    frame = bytearray(encode_frame(numpy.zeros((2, 3), dtype="<f8")))
    dims = frame.index(b"<f8") + 3  # ndim, then the dimensions
    frame[dims + 2] = 4  # shape (2, 4): more than the 48 bytes it holds
    raises_value_error_only(bytes(frame))
    for code in (b"|O8", b"<V8"):
        raises_value_error_only(bytes(frame).replace(b"<f8", code))


def test_a_numpy_array_with_absurd_dimensions_or_dtype_is_refused_at_once() -> None:
    numpy = pytest.importorskip("numpy")
    head = bytes([VERSION]) + b"A" + bytes([3]) + b"<f8"
    many = head + bytes([0x80, 0x01]) + bytes([0xFF] * 9 + [0x01]) * 128 + bytes([8]) + bytes(8)  # 128 dimensions
    with pytest.raises(ValueError, match="dimensions"):
        decode_frame(many)
    huge = head + bytes([2]) + bytes([0xFF] * 9 + [0x01]) * 2 + bytes([8]) + bytes(8)  # 2 dims of 2**70 each
    with pytest.raises(ValueError, match="does not hold 8 bytes"):
        decode_frame(huge)
    for code in (b"(,)i4", b"i4,f8", b"<f8" * 3, b"O"):
        frame = bytes([VERSION]) + b"A" + bytes([len(code)]) + code + bytes([1, 1, 8]) + bytes(8)
        with pytest.raises(ValueError, match="dtype"):
            decode_frame(frame)
    assert numpy.array_equal(decode_frame(encode_frame(numpy.zeros((1,) * 64))), numpy.zeros((1,) * 64))
