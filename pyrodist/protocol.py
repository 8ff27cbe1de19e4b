"""The rules every process shares: task states, limits, function references, task options, error records.

The records built on these rules, and what crosses the wire, are in `wire.py`; values in `values.py`.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import math
import re
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NotRequired, TypedDict, TypeVar

from .errors import FunctionRefError

T = TypeVar("T")


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
QUEUED_STATES = frozenset({TaskState.PENDING, TaskState.RETRYING})
"""Active states of a task no worker holds: what cancelling without force may stop."""
WORKER_STATES = ("live", "stopping", "stopped")
"""What a worker may say it is in its heartbeat."""

MAX_BATCH = 10_000
"""Most tasks or results in one submit_many, fetch or report call."""
MAX_WAIT = 300.0
"""Longest a single long-poll may block, in seconds."""
OVER_LIMIT = "is over this server's limit"
"""What the refusal of a call longer than a server reads says (`remote_limits`)."""
MESSAGE_SLACK = 1024 * 1024
"""Bytes of a call beyond its payloads: ids, names, options, error records."""


BLOB_CHUNK = 4 * 1024 * 1024
"""Most bytes of a big value moved by one call (`blobs.py`)."""


def max_message(max_payload: int) -> int:
    """Longest call a master reads, in bytes: a batch cut at max_payload (`in_messages`), escapes and all, or a
    chunk of a big value."""
    return 4 * max(max_payload, BLOB_CHUNK) + MESSAGE_SLACK


def wire_estimate(text: str | bytes | None) -> int:
    """Bytes text takes in a call, within a factor of two (escapes): as is if ASCII or bytes, else 4 per character."""
    return 0 if text is None else len(text) if isinstance(text, bytes) or text.isascii() else 4 * len(text)


def in_messages(items: Sequence[T], size_of: Callable[[T], int], budget: int) -> Iterator[list[T]]:
    """items in groups of at most MAX_BATCH whose sizes add up to at most budget (a bigger item goes alone)."""
    group: list[T] = []
    size = 0
    for item in items:
        cost = size_of(item)
        if group and (size + cost > budget or len(group) >= MAX_BATCH):
            yield group
            group, size = [], 0
        group.append(item)
        size += cost
    if group:
        yield group


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


@functools.lru_cache(maxsize=10_000)
def normalized_ref(ref: str) -> str:
    """A function reference as given, checked and written `"package.module:name"` (cached: tasks repeat it)."""
    return function_ref(ref)


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


# ---- errors and options -----------------------------------------------------------------------


class ErrorRecord(TypedDict):
    """An exception that crossed the wire: its type name, message, traceback text, base class names and module."""

    type: str
    message: str
    traceback: NotRequired[str]
    bases: NotRequired[str]
    module: NotRequired[str]


def error_info(exc: BaseException, tb: str | None = None) -> ErrorRecord:
    """The record of an exception that crosses the wire: type name, message, traceback text."""
    if tb is None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    kind = type(exc)
    bases = " ".join(c.__name__ for c in kind.__mro__[1:-1])  # all but the type itself and object
    record: ErrorRecord = {"type": kind.__name__, "message": _printable(str(exc)), "traceback": _printable(tb),
                           "bases": bases}  # fmt: skip
    if kind.__qualname__ == kind.__name__:  # a class its module names (a nested one is not found by name)
        record["module"] = kind.__module__
    return record


def _printable(text: str) -> str:
    """Text that any wire format can carry: lone surrogates (from undecodable file names) become escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


