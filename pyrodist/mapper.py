"""How a client's `map` sends its calls: a task each, or packed into chunks sized by the calls' measured time.

`chunks.py` says what a chunk is; here a client decides how many calls go into one (`Client.map` without a
chunksize), learns a function's time from the chunks' results, turns a chunk's future into a future per call,
and prepares tasks that are sent later (`ClusterExecutor(max_workers=N)` keeps at most N in flight).
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from . import chunks
from .chunks import CHUNK_OPTION, Args
from .errors import PyrodistError
from .futures import CallFuture, Future, Remote, settle_calls
from .values import BigValue, Payload, encode_big_call

log = logging.getLogger(__name__)

MAP_CHUNK = 1000
"""Tasks sent per submit call by `map`."""
PER_TASK_OPTIONS = frozenset({"timeout", "retries", "retry_on", "max_attempts", "worker"})
"""Options that mean something per task: with them, `map` packs no calls together unless told to."""

Encoded = Payload | BigValue
Calls = Sequence[tuple[Args, dict[str, Any]]]
Held = tuple[Future, Callable[[], object]]
"""A task encoded and not sent yet: its future, and what sends it."""


class Sender(Protocol):
    """What a mapper needs of its client."""

    id: str
    limits: tuple[int, int]
    """The master's max_value and max_payload."""

    def new_future(self, remote: Remote | None = None) -> Future:
        """A future for a task of this client (with a new id), asking remote (the client's own by default)."""

    def send(
        self, ref: str, encoded: Sequence[Encoded], options: dict[str, Any], futures: list[Future] | None = None
    ) -> list[Future]:
        """Send tasks (waiting while the master's queue is full); their futures (new ones unless given)."""

    def live_slots(self) -> int:
        """How many task slots the live workers have together (0 when the master cannot say)."""

    def sees_each_task(self) -> bool:
        """Whether callbacks see each task's record (packed calls would change what they see)."""


