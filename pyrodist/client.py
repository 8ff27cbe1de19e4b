"""The client: futures, `map`, `gather`, callbacks, for scripts and interactive shells.

A `Client` is a connection to the master for its calls (`connection.Connection`, over Pyro4 unless
another is given), a `FutureTable` of its outstanding futures, a `Collector` thread with a connection of
its own that settles them, and, once `on_result` is used, a `CallbackChannel`.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from . import progressbar, protocol
from .callbacks import Callback, CallbackChannel
from .chunks import Args
from .collector import Collector, batches
from .config import Settings
from .connection import Connect, Connection, at_once
from .errors import MasterRejected, PyrodistError
from .futures import Future, FutureTable, Remote
from .mapper import Encoded, Held, Mapper, live_slots
from .protocol import MAX_BATCH, TaskState, admin_secret, client_id_of, in_messages, wire_estimate
from .remote_connection import PyroConnection
from .retry import retrying
from .transfer import upload
from .values import BigValue, encode_big_call
from .wire import SubmittedTask

log = logging.getLogger(__name__)

RECONNECT_WAIT = 60.0
"""Seconds a call waits for a lost master to come back (restarted, or its network restored) before failing."""

Record = dict[str, Any]
Calls = list[tuple[tuple[Any, ...], dict[str, Any]]]


class Client:
    """A connection to a pyrodist master: submit tasks, get futures."""

    def __init__(
        self,
        master: str | None = None,
        ns_host: str | None = None,
        ns_port: int | None = None,
        *,
        key: str | None = None,
        settings: Settings | None = None,
        connect: Connect = PyroConnection,
        secret: str | None = None,
    ) -> None:
        """secret: an earlier client's `secret`, to reach its tasks again (after a restart, from another
        process); by default a new one. Whoever holds it can read, cancel and collect those tasks (a result
        that client already collected is kept only with `options(keep=True)`)."""
        self.settings = settings or Settings.from_env(ns_host=ns_host, ns_port=ns_port, master_name=master, key=key)
        # The secret proves to the master which tasks are ours; with the operator's admin key in it, this
        # client sees every client's tasks too (the CLI and monitoring).
        own = secret or secrets.token_urlsafe(24)
        self._secret = admin_secret(self.settings.admin_key, own) if self.settings.admin_key else own
        self.id = client_id_of(self._secret)
        self._ids = itertools.count(1)
        self._conn = connect(self.settings)
        try:
            limits = self._conn.limits()  # fails now, clearly, if the master is not there
            collecting = connect(self.settings)  # the collector's own: a long-poll holds no lock of the others
        except BaseException:
            self._conn.close()
            raise
        self._conn.reconnect_for = RECONNECT_WAIT
        self._max_payload = limits.max_payload
        self._max_value = max(limits.max_value, limits.max_payload)  # an older master takes no big values
        self._settled = threading.Condition()  # shared by this client's futures (see futures.py)
        self._futures = FutureTable()
        self._asks = _Asks(self._conn, self._secret, self._futures)
        self.limits = (self._max_value, self._max_payload)
        self._mapper = Mapper(self)
        self._callbacks = CallbackChannel(self.id, self._secret, self._conn)
        self._collector = Collector(self.id, self._secret, collecting, self._futures, limits,
                                    self._callbacks.resubscribe, self._callbacks.recovered)  # fmt: skip
        self._closed = False

    @property
    def secret(self) -> str:
        """What proves this client's tasks are its own: give it to Client(secret=...) to reach them again."""
        return self._secret

    def __repr__(self) -> str:
        return f"<pyrodist.Client {self.id} master={self.settings.master_name!r} outstanding={len(self._futures)}>"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- submitting

    def submit(self, func: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> Future:
        """Run func(*args, **kwargs) on the cluster; returns its Future."""
        return self._submit(protocol.function_ref(func), [(args, kwargs)], {})[0]

    def map(
        self,
        func: Callable[..., Any] | str,
        *iterables: Iterable[Any],
        chunksize: int | None = None,
        progress: bool = False,
    ) -> list[Future]:
        """Run func over the zipped iterables; returns a future per call, in input order.

        chunksize calls travel and run as one task (`chunks.py`: a call's failure is its own; the calls of a
        task share its id, are cancelled together, and retried and timed together). By default the client
        packs tiny calls by itself once it knows their time and size (the first calls go a task each to learn
        them; `Mapper`): tasks of about CHUNK_SECONDS and CHUNK_BYTES, several per worker slot; a task per call
        for few, slow or big calls, no live worker, options that mean something per task, or a client whose
        `on_result` callbacks see each task's record.
        With progress=True a progress bar (rate, ETA) follows them on the terminal, from a background thread.
        """
        futures = self._mapper.map(protocol.function_ref(func), list(zip(*iterables, strict=False)), chunksize, {})
        if progress:
            label = func if isinstance(func, str) else getattr(func, "__name__", "map")
            threading.Thread(target=progressbar.progress, args=(futures,), kwargs={"label": label}, daemon=True).start()
        return futures

    def broadcast(self, func: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Run func(*args, **kwargs) once on every live worker; their results keyed by worker id."""
        return self._broadcast(func, args, kwargs, {})

    def _broadcast(
        self, func: Callable[..., Any] | str, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> dict[str, Any]:
        ref = protocol.function_ref(func)
        workers = [w.id for w in self._conn.stats().workers if w.state == "live"]
        if not workers:
            raise PyrodistError("no live workers to broadcast to")
        futures = {w: self._submit(ref, [(args, kwargs)], {**options, "worker": w})[0] for w in workers}
        return {worker: future.result() for worker, future in futures.items()}

    def options(self, **options: Any) -> TaskOptions:
        """Submit with per-task options, e.g. `client.options(priority=5, timeout=30).submit(fn, x)`."""
        return TaskOptions(self, protocol.check_options(options))

    def gather(self, futures: Iterable[concurrent.futures.Future[Any]], timeout: float | None = None) -> list[Any]:
        """The results of futures, in order; raises the first failure."""
        futures = list(futures)
        deadline = None if timeout is None else time.monotonic() + timeout
        results = []
        for future in futures:  # in order, not with wait(): no waiter to install on every future
            try:
                results.append(future.result(None if deadline is None else max(0.0, deadline - time.monotonic())))
            except TimeoutError:
                if future.done():
                    raise  # the task's own TimeoutError
                not_done = sum(not f.done() for f in futures)
                raise TimeoutError(f"{not_done} of {len(futures)} tasks not finished within {timeout} s") from None
        return results

    def _submit(self, ref: str, calls: Calls, options: dict[str, Any], wait_when_full: bool = False) -> list[Future]:
        """Send calls as tasks; with wait_when_full, wait (capped backoff) while the master's queue is full."""
        # Encode everything first: a bad value is an error here, before anything is sent.
        encoded = [encode_big_call(args, kwargs, self._max_value, self._max_payload) for args, kwargs in calls]
        return self._send_tasks(ref, encoded, options, wait_when_full)

    def new_future(self, remote: Remote | None = None) -> Future:
        """A future for a task of this client (with a new id), asking remote (the client's own by default)."""
        return Future(self._settled, f"{self.id}.{next(self._ids)}", remote or self._asks)

    def send(
        self, ref: str, encoded: Sequence[Encoded], options: dict[str, Any], futures: list[Future] | None = None
    ) -> list[Future]:
        """Send tasks (waiting while the master's queue is full); their futures (new ones unless given)."""
        return self._send_tasks(ref, encoded, options, True, futures)

    def live_slots(self) -> int:
        """How many task slots the live workers have together (0 when the master cannot say)."""
        return live_slots(self._conn.stats, self.id)

    def sees_each_task(self) -> bool:
        """Whether on_result callbacks see each task's record."""
        return self._callbacks.used

    def _send_tasks(
        self,
        ref: str,
        encoded: Sequence[Encoded],
        options: dict[str, Any],
        wait_when_full: bool,
        futures: list[Future] | None = None,
    ) -> list[Future]:
        """Send tasks of these encoded arguments (big ones uploaded first); their futures (new ones unless given)."""
        if futures is None:
            futures = [self.new_future() for _ in encoded]
        payloads = [
            upload(self._conn, f.task_id, "a", value) if isinstance(value, BigValue) else value
            for f, value in zip(futures, encoded, strict=True)
        ]  # arguments too big for a message go first, in chunks; the task refers to them
        tasks = [SubmittedTask(f.task_id, ref, payload, options) for f, payload in zip(futures, payloads, strict=True)]
        self._futures.add(futures)
        self._collector.use()

        sent = 0
        try:  # a call carries what the master reads at once
            # Each task takes at most 200 bytes, its options and 4 bytes a character of its payload: most calls
            # need no cutting at all.
            each = 200 + wire_estimate(json.dumps(options)) if options else 200
            whole = len(tasks) <= MAX_BATCH and each * len(tasks) + 4 * sum(map(len, payloads)) <= self._max_payload
            size_of = lambda task: each + wire_estimate(task.payload)  # noqa: E731
            for group in [tasks] if whole else in_messages(tasks, size_of, self._max_payload):
                self._send(group, wait_when_full)
                for f in futures[sent : sent + len(group)]:
                    f._sent = True
                sent += len(group)
        except BaseException:
            for f in futures[sent:]:
                self._futures.pop(f.task_id)
            raise
        return futures

    def _send(self, tasks: list[SubmittedTask], wait_when_full: bool) -> None:
        """Send tasks in one call; with wait_when_full, wait (capped backoff) while the master's queue is full."""
        try:
            self._conn.submit_encoded(self._secret, tasks)
        except MasterRejected as exc:  # ids make a retried submit idempotent
            if not (wait_when_full and "queue full" in str(exc)):
                raise
            refused = [exc]

            def again() -> int:  # the refusal that already came first, then the calls after each wait
                if refused:
                    raise refused.pop()
                return self._conn.submit_encoded(self._secret, tasks)

            def waiting(exc: Exception, delay: float) -> None:
                log.info("client %s: the master's queue is full; waiting %.2f s to send %d tasks", self.id, delay,
                         len(tasks))  # fmt: skip

            retrying(again, MasterRejected, start=0.05, cap=2.0, give_up=lambda exc: "queue full" not in str(exc),
                     on_retry=waiting)  # fmt: skip

    # ---- results

    def on_result(self, fn: Callback) -> None:
        """Call fn(record) for each of this client's tasks that finishes from now on (from a background thread)."""
        self._callbacks.add(fn)
        self._collector.use()  # the collector keeps this client's outbox alive from now on

    def lookup(self, task_ids: Iterable[str]) -> list[Record | None]:
        """The master's records of these tasks (state, worker, attempts, errors, times); None for unknown ids."""
        records = [r for chunk in batches(list(task_ids)) for r in self._conn.lookup(chunk, self._secret)]
        return [None if record is None else record.to_wire() for record in records]

    def stats(self) -> dict[str, Any]:
        """The master's stats (workers, counts per state, totals)."""
        return self._conn.stats().to_wire()

    def forget(self, tasks: Iterable[Future | str]) -> int:
        """Drop the master's copy of these finished tasks' results now (futures keep theirs); how many were dropped."""
        ids = [t.task_id if isinstance(t, Future) else t for t in tasks]
        return sum(self._conn.forget(chunk, self._secret) for chunk in batches(ids))

    def cancel(self, tasks: Iterable[Future | str], force: bool = False) -> int:
        """Cancel these tasks (futures or ids): those no worker holds yet, and with force=True running ones too
        (their child processes are killed on their workers: `Future.cancel()` never stops a running task).
        How many were cancelled."""
        cancelled = 0
        for task in tasks:
            if isinstance(task, Future) and task._remote is not self._asks and task.cancel():
                cancelled += 1  # a call an executor held back (max_workers): cancelled where it waited
                continue
            task_id = task.task_id if isinstance(task, Future) else task
            if self._conn.cancel(task_id, self._secret, force):
                cancelled += 1
                future = self._futures.pop(task_id)
                if future is not None:
                    future.cancel_here(running=True)
        return cancelled

    def close(self) -> None:
        """Stop the collector and callbacks and release connections; unfinished futures fail with PyrodistError."""
        if self._closed:
            return
        self._closed = True
        self._collector.stop()
        self._callbacks.close()
        stranded = self._futures.drain()
        self._conn.reconnect_for = 0.0
        try:
            self._conn.disconnect(self._secret)  # ends the collector's long-poll, frees the master's outbox now
        except PyrodistError as exc:  # gone already: it forgets this client by itself
            log.info("client %s: could not say goodbye: %s", self.id, exc)
        self._conn.close()  # ends calls in flight
        self._collector.close()
        for future in stranded:
            if not future.done():
                message = f"the client was closed before task {future.task_id} finished (it may still run)"
                future.set_exception(PyrodistError(message))


class _Asks:
    """What a client's futures ask of the master (`futures.Remote`): a connection failure is an answer, not an error."""

    def __init__(self, conn: Connection, secret: str, futures: FutureTable) -> None:
        self._conn, self._secret, self._futures = conn, secret, futures

    def cancel_queued(self, task_id: str) -> bool | None:
        """Cancel the task if no worker holds it (None: the master could not be asked)."""
        try:
            with at_once():  # cancel() must not wait out a lost master
                cancelled = self._conn.cancel(task_id, self._secret, force=False)
        except PyrodistError as exc:
            log.warning("could not cancel task %s: %s", task_id, exc)
            return None
        if cancelled:
            self._futures.pop(task_id)
        return cancelled

    def held(self, task_id: str) -> bool:
        """Whether a worker holds the task now (False when the master could not be asked)."""
        try:
            with at_once():
                (record,) = self._conn.lookup([task_id], self._secret)
        except PyrodistError as exc:
            log.warning("could not look task %s up: %s", task_id, exc)
            return False
        return record is not None and record.state is TaskState.RUNNING


class TaskOptions:
    """A view of a client that submits with fixed per-task options."""

    def __init__(self, client: Client, options: dict[str, Any]) -> None:
        self._client = client
        self._options = options

    def submit(self, func: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> Future:
        """Like `Client.submit`, with these options."""
        return self._client._submit(protocol.function_ref(func), [(args, kwargs)], self._options)[0]

    def broadcast(self, func: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Like `Client.broadcast`, with these options."""
        return self._client._broadcast(func, args, kwargs, self._options)

    def map(
        self, func: Callable[..., Any] | str, *iterables: Iterable[Any], chunksize: int | None = None
    ) -> list[Future]:
        """Like `Client.map`, with these options."""
        return self._client._mapper.map(protocol.function_ref(func), list(zip(*iterables, strict=False)), chunksize,
                                        self._options)  # fmt: skip

    def tasks(self, func: Callable[..., Any] | str, calls: Sequence[Args]) -> list[Future]:
        """Send calls of these positional arguments as tasks, one each, with these options."""
        return self._client._mapper.map(protocol.function_ref(func), calls, 1, self._options)

    def chunk_tasks(self, func: Callable[..., Any] | str, calls: Sequence[Args], size: int) -> list[Future]:
        """Send calls as tasks of size calls each, with these options; the tasks' own futures, each resolving
        to the chunk's result (`chunks.outcomes` reads it)."""
        return self._client._mapper.chunk_tasks(protocol.function_ref(func), calls, size, self._options)

    def held(self, func: Callable[..., Any] | str, calls: Calls, size: int, remote: Remote) -> list[Held]:
        """Tasks of these calls (size to a task), with these options, encoded now and sent later (`Mapper.held`)."""
        return self._client._mapper.held(protocol.function_ref(func), calls, size, self._options, remote)
