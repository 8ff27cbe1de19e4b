"""The shared rules (pyrodist.protocol, pyrodist.values): values, function references, options, task ids, errors."""

from __future__ import annotations

import collections
import datetime
import enum
import math
import operator
import traceback
from typing import Any

import pytest
import serpent
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrodist.errors import FunctionRefError, PyrodistError, ValueEncodingError
from pyrodist.protocol import (
    FINISHED_STATES,
    TaskState,
    check_options,
    check_task_id,
    error_info,
    function_ref,
    split_ref,
)
from pyrodist.values import JSON_MARK, TEXT_AS_FRAME_ABOVE, decode_call, decode_value, encode_call, encode_value


def roundtrip(value: Any) -> Any:
    return decode_value(encode_value(value))


def assert_same(got: Any, expected: Any, path: str = "value") -> None:
    """Equal and of exactly the same type, all the way down (nan counts as equal to nan)."""
    assert type(got) is type(expected), f"{path}: {type(got).__name__} instead of {type(expected).__name__}"
    if isinstance(expected, float):
        if math.isnan(expected):
            assert math.isnan(got), path
        else:
            assert got == expected, path
            assert math.copysign(1.0, got) == math.copysign(1.0, expected), f"{path}: sign of zero lost"
    elif isinstance(expected, complex):
        assert_same(got.real, expected.real, f"{path}.real")
        assert_same(got.imag, expected.imag, f"{path}.imag")
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected), path
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert_same(g, e, f"{path}[{i}]")
    elif isinstance(expected, dict):
        assert got.keys() == expected.keys(), path
        got_keys = {k: k for k in got}
        for key, item in expected.items():
            assert_same(got_keys[key], key, f"{path} key {key!r}")
            assert_same(got[key], item, f"{path}[{key!r}]")
    elif isinstance(expected, (set, frozenset)):
        assert got == expected, path
        got_items = {i: i for i in got}
        for item in expected:
            assert_same(got_items[item], item, f"{path} item {item!r}")
    else:
        assert got == expected, path


# ---- values: faithful round trips ------------------------------------------------------------

SCALARS = [
    None,
    True,
    False,
    0,
    -7,
    2**63,
    -(2**63) - 1,
    10**400,
    -(10**400),
    0.0,
    -0.0,
    1.5,
    1e308,
    5e-324,
    float("inf"),
    float("-inf"),
    float("nan"),
    1 + 2j,
    complex(-1.5, -0.25),
    complex(float("inf"), 1),
    "",
    "plain",
    "héllo ☃ 𝄞 中文",
    "quotes ' \" and \\ backslash\n\t\x00",
    "contains __class__ and __pyrodist_set__ as text",
    b"",
    b"\x00\xff\n'\"",
]


@pytest.mark.parametrize("value", SCALARS, ids=repr)
def test_scalar_comes_back_equal_and_same_type(value: Any) -> None:
    assert_same(roundtrip(value), value)


def stable_repr(value: Any) -> str:
    """repr with set members sorted: test ids that are the same in every process (pytest-xdist)."""
    if isinstance(value, set | frozenset):
        members = ", ".join(sorted(stable_repr(v) for v in value))
        return f"{type(value).__name__}({{{members}}})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{stable_repr(k)}: {stable_repr(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        inner = ", ".join(stable_repr(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    return repr(value)


CONTAINERS = [
    [],
    (),
    {},
    [1, "a", b"b", None, 2.5],
    (1,),
    ((),),
    [b"outer", [b"inner", (b"deeper",)]],
    {"a": 1, "b": [1, 2], "c": (3, 4)},
    {(1, 2): "tuple key", (b"x", (1,)): "nested tuple key"},
    {b"k": b"v", 1: "int key", 1.5: "float key", -0.0: "negative zero key"},
    {True: "bool key", "none": None},
    {"nan": float("nan"), "inf": [float("inf")], "neg": (float("-inf"),)},
    set(),
    frozenset(),
    {1, 2, 3},
    {"a", b"b", (1, 2)},
    frozenset({1, "two"}),
    frozenset({frozenset({1}), frozenset()}),
    [set(), [frozenset()], (set(),), {"s": set()}],
    {"items": [1], "__class__": "not special without 'value'"},
]


