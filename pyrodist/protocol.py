"""The wire records and their rules: task states, function references, values, options, limits.

Values (arguments and results) travel as text serpent reads (`encode_value`: JSON after a space where
that is a Python literal of the same value, see JSON_MARK, else serpent's own), which the master stores
and forwards without decoding. Only types that come back equal and of the same type are accepted:
None, bool, int, float, complex, str, bytes, list, tuple, dict, set and frozenset, nested freely.
Subclasses of those (a namedtuple, an OrderedDict, an IntEnum) arrive as their builtin base type.
"""

from __future__ import annotations

import contextlib
import enum
import json
import math
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import serpent

from .errors import FunctionRefError, ValueEncodingError


class TaskState(enum.StrEnum):
    """Where a task is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"  # failed, waiting out its retry backoff before it is pending again
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # finished, and its result expired (--result-ttl) or was forgotten


FINISHED_STATES = frozenset({TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED, TaskState.EXPIRED})
ACTIVE_STATES = frozenset({TaskState.PENDING, TaskState.RUNNING, TaskState.RETRYING})

MAX_PAYLOAD = 8 * 1024 * 1024
"""Largest encoded arguments or result of one task, in bytes."""
MAX_BATCH = 10_000
"""Most tasks or results in one submit_many, fetch or report call."""
MAX_WAIT = 300.0
"""Longest a single long-poll may block, in seconds."""

TASK_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# ---- function references -------------------------------------------------------------------


def function_ref(func: Callable[..., Any] | str) -> str:
    """The importable reference `"package.module:name"` of a function (or a checked string)."""
    if isinstance(func, str):
        return ":".join(split_ref(func))
    if not callable(func):
        raise FunctionRefError(f"a task must be a function or a 'module:name' string, not {type(func).__name__}")
    module: str | None = getattr(func, "__module__", None)
    qualname: str | None = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    owner = getattr(func, "__self__", None)
    what = repr(func)
    if owner is not None and not isinstance(owner, type(math)):
        raise FunctionRefError(f"{what} is a method bound to an object; workers can only run module-level functions")
    if module is None or qualname is None:
        raise FunctionRefError(f"{what} has no module and name, so no worker could import it")
    if "<lambda>" in qualname or "<locals>" in qualname or "." in qualname:
        raise FunctionRefError(
            f"{what} is a lambda, nested function or method; workers can only import module-level functions"
        )
    if module == "__main__":
        raise FunctionRefError(
            f"{qualname} is defined in __main__, which no worker can import: move it into a module "
            "and start the workers with -I that.module"
        )
    return f"{_public_module(module, qualname, func)}:{qualname}"


def _public_module(module: str, name: str, func: object) -> str:
    """Prefer the public module that re-exports a function (`_operator` -> `operator`)."""
    if not module.startswith("_"):
        return module
    import sys

    public = sys.modules.get(module.lstrip("_"))
    if public is not None and getattr(public, name, None) is func:
        return public.__name__
    return module


def split_ref(ref: str) -> tuple[str, str]:
    """Split `"pkg.mod:name"` or `"pkg.mod.name"` into module and name, refusing anything else."""
    if not isinstance(ref, str):
        raise FunctionRefError(f"a function reference must be a string, not {type(ref).__name__}")
    if ":" in ref:
        module, _, name = ref.partition(":")
    else:
        module, _, name = ref.rpartition(".")
    parts = module.split(".") if module else []
    if not parts or not all(_IDENTIFIER.fullmatch(p) for p in parts) or not _IDENTIFIER.fullmatch(name):
        raise FunctionRefError(
            f"bad function reference {ref!r}: write 'package.module:function' (one plain name after the colon)"
        )
    return module, name


# ---- values ----------------------------------------------------------------------------------

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


def decode_value(text: str) -> Any:
    """Decode serpent text made by `encode_value`."""
    if text in _LITERAL_WORDS:
        return _LITERAL_WORDS[text]
    if text[:1] == JSON_MARK:
        with contextlib.suppress(ValueError):
            value = json.loads(text)
            if _json_exact(value) and not _JSON_ONLY.search(text):
                return value  # what serpent would read too
        # json's own words (" true", " NaN") and escapes: serpent decides, as for any other text
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
    marker = value.get("__class__")  # serpent's own: floats and complex numbers with nan parts
    if marker == "float" and len(value) == 2:
        return float(value["value"])
    if marker == "complex" and len(value) == 3:
        return complex(_restore(value["real"]), _restore(value["imag"]))
    return {k: _restore(v) for k, v in value.items()}


# ---- errors and options -----------------------------------------------------------------------


def error_info(exc: BaseException, tb: str | None = None) -> dict[str, str]:
    """The record of an exception that crosses the wire: type name, message, traceback text."""
    if tb is None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    bases = " ".join(c.__name__ for c in type(exc).__mro__[1:-1])  # all but the type itself and object
    return {"type": type(exc).__name__, "message": _printable(str(exc)), "traceback": _printable(tb), "bases": bases}


def _printable(text: str) -> str:
    """Text that any wire format can carry: lone surrogates (from undecodable file names) become escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


