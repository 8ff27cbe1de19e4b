"""Connections to a master: `MasterAPI` for clients and workers, over any transport.

`WireConnection` turns each typed call into the wire call `service.MasterService` serves (records to
plain values and back) and leaves only the sending to a transport: `remote_connection.PyroConnection`
sends over Pyro4; `LocalConnection` calls a `MasterService` in the same process, through a `rawjson`
round trip (the wire's own packing), so the in-process seam carries exactly what the wire carries
(Huey's "immediate" mode, with the wire kept honest).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from . import rawjson
from .api import MasterAPI, Sink
from .errors import ConnectionFailed, MasterRejected, StoreUnavailable
from .retry import retrying, warn_once
from .wire import (
    FetchedTask,
    Finished,
    HeartbeatReply,
    Lease,
    Limits,
    Outcome,
    ReportReply,
    Stats,
    SubmittedTask,
    TaskRecord,
    TaskSpec,
    WorkerStatus,
)

if TYPE_CHECKING:
    from .config import Settings


class Connection(MasterAPI, Protocol):
    """A `MasterAPI` that can be closed; calls raise `ConnectionFailed` when the master cannot be reached."""

    reconnect_for: float
    """Seconds a call keeps trying to reach a lost master (restarted, or its network back) before it fails."""
    reconnects: int
    """How often the master was lost (a call could not reach it); what happened meanwhile is unknown."""

    @property
    def address(self) -> str:
        """Where the master is, for messages."""

    def close(self) -> None:
        """Release the connection; calls in flight end with ConnectionFailed."""


Connect = Callable[["Settings"], Connection]

_thread_calls = threading.local()


@contextlib.contextmanager
def at_once() -> Iterator[None]:
    """The calls this thread makes inside fail at once when the master cannot be reached, whatever a
    connection's reconnect_for (what must not block, as `Future.cancel()`)."""
    before = getattr(_thread_calls, "at_once", False)
    _thread_calls.at_once = True
    try:
        yield
    finally:
        _thread_calls.at_once = before


def may_reconnect() -> bool:
    """Whether this thread's calls may wait for a lost master to come back (see `at_once`)."""
    return not getattr(_thread_calls, "at_once", False)


"""How a client or worker gets its connection (`remote_connection.PyroConnection`, or an in-process one)."""


class WireConnection(MasterAPI):
    """`MasterAPI` as wire calls; subclasses send them (`_invoke`) and carry callbacks back (`subscribe`)."""

    reconnect_for = 0.0
    reconnects = 0

    def _invoke(self, method: Callable[..., Any], *args: Any) -> Any:
        """Call the remote method named like method with plain arguments; its plain answer."""
        raise NotImplementedError

    def submit(self, task: TaskSpec) -> str:
        """Queue one plain task; its new id."""
        return str(self._invoke(MasterAPI.submit_many, [task.to_wire()])[0])

    def submit_many(self, tasks: Sequence[TaskSpec]) -> list[str]:
        """Queue plain tasks; their new ids, in order."""
        return list(self._invoke(MasterAPI.submit_many, [task.to_wire() for task in tasks]))

    def submit_encoded(self, client_secret: str, tasks: Sequence[SubmittedTask]) -> int:
        """Queue a client's tasks (a retried call is harmless: known ids are left as they are)."""
        return int(self._invoke(MasterAPI.submit_encoded, client_secret, [task.to_wire() for task in tasks]))

    def fetch(self, worker: str, max_tasks: int = 1, wait: float = 0.0) -> list[FetchedTask]:
        """Lease up to max_tasks tasks, waiting up to wait seconds for one."""
        return [FetchedTask.from_wire(task) for task in self._invoke(MasterAPI.fetch, worker, max_tasks, wait)]

    def report(self, worker: str, outcomes: Sequence[Outcome]) -> ReportReply:
        """Report results."""
        return ReportReply.from_wire(self._invoke(MasterAPI.report, worker, [o.to_wire() for o in outcomes]))

    def heartbeat(self, worker: str, status: WorkerStatus) -> HeartbeatReply:
        """Say this worker lives; renew its leases."""
        return HeartbeatReply.from_wire(self._invoke(MasterAPI.heartbeat, worker, status.to_wire()))

    def blob_put(self, task_id: str, kind: str, blob_id: str | None, offset: int, data: bytes, size: int) -> str:
        """Write a chunk of a big value; the blob's id."""
        return str(self._invoke(MasterAPI.blob_put, task_id, kind, blob_id, offset, data, size))

    def blob_get(self, blob_id: str, offset: int, size: int) -> bytes:
        """Read a chunk of a whole blob."""
        data = self._invoke(MasterAPI.blob_get, blob_id, offset, size)
        if not isinstance(data, bytes):
            raise MasterRejected(f"blob_get: the master sent {type(data).__name__}, not bytes")
        return data

    def release(self, worker: str, leases: Sequence[Lease]) -> int:
        """Give back fetched tasks (id and lease token)."""
        return int(self._invoke(MasterAPI.release, worker, [[task_id, token] for task_id, token in leases]))

    def result(self, task_id: str, timeout: float = 0.0, client_secret: str | None = None) -> TaskRecord:
        """The task's record, waiting up to timeout seconds for it to finish (json callers get the payload)."""
        return TaskRecord.from_wire(self._invoke(MasterAPI.result, task_id, timeout, client_secret))

    def collect(
        self, client_secret: str, timeout: float = 0.0, max_items: int = 10_000, sequence: int | None = None
    ) -> list[Finished]:
        """This client's finished tasks."""
        records = self._invoke(MasterAPI.collect, client_secret, timeout, max_items, sequence)
        return [Finished.from_wire(r) for r in records]

    def disconnect(self, client_secret: str) -> None:
        """Tell the master this client is leaving."""
        self._invoke(MasterAPI.disconnect, client_secret)

    def lookup(self, task_ids: Sequence[str], client_secret: str | None = None) -> list[TaskRecord | None]:
        """The records of these tasks; None for unknown ids (and another client's)."""
        records = self._invoke(MasterAPI.lookup, list(task_ids), client_secret)
        return [None if r is None else TaskRecord.from_wire(r) for r in records]

    def cancel(self, task_id: str, client_secret: str | None = None, force: bool = True) -> bool:
        """Cancel a task no worker holds yet (with force: one that runs too)."""
        return bool(self._invoke(MasterAPI.cancel, task_id, client_secret, force))

    def forget(self, task_ids: Sequence[str], client_secret: str | None = None) -> int:
        """Drop the kept results of these finished tasks."""
        return int(self._invoke(MasterAPI.forget, list(task_ids), client_secret))

    def unsubscribe(self, subscription_id: str) -> None:
        """Stop a subscription."""
        self._invoke(MasterAPI.unsubscribe, subscription_id)

    def stats(self) -> Stats:
        """The master's stats."""
        return Stats.from_wire(self._invoke(MasterAPI.stats))

    def limits(self) -> Limits:
        """The master's limits and epoch."""
        return Limits.from_wire(self._invoke(MasterAPI.limits))

    def ping(self) -> str:
        """'pong'."""
        return str(self._invoke(MasterAPI.ping))


