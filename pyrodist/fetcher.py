"""A worker's fetcher: long-polls the master for tasks while the worker has room for them.

It asks for enough to keep every slot busy plus the prefetch (`WorkerState.wanted`), only once the tasks
held are down to the low-water mark; a lost master, or one whose task store cannot be used, is waited
for with capped backoff. On a stop it gives unstarted tasks back at once, so they run elsewhere.
"""

from __future__ import annotations

import logging
import time

from .connection import Connection, wait_for_master
from .errors import ConnectionFailed, StoreUnavailable
from .retry import retry_delays
from .wire import Lease
from .workstate import WorkerState

log = logging.getLogger(__name__)


class Fetcher:
    """The fetch loop of one worker (run in the worker's main thread)."""

    def __init__(self, worker_id: str, state: WorkerState, conn: Connection, burst: bool) -> None:
        self._worker_id = worker_id
        self._state = state
        self._conn = conn
        self._burst = burst

    def run(self) -> bool:
        """Fetch until stopped, max_tasks reached, or (burst) the queue is empty; False if the master was lost."""
        state = self._state
        store_waits = None
        while not state.stopping.is_set():
            with state.tasks:
                while not state.stopping.is_set() and not state.wants_tasks():
                    state.room.wait(0.5)
                want, wait = state.next_fetch()
            if state.stopping.is_set() or want <= 0:  # stopped, or max_tasks reached: finish and exit
                break
            try:
                tasks = self._conn.fetch(self._worker_id, want, wait)
            except ConnectionFailed as exc:
                log.warning("worker %s lost the master: %s; reconnecting", self._worker_id, exc)
                stop = state.abort if state.stopping.is_set() else state.stopping
                if not wait_for_master(self._conn, stop, f"worker {self._worker_id}"):
                    return False
                continue
            except StoreUnavailable as exc:  # the master cannot lease now; it will again
                if store_waits is None:
                    log.warning("worker %s: %s; fetching again with backoff", self._worker_id, exc)
                    store_waits = retry_delays(0.1, 5.0)
                state.stopping.wait(next(store_waits))
                continue
            if store_waits is not None:
                log.info("worker %s: the master leases tasks again", self._worker_id)
                store_waits = None
            idle = state.add(tasks, want)
            if self._burst and not tasks and idle:
                log.info("worker %s: queue empty, leaving (burst mode)", self._worker_id)
                break
            if tasks:
                time.sleep(0)  # let a slot take the GIL and start them before this thread asks for more
        return True

    def give_back(self, leases: list[Lease], why: str) -> None:
        """Give tasks back to the master (they keep their place in the queue); if it is away, their leases expire."""
        if not leases:
            return
        try:
            self._conn.release(self._worker_id, leases)
            log.info("worker %s gave back %d %s tasks", self._worker_id, len(leases), why)
        except (ConnectionFailed, StoreUnavailable) as exc:
            log.warning(
                "worker %s could not give back %d tasks (their leases will expire): %s",
                self._worker_id, len(leases), exc,
            )  # fmt: skip
