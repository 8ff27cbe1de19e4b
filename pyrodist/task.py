"""`Task`: one task and everything the master knows about it, with the small rules that read only it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from typing import Any

from .protocol import FINISHED_STATES, ErrorRecord, TaskState, check_options, normalized_ref
from .values import BlobRef, Payload
from .wire import TaskRecord

RETRY_BACKOFF_MAX = 600.0
"""Default cap of the retry backoff, in seconds."""


class Task:
    """One task and everything the master knows about it."""

    __slots__ = (
        "attempts", "deadline", "due", "error", "errors", "finished", "func", "id", "lost", "options", "owner",
        "payload", "priority", "result", "retried", "seen_running", "seq", "started", "state", "submitted",
        "target", "token", "unseen_losses", "worker",
    )  # fmt: skip

    def __init__(self, task_id: str, func: str, payload: Payload | None, options: dict[str, Any], owner: str | None):
        self.id = task_id
        self.func = func
        self.payload = payload
        self.options = options
        self.owner = owner
        self.priority: int = options.get("priority", 0)
        self.target: str | None = options.get("worker")  # only this worker may run it (broadcast)
        self.seq = 0
        self.state = TaskState.PENDING
        self.attempts = 0  # runs started (a lease given back unstarted is not one)
        self.lost = 0  # runs lost with their worker
        self.unseen_losses = 0  # leases lost before the worker reported the task running
        self.retried = 0
        self.worker: str | None = None
        self.token = 0
        self.deadline = 0.0
        self.seen_running = False  # a heartbeat listed it as running (not only prefetched)
        self.due: float | None = None  # when a retrying task becomes pending again
        self.result: Payload | None = None
        self.error: ErrorRecord | None = None
        self.errors: tuple[dict[str, Any], ...] = ()  # a tuple: most tasks never fail, and () costs nothing
        self.submitted = 0.0
        self.started: float | None = None
        self.finished: float | None = None

    def blobs(self) -> set[str]:
        """The blobs this task refers to (its arguments or its result, when too big for one message)."""
        return {ref.blob_id for payload in (self.payload, self.result) if (ref := BlobRef.parse(payload)) is not None}

    def record(self) -> TaskRecord:
        """The task's public record, with the result still encoded under `payload` (or why it is gone)."""
        error = self.error
        if self.state is TaskState.DONE and self.result is None:  # released once its client had it
            message = (f"the result of task {self.id} was collected by its client and released on the master "
                       "(submit with options(keep=True) to read it again by id)")  # fmt: skip
            error = {"type": "ResultExpired", "message": message, "traceback": ""}
        return TaskRecord(
            self.id, self.state, self.func, self.result, error, list(self.errors), self.worker, self.attempts,
            self.retried, self.lost, dict(self.options), self.submitted, self.started, self.finished, self.due,
        )  # fmt: skip


def retry_delay(options: dict[str, Any], retry: int) -> float:
    """Seconds before retry number `retry` (1, 2, ...): retry_backoff doubling each time, capped."""
    base = float(options.get("retry_backoff", 0.0))
    cap = float(options.get("retry_backoff_max", RETRY_BACKOFF_MAX))
    return min(cap, base * 2 ** min(retry - 1, 60)) if base > 0 else 0.0


def wants_retry(task: Task, error: ErrorRecord) -> bool:
    """Whether a failed run is tried again: retries left, and the error is one of retry_on (any when unset)."""
    if task.retried >= task.options.get("retries", 0):
        return False
    retry_on = task.options.get("retry_on")
    if not retry_on:
        return True
    names = {str(error.get("type", "")), *str(error.get("bases", "")).split()}
    return not names.isdisjoint(retry_on)


def lost_error(message: str) -> ErrorRecord:
    """The error record of a task lost with its worker."""
    return {"type": "WorkerLost", "message": message, "traceback": "", "bases": ""}


def damaged(what: str) -> ErrorRecord:
    """The error record of a task whose stored value no longer matches its checksum."""
    message = f"{what}: damaged on disk (checksum mismatch); restore the store from a backup, or submit the task again"
    return {"type": "StoreDamaged", "message": message, "traceback": "", "bases": ""}


def tombstone(task_id: str, reason: str, at: float) -> Task:
    """The stand-in for a task whose result is gone: state expired, with an error saying why."""
    task = Task(task_id, "", None, {}, None)
    task.state = TaskState.EXPIRED
    task.finished = at
    why = "was forgotten (client.forget)" if reason == "forgotten" else "expired (--result-ttl)"
    task.error = {"type": "ResultExpired", "message": f"the result of task {task_id} {why}", "traceback": ""}
    return task


def is_finished(task: Task) -> bool:
    """Whether a task has reached a final state."""
    return task.state in FINISHED_STATES


TOKEN_BITS = 52
"""Random bits of a lease token: unguessable, and still exact as a JSON number in any language."""


def lease_tokens(count: int) -> list[int]:
    """count fresh lease tokens, random (one system call for all), never 0 (the file's "no lease")."""
    raw = secrets.token_bytes(8 * count)
    mask = (1 << TOKEN_BITS) - 1
    return [(int.from_bytes(raw[i : i + 8], "big") & mask) or 1 for i in range(0, 8 * count, 8)]


NO_OPTIONS: dict[str, Any] = {}
"""Shared by every task without options (a dict each would cost 64 bytes a task); never mutated."""


def fitting(tasks: Sequence[Task], most: int) -> int:
    """How many of the first tasks' arguments fit in most bytes (at least one): what one fetch answer carries."""
    size = 0
    for count, task in enumerate(tasks):
        size += len(task.payload or "")
        if count and size > most:
            return count
    return len(tasks)


def new_task(task_id: str, func: str, payload: Payload, options: Any, owner: str | None = None) -> Task:
    """A submitted task: its function reference normalized, its options checked."""
    return Task(task_id, normalized_ref(func), payload, check_options(options) if options else NO_OPTIONS, owner)


def plain_task_ids(epoch: str, numbers: Iterator[int], count: int) -> list[str]:
    """Ids for count plain submits: the master's epoch, a number and 48 random bits (an id is all it takes to read
    a plain task's result, so it cannot be guessed)."""
    secret = secrets.token_hex(6 * count)
    return [f"m{epoch}.{next(numbers)}.{secret[12 * i : 12 * i + 12]}" for i in range(count)]
