"""Which functions a worker agrees to run (AllowList), and run_task turning every outcome into a record."""

from __future__ import annotations

import functools
import json
import math
import operator
import shutil
import types

import pytest

from pyrodist import values
from pyrodist.allowlist import AllowList
from pyrodist.child import run_task
from pyrodist.errors import ConfigError, FunctionNotAllowed

# Task functions for run_task: this test module is itself allowed, by its import name.
HERE = __name__


def divide(a: float, b: float) -> float:
    return a / b  # the line a failing task's traceback must point at


def greet(name: str, *, punctuation: str = "!") -> str:
    return f"hello {name}{punctuation}"


def make_unsendable() -> object:
    return object()


def make_huge_text(chars: int) -> str:
    return "☃" * chars


@pytest.fixture(scope="module")
def allow() -> AllowList:
    return AllowList(["math", "operator"])


@pytest.fixture(scope="module")
def allow_here() -> AllowList:
    return AllowList([HERE, "math"])


def refusal(allow: AllowList, ref: str) -> str:
    with pytest.raises(FunctionNotAllowed) as caught:
        allow.resolve(ref)
    return str(caught.value)


# ---- resolving allowed functions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "func"),
    [
        ("math:sqrt", math.sqrt),
        ("math.sqrt", math.sqrt),
        ("operator:add", operator.add),
        ("_operator:add", operator.add),
        ("operator.mul", operator.mul),
    ],
)
def test_allowed_reference_resolves_to_the_function(allow: AllowList, ref: str, func: object) -> None:
    assert allow.resolve(ref) is func


def test_resolving_twice_gives_the_same_function(allow: AllowList) -> None:
    assert allow.resolve("math:sqrt") is allow.resolve("math:sqrt")


def test_function_exported_from_a_submodule_resolves_through_its_package() -> None:
    allow = AllowList(["json"])
    assert allow.resolve("json:loads") is json.loads
    assert allow.resolve("json.decoder:JSONDecoder") is json.JSONDecoder


def test_builtins_are_allowed_only_when_builtins_is_allowed(allow: AllowList) -> None:
    message = refusal(allow, "builtins:eval")
    assert "not allowed on this worker" in message
    assert AllowList(["builtins"]).resolve("builtins:eval") is eval


def test_describe_lists_the_allowed_modules_sorted() -> None:
    assert AllowList(["operator", "math"]).describe() == "math, operator"
    assert AllowList([]).describe() == "none"


# ---- refusals ----------------------------------------------------------------------------------


def test_function_of_a_module_not_allowed_is_refused_with_advice(allow: AllowList) -> None:
    message = refusal(allow, "os:getcwd")
    assert "'os:getcwd'" in message
    assert "math, operator" in message
    assert "-I" in message


def test_allowed_function_named_through_another_module_is_refused(allow: AllowList) -> None:
    message = refusal(allow, "os:sqrt")
    assert "not allowed on this worker" in message


def test_module_never_imported_is_not_imported_to_resolve_a_reference(allow: AllowList) -> None:
    message = refusal(allow, "no_such_module_xyz:run")
    assert "not allowed on this worker" in message


@pytest.mark.parametrize("ref", ["math:_private", "math:__import__", "operator:_abs"])
def test_private_name_is_refused(allow: AllowList, ref: str) -> None:
    message = refusal(allow, ref)
    assert "private names are never run" in message
    assert ref in message


@pytest.mark.parametrize("ref", ["math:sqrt.x", "operator:add.__call__", "math", "math:", "a b:c"])
def test_malformed_reference_or_attribute_walk_is_refused(allow: AllowList, ref: str) -> None:
    message = refusal(allow, ref)
    assert "bad function reference" in message


def test_unknown_function_in_an_allowed_module_is_reported_as_unknown(allow: AllowList) -> None:
    message = refusal(allow, "math:nope")
    assert "unknown task function 'math:nope'" in message


def test_non_callable_module_attribute_is_refused(allow: AllowList) -> None:
    assert isinstance(math.pi, float)
    assert "unknown task function" in refusal(allow, "math:pi")


@pytest.mark.parametrize("ref", ["json:decoder", "json:codecs"])
def test_submodule_or_imported_module_attribute_is_refused(ref: str) -> None:
    name = ref.partition(":")[2]
    assert isinstance(getattr(json, name), types.ModuleType)
    assert "unknown task function" in refusal(AllowList(["json"]), ref)


def test_module_imported_into_an_allowed_module_is_refused() -> None:
    assert isinstance(shutil.fnmatch, types.ModuleType)  # type: ignore[attr-defined]
    assert "unknown task function" in refusal(AllowList(["shutil"]), "shutil:fnmatch")


