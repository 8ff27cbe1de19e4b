"""A client's futures: `Future` (a `concurrent.futures.Future` per task) and the table of those outstanding.

All futures of one client share one condition: a condition each was a quarter of the client's work per
task. The table is the collector's and the submitter's meeting point: a future is in it from just
before its task is sent until its finished record settles it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from . import chunks
from .errors import PyrodistError, ResultExpired, TaskError, task_error
from .protocol import TaskState
from .values import decode_value
from .wire import Finished

log = logging.getLogger(__name__)

_WAITING = ("PENDING", "RUNNING")  # concurrent.futures' states of a future that is not done


class Remote(Protocol):
    """What a future asks of its client's master."""

    def cancel_queued(self, task_id: str) -> bool | None:
        """Cancel the task if no worker holds it: True, False (one does, or it finished), None (no answer)."""

    def held(self, task_id: str) -> bool:
        """Whether a worker holds the task now."""


class Future(concurrent.futures.Future[Any]):
    """A `concurrent.futures.Future` for one task; `task_id` is the master's id for it.

    As the standard library's: a future is running once a worker holds its task (the master leased it),
    and only a future that is not running can be cancelled. `Client.cancel(..., force=True)` stops a
    running task (its child process is killed on its worker).
    """

    def __init__(self, condition: threading.Condition, task_id: str, remote: Remote) -> None:
        super().__init__()
        self._condition = condition  # shared by the client's futures, which wait in a loop (see the module)
        self.task_id = task_id
        self._remote = remote
        self._sent = False  # the master confirmed it has the task
        self.result_bytes = 0
        """Bytes of its encoded result, once it arrived."""

    def cancel(self) -> bool:
        """Cancel the task unless a worker holds it already; False when it runs or finished (or the master is away)."""
        with self._condition:
            if self._state != "PENDING":
                return self._state in ("CANCELLED", "CANCELLED_AND_NOTIFIED")
        if not self._remote.cancel_queued(self.task_id):  # a worker holds it, it finished, or no answer
            return False
        return self.cancel_here()

    def running(self) -> bool:
        """Whether a worker holds the task (the master is asked while the future is pending)."""
        with self._condition:
            if self._state != "PENDING":
                return self._state == "RUNNING"
        if self._remote.held(self.task_id):
            self.set_running()
        with self._condition:
            return self._state == "RUNNING"

    def set_running(self) -> None:
        """A worker holds the task: the future is running (from now on it cannot be cancelled)."""
        with self._condition:
            if self._state == "PENDING":
                self.set_running_or_notify_cancel()

    def result(self, timeout: float | None = None) -> Any:
        """The task's value; raises its error, CancelledError, or TimeoutError after timeout seconds."""
        self._wait(timeout)
        return super().result(0)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The task's error (None if it succeeded); raises CancelledError, or TimeoutError after timeout seconds."""
        self._wait(timeout)
        return super().exception(0)

    def _wait(self, timeout: float | None) -> None:
        """Wait until done or timeout seconds passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while self._state in _WAITING:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return
                self._condition.wait(remaining)

    def cancel_here(self, running: bool = False) -> bool:
        """Mark cancelled (with running: also when running, its task stopped by force) and wake wait() and
        as_completed(); safe to call from several threads."""
        with self._condition:
            if running and self._state == "RUNNING":
                self._state = "PENDING"  # the standard library cancels only pending futures
            if not super().cancel():
                return False
            if self._state == "CANCELLED":  # not yet notified: do it once
                self.set_running_or_notify_cancel()
        return True

    def __repr__(self) -> str:
        return f"<pyrodist.Future {self.task_id} {self._state.lower()}>"


class CallFuture(Future):
    """The future of one call that `map` packed with others into one task (a chunk), settled from its result.

    Its `task_id` is the chunk's. Cancelling it cancels the chunk's task, and so every call in it, while no
    worker holds it; it is running while a worker holds the chunk.
    """

    def __init__(self, chunk: Future, index: int) -> None:
        super().__init__(chunk._condition, chunk.task_id, chunk._remote)
        self.chunk: Future | None = chunk
        """The chunk's own future, until it is settled (then None: a kept call does not keep its chunk)."""
        self.index = index
        """Its place in the chunk."""
        self._sent = chunk._sent

    def cancel(self) -> bool:
        """Cancel the chunk's task (all its calls) unless a worker holds it already."""
        chunk = self.chunk
        if chunk is not None and not self.done():
            chunk.cancel()
        return self.cancelled()

    def running(self) -> bool:
        """Whether a worker holds the chunk."""
        chunk = self.chunk
        if chunk is not None and not self.done() and chunk.running():
            self.set_running()
        with self._condition:
            return self._state == "RUNNING"


