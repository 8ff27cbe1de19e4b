"""SqliteStore only: what survives a restart or a crash, leases held over a restart, refusing a bad file.

The rules every store shares are tested against both stores in test_store.py.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pyrodist.errors import ConfigError
from pyrodist.protocol import TaskState
from pyrodist.sqlstore import SCHEMA_VERSION, SqliteStore
from pyrodist.storecheck import check_file
from pyrodist.task import Task
from pyrodist.wire import Outcome
from tests.conftest import ROOT
from tests.test_store import LEASE, counts, done, failure, fill, get, held, ids, make_task


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "s.db"


@contextmanager
def opened(path: Path, now: float = 0.0, sync: str = "full") -> Iterator[SqliteStore]:
    store = SqliteStore(path, now, LEASE, sync=sync)
    try:
        yield store
    finally:
        store.close()


# ---- what a restart keeps ----------------------------------------------------------------------


@pytest.mark.parametrize("sync", ["full", "normal"])
def test_pending_tasks_keep_their_order_and_priority_across_a_restart(path: Path, sync: str) -> None:
    with opened(path, sync=sync) as store:
        store.add(
            [make_task("a"), make_task("b"), make_task("hi", {"priority": 5}), make_task("low", {"priority": -1})], 1.0
        )
        fill(store, "mine", worker="w1")
    with opened(path, 10.0) as store:
        assert store.counts() == counts(pending=5)
        assert store.targeted_waiting() == {"w1": 1}
        assert store.has_pending() and store.has_work_for("w1")
        task = get(store, "a")
        assert (task.state, task.submitted, task.payload) == (TaskState.PENDING, 1.0, "((4,),{})")
        fill(store, "new", now=11.0)  # after the old tasks of its priority
        assert ids(store.lease("w2", 10, 12.0, LEASE)) == ["hi", "a", "b", "new", "low"]
        assert ids(store.lease("w1", 10, 12.0, LEASE)) == ["mine"]


def test_results_and_errors_survive_a_restart(path: Path) -> None:
    with opened(path) as store:
        fill(store, "ok", "bad", now=1.0, retries=1)
        ok, bad = store.lease("w1", 2, 2.0, LEASE)
        store.finish("w1", [done(ok, "42"), failure(bad, KeyError("x"))], 3.0)
        (bad,) = store.lease("w2", 1, 4.0, LEASE)
        store.finish("w2", [failure(bad, KeyError("y"))], 5.0)
        fill(store, "stop")
        store.cancel("stop", 6.0)
        before = {i: get(store, i).record() for i in ("ok", "bad", "stop")}
    with opened(path, 10.0) as store:
        assert {i: get(store, i).record() for i in ("ok", "bad", "stop")} == before
        assert store.counts() == counts(done=1, failed=1, cancelled=1)
    assert before["ok"].payload == "42"
    assert before["bad"].state == "failed"
    assert [(e["message"], e["attempt"], e["worker"]) for e in before["bad"].errors] == [
        ("'x'", 1, "w1"),
        ("'y'", 2, "w2"),
    ]


def test_retrying_tasks_keep_their_due_time_across_a_restart(path: Path) -> None:
    with opened(path) as store:
        fill(store, "a", retries=2, retry_backoff=5.0)
        (task,) = store.lease("w1", 1, 0.0, LEASE)
        store.finish("w1", [failure(task)], 1.0)
    with opened(path, 3.0) as store:
        task = get(store, "a")
        assert (task.state, task.due, task.retried, task.attempts) == (TaskState.RETRYING, 6.0, 1, 1)
        assert store.counts() == counts(retrying=1)
        assert store.pending_count() == 1
        assert store.promote(5.9) == []
        assert ids(store.promote(6.0)) == ["a"]
        (task,) = store.lease("w1", 1, 6.0, LEASE)
        assert task.attempts == 2
        store.finish("w1", [failure(task)], 7.0)
        assert get(store, "a").due == 17.0  # the backoff doubled: the retry count survived too


def test_tombstones_and_counts_survive_a_restart(path: Path) -> None:
    with opened(path) as store:
        fill(store, "a", "b", "c")
        a, b, c = store.lease("w1", 3, 0.0, LEASE)
        store.finish("w1", [done(a), done(b)], 1.0)
        store.finish("w1", [done(c)], 8.0)
        assert store.forget(["a"], 2.0) == ["a"]
        assert store.expire_results(12.0, 10.0) == 1  # b
        fill(store, "p")
        before = store.counts()
        assert before == counts(pending=1, done=1, expired=2)
    with opened(path, 20.0) as store:
        assert store.counts() == before
        messages = {i: (get(store, i).state, (get(store, i).error or {})["message"]) for i in ("a", "b")}
        assert messages["a"][0] is messages["b"][0] is TaskState.EXPIRED
        assert "forgotten" in messages["a"][1] and "expired" in messages["b"][1]
        assert store.expire_results(22.5, 10.0) == 1  # c; the tombstones of a (2.0) and b (12.0) go
        assert store.get("a") is None and store.get("b") is None
        assert get(store, "c").state is TaskState.EXPIRED
        assert store.counts() == counts(pending=1, expired=1)


def test_sequence_continues_above_the_old_maximum_and_tokens_stay_fresh(path: Path) -> None:
    with opened(path) as store:
        fill(store, "a", "b", "c", "d")
        leased = store.lease("w1", 2, 0.0, LEASE)
        store.finish("w1", [done(leased[0])], 1.0)
        old_tokens = {t.token for t in leased}
    with opened(path, 5.0) as store:
        fill(store, "e", now=5.0)
        again = store.lease("w2", 10, 6.0, LEASE)
        assert ids(again) == ["c", "d", "e"]  # the new task after the old ones
        assert len({t.token for t in again} | old_tokens) == 5
        assert get(store, "b").token in old_tokens  # the lease held over keeps its token


# ---- leases held over a restart ----------------------------------------------------------------

HELD_OVER_DEADLINE = 100.0 + 2 * LEASE
"""A lease held over a restart at 100.0 lasts two lease periods (the worker reconnects with backoff)."""


def test_running_tasks_get_a_fresh_lease_for_the_same_worker_and_token(path: Path) -> None:
    with opened(path) as store:
        fill(store, "a", "b")
        a, b = store.lease("w1", 2, 0.0, LEASE)
        store.renew("w1", held(store, "a"), held(store, "b"), 1.0, LEASE)
    with opened(path, 100.0) as store:
        assert store.counts() == counts(running=2)
        kept = get(store, "a")
        assert (kept.state, kept.worker, kept.token) == (TaskState.RUNNING, "w1", a.token)
        assert kept.deadline == HELD_OVER_DEADLINE
        assert kept.attempts == 1 and kept.started == 0.0
        assert store.expire(HELD_OVER_DEADLINE) == ([], [])  # not before the fresh deadline
        assert store.renew("w1", held(store, "a"), held(store, "b"), 105.0, LEASE) == 2
        assert store.finish("w2", [done(b)], 106.0) == ([], ["b"])  # another worker's report: ignored
        accepted, ignored = store.finish("w1", [done(a, "'once'")], 106.0)
        assert (ids(accepted), ignored) == (["a"], [])
        assert store.finish("w1", [done(a, "'twice'")], 107.0) == ([], ["a"])
        assert store.counts() == counts(running=1, done=1)
    with opened(path, 200.0) as store:
        assert get(store, "a").result == "'once'"


def test_a_lease_held_over_and_not_renewed_expires_without_counting_an_attempt(path: Path) -> None:
    with opened(path) as store:
        fill(store, "a", max_attempts=1)
        (old,) = store.lease("w1", 1, 0.0, LEASE)
        store.renew("w1", held(store, "a"), held(store), 1.0, LEASE)  # it was running when the master stopped
    with opened(path, 100.0) as store:
        assert store.expire(HELD_OVER_DEADLINE) == ([], [])
        requeued, failed = store.expire(HELD_OVER_DEADLINE + 0.1)
        assert (ids(requeued), failed) == (["a"], [])  # max_attempts=1, yet not failed: no attempt was seen
        task = get(store, "a")
        assert (task.state, task.attempts, task.lost, task.unseen_losses) == (TaskState.PENDING, 0, 0, 1)
        (again,) = store.lease("w2", 1, 120.0, LEASE)
        assert again.attempts == 1 and again.token != old.token
        assert store.finish("w1", [done(old)], 121.0) == ([], ["a"])
        assert ids(store.finish("w2", [done(again)], 121.0)[0]) == ["a"]


# ---- refusing a file ---------------------------------------------------------------------------


@pytest.mark.slow  # sqlite waits out its 5 s busy timeout before it gives up
def test_a_second_store_on_an_open_file_is_refused(path: Path) -> None:
    with opened(path) as first:
        fill(first, "a")
        with pytest.raises(ConfigError, match="in use by another master"):
            SqliteStore(path, 0.0, LEASE)
        assert ids(first.lease("w1", 1, 1.0, LEASE)) == ["a"]  # the first one is unharmed
    with opened(path, 2.0) as again:
        assert again.counts() == counts(running=1)


def test_a_file_that_is_not_a_database_is_refused(path: Path) -> None:
    junk = b"this is not a database\n" * 200
    path.write_bytes(junk)
    with pytest.raises(ConfigError) as info:
        SqliteStore(path, 0.0, LEASE)
    assert str(path) in str(info.value) and "not a pyrodist store" in str(info.value)
    assert path.read_bytes() == junk


def test_a_store_of_another_schema_version_is_refused_and_let_go(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 7")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="schema version 7") as info:
        SqliteStore(path, 0.0, LEASE)
    assert str(path) in str(info.value)
    db = sqlite3.connect(path, timeout=0)  # the refused store holds no lock, even while its error lives on
    db.execute("PRAGMA user_version = 8")
    db.commit()
    db.close()


def test_a_version_1_store_is_upgraded_in_place(path: Path) -> None:
    """Version 1 indexed finished tasks with an IN list, which SQLite evaluates slowly on every write."""
    store = SqliteStore(path, 0.0, LEASE)
    store.add([Task("a", "math:sqrt", " [[4], {}]", {}, None), Task("b", "math:sqrt", " [[9], {}]", {}, None)], 0.0)
    (task,) = store.lease("w", 1, 1.0, LEASE)
    store.finish("w", [Outcome("a", task.token, True, result=" 2.0")], 2.0)
    store.close()
    db = sqlite3.connect(path)
    db.execute("DROP INDEX finished_at")
    db.execute("CREATE INDEX finished ON tasks (finished) WHERE state IN ('done', 'failed', 'cancelled')")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    reopened = SqliteStore(path, 3.0, LEASE)
    assert reopened.counts()["done"] == 1 and reopened.counts()["pending"] == 1
    assert reopened.expire_results(100.0, 10.0) == 1  # the new index finds finished tasks
    reopened.close()
    db = sqlite3.connect(path)
    indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "finished" not in indexes and "finished_at" in indexes
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


def test_a_store_in_a_missing_folder_or_with_a_bad_sync_mode_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "s.db"
    with pytest.raises(ConfigError, match="cannot open store") as info:
        SqliteStore(missing, 0.0, LEASE)
    assert str(missing) in str(info.value)
    with pytest.raises(ConfigError, match="store sync must be one of full, normal, not 'off'"):
        SqliteStore(tmp_path / "s.db", 0.0, LEASE, sync="off")


# ---- a crash -----------------------------------------------------------------------------------

CRASHING_MASTER = """
import json, sys
from pyrodist.protocol import error_info
from pyrodist.wire import Outcome
from pyrodist.sqlstore import SqliteStore
from pyrodist.task import Task