@pytest.mark.parametrize("value", CONTAINERS, ids=stable_repr)
def test_container_comes_back_equal_and_same_type_recursively(value: Any) -> None:
    assert_same(roundtrip(value), value)


def test_deeply_nested_value_comes_back_with_every_level_typed() -> None:
    value: Any = {"leaf": (1, b"\x01", frozenset({2}), {3}, set(), 4.5, None, 1j)}
    for depth in range(30):
        value = [value, (depth, {f"level{depth}": value if depth % 5 == 0 else depth})]
    assert_same(roundtrip(value), value)


def test_encoded_value_is_text_without_the_serpent_header() -> None:
    text = encode_value([1, "a"])
    assert isinstance(text, str)
    assert not text.startswith("#")


# ---- values: subclasses arrive as their base type ---------------------------------------------


class Colour(enum.IntEnum):
    RED = 1


class Mode(str, enum.Enum):  # noqa: UP042 - the classic str mixin, on purpose
    FAST = "fast"


class Level(enum.StrEnum):
    HIGH = "high"


Point = collections.namedtuple("Point", "x y")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Point(1, 2), (1, 2)),
        ([Point(1, Point(2, 3))], [(1, (2, 3))]),
        (collections.OrderedDict(a=1, b=2), {"a": 1, "b": 2}),
        (collections.defaultdict(list, a=[1]), {"a": [1]}),
        (collections.Counter("aab"), {"a": 2, "b": 1}),
        (Colour.RED, 1),
        (Mode.FAST, "fast"),
        (Level.HIGH, "high"),
        ({Colour.RED: Mode.FAST}, {1: "fast"}),
        ({"outer": collections.OrderedDict(inner=Point(Colour.RED, Level.HIGH))}, {"outer": {"inner": (1, "high")}}),
    ],
    ids=repr,
)
def test_subclass_of_a_builtin_arrives_as_the_builtin(value: Any, expected: Any) -> None:
    assert_same(roundtrip(value), expected)


# ---- values: refusals --------------------------------------------------------------------------


class Plain(enum.Enum):
    ONE = 1


class Custom:
    pass


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (object(), "builtins.object"),
        (Plain.ONE, "Plain"),
        (Custom(), "Custom"),
        (range(3), "range"),
        ([1, {"deep": (Custom(),)}], "Custom"),
        ({"k": Plain.ONE}, "Plain"),
    ],
    ids=lambda item: item if isinstance(item, str) else type(item).__name__,
)
def test_value_that_would_not_come_back_the_same_is_refused_naming_its_type(value: Any, type_name: str) -> None:
    with pytest.raises(ValueEncodingError, match=type_name):
        encode_value(value)


def test_value_encoding_error_is_a_value_error_and_a_pyrodist_error() -> None:
    with pytest.raises(ValueError) as caught:
        encode_value(object())
    assert isinstance(caught.value, PyrodistError)


def test_refusal_names_what_was_being_sent() -> None:
    with pytest.raises(ValueEncodingError, match="the result of f"):
        encode_value(Custom(), "the result of f")


@pytest.mark.parametrize(
    "value",
    [
        {"__pyrodist__": 1},
        [{"x": {"__pyrodist__": "set", "items": [1]}}],
        {"__class__": "complex", "real": 1, "imag": 2},
    ],
    ids=repr,
)
def test_dicts_shaped_like_internal_markers_come_back_as_dicts(value: Any) -> None:
    assert_same(roundtrip(value), value)


def test_dict_keys_serpent_could_not_carry_come_back_as_they_were() -> None:
    value = {None: 1, (1, "a"): b"x", frozenset({2}): 3.5}
    assert_same(roundtrip(value), value)


