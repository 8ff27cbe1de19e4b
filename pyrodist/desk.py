"""The master's desk for clients: results and the waits for them, outboxes, records, cancels, subscriptions.

A `Master` owns one and hands it every finished task (`completed`); the desk shares the master's lock
and store. Everything here is a client's (or a plain caller's) view: whose task is whose is `access.Access`'s
rule, and a task another client owns reads as unknown.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from .access import ADMIN, Access
from .api import Sink
from .errors import StoreUnavailable
from .notify import Notifier
from .outbox import Outboxes
from .protocol import ACTIVE_STATES, FINISHED_STATES, QUEUED_STATES, client_id_of
from .registry import WorkerRegistry
from .store import TaskStore
from .tally import Totals
from .task import Task
from .wire import Finished, TaskRecord

log = logging.getLogger(__name__)


def unknown_task(task_id: str, epoch: str, durable: bool) -> ValueError:
    """The error for a task id the master does not have, with the likely reasons."""
    lost = "" if durable else ", or lost it when it restarted (it keeps tasks in memory: use --store)"
    return ValueError(
        f"unknown task id {task_id!r}: this master (epoch {epoch}) never had it{lost}, or its result expired long ago"
    )


class ClientDesk:
    """What clients ask of the master about their tasks (see the module docstring)."""

    def __init__(
        self,
        lock: threading.Lock,
        store: TaskStore,
        access: Access,
        workers: WorkerRegistry,
        totals: Totals,
        clock: Callable[[], float],
        epoch: str,
        max_payload: int,
        ending: Callable[[], bool],
    ) -> None:
        self._lock = lock
        self._store = store
        self._access = access
        self._workers = workers
        self._totals = totals
        self._clock = clock
        self._epoch = epoch
        self._max_payload = max_payload
        self._ending = ending
        self.finished = threading.Condition(lock)
        """Notified when tasks finish (result() waiters)."""
        self.outboxes = Outboxes(lock)
        self.notifier = Notifier()

    def result(self, task_id: str, timeout: float = 0.0, client_secret: str | None = None) -> TaskRecord:
        """The task's record, waiting up to timeout seconds for it to finish (a client's task: its secret)."""
        caller = self._access.caller(client_secret)
        with self._lock:  # a durable store hands out copies: each look reads the task again
            finished = lambda: self._ending() or self.known(task_id, caller).state in FINISHED_STATES  # noqa: E731
            self.finished.wait_for(finished, timeout)
            return self.known(task_id, caller).record()

    def collect(
        self, client_secret: str, timeout: float = 0.0, max_items: int = 10_000, sequence: int | None = None
    ) -> list[Finished]:
        """Finished records of this client's tasks, waiting up to timeout for the first (the client's path)."""
        owner = client_id_of(client_secret)
        with self._lock:
            received = self.outboxes.acknowledged(owner, sequence)
            if received and not self._store.durable:  # the client has them: free memory (a store keeps them on disk)
                try:
                    self._store.release_results(received)
                except StoreUnavailable as exc:  # they stay until --result-ttl
                    log.warning("could not release %d collected results: %s", len(received), exc)
            most_bytes = self._max_payload
            return self.outboxes.take(owner, timeout, max_items, most_bytes, self._clock(), sequence)

    def disconnect(self, client_secret: str) -> None:
        """The client is leaving: drop its undelivered records and subscriptions now, end its collect."""
        owner = client_id_of(client_secret)
        with self._lock:
            self.outboxes.drop(owner)
        self.notifier.unsubscribe_owner(owner)

    def lookup(self, task_ids: Sequence[str], client_secret: str | None = None) -> list[TaskRecord | None]:
        """Records of these tasks, None for ids this master does not know (or of another client's tasks)."""
        caller = self._access.caller(client_secret)
        with self._lock:
            return [t.record() if (t := self._access.visible(self._store.get(i), caller)) else None for i in task_ids]

    def cancel(self, task_id: str, client_secret: str | None = None, force: bool = True) -> bool:
        """Cancel a task no worker holds yet, or with force one that runs too (killed on its worker); False when
        it finished (or, without force, a worker holds it)."""
        caller = self._access.caller(client_secret)
        with self._lock:
            self.known(task_id, caller)
            task = self._store.cancel(task_id, self._clock(), ACTIVE_STATES if force else QUEUED_STATES)
            if task is not None:
                if task.worker is not None and task.started is not None:
                    self._workers.kill(task.worker, task.id)
                    log.info("task %s cancelled while running on worker %s", task.id, task.worker)
                self.completed([task])
        return task is not None

    def forget(self, task_ids: Sequence[str], client_secret: str | None = None) -> int:
        """Drop the kept results of these finished tasks now (a client's: with its secret); how many were forgotten."""
        caller = self._access.caller(client_secret)
        with self._lock:
            mine = [i for i in task_ids if self._access.visible(self._store.get(i), caller)]
            return len(self._store.forget(mine, self._clock()))

    def subscribe(self, sink: Sink, task_ids: Sequence[str] | None = None, client_secret: str | None = None) -> str:
        """Deliver finished records to sink: those listed (finished ones at once), this client's (with its
        secret), or all from now on (tasks of no client; of every client with the admin key)."""
        self.check_subscription(task_ids, client_secret)
        caller = self._access.caller(client_secret)
        owner = caller if task_ids is None and caller not in (None, ADMIN) else None
        with self._lock:
            tasks = [self.known(task_id, caller) for task_id in task_ids or ()]
            done = [t.record() for t in tasks if t.state in FINISHED_STATES]
            sub_id = self.notifier.subscribe(sink, task_ids, owner, everything=caller == ADMIN)
            self.notifier.publish([(record, None) for record in done], only=sub_id)
        return sub_id

    def check_subscription(self, task_ids: Sequence[str] | None, client_secret: str | None) -> None:
        """Refuse a subscription beyond the limits or naming unknown tasks (before its sink is built)."""
        self.notifier.check_room(None if client_secret is None else client_id_of(client_secret))
        caller = self._access.caller(client_secret)
        with self._lock:
            for task_id in task_ids or ():
                self.known(task_id, caller)

    def unsubscribe(self, subscription_id: str) -> None:
        """Stop a subscription."""
        if not self.notifier.unsubscribe(subscription_id):
            raise ValueError(f"unknown subscription {subscription_id!r}")

    def known(self, task_id: str, caller: str | None) -> Task:
        """The task, if this caller may see it; else the unknown-task ValueError (lock held)."""
        task = self._access.visible(self._store.get(task_id), caller)
        if task is None:
            raise unknown_task(task_id, self._epoch, self._store.durable)
        return task

    def completed(self, tasks: list[Task]) -> None:
        """Hand finished tasks to their client's outbox, result() waiters and subscribers (lock held)."""
        if not tasks:
            return
        now = self._clock()
        self._totals.finished(tasks, now)
        self.outboxes.put(tasks, now)
        self.finished.notify_all()
        if self.notifier.count():
            self.notifier.publish([(t.record(), t.owner) for t in tasks])