@pytest.mark.parametrize("name", ["recursive_repr", "get_cache_token", "RLock"])
def test_function_imported_from_elsewhere_and_not_exported_is_refused(name: str) -> None:
    func = getattr(functools, name)
    assert callable(func)
    assert name not in functools.__all__
    assert func.__module__ not in ("functools", "_functools")
    assert "unknown task function" in refusal(AllowList(["functools"]), f"functools:{name}")


def test_function_not_exported_by_a_package_is_refused_through_its_submodule() -> None:
    assert callable(json.decoder.scanstring)
    assert "not allowed on this worker" in refusal(AllowList(["json"]), "json.decoder:scanstring")


def test_refusal_is_not_cached_as_a_function(allow: AllowList) -> None:
    refusal(allow, "math:nope")
    refusal(allow, "math:nope")


def test_unimportable_module_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="no_such_module_xyz") as caught:
        AllowList(["math", "no_such_module_xyz"])
    assert "-I" in str(caught.value)
    assert "ModuleNotFoundError" in str(caught.value)


# ---- run_task ----------------------------------------------------------------------------------


def test_successful_task_returns_its_encoded_result(allow: AllowList) -> None:
    ok, result = run_task(allow, "math:sqrt", values.encode_call((16,), {}))
    assert ok is True
    assert result == values.encode_value(4.0)
    assert values.decode_value(result) == 4.0


def test_task_with_keyword_arguments_runs(allow_here: AllowList) -> None:
    payload = values.encode_call(("pyrodist",), {"punctuation": "?"})
    ok, result = run_task(allow_here, f"{HERE}:greet", payload)
    assert ok is True
    assert values.decode_value(result) == "hello pyrodist?"


def test_raising_task_returns_its_type_message_and_traceback(allow_here: AllowList) -> None:
    ok, error = run_task(allow_here, f"{HERE}:divide", values.encode_call((1, 0), {}))
    assert ok is False
    assert error["type"] == "ZeroDivisionError"
    assert error["message"] == "division by zero"
    tb = error["traceback"]
    assert tb.startswith("Traceback (most recent call last):")
    assert f"line {divide.__code__.co_firstlineno + 1}, in divide" in tb
    assert "return a / b" in tb
    assert tb.rstrip().endswith("ZeroDivisionError: division by zero")


def test_raising_task_traceback_leaves_out_the_runner_frame(allow_here: AllowList) -> None:
    _, error = run_task(allow_here, f"{HERE}:divide", values.encode_call((1, 0), {}))
    assert "run_task" not in error["traceback"]
    assert "runner.py" not in error["traceback"]


def test_task_called_with_wrong_arguments_fails_with_type_error(allow: AllowList) -> None:
    ok, error = run_task(allow, "math:sqrt", values.encode_call((1, 2, 3), {}))
    assert ok is False
    assert error["type"] == "TypeError"


def test_unsendable_result_fails_the_task_with_value_encoding_error(allow_here: AllowList) -> None:
    ok, error = run_task(allow_here, f"{HERE}:make_unsendable", values.encode_call((), {}))
    assert ok is False
    assert error["type"] == "ValueEncodingError"
    assert f"the result of {HERE}:make_unsendable" in error["message"]
    assert "builtins.object" in error["message"]
    assert error["traceback"] == ""


def test_refused_function_fails_the_task_with_function_not_allowed(allow: AllowList) -> None:
    ok, error = run_task(allow, "os:getcwd", values.encode_call((), {}))
    assert ok is False
    assert error["type"] == "FunctionNotAllowed"
    assert "'os:getcwd'" in error["message"]
    assert error["traceback"] == ""


def test_undecodable_arguments_fail_the_task(allow: AllowList) -> None:
    ok, error = run_task(allow, "math:sqrt", "this is ((( not serpent")
    assert ok is False
    assert set(error) == {"type", "message", "traceback", "bases", "module"}


def test_result_over_the_payload_limit_fails_the_task(allow: AllowList) -> None:
    ok, error = run_task(allow, "operator:mul", values.encode_call(("x", values.MAX_PAYLOAD + 1), {}))
    assert ok is False
    assert error["type"] == "ValueEncodingError"
    assert "the limit is" in error["message"]


def test_result_over_the_payload_limit_in_utf8_bytes_fails_the_task(allow_here: AllowList) -> None:
    chars = values.MAX_PAYLOAD // 3 + 1  # "☃" is 3 bytes in UTF-8
    ok, _ = run_task(allow_here, f"{HERE}:make_huge_text", values.encode_call((chars,), {}))
    assert ok is False
