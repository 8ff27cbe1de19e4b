"""Each client's finished records, kept until it collects them (long-poll).

Called under the master's lock: an outbox's condition shares it, so `report` hands records over and
wakes the one collector waiting for them without another lock round. A client numbers its collects: the
same number again (a call retried after its answer was lost) gets the same records again, and the next
number says it has the records of the last one, whose values are then released on the master
(`acknowledged`), unless their tasks were submitted with the option `keep`.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from .protocol import TaskState
from .task import Task
from .wire import Finished

OUTBOX_IDLE = 600.0
"""Seconds after which a client that stopped collecting loses its undelivered outbox."""


@dataclass
class Outbox:
    """Finished records waiting for the client that submitted them."""

    ready: threading.Condition
    records: collections.deque[tuple[Finished, bool]] = field(default_factory=collections.deque)
    """Each record, and whether its value is to be released once the client has it."""
    delivered: list[str] = field(default_factory=list)
    """Ids of the values the last collect took, released when the client's next collect says it has them."""
    last_sequence: int | None = None
    """The number of the client's last collect, whose records are last_batch."""
    last_batch: list[Finished] = field(default_factory=list)
    last_seen: float = 0.0
    gone: bool = False
    """The client said it left: its collect ends."""


class Outboxes:
    """Every client's outbox, sharing one lock (the master's)."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._boxes: dict[str, Outbox] = {}
        self.closed = False
        self.held_bytes = 0
        """Bytes of values waiting in every outbox (a reference to a blob counts as its text)."""

    def __len__(self) -> int:
        return len(self._boxes)

    def open(self, client_id: str, now: float) -> Outbox:
        """The client's outbox, made on first use (lock held)."""
        box = self._boxes.get(client_id)
        if box is None:
            box = self._boxes[client_id] = Outbox(threading.Condition(self._lock), last_seen=now)
        return box

    def put(self, tasks: Iterable[Task], now: float) -> None:
        """Hand finished tasks to their owners' outboxes and wake their collectors (lock held)."""
        woken: dict[str, Outbox] = {}
        for task in tasks:
            if task.owner is None:
                continue
            box = woken.get(task.owner) or self.open(task.owner, now)
            woken[task.owner] = box
            release = task.state is TaskState.DONE and not task.options.get("keep")
            box.records.append((Finished(task.id, task.state, task.result, task.error), release))
            self.held_bytes += len(task.result or "")
        for box in woken.values():
            box.ready.notify()

    def take(
        self, client_id: str, timeout: float, most: int, most_bytes: int, now: float, sequence: int | None = None
    ) -> list[Finished]:
        """Up to most records of this client holding at most most_bytes of values (at least one record), waiting
        up to timeout seconds for the first; a collect numbered as the last one gets its records again (lock held)."""
        box = self.open(client_id, now)
        if sequence is not None and sequence == box.last_sequence:  # asked again: its answer was lost on the way
            box.last_seen = now
            return box.last_batch
        box.delivered = []  # not acknowledged (a client that started over): they stay until --result-ttl
        box.ready.wait_for(lambda: box.records or self.closed or box.gone, timeout)
        box.last_seen = now
        taken: list[Finished] = []
        records, delivered = box.records, box.delivered
        size = 0
        while records and len(taken) < most:
            record, release = records[0]
            length = len(record.payload or "")
            if taken and size + length > most_bytes:
                break
            records.popleft()
            size += length
            taken.append(record)
            if release:
                delivered.append(record.id)
        self.held_bytes -= size
        if sequence is not None:
            box.last_sequence, box.last_batch = sequence, taken
        else:
            box.delivered = []  # a caller that does not number its collects never says it has them
        return taken

    def acknowledged(self, client_id: str, sequence: int | None) -> list[str]:
        """The ids of values the client's last collect took, when this collect's number says it has them (lock held)."""
        box = self._boxes.get(client_id)
        if box is None or box.last_sequence is None or sequence != box.last_sequence + 1:
            return []
        ids, box.delivered, box.last_batch = box.delivered, [], []
        return ids

    def drop(self, client_id: str) -> None:
        """Forget a client's outbox now, waking its collect (lock held)."""
        box = self._boxes.pop(client_id, None)
        if box is not None:
            self._forget(box)
            box.gone = True
            box.ready.notify_all()

    def forget_idle(self, now: float) -> list[str]:
        """Drop the outboxes of clients that stopped collecting; their ids (lock held)."""
        gone = [client_id for client_id, box in self._boxes.items() if now - box.last_seen > OUTBOX_IDLE]
        for client_id in gone:
            self._forget(self._boxes.pop(client_id))
        return gone

    def _forget(self, box: Outbox) -> None:
        """Stop counting the values of an outbox that is dropped."""
        self.held_bytes -= sum(len(record.payload or "") for record, _ in box.records)

    def close(self) -> None:
        """Wake every collector: the master is stopping (lock held)."""
        self.closed = True
        for box in self._boxes.values():
            box.ready.notify_all()
