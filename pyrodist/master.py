"""The `Master`: queues tasks, leases them to workers, keeps results; implements `MasterAPI`.

::

    client ──submit_encoded──▶ Master ──▶ TaskStore (pending, by priority, FIFO)
    worker ──fetch(worker, n, wait)──▶ │  long-poll: wait on `_work` until a task is pending
                                       │  lease: running, token, deadline (heartbeats renew it)
    worker ──report(worker, outcomes)─▶│  first valid token wins; stale reports are ignored
                                       ├─▶ Outboxes: the submitting client's ──▶ collect(client) long-poll
                                       ├─▶ result(task_id, timeout) waiters
                                       └─▶ Notifier ──▶ subscribers' sinks (own threads, never blocking report)
    reaper thread: expired leases back to pending, silent workers lost (WorkerRegistry), idle outboxes dropped.

The master never decodes arguments or results: they stay encoded (`payload`) from the client to the
worker and back. It takes typed records (`wire.py`), checked on arrival by `service.MasterService`,
and knows nothing of Pyro4. One lock guards the store, the registry and the outboxes. What clients read
(results, outboxes, records, cancels, subscriptions) is its `desk.ClientDesk`'s.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .access import Access
from .api import MasterAPI, Sink
from .blobs import BlobStore, check_submitted, kept_results
from .blobs import task_of as blob_task
from .config import Settings
from .desk import ClientDesk
from .errors import StoreUnavailable
from .memstore import MemoryStore
from .notify import MAX_SUBSCRIPTIONS_PER_CLIENT
from .protocol import FINISHED_STATES, MAX_BATCH, TaskState
from .reaper import REAP_EVERY, Reaper
from .registry import WorkerRegistry
from .retry import Periodic
from .store import TaskStore
from .tally import Totals
from .task import Task, fitting, new_task, plain_task_ids
from .values import encode_call
from .wire import (
    FetchedTask,
    Finished,
    HeartbeatReply,
    Lease,
    Limits,
    MasterInfo,
    Outcome,
    ReportReply,
    Stats,
    SubmittedTask,
    TaskRecord,
    TaskSpec,
    WorkerStatus,
)

log = logging.getLogger(__name__)


class Master(MasterAPI):
    """The master's state and rules behind its remote API (see the module docstring for the flow)."""

    def __init__(
        self,
        settings: Settings,
        store: TaskStore | None = None,
        clock: Callable[[], float] = time.time,
        blobs: BlobStore | None = None,
    ) -> None:
        self._settings = settings
        self._store = store if store is not None else MemoryStore()
        self.blobs = blobs if blobs is not None else BlobStore(None, settings.max_value, clock)
        self._clock = clock
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._workers = WorkerRegistry()
        self._access = Access(settings.admin_key)
        self.epoch = secrets.token_hex(3)
        self._ids = itertools.count(1)
        self._totals = Totals(clock())
        self._stop = threading.Event()
        self._ending = self._stop.is_set
        self._desk = ClientDesk(self._lock, self._store, self._access, self._workers, self._totals, clock, self.epoch,
                                settings.max_payload, self._ending)  # fmt: skip
        self._outboxes, self._notifier, self._completed = self._desk.outboxes, self._desk.notifier, self._desk.completed
        self._housekeeping = Reaper(settings, self._store, self._workers, self._outboxes, self._notifier, self._work,
                                    self._completed, self._totals.started)  # fmt: skip
        self._reaper = Periodic(REAP_EVERY, self.reap, "master-reaper")

    # ---- submitting

    def submit(self, task: TaskSpec) -> str:
        """Queue one plain task; returns its id."""
        return self.submit_many([task])[0]

    def submit_many(self, tasks: Sequence[TaskSpec]) -> list[str]:
        """Queue plain tasks, encoding their values here; returns their ids."""
        ids, limit = plain_task_ids(self.epoch, self._ids, len(tasks)), self._settings.max_payload
        encoded = [encode_call(t.args, t.kwargs, limit) for t in tasks]
        self._queue([new_task(i, t.func, p, t.options) for i, t, p in zip(ids, tasks, encoded, strict=True)])
        return ids

    def submit_encoded(self, client_secret: str, tasks: Sequence[SubmittedTask]) -> int:
        """Queue a client's tasks with pre-encoded payloads (the client's path); their ids must be the client's."""
        owner = self._access.owner_of(client_secret, tasks)
        check_submitted(self.blobs, list(tasks))
        self._queue([new_task(t.task_id, t.func, t.payload, t.options, owner) for t in tasks], owner)
        return len(tasks)

    def _queue(self, tasks: list[Task], owner: str | None = None) -> None:
        with self._lock:
            if self._stop.is_set():
                raise ValueError("the master is stopping: nothing of this call was queued, try again when it is back")
            queued = self._store.pending_count()
            if queued + len(tasks) > self._settings.max_pending:
                raise ValueError(
                    f"queue full: {queued} tasks pending and the limit is {self._settings.max_pending} "
                    "(--max-pending); nothing of this call was queued, try again later"
                )
            self._totals.counts["submitted"] += self._store.add(tasks, self._clock())
            if owner is not None:
                self._outboxes.open(owner, self._clock())
            if any(task.target for task in tasks):
                self._work.notify_all()  # only the worker each was sent to may take it
            else:
                self._work.notify(len(tasks))

    # ---- workers

    def fetch(self, worker: str, max_tasks: int = 1, wait: float = 0.0) -> list[FetchedTask]:
        """Lease up to max_tasks tasks to worker, waiting up to wait seconds for one to be pending."""
        with self._lock:
            self._workers.seen(worker, self._clock())
            stopping = self._workers.is_stopping
            self._work.wait_for(lambda: self._ending() or stopping(worker) or self._store.has_work_for(worker), wait)
            if self._ending() or stopping(worker):  # a stopping worker's long-poll ends at once, empty
                return []
            leased = self._store.lease(worker, max_tasks, self._clock(), self._settings.lease_timeout)
            keep = fitting(leased, self._settings.max_payload)
            if keep < len(leased):  # the others go back at once, keeping their place
                self._store.release(worker, [(t.id, t.token) for t in leased[keep:]])
                leased = leased[:keep]
            if self._store.broken:  # tasks whose stored arguments were damaged: failed by lease(), for their clients
                broken, self._store.broken = self._store.broken, []
                self._completed(broken)
            if self._store.has_pending():
                self._work.notify()  # more work is left for the next waiting worker
        return [FetchedTask(t.id, t.func, t.payload or "", t.token, t.options) for t in leased]

    def report(self, worker: str, outcomes: Sequence[Outcome]) -> ReportReply:
        """Record a worker's results; the first report with a valid lease token wins, others are ignored."""
        # Values held: in a memory store (outboxes refer to the same ones), else in the outboxes. Beyond
        # max_held, results wait on disk.
        room = self._settings.max_held - max(self._store.results_held, self._outboxes.held_bytes)
        outcomes = kept_results(self.blobs, outcomes, room)
        with self._lock:
            row = self._workers.seen(worker, self._clock())
            accepted, ignored = self._store.finish(worker, outcomes, self._clock())
            finished = []
            for task in accepted:
                row.done += task.state is TaskState.DONE
                row.failed += task.state is TaskState.FAILED
                if task.state in FINISHED_STATES:
                    finished.append(task)
                elif task.state is TaskState.PENDING:  # failed, retried at once
                    self._work.notify()
            self._completed(finished)
            cancel = self._workers.to_kill(worker)
        if ignored:
            log.info("worker %s: ignored %d stale or unknown results: %s", worker, len(ignored), ignored[:5])
        return ReportReply(len(accepted), ignored, cancel)

    def blob_put(self, task_id: str, kind: str, blob_id: str | None, offset: int, data: bytes, size: int) -> str:
        """Write a chunk of a value too big for one message (`blobs.BlobStore.put`); the blob's id."""
        return self.blobs.put(task_id, kind, blob_id, offset, data, size)

    def blob_get(self, blob_id: str, offset: int, size: int) -> bytes:
        """Read a chunk of a whole blob."""
        return self.blobs.get(blob_id, offset, size)

    def heartbeat(self, worker: str, status: WorkerStatus) -> HeartbeatReply:
        """A worker is alive: update its details and renew the leases of the tasks it holds."""
        with self._lock:
            now = self._clock()
            self._workers.update(worker, status, now)
            if status.state == "stopping":
                self._work.notify_all()  # its long-poll ends now
            if status.state == "stopped":
                return HeartbeatReply(self._settings.lease_timeout)
            if status.running is not None and status.prefetched is not None:
                self._store.renew(worker, status.running, status.prefetched, now, self._settings.lease_timeout)
            return HeartbeatReply(self._settings.lease_timeout, self._workers.to_kill(worker))

    def release(self, worker: str, leases: Sequence[Lease]) -> int:
        """Give back tasks worker fetched (id and lease token) but will not run; they keep their place in the queue."""
        with self._lock:
            released = self._store.release(worker, leases)
            self._workers.seen(worker, self._clock())
            self._work.notify(len(released))
        return len(released)

    # ---- results (the client desk's)

    def result(self, task_id: str, timeout: float = 0.0, client_secret: str | None = None) -> TaskRecord:
        """The task's record, waiting up to timeout seconds for it to finish (a client's task: its secret)."""
        return self._desk.result(task_id, timeout, client_secret)

    def collect(
        self, client_secret: str, timeout: float = 0.0, max_items: int = 10_000, sequence: int | None = None
    ) -> list[Finished]:
        """Finished records of this client's tasks, waiting up to timeout for the first (the client's path)."""
        return self._desk.collect(client_secret, timeout, max_items, sequence)

    def disconnect(self, client_secret: str) -> None:
        """The client is leaving: drop its undelivered records and subscriptions now, end its collect."""
        self._desk.disconnect(client_secret)

    def lookup(self, task_ids: Sequence[str], client_secret: str | None = None) -> list[TaskRecord | None]:
        """Records of these tasks, None for ids this master does not know (or of another client's tasks)."""
        return self._desk.lookup(task_ids, client_secret)

    def cancel(self, task_id: str, client_secret: str | None = None, force: bool = True) -> bool:
        """Cancel a task no worker holds yet, or with force one that runs too; False when it could not be."""
        return self._desk.cancel(task_id, client_secret, force)

    def forget(self, task_ids: Sequence[str], client_secret: str | None = None) -> int:
        """Drop the kept results of these finished tasks now (a client's: with its secret); how many were forgotten."""
        return self._desk.forget(task_ids, client_secret)

    def subscribe(self, sink: Sink, task_ids: Sequence[str] | None = None, client_secret: str | None = None) -> str:
        """Deliver finished records to sink (those listed, a client's, or all); the subscription's id."""
        return self._desk.subscribe(sink, task_ids, client_secret)

    def check_subscription(self, task_ids: Sequence[str] | None, client_secret: str | None) -> None:
        """Refuse a subscription beyond the limits or naming unknown tasks (before its sink is built)."""
        self._desk.check_subscription(task_ids, client_secret)

    def unsubscribe(self, subscription_id: str) -> None:
        """Stop a subscription."""
        self._desk.unsubscribe(subscription_id)

    def stats(self) -> Stats:
        """Workers, tasks per state, totals and the master's own details."""
        now = self._clock()
        uptime = round(now - self._totals.started, 3)
        store = self._store
        master = MasterInfo(self._settings.master_name, self.epoch, os.getpid(), uptime, store.durable, store.fault)
        with self._lock:
            return self._totals.stats(master, self._workers.rows(now), self._store.counts(), len(self._outboxes),
                                      self._notifier.count(), now)  # fmt: skip

    def recent_failures(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest failed tasks, newest first (for the dashboard; not part of the remote API)."""
        with self._lock:
            return [record.to_wire() for record in reversed(self._totals.failures)][:limit]

    def limits(self) -> Limits:
        """The limits this master enforces, so clients can check before sending."""
        settings = self._settings
        return Limits(settings.max_payload, MAX_BATCH, settings.max_pending, MAX_SUBSCRIPTIONS_PER_CLIENT, self.epoch,
                      self._store.durable, settings.max_value)  # fmt: skip

    def ping(self) -> str:
        """Answer 'pong' (used to tell a live master from a stale name server entry)."""
        return "pong"

    # ---- running

    def reap(self) -> None:
        """One round of housekeeping (`reaper.Reaper`): the reaper thread's, or a test's with a moved clock."""
        now = self._clock()
        with self._lock:
            self._housekeeping.round(now)
        try:
            self.blobs.sweep(self._referenced)
        except StoreUnavailable as exc:  # the store logged it; the next round tries again
            log.debug("blob sweep: %s", exc)

    def _referenced(self, blob_ids: list[str]) -> set[str]:
        """Which of these blobs a task still refers to (its arguments or its result)."""
        with self._lock:
            tasks = [(blob_id, self._store.get(blob_task(blob_id)[0])) for blob_id in blob_ids]
        return {blob_id for blob_id, task in tasks if task is not None and blob_id in task.blobs()}

    def start(self) -> None:
        """Start the reaper thread."""
        self._reaper.start()

    def close(self) -> None:
        """Refuse new tasks, wake every waiter, stop the reaper and the notifier (joining their threads)."""
        self._stop.set()
        with self._lock:
            self._work.notify_all()
            self._desk.finished.notify_all()
            self._outboxes.close()
        self._reaper.stop()
        self._notifier.close()
        self.blobs.close()

    def close_store(self) -> None:
        """Close the store once nothing uses it (after close and after the server stopped)."""
        with self._lock:
            self._store.close()