@pytest.mark.parametrize("value", [complex(float("nan"), 1), complex(1, float("nan"))], ids=repr)
def test_complex_with_nan_part_comes_back_as_complex(value: complex) -> None:
    assert type(roundtrip(value)) is complex


def test_dict_shaped_like_the_float_marker_comes_back_as_a_dict() -> None:
    value = {"__class__": "float", "value": "1.5"}
    assert_same(roundtrip(value), value)


@pytest.mark.parametrize("value", [{frozenset({1})}, {frozenset(): "empty"}, {(frozenset({2}),)}], ids=stable_repr)
def test_frozenset_inside_a_set_or_as_a_dict_key_round_trips(value: Any) -> None:
    assert_same(roundtrip(value), value)


# ---- calls -------------------------------------------------------------------------------------


def test_call_round_trips_args_as_tuple_and_kwargs_as_dict() -> None:
    args, kwargs = decode_call(encode_call([1, set(), b"x"], {"a": frozenset(), "b": (2,)}))
    assert_same(args, (1, set(), b"x"))
    assert_same(kwargs, {"a": frozenset(), "b": (2,)})


def test_call_without_arguments_round_trips() -> None:
    assert decode_call(encode_call((), {})) == ((), {})


def test_call_with_non_string_keyword_name_is_refused() -> None:
    with pytest.raises(ValueEncodingError, match="keyword argument names must be strings"):
        encode_call((), {1: "x"})  # type: ignore[dict-item]


def test_call_with_unsendable_argument_is_refused_naming_the_arguments() -> None:
    with pytest.raises(ValueEncodingError, match="the task's arguments"):
        encode_call((object(),), {})


# ---- function references -----------------------------------------------------------------------


def module_level_function() -> None:
    """A function any worker could import as test_protocol:module_level_function."""


def test_module_level_function_gives_module_and_name() -> None:
    assert function_ref(module_level_function) == f"{__name__}:module_level_function"


def test_builtin_from_private_module_gives_its_public_module() -> None:
    assert operator.add.__module__ == "_operator"
    assert function_ref(operator.add) == "operator:add"


def test_builtin_module_function_gives_module_and_name() -> None:
    assert function_ref(math.sqrt) == "math:sqrt"


def test_dotted_string_is_normalised_to_colon_form() -> None:
    assert function_ref("a.b.c") == "a.b:c"


def test_colon_string_is_kept() -> None:
    assert function_ref("os.path:join") == "os.path:join"


def test_lambda_is_refused() -> None:
    with pytest.raises(FunctionRefError, match="lambda"):
        function_ref(lambda: None)


def test_nested_function_is_refused() -> None:
    def inner() -> None:
        pass

    with pytest.raises(FunctionRefError, match="nested function"):
        function_ref(inner)


class Greeter:
    def greet(self) -> str:
        return "hi"


def test_function_defined_in_a_class_is_refused() -> None:
    with pytest.raises(FunctionRefError, match="method"):
        function_ref(Greeter.greet)


@pytest.mark.parametrize(
    "bound",
    [[].append, "abc".upper, Greeter().greet, dict.fromkeys],
    ids=["list.append", "str.upper", "Greeter().greet", "dict.fromkeys"],
)
def test_bound_method_is_refused(bound: Any) -> None:
    with pytest.raises(FunctionRefError, match="bound to an object"):
        function_ref(bound)


def test_function_from_main_is_refused_with_advice() -> None:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec("def job():\n    return 1\n", namespace)
    job = namespace["job"]
    assert job.__module__ == "__main__"
    with pytest.raises(FunctionRefError, match="__main__") as caught:
        function_ref(job)
    assert "-I" in str(caught.value)


def test_function_whose_module_was_set_to_main_is_refused() -> None:
    def job() -> None:
        pass

    job.__module__ = "__main__"
    job.__qualname__ = "job"
    with pytest.raises(FunctionRefError, match="__main__"):
        function_ref(job)


