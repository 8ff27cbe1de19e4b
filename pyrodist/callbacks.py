"""A client's callback channel: `on_result` functions, fed by the master's pushes to this client.

The master pushes finished records to the connection's callback receiver, which only queues them; one
thread here decodes each value and calls the functions, so a slow function never makes the master drop
this client. A raising function is logged, never propagated. After the client reconnected, the records
its collector found finished meanwhile come here too (their pushes may have died with a restarted
master's subscriptions); a task already called back for is skipped, so each is called back once.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from .connection import Connection
from .errors import PyrodistError
from .transfer import download
from .values import BlobRef
from .wire import TaskRecord

log = logging.getLogger(__name__)

Callback = Callable[[dict[str, Any]], Any]
REMEMBERED = 100_000
"""Task ids called back for that are remembered, so that a record that comes twice is called back once."""


class CallbackChannel:
    """The subscription of one client and the thread that runs its on_result functions."""

    def __init__(self, client_id: str, client_secret: str, conn: Connection) -> None:
        self._client_id = client_id
        self._secret = client_secret
        self._conn = conn
        self._lock = threading.Lock()
        self._functions: list[Callback] = []
        self._inbox: queue.SimpleQueue[list[TaskRecord] | None] = queue.SimpleQueue()
        self._subscription: str | None = None
        self._thread: threading.Thread | None = None

    @property
    def used(self) -> bool:
        """Whether a callback was added (its functions see each task's record)."""
        return bool(self._functions)

    def add(self, fn: Callback) -> None:
        """Call fn(record) for each of this client's tasks that finishes from now on."""
        with self._lock:
            self._functions.append(fn)
            if self._subscription is not None:
                return
            try:
                self._subscription = self._conn.subscribe(self, None, self._secret)
            except BaseException:
                self._functions.remove(fn)
                raise
            self._thread = threading.Thread(target=self._dispatch, name=f"callbacks-{self._client_id}", daemon=True)
            self._thread.start()

    def resubscribe(self) -> None:
        """Subscribe again (the old subscription died with a restarted master)."""
        with self._lock:
            if self._subscription is not None:
                self._subscription = self._conn.subscribe(self, None, self._secret)

    def deliver(self, records: list[TaskRecord]) -> None:
        """Queue a batch for the dispatch thread and return at once (the connection's receiver calls this)."""
        self._inbox.put(records)

    def recovered(self, records: list[TaskRecord]) -> None:
        """Records the collector found finished after a reconnect: called back unless they were already."""
        with self._lock:
            subscribed = self._subscription is not None
        if subscribed and records:
            self._inbox.put(records)

    def close(self) -> None:
        """Unsubscribe (when the master is there) and stop the dispatch thread once it has run what is queued."""
        with self._lock:
            subscription, self._subscription = self._subscription, None
            thread, self._thread = self._thread, None
        if subscription is not None:
            try:
                self._conn.unsubscribe(subscription)
            except PyrodistError as exc:  # gone already: the master drops it itself
                log.info("client %s: could not unsubscribe: %s", self._client_id, exc)
        if thread is not None:
            self._inbox.put(None)
            thread.join(5.0)

    def _downloaded(self, record: TaskRecord) -> TaskRecord:
        """The record with a big result downloaded in place of its reference (or an error saying why not)."""
        try:
            ref = BlobRef.parse(record.payload)
            if ref is not None:
                return dataclasses.replace(record, payload=download(self._conn, ref))
        except (ValueError, PyrodistError) as exc:
            message = f"the result of task {record.id} could not be read: {exc}"
            return dataclasses.replace(record, payload=None, error={"type": type(exc).__name__, "message": message,
                                                                     "traceback": ""})  # fmt: skip
        return record

    def _dispatch(self) -> None:
        seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        while (records := self._inbox.get()) is not None:
            functions = list(self._functions)
            for record in records:
                if record.id in seen:
                    continue
                seen[record.id] = None
                if len(seen) > REMEMBERED:
                    seen.popitem(last=False)
                public = self._downloaded(
                    record
                ).to_plain()  # an undecodable value reads None, with an error saying why
                for fn in functions:
                    try:
                        fn(public)
                    except Exception:  # a raising callback is logged, never propagated
                        log.exception("on_result callback %r raised for task %s", fn, record.id)
