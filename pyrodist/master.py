"""The `Master`: one Pyro4 object that queues tasks, leases them to workers and keeps results.

::

    client ──submit/submit_encoded──▶ Master ──▶ TaskStore (pending, by priority, FIFO)
    worker ──fetch(worker, n, wait)──▶   │  long-poll: wait on `_work` until a task is pending
                                         │  lease: running, token, deadline (heartbeats renew it)
    worker ──report(worker, results)─▶   │  first valid token wins; stale reports are ignored
                                         ├─▶ outbox of the submitting client ──▶ collect(client) long-poll
                                         ├─▶ result(task_id, timeout) waiters
                                         └─▶ Notifier ──▶ callback proxies (own threads, never blocking report)
    reaper thread: expired leases back to pending, silent workers marked lost.

The master never decodes arguments or results on the hot path: they stay serpent text (`payload`)
from the client to the worker and back. Only the plain-Pyro4 methods (`submit`, `submit_many`,
`result`, plain callbacks) encode or decode, so a Python shell with nothing but Pyro4 can use it.
Remote methods raise builtin exceptions only (ValueError, TypeError), so any Pyro4 client can read them.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import protocol, remote
from .config import Settings
from .dashboard import Dashboard
from .errors import ConfigError, PyrodistError
from .memstore import MemoryStore
from .notify import Notifier
from .protocol import FINISHED_STATES, MAX_BATCH, MAX_WAIT, TaskState, check_batch, check_ids, check_name, check_number
from .sqlstore import SqliteStore
from .store import Task, TaskStore

log = logging.getLogger(__name__)
T = TypeVar("T")

OUTBOX_IDLE = 600.0
"""Seconds after which a client that stopped collecting loses its undelivered outbox."""
LOST_WORKER_MEMORY = 3600.0
"""Seconds a lost worker stays listed in stats."""
NO_OPTIONS: dict[str, Any] = {}
"""Shared by every task without options (a dict each would cost 64 bytes a task); never mutated."""
RECENT_FAILURES = 50
"""Failed task records kept for the dashboard."""
MAX_SUBSCRIPTIONS = 1000
MAX_SUBSCRIPTIONS_PER_CLIENT = 16


@dataclass
class WorkerInfo:
    """What the master knows of one worker."""

    id: str
    host: str = "?"
    pid: int = 0
    concurrency: int = 0
    running: int = 0
    prefetched: int = 0
    done: int = 0
    failed: int = 0
    last_seen: float = 0.0
    state: str = "live"

    def as_dict(self, now: float) -> dict[str, Any]:
        """The worker's row in stats."""
        row = dict(vars(self))
        row["last_seen"] = round(now - self.last_seen, 3)
        return row


class RateMeter:
    """Events per second over the last minute, from 60 one-second buckets (O(1) per event)."""

    def __init__(self, window: int = 60) -> None:
        self._window = window
        self._counts = [0] * window
        self._seconds = [0] * window

    def add(self, count: int, now: float) -> None:
        """Count events that happened now."""
        second = int(now)
        slot = second % self._window
        if self._seconds[slot] != second:
            self._seconds[slot], self._counts[slot] = second, 0
        self._counts[slot] += count

    def rate(self, now: float, since: float) -> float:
        """Events per second over the last window (or since `since`, when that is shorter)."""
        second = int(now)
        total = sum(c for c, s in zip(self._counts, self._seconds, strict=True) if second - s < self._window)
        return total / max(1.0, min(float(self._window), now - since))


@dataclass
class Outbox:
    """Finished records waiting for the client that submitted them."""

    ready: threading.Condition
    records: collections.deque[dict[str, Any]] = field(default_factory=collections.deque)
    last_seen: float = 0.0


def _plain(func: Callable[..., T], *args: Any) -> T:
    """Call func, turning pyrodist's ValueError subclasses into plain ValueErrors for the wire."""
    try:
        return func(*args)
    except PyrodistError as exc:
        raise ValueError(str(exc)) from None


