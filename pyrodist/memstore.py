"""`MemoryStore`: the master's state in memory, fast, and gone when the master stops (see store.py for the rules)."""

from __future__ import annotations

import collections
import heapq

from .protocol import FINISHED_STATES, TaskState
from .store import RESULT_STATES, Task, TaskStore, tombstone


class MemoryStore(TaskStore):
    """The in-memory store: fast, and gone when the master stops."""

    def __init__(self) -> None:
        super().__init__()
        self._tasks: dict[str, Task] = {}
        self._queue: list[tuple[int, int, Task]] = []  # (-priority, seq, task); entries no longer pending skipped
        self._targeted: dict[str, list[tuple[int, Task]]] = {}  # per worker: heap of (seq, task)
        self._retrying: list[tuple[float, int, Task]] = []  # (due, seq, task); cancelled ones skipped
        self._finished: collections.deque[tuple[float, Task]] = collections.deque()  # in finishing order
        self._tombs: dict[str, tuple[str, float]] = {}  # id -> (reason, when)
        self._tomb_order: collections.deque[tuple[float, str]] = collections.deque()

    def _insert(self, tasks: list[Task]) -> list[Task]:
        new = []
        for task in tasks:
            if task.id not in self._tasks:
                self._tasks[task.id] = task
                self._enqueue(task)
                new.append(task)
        return new

    def _find(self, task_id: str) -> Task | None:
        task = self._tasks.get(task_id)
        if task is None and (tomb := self._tombs.get(task_id)) is not None:
            return tombstone(task_id, *tomb)
        return task

    def _take(self, worker: str, max_tasks: int) -> list[Task]:
        taken: list[Task] = []  # entries no longer pending (cancelled or failed while queued) are skipped
        mine = self._targeted.get(worker)
        while mine and len(taken) < max_tasks:
            if (task := heapq.heappop(mine)[1]).state is TaskState.PENDING:
                taken.append(task)
        while self._queue and len(taken) < max_tasks:
            if (task := heapq.heappop(self._queue)[2]).state is TaskState.PENDING:
                taken.append(task)
        return taken

    def _take_targeted(self, worker: str) -> list[Task]:
        return [task for _, task in self._targeted.pop(worker, []) if task.state is TaskState.PENDING]

    def _enqueue(self, task: Task) -> None:
        if task.target is None:
            heapq.heappush(self._queue, (-task.priority, task.seq, task))
        else:
            heapq.heappush(self._targeted.setdefault(task.target, []), (task.seq, task))

    def _schedule(self, task: Task) -> None:
        heapq.heappush(self._retrying, (task.due or 0.0, task.seq, task))

    def _due(self, now: float) -> list[Task]:
        due = []
        while self._retrying and self._retrying[0][0] <= now:
            task = heapq.heappop(self._retrying)[2]
            if task.state is TaskState.RETRYING:
                due.append(task)
        return due

    def _save(self, tasks: list[Task]) -> None:
        for task in tasks:
            if task.state in FINISHED_STATES:
                self._finished.append((task.finished or 0.0, task))

    def _finished_before(self, before: float) -> list[str]:
        ids = []
        while self._finished and self._finished[0][0] < before:
            task = self._finished.popleft()[1]
            if self._tasks.get(task.id) is task:  # not forgotten since (nor its id submitted again)
                ids.append(task.id)
        return ids

    def _drop(self, ids: list[str]) -> dict[str, TaskState]:
        dropped = {}
        for task_id in ids:
            task = self._tasks.get(task_id)
            if task is not None and task.state in RESULT_STATES:
                del self._tasks[task_id]
                dropped[task_id] = task.state
        return dropped

    def _bury(self, ids: list[str], reason: str, now: float) -> int:
        new = 0
        for task_id in ids:
            new += task_id not in self._tombs
            self._tombs[task_id] = (reason, now)
            self._tomb_order.append((now, task_id))
        return new

    def _forget_tombstones(self, before: float) -> None:
        while self._tomb_order and self._tomb_order[0][0] < before:
            at, task_id = self._tomb_order.popleft()
            tomb = self._tombs.get(task_id)
            if tomb is not None and tomb[1] == at:
                del self._tombs[task_id]
                self._counts[TaskState.EXPIRED] -= 1