def settle_calls(chunk: Future, calls: Sequence[CallFuture], timed: Callable[[float, float], None]) -> None:
    """Settle the futures of a chunk's calls from the chunk's own (done) future; timed learns a call's time and
    its result's bytes."""
    for call in calls:
        call.chunk = None
    if chunk.cancelled():
        for call in calls:
            call.cancel_here(running=True)
        return
    try:
        result = chunk.result(0)
        if (seconds := chunks.seconds_per_call(result)) is not None:
            timed(seconds, chunk.result_bytes / max(1, len(calls)))
        pairs = list(chunks.outcomes(chunk.task_id, result))
    except Exception as exc:  # noqa: BLE001 - the chunk failed as a whole: so does each of its calls
        pairs = [(False, exc)] * len(calls)
    if len(pairs) < len(calls):
        missing = TaskError(chunk.task_id, "ValueError", "the chunk's result holds fewer values than it had calls")
        pairs += [(False, missing)] * (len(calls) - len(pairs))
    for call, (ok, value) in zip(calls, pairs, strict=False):
        if call.done():
            continue
        if ok:
            call.set_result(value)
        else:
            call.set_exception(value)


def settle(future: Future, record: Finished) -> None:
    """Complete future from its finished record."""
    error = record.error or {"type": "?", "message": ""}
    payload = record.payload
    if record.state is TaskState.DONE and payload is not None:
        future.result_bytes = len(payload)
        try:
            future.set_result(decode_value(payload))
        except Exception as exc:  # noqa: BLE001 - an undecodable result fails this future, not the collector
            future.set_exception(exc)
    elif record.state is TaskState.DONE:  # its value was released on the master: read again by id, too late
        future.set_exception(ResultExpired(record.id, "ResultExpired", error.get("message", "released"), ""))
    elif record.state is TaskState.CANCELLED:
        future.cancel_here()
    elif record.state is TaskState.EXPIRED:
        future.set_exception(ResultExpired(record.id, "ResultExpired", error.get("message", "expired"), ""))
    else:
        future.set_exception(task_error(record.id, error))


class FutureTable:
    """The futures of a client whose tasks have not finished, by task id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: dict[str, Future] = {}

    def __len__(self) -> int:
        return len(self._futures)

    def add(self, futures: Iterable[Future]) -> None:
        """Track futures whose tasks are about to be sent."""
        with self._lock:
            self._futures.update((f.task_id, f) for f in futures)

    def pop(self, task_id: str) -> Future | None:
        """Stop tracking a task; its future, if it was tracked."""
        with self._lock:
            return self._futures.pop(task_id, None)

    def sent(self) -> list[str]:
        """Ids of the tasks the master confirmed (one still being sent is not lost)."""
        with self._lock:
            return [task_id for task_id, f in self._futures.items() if f._sent]

    def drain(self) -> list[Future]:
        """Stop tracking every future; those that were tracked."""
        with self._lock:
            futures, self._futures = list(self._futures.values()), {}
        return futures

    def settle(self, records: Iterable[Finished]) -> None:
        """Settle the futures of these finished tasks (records of untracked tasks are skipped)."""
        with self._lock:
            pairs = [(r, self._futures.pop(r.id, None)) for r in records]
        for record, future in pairs:
            if future is not None and not future.done():
                try:
                    settle(future, record)
                except Exception as exc:  # a bug of ours: the future must still end, saying so
                    log.exception("could not settle task %s", record.id)
                    with contextlib.suppress(concurrent.futures.InvalidStateError):
                        future.set_exception(PyrodistError(f"the record of task {record.id} could not be read: {exc}"))


def as_completed(futures: Iterable[concurrent.futures.Future[Any]], timeout: float | None = None) -> Any:
    """Yield futures as they finish (the standard library's `as_completed`)."""
    return concurrent.futures.as_completed(futures, timeout)