TASK_OPTIONS: dict[str, type] = {
    "priority": int, "timeout": float, "max_attempts": int, "worker": str,
    "retries": int, "retry_backoff": float, "retry_backoff_max": float, "retry_on": list,
}  # fmt: skip
"""The per-task options the master understands, with their types."""


def check_options(options: Any) -> dict[str, Any]:
    """Validate a task's options dict, naming the first bad field."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict, not {type(options).__name__}")
    checked: dict[str, Any] = {}
    for key, value in options.items():
        kind = TASK_OPTIONS.get(key) if isinstance(key, str) else None
        if kind is None:
            raise ValueError(f"unknown task option {key!r}: known options are {', '.join(sorted(TASK_OPTIONS))}")
        if value is None:
            continue
        if kind is str:
            if not isinstance(value, str) or not 0 < len(value) <= 128:
                raise TypeError(f"task option {key!r} must be a worker id (a string), not {value!r}")
            checked[key] = value
            continue
        if kind is list:
            checked[key] = _exception_names(key, value)
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"task option {key!r} must be a number, not {value!r}")
        if (isinstance(value, float) and not math.isfinite(value)) or abs(value) > 1e9:
            raise ValueError(f"task option {key!r} must be a finite number of reasonable size, not {value!r}")
        if kind is int and value != int(value):
            raise ValueError(f"task option {key!r} must be a whole number, not {value!r}")
        checked[key] = kind(value)
    if checked.get("timeout", 1) <= 0:
        raise ValueError(f"task option 'timeout' must be positive, not {checked['timeout']}")
    if not 1 <= checked.get("max_attempts", 1) <= 100:
        raise ValueError(f"task option 'max_attempts' must be between 1 and 100, not {checked['max_attempts']}")
    if abs(checked.get("priority", 0)) > 1_000_000:
        raise ValueError(f"task option 'priority' must be within ±1000000, not {checked['priority']}")
    if not 0 <= checked.get("retries", 0) <= 1000:
        raise ValueError(f"task option 'retries' must be between 0 and 1000, not {checked['retries']}")
    for key in ("retry_backoff", "retry_backoff_max"):
        if checked.get(key, 0) < 0:
            raise ValueError(f"task option {key!r} must not be negative, not {checked[key]}")
    return checked


def _exception_names(key: str, value: Any) -> list[str]:
    """retry_on: exception type names (classes are turned into their names)."""
    items = [value] if isinstance(value, (str, type)) else value
    if not isinstance(items, (list, tuple)) or not 0 < len(items) <= 32:
        raise TypeError(f"task option {key!r} must be exception type names (1 to 32), not {value!r}")
    names = [item.__name__ if isinstance(item, type) and issubclass(item, BaseException) else item for item in items]
    for name in names:
        if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
            raise ValueError(f"task option {key!r}: {name!r} is not an exception type name")
    return names


def check_task_id(task_id: Any) -> str:
    """Validate a task id given by a caller."""
    if not isinstance(task_id, str) or not TASK_ID_PATTERN.fullmatch(task_id):
        raise ValueError(f"bad task id {task_id!r}: ids are 1-64 letters, digits, '.', '_' or '-'")
    return task_id


# ---- wire records ------------------------------------------------------------------------------
# Remote methods raise builtin exceptions that name the bad field, so any Pyro4 client can read them.


@dataclass(frozen=True, slots=True)
class Outcome:
    """A worker's report on one task."""

    task_id: str
    token: int
    ok: bool
    result: str | None = None
    error: dict[str, str] | None = None


