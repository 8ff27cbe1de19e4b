"""`MemoryStore`: the master's state in memory, fast, and gone when the master stops (see store.py for the rules).

A queued task that never ran is kept compact, as `(id, payload, header number)`, the header `(func,
options, owner, submitted)` shared by the tasks of a submit call: about 250 bytes per task with its id
and payload, where a `Task` object and its heap entry cost twice that. Such a tuple holds no container,
so Python's garbage collector stops tracking it: a full collection with a million tasks queued would
otherwise walk them all, now and then adding tens of microseconds to every task of the moment.

The queue itself is a FIFO per priority level (a deque of those same tuples) behind a small heap of
the levels, with a heap per level for tasks given back, which go before the level's fresh tasks: they
were queued earlier. A compact task becomes a `Task` when it is leased, or when a caller saves a
change to it (cancel).
"""

from __future__ import annotations

import collections
import heapq
import itertools
from typing import Any

from .protocol import FINISHED_STATES, TaskState
from .store import RESULT_STATES, TaskStore
from .task import Task, tombstone
from .values import Payload

Header = tuple[str, dict[str, Any], "str | None", float]
"""(func, options, owner, submitted), shared by the compact tasks of one submit call."""
Compact = tuple[str, "Payload | None", int]
"""(id, payload, header number): a task queued and never leased."""


class Level:
    """The pending tasks of one priority: those given back (by seq) first, then the fresh ones in order."""

    __slots__ = ("fresh", "returned")

    def __init__(self) -> None:
        self.returned: list[tuple[int, Task]] = []  # a heap; entries no longer pending are skipped
        self.fresh: collections.deque[Compact] = collections.deque()  # entries no longer compact are skipped


class MemoryStore(TaskStore):
    """The in-memory store: fast, and gone when the master stops."""

    def __init__(self) -> None:
        super().__init__()
        self._tasks: dict[str, Task | Compact] = {}
        self._levels: dict[int, Level] = {}
        self._level_heap: list[int] = []  # -priority of each level in _levels
        self._headers: dict[int, list[Any]] = {}  # number -> [header, compact tasks still using it]
        self._header_numbers = itertools.count()
        self._targeted: dict[str, list[tuple[int, Task]]] = {}  # per worker: heap of (seq, task)
        self._retrying: list[tuple[float, int, Task]] = []  # (due, seq, task); cancelled ones skipped
        self._finished: collections.deque[tuple[float, Task]] = collections.deque()  # in finishing order
        self._tombs: dict[str, tuple[str, float]] = {}  # id -> (reason, when)
        self._tomb_order: collections.deque[tuple[float, str]] = collections.deque()
        self.results_held = 0
        """Bytes of the finished tasks' values held (the master keeps it within max_held by spilling to disk)."""

    def _insert(self, tasks: list[Task]) -> list[Task]:
        new = []
        numbers: dict[tuple[str, int, str | None], int] = {}
        for task in tasks:
            if task.id in self._tasks:
                continue
            new.append(task)
            if task.target is not None:  # sent to one worker (broadcast): rare, kept whole
                self._tasks[task.id] = task
                self._enqueue(task)
                continue
            key = (task.func, id(task.options), task.owner)
            number = numbers.get(key)
            if number is None:
                number = numbers[key] = next(self._header_numbers)
                self._headers[number] = [(task.func, task.options, task.owner, task.submitted), 0]
            self._headers[number][1] += 1
            entry = self._tasks[task.id] = (task.id, task.payload, number)
            self._level(task.priority).fresh.append(entry)
        return new

    def _find(self, task_id: str) -> Task | None:
        task = self._tasks.get(task_id)
        if type(task) is tuple:
            return self._unpack(task)  # a copy: changes are kept by _save
        if task is None and (tomb := self._tombs.get(task_id)) is not None:
            return tombstone(task_id, *tomb)
        return task  # type: ignore[return-value]

    def _unpack(self, entry: Compact) -> Task:
        task_id, payload, number = entry
        func, options, owner, submitted = self._headers[number][0]
        task = Task(task_id, func, payload, options, owner)
        task.submitted = submitted
        task.seq = next(self._seq)  # the store's counter: seqs are unique, also among heaps mixing kinds of task
        return task

    def _unuse(self, number: int) -> None:
        """One compact task less uses this header; the last one lets it go."""
        usage = self._headers[number]
        usage[1] -= 1
        if not usage[1]:
            del self._headers[number]

    def _level(self, priority: int) -> Level:
        level = self._levels.get(priority)
        if level is None:
            level = self._levels[priority] = Level()
            heapq.heappush(self._level_heap, -priority)
        return level

    def _take(self, worker: str, max_tasks: int) -> list[Task]:
        taken: list[Task] = []  # entries no longer pending (cancelled or failed while queued) are skipped
        mine = self._targeted.get(worker)
        while mine and len(taken) < max_tasks:
            if (task := heapq.heappop(mine)[1]).state is TaskState.PENDING:
                taken.append(task)
        while self._level_heap and len(taken) < max_tasks:
            priority = -self._level_heap[0]
            nxt = self._next_in(self._levels[priority])
            if nxt is None:  # the level is empty
                heapq.heappop(self._level_heap)
                del self._levels[priority]
            else:
                taken.append(nxt)
        return taken

    def _next_in(self, level: Level) -> Task | None:
        """The next pending task of a level as a Task object (kept from now on), or None."""
        while level.returned:
            task = heapq.heappop(level.returned)[1]
            if task.state is TaskState.PENDING:
                return task
        while level.fresh:
            entry = level.fresh.popleft()
            if self._tasks.get(entry[0]) is entry:  # still compact: neither cancelled nor dropped since
                leased = self._tasks[entry[0]] = self._unpack(entry)
                self._unuse(entry[2])
                return leased
        return None

    def _take_targeted(self, worker: str) -> list[Task]:
        return [task for _, task in self._targeted.pop(worker, []) if task.state is TaskState.PENDING]

    def _enqueue(self, task: Task) -> None:
        if task.target is None:
            heapq.heappush(self._level(task.priority).returned, (task.seq, task))
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
            entry = self._tasks.get(task.id)
            if type(entry) is tuple:  # a compact task changed (cancelled): keep the change
                self._tasks[task.id] = task
                self._unuse(entry[2])
            if task.state in FINISHED_STATES:
                self._finished.append((task.finished or 0.0, task))
                self.results_held += len(task.result or "")

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
            if isinstance(task, Task) and task.state in RESULT_STATES:
                del self._tasks[task_id]
                dropped[task_id] = task.state
                self.results_held -= len(task.result or "")
        return dropped

    def _release_values(self, tasks: list[Task]) -> None:
        for task in tasks:
            self.results_held -= len(task.result or "")
            task.result = None

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
