"""`ClusterExecutor`: the standard library's `Executor` on a pyrodist cluster.

Code written for `ProcessPoolExecutor` runs on the cluster once the line that makes the executor changes::

    with ClusterExecutor(ns_host="10.0.0.5", ns_port=9090) as executor:  # was ProcessPoolExecutor()
        for number, prime in zip(PRIMES, executor.map(is_prime, PRIMES)): ...

What differs, because tasks run in other processes on other machines:

- Functions must be module-level functions from modules the workers allow (`-I MODULE`), and values must be
  ones serpent carries (no pickle).
- A call that raises fails with `pyrodist.TaskError` carrying the remote type name (`type_name`, e.g.
  "ZeroDivisionError"), message and traceback, not with the remote exception's own class.
- `map(chunksize=n)` sends n calls to the master per submit call (default `client.MAP_CHUNK`); each call
  stays its own task, with its own future, retries and time limit. `ProcessPoolExecutor` packs n calls into
  one task instead, which would need a helper that every worker imports.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import chunks
from .client import MAP_CHUNK, Client
from .futures import Future

AnyFuture = concurrent.futures.Future[Any]


class ClusterExecutor(concurrent.futures.Executor):
    """A `concurrent.futures.Executor` that runs calls as tasks on a pyrodist cluster, through `self.client`."""

    def __init__(
        self, client: Client | None = None, *, options: dict[str, Any] | None = None, **client_kwargs: Any
    ) -> None:
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

    def __repr__(self) -> str:
        state = "shut down" if self._shutdown else "running"
        return f"<pyrodist.ClusterExecutor {state} client={self.client.id} unfinished={len(self._futures)}>"

    def submit(self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> Future:
        """Run fn(*args, **kwargs) on the cluster; returns its Future."""
        with self._submit_window():
            future = self._submitter.submit(fn, *args, **kwargs)
            self._track([future])
        return future

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
                    if chunksize == 1:
                        batch = self._submitter.tasks(fn, part)
                    else:
                        batch = self._submitter.chunk_tasks(fn, part, chunksize)
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
        if wait:
            concurrent.futures.wait(futures)
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
