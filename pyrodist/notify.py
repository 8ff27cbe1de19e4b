"""Delivering finished-task records to callback subscribers, off the report path.

`Notifier.publish` only appends to bounded per-subscriber queues, so `report` never waits for a
client. Each subscription has its own delivery thread: a slow subscriber delays nobody else, and one
whose sink fails (the client vanished) or whose queue overflows is dropped and logged.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable

from .api import Sink
from .wire import TaskRecord

log = logging.getLogger(__name__)

Published = tuple[TaskRecord, str | None]
"""A finished task's record and the client that submitted it (None for a plain submit)."""

MAX_SUBSCRIPTIONS = 1000
MAX_SUBSCRIPTIONS_PER_CLIENT = 16
MAX_SUBSCRIBED_IDS = 100_000
"""Most task ids one subscription may list (the master keeps them while it lives)."""
MAX_QUEUE = 100_000
"""Records one subscriber may fall behind before it is dropped."""
MAX_BATCH = 5000
"""Most records handed to a sink in one delivery (large batches let a subscriber that fell behind catch up)."""
MAX_BATCH_BYTES = 8 * 1024 * 1024
"""About the most result bytes in one delivery: a batch stops growing past this (it holds at least one record)."""


class Subscription:
    """One subscriber: a filter, a bounded queue and the thread that drains it."""

    def __init__(
        self,
        sub_id: str,
        sink: Sink,
        task_ids: set[str] | None,
        owner: str | None,
        on_dead: Callable[[str], None],
        everything: bool = False,
    ) -> None:
        self.id = sub_id
        self.sink = sink
        self.task_ids = task_ids
        self.owner = owner
        self.everything = everything
        self.delivered = 0
        self._pending: collections.deque[TaskRecord] = collections.deque()
        self._cond = threading.Condition()  # one lock round per published batch, not per record
        self._stopped = False
        self._on_dead = on_dead
        self._thread = threading.Thread(target=self._run, name=f"notify-{sub_id}", daemon=True)
        self._thread.start()

    def wants(self, record: TaskRecord, owner: str | None) -> bool:
        """Whether this subscriber asked for this record (and may see it: the master checked listed ids)."""
        if self.task_ids is not None:
            return record.id in self.task_ids
        if self.owner is not None:
            return owner == self.owner
        return owner is None or self.everything  # all tasks: those of no client, unless it holds the admin key

    def put(self, records: list[TaskRecord]) -> bool:
        """Queue records; False (and nothing queued) when the subscriber would fall too far behind."""
        if not records:
            return True
        with self._cond:
            if len(self._pending) + len(records) > MAX_QUEUE:
                return False
            self._pending.extend(records)
            self._cond.notify()
        return True

    def stop(self, discard: bool = False) -> None:
        """Stop delivering once what is queued is delivered (or dropped, with discard: it was overflowing)."""
        with self._cond:
            self._stopped = True
            if discard:
                self._pending.clear()
            self._cond.notify()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._pending and not self._stopped:
                        self._cond.wait()
                    if not self._pending:
                        return
                    batch = self._take()
                self._deliver(batch)
        except Exception as exc:  # noqa: BLE001 - the subscriber vanished or broke; drop it, never the master
            log.warning("subscription %s dropped: delivering to it failed: %s", self.id, exc)
            self._on_dead(self.id)
        finally:
            self.sink.close()

    def join(self, timeout: float) -> None:
        """Wait up to timeout seconds for the delivery thread to end (after stop)."""
        self._thread.join(timeout)

    def _take(self) -> list[TaskRecord]:
        """The next batch: up to MAX_BATCH records and about MAX_BATCH_BYTES of results (lock held)."""
        batch: list[TaskRecord] = []
        size = 0
        while self._pending and len(batch) < MAX_BATCH and size < MAX_BATCH_BYTES:
            record = self._pending.popleft()
            size += len(record.payload or "")
            batch.append(record)
        return batch

    def _deliver(self, batch: list[TaskRecord]) -> None:
        self.sink.deliver(batch)
        self.delivered += len(batch)


class Notifier:
    """All subscriptions of a master, and the fan-out of finished records to them."""

    def __init__(self) -> None:
        self._subs: dict[str, Subscription] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def subscribe(
        self, sink: Sink, task_ids: Iterable[str] | None = None, owner: str | None = None, everything: bool = False
    ) -> str:
        """Start delivering to sink the records it asked for (listed, one owner's, or all: of no owner, or every
        owner's with everything); returns the subscription id."""
        with self._lock:
            sub_id = f"sub-{next(self._ids)}"
            wanted = None if task_ids is None else set(task_ids)
            self._subs[sub_id] = Subscription(sub_id, sink, wanted, owner, self._drop, everything)
        return sub_id

    def unsubscribe(self, sub_id: str, discard: bool = False) -> bool:
        """Stop a subscription (dropping what it has queued, with discard); False when there is none with that id."""
        with self._lock:
            sub = self._subs.pop(sub_id, None)
        if sub is None:
            return False
        sub.stop(discard)
        return True

    def unsubscribe_owner(self, owner: str) -> int:
        """Stop every subscription of one owner (a client that went away); returns how many."""
        with self._lock:
            ids = [sub_id for sub_id, sub in self._subs.items() if sub.owner == owner]
        return sum(self.unsubscribe(sub_id) for sub_id in ids)

    def publish(self, records: Iterable[Published], only: str | None = None) -> None:
        """Queue records for every subscription that wants them (or only for subscription `only`)."""
        with self._lock:
            subs = [self._subs[only]] if only in self._subs else [] if only else list(self._subs.values())
        if not subs:
            return
        records = list(records)
        for sub in subs:
            if not sub.put([record for record, owner in records if sub.wants(record, owner)]):
                log.warning("subscription %s dropped: it fell %d records behind", sub.id, MAX_QUEUE)
                self.unsubscribe(sub.id, discard=True)

    def check_room(self, owner: str | None) -> None:
        """Refuse one more subscription (of this owner) beyond the limits, with a ValueError saying which."""
        if self.count() >= MAX_SUBSCRIPTIONS:
            raise ValueError(f"too many subscriptions ({MAX_SUBSCRIPTIONS}); unsubscribe unused ones first")
        if owner is not None and self.count(owner) >= MAX_SUBSCRIPTIONS_PER_CLIENT:
            raise ValueError(f"client {owner} has {MAX_SUBSCRIPTIONS_PER_CLIENT} subscriptions, the most allowed")

    def count(self, owner: str | None = None) -> int:
        """How many subscriptions are live (of one owner, if given)."""
        with self._lock:
            return sum(1 for sub in self._subs.values() if owner is None or sub.owner == owner)

    def close(self, timeout: float = 5.0) -> None:
        """Stop every subscription and wait (up to timeout seconds in all) for what they still deliver."""
        with self._lock:
            subs = list(self._subs.values())
            self._subs.clear()
        for sub in subs:
            sub.stop()
        deadline = time.monotonic() + timeout
        for sub in subs:
            sub.join(max(0.0, deadline - time.monotonic()))

    def _drop(self, sub_id: str) -> None:
        with self._lock:
            self._subs.pop(sub_id, None)
