"""The records in which the master describes itself: `Stats` (with `MasterInfo` and `WorkerRow`) and `Limits`.

Part of the wire's records (`wire.py` re-exports them), apart because they are many fields and few rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .protocol import check_batch, check_fields
from .records import Plain, as_dict, checked, field_names, known

__all__ = ["Limits", "MasterInfo", "Stats", "WorkerRow"]


@dataclass(slots=True)
class WorkerRow(Plain):
    """One worker in stats."""

    id: str
    host: str = "?"
    pid: int = 0
    concurrency: int = 0
    running: int = 0
    prefetched: int = 0
    done: int = 0
    failed: int = 0
    last_seen: float = 0.0  # seconds since the worker was last heard of
    state: str = "live"

    @classmethod
    def from_wire(cls, row: Any) -> WorkerRow:
        """A row as stats returned it."""
        return checked(cls(**known(cls, check_fields(row, "a worker row", ("id",)))), "a worker row")


@dataclass(slots=True)
class MasterInfo(Plain):
    """The master itself in stats: its name, epoch and pid, seconds up, whether its store survives restarts,
    and what its store last failed with while it does not work (None: it works)."""

    name: str
    epoch: str
    pid: int
    uptime: float
    durable: bool
    store_error: str | None = None


@dataclass(slots=True)
class Stats:
    """Workers, tasks per state, totals and the master's own details."""

    master: MasterInfo
    workers: list[WorkerRow]
    lost_workers: list[WorkerRow]
    counts: dict[str, int]
    submitted: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    clients: int = 0
    subscriptions: int = 0
    throughput_1m: float = 0.0

    def to_wire(self) -> dict[str, Any]:
        """The wire form (also what `Client.stats` and the dashboard show)."""
        workers, lost = [w.to_wire() for w in self.workers], [w.to_wire() for w in self.lost_workers]
        return {**as_dict(self), "master": self.master.to_wire(), "workers": workers, "lost_workers": lost}

    @classmethod
    def from_wire(cls, stats: Any) -> Stats:
        """Stats as the master returned them."""
        fields = check_fields(stats, "stats", ("master", "workers", "lost_workers", "counts"))
        values = known(cls, fields)
        master = MasterInfo(**known(MasterInfo, check_fields(fields["master"], "master", ("name", "epoch"))))
        values["master"] = checked(master, "the master in stats")
        for key in ("workers", "lost_workers"):
            values[key] = [WorkerRow.from_wire(w) for w in check_batch(fields[key], key, 1_000_000)]
        return checked(cls(**values), "stats")


@dataclass(slots=True)
class Limits(Plain):
    """The limits a master enforces, so callers can check before sending, and its epoch."""

    max_payload: int
    max_batch: int
    max_pending: int
    max_subscriptions_per_client: int
    epoch: str
    durable: bool
    """Whether its tasks survive it (--store): when an in-memory master is gone, so are its tasks."""
    max_value: int = 0
    """Largest encoded value it takes in chunks (0: a master that takes none, only max_payload in a message)."""

    @classmethod
    def from_wire(cls, limits: Any) -> Limits:
        """Limits as the master returned them."""
        fields = check_fields(limits, "limits", field_names(cls)[:-1])
        return checked(cls(**known(cls, fields)), "limits")
