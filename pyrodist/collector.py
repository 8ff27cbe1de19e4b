"""A client's collector: one thread that long-polls the master's `collect` and settles futures.

No callback address is needed, so results reach clients behind NAT and firewalls. Once the client is in
use (it submitted or subscribed), the collector is always in a long-poll, also with nothing outstanding:
a result is then sent the moment it is ready. A client that only reads (stats, lookup) never polls.
After the master was lost, or restarted (a new epoch), it looks up every outstanding future: results that
finished meanwhile settle them, and tasks an in-memory master lost fail with `TaskLost`, never a hang.
An in-memory master that is gone for good (nothing registered, or its address refuses connections, for
GONE_AFTER seconds) takes its tasks with it: their futures fail with `TaskLost` then, not when (if ever)
a new master comes up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .connection import Connection
from .errors import ConnectionFailed, MasterNotFound, MasterRejected, StoreUnavailable, TaskLost
from .futures import FutureTable
from .protocol import FINISHED_STATES, MAX_BATCH, TaskState, error_info
from .transfer import download
from .values import BlobRef, is_blob_ref
from .wire import Finished, Limits, TaskRecord

log = logging.getLogger(__name__)

COLLECT_WAIT = 2.0
"""Seconds one collect call long-polls."""
COLLECT_MOST = 10_000
"""Most records one collect call takes."""
GONE_AFTER = 2.0
"""Seconds an in-memory master must stay gone (not merely out of reach) before its tasks count as lost."""


def batches(ids: list[str]) -> list[list[str]]:
    """ids in slices the master accepts in one call."""
    return [ids[start : start + MAX_BATCH] for start in range(0, len(ids), MAX_BATCH)]


class Collector:
    """The thread that settles a client's futures (see the module docstring)."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        conn: Connection,
        futures: FutureTable,
        limits: Limits,
        on_restart: Callable[[], None],
        on_recovered: Callable[[list[TaskRecord]], None],
    ) -> None:
        self._client_id = client_id
        self._secret = client_secret
        self._conn = conn
        self._futures = futures
        self._epoch = limits.epoch
        self._durable = limits.durable
        self._on_restart = on_restart
        self._on_recovered = on_recovered
        self._cond = threading.Condition()
        self._used = False
        self._closed = False
        self._sequence = 1  # of the next collect: the same number again after a failure (see outbox.py)
        self._thread = threading.Thread(target=self._run, name=f"collector-{client_id}", daemon=True)
        self._thread.start()

    def use(self) -> None:
        """Start the long-polls, for good (the client submitted or subscribed)."""
        if self._used:  # every submit calls this: no lock once started
            return
        with self._cond:
            if not self._used:
                self._used = True
                self._cond.notify_all()

    def stop(self) -> None:
        """Make no more calls (join waits for the one in flight)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def close(self, timeout: float = COLLECT_WAIT + 1) -> None:
        """Close its connection (which ends a long-poll in flight) and wait for the thread to end."""
        self.stop()
        self._conn.close()
        self._thread.join(timeout)

    def _run(self) -> None:
        with self._cond:
            while not self._used and not self._closed:
                self._cond.wait()
        reconnects = self._conn.reconnects
        lost = False
        gone_since: float | None = None
        while not self._closed:
            try:
                if lost or self._conn.reconnects != reconnects:
                    reconnects = self._conn.reconnects
                    self.recover()  # results may have finished, or been lost, while we were away
                    lost = False
                records = self._conn.collect(self._secret, COLLECT_WAIT, COLLECT_MOST, self._sequence)
                self._futures.settle(self._resolved(records))
                self._sequence += 1  # settled: the next collect says so, and the master releases their values
                gone_since = None
            except ConnectionFailed as exc:
                if self.closed:
                    break
                if not lost:
                    log.warning("client %s lost the master: %s; reconnecting", self._client_id, exc)
                lost = True
                if isinstance(exc, MasterNotFound) and exc.gone and not self._durable:
                    gone_since = gone_since if gone_since is not None else time.monotonic()
                    if time.monotonic() - gone_since >= GONE_AFTER:
                        self._fail_all(f"the master is gone ({exc}); it kept its tasks in memory, they went with it")
                else:
                    gone_since = None
                self._pause(min(1.0, GONE_AFTER / 2))
            except StoreUnavailable as exc:  # a big result could not be read now: read the unsettled ones again later
                log.warning("client %s: %s; reading again", self._client_id, exc)
                lost = True
                self._pause(1.0)
            except Exception:  # records it took may be unsettled: read them again rather than collect past them
                log.exception("client %s collector failed; retrying", self._client_id)
                lost = True
                self._pause(1.0)

    @property
    def closed(self) -> bool:
        """Whether close was called."""
        return self._closed

    def _pause(self, seconds: float) -> None:
        with self._cond:
            if not self._closed:
                self._cond.wait(seconds)

    def _fail_all(self, why: str) -> None:
        """Fail every outstanding future with TaskLost."""
        failed = 0
        for task_id in self._futures.sent():
            future = self._futures.pop(task_id)
            if future is not None and not future.done():
                future.set_exception(TaskLost(task_id, "TaskLost", why))
                failed += 1
        if failed:
            log.warning("client %s: %d futures failed: %s", self._client_id, failed, why)

    def _resolved(self, records: list[Finished]) -> list[Finished]:
        """The records, big results downloaded in place of their references (ConnectionFailed: collected again)."""
        for i, record in enumerate(records):
            if not is_blob_ref(record.payload):
                continue  # the common case: nothing to download
            try:
                ref = BlobRef.parse(record.payload)
                if ref is not None:
                    records[i] = Finished(record.id, record.state, download(self._conn, ref), record.error)
            except (ValueError, MasterRejected) as exc:  # gone or damaged on the master: the result is lost, say so
                error = error_info(ValueError(f"the result of task {record.id} could not be read: {exc}"), tb="")
                records[i] = Finished(record.id, TaskState.FAILED, None, error)
        return records

    def recover(self) -> None:
        """Settle futures whose results we may have missed, fail those the master lost."""
        epoch = self._conn.limits().epoch
        if epoch != self._epoch:
            log.warning("client %s: the master restarted (epoch %s, was %s)", self._client_id, epoch, self._epoch)
            self._epoch = epoch
            self._on_restart()
        for chunk in batches(self._futures.sent()):
            records = self._conn.lookup(chunk, self._secret)
            finished = [r for r in records if r is not None and r.state in FINISHED_STATES]
            self._futures.settle(self._resolved([r.finished_record() for r in finished]))
            self._on_recovered(finished)  # on_result too: their pushes may have died with the old subscription
            for task_id in [i for i, r in zip(chunk, records, strict=True) if r is None]:
                future = self._futures.pop(task_id)
                if future is not None and not future.done():
                    message = "the master does not know this task any more: it restarted and lost it"
                    future.set_exception(TaskLost(task_id, "TaskLost", message))