class Mapper:
    """A client's `map` (see the module docstring)."""

    def __init__(self, sender: Sender) -> None:
        self._sender = sender
        self._call_seconds: dict[str, float] = {}  # a call's measured time, per function (chunks' results)
        self._result_bytes: dict[str, float] = {}  # and its result's size

    def map(self, ref: str, calls: Sequence[Args], chunksize: int | None, options: dict[str, Any]) -> list[Future]:
        """Send calls of these positional arguments, chunksize to a task (chosen when None); a future per call."""
        if chunksize is not None and chunksize < 1:
            raise ValueError(f"chunksize must be at least 1, not {chunksize}")
        futures: list[Future] = []
        size = chunksize
        if size is None:
            size, futures = self._measured_size(ref, calls, options)
        if size == 1:
            for start in range(len(futures), len(calls), MAP_CHUNK):
                encoded = [self._call(args) for args in calls[start : start + MAP_CHUNK]]
                futures += self._sender.send(ref, encoded, options)
            return futures
        return futures + self._per_call(ref, calls[len(futures) :], size, options)

    def chunk_tasks(self, ref: str, calls: Sequence[Args], size: int, options: dict[str, Any]) -> list[Future]:
        """Send calls as tasks of size calls each; the tasks' own futures.

        Encoded and sent a few tasks at first, then more per call: workers start on the first while the
        rest are encoded."""
        chunk_options = {**options, CHUNK_OPTION: True}
        futures: list[Future] = []
        starts = range(0, len(calls), size)
        at, group = 0, 2
        while at < len(starts):  # at most MAP_CHUNK tasks per call, fewer at first
            encoded = [self._chunk(calls[start : start + size]) for start in starts[at : at + group]]
            futures += self._sender.send(ref, encoded, chunk_options)
            at, group = at + len(encoded), min(2 * group, MAP_CHUNK)
        return futures

    def held(self, ref: str, calls: Calls, size: int, options: dict[str, Any], remote: Remote) -> list[Held]:
        """Tasks of these calls (size to a task; keyword arguments only with size 1), encoded now and not sent:
        each one's future (asking remote) and what sends it."""
        if size == 1:
            encoded = [encode_big_call(args, kwargs, *self._sender.limits) for args, kwargs in calls]
        else:
            options = {**options, CHUNK_OPTION: True}
            encoded = [self._chunk([args for args, _ in calls[i : i + size]]) for i in range(0, len(calls), size)]
        futures = [self._sender.new_future(remote) for _ in encoded]
        return [(future, functools.partial(self._sender.send, ref, [value], options, [future]))
                for future, value in zip(futures, encoded, strict=True)]  # fmt: skip

    def _call(self, args: Args) -> Encoded:
        return encode_big_call(args, {}, *self._sender.limits)

    def _chunk(self, calls: Sequence[Args]) -> Encoded:
        return chunks.encode(calls, *self._sender.limits)

    def _per_call(self, ref: str, calls: Sequence[Args], size: int, options: dict[str, Any]) -> list[Future]:
        """Send calls size to a task; a future per call (`CallFuture`), settled from its task's result."""
        timed = functools.partial(self._timed, ref)
        futures: list[Future] = []
        starts = range(0, len(calls), size)
        for chunk, start in zip(self.chunk_tasks(ref, calls, size, options), starts, strict=True):
            parts = [CallFuture(chunk, i) for i in range(min(size, len(calls) - start))]
            chunk.add_done_callback(functools.partial(settle_calls, calls=parts, timed=timed))
            futures += parts
        return futures

    def _measured_size(self, ref: str, calls: Sequence[Args], options: dict[str, Any]) -> tuple[int, list[Future]]:
        """Calls per task when the caller did not say, and the futures of the calls sent to find out.

        A task per call for few calls, with per-task options, when callbacks see each task's record, or with
        no live worker; else the measured time of a call, and the bytes of its arguments and result, decide
        (`chunks.auto_size`). Unknown, the first calls
        (PROBE_CALLS, at most one a slot) go as tasks of one call each and the first result is awaited up to
        PROBE_WAIT seconds: calls too slow for that gain nothing from being packed."""
        if len(calls) < chunks.PACKED_FROM or PER_TASK_OPTIONS & set(options) or self._sender.sees_each_task():
            return 1, []
        slots = self._sender.live_slots()
        if not slots:  # nothing to measure with: a task per call, as ever
            return 1, []
        probe: list[Future] = []
        if ref not in self._call_seconds:  # a call per task, side by side: slow calls are not made to queue
            probe = self._per_call(ref, calls[: min(chunks.PROBE_CALLS, slots)], 1, options)
            concurrent.futures.wait(probe, timeout=chunks.PROBE_WAIT, return_when=concurrent.futures.FIRST_COMPLETED)
        per_call = self._call_seconds.get(ref)
        if per_call is None:
            return 1, probe
        first = self._call(calls[0])
        call_bytes = max(self._result_bytes.get(ref, 0.0), first.size if isinstance(first, BigValue) else len(first))
        return chunks.auto_size(len(calls) - len(probe), slots, per_call, call_bytes), probe

    def _timed(self, ref: str, seconds: float, result_bytes: float) -> None:
        """A chunk of ref's calls took seconds, and its result result_bytes, per call: remembered (moving
        averages) for the next map's size."""
        known = self._call_seconds.get(ref)
        self._call_seconds[ref] = seconds if known is None else 0.7 * known + 0.3 * seconds
        size = self._result_bytes.get(ref)
        self._result_bytes[ref] = result_bytes if size is None else 0.7 * size + 0.3 * result_bytes


def live_slots(stats: Callable[[], Any], client_id: str) -> int:
    """The task slots of the live workers in a stats record (0 when the master cannot say)."""
    try:
        return sum(w.concurrency for w in stats().workers if w.state == "live")
    except PyrodistError as exc:
        log.info("client %s: no worker count for map's chunks (%s)", client_id, exc)
        return 0
