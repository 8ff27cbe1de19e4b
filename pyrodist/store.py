"""The master's state: its queue, leases, retries and results, without any networking.

A store is not thread-safe: the master calls it under its own lock. Time is passed in (`now`), so
tests drive leases, backoff and expiry with a fake clock and no sleeps.

Life of a task::

    add ──▶ pending ──lease──▶ running ──finish(valid token)──▶ done | failed
             ▲  ▲                │  │
             │  └─── retrying ◀──┘  │ failed with retries left (after its backoff: pending again)
             │                      │
             └──release / expire────┘ a lease lost while the task ran counts against max_attempts
    pending | retrying | running ──cancel──▶ cancelled
    done | failed | cancelled ──result_ttl / forget──▶ expired (a small tombstone, itself kept one more ttl)
    done ──release_results (its owner collected it)──▶ done without its value

`TaskStore` holds the rules and the leases of running tasks, which always live in memory (a few per
worker); `MemoryStore` keeps everything else in memory, `sqlstore.SqliteStore` in SQLite. Every
operation is O(1) or O(log n) in the queue length, except `expire`, which is O(running).

Every operation is all or nothing when the storage fails (`storefaults.atomic`): memory is brought back to
what the storage holds and `StoreUnavailable` raised; the next operation tries the storage again.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from .protocol import ACTIVE_STATES, ErrorRecord, TaskState
from .storefaults import Undoable, atomic
from .task import Task, lease_tokens, lost_error, retry_delay, wants_retry
from .values import Payload
from .wire import Lease, Outcome

RESULT_STATES = frozenset({TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED})
"""Finished states whose record is still kept (not yet expired)."""
DEFAULT_MAX_ATTEMPTS = 3
"""Times a task may be lost with its worker while running before it fails."""
UNSEEN_LOSSES_PER_ATTEMPT = 5
"""Leases lost before the worker said the task ran, allowed per attempt (a task that kills its worker at once)."""
ERRORS_KEPT = 20
"""Most attempt errors kept on a record (the latest)."""


Snapshot = tuple[dict[str, Task], dict[TaskState, int], dict[str, int]]
"""What an operation may change in memory, as it was before: the leases, the counts, the targeted counts."""


class TaskStore(Undoable[Snapshot]):
    """The rules every store shares; subclasses keep pending and finished tasks (see the hooks at the end)."""

    durable = False
    results_held = 0
    """Bytes of finished tasks' values this store holds in memory (none: they are on disk)."""

    def __init__(self) -> None:
        super().__init__()
        self.broken: list[Task] = []
        """Tasks lease() failed instead of handing out (damaged arguments), for the master to announce."""
        self._running: dict[str, Task] = {}
        self._counts = dict.fromkeys(TaskState, 0)
        self._targeted_pending: dict[str, int] = {}
        self._seq = itertools.count()

    @atomic
    def add(self, tasks: Iterable[Task], now: float) -> int:
        """Queue new tasks; one whose id is known is left as it is (resubmits are idempotent). How many were new."""
        fresh = []
        for task in tasks:
            task.submitted = now
            task.seq = next(self._seq)
            fresh.append(task)
        new = self._insert(fresh)
        for task in new:
            self._counts[TaskState.PENDING] += 1
            self._count_targeted(task, 1)
        self._commit()
        return len(new)

    def get(self, task_id: str) -> Task | None:
        """The task with this id (a tombstone in state expired once its result is gone), or None."""
        task = self._running.get(task_id)
        if task is None:
            try:
                task = self._find(task_id)
            except self.faults as exc:  # a read changed nothing: only the error to tell
                raise self._fault(exc) from exc
        return task

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
        """How many tasks wait to be leased (or to be retried)."""
        return self._counts[TaskState.PENDING] + self._counts[TaskState.RETRYING]

    @atomic
    def lease(self, worker: str, max_tasks: int, now: float, lease_timeout: float) -> list[Task]:
        """Lease up to max_tasks pending tasks to worker: its own first, then by priority, FIFO within one."""
        taken = self._take(worker, max_tasks)
        broken = [t for t in taken if t.error is not None]  # arguments damaged on disk: failed, never run
        leased = [t for t in taken if t.error is None] if broken else taken
        for task in broken:
            self._count_targeted(task, -1)
            self._end(task, now, None, task.error, TaskState.FAILED)
        tokens = lease_tokens(len(leased))
        for task, token in zip(leased, tokens, strict=True):
            self._count_targeted(task, -1)
            self._move(task, TaskState.RUNNING)
            task.worker, task.token, task.deadline, task.started = worker, token, now + lease_timeout, now
            task.seen_running = False
            task.attempts += 1
            self._running[task.id] = task
        if taken:
            self._save(taken)
            self._commit()
        self.broken += broken
        return leased

    def renew(
        self, worker: str, running: Iterable[Lease], prefetched: Iterable[Lease], now: float, lease_timeout: float
    ) -> int:
        """Extend the leases (id and token) worker holds (running ones are marked seen); how many renewed."""
        renewed = 0
        for leases, seen in ((running, True), (prefetched, False)):
            for task_id, token in leases:
                task = self._running.get(task_id)
                if task is not None and task.worker == worker and task.token == token:
                    task.deadline = now + lease_timeout
                    task.seen_running = task.seen_running or seen
                    renewed += 1
        return renewed

    @atomic
    def release(self, worker: str, leases: Iterable[Lease]) -> list[Task]:
        """Give back tasks worker leased (id and lease token) but did not run; they keep their place in the queue."""
        released = []
        for task_id, token in leases:
            task = self._running.get(task_id)
            if task is not None and task.worker == worker and task.token == token:
                task.attempts -= 1
                self._requeue(task)
                released.append(task)
        self._save(released)
        self._commit()
        return released

    @atomic
    def expire(self, now: float) -> tuple[list[Task], list[Task]]:
        """Take back leases past their deadline: (tasks pending again, tasks failed for too many losses)."""
        requeued: list[Task] = []
        failed: list[Task] = []
        for task in [t for t in self._running.values() if t.deadline < now]:
            limit = task.options.get("max_attempts", DEFAULT_MAX_ATTEMPTS)
            if task.seen_running:
                task.lost += 1
                self._log_error(task, lost_error(f"worker {task.worker} was lost while running the task"), now)
            else:  # leased but never seen running: probably never started, so it is no attempt
                task.unseen_losses += 1
                self._log_error(task, lost_error(f"worker {task.worker} was lost holding it (not seen running)"), now)
                task.attempts -= 1
            if task.target is not None:  # no other worker may run it
                message = f"task {task.id} was sent to worker {task.target}, which was lost while holding it"
                self._end(task, now, None, lost_error(message), TaskState.FAILED)
                failed.append(task)
            elif task.lost >= limit or task.unseen_losses >= UNSEEN_LOSSES_PER_ATTEMPT * limit:
                message = (
                    f"task {task.id} was lost with its worker {task.lost + task.unseen_losses} times "
                    f"(max_attempts={limit}); last worker: {task.worker}"
                )
                self._end(task, now, None, lost_error(message), TaskState.FAILED)
                failed.append(task)
            else:
                self._requeue(task)
                requeued.append(task)
        self._save(requeued + failed)
        self._commit()
        return requeued, failed

    @atomic
    def finish(self, worker: str, outcomes: Iterable[Outcome], now: float) -> tuple[list[Task], list[str]]:
        """Record results; only the lease holder's first report counts: (accepted, ignored ids). An accepted
        failure with retries left goes to retrying (or straight back to pending)."""
        accepted: list[Task] = []
        ignored: list[str] = []
        for outcome in outcomes:
            task = self._running.get(outcome.task_id)
            if task is None or task.worker != worker or task.token != outcome.token:
                ignored.append(outcome.task_id)
                continue
            accepted.append(task)
            if outcome.ok:
                self._end(task, now, outcome.result, None, TaskState.DONE)
                continue
            error = outcome.error.copy() if outcome.error else lost_error("no error given")
            self._log_error(task, error, now)
            if wants_retry(task, error):
                task.retried += 1
                delay = retry_delay(task.options, task.retried)
                if delay > 0:
                    self._retry(task, now + delay)
                else:
                    self._requeue(task)
            else:
                self._end(task, now, None, error, TaskState.FAILED)
        self._save(accepted)
        self._commit()
        return accepted, ignored

    @atomic
    def promote(self, now: float) -> list[Task]:
        """Retrying tasks whose backoff is over become pending again; returns them."""
        due = self._due(now)
        for task in due:
            task.due = None
            self._move(task, TaskState.PENDING)
            self._count_targeted(task, 1)
            self._enqueue(task)
        if due:
            self._save(due)
            self._commit()
        return due

    @atomic
    def cancel(self, task_id: str, now: float, states: frozenset[TaskState] = ACTIVE_STATES) -> Task | None:
        """Cancel a task in one of these states; returns it (its `worker` says who runs it), or None."""
        task = self.get(task_id)
        if task is None or task.state not in states:
            return None
        if task.state is TaskState.RUNNING:
            del self._running[task.id]
        elif task.state is TaskState.PENDING:
            self._count_targeted(task, -1)
        self._end(task, now, None, None, TaskState.CANCELLED)
        task.due = None
        self._save([task])
        self._commit()
        return task

    @atomic
    def fail_targeted(self, worker: str, now: float, message: str) -> list[Task]:
        """Fail the pending tasks sent to a worker that is gone."""
        failed = self._take_targeted(worker)
        for task in failed:
            self._count_targeted(task, -1)
            self._end(task, now, None, lost_error(message), TaskState.FAILED)
        self._save(failed)
        self._commit()
        return failed

    @atomic
    def forget(self, task_ids: Iterable[str], now: float) -> list[str]:
        """Drop the results of these finished tasks now (a tombstone remains); returns the ids forgotten."""
        ids = [i for i in task_ids if (t := self._find(i)) is not None and t.state in RESULT_STATES]
        self._retire(ids, "forgotten", now)
        self._commit()
        return ids

    @atomic
    def release_results(self, task_ids: Iterable[str]) -> int:
        """Drop the values of these done tasks (their owner has them); their records stay. How many were dropped."""
        done = [
            t for t in map(self._find, task_ids) if t is not None and t.state is TaskState.DONE and t.result is not None
        ]
        self._release_values(done)
        self._commit()
        return len(done)

    @atomic
    def expire_results(self, now: float, ttl: float) -> int:
        """Results older than ttl expire (tombstones remain for another ttl); returns how many expired."""
        ids = self._finished_before(now - ttl)
        self._retire(ids, "expired", now)
        self._forget_tombstones(now - ttl)
        self._commit()
        return len(ids)

    def close(self) -> None:
        """Flush and release whatever the store holds open."""

    def _snapshot(self) -> Snapshot:
        # Small copies: leases are a few per worker; their Task objects change in place, so only the ids
        # and deadlines (which live in memory only) are of use from here.
        return self._running.copy(), self._counts.copy(), self._targeted_pending.copy()

    # -- the rules' internals

    def _end(self, task: Task, now: float, result: Payload | None, error: ErrorRecord | None, state: TaskState) -> None:
        self._running.pop(task.id, None)
        self._move(task, state)
        task.result = result
        task.error = error
        task.finished = now
        task.payload = None  # the arguments are no longer needed; keep memory flat

    def _retry(self, task: Task, due: float) -> None:
        del self._running[task.id]
        task.worker = None
        task.due = due
        self._move(task, TaskState.RETRYING)
        self._schedule(task)

    def _requeue(self, task: Task) -> None:
        del self._running[task.id]
        self._move(task, TaskState.PENDING)
        task.worker = None
        task.started = None
        self._count_targeted(task, 1)
        self._enqueue(task)

    def _log_error(self, task: Task, error: ErrorRecord, now: float) -> None:
        entry = {**error, "attempt": task.attempts, "worker": task.worker, "at": now}
        task.errors = (*task.errors[1 - ERRORS_KEPT :], entry)

    def _move(self, task: Task, state: TaskState) -> None:
        self._counts[task.state] -= 1
        self._counts[state] += 1
        task.state = state

    def _count_targeted(self, task: Task, change: int) -> None:
        if task.target is not None:
            self._targeted_pending[task.target] = self._targeted_pending.get(task.target, 0) + change

    def _retire(self, ids: list[str], reason: str, now: float) -> None:
        dropped = self._drop(ids)
        for state in dropped.values():
            self._counts[state] -= 1
        self._counts[TaskState.EXPIRED] += self._bury(list(dropped), reason, now)

    # -- hooks: where pending, retrying and finished tasks live

    def _insert(self, tasks: list[Task]) -> list[Task]:
        """Keep these tasks (pending, queued); return those whose id was new."""
        raise NotImplementedError

    def _find(self, task_id: str) -> Task | None:
        """A task that is not running (a tombstone for a dropped one), or None."""
        raise NotImplementedError

    def _take(self, worker: str, max_tasks: int) -> list[Task]:
        """Take up to max_tasks pending tasks out of the queue: those sent to worker first."""
        raise NotImplementedError

    def _take_targeted(self, worker: str) -> list[Task]:
        """Take every pending task sent to worker out of the queue."""
        raise NotImplementedError

    def _enqueue(self, task: Task) -> None:
        """Queue a task that is pending again, at its old place (its seq)."""
        raise NotImplementedError

    def _schedule(self, task: Task) -> None:
        """Keep a retrying task until its `due` time."""
        raise NotImplementedError

    def _due(self, now: float) -> list[Task]:
        """Take out the retrying tasks due by now."""
        raise NotImplementedError

    def _save(self, tasks: list[Task]) -> None:
        """Record the new state of these tasks."""
        raise NotImplementedError

    def _finished_before(self, before: float) -> list[str]:
        """Ids of tasks that finished before this time."""
        raise NotImplementedError

    def _drop(self, ids: list[str]) -> dict[str, TaskState]:
        """Forget these finished tasks; returns the states of those that were there."""
        raise NotImplementedError

    def _bury(self, ids: list[str], reason: str, now: float) -> int:
        """Leave a tombstone for each dropped task; returns how many new ones."""
        raise NotImplementedError

    def _forget_tombstones(self, before: float) -> None:
        """Forget tombstones laid before this time."""
        raise NotImplementedError

    def _release_values(self, tasks: list[Task]) -> None:
        """Drop the values of these done tasks (`result` None), where they are kept too."""
        raise NotImplementedError

    def _commit(self) -> None:
        """Make the changes so far durable (a no-op in memory)."""
