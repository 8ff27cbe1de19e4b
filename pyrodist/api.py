"""`MasterAPI`: every method the master offers, with typed records in and out.

The `Master` implements it; so do the connections clients and workers talk through (`remote.PyroConnection`
over Pyro4, `connection.LocalConnection` in the same process). `service.MasterService` is the same API
on the wire: plain values for Pyro4, checked on arrival and turned into these records.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

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


class Sink(Protocol):
    """Where a subscription's records go: a callback proxy in the master, a client's receiver in-process."""

    def deliver(self, records: list[TaskRecord]) -> None:
        """Deliver records in order; raise when the subscriber cannot be reached."""

    def close(self) -> None:
        """Release what the sink holds (a connection)."""


class MasterAPI(Protocol):
    """The master's methods, as clients and workers call them.

    A client is named by a secret only it knows (`client_secret`); the master derives the client's id from
    it (`protocol.client_id_of`), so a client's ids, seen in its task ids, let nobody collect its results.
    A client's tasks are seen (looked up, waited for, cancelled, forgotten, subscribed to) only with its
    secret, or with a secret made with the master's admin key (`protocol.admin_secret`); tasks submitted
    without a client (`submit`, `submit_many`: random ids) by anyone who has their id.
    """

    def submit(self, task: TaskSpec) -> str:
        """Queue one plain task (its values encoded by the master); its new id."""

    def submit_many(self, tasks: Sequence[TaskSpec]) -> list[str]:
        """Queue plain tasks (values encoded by the master); their new ids, in order. All or nothing."""

    def submit_encoded(self, client_secret: str, tasks: Sequence[SubmittedTask]) -> int:
        """Queue a client's tasks (ids 'CLIENT_ID.n' chosen by it, payloads encoded); a known id is left as it is."""

    def fetch(self, worker: str, max_tasks: int = 1, wait: float = 0.0) -> list[FetchedTask]:
        """Lease up to max_tasks tasks to worker, waiting up to wait seconds for one."""

    def report(self, worker: str, outcomes: Sequence[Outcome]) -> ReportReply:
        """Record a worker's results; only the current lease's token counts."""

    def heartbeat(self, worker: str, status: WorkerStatus) -> HeartbeatReply:
        """A worker is alive: renew its leases, learn what to cancel."""

    def blob_put(self, task_id: str, kind: str, blob_id: str | None, offset: int, data: bytes, size: int) -> str:
        """Write a chunk of a task's arguments (kind 'a') or result ('r') too big for one message: the first
        chunk (blob_id None, offset 0, size the whole value's) names the blob; the blob's id."""

    def blob_get(self, blob_id: str, offset: int, size: int) -> bytes:
        """Read a chunk of a whole blob (at most `blobs.CHUNK` bytes)."""

    def release(self, worker: str, leases: Sequence[Lease]) -> int:
        """Give back fetched tasks (id and lease token) the worker will not run; how many were given back."""

    def result(self, task_id: str, timeout: float = 0.0, client_secret: str | None = None) -> TaskRecord:
        """The task's record, waiting up to timeout seconds for it to finish (a client's task: its secret)."""

    def collect(
        self, client_secret: str, timeout: float = 0.0, max_items: int = 10_000, sequence: int | None = None
    ) -> list[Finished]:
        """This client's finished tasks, waiting up to timeout for the first. With a sequence number (1, 2, ...:
        one more than the last call the client got an answer to), a call asked again (the same number) gets the
        same answer, and the next number says the client has the records of the last: the master releases them."""

    def disconnect(self, client_secret: str) -> None:
        """The client is leaving: drop its undelivered records and subscriptions now, end its collect."""

    def lookup(self, task_ids: Sequence[str], client_secret: str | None = None) -> list[TaskRecord | None]:
        """The records of these tasks; None for ids the master does not know, or of another client's tasks."""

    def cancel(self, task_id: str, client_secret: str | None = None, force: bool = True) -> bool:
        """Cancel a task no worker holds yet, or with force a running one too (a client's task: with its secret);
        False when it could not be cancelled."""

    def forget(self, task_ids: Sequence[str], client_secret: str | None = None) -> int:
        """Drop the kept results of these finished tasks (a client's: with its secret); how many were dropped."""

    def subscribe(self, sink: Sink, task_ids: Sequence[str] | None = None, client_secret: str | None = None) -> str:
        """Deliver finished records to sink (all from now on, those listed, or one client's); the subscription id."""

    def unsubscribe(self, subscription_id: str) -> None:
        """Stop a subscription."""

    def stats(self) -> Stats:
        """Workers, tasks per state, totals."""

    def limits(self) -> Limits:
        """The limits the master enforces, and its epoch."""

    def ping(self) -> str:
        """'pong'."""