store = SqliteStore(sys.argv[1], 0.0, 10.0)
store.add([Task("r", "m:f", "p", {"retries": 1, "retry_backoff": 50.0}, None)], 1.0)
store.add([Task(f"t{i}", "m:f", f"(({i},),{{}})", {}, None) for i in range(10)], 1.0)
r, t0, t1, t2, t3 = store.lease("w1", 5, 2.0, 10.0)
error = error_info(ValueError("boom"), tb="")
store.finish("w1", [Outcome("r", r.token, False, error=error), Outcome("t2", t2.token, False, error=error)], 3.0)
store.finish("w1", [Outcome("t0", t0.token, True, result="0"), Outcome("t1", t1.token, True, result="1")], 3.0)
store.forget(["t1"], 4.0)
print(json.dumps({"ready": True, "t3": t3.token}), flush=True)
sys.stdin.read()  # until killed: close() never runs
"""


def crash_a_master(path: Path) -> dict[str, Any]:
    """Run CRASHING_MASTER on path and SIGKILL it; what it said before it died."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHING_MASTER, str(path)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, f"the crashing master died early: {proc.communicate()[1]}"
        said = json.loads(line)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.communicate()
    assert path.with_name(path.name + "-wal").exists()  # it died with its log not yet checkpointed
    return said  # type: ignore[no-any-return]


