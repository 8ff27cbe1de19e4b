"""`SqliteStore`: the master's state in one SQLite file (WAL), so that it survives the master.

Every call that changes state commits before it returns: a task is durable before `submit` answers, a
result before `report` does. Leases of running tasks also live in memory, as in every store, because
their deadlines move with each heartbeat and need no disk write. On opening, tasks that were running
get a fresh lease of two lease periods: their worker renews it once it has reconnected, or it expires
and they run again.

Pending tasks stay on disk (the master's memory does not grow with the queue): the queue is a partial
index on (priority, seq), so leasing the next tasks is one indexed read, whatever the queue length.
"""

from __future__ import annotations

import itertools
import json
import logging
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError, StoreUnavailable
from .protocol import TaskState
from .store import RESULT_STATES, Snapshot, TaskStore
from .task import Task, damaged, tombstone
from .values import Payload

log = logging.getLogger(__name__)

SCHEMA_VERSION = 4
"""Version 2: finished tasks are indexed by `finished IS NOT NULL` (version 1's index is dropped on opening).
Version 3: a result carries its CRC-32 (`result_sum`); version 4: arguments too (`payload_sum`). Values
stored before have none and are not checked."""
SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, func TEXT NOT NULL, payload TEXT, options TEXT NOT NULL,
    owner TEXT, priority INTEGER NOT NULL, target TEXT, state TEXT NOT NULL, attempts INTEGER NOT NULL,
    lost INTEGER NOT NULL, unseen_losses INTEGER NOT NULL, retried INTEGER NOT NULL, worker TEXT,
    token INTEGER NOT NULL, result TEXT, error TEXT, errors TEXT, submitted REAL NOT NULL, started REAL,
    finished REAL, due REAL, result_sum INTEGER, payload_sum INTEGER
);
CREATE INDEX IF NOT EXISTS queue ON tasks (priority DESC, seq) WHERE state = 'pending' AND target IS NULL;
CREATE INDEX IF NOT EXISTS targeted ON tasks (target, seq) WHERE state = 'pending' AND target IS NOT NULL;
CREATE INDEX IF NOT EXISTS retrying ON tasks (due) WHERE state = 'retrying';
CREATE INDEX IF NOT EXISTS finished_at ON tasks (finished) WHERE finished IS NOT NULL;
CREATE INDEX IF NOT EXISTS running ON tasks (seq) WHERE state = 'running';
CREATE TABLE IF NOT EXISTS gone (id TEXT PRIMARY KEY, reason TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS gone_at ON gone (at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
COLUMNS = (
    "id, func, payload, options, owner, state, attempts, lost, unseen_losses, retried, worker, token, "
    "result, error, errors, submitted, started, finished, due, seq, result_sum, payload_sum"
)
CHUNK = 500
"""Ids per `IN (...)` query (SQLite limits the number of parameters)."""
EXPIRE_BATCH = 100_000
"""Most results expired in one reaper pass (the rest wait for the next)."""
SYNC_MODES = ("full", "normal")
FINISHED_SQL = "finished IS NOT NULL"
"""Finished tasks (done, failed, cancelled): only they have a finish time. An `IN` list here would cost SQLite
a temporary table per row written (half its work per task), because every write checks the partial indexes."""


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _sum(payload: Payload | None) -> int | None:
    """The CRC-32 a stored value carries, so that a flipped byte reads as damage, never as another value."""
    if payload is None:
        return None
    return zlib.crc32(payload if isinstance(payload, bytes) else payload.encode("utf-8", "surrogatepass"))


def _chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


def _marks(ids: Sequence[str]) -> str:
    return ",".join("?" * len(ids))


LOCKED_WAIT = 1.0
"""Seconds to wait for a store file another process holds before refusing it ("in use by another master")."""


class SqliteStore(TaskStore):
    """The durable store: every task, lease owner, attempt and result in one SQLite file."""

    durable = True
    faults = (sqlite3.Error,)

    def __init__(self, path: str | Path, now: float, lease_timeout: float, sync: str = "full") -> None:
        super().__init__()
        if sync not in SYNC_MODES:
            raise ConfigError(f"store sync must be one of {', '.join(SYNC_MODES)}, not {sync!r}")
        self.path = Path(path)
        self._closed = False
        if self.path.exists() and self.path.stat().st_size == 0:
            raise ConfigError(
                f"store {self.path} is an empty file (0 bytes), not a store a master wrote: its tasks, if it had "
                "any, are gone. Restore it from a backup, or give a path that does not exist yet for a new store"
            )
        log_was_there = Path(f"{self.path}-wal").exists()
        try:
            # The master's lock serialises use; only a second master contends for the file, and it is refused.
            self._db = sqlite3.connect(self.path, timeout=LOCKED_WAIT, check_same_thread=False)
            try:
                self._open(sync)
                self._check_and_mark_open(log_was_there)
            except BaseException:
                self._db.close()  # let go of the file and its lock now, not when the traceback is collected
                raise
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc):
                raise ConfigError(f"store {self.path} is in use by another master") from None
            raise ConfigError(f"cannot open store {self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            if "malformed" in str(exc):
                raise ConfigError(f"store {self.path} is damaged: {exc}; restore it from a backup") from None
            raise ConfigError(f"{self.path} is not a pyrodist store: {exc}") from None
        self._load(now, lease_timeout)

    def _open(self, sync: str) -> None:
        db = self._db
        db.execute("PRAGMA locking_mode = EXCLUSIVE")  # one master per store: a second one is refused
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {sync.upper()}")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, 1, 2, 3, SCHEMA_VERSION):
            raise ConfigError(f"store {self.path} has schema version {version}; this pyrodist reads {SCHEMA_VERSION}")
        db.execute("DROP INDEX IF EXISTS finished")  # version 1's
        db.executescript(SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(tasks)")}
        for column in ("result_sum", "payload_sum"):  # added by versions 3 and 4
            if column not in columns:
                db.execute(f"ALTER TABLE tasks ADD COLUMN {column} INTEGER")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.commit()

    def _check_and_mark_open(self, log_was_there: bool) -> None:
        """Refuse a damaged file or one whose write-ahead log was lost; then mark the file as in use."""
        db = self._db
        damage = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
        if damage != ["ok"]:
            raise ConfigError(
                f"store {self.path} is damaged: {'; '.join(damage)}. Restore it from a backup "
                f"(`pyrodist master --store {self.path} --check` runs the full check)"
            )
        in_use = db.execute("SELECT value FROM meta WHERE key = 'open'").fetchone()
        if in_use == ("1",) and not log_was_there:
            raise ConfigError(
                f"store {self.path} was not closed cleanly and its write-ahead log {self.path}-wal is missing: "
                "the changes it held are not in the file (was the file copied or moved without it?). Put the "
                "-wal file back next to it; to start from what the file alone holds, losing those changes, run "
                f"`pyrodist master --store {self.path} --check --accept-loss` first"
            )
        db.execute("INSERT OR REPLACE INTO meta VALUES ('open', '1')")
        db.commit()
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the mark is in the file itself, not only in the log

    def _load(self, now: float, lease_timeout: float) -> None:
        def held_over(task: Task) -> None:  # its worker, reconnecting with backoff, renews it; or it runs again
            task.deadline = now + 2 * lease_timeout

        self._read_state(held_over)
        log.info(
            "store %s opened: %s (%d leases held over from before)",
            self.path,
            ", ".join(f"{n} {state}" for state, n in self.counts().items() if n) or "empty",
            len(self._running),
        )

    def _read_state(self, lease: Callable[[Task], None]) -> None:
        """Counts, counters and running tasks as the file holds them; lease(task) sets each lease's deadline."""
        db = self._db
        counts = dict.fromkeys(TaskState, 0)
        for state, count in db.execute("SELECT state, count(*) FROM tasks GROUP BY state"):
            counts[TaskState(state)] = count
        counts[TaskState.EXPIRED] = db.execute("SELECT count(*) FROM gone").fetchone()[0]
        query = "SELECT target, count(*) FROM tasks WHERE state = 'pending' AND target IS NOT NULL GROUP BY target"
        targeted = dict(db.execute(query).fetchall())
        self._read_leases(lease)  # all read: only now replace what memory holds (a failed read leaves it)
        self._counts, self._targeted_pending = counts, targeted

    def _read_leases(self, lease: Callable[[Task], None]) -> None:
        """The running tasks and the next seq as the file holds them (indexed: O(running), not O(tasks))."""
        top_seq = self._db.execute("SELECT max(seq) FROM tasks").fetchone()[0]
        running = self._select("state = 'running'")
        for task in running:
            lease(task)
        self._running = {task.id: task for task in running}
        self._seq = itertools.count((top_seq or 0) + 1)

    def _fault(self, exc: Exception) -> StoreUnavailable:
        message = f"the task store cannot be used: {exc} (store {self.path}); this call changed nothing"
        if self.fault is None:
            log.error("%s; the master keeps serving and uses the store again once it works", message)
        self.fault, self.fault_at = str(exc), time.monotonic()
        return StoreUnavailable(message)

    def _undo(self, exc: Exception, before: Snapshot) -> StoreUnavailable:
        error = self._fault(exc)
        running, counts, targeted = before

        def as_before(task: Task) -> None:  # a lease keeps its deadline (heartbeats live in memory only)
            held = running.get(task.id)
            if held is not None:
                task.deadline, task.seen_running = held.deadline, held.seen_running

        try:
            self._db.rollback()  # the file is as before the operation; so are the counts of the snapshot
            self._read_leases(as_before)  # running tasks changed in place: read them again
        except sqlite3.Error as again:
            self.stale = True  # memory is read again, whole, before the next operation
            log.warning("store %s cannot be read again yet: %s", self.path, again)
        else:
            self._counts, self._targeted_pending = counts, targeted
        return error

    def _reload(self) -> None:
        running = self._running

        def as_before(task: Task) -> None:
            held = running.get(task.id)
            task.deadline = held.deadline if held is not None else 0.0
            task.seen_running = held.seen_running if held is not None else False

        self._read_state(as_before)
        self.stale = False

    def close(self) -> None:
        """Close the file (every change was committed already); closing again does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self._db.rollback()  # an operation that failed may have left its transaction open
            self._db.execute("UPDATE meta SET value = '0' WHERE key = 'open'")
            self._db.commit()
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the file alone holds everything
        except sqlite3.Error as exc:  # the next master finds the mark and its log, and starts as after a crash
            log.warning("store %s could not be marked closed: %s", self.path, exc)
        finally:
            self._db.close()

    # -- hooks

    def _insert(self, tasks: list[Task]) -> list[Task]:
        known: set[str] = set()
        for chunk in _chunks([t.id for t in tasks]):
            known.update(r[0] for r in self._db.execute(f"SELECT id FROM tasks WHERE id IN ({_marks(chunk)})", chunk))
        new, seen = [], set()
        for task in tasks:
            if task.id not in known and task.id not in seen:
                seen.add(task.id)
                new.append(task)
        self._db.executemany(
            "INSERT INTO tasks (seq, id, func, payload, options, owner, priority, target, state, attempts, lost, "
            "unseen_losses, retried, token, submitted, payload_sum) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, 0, 0, 0, 0, ?, ?)",
            [
                (t.seq, t.id, t.func, t.payload, json.dumps(t.options) if t.options else "{}", t.owner, t.priority,
                 t.target, t.submitted, _sum(t.payload))
                for t in new
            ],
        )  # fmt: skip
        return new

    def _find(self, task_id: str) -> Task | None:
        found = self._select("id = ?", (task_id,))
        if found:
            return found[0]
        row = self._db.execute("SELECT reason, at FROM gone WHERE id = ?", (task_id,)).fetchone()
        return tombstone(task_id, row[0], row[1]) if row else None

    def _take(self, worker: str, max_tasks: int) -> list[Task]:
        taken: list[Task] = []
        if self._targeted_pending.get(worker):
            where = "state = 'pending' AND target = ? ORDER BY seq LIMIT ?"
            taken = self._select(where, (worker, max_tasks))
        if len(taken) < max_tasks:
            where = "state = 'pending' AND target IS NULL ORDER BY priority DESC, seq LIMIT ?"
            taken += self._select(where, (max_tasks - len(taken),))
        return taken

    def _take_targeted(self, worker: str) -> list[Task]:
        return self._select("state = 'pending' AND target = ?", (worker,))

    def _enqueue(self, task: Task) -> None:
        """Nothing to do: the saved state 'pending' puts it back in the queue index, at its seq."""

    def _schedule(self, task: Task) -> None:
        """Nothing to do: the saved state 'retrying' and `due` are the schedule."""

    def _due(self, now: float) -> list[Task]:
        return self._select("state = 'retrying' AND due <= ?", (now,))

    def _release_values(self, tasks: list[Task]) -> None:
        for task in tasks:
            task.result = None
        seqs = [(t.seq,) for t in tasks]
        self._db.executemany("UPDATE tasks SET result = NULL, result_sum = NULL WHERE seq = ?", seqs)

    def _save(self, tasks: list[Task]) -> None:
        # The two changes every task makes write only what they change (a third less work for SQLite per
        # row): a lease (state running: worker, token, attempts, started) and a success (state done:
        # result, finished, arguments dropped). Nothing else changes a task on its way into these states.
        leased = [(t.attempts, t.worker, t.token, t.started, t.seq) for t in tasks if t.state is TaskState.RUNNING]
        if leased:
            self._db.executemany(
                "UPDATE tasks SET state = 'running', attempts = ?, worker = ?, token = ?, started = ? WHERE seq = ?",
                leased,
            )
        succeeded = [(t.result, _sum(t.result), t.finished, t.seq) for t in tasks if t.state is TaskState.DONE]
        if succeeded:
            self._db.executemany(
                "UPDATE tasks SET state = 'done', result = ?, result_sum = ?, finished = ?, payload = NULL "
                "WHERE seq = ?",
                succeeded,
            )
        if len(leased) + len(succeeded) == len(tasks):
            return
        self._db.executemany(
            "UPDATE tasks SET state = ?, attempts = ?, lost = ?, unseen_losses = ?, retried = ?, worker = ?, "
            "token = ?, result = ?, result_sum = ?, error = ?, errors = ?, started = ?, finished = ?, due = ?, "
            "payload = CASE WHEN ? THEN NULL ELSE payload END WHERE seq = ?",
            [
                (t.state.value, t.attempts, t.lost, t.unseen_losses, t.retried, t.worker, t.token, t.result,
                 _sum(t.result), _json(t.error), _json(list(t.errors)) if t.errors else None, t.started,
                 t.finished, t.due, t.payload is None, t.seq)
                for t in tasks
                if t.state is not TaskState.RUNNING and t.state is not TaskState.DONE
            ],
        )  # fmt: skip

    def _finished_before(self, before: float) -> list[str]:
        query = f"SELECT id FROM tasks WHERE {FINISHED_SQL} AND finished < ? LIMIT ?"
        return [row[0] for row in self._db.execute(query, (before, EXPIRE_BATCH))]

    def _drop(self, ids: list[str]) -> dict[str, TaskState]:
        dropped: dict[str, TaskState] = {}
        for chunk in _chunks(ids):
            rows = self._db.execute(f"SELECT id, state FROM tasks WHERE id IN ({_marks(chunk)})", chunk).fetchall()
            dropped.update((task_id, TaskState(state)) for task_id, state in rows)
            self._db.execute(f"DELETE FROM tasks WHERE id IN ({_marks(chunk)}) AND {FINISHED_SQL}", chunk)
        return {i: s for i, s in dropped.items() if s in RESULT_STATES}

    def _bury(self, ids: list[str], reason: str, now: float) -> int:
        buried = 0
        for chunk in _chunks(ids):
            buried -= self._db.execute(f"SELECT count(*) FROM gone WHERE id IN ({_marks(chunk)})", chunk).fetchone()[0]
            self._db.executemany("INSERT OR REPLACE INTO gone VALUES (?, ?, ?)", [(i, reason, now) for i in chunk])
            buried += len(chunk)
        return buried

    def _forget_tombstones(self, before: float) -> None:
        self._counts[TaskState.EXPIRED] -= self._db.execute("DELETE FROM gone WHERE at < ?", (before,)).rowcount

    def _commit(self) -> None:
        self._db.commit()

    def _select(self, where: str, params: Sequence[Any] = ()) -> list[Task]:
        return [self._task(row) for row in self._db.execute(f"SELECT {COLUMNS} FROM tasks WHERE {where}", params)]

    @staticmethod
    def _task(row: Sequence[Any]) -> Task:
        (task_id, func, payload, options, owner, state, attempts, lost, unseen, retried, worker, token, result,
         error, errors, submitted, started, finished, due, seq, result_sum, payload_sum) = row  # fmt: skip
        task = Task(task_id, func, payload, json.loads(options) if options != "{}" else {}, owner)
        task.state = TaskState(state)
        task.attempts, task.lost, task.unseen_losses, task.retried = attempts, lost, unseen, retried
        task.worker, task.token, task.result, task.seq = worker, token, result, seq
        task.error = json.loads(error) if error else None
        task.errors = tuple(json.loads(errors)) if errors else ()
        task.submitted, task.started, task.finished, task.due = submitted, started, finished, due
        if result is not None and result_sum is not None and _sum(result) != result_sum:
            task.state, task.result = TaskState.FAILED, None  # a clear failure, never a wrong value
            task.error = damaged(f"the stored result of task {task_id}")
        if payload is not None and payload_sum is not None and _sum(payload) != payload_sum:
            task.error = damaged(f"the stored arguments of task {task_id}")  # lease() fails it, never runs it
        return task
