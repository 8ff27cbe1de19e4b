"""`TaskStore`: the master's state, its queue, leases and results, without any networking.

The store is not thread-safe: the master calls it under its own lock. Time is passed in (`now`),
so tests drive leases and expiry with a fake clock and no sleeps.

Life of a task::

    add ──▶ pending ──lease──▶ running ──finish(token ok)──▶ done | failed
              ▲   │                │
              │   └─cancel─▶ cancelled
              └──expire / release──┘      (expire counts an attempt; max_attempts then fails it)

Every operation is O(1) or O(log n) in the queue length, except `expire`, which is O(running).
"""

from __future__ import annotations

import collections
import heapq
import itertools
from collections.abc import Iterable
from typing import Any

from .protocol import FINISHED_STATES, Outcome, TaskState

DEFAULT_MAX_ATTEMPTS = 3


class Task:
    """One task and everything the master knows about it."""

    __slots__ = (
        "attempts",
        "deadline",
        "error",
        "finished",
        "func",
        "id",
        "options",
        "owner",
        "payload",
        "priority",
        "result",
        "seq",
        "started",
        "state",
        "submitted",
        "target",
        "token",
        "worker",
    )  # fmt: skip

    def __init__(self, task_id: str, func: str, payload: str, options: dict[str, Any], owner: str | None) -> None:
        self.id = task_id
        self.func = func
        self.payload: str | None = payload
        self.options = options
        self.owner = owner
        self.priority: int = options.get("priority", 0)
        self.target: str | None = options.get("worker")  # only this worker may run it (broadcast)
        self.seq = 0
        self.state = TaskState.PENDING
        self.attempts = 0
        self.worker: str | None = None
        self.token = 0
        self.deadline = 0.0
        self.result: str | None = None
        self.error: dict[str, str] | None = None
        self.submitted = 0.0
        self.started: float | None = None
        self.finished: float | None = None

    def record(self) -> dict[str, Any]:
        """The task's public record, with the result still encoded under `payload`."""
        return {
            "id": self.id, "state": self.state.value, "func": self.func, "payload": self.result,
            "error": self.error, "worker": self.worker, "attempts": self.attempts,
            "submitted": self.submitted, "started": self.started, "finished": self.finished,
        }  # fmt: skip