def test_a_killed_master_loses_nothing_it_committed(path: Path) -> None:
    said = crash_a_master(path)
    with opened(path, 10.0) as store:
        assert store.counts() == counts(pending=6, running=1, retrying=1, done=1, failed=1, expired=1)
        assert get(store, "t0").result == "0"
        assert (get(store, "t2").error or {})["message"] == "boom"
        assert get(store, "t1").state is TaskState.EXPIRED
        assert (get(store, "r").state, get(store, "r").due) == (TaskState.RETRYING, 53.0)
        t3 = get(store, "t3")
        assert (t3.state, t3.worker, t3.token) == (TaskState.RUNNING, "w1", said["t3"])
        assert ids(store.finish("w1", [Outcome("t3", said["t3"], True, result="3")], 11.0)[0]) == ["t3"]
        leased = store.lease("w2", 10, 12.0, LEASE)
        assert ids(leased) == [f"t{i}" for i in range(4, 10)]
        assert leased[0].payload == "((4,),{})"
        assert said["t3"] not in {t.token for t in leased}


# ---- damage found at opening --------------------------------------------------------------------


def test_an_empty_store_file_is_refused_not_taken_for_a_new_store(path: Path) -> None:
    path.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"is an empty file \(0 bytes\), not a store a master wrote") as info:
        SqliteStore(path, 0.0, LEASE)
    assert str(path) in str(info.value) and path.read_bytes() == b""
    assert check_file(path) == [f"{path} is an empty file (0 bytes)"]


