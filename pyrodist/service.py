"""`MasterService`: the master's API on the wire, what Pyro4 exposes (and what in-process connections call).

It takes plain values (json's or serpent's), checks them into `wire.py` records, calls the `Master`
and turns what comes back into plain values again. Remote callers get builtin exceptions only, so any
Pyro4 client can read them: `ValueError` or `TypeError` naming the bad field, and `OSError` when the
master's task store cannot be used (the call changed nothing; try again later). It knows nothing
of Pyro4 itself: the transport tells it how to reach a subscriber (`make_sink`) and whether the
caller speaks json (`caller_uses_json`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from .api import Sink
from .blobs import CHUNK
from .blobs import check_name as check_blob
from .config import Settings
from .errors import PyrodistError, StoreUnavailable
from .master import Master
from .notify import MAX_SUBSCRIBED_IDS
from .protocol import MAX_BATCH, MAX_WAIT, check_batch, check_ids, check_leases, check_name, check_number, check_task_id
from .transfer import download
from .values import BlobRef, arrived_payload, is_blob_ref
from .wire import Outcome, SubmittedTask, TaskSpec, WorkerStatus

Wire = dict[str, Any]

REMOTE_METHODS = (
    "submit", "submit_many", "submit_encoded", "fetch", "report", "heartbeat", "release", "result", "collect",
    "disconnect", "lookup", "cancel", "forget", "subscribe", "unsubscribe", "stats", "limits", "ping",
    "blob_put", "blob_get",
)  # fmt: skip
"""What remote callers may call."""


class _Plain:
    """Turns pyrodist's ValueError subclasses into plain ValueErrors for the wire (cheaper than a generator)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, PyrodistError) and not isinstance(exc, StoreUnavailable):
            raise ValueError(str(exc)) from None


_plain = _Plain()


def _secret(client_secret: Any) -> str | None:
    """An optional client secret, checked."""
    return None if client_secret is None else check_name(client_secret, "client_secret")


F = TypeVar("F", bound=Callable[..., Any])


def _store_faults_as_oserror(method: F) -> F:
    """A remote method whose StoreUnavailable reaches the caller as a builtin OSError."""

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except StoreUnavailable as exc:
            raise OSError(str(exc)) from None

    return call  # type: ignore[return-value]


def _any_sink(callback: Any) -> Sink:
    """In-process subscribers hand over their sink itself."""
    if not (callable(getattr(callback, "deliver", None)) and callable(getattr(callback, "close", None))):
        raise TypeError(f"callback must be a sink with deliver(records) and close(), not {type(callback).__name__}")
    return callback  # type: ignore[no-any-return]