TASK_OPTIONS: dict[str, type] = {
    "priority": int, "timeout": float, "max_attempts": int, "worker": str,
    "retries": int, "retry_backoff": float, "retry_backoff_max": float, "retry_on": list, "keep": bool,
    "chunk": bool,
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
        if kind is bool:
            if not isinstance(value, bool):
                raise TypeError(f"task option {key!r} must be True or False, not {value!r}")
            checked[key] = value
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


def check_func(value: Any) -> str:
    """A function reference that arrived: a string (its form is checked where it is normalized)."""
    if not isinstance(value, str):
        raise TypeError(f"func must be a 'package.module:name' string, not {type(value).__name__}")
    return value


def check_task_id(task_id: Any) -> str:
    """Validate a task id given by a caller."""
    if not isinstance(task_id, str) or not TASK_ID_PATTERN.fullmatch(task_id):
        raise ValueError(f"bad task id {task_id!r}: ids are 1-64 letters, digits, '.', '_' or '-'")
    return task_id


@functools.lru_cache(maxsize=4096)  # a client sends its secret with every call: hash it once
def client_id_of(client_secret: str) -> str:
    """A client's id, derived from the secret only that client knows: seeing an id proves nothing."""
    return "c" + hashlib.blake2b(client_secret.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def registration_proof(registration_key: str, action: str, name: str, uri: str, nonce: str) -> str:
    """The proof that the holder of registration_key asks to register (or remove) name for uri, this once."""
    text = f"{action}\n{name}\n{uri}\n{nonce}".encode()
    return hmac.new(registration_key.encode(), text, hashlib.sha256).hexdigest()


def admin_secret(admin_key: str, own: str) -> str:
    """A client secret that also proves the admin key (the client keeps an id of its own)."""
    return f"{admin_key}:{own}"


def holds_admin_key(client_secret: str, admin_key: str | None) -> bool:
    """Whether a client secret was made with admin_secret(admin_key, ...)."""
    if not admin_key:
        return False
    prefix = admin_key + ":"
    return hmac.compare_digest(client_secret[: len(prefix)].encode(), prefix.encode())


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


def check_ids(items: Any, what: str, limit: int = MAX_BATCH) -> list[str]:
    """A list of task ids (strings), at most limit of them."""
    check_batch(items, what, limit)
    for i, task_id in enumerate(items):
        if not isinstance(task_id, str):
            raise TypeError(f"{what}[{i}] must be a task id string, not {type(task_id).__name__}")
    return list(items)


def check_leases(items: Any, what: str) -> list[tuple[str, int]]:
    """A list of `[task_id, token]` pairs, at most MAX_BATCH of them."""
    check_batch(items, what)
    leases = []
    for i, item in enumerate(items):
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)
                and type(item[1]) is int):  # fmt: skip
            raise TypeError(f"{what}[{i}] must be [task_id, token] (a string and an int), not {item!r}")
        leases.append((item[0], item[1]))
    return leases


ERROR_FIELDS = ("type", "message", "traceback", "bases")
MAX_ERROR_TEXT = 65536
"""Longest kept text of one error field (a traceback of a deep recursion is cut)."""


def check_error(value: Any, what: str, optional: bool = True) -> ErrorRecord | None:
    """An error record that arrived (None allowed when optional), its texts cut to MAX_ERROR_TEXT."""
    if value is None and optional:
        return None
    if not isinstance(value, dict) or not all(isinstance(value.get(k), str) for k in ("type", "message")):
        raise TypeError(f"{what} must be a dict with 'type' and 'message' strings")
    record = {k: str(value.get(k, ""))[:MAX_ERROR_TEXT] for k in ERROR_FIELDS}
    if isinstance(value.get("module"), str):  # the exception class's module (from pyrodist's own workers)
        record["module"] = value["module"][:MAX_ERROR_TEXT]
    return record  # type: ignore[return-value]


def check_strings(value: Any, what: str) -> list[str]:
    """A list of strings."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{what} must be a list of strings")
    return value


STATES = {state.value: state for state in TaskState}
"""Task states by their wire value (a dict lookup is faster than calling the enum)."""
STATE_TEXT = {state: state.value for state in TaskState}
"""Each task state's wire value (a dict lookup is faster than the enum's `value`)."""


def check_state(value: Any) -> TaskState:
    """A task state that arrived."""
    state = STATES.get(value) if isinstance(value, str) else None
    if state is None:
        raise ValueError(f"unknown task state {value!r}")
    return state


def check_fields(record: Any, what: str, required: Sequence[str]) -> dict[str, Any]:
    """A dict that has these keys (a record as it arrived)."""
    if not isinstance(record, dict):
        raise TypeError(f"{what} must be a dict, not {type(record).__name__}")
    missing = [key for key in required if key not in record]
    if missing:
        raise ValueError(f"{what} lacks {', '.join(missing)}")
    return record
