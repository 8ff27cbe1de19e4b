"""A client's collector: one thread that long-polls the master's `collect` and settles futures.

No callback address is needed, so results reach clients behind NAT and firewalls. Once the client is in
use (it submitted or subscribed), the collector is always in a long-poll, also with nothing outstanding:
a result is then sent the moment it is ready. A client that only reads (stats, lookup) never polls.
After the master was lost, or restarted (a new epoch), it looks up every outstanding future: results that
finished meanwhile settle them, and tasks an in-memory master lost fail with `TaskLost`, never a hang.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .connection import Connection
from .errors import ConnectionFailed, TaskLost
from .futures import FutureTable
from .protocol import FINISHED_STATES, MAX_BATCH

log = logging.getLogger(__name__)

COLLECT_WAIT = 2.0
"""Seconds one collect call long-polls."""
COLLECT_MOST = 10_000
"""Most records one collect call takes."""


def batches(ids: list[str]) -> list[list[str]]:
    """ids in slices the master accepts in one call."""
    return [ids[start : start + MAX_BATCH] for start in range(0, len(ids), MAX_BATCH)]


class Collector:
    """The thread that settles a client's futures (see the module docstring)."""

    def __init__(
        self, client_id: str, conn: Connection, futures: FutureTable, epoch: str, on_restart: Callable[[], None]
    ) -> None:
        self._client_id = client_id
        self._conn = conn
        self._futures = futures
        self._epoch = epoch
        self._on_restart = on_restart
        self._cond = threading.Condition()
        self._used = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"collector-{client_id}", daemon=True)
        self._thread.start()

    def use(self) -> None:
        """Start the long-polls, for good (the client submitted or subscribed)."""
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
        while not self._closed:
            try:
                if lost or self._conn.reconnects != reconnects:
                    reconnects = self._conn.reconnects
                    self.recover()  # results may have finished, or been lost, while we were away
                    lost = False
                self._futures.settle(self._conn.collect(self._client_id, COLLECT_WAIT, COLLECT_MOST))
            except ConnectionFailed as exc:
                if self.closed:
                    break
                log.warning("client %s lost the master: %s; reconnecting", self._client_id, exc)
                lost = True
                self._pause(1.0)
            except Exception:
                log.exception("client %s collector failed; retrying", self._client_id)
                self._pause(1.0)

    @property
    def closed(self) -> bool:
        """Whether close was called."""
        return self._closed

    def _pause(self, seconds: float) -> None:
        with self._cond:
            if not self._closed:
                self._cond.wait(seconds)

    def recover(self) -> None:
        """Settle futures whose results we may have missed, fail those the master lost."""
        epoch = self._conn.limits().epoch
        if epoch != self._epoch:
            log.warning("client %s: the master restarted (epoch %s, was %s)", self._client_id, epoch, self._epoch)
            self._epoch = epoch
            self._on_restart()
        for chunk in batches(self._futures.sent()):
            records = self._conn.lookup(chunk)
            self._futures.settle([r.finished_record() for r in records if r is not None and r.state in FINISHED_STATES])
            for task_id in [i for i, r in zip(chunk, records, strict=True) if r is None]:
                future = self._futures.pop(task_id)
                if future is not None and not future.done():
                    message = "the master does not know this task any more: it restarted and lost it"
                    future.set_exception(TaskLost(task_id, "TaskLost", message))