class MasterService:
    """The remote methods of a master, on plain values (see the module docstring)."""

    def __init__(
        self,
        master: Master,
        settings: Settings,
        make_sink: Callable[[Any], Sink] = _any_sink,
        caller_uses_json: Callable[[], bool] = lambda: False,
    ) -> None:
        self._master = master
        self._limit = settings.max_payload
        self._make_sink = make_sink
        self._caller_uses_json = caller_uses_json

    def submit(self, func: Any, args: Any = None, kwargs: Any = None, options: Any = None) -> str:
        """Queue one task: func is 'package.module:name'; returns its id."""
        return self._queue([TaskSpec.checked(0, func, args, kwargs, options)])[0]

    def submit_many(self, tasks: Any) -> list[str]:
        """Queue tasks given as dicts {"func", "args", "kwargs", "options"}; returns their ids."""
        return self._queue([TaskSpec.from_wire(i, spec) for i, spec in enumerate(check_batch(tasks, "tasks"))])

    def _queue(self, specs: list[TaskSpec]) -> list[str]:
        with _plain:
            return self._master.submit_many(specs)

    def submit_encoded(self, client_secret: Any, tasks: Any) -> int:
        """Queue tasks given as [task_id, func, payload, options] with pre-encoded payloads (the client's path)."""
        client = check_name(client_secret, "client_secret")
        items = enumerate(check_batch(tasks, "tasks"))
        checked = [SubmittedTask.from_wire(i, item, self._limit) for i, item in items]
        with _plain:
            return self._master.submit_encoded(client, checked)

    def fetch(self, worker: Any, max_tasks: Any = 1, wait: Any = 0.0) -> list[Wire]:
        """Lease up to max_tasks tasks to worker, waiting up to wait seconds for one to be pending."""
        name = check_name(worker, "worker")
        count = int(check_number(max_tasks, "max_tasks", 1, MAX_BATCH))
        leased = self._master.fetch(name, count, check_number(wait, "wait", 0, MAX_WAIT))
        return [task.to_wire() for task in leased]

    def report(self, worker: Any, results: Any) -> Wire:
        """Record a worker's results; the first report with a valid lease token wins, others are ignored."""
        name = check_name(worker, "worker")
        with _plain:
            outcomes = [Outcome.from_wire(i, r, self._limit) for i, r in enumerate(check_batch(results, "results"))]
        return self._master.report(name, outcomes).to_wire()

    def heartbeat(self, worker: Any, info: Any = None) -> Wire:
        """A worker is alive: update its details and renew the leases of the tasks it runs."""
        return self._master.heartbeat(check_name(worker, "worker"), WorkerStatus.from_wire(info)).to_wire()

    def blob_put(self, task_id: Any, kind: Any, blob_id: Any, offset: Any, data: Any, size: Any) -> str:
        """Write a chunk of a task's arguments ('a') or result ('r') too big for one message; the blob's id."""
        data = arrived_payload(data) if type(data) is dict else data  # a serpent caller's bytes
        if not isinstance(data, bytes):
            raise TypeError(f"data must be bytes (pyrodist's own serializer or serpent), not {type(data).__name__}")
        if kind not in ("a", "r"):
            raise ValueError(f"kind must be 'a' (arguments) or 'r' (result), not {kind!r}")
        start = int(check_number(offset, "offset", 0, 1 << 50))
        whole = int(check_number(size, "size", 0, 1 << 50))
        name = None if blob_id is None else check_blob(blob_id)
        with _plain:
            return self._master.blob_put(check_task_id(task_id), kind, name, start, data, whole)

    def blob_get(self, blob_id: Any, offset: Any, size: Any) -> bytes:
        """Read up to size bytes (at most 4 MiB) of a whole blob from offset (a caller that speaks json cannot)."""
        start, most = int(check_number(offset, "offset", 0, 1 << 50)), int(check_number(size, "size", 1, CHUNK))
        with _plain:
            return self._master.blob_get(check_blob(blob_id), start, most)

    def release(self, worker: Any, leases: Any) -> int:
        """Give back tasks worker fetched (`[task_id, token]` pairs) but will not run; they keep their place."""
        return self._master.release(check_name(worker, "worker"), check_leases(leases, "leases"))

    def result(self, task_id: Any, timeout: Any = 0.0, client_secret: Any = None) -> Wire:
        """The task's record with its value decoded, waiting up to timeout seconds for it to finish."""
        timeout = check_number(timeout, "timeout", 0, 1e9)
        record = self._master.result(check_task_id(task_id), timeout, _secret(client_secret))
        ref = BlobRef.parse(record.payload) if is_blob_ref(record.payload) else None
        if ref is not None and ref.size <= self._limit:  # spilled past max_held: read back from disk
            record = dataclasses.replace(record, payload=download(self._master, ref))
        return record.to_plain(self._caller_uses_json(), bounded=True)

    def collect(
        self, client_secret: Any, timeout: Any = 0.0, max_items: Any = 10_000, sequence: Any = None
    ) -> list[Wire]:
        """Finished records of this client's tasks, waiting up to timeout for the first (the client's path)."""
        client = check_name(client_secret, "client_secret")
        wait = check_number(timeout, "timeout", 0, MAX_WAIT)
        most = int(check_number(max_items, "max_items", 1, 1_000_000))
        number = None if sequence is None else int(check_number(sequence, "sequence", 1, 1 << 62))
        return [record.to_wire() for record in self._master.collect(client, wait, most, number)]

    def disconnect(self, client_secret: Any) -> None:
        """The client is leaving: drop its undelivered records and subscriptions now, end its collect."""
        self._master.disconnect(check_name(client_secret, "client_secret"))

    def lookup(self, task_ids: Any, client_secret: Any = None) -> list[Wire | None]:
        """Encoded records of these tasks, None for ids this master does not know (or another client's)."""
        records = self._master.lookup(check_ids(task_ids, "task_ids"), _secret(client_secret))
        return [None if record is None else record.to_wire() for record in records]

    def cancel(self, task_id: Any, client_secret: Any = None, force: Any = True) -> bool:
        """Cancel a task no worker holds yet; with force (the default here) a running one too, killed on its
        worker. False when it finished (or, without force, a worker holds it)."""
        if not isinstance(force, bool):
            raise TypeError(f"force must be true or false, not {type(force).__name__}")
        return self._master.cancel(check_task_id(task_id), _secret(client_secret), force)

    def forget(self, task_ids: Any, client_secret: Any = None) -> int:
        """Drop the kept results of these finished tasks now; returns how many were forgotten."""
        return self._master.forget(check_ids(task_ids, "task_ids"), _secret(client_secret))

    def subscribe(self, callback: Any, task_ids: Any = None, client_secret: Any = None) -> str:
        """Call callback.task_done(record) once per finished task (all from now on, those listed, or a client's)."""
        ids = (
            None
            if task_ids is None
            else [check_task_id(i) for i in check_batch(task_ids, "task_ids", MAX_SUBSCRIBED_IDS)]
        )
        client = _secret(client_secret)
        self._master.check_subscription(ids, client)  # cheap checks before calling the subscriber back
        return self._master.subscribe(self._make_sink(callback), ids, client)

    def unsubscribe(self, subscription_id: Any) -> None:
        """Stop a subscription."""
        if not isinstance(subscription_id, str):
            raise ValueError(f"unknown subscription {subscription_id!r}")
        self._master.unsubscribe(subscription_id)

    def stats(self) -> Wire:
        """Workers, tasks per state, totals and the master's own details."""
        return self._master.stats().to_wire()

    def limits(self) -> Wire:
        """The limits this master enforces, so clients can check before sending."""
        return self._master.limits().to_wire()

    def ping(self) -> str:
        """Answer 'pong' (used to tell a live master from a stale name server entry)."""
        return self._master.ping()


for _name in REMOTE_METHODS:
    setattr(MasterService, _name, _store_faults_as_oserror(getattr(MasterService, _name)))
