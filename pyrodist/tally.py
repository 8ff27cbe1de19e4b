"""What the master counted: tasks by outcome, the finish rate over the last minute, recent failures."""

from __future__ import annotations

import collections
from collections.abc import Iterable

from .protocol import STATE_TEXT, TaskState
from .task import Task
from .wire import MasterInfo, Stats, TaskRecord, WorkerRow

RECENT_FAILURES = 50
"""Failed task records kept for the dashboard."""


class Totals:
    """What the master counted: tasks by outcome, the finish rate over the last minute, recent failures."""

    def __init__(self, started: float, window: int = 60) -> None:
        self.started = started
        self.counts = {"submitted": 0, "done": 0, "failed": 0, "cancelled": 0}
        self.failures: collections.deque[TaskRecord] = collections.deque(maxlen=RECENT_FAILURES)
        self._window = window
        self._per_second = [0] * window
        self._seconds = [0] * window

    def finished(self, tasks: list[Task], now: float) -> None:
        """Count finished tasks (O(1) each): by state, in the rate's one-second bucket, failures kept."""
        second = int(now)
        slot = second % self._window
        if self._seconds[slot] != second:
            self._seconds[slot], self._per_second[slot] = second, 0
        self._per_second[slot] += len(tasks)
        for task in tasks:
            state = STATE_TEXT[task.state]
            if state in self.counts:
                self.counts[state] += 1
            if task.state is TaskState.FAILED:
                self.failures.append(task.record())

    def rate(self, now: float) -> float:
        """Tasks finished per second over the last window (or since the start, when that is shorter)."""
        second = int(now)
        pairs = zip(self._per_second, self._seconds, strict=True)
        total = sum(count for count, at in pairs if second - at < self._window)
        return total / max(1.0, min(float(self._window), now - self.started))

    def stats(
        self, master: MasterInfo, workers: Iterable[WorkerRow], tasks: dict[str, int], clients: int,
        subscriptions: int, now: float,
    ) -> Stats:  # fmt: skip
        """The master's stats from what it counted and the parts it holds; lost workers listed apart."""
        rows = list(workers)
        return Stats(
            master,
            [w for w in rows if w.state != "lost"], [w for w in rows if w.state == "lost"], tasks, **self.counts,
            clients=clients, subscriptions=subscriptions, throughput_1m=round(self.rate(now), 2),
        )  # fmt: skip