REMOTE_METHODS = (
    "submit", "submit_many", "submit_encoded", "fetch", "report", "heartbeat", "release", "result", "collect",
    "lookup", "cancel", "forget", "subscribe", "unsubscribe", "stats", "limits", "ping",
)  # fmt: skip
"""What remote callers may call; start, close and reap are for the process that runs the master."""


class Master:
    """The master's remote API (see the module docstring for the flow)."""

    def __init__(self, settings: Settings, store: TaskStore | None = None, clock: Callable[[], float] = time.time):
        self._settings = settings
        self._store = store if store is not None else MemoryStore()
        self._clock = clock
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._finished = threading.Condition(self._lock)
        self._outboxes: dict[str, Outbox] = {}
        self._workers: dict[str, WorkerInfo] = {}
        self._notifier = Notifier()
        self._epoch = secrets.token_hex(3)
        self._ids = itertools.count(1)
        self._funcs: dict[str, str] = {}  # function references as given -> checked and normalized
        self._totals = {"submitted": 0, "done": 0, "failed": 0, "cancelled": 0}
        self._started = clock()
        self._finish_rate = RateMeter()
        self._failures: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_FAILURES)
        self._kill: dict[str, set[str]] = {}  # worker -> cancelled tasks it still runs (told at its next call)
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap_loop, name="master-reaper", daemon=True)

    # ---- submitting

    def submit(self, func: Any, args: Any = None, kwargs: Any = None, options: Any = None) -> str:
        """Queue one task: func is 'package.module:name'; returns its id."""
        return self.submit_many([{"func": func, "args": args, "kwargs": kwargs, "options": options}])[0]

    def submit_many(self, tasks: Any) -> list[str]:
        """Queue tasks given as dicts {"func", "args", "kwargs", "options"}; returns their ids."""
        limit = self._settings.max_payload
        specs = [_plain(protocol.parse_task_spec, i, s, limit) for i, s in enumerate(check_batch(tasks, "tasks"))]
        new = [self._new_task(f"m{self._epoch}.{next(self._ids)}", *spec, None) for spec in specs]
        self._queue(new)
        return [t.id for t in new]

    def submit_encoded(self, client_id: Any, tasks: Any) -> int:
        """Queue tasks given as [task_id, func, payload, options] with pre-encoded payloads (the client's path)."""
        check_name(client_id, "client_id")
        limit = self._settings.max_payload
        items = enumerate(check_batch(tasks, "tasks"))
        new = [self._new_task(*protocol.parse_encoded_task(i, t, limit, client_id), client_id) for i, t in items]
        self._queue(new, client_id)
        return len(new)

    def _new_task(self, task_id: str, func: Any, payload: str, options: Any, owner: str | None) -> Task:
        ref = self._funcs.get(func) if isinstance(func, str) else None
        if ref is None:
            if not isinstance(func, str):
                raise TypeError(f"func must be a 'package.module:name' string, not {type(func).__name__}")
            ref = _plain(protocol.function_ref, func)
            if len(self._funcs) >= 10_000:
                self._funcs.clear()
            self._funcs[func] = ref
        return Task(task_id, ref, payload, protocol.check_options(options) if options else NO_OPTIONS, owner)

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
            self._totals["submitted"] += self._store.add(tasks, self._clock())
            if owner is not None:
                self._outbox(owner)
            if any(task.target for task in tasks):
                self._work.notify_all()  # only the worker each was sent to may take it
            else:
                self._work.notify(len(tasks))

    # ---- workers

    def fetch(self, worker: Any, max_tasks: Any = 1, wait: Any = 0.0) -> list[dict[str, Any]]:
        """Lease up to max_tasks tasks to worker, waiting up to wait seconds for one to be pending."""
        check_name(worker, "worker")
        count = int(check_number(max_tasks, "max_tasks", 1, MAX_BATCH))
        deadline = time.monotonic() + check_number(wait, "wait", 0, MAX_WAIT)
        with self._lock:
            self._seen(worker)
            while not self._store.has_work_for(worker):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    return []
                self._work.wait(remaining)
            leased = self._store.lease(worker, count, self._clock(), self._settings.lease_timeout)
            if self._store.has_pending():
                self._work.notify()  # more work is left for the next waiting worker
        return [
            {"id": t.id, "func": t.func, "payload": t.payload, "token": t.token, "options": t.options} for t in leased
        ]

    def report(self, worker: Any, results: Any) -> dict[str, Any]:
        """Record a worker's results; the first report with a valid lease token wins, others are ignored."""
        check_name(worker, "worker")
        outcomes = [
            _plain(protocol.parse_outcome, i, r, self._settings.max_payload)
            for i, r in enumerate(check_batch(results, "results"))
        ]
        with self._lock:
            info = self._seen(worker)
            accepted, ignored = self._store.finish(worker, outcomes, self._clock())
            finished = []
            for task in accepted:
                if task.state is TaskState.DONE:
                    info.done += 1
                elif task.state is TaskState.FAILED:
                    info.failed += 1
                if task.state in FINISHED_STATES:
                    finished.append(task)
                elif task.state is TaskState.PENDING:  # failed, retried at once
                    self._work.notify()
            self._completed(finished)
            cancel = self._cancelled_on(worker)
        if ignored:
            log.info("worker %s: ignored %d stale or unknown results: %s", worker, len(ignored), ignored[:5])
        return {"accepted": len(accepted), "ignored": ignored, "cancel": cancel}

    def heartbeat(self, worker: Any, info: Any = None) -> dict[str, Any]:
        """A worker is alive: update its details and renew the leases of the tasks it runs."""
        check_name(worker, "worker")
        info = info if isinstance(info, dict) else {}
        reply: dict[str, Any] = {"lease_timeout": self._settings.lease_timeout}
        with self._lock:
            if info.get("state") == "stopped":
                self._workers.pop(worker, None)
                self._kill.pop(worker, None)
                return reply
            row = self._seen(worker)
            for key in ("host", "pid", "concurrency"):
                if isinstance(info.get(key), type(getattr(row, key))):
                    setattr(row, key, info[key])
            running = info.get("running")
            prefetched = info.get("prefetched", [])
            if isinstance(running, list) and isinstance(prefetched, list):
                row.running, row.prefetched = len(running), len(prefetched)
                self._store.renew(
                    worker,
                    [task_id for task_id in running if isinstance(task_id, str)],
                    [task_id for task_id in prefetched if isinstance(task_id, str)],
                    self._clock(),
                    self._settings.lease_timeout,
                )
            if info.get("state") == "stopping":
                row.state = "stopping"
            reply["cancel"] = self._cancelled_on(worker)
        return reply

    def _cancelled_on(self, worker: str) -> list[str]:
        """Cancelled tasks this worker should stop, handed over once (lock held)."""
        return sorted(self._kill.pop(worker, ()))

    def release(self, worker: Any, task_ids: Any) -> int:
        """Give back tasks worker fetched but will not run; they keep their place in the queue."""
        check_name(worker, "worker")
        check_ids(task_ids, "task_ids")
        with self._lock:
            released = self._store.release(worker, task_ids)
            self._seen(worker)
            self._work.notify(len(released))
        return len(released)

    def _seen(self, worker: str) -> WorkerInfo:
        row = self._workers.get(worker)
        if row is None or row.state == "lost":
            row = self._workers[worker] = WorkerInfo(worker)
            log.info("worker %s joined", worker)
        row.last_seen = self._clock()
        return row

    # ---- results

    def result(self, task_id: Any, timeout: Any = 0.0) -> dict[str, Any]:
        """The task's record with its value decoded, waiting up to timeout seconds for it to finish."""
        protocol.check_task_id(task_id)
        deadline = time.monotonic() + check_number(timeout, "timeout", 0, 1e9)
        with self._lock:
            task = self._known(task_id)
            while task.state not in FINISHED_STATES:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._finished.wait(min(remaining, 60))
                task = self._known(task_id)  # a durable store hands out copies: read it again
            record = self._record(task)
        return self._decoded(record)

    def collect(self, client_id: Any, timeout: Any = 0.0, max_items: Any = 10_000) -> list[dict[str, Any]]:
        """Finished records of this client's tasks, waiting up to timeout for the first (the client's path)."""
        check_name(client_id, "client_id")
        deadline = time.monotonic() + check_number(timeout, "timeout", 0, MAX_WAIT)
        limit = int(check_number(max_items, "max_items", 1, 1_000_000))
        with self._lock:
            box = self._outbox(client_id)
            while not box.records and not self._stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                box.ready.wait(remaining)
            box.last_seen = self._clock()
            return [box.records.popleft() for _ in range(min(limit, len(box.records)))]

    def lookup(self, task_ids: Any) -> list[dict[str, Any] | None]:
        """Encoded records of these tasks, None for ids this master does not know."""
        check_ids(task_ids, "task_ids")
        with self._lock:
            records = [self._record(t) if (t := self._store.get(i)) is not None else None for i in task_ids]
        for record in records:
            if record is not None:
                del record["owner"]  # a client's id lets its holder collect its results: keep it private
        return records

    def cancel(self, task_id: Any) -> bool:
        """Cancel a task that has not finished (a running one is killed on its worker); False when it finished."""
        protocol.check_task_id(task_id)
        with self._lock:
            self._known(task_id)
            task = self._store.cancel(task_id, self._clock())
            if task is not None:
                if task.worker is not None and task.started is not None:
                    self._kill.setdefault(task.worker, set()).add(task.id)
                    log.info("task %s cancelled while running on worker %s", task.id, task.worker)
                self._completed([task])
        return task is not None

    def forget(self, task_ids: Any) -> int:
        """Drop the kept results of these finished tasks now; returns how many were forgotten."""
        check_ids(task_ids, "task_ids")
        with self._lock:
            return len(self._store.forget(task_ids, self._clock()))

    def subscribe(self, callback: Any, task_ids: Any = None, client_id: Any = None) -> str:
        """Call callback.task_done(record) once per finished task (all from now on, or those listed)."""
        if task_ids is not None:
            check_batch(task_ids, "task_ids", limit=1_000_000)
            for task_id in task_ids:
                protocol.check_task_id(task_id)
        if client_id is not None:
            check_name(client_id, "client_id")
        if self._notifier.count() >= MAX_SUBSCRIPTIONS:
            raise ValueError(f"too many subscriptions ({MAX_SUBSCRIPTIONS}); unsubscribe unused ones first")
        if client_id is not None and self._notifier.count(client_id) >= MAX_SUBSCRIPTIONS_PER_CLIENT:
            raise ValueError(f"client {client_id} has {MAX_SUBSCRIPTIONS_PER_CLIENT} subscriptions, the most allowed")
        with self._lock:  # cheap checks before calling the subscriber back
            for task_id in task_ids or ():
                self._known(task_id)
        sink = remote.CallbackSink(callback, self._settings, self._decoded)  # binds outside the lock
        with self._lock:
            done = []
            for task_id in task_ids or ():
                task = self._known(task_id)
                if task.state in FINISHED_STATES:
                    done.append(self._record(task))
            sub_id = self._notifier.subscribe(sink, task_ids, client_id)
            self._notifier.publish(done, only=sub_id)
        return sub_id

    def unsubscribe(self, subscription_id: Any) -> None:
        """Stop a subscription."""
        if not isinstance(subscription_id, str) or not self._notifier.unsubscribe(subscription_id):
            raise ValueError(f"unknown subscription {subscription_id!r}")

    def stats(self) -> dict[str, Any]:
        """Workers, tasks per state, totals and the master's own details."""
        now = self._clock()
        with self._lock:
            workers = [w.as_dict(now) for w in self._workers.values()]
            counts = self._store.counts()
            totals = dict(self._totals)
            rate = self._finish_rate.rate(now, self._started)
            clients = len(self._outboxes)
        return {
            "master": {"name": self._settings.master_name, "epoch": self._epoch, "pid": os.getpid(),
                       "uptime": round(now - self._started, 3), "durable": self._store.durable},
            "workers": [w for w in workers if w["state"] != "lost"],
            "lost_workers": [w for w in workers if w["state"] == "lost"],
            "counts": counts, **totals, "clients": clients, "subscriptions": self._notifier.count(),
            "throughput_1m": round(rate, 2),
        }  # fmt: skip

    def recent_failures(self, limit: int = RECENT_FAILURES) -> list[dict[str, Any]]:
        """The latest failed tasks, newest first (for the dashboard; not part of the remote API)."""
        with self._lock:
            return list(reversed(self._failures))[:limit]

    def limits(self) -> dict[str, Any]:
        """The limits this master enforces, so clients can check before sending."""
        return {
            "max_payload": self._settings.max_payload, "max_batch": MAX_BATCH,
            "max_pending": self._settings.max_pending, "max_subscriptions_per_client": MAX_SUBSCRIPTIONS_PER_CLIENT,
            "epoch": self._epoch,
        }  # fmt: skip

    def ping(self) -> str:
        """Answer 'pong' (used to tell a live master from a stale name server entry)."""
        return "pong"

    # ---- internals (called with the lock held where noted)

    def _known(self, task_id: str) -> Task:
        task = self._store.get(task_id)
        if task is None:
            why = ", or lost it when it restarted (it keeps tasks in memory: use --store)"
            why = "" if self._store.durable else why
            raise ValueError(
                f"unknown task id {task_id!r}: this master (epoch {self._epoch}) never had it{why}, or its "
                "result expired long ago"
            )
        return task

    def _record(self, task: Task) -> dict[str, Any]:
        record = task.record()
        record["owner"] = task.owner
        return record

    @staticmethod
    def _decoded(record: dict[str, Any]) -> dict[str, Any]:
        """The record for a plain caller: the value decoded (json callers get the serpent text under payload)."""
        record = dict(record)
        record.pop("owner", None)  # a client's id lets its holder collect its results: keep it private
        if remote.caller_uses_json():
            record["value"] = None  # json cannot carry bytes, tuples or sets: decode the payload yourself
            return record
        payload = record.pop("payload", None)
        try:
            record["value"] = protocol.decode_value(payload) if payload is not None else None
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
            record["value"] = None
            record["error"] = {
                "type": "ValueError",
                "message": f"the stored result cannot be decoded: {exc}",
                "traceback": "",
            }
        return record

    def _completed(self, tasks: list[Task]) -> None:
        """Hand finished tasks to their client's outbox, result() waiters and subscribers (lock held)."""
        if not tasks:
            return
        self._finish_rate.add(len(tasks), self._clock())
        boxes: dict[str, Outbox] = {}
        for task in tasks:
            self._totals[task.state.value] += 1
            if task.state is TaskState.FAILED:
                self._failures.append(
                    {
                        "id": task.id,
                        "func": task.func,
                        "worker": task.worker,
                        "finished": task.finished,
                        "error": task.error,
                    }
                )
            if task.owner is not None:  # compact: the client needs only these to settle its future
                box = boxes.get(task.owner)
                if box is None:
                    box = boxes[task.owner] = self._outbox(task.owner)
                box.records.append(
                    {"id": task.id, "state": task.state.value, "payload": task.result, "error": task.error}
                )
        for box in boxes.values():
            box.ready.notify()
        self._finished.notify_all()
        if self._notifier.count():
            self._notifier.publish([self._record(t) for t in tasks])

    def _outbox(self, client_id: str) -> Outbox:
        box = self._outboxes.get(client_id)
        if box is None:
            box = self._outboxes[client_id] = Outbox(threading.Condition(self._lock), last_seen=self._clock())
        return box

    def _reap_loop(self) -> None:
        while not self._stop.wait(0.25):
            try:
                self.reap()
            except Exception:  # the reaper must survive anything; the error is logged with its traceback
                log.exception("reaper failed")

    def reap(self) -> None:
        """Take back expired leases, mark silent workers lost, forget idle outboxes."""
        now = self._clock()
        with self._lock:
            requeued, failed = self._store.expire(now)
            self._store.expire_results(now, self._settings.result_ttl)
            if requeued:
                log.warning("%d leases expired; tasks back to pending: %s", len(requeued), [t.id for t in requeued[:5]])
            requeued += self._store.promote(now)
            if requeued:
                self._work.notify(len(requeued))
            self._completed(failed)
            for row in list(self._workers.values()):
                silent = now - row.last_seen
                if row.state != "lost" and silent > self._settings.lease_timeout:
                    row.state = "lost"
                    log.warning("worker %s lost: silent for %.1f s", row.id, silent)
                elif row.state == "lost" and silent > LOST_WORKER_MEMORY:
                    del self._workers[row.id]
            for target in self._store.targeted_waiting():
                holder = self._workers.get(target)
                if (holder is None or holder.state == "lost") and now - self._started > self._settings.lease_timeout:
                    message = f"worker {target} is not connected: the tasks sent to it cannot run"
                    self._completed(self._store.fail_targeted(target, now, message))
            for worker in [w for w in self._kill if w not in self._workers or self._workers[w].state == "lost"]:
                del self._kill[worker]  # a lost worker's children died with it, or its leases are gone
            for client_id, box in list(self._outboxes.items()):
                if now - box.last_seen > OUTBOX_IDLE:  # the client is gone: forget its results and callbacks
                    del self._outboxes[client_id]
                    self._notifier.unsubscribe_owner(client_id)

    def locked(self) -> threading.Lock:
        """The lock that guards the store (for closing it)."""
        return self._lock

    def start(self) -> None:
        """Start the reaper thread."""
        self._reaper.start()

    def close(self) -> None:
        """Stop the reaper, wake every waiter and stop the notifier."""
        self._stop.set()
        with self._lock:
            self._work.notify_all()
            self._finished.notify_all()
            for box in self._outboxes.values():
                box.ready.notify_all()
        self._notifier.close()