def test_callable_without_name_is_refused() -> None:
    import functools

    with pytest.raises(FunctionRefError, match="no module and name"):
        function_ref(functools.partial(len))


def test_non_callable_is_refused_naming_its_type() -> None:
    with pytest.raises(FunctionRefError, match="int"):
        function_ref(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("ref", ["x", "os:system.x", "a b:c", "os:", ":x", "1a:b", "a..b:c", "a:b:c", "a.b.", ""])
def test_bad_reference_string_is_refused(ref: str) -> None:
    with pytest.raises(FunctionRefError, match="bad function reference"):
        function_ref(ref)


def test_function_ref_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        function_ref("x")


@pytest.mark.parametrize(
    ("ref", "parts"),
    [("a.b.c", ("a.b", "c")), ("a.b:c", ("a.b", "c")), ("mod:f", ("mod", "f")), ("mod.f", ("mod", "f"))],
)
def test_split_ref_gives_module_and_name(ref: str, parts: tuple[str, str]) -> None:
    assert split_ref(ref) == parts


def test_split_ref_refuses_non_string() -> None:
    with pytest.raises(FunctionRefError, match="must be a string"):
        split_ref(5)  # type: ignore[arg-type]


# ---- options -----------------------------------------------------------------------------------


def test_no_options_is_empty() -> None:
    assert check_options(None) == {}
    assert check_options({}) == {}


def test_valid_options_come_back_with_their_types() -> None:
    checked = check_options({"priority": 5, "timeout": 2, "max_attempts": 4})
    assert checked == {"priority": 5, "timeout": 2.0, "max_attempts": 4}
    assert type(checked["priority"]) is int
    assert type(checked["timeout"]) is float
    assert type(checked["max_attempts"]) is int


def test_whole_float_is_accepted_for_an_int_option() -> None:
    checked = check_options({"priority": 2.0})
    assert checked == {"priority": 2}
    assert type(checked["priority"]) is int


def test_none_option_value_is_left_out() -> None:
    assert check_options({"priority": None, "timeout": 1.5}) == {"timeout": 1.5}


@pytest.mark.parametrize("value", [-1_000_000, 0, 1_000_000])
def test_priority_within_range_is_accepted(value: int) -> None:
    assert check_options({"priority": value}) == {"priority": value}


@pytest.mark.parametrize("value", [-1_000_001, 1_000_001])
def test_priority_out_of_range_is_refused(value: int) -> None:
    with pytest.raises(ValueError, match="priority"):
        check_options({"priority": value})


def test_unknown_option_is_refused_naming_it_and_the_known_ones() -> None:
    with pytest.raises(ValueError, match="'bogus'") as caught:
        check_options({"bogus": 1})
    assert "max_attempts, priority, retries, retry_backoff, retry_backoff_max, retry_on, timeout" in str(caught.value)


def test_non_string_option_key_is_unknown() -> None:
    with pytest.raises(ValueError, match="unknown task option 1"):
        check_options({1: 2})


def test_options_that_are_not_a_dict_are_refused() -> None:
    with pytest.raises(TypeError, match="list"):
        check_options([("priority", 1)])


@pytest.mark.parametrize("value", ["1", [1], True, False])
def test_option_of_wrong_type_is_refused(value: Any) -> None:
    with pytest.raises(TypeError, match="'priority' must be a number"):
        check_options({"priority": value})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_option_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match="'timeout' must be a finite number"):
        check_options({"timeout": value})


@pytest.mark.parametrize("key", ["priority", "max_attempts"])
def test_fractional_value_for_int_option_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match=f"'{key}' must be a whole number"):
        check_options({key: 1.5})


@pytest.mark.parametrize("value", [0, -1, -0.5])
def test_timeout_must_be_positive(value: float) -> None:
    with pytest.raises(ValueError, match="'timeout' must be positive"):
        check_options({"timeout": value})


def test_small_positive_timeout_is_accepted() -> None:
    assert check_options({"timeout": 0.001}) == {"timeout": 0.001}


