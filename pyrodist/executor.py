"""`ClusterExecutor`: the standard library's `Executor` on a pyrodist cluster.

Code written for `ProcessPoolExecutor` runs on the cluster once the line that makes the executor changes::

    with ClusterExecutor(ns_host="10.0.0.5", ns_port=9090) as executor:  # was ProcessPoolExecutor()
        for number, prime in zip(PRIMES, executor.map(is_prime, PRIMES)): ...

It behaves as the standard library's: a failed call raises its own exception type (also a
`pyrodist.TaskError`, with the remote traceback as `__cause__`), `map(chunksize=N)` runs N calls as one
task, `cancel()` stops only calls no worker holds yet, `max_workers` caps the calls in flight, and nothing
can be submitted after shutdown or once the interpreter is exiting. What differs, because tasks run in other
processes on other machines and nothing is pickled:

- Functions must be module-level functions from modules the workers allow (`-I MODULE`): lambdas, closures
  and `__main__` functions are refused at submit. Values must be ones pyrodist carries (JSON-like values,
  bytes, datetimes, Decimal, UUID, registered classes, NumPy arrays; no arbitrary objects).
- A remote exception comes back as its class only when that class is a builtin or its module is already
  imported in the caller (nothing is imported to rebuild it), else as `TaskError`; it is rebuilt from its
  message, not its arguments.
- `max_workers` is not a process count (the cluster's workers decide that): calls beyond it wait in this
  process, encoded, and are sent as earlier ones finish.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import chunks
from .client import Client
from .futures import Future, Remote
from .mapper import MAP_CHUNK, Held

_exiting = False
"""Set once the interpreter begins to exit: submitting then is refused, as by the standard library's executors."""


_caps: weakref.WeakSet[_Cap] = weakref.WeakSet()
"""The executors' caps (max_workers) that may still hold calls back."""


def _interpreter_exiting() -> None:
    """Refuse submits from now on, and send what caps still hold, as a process pool runs its queued calls."""
    global _exiting
    _exiting = True
    for cap in list(_caps):
        cap.stop()
        cap.join()


# Before atexit handlers and thread joins, as concurrent.futures registers its own (a private hook it uses too).
getattr(threading, "_register_atexit", lambda fn: None)(_interpreter_exiting)

AnyFuture = concurrent.futures.Future[Any]


