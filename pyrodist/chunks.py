"""Calls packed into one task (`map(..., chunksize=N)`): their arguments, how a child runs them, their results.

A chunk is a task with the option `chunk` whose payload is the list of its calls' arguments, `[[args], ...]`
(`map` passes no keyword arguments).
A worker's child runs them in order, one failing call failing only its own result, and answers
`[seconds, values, errors]`: the time the calls took, their values in order (None where a call failed)
and the failed calls' error records by position (`{"3": record}`). One value for the whole chunk is
encoded and decoded at once: a few microseconds per call, where a task each cost tens. A chunk that
fails as a whole (lost worker, time limit, a result too big) fails every call in it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from . import protocol, values
from .errors import TaskError, ValueEncodingError, task_error

Args = tuple[Any, ...]
CHUNK_OPTION = "chunk"
"""The task option that marks a chunk."""
MAX_AUTO_CHUNK = 1000
"""Most calls `Client.map` packs into one task by itself."""
CHUNK_SECONDS = 0.05
"""About how long a chunk `Client.map` packs by itself should run, once a call's time is known."""
PACKED_FROM = 64
"""`Client.map` packs calls by itself only when it has at least this many."""
PROBE_CALLS = 8
"""Most calls `Client.map` sends first, a task each (at most one a worker slot), to learn a function's time."""
PROBE_WAIT = 0.2
"""Seconds `Client.map` waits for the first of their results before it sends the other calls one per task."""
CHUNK_BYTES = 64 * 1024
"""Most bytes of arguments, or of results, a chunk `Client.map` packs by itself should carry (measured per call)."""
CHUNKS_PER_SLOT = 4
"""Without a measured time, `Client.map` cuts the calls into this many chunks per worker slot (as
`multiprocessing.Pool.map` does), so that slots finish together."""


def encode(calls: Sequence[Args], limit: int, inline: int) -> values.Payload | values.BigValue:
    """The payload of a chunk of calls, given by their positional arguments (a BigValue over inline bytes)."""
    arguments = [list(args) for args in calls]
    exact = values.json_exact_items(itertools.chain.from_iterable(calls))  # one pass, not one per call
    return values.encode_known(arguments, exact, "the chunk's arguments", limit, inline)


def run(func: Callable[..., Any], calls: Any, traceback_of: Callable[[BaseException], str]) -> list[Any]:
    """Run a chunk's calls in order (in a worker's child): `[seconds, values, errors]`."""
    if not isinstance(calls, list) or not all(isinstance(args, list | tuple) for args in calls):
        raise TypeError("a chunk's arguments must be a list of argument lists")
    results: list[Any] = []
    errors: dict[str, protocol.ErrorRecord] = {}
    started = time.perf_counter()
    for args in calls:
        try:
            results.append(func(*args))
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - that call's failure only (sys.exit() too)
            errors[str(len(results))] = protocol.error_info(exc, traceback_of(exc))
            results.append(None)
    return [time.perf_counter() - started, results, errors]


def encoded_result(outcome: list[Any], what: str, encode: Callable[[Any], Any]) -> Any:
    """A chunk's outcome encoded by encode; a value that cannot be sent fails only its own call."""
    try:
        return encode(outcome)
    except ValueEncodingError:
        seconds, results, errors = outcome
        for i, value in enumerate(results):
            try:
                encode(value)  # as the child encodes a task's result: its limits, big values allowed
            except ValueEncodingError as exc:
                errors[str(i)], results[i] = protocol.error_info(exc, tb=""), None
        return encode([seconds, results, errors])  # still too big as a whole: the chunk fails


def outcomes(task_id: str, result: Any) -> Iterator[tuple[bool, Any]]:
    """A chunk's decoded result as (True, value) or (False, the call's error) per call, in order."""
    try:
        _, results, errors = result
        if not isinstance(results, list) or not isinstance(errors, dict):
            raise TypeError
    except (TypeError, ValueError):
        raise TaskError(task_id, "ValueError", "the chunk's result is not [seconds, values, errors]") from None
    for i, value in enumerate(results):
        error = errors.get(str(i))
        yield (True, value) if error is None else (False, task_error(task_id, error))


def all_done(result: Any) -> bool:
    """Whether a chunk's decoded result is well formed and no call in it failed."""
    return type(result) is list and len(result) == 3 and type(result[1]) is list and result[2] == {}


def seconds_per_call(result: Any) -> float | None:
    """How long one call of a chunk took on average, from its decoded result (None when it says nothing)."""
    try:
        seconds, results, _ = result
        return float(seconds) / len(results) if results else None
    except (TypeError, ValueError):
        return None


def auto_size(calls: int, slots: int, per_call: float | None, call_bytes: float = 0.0) -> int:
    """Calls per task for `Client.map` by itself: CHUNKS_PER_SLOT chunks a slot, shorter once a call's time
    is known (about CHUNK_SECONDS each), at most CHUNK_BYTES of a call's arguments or result each (packing big
    values saves nothing and moves them as one), at most MAX_AUTO_CHUNK."""
    size = -(-calls // (max(1, slots) * CHUNKS_PER_SLOT))
    if per_call is not None:
        size = min(size, max(1, int(CHUNK_SECONDS / max(per_call, 1e-7))))
    size = min(size, max(1, int(CHUNK_BYTES // max(call_bytes, 1.0))))
    return max(1, min(MAX_AUTO_CHUNK, size))