def test_a_crashed_store_whose_log_was_lost_is_refused_until_the_loss_is_accepted(path: Path) -> None:
    crash_a_master(path)
    path.with_name(path.name + "-wal").unlink()  # copied without its log, or the log deleted
    with pytest.raises(ConfigError, match=r"not closed cleanly and its write-ahead log .*-wal is missing") as info:
        SqliteStore(path, 10.0, LEASE)
    assert "--check --accept-loss" in str(info.value)
    assert check_file(path) == [f"it was not closed cleanly and its write-ahead log {path}-wal is missing"]
    assert check_file(path, accept_loss=True) == []
    with opened(path, 10.0) as store:  # what the file alone holds: the tasks of the lost log are gone
        assert store.counts() == counts()


def test_a_cleanly_closed_store_is_whole_without_its_log(path: Path, tmp_path: Path) -> None:
    with opened(path) as store:
        fill(store, "a", "b")
    copy = tmp_path / "copy.db"
    copy.write_bytes(path.read_bytes())  # the main file alone, as a backup made after a clean stop
    with opened(copy, 1.0) as store:
        assert store.counts() == counts(pending=2)
    assert check_file(copy) == []


def test_a_damaged_page_is_refused_at_opening_and_found_by_the_full_check(path: Path) -> None:
    with opened(path) as store:
        fill(store, *[f"t{i}" for i in range(2000)])
    data = bytearray(path.read_bytes())
    page = 4096
    data[3 * page : 4 * page] = b"\xa5" * page  # a page in the middle of the table, overwritten
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="is damaged") as info:
        SqliteStore(path, 0.0, LEASE)
    assert str(path) in str(info.value)
    problems = check_file(path)
    assert problems and all(isinstance(p, str) and p for p in problems)


