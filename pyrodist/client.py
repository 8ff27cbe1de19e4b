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
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from . import protocol, remote
from .config import Settings
from .errors import ConnectionFailed, MasterRejected, PyrodistError, TaskError, TaskLost
from .protocol import TaskState

log = logging.getLogger(__name__)

COLLECT_WAIT = 2.0
"""Seconds one collect call long-polls."""
MAP_CHUNK = 1000
"""Tasks sent per submit call by `map`."""

Record = dict[str, Any]


class Future(concurrent.futures.Future[Any]):
    """A `concurrent.futures.Future` for one task; `task_id` is the master's id for it."""

    def __init__(self, client: Client, task_id: str) -> None:
        super().__init__()
        self.task_id = task_id
        self._client = client
        self._sent = False  # the master confirmed it has the task

    def cancel(self) -> bool:
        """Cancel the task if it has not started yet."""
        if self.done():
            return self.cancelled()
        if not self._client._cancel(self.task_id):
            return False
        return self._cancel_locally()

    def _cancel_locally(self) -> bool:
        cancelled = super().cancel()
        if cancelled:
            self.set_running_or_notify_cancel()  # wakes wait() and as_completed()
        return cancelled

    def __repr__(self) -> str:
        return f"<pyrodist.Future {self.task_id} {self._state.lower()}>"


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
        self._local = threading.local()
        self._proxies: list[Any] = []
        self._lock = threading.Lock()
        self._outstanding = threading.Condition(self._lock)
        self._futures: dict[str, Future] = {}
        self._callbacks: list[Callable[[Record], Any]] = []
        self._callback_server: remote.Server | None = None
        self._subscription: str | None = None
        self._closed = threading.Event()
        self._master_uri = str(self._proxy()._pyroUri)  # fail now if the master is not there
        with remote.translate_errors("limits"):
            self._max_payload = int(self._proxy().limits()["max_payload"])
        self._collector = threading.Thread(target=self._collect_loop, name=f"collector-{self.id}", daemon=True)
        self._collector.start()

    def __repr__(self) -> str:
        return f"<pyrodist.Client {self.id} master={self._master_uri} outstanding={len(self._futures)}>"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- submitting

    def submit(self, func: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> Future:
        """Run func(*args, **kwargs) on the cluster; returns its Future."""
        return self._submit(protocol.function_ref(func), [(args, kwargs)], {})[0]

    def map(
        self, func: Callable[..., Any] | str, *iterables: Iterable[Any], chunksize: int = MAP_CHUNK
    ) -> list[Future]:
        """Run func over the zipped iterables; returns the futures in input order."""
        return self._map(func, iterables, chunksize, {})

    def options(self, **options: Any) -> TaskOptions:
        """Submit with per-task options, e.g. `client.options(priority=5, timeout=30).submit(fn, x)`."""
        return TaskOptions(self, protocol.check_options(options))

    def gather(self, futures: Iterable[concurrent.futures.Future[Any]], timeout: float | None = None) -> list[Any]:
        """The results of futures, in order; raises the first failure."""
        futures = list(futures)
        _, not_done = concurrent.futures.wait(futures, timeout)
        if not_done:
            raise TimeoutError(f"{len(not_done)} of {len(futures)} tasks not finished within {timeout} s")
        return [f.result() for f in futures]

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
            self._outstanding.notify_all()
        try:
            for delay in remote.retry_delays(0.05, 2.0):
                try:
                    with remote.translate_errors("submit"):
                        self._proxy().submit_encoded(self.id, items)
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
        with self._lock:
            self._callbacks.append(fn)
            if self._callback_server is not None:
                return
            server = self._callback_server = remote.Server(
                self.settings, remote.interface_for(remote.uri_host(self._master_uri))
            )
        uri = server.register(CallbackReceiver(self))
        server.start()
        with remote.translate_errors("subscribe"):
            self._subscription = self._proxy().subscribe(remote.callback_ref(uri), None, self.id)

    def stats(self) -> dict[str, Any]:
        """The master's stats (workers, counts per state, totals)."""
        with remote.translate_errors("stats"):
            return self._proxy().stats()  # type: ignore[no-any-return]

    def _cancel(self, task_id: str) -> bool:
        with remote.translate_errors("cancel"):
            cancelled = bool(self._proxy().cancel(task_id))
        if cancelled:
            with self._lock:
                self._futures.pop(task_id, None)
        return cancelled

    def _collect_loop(self) -> None:
        master: Any = None
        reconnecting = False
        while not self._closed.is_set():
            with self._lock:
                while not self._futures and not self._closed.is_set():
                    self._outstanding.wait()
            if self._closed.is_set():
                break
            try:
                if master is None:
                    master = remote.connect_master(self.settings)
                    if reconnecting:
                        self._recover(master)
                    reconnecting = True
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
        """After reconnecting: settle futures whose results we may have missed, fail those the master lost."""
        with self._lock:
            ids = [task_id for task_id, f in self._futures.items() if f._sent]
        for start in range(0, len(ids), protocol.MAX_BATCH):
            chunk = ids[start : start + protocol.MAX_BATCH]
            records = master.lookup(chunk)
            finished = [r for r in records if r is not None and r["state"] not in ("pending", "running")]
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
            if future is None or future.done():
                continue
            state = record["state"]
            if state == TaskState.DONE:
                try:
                    future.set_result(protocol.decode_value(record["payload"]))
                except Exception as exc:  # noqa: BLE001 - an undecodable result fails this future, not the collector
                    future.set_exception(exc)
            elif state == TaskState.CANCELLED:
                future._cancel_locally()
            else:
                error = record.get("error") or {}
                future.set_exception(
                    TaskError(
                        record["id"], error.get("type", "?"), error.get("message", ""), error.get("traceback", "")
                    )
                )

    # ---- plumbing

    def _proxy(self) -> Any:
        """This thread's proxy to the master (a proxy serialises calls, so each thread has its own)."""
        proxy = getattr(self._local, "proxy", None)
        if proxy is None:
            if self._closed.is_set():
                raise PyrodistError("this client is closed")
            proxy = self._local.proxy = remote.connect_master(self.settings)
            with self._lock:
                self._proxies.append(proxy)
        return proxy

    def close(self) -> None:
        """Stop the collector and callbacks and release connections; unfinished futures stay pending."""
        if self._closed.is_set():
            return
        if self._subscription is not None:
            try:
                self._proxy().unsubscribe(self._subscription)
            except (remote.CommunicationError, ValueError) as exc:  # gone already: the master drops it itself
                log.info("client %s: could not unsubscribe: %s", self.id, exc)
        self._closed.set()
        with self._lock:
            self._outstanding.notify_all()
            proxies, self._proxies = self._proxies, []
        self._collector.join(timeout=COLLECT_WAIT + 5)
        if self._callback_server is not None:
            self._callback_server.close()
        for proxy in proxies:
            proxy._pyroRelease()


class TaskOptions:
    """A view of a client that submits with fixed per-task options."""

    def __init__(self, client: Client, options: dict[str, Any]) -> None:
        self._client = client
        self._options = options

    def submit(self, func: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> Future:
        """Like `Client.submit`, with these options."""
        return self._client._submit(protocol.function_ref(func), [(args, kwargs)], self._options)[0]

    def map(
        self, func: Callable[..., Any] | str, *iterables: Iterable[Any], chunksize: int = MAP_CHUNK
    ) -> list[Future]:
        """Like `Client.map`, with these options."""
        return self._client._map(func, iterables, chunksize, self._options)


@remote.expose
class CallbackReceiver:
    """The callback object the master pushes this client's finished records to."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def task_batch(self, records: list[Record]) -> None:
        """Decode a batch of records and hand each to every on_result function."""
        callbacks = list(self._client._callbacks)
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
                except Exception:
                    log.exception("on_result callback %r raised for task %s", fn, record.get("id"))
