"""A client's futures: `Future` (a `concurrent.futures.Future` per task) and the table of those outstanding.

All futures of one client share one condition: a condition each was a quarter of the client's work per
task. The table is the collector's and the submitter's meeting point: a future is in it from just
before its task is sent until its finished record settles it.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from .errors import ResultExpired, TaskError
from .protocol import TaskState
from .values import decode_value
from .wire import Finished

log = logging.getLogger(__name__)

_WAITING = ("PENDING", "RUNNING")  # concurrent.futures' states of a future that is not done


class Future(concurrent.futures.Future[Any]):
    """A `concurrent.futures.Future` for one task; `task_id` is the master's id for it."""

    def __init__(self, condition: threading.Condition, task_id: str, cancel: Callable[[str], bool]) -> None:
        super().__init__()
        self._condition = condition  # shared by the client's futures, which wait in a loop (see the module)
        self.task_id = task_id
        self._cancel_remote = cancel
        self._sent = False  # the master confirmed it has the task

    def cancel(self) -> bool:
        """Cancel the task (a running one is killed on its worker); False when it finished or the master is away."""
        if self.done():
            return self.cancelled()
        if not self._cancel_remote(self.task_id):
            return False
        return self.cancel_here()

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

    def cancel_here(self) -> bool:
        """Mark cancelled and wake wait()/as_completed(); safe to call from several threads."""
        with self._condition:
            if not super().cancel():
                return False
            if self._state == "CANCELLED":  # not yet notified: do it once
                self.set_running_or_notify_cancel()
        return True

    def __repr__(self) -> str:
        return f"<pyrodist.Future {self.task_id} {self._state.lower()}>"


def settle(future: Future, record: Finished) -> None:
    """Complete future from its finished record."""
    error = record.error or {"type": "?", "message": ""}
    payload = record.payload
    if record.state is TaskState.DONE and payload is not None:
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
        future.set_exception(TaskError(record.id, error["type"], error["message"], error.get("traceback", "")))


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
                except Exception:
                    log.exception("could not settle task %s", record.id)


def as_completed(futures: Iterable[concurrent.futures.Future[Any]], timeout: float | None = None) -> Any:
    """Yield futures as they finish (the standard library's `as_completed`)."""
    return concurrent.futures.as_completed(futures, timeout)
