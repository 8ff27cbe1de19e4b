"""The master's housekeeping, a round every REAP_EVERY seconds under the master's lock.

Expired leases go back to pending (or fail, lost too often), silent workers are marked lost, idle clients'
outboxes and subscriptions are dropped, retries whose backoff is over become pending, expired results are
forgotten, and tasks sent to a worker that is not connected fail. A store that cannot write skips its part
of the round; the next round tries again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .config import Settings
from .errors import StoreUnavailable
from .notify import Notifier
from .outbox import Outboxes
from .registry import WorkerRegistry
from .store import TaskStore
from .task import Task

log = logging.getLogger(__name__)

REAP_EVERY = 0.25
"""Seconds between two rounds of the reaper."""


class Reaper:
    """One round of the master's housekeeping at a time (the caller holds the master's lock)."""

    def __init__(
        self,
        settings: Settings,
        store: TaskStore,
        workers: WorkerRegistry,
        outboxes: Outboxes,
        notifier: Notifier,
        work: threading.Condition,
        completed: Callable[[list[Task]], None],
        started: float,
    ) -> None:
        self._settings, self._store, self._workers = settings, store, workers
        self._outboxes, self._notifier, self._work = outboxes, notifier, work
        self._completed = completed  # hands finished tasks to their clients, waiters and subscribers
        self._started = started

    def round(self, now: float) -> None:
        """Take back expired leases, mark silent workers lost, drop idle clients, and the store's part."""
        self._workers.reap(now, self._settings.lease_timeout)
        for client_id in self._outboxes.forget_idle(now):  # the client is gone: its results and callbacks too
            self._notifier.unsubscribe_owner(client_id)
        try:
            self._tasks(now)
        except StoreUnavailable as exc:  # the store logged it; the next round tries again
            log.debug("reaper: %s", exc)

    def _tasks(self, now: float) -> None:
        requeued, failed = self._store.expire(now)
        self._completed(failed)
        if requeued:
            log.warning("%d leases expired; tasks back to pending: %s", len(requeued), [t.id for t in requeued[:5]])
        requeued += self._store.promote(now)
        if requeued:
            self._work.notify(len(requeued))
        self._store.expire_results(now, self._settings.result_ttl)
        if now - self._started > self._settings.lease_timeout:  # workers had time to connect since the start
            for target in self._store.targeted_waiting():
                if not self._workers.is_live(target):
                    message = f"worker {target} is not connected: the tasks sent to it cannot run"
                    self._completed(self._store.fail_targeted(target, now, message))