def check_name(value: Any, what: str) -> str:
    """A worker or client id: a non-empty string of at most 128 characters."""
    if not isinstance(value, str) or not 0 < len(value) <= 128:
        raise TypeError(f"{what} must be a non-empty string of at most 128 characters, not {value!r}")
    return value


def check_number(value: Any, what: str, low: float, high: float) -> float:
    """A number within [low, high] (bools and nan refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{what} must be a number from {low} to {high}, not {value!r}")
    return value


def check_batch(items: Any, what: str, limit: int = MAX_BATCH) -> list[Any] | tuple[Any, ...]:
    """A list of at most limit items."""
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"{what} must be a list, not {type(items).__name__}")
    if len(items) > limit:
        raise ValueError(f"{what} holds {len(items)} items; at most {limit} per call")
    return items


def check_ids(items: Any, what: str, limit: int = MAX_BATCH) -> list[str] | tuple[str, ...]:
    """A list of task ids (strings), at most limit of them."""
    check_batch(items, what, limit)
    for i, task_id in enumerate(items):
        if not isinstance(task_id, str):
            raise TypeError(f"{what}[{i}] must be a task id string, not {type(task_id).__name__}")
    return items  # type: ignore[no-any-return]


def parse_task_spec(i: int, spec: Any, limit: int = MAX_PAYLOAD) -> tuple[Any, str, Any]:
    """A plain submit_many entry {"func", "args", "kwargs", "options"} as (func, payload, options)."""
    if not isinstance(spec, dict):
        raise TypeError(f"tasks[{i}] must be a dict with 'func', 'args', 'kwargs', 'options'")
    unknown = set(spec) - {"func", "args", "kwargs", "options"}
    if unknown:
        raise ValueError(f"tasks[{i}] has unknown fields {sorted(map(str, unknown))}")
    args, kwargs = spec.get("args") or [], spec.get("kwargs") or {}
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise TypeError(f"tasks[{i}]: args must be a list and kwargs a dict")
    return spec.get("func"), encode_call(args, kwargs, limit), spec.get("options")


def parse_encoded_task(
    i: int, item: Any, limit: int = MAX_PAYLOAD, client_id: str | None = None
) -> tuple[str, Any, str, Any]:
    """A client's [task_id, func, payload, options] entry, checked; its id must start with 'client_id.'."""
    if not isinstance(item, (list, tuple)) or len(item) != 4:
        raise TypeError(f"tasks[{i}] must be [task_id, func, payload, options]")
    task_id, func, payload, options = item
    check_task_id(task_id)
    if client_id is not None and not task_id.startswith(client_id + "."):
        raise ValueError(f"tasks[{i}]: task id {task_id!r} must start with the client id {client_id + '.'!r}")
    if not isinstance(payload, str) or not payload_fits(payload, limit):
        raise ValueError(f"tasks[{i}]: payload must be serpent text of at most {limit} bytes")
    return task_id, func, payload, options


def parse_outcome(i: int, result: Any, limit: int = MAX_PAYLOAD) -> Outcome:
    """A worker's report on one task: {"id", "token", "state", "payload" or "value", "error"}."""
    if not isinstance(result, dict):
        raise TypeError(f"results[{i}] must be a dict, not {type(result).__name__}")
    task_id, token = result.get("id"), result.get("token")
    if not isinstance(task_id, str) or isinstance(token, bool) or not isinstance(token, int):
        raise TypeError(f"results[{i}] needs 'id' (a string) and 'token' (an int from fetch)")
    if result.get("state") == TaskState.DONE:
        payload = result.get("payload")
        if payload is None and "value" in result:
            payload = encode_value(result["value"], "the result", limit)
        if not isinstance(payload, str) or not payload_fits(payload, limit):
            raise ValueError(f"results[{i}]: 'payload' must be serpent text of at most {limit} bytes")
        return Outcome(task_id, token, True, result=payload)
    if result.get("state") == TaskState.FAILED:
        error = result.get("error")
        if not isinstance(error, dict) or not all(isinstance(error.get(k), str) for k in ("type", "message")):
            raise TypeError(f"results[{i}]: 'error' must be a dict with 'type' and 'message' strings")
        return Outcome(task_id, token, False, error={k: str(error.get(k, ""))[:65536] for k in ERROR_FIELDS})
    raise ValueError(f"results[{i}]: 'state' must be 'done' or 'failed', not {result.get('state')!r}")


ERROR_FIELDS = ("type", "message", "traceback", "bases")