class MemoryStore:
    """The in-memory `TaskStore`: fast, and gone when the master stops."""

    durable = False

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}
        self._queue: list[tuple[int, int, Task]] = []  # (-priority, seq, task); stale entries skipped
        self._running: dict[str, Task] = {}
        self._counts = dict.fromkeys(TaskState, 0)
        self._seq = itertools.count()
        self._tokens = itertools.count(1)
        self._finished: collections.deque[tuple[float, Task]] = collections.deque()  # in finishing order
        self._targeted: dict[str, collections.deque[Task]] = {}  # per worker; cancelled ones skipped on lease
        self._targeted_pending: dict[str, int] = {}

    # -- submitting and reading

    def add(self, tasks: Iterable[Task], now: float) -> int:
        """Queue new tasks; a task whose id is already known is left as it is (resubmits are idempotent).

        Returns how many were new.
        """
        added = 0
        for task in tasks:
            if task.id in self._tasks:
                continue
            added += 1
            task.submitted = now
            task.seq = next(self._seq)
            self._tasks[task.id] = task
            self._counts[TaskState.PENDING] += 1
            self._enqueue(task)
        return added

    def get(self, task_id: str) -> Task | None:
        """The task with this id, or None."""
        return self._tasks.get(task_id)

    def counts(self) -> dict[str, int]:
        """How many tasks are in each state."""
        return {state.value: n for state, n in self._counts.items()}

    def has_pending(self) -> bool:
        """Whether any task waits that every worker may lease."""
        return self._counts[TaskState.PENDING] > sum(self._targeted_pending.values())

    def has_work_for(self, worker: str) -> bool:
        """Whether a task waits that this worker may lease."""
        return self._targeted_pending.get(worker, 0) > 0 or self.has_pending()

    def targeted_waiting(self) -> dict[str, int]:
        """Pending tasks per worker they were sent to."""
        return {worker: n for worker, n in self._targeted_pending.items() if n}

    def pending_count(self) -> int:
        """How many tasks wait to be leased."""
        return self._counts[TaskState.PENDING]

    # -- leases

    def lease(self, worker: str, max_tasks: int, now: float, lease_timeout: float) -> list[Task]:
        """Lease up to max_tasks pending tasks to worker, highest priority first, FIFO within one."""
        leased: list[Task] = []
        mine = self._targeted.get(worker)
        while len(leased) < max_tasks and (mine or self._queue):
            if mine:
                task = mine.popleft()
                if task.state is not TaskState.PENDING:
                    continue  # cancelled while queued
                self._targeted_pending[worker] -= 1
            else:
                _, _, task = heapq.heappop(self._queue)
                if task.state is not TaskState.PENDING:
                    continue  # cancelled while queued
            self._move(task, TaskState.RUNNING)
            task.worker = worker
            task.token = next(self._tokens)
            task.deadline = now + lease_timeout
            task.attempts += 1
            task.started = now
            self._running[task.id] = task
            leased.append(task)
        return leased

    def renew(self, worker: str, task_ids: Iterable[str], now: float, lease_timeout: float) -> int:
        """Extend the leases worker holds on these tasks; returns how many were renewed."""
        renewed = 0
        for task_id in task_ids:
            task = self._running.get(task_id)
            if task is not None and task.worker == worker:
                task.deadline = now + lease_timeout
                renewed += 1
        return renewed

    def release(self, worker: str, task_ids: Iterable[str]) -> list[Task]:
        """Give back tasks worker leased but never started; they keep their place in the queue."""
        released = []
        for task_id in task_ids:
            task = self._running.get(task_id)
            if task is not None and task.worker == worker:
                task.attempts -= 1
                self._requeue(task)
                released.append(task)
        return released

    def expire(self, now: float) -> tuple[list[Task], list[Task]]:
        """Take back leases past their deadline: (tasks requeued, tasks failed for too many attempts)."""
        requeued: list[Task] = []
        failed: list[Task] = []
        for task in [t for t in self._running.values() if t.deadline < now]:
            limit = task.options.get("max_attempts", DEFAULT_MAX_ATTEMPTS)
            if task.target is not None:  # no other worker may run it
                message = f"task {task.id} was sent to worker {task.target}, which was lost while running it"
                self._finish(task, now, None, {"type": "WorkerLost", "message": message, "traceback": ""})
                failed.append(task)
            elif task.attempts >= limit:
                message = (
                    f"task {task.id} was lost with its worker {task.attempts} times "
                    f"(max_attempts={limit}); last worker: {task.worker}"
                )
                self._finish(task, now, None, {"type": "WorkerLost", "message": message, "traceback": ""})
                failed.append(task)
            else:
                self._requeue(task)
                requeued.append(task)
        return requeued, failed

    def finish(self, worker: str, outcomes: Iterable[Outcome], now: float) -> tuple[list[Task], list[str]]:
        """Record results; only the current lease holder's first report counts: (accepted, ignored ids)."""
        accepted: list[Task] = []
        ignored: list[str] = []
        for outcome in outcomes:
            task = self._running.get(outcome.task_id)
            if task is None or task.worker != worker or task.token != outcome.token:
                ignored.append(outcome.task_id)
                continue
            self._finish(task, now, outcome.result if outcome.ok else None, None if outcome.ok else outcome.error)
            accepted.append(task)
        return accepted, ignored

    def cancel(self, task_id: str, now: float) -> Task | None:
        """Cancel a pending task; returns it, or None when it is not pending."""
        task = self._tasks.get(task_id)
        if task is None or task.state is not TaskState.PENDING:
            return None
        if task.target is not None:
            self._targeted_pending[task.target] -= 1
        self._move(task, TaskState.CANCELLED)
        task.finished = now
        task.payload = None
        self._finished.append((now, task))
        return task

    def fail_targeted(self, worker: str, now: float, message: str) -> list[Task]:
        """Fail the pending tasks sent to a worker that is gone."""
        failed = []
        for task in self._targeted.pop(worker, ()):
            if task.state is TaskState.PENDING:
                self._move(task, TaskState.FAILED)
                task.error = {"type": "WorkerLost", "message": message, "traceback": ""}
                task.finished = now
                task.payload = None
                self._finished.append((now, task))
                failed.append(task)
        self._targeted_pending.pop(worker, None)
        return failed

    def forget_finished(self, before: float) -> int:
        """Forget tasks that finished before this time (their results expire); returns how many."""
        forgotten = 0
        while self._finished and self._finished[0][0] < before:
            _, task = self._finished.popleft()
            if self._tasks.pop(task.id, None) is not None:
                self._counts[task.state] -= 1
                forgotten += 1
        return forgotten

    # -- internals

    def _finish(self, task: Task, now: float, result: str | None, error: dict[str, str] | None) -> None:
        del self._running[task.id]
        self._move(task, TaskState.FAILED if error is not None else TaskState.DONE)
        task.result = result
        task.error = error
        task.finished = now
        task.payload = None  # the arguments are no longer needed; keep memory flat
        self._finished.append((now, task))

    def _requeue(self, task: Task) -> None:
        del self._running[task.id]
        self._move(task, TaskState.PENDING)
        task.worker = None
        task.started = None
        self._enqueue(task, front=True)

    def _enqueue(self, task: Task, front: bool = False) -> None:
        if task.target is None:
            heapq.heappush(self._queue, (-task.priority, task.seq, task))  # the heap keeps its place by seq
            return
        waiting = self._targeted.setdefault(task.target, collections.deque())
        if front:
            waiting.appendleft(task)
        else:
            waiting.append(task)
        self._targeted_pending[task.target] = self._targeted_pending.get(task.target, 0) + 1

    def _move(self, task: Task, state: TaskState) -> None:
        self._counts[task.state] -= 1
        self._counts[state] += 1
        task.state = state


def is_finished(task: Task) -> bool:
    """Whether a task has reached a final state."""
    return task.state in FINISHED_STATES