@pytest.mark.parametrize("value", [1, 100])
def test_max_attempts_within_range_is_accepted(value: int) -> None:
    assert check_options({"max_attempts": value}) == {"max_attempts": value}


@pytest.mark.parametrize("value", [0, -1, 101])
def test_max_attempts_out_of_range_is_refused(value: int) -> None:
    with pytest.raises(ValueError, match="'max_attempts' must be between 1 and 100"):
        check_options({"max_attempts": value})


@pytest.mark.parametrize("key", ["priority", "timeout"])
def test_huge_int_option_is_refused_naming_it(key: str) -> None:
    with pytest.raises((ValueError, TypeError), match=key):
        check_options({key: 10**400})


# ---- task ids ----------------------------------------------------------------------------------


@pytest.mark.parametrize("task_id", ["a", "A1", "0", "job-1.part_2", "a" * 64])
def test_valid_task_id_is_returned(task_id: str) -> None:
    assert check_task_id(task_id) == task_id


@pytest.mark.parametrize("task_id", ["", "a" * 65, "-a", ".a", "_a", "a b", "a/b", "é", "a:b", 5, None])
def test_invalid_task_id_is_refused(task_id: Any) -> None:
    with pytest.raises(ValueError, match="bad task id"):
        check_task_id(task_id)


@pytest.mark.parametrize("task_id", ["abc\n", "a" * 64 + "\n"])
def test_task_id_with_trailing_newline_is_refused(task_id: str) -> None:
    with pytest.raises(ValueError, match="bad task id"):
        check_task_id(task_id)


# ---- error records -----------------------------------------------------------------------------


def test_error_info_records_type_message_and_traceback_of_a_raised_exception() -> None:
    try:
        raise KeyError("missing")
    except KeyError as exc:
        info = error_info(exc)
    assert info["type"] == "KeyError"
    assert info["message"] == "'missing'"
    assert info["traceback"].startswith("Traceback (most recent call last):")
    assert "test_error_info_records_type_message_and_traceback_of_a_raised_exception" in info["traceback"]
    assert info["traceback"].rstrip().endswith("KeyError: 'missing'")


def test_error_info_uses_the_given_traceback_text() -> None:
    info = error_info(ValueError("boom"), tb="")
    assert info == {"type": "ValueError", "message": "boom", "traceback": "", "bases": "Exception BaseException",
                    "module": "builtins"}  # fmt: skip


def test_error_info_names_the_base_classes_for_retry_on() -> None:
    assert error_info(ConnectionRefusedError("no"), tb="")["bases"] == "ConnectionError OSError Exception BaseException"


def test_error_info_of_an_exception_never_raised_has_only_its_last_line() -> None:
    exc = RuntimeError("not raised")
    assert error_info(exc)["traceback"] == "".join(traceback.format_exception_only(RuntimeError, exc))


def test_error_info_values_are_all_strings() -> None:
    info = error_info(ValueError(1, 2))
    assert all(isinstance(v, str) for v in info.values())
    assert set(info) == {"type", "message", "traceback", "bases", "module"}


# ---- task states -------------------------------------------------------------------------------


def test_task_states_are_the_wire_strings() -> None:
    assert [s.value for s in TaskState] == ["pending", "running", "retrying", "done", "failed", "cancelled", "expired"]
    assert all(isinstance(s, str) for s in TaskState)
    assert TaskState.DONE == "done"
    assert TaskState("cancelled") is TaskState.CANCELLED


def test_finished_states_are_done_failed_cancelled_and_expired() -> None:
    assert frozenset({TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED, TaskState.EXPIRED}) == FINISHED_STATES


