"""A task store that cannot write changes nothing, says so, and works again once the storage does.

In-process, the storage fault is SQLite's own: `PRAGMA query_only` makes every write fail with
"attempt to write a readonly database" (a write-protected file says the same), `PRAGMA max_page_count`
makes the file full ("database or disk is full"). Every store operation is tried under the fault: it
raises StoreUnavailable naming the store, and the store reads exactly as before (counts, every task's
record, the leases and their deadlines); healed, the same operation succeeds. The master and its workers
are then driven through a fault in-process, and last a real cluster fills a real disk (a small tmpfs).
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyrodist import storefaults
from pyrodist.errors import StoreUnavailable, TaskError
from pyrodist.sqlstore import SqliteStore
from pyrodist.store import TaskStore
from pyrodist.wire import Outcome
from tests import tasks
from tests.conftest import InProcess, Processes, start_cluster, wait_until
from tests.test_store import LEASE, counts, done, failure, fill, get, make_task

IDS = ("p1", "p2", "r1", "r2", "d1", "t1", "y1")


@pytest.fixture(autouse=True)
def no_fault_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """In this process a fault clears at the first success (test_a_fault_is_held... checks the hold)."""
    monkeypatch.setattr(storefaults, "FAULT_HELD", 0.0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """A store with a task in every state: running r1 r2 (on w1), done d1, retrying y1, pending p1 p2, t1 for w9."""
    made = SqliteStore(tmp_path / "s.db", 0.0, LEASE)
    fill(made, "r1", "r2", "d1")
    fill(made, "y1", retries=3, retry_backoff=100.0)
    leased = {t.id: t for t in made.lease("w1", 10, 1.0, LEASE)}
    made.finish("w1", [done(leased["d1"]), failure(leased["y1"])], 2.0)
    fill(made, "p1", "p2", now=3.0)
    fill(made, "t1", now=3.0, worker="w9")
    assert made.counts() == counts(pending=3, running=2, done=1, retrying=1)
    yield made
    made.close()


def snapshot(store: TaskStore) -> Any:
    """Everything a caller can see of the store."""
    records = {i: get(store, i).record().to_wire() for i in IDS}
    leases = {i: (t.worker, t.token, t.deadline, t.seen_running) for i in IDS if (t := get(store, i)).worker}
    return store.counts(), records, leases, store.targeted_waiting(), store.pending_count()


def read_only(store: SqliteStore, on: bool = True) -> None:
    store._db.execute(f"PRAGMA query_only = {'ON' if on else 'OFF'}")


OPERATIONS: dict[str, Callable[[SqliteStore], Any]] = {
    "add": lambda s: s.add([make_task("new")], 5.0),
    "lease": lambda s: s.lease("w2", 5, 5.0, LEASE),
    "release": lambda s: s.release("w1", [("r1", get(s, "r1").token)]),
    "finish done": lambda s: s.finish("w1", [done(get(s, "r1"), "9.0"), done(get(s, "r2"))], 5.0),
    "finish failed": lambda s: s.finish("w1", [failure(get(s, "r1"))], 5.0),
    "expire leases": lambda s: s.expire(100.0),
    "promote retries": lambda s: s.promote(1_000.0),
    "cancel pending": lambda s: s.cancel("p1", 5.0),
    "cancel running": lambda s: s.cancel("r1", 5.0),
    "fail targeted": lambda s: s.fail_targeted("w9", 5.0, "gone"),
    "forget": lambda s: s.forget(["d1"], 5.0),
    "expire results": lambda s: s.expire_results(1e6, 10.0),
}


@pytest.mark.parametrize("operation", OPERATIONS.values(), ids=OPERATIONS.keys())
def test_an_operation_that_cannot_write_changes_nothing_and_succeeds_once_healed(
    store: SqliteStore, operation: Callable[[SqliteStore], Any]
) -> None:
    before = snapshot(store)
    read_only(store)
    with pytest.raises(StoreUnavailable, match=r"the task store cannot be used: .*readonly.*s\.db.*changed nothing"):
        operation(store)
    assert snapshot(store) == before
    assert store.fault is not None and "readonly" in store.fault
    with pytest.raises(StoreUnavailable):  # and again: still nothing changes
        operation(store)
    assert snapshot(store) == before

    read_only(store, False)
    operation(store)
    assert store.fault is None
    assert snapshot(store) != before or operation is OPERATIONS["expire results"]


def test_a_fault_is_held_a_moment_so_that_small_writes_that_fit_do_not_hide_it(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storefaults, "FAULT_HELD", 2.0)
    read_only(store)
    with pytest.raises(StoreUnavailable):
        store.add([make_task("new")], 5.0)
    read_only(store, False)
    store.add([make_task("new")], 5.0)
    assert store.fault is not None and "readonly" in store.fault  # one success right after: still failing
    store.fault_at -= 2.5
    store.add([make_task("newer")], 5.0)
    assert store.fault is None


def test_what_memory_holds_after_a_fault_is_what_the_file_holds(store: SqliteStore, tmp_path: Path) -> None:
    read_only(store)
    for operation in OPERATIONS.values():
        with pytest.raises(StoreUnavailable):
            operation(store)
    read_only(store, False)
    store.lease("w3", 1, 6.0, LEASE)
    counts, records = store.counts(), {i: get(store, i).record().to_wire() for i in IDS}
    store.close()
    reopened = SqliteStore(tmp_path / "s.db", 6.0, LEASE)
    try:
        assert reopened.counts() == counts
        assert {i: get(reopened, i).record().to_wire() for i in IDS} == records
    finally:
        reopened.close()


def test_a_full_file_refuses_a_result_and_keeps_the_lease(store: SqliteStore) -> None:
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    task = get(store, "r1")
    big = repr("x" * 200_000)  # needs new pages
    with pytest.raises(StoreUnavailable, match="full"):
        store.finish("w1", [Outcome(task.id, task.token, True, result=big)], 5.0)
    assert get(store, "r1").state.value == "running" and store.counts()["done"] == 1
    store._db.execute("PRAGMA max_page_count = 1073741823")
    accepted, ignored = store.finish("w1", [Outcome(task.id, task.token, True, result=big)], 5.0)
    assert [t.id for t in accepted] == ["r1"] and not ignored
    assert get(store, "r1").result == big


def test_a_store_that_cannot_even_be_read_again_reads_before_its_next_operation(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(store)
    read_only(store)
    real, real_state = SqliteStore._read_leases, SqliteStore._read_state

    def unreadable(self: SqliteStore, lease: Any) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(SqliteStore, "_read_leases", unreadable)
    with pytest.raises(StoreUnavailable):
        store.finish("w1", [done(get(store, "r1"))], 5.0)
    assert store.stale
    monkeypatch.setattr(SqliteStore, "_read_state", unreadable)  # and still unreadable at the next operation:
    with pytest.raises(StoreUnavailable):
        store.add([make_task("refused")], 6.0)
    assert store.stale and get(store, "r1").state.value == "running"
    monkeypatch.setattr(SqliteStore, "_read_state", real_state)
    monkeypatch.setattr(SqliteStore, "_read_leases", real)
    read_only(store, False)
    store.add([make_task("after")], 6.0)
    assert not store.stale and store.fault is None
    assert get(store, "r1").state.value == "running" and store.counts()["pending"] == before[0]["pending"] + 1


# ---- the master and its workers through a fault ---------------------------------------------------


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[InProcess]:
    cluster = InProcess(store=SqliteStore(tmp_path / "m.db", 0.0, 0.3))
    try:
        yield cluster
    finally:
        cluster.close()


def test_a_master_whose_store_cannot_write_refuses_new_work_and_catches_up_when_it_can(durable: InProcess) -> None:
    store = durable.master._store
    assert isinstance(store, SqliteStore)
    client = durable.client()
    first = client.map(tasks.inc, range(20))
    read_only(store)
    with pytest.raises(StoreUnavailable, match="readonly"):
        client.submit(tasks.inc, 100)
    stats = client.stats()
    assert "readonly" in stats["master"]["store_error"]
    assert stats["counts"]["pending"] == 20 and min(stats["counts"].values()) >= 0

    worker = durable.start_worker()  # it cannot lease while the store is read-only, and keeps trying
    wait_until(lambda: any(w["id"] == worker.worker.id for w in client.stats()["workers"]), what="the worker")
    assert worker.thread.is_alive() and client.stats()["counts"]["running"] == 0

    read_only(store, False)
    assert client.gather(first, timeout=30) == list(range(1, 21))
    assert client.stats()["master"]["store_error"] is None
    assert client.submit(tasks.inc, 100).result(timeout=30) == 101


def test_results_a_full_store_refused_are_reported_again_and_none_is_lost(durable: InProcess) -> None:
    store = durable.master._store
    assert isinstance(store, SqliteStore)
    client = durable.client()
    futures = client.map(tasks.big_result, [50_000] * 10)  # small arguments, results that need new pages
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")  # leases still fit (rows change in place)
    worker = durable.start_worker()
    wait_until(lambda: store.fault is not None, what="a result the full store refuses")
    assert "full" in client.stats()["master"]["store_error"]
    assert worker.thread.is_alive()

    store._db.execute("PRAGMA max_page_count = 1073741823")
    assert client.gather(futures, timeout=30) == [b"x" * 50_000] * 10
    stats = client.stats()
    assert stats["done"] == 10 and stats["counts"]["done"] == 10 and stats["master"]["store_error"] is None
    assert worker.thread.is_alive()


# ---- a real cluster on a real full disk ------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def fill_disk(path: Path, leave: int) -> None:
    """Write path until the disk is full, then give back `leave` bytes."""
    chunk = b"\0" * 65536
    with open(path, "wb") as out:
        try:
            while True:
                out.write(chunk)
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        out.truncate(max(0, out.tell() - leave))


def test_a_full_disk_loses_no_result_and_the_master_catches_up_by_itself(small_disk: Path, procs: Processes) -> None:
    cluster = start_cluster(procs, workers=0, master_args=("--store", str(small_disk / "state.db")))
    with cluster.client() as client:
        futures = client.map(tasks.big_result, [20_000] * 120, chunksize=1)  # 120 results of 27 KB: more than is left
        fill_disk(small_disk / "filler", leave=64 * 1024)
        workers = [cluster.start_worker() for _ in range(2)]

        def failing() -> str | None:
            stats = client.stats()
            assert min(stats["counts"].values()) >= 0, stats["counts"]
            return stats["master"]["store_error"]  # type: ignore[no-any-return]

        error = wait_until(failing, timeout=30, what="the store to fill up")
        assert "full" in error
        with pytest.raises(StoreUnavailable, match="full"):  # 1 MB of arguments: far more than is left
            client.submit(tasks.echo, "x" * 1_000_000)
        assert all(worker.poll() is None for worker in workers), "a worker exited on the master's store error"
        assert not all(f.done() for f in futures)

        (small_disk / "filler").unlink()
        assert client.gather(futures, timeout=60) == [b"x" * 20_000] * 120
        wait_until(lambda: client.stats()["master"]["store_error"] is None, what="the fault to clear")
        stats = client.stats()
        assert stats["done"] == 120 and stats["counts"]["done"] == 120 and stats["counts"]["pending"] == 0
        assert client.submit(tasks.inc, 1).result(timeout=30) == 2
    assert all(worker.poll() is None for worker in workers)
    master_log = procs.log(procs.procs[1])
    assert "the task store cannot be used" in master_log and "Traceback" not in master_log


def test_a_task_whose_stored_arguments_were_damaged_fails_clearly_instead_of_running(durable: InProcess) -> None:
    store = durable.master._store
    assert isinstance(store, SqliteStore)
    client = durable.client()
    good, bad = client.submit(tasks.inc, 1), client.submit(tasks.inc, 4)
    store._db.execute("UPDATE tasks SET payload = '[[5],{}]' WHERE id = ?", (bad.task_id,))  # was [[4],{}]
    store._db.commit()
    durable.start_worker()
    assert good.result(timeout=30) == 2
    with pytest.raises(TaskError, match=r"the stored arguments of task .*: damaged on disk") as caught:
        bad.result(timeout=30)
    assert caught.value.type_name == "StoreDamaged"