remote.expose(Master, only=REMOTE_METHODS)


class RunningMaster:
    """A master served by a daemon and registered in the name server (for embedding and tests)."""

    def __init__(
        self,
        settings: Settings,
        host: str = remote.LOOPBACK,
        port: int = 0,
        dashboard: int | None = None,
        dashboard_host: str = remote.LOOPBACK,
        store: str | None = None,
        store_sync: str = "full",
        nathost: str | None = None,
        natport: int | None = None,
    ) -> None:
        remote.configure_pyro(settings, threadpool_size=settings.max_connections)
        existing = remote.master_answers(settings)
        if existing is not None:
            raise ConfigError(
                f"a master is already registered as {settings.master_name!r} and answers ({existing}); "
                "stop it first or start this one with another --name"
            )
        self.settings = settings
        self.store = SqliteStore(store, time.time(), settings.lease_timeout, store_sync) if store else MemoryStore()
        self.master = Master(settings, self.store)
        self.server = remote.Server(settings, host, port, nathost, natport)
        self.uri = self.server.register(self.master, settings.master_name)
        remote.register(settings, settings.master_name, self.uri)
        self.master.start()
        self.dashboard: Dashboard | None = None
        if dashboard is not None:
            try:
                self.dashboard = Dashboard(self.master.stats, self.master.recent_failures, dashboard_host, dashboard)
            except OSError as exc:
                self.close()
                raise ConfigError(
                    f"the dashboard cannot listen on {dashboard_host}:{dashboard}: {exc.strerror}"
                ) from None
            self.dashboard.start()
            log.info("dashboard at %s", self.dashboard.url)
        if store:
            log.info(
                "master %r serving at %s (store %s: state survives restarts)", settings.master_name, self.uri, store
            )
        else:
            log.info(
                "master %r serving at %s (in-memory store: state will not survive a restart; use --store PATH)",
                settings.master_name,
                self.uri,
            )

    def serve_forever(self, stop: threading.Event) -> None:
        """Serve until stop is set, then unregister and close."""
        try:
            self.server.serve_forever(stop)
        finally:
            self.close()

    def close(self) -> None:
        """Unregister from the name server and stop serving."""
        if self.dashboard is not None:
            self.dashboard.close()
        remote.unregister(self.settings, self.settings.master_name, self.uri)
        self.master.close()  # refuses new tasks from here on
        self.server.close()
        with self.master.locked():
            self.store.close()
