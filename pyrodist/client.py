"""The client: futures, `map`, `gather`, callbacks, for scripts and interactive shells.

Futures complete through one collector thread per client that long-polls the master's `collect`
for this client's finished tasks, in batches: no callback address is needed, so it works behind NAT
and firewalls. `on_result` callbacks are pushed by the master to a small callback daemon the client
starts on first use.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from . import progressbar, protocol, remote
from .config import Settings
from .errors import ConnectionFailed, MasterRejected, PyrodistError, ResultExpired, TaskError, TaskLost
from .protocol import FINISHED_STATES, TaskState

if TYPE_CHECKING:
    from .executor import ClusterExecutor

log = logging.getLogger(__name__)

COLLECT_WAIT = 2.0
"""Seconds one collect call long-polls."""
MAP_CHUNK = 1000
"""Tasks sent per submit call by `map`."""
MAX_IDLE_PROXIES = 4
"""Idle connections a client keeps to the master (each holds one of the master's threads)."""
RECONNECT_WAIT = 60.0
"""Seconds a call waits for a lost master to come back (restarted, or its network restored) before failing."""

Record = dict[str, Any]


_WAITING = ("PENDING", "RUNNING")  # concurrent.futures' states of a future that is not done


class Future(concurrent.futures.Future[Any]):
    """A `concurrent.futures.Future` for one task; `task_id` is the master's id for it."""

    def __init__(self, client: Client, task_id: str) -> None:
        # The fields concurrent.futures.Future.__init__ sets, but with one condition for all of a client's
        # futures: a Condition each cost a quarter of the client's work per task. A shared condition also
        # wakes waiters for other futures, so result() and exception() wait in a loop.
        self._condition = client._settled
        self._state = "PENDING"
        self._result = None
        self._exception = None
        self._waiters = []
        self._done_callbacks: list[Callable[[concurrent.futures.Future[Any]], object]] = []
        self.task_id = task_id
        self._client = client
        self._sent = False  # the master confirmed it has the task

    def cancel(self) -> bool:
        """Cancel the task (a running one is killed on its worker); False when it finished or the master is away."""
        if self.done():
            return self.cancelled()
        try:
            if not self._client._cancel(self.task_id):
                return False
        except PyrodistError as exc:
            log.warning("could not cancel task %s: %s", self.task_id, exc)
            return False
        return self._cancel_locally()

    def result(self, timeout: float | None = None) -> Any:
        """The task's value; raises its error, CancelledError, or TimeoutError after timeout seconds."""
        self._wait(timeout)
        return super().result(0)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The task's error (None if it succeeded); raises CancelledError, or TimeoutError after timeout seconds."""
        self._wait(timeout)
        return super().exception(0)

    def _wait(self, timeout: float | None) -> None:
        """Wait until done or timeout seconds passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while self._state in _WAITING:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return
                self._condition.wait(remaining)

    def _cancel_locally(self) -> bool:
        """Mark cancelled and wake wait()/as_completed(); safe to call from several threads."""
        with self._condition:
            if not super().cancel():
                return False
            if self._state == "CANCELLED":  # not yet notified: do it once
                self.set_running_or_notify_cancel()
        return True

    def __repr__(self) -> str:
        return f"<pyrodist.Future {self.task_id} {self._state.lower()}>"


def _batches(ids: list[str]) -> Iterator[list[str]]:
    """ids in slices the master accepts in one call."""
    for start in range(0, len(ids), protocol.MAX_BATCH):
        yield ids[start : start + protocol.MAX_BATCH]


def as_completed(futures: Iterable[concurrent.futures.Future[Any]], timeout: float | None = None) -> Any:
    """Yield futures as they finish (the standard library's `as_completed`)."""
    return concurrent.futures.as_completed(futures, timeout)


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
    ) -> None:
        self.settings = settings or Settings.from_env(ns_host=ns_host, ns_port=ns_port, master_name=master, key=key)
        remote.configure_pyro(self.settings)
        self.id = "c" + secrets.token_hex(5)
        self._ids = itertools.count(1)
        self._idle: list[Any] = []  # pooled proxies; a proxy serialises its calls, so each call takes its own
        self._lock = threading.Lock()
        self._settled = threading.Condition()  # shared by this client's futures (see Future.__init__)
        self._in_use = threading.Condition(self._lock)  # the collector starts once this client submits or subscribes
        self._used = False
        self._futures: dict[str, Future] = {}
        self._callbacks: list[Callable[[Record], Any]] = []
        self._callback_server: remote.Server | None = None
        self._callback_queue: queue.SimpleQueue[list[Record] | None] = queue.SimpleQueue()
        self._subscription: str | None = None
        self._closed = threading.Event()
        limits = self._call("limits", wait=0)  # fails now, clearly, if the master is not there
        self._max_payload = int(limits["max_payload"])
        self._epoch = limits.get("epoch")
        self._collector = threading.Thread(target=self._collect_loop, name=f"collector-{self.id}", daemon=True)
        self._collector.start()

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
        chunksize: int = MAP_CHUNK,
        progress: bool = False,
    ) -> list[Future]:
        """Run func over the zipped iterables; returns the futures in input order.

        With progress=True a progress bar (rate, ETA) follows them on the terminal, from a background thread.
        """
        futures = self._map(func, iterables, chunksize, {})
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
        workers = [w["id"] for w in self.stats()["workers"] if w.get("state") == "live"]
        if not workers:
            raise PyrodistError("no live workers to broadcast to")
        futures = {w: self._submit(ref, [(args, kwargs)], {**options, "worker": w})[0] for w in workers}
        return {worker: future.result() for worker, future in futures.items()}

    def options(self, **options: Any) -> TaskOptions:
        """Submit with per-task options, e.g. `client.options(priority=5, timeout=30).submit(fn, x)`."""
        return TaskOptions(self, protocol.check_options(options))

    def executor(self, **options: Any) -> ClusterExecutor:
        """A `concurrent.futures.Executor` on this client with these task options; its shutdown keeps the client."""
        from .executor import ClusterExecutor  # executor.py builds on this module, so it is imported on use

        return ClusterExecutor(self, options=options)

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

    def _map(
        self, func: Any, iterables: Sequence[Iterable[Any]], chunksize: int, options: dict[str, Any]
    ) -> list[Future]:
        ref = protocol.function_ref(func)
        if chunksize < 1:
            raise ValueError(f"chunksize must be at least 1, not {chunksize}")
        futures: list[Future] = []
        calls: Iterator[tuple[tuple[Any, ...], dict[str, Any]]] = ((args, {}) for args in zip(*iterables, strict=False))
        while chunk := list(itertools.islice(calls, chunksize)):
            futures.extend(self._submit(ref, chunk, options, wait_when_full=True))
        return futures

    def _submit(
        self,
        ref: str,
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
        options: dict[str, Any],
        wait_when_full: bool = False,
    ) -> list[Future]:
        """Send calls as tasks; with wait_when_full, wait (capped backoff) while the master's queue is full."""
        # Encode everything first: a bad value is an error here, before anything is sent.
        payloads = [protocol.encode_call(args, kwargs, self._max_payload) for args, kwargs in calls]
        futures = [Future(self, f"{self.id}.{next(self._ids)}") for _ in payloads]
        items = [[f.task_id, ref, payload, options] for f, payload in zip(futures, payloads, strict=True)]
        with self._lock:
            self._futures.update((f.task_id, f) for f in futures)
            self._use()
        try:
            for delay in remote.retry_delays(0.05, 2.0):
                try:
                    self._call("submit_encoded", self.id, items)  # ids make a retried submit idempotent
                    break
                except MasterRejected as exc:
                    if not (wait_when_full and "queue full" in str(exc)):
                        raise
                    log.info(
                        "client %s: the master's queue is full; waiting %.2f s to send %d tasks",
                        self.id,
                        delay,
                        len(items),
                    )
                    time.sleep(delay)
            for f in futures:
                f._sent = True
        except BaseException:
            with self._lock:
                for f in futures:
                    self._futures.pop(f.task_id, None)
            raise
        return futures

    # ---- results

    def on_result(self, fn: Callable[[Record], Any]) -> None:
        """Call fn(record) for each of this client's tasks that finishes from now on (from a background thread)."""
        master_host = remote.uri_host(self._call_uri())  # before the lock: it may connect
        with self._lock:
            self._callbacks.append(fn)
            if self._callback_server is not None:
                return
            server = self._callback_server = remote.Server(self.settings, remote.interface_for(master_host))
        try:
            self._callback_uri = server.register(CallbackReceiver(self._callback_queue))
            server.start()
            threading.Thread(target=self._dispatch_callbacks, name=f"callbacks-{self.id}", daemon=True).start()
            self._subscribe()
        except BaseException:
            with self._lock:
                self._callbacks.remove(fn)
                self._callback_server = None
            server.close()
            self._callback_queue.put(None)
            raise

    def _subscribe(self) -> None:
        self._subscription = self._call(
            "subscribe", remote.callback_ref(self._callback_uri), None, self.id, retry=False
        )
        with self._lock:
            self._use()  # the collector keeps this client's outbox alive from now on

    def _use(self) -> None:
        """Start the collector's long-polls, for good (lock held)."""
        if not self._used:
            self._used = True
            self._in_use.notify_all()

    def _dispatch_callbacks(self) -> None:
        """Run on_result functions here, never inside the master's call (a slow one must not get us dropped)."""
        while (records := self._callback_queue.get()) is not None:
            callbacks = list(self._callbacks)
            for record in records:
                record = dict(record)
                payload = record.pop("payload", None)
                try:
                    record["value"] = protocol.decode_value(payload) if payload is not None else None
                except Exception as exc:  # noqa: BLE001 - keep delivering the rest
                    log.warning("result of task %s could not be decoded: %s", record.get("id"), exc)
                    record["value"] = None
                for fn in callbacks:
                    try:
                        fn(record)
                    except Exception:  # a raising callback is logged, never propagated
                        log.exception("on_result callback %r raised for task %s", fn, record.get("id"))

    def lookup(self, task_ids: Iterable[str]) -> list[Record | None]:
        """The master's records of these tasks (state, worker, attempts, errors, times); None for unknown ids."""
        return [record for chunk in _batches(list(task_ids)) for record in self._call("lookup", chunk)]

    def stats(self) -> dict[str, Any]:
        """The master's stats (workers, counts per state, totals)."""
        return self._call("stats")  # type: ignore[no-any-return]

    def forget(self, tasks: Iterable[Future | str]) -> int:
        """Drop the master's copy of these finished tasks' results now (futures keep theirs); how many were dropped."""
        ids = [t.task_id if isinstance(t, Future) else t for t in tasks]
        return sum(int(self._call("forget", chunk)) for chunk in _batches(ids))

    def _cancel(self, task_id: str) -> bool:
        cancelled = bool(self._call("cancel", task_id))
        if cancelled:
            with self._lock:
                self._futures.pop(task_id, None)
        return cancelled

    def _collect_loop(self) -> None:
        master: Any = None
        # Once in use, always in a long-poll, also with nothing outstanding: a result is then sent the moment
        # it is ready, not after this thread has woken up and asked (a third of a round trip on an idle cluster).
        # A client that only reads (stats, lookup) never polls, so closing it is instant.
        with self._lock:
            while not self._used and not self._closed.is_set():
                self._in_use.wait()
        while not self._closed.is_set():
            try:
                if master is None:
                    master = remote.connect_master(self.settings)
                    self._recover(master)  # results may have finished, or been lost, while we were away
                self._resolve(master.collect(self.id, COLLECT_WAIT, 10_000))
            except (remote.CommunicationError, ConnectionFailed) as exc:
                log.warning("client %s lost the master: %s; reconnecting", self.id, exc)
                if master is not None:
                    master._pyroRelease()
                master = None
                self._closed.wait(1.0)
            except Exception:
                log.exception("client %s collector failed; retrying", self.id)
                self._closed.wait(1.0)
        if master is not None:
            master._pyroRelease()

    def _recover(self, master: Any) -> None:
        """On (re)connecting: settle futures whose results we may have missed, fail those the master lost.

        Only futures the master confirmed are looked up: one still being submitted is not lost.
        """
        epoch = master.limits().get("epoch")
        if epoch != self._epoch:
            log.warning("client %s: the master restarted (epoch %s, was %s)", self.id, epoch, self._epoch)
            self._epoch = epoch
            if self._subscription is not None:
                self._subscribe()  # the old subscription died with the old master
        with self._lock:
            ids = [task_id for task_id, f in self._futures.items() if f._sent]
        for chunk in _batches(ids):
            records = master.lookup(chunk)
            finished = [r for r in records if r is not None and r["state"] in FINISHED_STATES]
            self._resolve(finished)
            lost = [i for i, r in zip(chunk, records, strict=True) if r is None]
            for task_id in lost:
                with self._lock:
                    future = self._futures.pop(task_id, None)
                if future is not None and not future.done():
                    message = "the master does not know this task any more: it restarted and lost it"
                    future.set_exception(TaskLost(task_id, "TaskLost", message))

    def _resolve(self, records: list[Record]) -> None:
        if not records:
            return
        with self._lock:
            futures = [self._futures.pop(r["id"], None) for r in records]
        for record, future in zip(records, futures, strict=True):
            if future is not None and not future.done():
                try:
                    self._settle(future, record)
                except Exception:
                    log.exception("client %s could not settle task %s", self.id, record.get("id"))

    @staticmethod
    def _settle(future: Future, record: Record) -> None:
        """Complete future from its finished record."""
        state = record["state"]
        if state == TaskState.DONE:
            try:
                future.set_result(protocol.decode_value(record["payload"]))
            except Exception as exc:  # noqa: BLE001 - an undecodable result fails this future, not the collector
                future.set_exception(exc)
        elif state == TaskState.CANCELLED:
            future._cancel_locally()
        elif state == TaskState.EXPIRED:
            error = record.get("error") or {}
            future.set_exception(ResultExpired(record["id"], "ResultExpired", error.get("message", "expired"), ""))
        else:
            error = record.get("error") or {}
            message, tb = error.get("message", ""), error.get("traceback", "")
            future.set_exception(TaskError(record["id"], error.get("type", "?"), message, tb))

    # ---- plumbing

    def _call(self, method: str, *args: Any, retry: bool = True, wait: float = RECONNECT_WAIT) -> Any:
        """Call the master through a pooled proxy; when it was lost, look it up again and retry (capped backoff).

        It retries for up to `wait` seconds (at least once), so a master restarting on its store is waited for.
        Only calls that are safe to repeat retry: submits carry their ids, so a repeat adds nothing.
        """
        give_up = time.monotonic() + wait
        for attempt, delay in enumerate(remote.retry_delays(0.1, 2.0)):
            try:
                return self._call_once(method, args)
            except ConnectionFailed as exc:
                if not retry or (attempt >= 1 and time.monotonic() + delay > give_up):
                    raise
                if attempt == 1:
                    log.warning("client %s: %s; retrying for up to %g s", self.id, exc, wait)
                if attempt >= 1 and self._closed.wait(delay):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover - retry_delays never ends

    def _call_once(self, method: str, args: tuple[Any, ...]) -> Any:
        proxy = self._checkout()
        try:
            with remote.translate_errors(method):
                result = getattr(proxy, method)(*args)
        except ConnectionFailed:
            proxy._pyroRelease()  # maybe a restarted master on a new port: the next proxy looks it up
            with self._lock:
                stale, self._idle = self._idle, []
            for old in stale:
                old._pyroRelease()
            raise
        except BaseException:
            self._checkin(proxy)
            raise
        self._checkin(proxy)
        return result

    def _call_uri(self) -> str:
        proxy = self._checkout()
        try:
            return str(proxy._pyroUri)
        finally:
            self._checkin(proxy)

    def _checkout(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            if self._closed.is_set():
                raise PyrodistError("this client is closed")
        return remote.connect_master(self.settings)

    def _checkin(self, proxy: Any) -> None:
        with self._lock:
            if len(self._idle) < MAX_IDLE_PROXIES and not self._closed.is_set():
                self._idle.append(proxy)
                return
        proxy._pyroRelease()

    def close(self) -> None:
        """Stop the collector and callbacks and release connections; unfinished futures fail with PyrodistError."""
        if self._closed.is_set():
            return
        if self._subscription is not None:
            try:
                self._call("unsubscribe", self._subscription, retry=False)
            except PyrodistError as exc:  # gone already: the master drops it itself
                log.info("client %s: could not unsubscribe: %s", self.id, exc)
        self._closed.set()
        with self._lock:
            self._in_use.notify_all()
            idle, self._idle = self._idle, []
            stranded, self._futures = list(self._futures.values()), {}
        if not self._used:
            self._collector.join(timeout=0.2)
        # else it is in a long-poll: it leaves (and lets go of its connection) by itself when that returns
        if self._callback_server is not None:
            self._callback_server.close()
            self._callback_queue.put(None)
        for proxy in idle:
            proxy._pyroRelease()
        for future in stranded:
            if not future.done():
                message = f"the client was closed before task {future.task_id} finished (it may still run)"
                future.set_exception(PyrodistError(message))


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
        self, func: Callable[..., Any] | str, *iterables: Iterable[Any], chunksize: int = MAP_CHUNK
    ) -> list[Future]:
        """Like `Client.map`, with these options."""
        return self._client._map(func, iterables, chunksize, self._options)


@remote.expose
class CallbackReceiver:
    """The callback object the master pushes this client's finished records to."""

    def __init__(self, inbox: queue.SimpleQueue[list[Record] | None]) -> None:
        self._inbox = inbox

    def task_batch(self, records: list[Record]) -> None:
        """Queue a batch for the client's callback thread and return at once."""
        self._inbox.put(records)