class ClusterExecutor(concurrent.futures.Executor):
    """A `concurrent.futures.Executor` that runs calls as tasks on a pyrodist cluster, through `self.client`."""

    def __init__(
        self,
        max_workers: int | None = None,
        client: Client | None = None,
        *,
        options: dict[str, Any] | None = None,
        **client_kwargs: Any,
    ) -> None:
        """max_workers: at most this many of this executor's tasks in flight at once (None: no cap); client: the
        Client to use (else one is made from client_kwargs, and closed with the executor); options: task options
        for every call (`Client.options`)."""
        given: object = max_workers
        if isinstance(given, Client):  # ClusterExecutor(client), as before max_workers came first
            max_workers, client = None, given
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if client is not None and client_kwargs:
            raise TypeError(f"give either a client or Client arguments, not both: {', '.join(client_kwargs)}")
        self._owns_client = client is None
        self.client = Client(**client_kwargs) if client is None else client
        try:
            self._submitter = self.client.options(**(options or {}))  # checks the options now
        except BaseException:
            if self._owns_client:
                self.client.close()
            raise
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when no submit is under way
        self._submitting = 0
        self._futures: set[AnyFuture] = set()  # submitted here and not finished yet
        self._shutdown = False
        self._closing = False
        self._cap = None if max_workers is None else _Cap(max_workers, self.client._asks)

    def __repr__(self) -> str:
        state = "shut down" if self._shutdown else "running"
        return f"<pyrodist.ClusterExecutor {state} client={self.client.id} unfinished={len(self._futures)}>"

    def submit(self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> Future:
        """Run fn(*args, **kwargs) on the cluster; returns its Future."""
        with self._submit_window():
            if self._cap is None:
                future = self._submitter.submit(fn, *args, **kwargs)
                self._track([future])
                return future
            held = self._submitter.held(fn, [(args, kwargs)], 1, self._cap)
            self._track([future for future, _ in held])
            self._cap.add(held)
            return held[0][0]

    def map(
        self, fn: Callable[..., Any] | str, *iterables: Iterable[Any], timeout: float | None = None, chunksize: int = 1
    ) -> Iterator[Any]:
        """Like `Executor.map`: submit every call now; yield the results in input order as they are reached.

        chunksize calls travel and run as one task, as in `ProcessPoolExecutor.map` (a call's failure raises
        at its turn; the calls of a task share its retries and time limit). The iterator raises TimeoutError
        when a result is not there `timeout` seconds after this call; when it ends early or is closed, the
        tasks not yet started are cancelled.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if chunksize < 1:
            raise ValueError(f"chunksize must be at least 1, not {chunksize}")
        calls = list(zip(*iterables, strict=False))
        with self._submit_window():
            futures: list[Future] = []
            try:
                for start in range(0, len(calls), MAP_CHUNK * chunksize):
                    part = calls[start : start + MAP_CHUNK * chunksize]
                    if self._cap is not None:
                        held = self._submitter.held(fn, [(args, {}) for args in part], chunksize, self._cap)
                        batch = [future for future, _ in held]
                        self._track(batch)
                        self._cap.add(held)
                    elif chunksize == 1:
                        batch = self._submitter.tasks(fn, part)
                    else:
                        batch = self._submitter.chunk_tasks(fn, part, chunksize)
                    if self._cap is None:
                        self._track(batch)
                    futures += batch
            except BaseException:
                for future in futures:  # the caller never gets an iterator for them
                    future.cancel()
                raise
        return _results(futures, deadline) if chunksize == 1 else _chunk_results(futures, deadline)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls; cancel the pending ones if asked; wait for the rest if asked.

        The client is closed only when this executor created it (after its tasks finish, even with wait=False).
        """
        with self._lock:
            self._shutdown = True
            if wait or cancel_futures:
                self._idle.wait_for(lambda: self._submitting == 0)
            futures = list(self._futures)
            close, self._closing = self._owns_client and not self._closing, True
        if cancel_futures:
            for future in futures:
                future.cancel()  # False for tasks already running: they finish
        if self._cap is not None:
            self._cap.stop()  # its thread leaves once no call waits (all sent or cancelled)
        if wait:
            concurrent.futures.wait(futures)
            if self._cap is not None:
                self._cap.join()
        if close and wait:
            self.client.close()
        elif close:  # not here, which may be a done callback on the client's collector thread: close() from it
            threading.Thread(target=self._close_when_done, args=(futures,), daemon=True).start()

    @contextlib.contextmanager
    def _submit_window(self) -> Iterator[None]:
        """Count a submit as under way, so that shutdown() waits for its futures; refuse after shutdown."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if _exiting:
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            self._submitting += 1
        try:
            yield
        finally:
            with self._lock:
                self._submitting -= 1
                self._idle.notify_all()

    def _track(self, futures: list[Future]) -> None:
        with self._lock:
            self._futures.update(futures)
        for future in futures:  # outside the lock: a callback of a finished future runs at once and takes it
            future.add_done_callback(self._forget)

    def _forget(self, future: AnyFuture) -> None:
        with self._lock:
            self._futures.discard(future)

    def _close_when_done(self, futures: list[AnyFuture]) -> None:
        with self._lock:
            self._idle.wait_for(lambda: self._submitting == 0)
            futures += self._futures
        concurrent.futures.wait(futures)
        self.client.close()


class _Cap:
    """At most `most` of an executor's tasks in flight; the others wait here, encoded, in order, and a thread
    of its own sends them as earlier ones finish. Their futures ask it first (`futures.Remote`): a call still
    waiting here is cancelled here."""

    def __init__(self, most: int, asks: Remote) -> None:
        self._most = most
        self._asks = asks
        self._changed = threading.Condition()
        self._waiting: collections.OrderedDict[str, Held] = collections.OrderedDict()
        self._flying: set[str] = set()
        self._stopping = False
        self._thread: threading.Thread | None = None
        _caps.add(self)

    def add(self, held: list[Held]) -> None:
        """Send these tasks once there is room (in order, after those waiting already)."""
        with self._changed:
            for future, send in held:
                self._waiting[future.task_id] = (future, send)
            if self._thread is None or not self._thread.is_alive():  # (a stopped one left once nothing waited)
                self._thread = threading.Thread(target=self._feed, name="executor-cap", daemon=True)
                self._thread.start()
            self._changed.notify_all()
        for future, _ in held:
            future.add_done_callback(self._landed)

    def cancel_queued(self, task_id: str) -> bool | None:
        """Cancel a call waiting here; else ask the master."""
        with self._changed:
            if self._waiting.pop(task_id, None) is not None:
                return True
        return self._asks.cancel_queued(task_id)

    def held(self, task_id: str) -> bool:
        """Whether a worker holds the task (never one waiting here)."""
        with self._changed:
            if task_id in self._waiting:
                return False
        return self._asks.held(task_id)

    def stop(self) -> None:
        """No more calls will come: the thread leaves once none waits."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()

    def join(self) -> None:
        """Wait for the thread (after stop and once nothing waits)."""
        thread = self._thread
        if thread is not None:
            thread.join()

    def _landed(self, future: AnyFuture) -> None:
        with self._changed:
            self._flying.discard(future.task_id)  # type: ignore[attr-defined]
            self._changed.notify_all()

    def _feed(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: (self._stopping and not self._waiting)
                                       or (self._waiting and len(self._flying) < self._most))  # fmt: skip
                if not self._waiting:
                    return
                batch: list[Held] = []
                while self._waiting and len(self._flying) + len(batch) < self._most:
                    batch.append(self._waiting.popitem(last=False)[1])
                self._flying.update(future.task_id for future, _ in batch)
            for future, send in batch:
                try:
                    send()
                except Exception as exc:  # noqa: BLE001 - this call could not be sent: its future says why
                    with contextlib.suppress(concurrent.futures.InvalidStateError):  # settled meanwhile
                        future.set_exception(exc)


def _result_or_cancel(future: AnyFuture, deadline: float | None) -> Any:
    """The future's result; a future left unfinished (a timeout) is cancelled, so its task is not left behind."""
    try:
        return future.result(None if deadline is None else deadline - time.monotonic())
    finally:
        future.cancel()  # a no-op when done


def _results(futures: list[Future], deadline: float | None) -> Iterator[Any]:
    """Yield the futures' results in order, cancelling the unfinished ones when stopped early.

    Nothing here holds a result once it is handed out (nor its future), as the standard library's map."""
    futures.reverse()
    try:
        while futures:
            yield _result_or_cancel(futures.pop(), deadline)
    finally:
        for future in futures:
            future.cancel()


def _chunk_results(futures: list[Future], deadline: float | None) -> Iterator[Any]:
    """Yield the calls' results of chunk tasks in order (a failed call raises at its turn)."""
    futures.reverse()
    try:
        while futures:
            future = futures.pop()
            result = _result_or_cancel(future, deadline)
            if chunks.all_done(result):  # no call failed: the values as they are
                values = result[1]
                del future, result
                values.reverse()  # popped: a value handed out is not held here
                while values:
                    yield values.pop()
                continue
            pairs = list(chunks.outcomes(future.task_id, result))
            del future, result
            pairs.reverse()
            while pairs:
                yield _value(pairs.pop())
    finally:
        for future in futures:
            future.cancel()


def _value(pair: tuple[bool, Any]) -> Any:
    ok, value = pair
    if not ok:
        raise value
    return value