# ---- the JSON fast path ----------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)
ANY_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=3)
        | st.frozensets(st.integers(), max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(JSON_VALUES)
def test_values_written_as_json_mean_the_same_to_serpent(value: Any) -> None:
    """The fast path's text is a Python literal of the very value: serpent reads it the same as json does."""
    text = encode_value(value)
    assert text.startswith(JSON_MARK), text
    assert_same(decode_value(text), value)
    assert_same(serpent.loads(text.encode("utf-8")), value)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(ANY_VALUES)
def test_every_value_comes_back_the_same_whichever_path_wrote_it(value: Any) -> None:
    assert_same(roundtrip(value), value)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.lists(JSON_VALUES, max_size=3), st.dictionaries(st.from_regex(r"[a-z]{1,5}", fullmatch=True), JSON_VALUES))
def test_calls_written_as_json_decode_to_a_tuple_and_a_dict(args: list[Any], kwargs: dict[str, Any]) -> None:
    payload = encode_call(args, kwargs)
    assert payload.startswith(JSON_MARK)
    assert_same(decode_call(payload), (tuple(args), kwargs))


@pytest.mark.parametrize(
    "value",
    [
        True,
        None,
        float("nan"),
        -math.inf,
        (1, 2),
        b"x",
        {1: "a"},
        {"__class__": "float"},
        {"__pyrodist__": 1},
        "\ud800",
    ],
)
def test_values_json_would_change_are_not_sent_as_json(value: Any) -> None:
    payload = encode_value(value)
    assert isinstance(payload, bytes) or not payload.startswith(JSON_MARK), payload
    assert_same(roundtrip(value), value)


@pytest.mark.parametrize(
    "value",
    [
        datetime.datetime(2024, 1, 2, 3, 4, tzinfo=datetime.UTC),
        datetime.date(2024, 1, 2),
        bytearray(b"x"),
        b"\x00\xff" * 1000,
        (1, 2),
        {1, 2},
    ],
    ids=lambda v: type(v).__name__,
)
def test_values_beyond_json_travel_as_frames_and_come_back_exactly(value: Any) -> None:
    payload = encode_value(value)
    assert isinstance(payload, bytes)  # binary stays binary: no base64, no escapes
    if isinstance(value, bytes | bytearray):
        assert len(payload) < len(value) + 16
    assert_same(roundtrip(value), value)


def test_a_marked_text_that_is_not_json_is_left_to_serpent() -> None:
    assert decode_value(" (1, 2)") == (1, 2)  # serpent strips the space; json cannot read a tuple
    with pytest.raises(SyntaxError):  # what serpent says of junk
        decode_value(" not a literal")


@pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")  # Python reading "\\/"
@pytest.mark.parametrize(
    "text",
    [" true", " null", " NaN", " -Infinity", " [1,2]", ' {"a":1}', ' "a\\/b"', ' "\\ud83d\\ude00"', ' "\\u00e9"'],
)
def test_marked_text_not_written_by_the_encoder_is_read_by_serpent_rules(text: str) -> None:
    """json would accept these; a payload means what serpent reads, so they are refused or read as serpent does."""
    try:
        expected = serpent.loads(text.encode("utf-8"))
    except (ValueError, SyntaxError) as exc:
        with pytest.raises(type(exc)):
            decode_value(text)
    else:
        assert_same(decode_value(text), expected)


def test_an_int_too_long_for_text_is_a_value_encoding_error() -> None:
    for value in (10**5000, {"a": 10**5000}, [10**5000]):
        with pytest.raises(ValueEncodingError, match="cannot be sent"):
            encode_value(value)
    with pytest.raises(ValueEncodingError, match="cannot be sent"):
        encode_call((10**5000,), {})


def test_a_long_str_travels_as_a_frame_a_short_one_as_json() -> None:
    long_text = "é" * (TEXT_AS_FRAME_ABOVE + 1)
    assert isinstance(encode_value(long_text), bytes) and decode_value(encode_value(long_text)) == long_text
    assert isinstance(encode_call((long_text,), {}), bytes) and decode_call(encode_call((long_text,), {})) == (
        (long_text,),
        {},
    )
    assert encode_value("é" * TEXT_AS_FRAME_ABOVE).startswith(JSON_MARK)  # type: ignore[union-attr]