def _roundtrip(value: Any) -> Any:
    """What the other side reads of value after the wire carried it (`rawjson`: tuples become lists, and so on)."""
    return rawjson.unpack(rawjson.pack(value))


class _WireSink:
    """Delivers records to a sink the way a callback over the wire would: as plain values, read back."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    def deliver(self, records: list[TaskRecord]) -> None:
        """Hand records to the sink as a callback over the wire would."""
        self._sink.deliver([TaskRecord.from_wire(r) for r in _roundtrip([r.to_wire() for r in records])])

    def close(self) -> None:
        """Nothing to release: the subscriber's own sink is its owner's to close."""


class LocalConnection(WireConnection):
    """A connection to a `MasterService` in this process (for tests, embedding and the in-process seam)."""

    def __init__(self, service: object) -> None:
        """service: a `service.MasterService` (not imported here: connections sit below the master)."""
        self._service = service
        self._closed = threading.Event()

    def _invoke(self, method: Callable[..., Any], *args: Any) -> Any:
        if self._closed.is_set():
            raise ConnectionFailed(f"{method.__name__}: the connection is closed")
        try:
            return _roundtrip(getattr(self._service, method.__name__)(*_roundtrip(args)))
        except (ValueError, TypeError) as exc:
            raise MasterRejected(f"{method.__name__}: {exc}") from exc
        except OSError as exc:  # only the master's store says so
            raise StoreUnavailable(f"{method.__name__}: {exc}") from exc

    def subscribe(self, sink: Sink, task_ids: Sequence[str] | None = None, client_secret: str | None = None) -> str:
        """Deliver finished records to sink, through the wire's plain values."""
        try:
            subscribe = getattr(self._service, MasterAPI.subscribe.__name__)  # the sink passes as it is, not as json
            return str(subscribe(_WireSink(sink), None if task_ids is None else list(task_ids), client_secret))
        except (ValueError, TypeError) as exc:
            raise MasterRejected(f"subscribe: {exc}") from exc

    @property
    def address(self) -> str:
        """Where the master is: in this process."""
        return "in-process"

    def close(self) -> None:
        """Refuse further calls."""
        self._closed.set()


def wait_for_master(conn: Connection, stop: threading.Event, who: str) -> bool:
    """Wait until the master answers (True) or stop is set (False), retrying with capped backoff."""
    try:
        retrying(conn.ping, ConnectionFailed, stop=stop, on_retry=warn_once(who, "the master"))
    except ConnectionFailed:
        return False
    return True