def test_a_flipped_byte_in_a_stored_result_reads_as_a_clear_failure_never_as_another_value(path: Path) -> None:
    with opened(path) as store:
        fill(store, "a", "b")
        a, b = store.lease("w1", 2, 1.0, LEASE)
        store.finish("w1", [Outcome("a", a.token, True, result="'the answer is 42'"), done(b)], 2.0)
    db = sqlite3.connect(path)
    db.execute("UPDATE tasks SET result = ? WHERE id = 'a'", ("'the answer is 43'",))  # the file changed under us
    db.commit()
    db.close()
    with opened(path, 3.0) as store:
        damaged = get(store, "a")
        assert (damaged.state, damaged.result) == (TaskState.FAILED, None)
        assert damaged.error is not None and damaged.error["type"] == "StoreDamaged"
        assert damaged.error["message"].startswith("the stored result of task a: damaged on disk")
        assert get(store, "b").state is TaskState.DONE  # the others read as they were


def test_damaged_arguments_fail_their_task_instead_of_running_it(path: Path) -> None:
    with opened(path) as store:
        fill(store, "a", "b", "c")
    db = sqlite3.connect(path)
    db.execute("UPDATE tasks SET payload = '((5,),{})' WHERE id = 'b'")  # was ((4,),{}): a flipped byte
    db.commit()
    db.close()
    with opened(path, 1.0) as store:
        assert ids(store.lease("w1", 10, 2.0, LEASE)) == ["a", "c"]  # b is never handed out
        (broken,) = store.broken
        assert broken.id == "b" and broken.state is TaskState.FAILED
        assert broken.error is not None and broken.error["type"] == "StoreDamaged"
        assert broken.error["message"].startswith("the stored arguments of task b: damaged on disk")
        assert store.counts() == counts(running=2, failed=1)
    with opened(path, 3.0) as store:  # and so it stays
        assert get(store, "b").state is TaskState.FAILED and store.counts() == counts(running=2, failed=1)


def test_a_version_2_store_gets_result_checksums_from_now_on(path: Path) -> None:
    with opened(path) as store:
        fill(store, "old", "new")
        old, new = store.lease("w1", 2, 1.0, LEASE)
        store.finish("w1", [done(old)], 2.0)
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE tasks DROP COLUMN result_sum")
    db.execute("DROP TABLE meta")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    with opened(path, 3.0) as store:
        assert get(store, "old").result == "2.0"  # stored before checksums: read as it is
        store.finish("w1", [done(new, "3.0")], 4.0)
    db = sqlite3.connect(path)
    sums = dict(db.execute("SELECT id, result_sum FROM tasks").fetchall())
    assert sums["old"] is None and isinstance(sums["new"], int)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    db.close()


def test_master_check_command_reports_a_sound_and_a_damaged_store(path: Path) -> None:
    with opened(path) as store:
        fill(store, "a")
    sound = subprocess.run([sys.executable, "-m", "pyrodist", "master", "--store", str(path), "--check"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert (sound.returncode, sound.stdout.strip()) == (0, f"store {path}: sound"), sound.stderr
    path.write_bytes(b"")
    damaged = subprocess.run([sys.executable, "-m", "pyrodist", "master", "--store", str(path), "--check"],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert damaged.returncode == 1 and f"store {path} is damaged:" in damaged.stderr and "0 bytes" in damaged.stderr


# ---- scale -------------------------------------------------------------------------------------


def test_leasing_the_front_of_a_large_queue_is_correct(path: Path) -> None:
    """Correctness only, not speed: the first leases from 100k queued tasks are the right ones."""
    n = 100_000

    def priority(i: int) -> int:
        return 2 if i % 250 == 0 else 1 if i % 7 == 0 else -1 if i % 3 == 0 else 0

    expected = [f"t{i}" for i in sorted(range(n), key=lambda i: (-priority(i), i))]
    with opened(path) as store:
        store.add((make_task(f"t{i}", {"priority": priority(i)} if priority(i) else None) for i in range(n)), 0.0)
        assert store.counts() == counts(pending=n)
        leased = [t for _ in range(10) for t in store.lease("w1", 100, 1.0, LEASE)]
        assert ids(leased) == expected[:1000]  # 400 of priority 2, then the first 600 of priority 1
    with opened(path, 2.0) as store:
        assert store.counts() == counts(pending=n - 1000, running=1000)
        assert ids(store.lease("w2", 1000, 3.0, LEASE)) == expected[1000:2000]
