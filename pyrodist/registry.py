"""What the master knows of its workers: who is live, what they run, what they must stop.

Not thread-safe: the master calls it under its own lock, with the time passed in.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from .wire import WorkerRow, WorkerStatus

log = logging.getLogger(__name__)

LOST_WORKER_MEMORY = 3600.0
"""Seconds a lost worker stays listed in stats."""


class WorkerRegistry:
    """Workers by id, with when each was last heard of, and the cancelled tasks each must kill."""

    def __init__(self) -> None:
        self._rows: dict[str, WorkerRow] = {}
        self._last_seen: dict[str, float] = {}
        self._kill: dict[str, set[str]] = {}  # worker -> cancelled tasks it still runs (told at its next call)

    def seen(self, worker: str, now: float) -> WorkerRow:
        """The worker called: its row, new if it was unknown or lost."""
        row = self._rows.get(worker)
        if row is None or row.state == "lost":
            row = self._rows[worker] = WorkerRow(worker)
            log.info("worker %s joined", worker)
        self._last_seen[worker] = now
        return row

    def update(self, worker: str, status: WorkerStatus, now: float) -> None:
        """Take the details of a heartbeat; a worker saying 'stopped' leaves at once."""
        if status.state == "stopped":
            self._rows.pop(worker, None)
            self._last_seen.pop(worker, None)
            self._kill.pop(worker, None)
            return
        row = self.seen(worker, now)
        row.host = status.host if status.host is not None else row.host
        row.pid = status.pid if status.pid is not None else row.pid
        row.concurrency = status.concurrency if status.concurrency is not None else row.concurrency
        if status.running is not None and status.prefetched is not None:
            row.running, row.prefetched = len(status.running), len(status.prefetched)
        if status.state != row.state and row.state in ("live", "stopping"):  # a worker restarted with its id lives
            row.state = status.state

    def is_stopping(self, worker: str) -> bool:
        """Whether the worker said it is stopping (it fetches nothing more)."""
        row = self._rows.get(worker)
        return row is not None and row.state == "stopping"

    def is_live(self, worker: str) -> bool:
        """Whether the worker is known and not lost."""
        row = self._rows.get(worker)
        return row is not None and row.state != "lost"

    def kill(self, worker: str, task_id: str) -> None:
        """Tell worker, at its next call, to stop running this cancelled task."""
        self._kill.setdefault(worker, set()).add(task_id)

    def to_kill(self, worker: str) -> list[str]:
        """The cancelled tasks this worker should stop, handed over once."""
        return sorted(self._kill.pop(worker, ()))

    def reap(self, now: float, silent_after: float) -> list[str]:
        """Mark workers silent for longer than silent_after lost (forgetting them after an hour); the newly lost."""
        lost = []
        for worker, row in list(self._rows.items()):
            silent = now - self._last_seen[worker]
            if row.state != "lost" and silent > silent_after:
                row.state = "lost"
                lost.append(worker)
                log.warning("worker %s lost: silent for %.1f s", worker, silent)
            elif row.state == "lost" and silent > LOST_WORKER_MEMORY:
                del self._rows[worker], self._last_seen[worker]
        for worker in [w for w in self._kill if not self.is_live(w)]:
            del self._kill[worker]  # a lost worker's children died with it, or its leases are gone
        return lost

    def rows(self, now: float) -> Iterable[WorkerRow]:
        """Every worker's row, with last_seen as seconds ago."""
        for worker, row in self._rows.items():
            yield WorkerRow(**{**row.to_wire(), "last_seen": round(now - self._last_seen[worker], 3)})
