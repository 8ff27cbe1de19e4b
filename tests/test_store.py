"""The store's queue, leases, reports, retries, expiry and cancellation, driven by an explicit clock.

Every test runs against both stores (the `store` fixture). A SqliteStore's `get` returns a snapshot, so
tests read a task's state again with `get` instead of holding on to an object; only the objects that
`lease` and `finish` return are live.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyrodist.memstore import MemoryStore
from pyrodist.protocol import TaskState, error_info
from pyrodist.sqlstore import SqliteStore
from pyrodist.store import DEFAULT_MAX_ATTEMPTS, ERRORS_KEPT, UNSEEN_LOSSES_PER_ATTEMPT, TaskStore
from pyrodist.task import Task, is_finished
from pyrodist.wire import Outcome

LEASE = 10.0


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TaskStore]:
    """An empty store of each kind."""
    made: TaskStore = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "s.db", 0.0, LEASE)
    yield made
    made.close()


def make_task(task_id: str, options: dict[str, Any] | None = None, owner: str | None = None) -> Task:
    return Task(task_id, "math:sqrt", "((4,),{})", options or {}, owner)


def fill(store: TaskStore, *task_ids: str, now: float = 0.0, **options: Any) -> TaskStore:
    store.add([make_task(t, dict(options)) for t in task_ids], now)
    return store


def ids(tasks: list[Task]) -> list[str]:
    return [t.id for t in tasks]


def get(store: TaskStore, task_id: str) -> Task:
    task = store.get(task_id)
    assert task is not None, f"store lost task {task_id}"
    return task


def held(store: TaskStore, *task_ids: str) -> list[tuple[str, int]]:
    """The leases a heartbeat names: each task's id and its current token (0 for a task the store lacks)."""
    return [(t, task.token if (task := store.get(t)) is not None else 0) for t in task_ids]


def counts(
    pending: int = 0,
    running: int = 0,
    retrying: int = 0,
    done: int = 0,
    failed: int = 0,
    cancelled: int = 0,
    expired: int = 0,
) -> dict[str, int]:
    return {
        "pending": pending, "running": running, "retrying": retrying, "done": done, "failed": failed,
        "cancelled": cancelled, "expired": expired,
    }  # fmt: skip


def leases(*tasks: Task) -> list[tuple[str, int]]:
    return [(task.id, task.token) for task in tasks]


def done(task: Task, result: str = "2.0") -> Outcome:
    return Outcome(task.id, task.token, True, result=result)


def failure(task: Task, exc: BaseException | None = None) -> Outcome:
    return Outcome(task.id, task.token, False, error=error_info(exc or ValueError("bad input"), tb="Traceback ..."))


# ---- adding and leasing in order ---------------------------------------------------------------


def test_new_store_is_empty(store: TaskStore) -> None:
    assert store.counts() == counts()
    assert not store.has_pending()
    assert store.pending_count() == 0
    assert store.lease("w1", 10, 0.0, LEASE) == []


def test_added_tasks_are_pending_and_stamped_with_the_time(store: TaskStore) -> None:
    assert store.add([make_task("a"), make_task("b")], 5.0) == 2
    assert store.counts() == counts(pending=2)
    assert store.has_pending()
    task = get(store, "a")
    assert task.state is TaskState.PENDING
    assert task.submitted == 5.0
    assert task.payload == "((4,),{})"
    assert store.get("nope") is None


def test_lease_hands_out_tasks_first_in_first_out(store: TaskStore) -> None:
    fill(store, "a", "b", "c", "d")
    assert ids(store.lease("w1", 2, 1.0, LEASE)) == ["a", "b"]
    assert ids(store.lease("w2", 10, 1.0, LEASE)) == ["c", "d"]
    assert store.lease("w3", 10, 1.0, LEASE) == []


def test_tasks_added_in_later_batches_come_after_earlier_ones(store: TaskStore) -> None:
    fill(store, "a")
    store.add([make_task("b")], 1.0)
    store.add([make_task("c")], 2.0)
    assert ids(store.lease("w1", 10, 3.0, LEASE)) == ["a", "b", "c"]


def test_lease_respects_max_tasks(store: TaskStore) -> None:
    fill(store, *[f"t{i}" for i in range(10)])
    assert len(store.lease("w1", 3, 0.0, LEASE)) == 3
    assert len(store.lease("w1", 1, 0.0, LEASE)) == 1
    assert store.lease("w1", 0, 0.0, LEASE) == []
    assert store.counts() == counts(pending=6, running=4)


def test_higher_priority_is_leased_first_and_fifo_within_a_priority(store: TaskStore) -> None:
    store.add(
        [
            make_task("low1", {"priority": -1}),
            make_task("mid1"),
            make_task("high1", {"priority": 5}),
            make_task("mid2", {"priority": 0}),
            make_task("high2", {"priority": 5}),
            make_task("low2", {"priority": -1}),
            make_task("top", {"priority": 9}),
        ],
        0.0,
    )
    leased = [t.id for _ in range(7) for t in store.lease("w1", 1, 0.0, LEASE)]
    assert leased == ["top", "high1", "high2", "mid1", "mid2", "low1", "low2"]


def test_later_high_priority_task_overtakes_queued_ones(store: TaskStore) -> None:
    fill(store, "a", "b")
    store.add([make_task("urgent", {"priority": 1})], 1.0)
    assert ids(store.lease("w1", 3, 2.0, LEASE)) == ["urgent", "a", "b"]


def test_lease_records_worker_token_deadline_attempt_and_start(store: TaskStore) -> None:
    fill(store, "a", "b")
    first, second = store.lease("w1", 2, 3.0, LEASE)
    assert first.state is TaskState.RUNNING
    assert first.worker == "w1"
    assert first.deadline == 3.0 + LEASE
    assert first.attempts == 1
    assert first.started == 3.0
    assert first.token != second.token
    assert store.counts() == counts(running=2)
    assert not store.has_pending()
    again = get(store, "a")
    assert (again.state, again.worker, again.token) == (TaskState.RUNNING, "w1", first.token)


def test_leasing_from_a_large_queue_completes() -> None:
    """Shape check only: 100 small leases from 100k queued tasks must not rescan the queue each time."""
    store = MemoryStore()
    store.add((make_task(f"t{i}") for i in range(100_000)), 0.0)
    leased = []
    for _ in range(100):
        leased.extend(store.lease("w1", 10, 1.0, LEASE))
    assert len(leased) == 1_000
    assert leased[0].id == "t0"
    assert leased[-1].id == "t999"
    assert store.counts() == counts(pending=99_000, running=1_000)


def test_queued_tasks_are_kept_compact_in_memory() -> None:
    """The in-memory 1M-task budget (300 MB) rests on this: ~250 bytes per queued task, id and payload included."""
    store = MemoryStore()
    options: dict[str, Any] = {}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for batch in range(20):
            tasks = [Task(f"c0123456789.{batch * 1000 + i}", "math:sqrt", f" [[{i}], {{}}]", options, "c0123456789")
                     for i in range(1000)]  # fmt: skip
            store.add(tasks, float(batch))
            del tasks
        per_task = (tracemalloc.get_traced_memory()[0] - before) / 20_000
    finally:
        tracemalloc.stop()
    assert per_task < 300, f"{per_task:.0f} bytes per queued task"
    gc.collect()
    assert not gc.is_tracked(store._tasks["c0123456789.5"])  # a full collection need not walk queued tasks
    assert store.counts() == counts(pending=20_000)
    assert ids(store.lease("w", 2, 30.0, LEASE)) == ["c0123456789.0", "c0123456789.1"]


def test_a_queued_task_read_and_then_cancelled_is_never_leased_and_reads_stay_copies() -> None:
    store = fill(MemoryStore(), "a", "b", "c")
    copy = get(store, "b")
    copy.state = TaskState.DONE  # changing a read copy changes nothing: only the store's own calls do
    assert get(store, "b").state is TaskState.PENDING
    assert store.cancel("b", 1.0) is not None
    assert get(store, "b").state is TaskState.CANCELLED
    assert ids(store.lease("w", 5, 2.0, LEASE)) == ["a", "c"]
    assert store.counts() == counts(running=2, cancelled=1)
    assert store._headers == {}  # the batch's header is let go with its last queued task


def test_retries_due_at_once_for_sent_and_queued_tasks_do_not_collide(store: TaskStore) -> None:
    """Tasks sent to one worker and queued ones share the retry schedule: their seqs must never tie."""
    options = {"retries": 2, "retry_backoff": 5.0}
    store.add([make_task("a", dict(options)), make_task("b", dict(options))], 0.0)
    store.add([make_task("sent", {**options, "worker": "w"})], 0.0)
    store.add([make_task("c", dict(options))], 0.0)
    leased = {t.id: t for t in store.lease("w", 10, 1.0, LEASE)}
    accepted, ignored = store.finish("w", [failure(leased["sent"]), failure(leased["c"])], 2.0)
    assert (ids(accepted), ignored) == (["sent", "c"], [])
    assert ids(store.promote(7.0)) == ["sent", "c"]  # both due at 7.0, in the order they were queued


def test_many_priorities_and_given_back_tasks_keep_their_order() -> None:
    store = MemoryStore()
    store.add([make_task(f"p{p}", {"priority": p}) for p in range(50)], 0.0)
    first = store.lease("w", 3, 1.0, LEASE)
    assert ids(first) == ["p49", "p48", "p47"]
    store.add([make_task("late48", {"priority": 48})], 2.0)
    store.release("w", leases(first[2], first[1]))  # given back in another order than leased
    assert ids(store.lease("w", 4, 3.0, LEASE)) == ["p48", "late48", "p47", "p46"]
    rest = store.lease("w", 100, 4.0, LEASE)
    assert ids(rest) == [f"p{p}" for p in range(45, -1, -1)]
    assert store.counts() == counts(running=51)
    assert store._levels == {} and store._level_heap == [] and store._headers == {}  # emptied ones are dropped


# ---- idempotent add ----------------------------------------------------------------------------


def test_adding_a_known_id_again_changes_nothing(store: TaskStore) -> None:
    fill(store, "a", now=1.0)
    assert store.add([make_task("a", {"priority": 100})], 2.0) == 0
    task = get(store, "a")
    assert (task.submitted, task.priority, task.options) == (1.0, 0, {})
    assert store.counts() == counts(pending=1)
    assert ids(store.lease("w1", 10, 3.0, LEASE)) == ["a"]
    assert store.lease("w1", 10, 3.0, LEASE) == []


def test_readding_a_running_or_finished_task_does_not_requeue_it(store: TaskStore) -> None:
    fill(store, "run", "fin")
    _, finished = store.lease("w1", 2, 0.0, LEASE)
    store.finish("w1", [done(finished)], 1.0)
    assert store.add([make_task("run"), make_task("fin")], 2.0) == 0
    assert store.counts() == counts(running=1, done=1)
    assert store.lease("w2", 10, 3.0, LEASE) == []
    assert get(store, "run").state is TaskState.RUNNING
    assert get(store, "fin").state is TaskState.DONE


def test_duplicate_ids_within_one_batch_add_one_task(store: TaskStore) -> None:
    assert store.add([make_task("a"), make_task("a", {"priority": 3})], 0.0) == 1
    assert store.counts() == counts(pending=1)
    assert get(store, "a").priority == 0


# ---- reports -----------------------------------------------------------------------------------


def test_counts_follow_a_task_through_its_life(store: TaskStore) -> None:
    fill(store, "a", "b", "c")
    assert store.counts() == counts(pending=3)
    a, b = store.lease("w1", 2, 0.0, LEASE)
    assert store.counts() == counts(pending=1, running=2)
    store.finish("w1", [done(a)], 1.0)
    assert store.counts() == counts(pending=1, running=1, done=1)
    store.finish("w1", [failure(b)], 2.0)
    assert store.counts() == counts(pending=1, done=1, failed=1)
    store.cancel("c", 3.0)
    assert store.counts() == counts(done=1, failed=1, cancelled=1)
    store.forget(["a"], 4.0)
    assert store.counts() == counts(failed=1, cancelled=1, expired=1)


def test_lease_tokens_are_random_52_bit_numbers_a_worker_cannot_guess(store: TaskStore) -> None:
    fill(store, *[f"t{i}" for i in range(200)])
    tokens = [t.token for t in store.lease("w1", 200, 1.0, LEASE)]
    assert len(set(tokens)) == 200 and all(0 < t < 2**52 for t in tokens)
    assert max(tokens) > 2**40 and sorted(tokens) != tokens  # neither small nor counting up
    assert sum(t > tokens[i - 1] for i, t in enumerate(tokens) if i) < 150  # no run of increasing numbers


def test_report_with_the_right_token_is_accepted_and_records_the_result(store: TaskStore) -> None:
    fill(store, "a")
    (task,) = store.lease("w1", 1, 1.0, LEASE)
    accepted, ignored = store.finish("w1", [done(task, "42")], 4.0)
    assert ids(accepted) == ["a"]
    assert ignored == []
    stored = get(store, "a")
    assert stored.state is TaskState.DONE
    assert stored.result == "42"
    assert stored.error is None
    assert stored.errors == ()
    assert stored.finished == 4.0
    assert is_finished(stored)


def test_failed_report_records_the_error(store: TaskStore) -> None:
    fill(store, "a")
    (task,) = store.lease("w1", 1, 0.0, LEASE)
    error = error_info(ZeroDivisionError("division by zero"), tb="Traceback ...")
    accepted, _ = store.finish("w1", [Outcome("a", task.token, False, error=error)], 1.0)
    assert ids(accepted) == ["a"]
    stored = get(store, "a")
    assert stored.state is TaskState.FAILED
    assert stored.error == error
    assert stored.errors == ({**error, "attempt": 1, "worker": "w1", "at": 1.0},)
    assert stored.result is None
    assert is_finished(stored)


@pytest.mark.parametrize(
    ("worker", "task_id", "token_offset"),
    [("w1", "a", 1), ("w2", "a", 0), ("w1", "unknown", 0)],
    ids=["wrong token", "wrong worker", "unknown id"],
)
def test_report_that_does_not_match_the_lease_is_ignored(
    store: TaskStore, worker: str, task_id: str, token_offset: int
) -> None:
    fill(store, "a")
    (task,) = store.lease("w1", 1, 0.0, LEASE)
    accepted, ignored = store.finish(worker, [Outcome(task_id, task.token + token_offset, True, result="1")], 1.0)
    assert accepted == []
    assert ignored == [task_id]
    assert get(store, "a").state is TaskState.RUNNING
    assert store.counts() == counts(running=1)


def test_report_for_a_pending_task_is_ignored(store: TaskStore) -> None:
    fill(store, "a")
    accepted, ignored = store.finish("w1", [Outcome("a", 0, True, result="1")], 1.0)
    assert (accepted, ignored) == ([], ["a"])
    assert store.counts() == counts(pending=1)


def test_first_valid_report_wins(store: TaskStore) -> None:
    fill(store, "a")
    (task,) = store.lease("w1", 1, 0.0, LEASE)
    store.finish("w1", [done(task, "'first'")], 1.0)
    accepted, ignored = store.finish("w1", [failure(task)], 2.0)
    assert (accepted, ignored) == ([], ["a"])
    stored = get(store, "a")
    assert stored.state is TaskState.DONE
    assert stored.result == "'first'"
    assert stored.finished == 1.0
    assert stored.errors == ()
    assert store.counts() == counts(done=1)


def test_duplicate_report_in_one_batch_counts_once(store: TaskStore) -> None:
    fill(store, "a")
    (task,) = store.lease("w1", 1, 0.0, LEASE)
    accepted, ignored = store.finish("w1", [done(task, "1"), done(task, "2")], 1.0)
    assert ids(accepted) == ["a"]
    assert ignored == ["a"]
    assert get(store, "a").result == "1"


def test_batch_report_accepts_the_good_and_ignores_the_bad(store: TaskStore) -> None:
    fill(store, "a", "b")
    a, b = store.lease("w1", 2, 0.0, LEASE)
    accepted, ignored = store.finish("w1", [done(a), Outcome("b", b.token + 99, True, result="x"), done(b)], 1.0)
    assert ids(accepted) == ["a", "b"]
    assert ignored == ["b"]


def test_arguments_are_dropped_once_a_task_finishes(store: TaskStore) -> None:
    fill(store, "ok", "bad", "gone")
    ok, bad = store.lease("w1", 2, 0.0, LEASE)
    assert ok.payload is not None
    store.finish("w1", [done(ok), failure(bad)], 1.0)
    store.cancel("gone", 1.0)
    assert [get(store, i).payload for i in ("ok", "bad", "gone")] == [None, None, None]


def test_record_shows_the_public_fields_with_the_result_as_payload(store: TaskStore) -> None:
    fill(store, "a", now=1.0, priority=2)
    (task,) = store.lease("w1", 1, 2.0, LEASE)
    store.finish("w1", [done(task, "9")], 3.0)
    assert get(store, "a").record().to_wire() == {
        "id": "a",
        "state": "done",
        "func": "math:sqrt",
        "payload": "9",
        "error": None,
        "errors": [],
        "worker": "w1",
        "attempts": 1,
        "retries": 0,
        "lost": 0,
        "options": {"priority": 2},
        "submitted": 1.0,
        "started": 2.0,
        "finished": 3.0,
        "retry_at": None,
    }


# ---- retries -----------------------------------------------------------------------------------


def test_failures_within_retries_go_back_to_pending_and_the_next_one_fails(store: TaskStore) -> None:
    fill(store, "a", retries=2)
    for attempt in (1, 2):
        (task,) = store.lease(f"w{attempt}", 1, 10.0 * attempt, LEASE)
        assert task.attempts == attempt
        accepted, _ = store.finish(f"w{attempt}", [failure(task, KeyError(attempt))], 10.0 * attempt + 1)
        assert ids(accepted) == ["a"]
        stored = get(store, "a")
        assert (stored.state, stored.retried, stored.due, stored.worker) == (TaskState.PENDING, attempt, None, None)
        assert store.counts() == counts(pending=1)
    (task,) = store.lease("w3", 1, 30.0, LEASE)
    store.finish("w3", [failure(task, KeyError(3))], 31.0)
    stored = get(store, "a")
    assert stored.state is TaskState.FAILED
    assert stored.attempts == 3
    assert stored.retried == 2
    assert stored.error is not None and stored.error["message"] == "3"
    assert [(e["type"], e["message"], e["attempt"], e["worker"], e["at"]) for e in stored.errors] == [
        ("KeyError", "1", 1, "w1", 11.0),
        ("KeyError", "2", 2, "w2", 21.0),
        ("KeyError", "3", 3, "w3", 31.0),
    ]
    assert store.counts() == counts(failed=1)


def test_a_failure_without_retries_fails_at_once(store: TaskStore) -> None:
    fill(store, "a")
    (task,) = store.lease("w1", 1, 0.0, LEASE)
    store.finish("w1", [failure(task)], 1.0)
    stored = get(store, "a")
    assert (stored.state, stored.retried, len(stored.errors)) == (TaskState.FAILED, 0, 1)


def test_a_retry_that_succeeds_keeps_the_earlier_errors(store: TaskStore) -> None:
    fill(store, "a", retries=3)
    (task,) = store.lease("w1", 1, 0.0, LEASE)
    store.finish("w1", [failure(task)], 1.0)
    (task,) = store.lease("w1", 1, 2.0, LEASE)
    store.finish("w1", [done(task, "7")], 3.0)
    stored = get(store, "a")
    assert (stored.state, stored.result, stored.error, stored.retried) == (TaskState.DONE, "7", None, 1)
    assert [e["attempt"] for e in stored.errors] == [1]


def test_only_the_latest_errors_are_kept(store: TaskStore) -> None:
    fill(store, "a", retries=ERRORS_KEPT + 5)
    for attempt in range(1, ERRORS_KEPT + 7):
        (task,) = store.lease("w1", 1, float(attempt), LEASE)
        store.finish("w1", [failure(task, ValueError(attempt))], float(attempt))
    stored = get(store, "a")
    assert stored.state is TaskState.FAILED
    assert [e["attempt"] for e in stored.errors] == list(range(7, ERRORS_KEPT + 7))


@pytest.mark.parametrize(
    ("retry_on", "exc"),
    [
        (["KeyError"], KeyError("k")),
        (["OSError"], ConnectionRefusedError("refused")),
        (["ConnectionError"], ConnectionRefusedError("refused")),
        (["ValueError", "LookupError"], KeyError("k")),
        (["Exception"], KeyError("k")),
        (["Exception"], ExceptionGroup("many", [KeyError("k")])),
        (["BaseException"], SystemExit(3)),
    ],
    ids=["type name", "base class name", "nearer base", "one of several", "any exception", "a group", "anything"],
)
def test_retry_on_retries_matching_errors(store: TaskStore, retry_on: list[str], exc: BaseException) -> None:
    fill(store, "a", retries=1, retry_on=retry_on)
    (task,) = store.lease("w1", 1, 0.0, LEASE)
    store.finish("w1", [failure(task, exc)], 1.0)
    stored = get(store, "a")
    assert (stored.state, stored.retried) == (TaskState.PENDING, 1)
    (task,) = store.lease("w1", 1, 2.0, LEASE)
    store.finish("w1", [failure(task, exc)], 3.0)
    assert get(store, "a").state is TaskState.FAILED  # retries used up, even for a matching error


@pytest.mark.parametrize(
    ("retry_on", "exc"),
    [
        (["OSError", "KeyError"], ValueError("not transient")),
        (["ConnectionRefusedError"], OSError("a base is not a subclass")),
        (["Exception"], SystemExit(3)),
        (["Exception"], type("Halt", (KeyboardInterrupt,), {})()),
    ],
    ids=["unrelated", "base of the retried type", "not an Exception", "nor derived from one"],
)
def test_retry_on_fails_other_errors_at_once(store: TaskStore, retry_on: list[str], exc: BaseException) -> None:
    fill(store, "a", retries=5, retry_on=retry_on)
    (task,) = store.lease("w1", 1, 0.0, LEASE)
    store.finish("w1", [failure(task, exc)], 1.0)
    stored = get(store, "a")
    assert (stored.state, stored.retried) == (TaskState.FAILED, 0)
    assert stored.error is not None and stored.error["type"] == type(exc).__name__


def test_error_without_bases_is_matched_by_its_type_only(store: TaskStore) -> None:
    fill(store, "a", "b", retries=1, retry_on=["OSError"])
    a, b = store.lease("w1", 2, 0.0, LEASE)
    plain = {"type": "OSError", "message": "m", "traceback": ""}  # from an older worker: no "bases"
    other = {"type": "ConnectionRefusedError", "message": "m", "traceback": ""}
    store.finish("w1", [Outcome("a", a.token, False, error=plain), Outcome("b", b.token, False, error=other)], 1.0)
    assert get(store, "a").state is TaskState.PENDING
    assert get(store, "b").state is TaskState.FAILED


def test_retry_backoff_doubles_up_to_its_cap(store: TaskStore) -> None:
    fill(store, "a", retries=4, retry_backoff=2.0, retry_backoff_max=5.0)
    now = 0.0
    for delay in (2.0, 4.0, 5.0, 5.0):
        (task,) = store.lease("w1", 1, now, LEASE)
        now += 1.0
        store.finish("w1", [failure(task)], now)
        stored = get(store, "a")
        assert (stored.state, stored.due, stored.record().retry_at) == (TaskState.RETRYING, now + delay, now + delay)
        assert store.counts() == counts(retrying=1)
        assert store.pending_count() == 1
        assert not store.has_pending()
        assert store.lease("w1", 1, now, LEASE) == []
        assert store.promote(now + delay - 0.01) == []
        assert get(store, "a").state is TaskState.RETRYING
        now += delay
        assert ids(store.promote(now)) == ["a"]
        assert store.promote(now) == []
        stored = get(store, "a")
        assert (stored.state, stored.due) == (TaskState.PENDING, None)
        assert store.counts() == counts(pending=1)
    (task,) = store.lease("w1", 1, now, LEASE)
    store.finish("w1", [failure(task)], now + 1)
    assert get(store, "a").state is TaskState.FAILED
    assert store.promote(now + 1000.0) == []


def test_retry_backoff_cap_defaults_to_ten_minutes(store: TaskStore) -> None:
    fill(store, "a", retries=20, retry_backoff=100.0)
    now = 0.0
    for _ in range(5):
        (task,) = store.lease("w1", 1, now, LEASE)
        store.finish("w1", [failure(task)], now)
        due = get(store, "a").due
        assert due is not None
        assert store.promote(due) != []
        now = due
    assert due == 100.0 + 200.0 + 400.0 + 600.0 + 600.0


def test_zero_backoff_goes_straight_back_to_pending(store: TaskStore) -> None:
    fill(store, "a", retries=1, retry_backoff=0.0)
    (task,) = store.lease("w1", 1, 0.0, LEASE)
    store.finish("w1", [failure(task)], 1.0)
    assert get(store, "a").state is TaskState.PENDING
    assert store.counts() == counts(pending=1)
    assert store.has_pending()
    assert store.promote(1.0) == []
    assert ids(store.lease("w2", 1, 1.0, LEASE)) == ["a"]


def test_a_retried_task_keeps_its_place_in_the_queue(store: TaskStore) -> None:
    store.add([make_task("a", {"retries": 1}), make_task("b"), make_task("c")], 0.0)
    (task,) = store.lease("w1", 1, 0.0, LEASE)
    assert task.id == "a"
    store.finish("w1", [failure(task)], 1.0)
    store.add([make_task("urgent", {"priority": 1}), make_task("d")], 2.0)
    assert ids(store.lease("w2", 10, 3.0, LEASE)) == ["urgent", "a", "b", "c", "d"]


def test_a_task_back_from_backoff_keeps_its_priority_and_place(store: TaskStore) -> None:
    store.add([make_task("x", {"priority": 5, "retries": 1, "retry_backoff": 5.0}), make_task("low")], 0.0)
    (x,) = store.lease("w1", 1, 0.0, LEASE)
    store.finish("w1", [failure(x)], 1.0)
    store.add([make_task("y", {"priority": 5}), make_task("z")], 2.0)
    assert ids(store.promote(6.0)) == ["x"]
    assert ids(store.lease("w1", 10, 6.0, LEASE)) == ["x", "y", "low", "z"]


def test_several_due_tasks_are_promoted_together(store: TaskStore) -> None:
    fill(store, "a", "b", "c", retries=1, retry_backoff=1.0)
    leased = store.lease("w1", 3, 0.0, LEASE)
    store.finish("w1", [failure(leased[0])], 0.0)
    store.finish("w1", [failure(leased[1])], 2.0)
    store.finish("w1", [failure(leased[2])], 1.0)
    assert sorted(ids(store.promote(2.0))) == ["a", "c"]
    assert store.counts() == counts(pending=2, retrying=1)
    assert ids(store.lease("w1", 10, 2.0, LEASE)) == ["a", "c"]


def test_a_retried_targeted_task_goes_back_to_its_worker(store: TaskStore) -> None:
    fill(store, "t", worker="w1", retries=1, retry_backoff=1.0)
    (task,) = store.lease("w1", 1, 0.0, LEASE)
    store.finish("w1", [failure(task)], 1.0)
    assert not store.has_work_for("w1")
    assert store.targeted_waiting() == {}
    store.promote(2.0)
    assert store.targeted_waiting() == {"w1": 1}
    assert not store.has_work_for("w2")
    assert store.lease("w2", 1, 2.0, LEASE) == []
    assert ids(store.lease("w1", 1, 2.0, LEASE)) == ["t"]


def test_a_lost_run_does_not_use_up_a_retry(store: TaskStore) -> None:
    fill(store, "a", retries=1)
    lose_while_running(store, "a", 0.0)
    stored = get(store, "a")
    assert (stored.state, stored.retried, stored.lost) == (TaskState.PENDING, 0, 1)
    (task,) = store.lease("w1", 1, 100.0, LEASE)
    store.finish("w1", [failure(task)], 101.0)
    assert get(store, "a").state is TaskState.PENDING


# ---- renew and expire --------------------------------------------------------------------------


def lose_while_running(store: TaskStore, task_id: str, now: float, worker: str = "w1") -> tuple[list[Task], list[Task]]:
    """Lease the task, let the worker say it runs it, then lose the worker; returns expire's lists."""
    assert ids(store.lease(worker, 1, now, LEASE)) == [task_id]
    assert store.renew(worker, held(store, task_id), held(store), now + 1, LEASE) == 1
    return store.expire(now + 1 + LEASE + 1)


def lose_prefetched(store: TaskStore, task_id: str, now: float, worker: str = "w1") -> tuple[list[Task], list[Task]]:
    """Lease the task, let the worker say it only holds it (prefetched), then lose the worker."""
    assert ids(store.lease(worker, 1, now, LEASE)) == [task_id]
    assert store.renew(worker, held(store), held(store, task_id), now + 1, LEASE) == 1
    return store.expire(now + 1 + LEASE + 1)


def test_expire_before_the_deadline_takes_nothing_back(store: TaskStore) -> None:
    fill(store, "a")
    store.lease("w1", 1, 0.0, LEASE)
    assert store.expire(LEASE) == ([], [])
    assert store.counts() == counts(running=1)


def test_renew_extends_the_deadline_so_expire_later_keeps_the_lease(store: TaskStore) -> None:
    fill(store, "a", "b", "c")
    a, _, c = store.lease("w1", 3, 0.0, LEASE)
    assert store.renew("w1", held(store, "a"), held(store, "c"), 8.0, LEASE) == 2
    assert a.deadline == c.deadline == 8.0 + LEASE
    requeued, failed = store.expire(15.0)
    assert ids(requeued) == ["b"]
    assert failed == []
    assert get(store, "a").state is get(store, "c").state is TaskState.RUNNING
    assert get(store, "a").worker == "w1"
    accepted, _ = store.finish("w1", [done(a), done(c)], 16.0)
    assert ids(accepted) == ["a", "c"]


def test_renew_only_counts_leases_the_worker_holds(store: TaskStore) -> None:
    fill(store, "a", "b")
    a, _ = store.lease("w1", 2, 0.0, LEASE)
    assert store.renew("w2", held(store, "a", "b"), held(store, "a"), 5.0, LEASE) == 0
    assert store.renew("w1", held(store, "a", "unknown"), held(store, "nope"), 5.0, LEASE) == 1
    assert a.deadline == 5.0 + LEASE
    store.finish("w1", [done(a)], 6.0)
    assert store.renew("w1", held(store, "a"), held(store, "a"), 7.0, LEASE) == 0


def test_renew_needs_each_lease_token(store: TaskStore) -> None:
    fill(store, "a", "b")
    a, b = store.lease("w1", 2, 0.0, LEASE)
    guesses = [("a", a.token + 1), ("a", a.token - 1), ("a", 0)]
    assert store.renew("w1", guesses, [("b", b.token ^ 1)], 5.0, LEASE) == 0
    assert a.deadline == b.deadline == LEASE
    assert store.renew("w1", [("a", a.token)], [("b", b.token)], 5.0, LEASE) == 2


def test_expired_task_goes_back_to_pending_and_is_leased_again_with_a_new_token(store: TaskStore) -> None:
    fill(store, "a")
    (first,) = store.lease("w1", 1, 0.0, LEASE)
    old_token = first.token
    store.renew("w1", held(store, "a"), held(store), 1.0, LEASE)
    requeued, failed = store.expire(LEASE + 2)
    assert (ids(requeued), failed) == (["a"], [])
    stored = get(store, "a")
    assert stored.state is TaskState.PENDING
    assert stored.worker is None
    assert store.counts() == counts(pending=1)

    (again,) = store.lease("w2", 1, 12.0, LEASE)
    assert again.id == "a"
    assert again.token != old_token
    assert again.worker == "w2"
    assert again.attempts == 2

    accepted, ignored = store.finish("w1", [Outcome("a", old_token, True, result="'late'")], 13.0)
    assert (accepted, ignored) == ([], ["a"])
    accepted, ignored = store.finish("w2", [done(again, "'new'")], 14.0)
    assert (ids(accepted), ignored) == (["a"], [])
    assert get(store, "a").result == "'new'"


def test_late_report_with_the_old_token_is_ignored_even_from_the_same_worker(store: TaskStore) -> None:
    fill(store, "a")
    (task,) = store.lease("w1", 1, 0.0, LEASE)
    old_token = task.token
    store.expire(LEASE + 1)
    (again,) = store.lease("w1", 1, 12.0, LEASE)
    assert again.token != old_token
    accepted, ignored = store.finish("w1", [Outcome("a", old_token, True, result="1")], 13.0)
    assert (accepted, ignored) == ([], ["a"])
    assert store.counts() == counts(running=1)
    assert store.renew("w1", held(store, "a"), held(store), 14.0, LEASE) == 1  # the new lease is untouched
    assert ids(store.finish("w1", [done(again)], 15.0)[0]) == ["a"]


def test_expired_task_keeps_its_place_ahead_of_later_tasks(store: TaskStore) -> None:
    fill(store, "a", "b", "c")
    store.lease("w1", 1, 0.0, LEASE)
    store.expire(LEASE + 1)
    assert ids(store.lease("w2", 3, 12.0, LEASE)) == ["a", "b", "c"]


def test_task_lost_while_running_fails_as_worker_lost_after_max_attempts(store: TaskStore) -> None:
    assert DEFAULT_MAX_ATTEMPTS == 3
    fill(store, "a")
    for round_ in range(DEFAULT_MAX_ATTEMPTS - 1):
        requeued, failed = lose_while_running(store, "a", 100.0 * round_, worker=f"w{round_}")
        assert (ids(requeued), failed) == (["a"], [])
        stored = get(store, "a")
        assert (stored.state, stored.lost, stored.attempts) == (TaskState.PENDING, round_ + 1, round_ + 1)
    requeued, failed = lose_while_running(store, "a", 1000.0, worker="w9")
    assert (requeued, ids(failed)) == ([], ["a"])
    stored = get(store, "a")
    assert stored.state is TaskState.FAILED
    assert stored.attempts == stored.lost == 3
    assert stored.error is not None
    assert stored.error["type"] == "WorkerLost"
    assert "3 times" in stored.error["message"]
    assert "max_attempts=3" in stored.error["message"]
    assert "w9" in stored.error["message"]
    assert [(e["attempt"], e["worker"]) for e in stored.errors] == [(1, "w0"), (2, "w1"), (3, "w9")]
    assert all("while running" in e["message"] for e in stored.errors)
    assert stored.payload is None
    assert store.counts() == counts(failed=1)
    assert store.lease("w1", 1, 2000.0, LEASE) == []


def test_max_attempts_one_fails_on_the_first_lost_run(store: TaskStore) -> None:
    fill(store, "a", max_attempts=1)
    requeued, failed = lose_while_running(store, "a", 0.0)
    assert (requeued, ids(failed)) == ([], ["a"])
    error = get(store, "a").error
    assert error is not None
    assert error["type"] == "WorkerLost"
    assert "1 times" in error["message"]
    assert "max_attempts=1" in error["message"]


def test_task_lost_while_only_prefetched_is_no_attempt(store: TaskStore) -> None:
    fill(store, "a", "b", max_attempts=1)
    requeued, failed = lose_prefetched(store, "a", 0.0)
    assert (ids(requeued), failed) == (["a"], [])
    stored = get(store, "a")
    assert (stored.state, stored.attempts, stored.lost, stored.unseen_losses) == (TaskState.PENDING, 0, 0, 1)
    assert "not seen running" in stored.errors[-1]["message"]
    assert ids(store.lease("w2", 2, 50.0, LEASE)) == ["a", "b"]  # still ahead of later tasks
    assert get(store, "a").attempts == 1


def test_seen_running_sticks_once_a_heartbeat_said_so(store: TaskStore) -> None:
    fill(store, "a", max_attempts=1)
    store.lease("w1", 1, 0.0, LEASE)
    store.renew("w1", held(store, "a"), held(store), 1.0, LEASE)
    store.renew("w1", held(store), held(store, "a"), 2.0, LEASE)  # the same worker later lists it as held only
    requeued, failed = store.expire(20.0)
    assert (requeued, ids(failed)) == ([], ["a"])


def test_never_renewed_lease_is_no_attempt_either(store: TaskStore) -> None:
    fill(store, "a")
    store.lease("w1", 1, 0.0, LEASE)
    assert ids(store.expire(LEASE + 1)[0]) == ["a"]
    stored = get(store, "a")
    assert (stored.attempts, stored.lost, stored.unseen_losses) == (0, 0, 1)


def test_task_that_is_lost_unseen_again_and_again_fails_in_the_end(store: TaskStore) -> None:
    fill(store, "a", max_attempts=2)
    limit = UNSEEN_LOSSES_PER_ATTEMPT * 2
    for round_ in range(limit - 1):
        requeued, failed = lose_prefetched(store, "a", 100.0 * round_)
        assert (ids(requeued), failed) == (["a"], [])
    requeued, failed = lose_prefetched(store, "a", 100.0 * limit)
    assert (requeued, ids(failed)) == ([], ["a"])
    stored = get(store, "a")
    assert (stored.state, stored.attempts, stored.unseen_losses) == (TaskState.FAILED, 0, limit)
    assert stored.error is not None and stored.error["type"] == "WorkerLost"
    assert f"{limit} times" in stored.error["message"]


def test_report_after_the_task_was_failed_as_lost_is_ignored(store: TaskStore) -> None:
    fill(store, "a", max_attempts=1)
    (task,) = store.lease("w1", 1, 0.0, LEASE)
    store.renew("w1", held(store, "a"), held(store), 1.0, LEASE)
    store.expire(LEASE + 2)
    accepted, ignored = store.finish("w1", [done(task)], LEASE + 3)
    assert (accepted, ignored) == ([], ["a"])
    assert get(store, "a").state is TaskState.FAILED


# ---- release -----------------------------------------------------------------------------------


def test_released_tasks_go_back_ahead_of_later_tasks_without_counting_an_attempt(store: TaskStore) -> None:
    fill(store, "a", "b", "c", "d")
    a, b = store.lease("w1", 2, 0.0, LEASE)
    released = store.release("w1", leases(b, a))
    assert set(ids(released)) == {"a", "b"}
    stored = get(store, "a")
    assert (stored.state, stored.attempts, stored.worker) == (TaskState.PENDING, 0, None)
    assert store.counts() == counts(pending=4)
    leased = store.lease("w2", 4, 1.0, LEASE)
    assert ids(leased) == ["a", "b", "c", "d"]
    assert leased[0].attempts == 1


def test_released_high_priority_task_comes_back_first(store: TaskStore) -> None:
    store.add([make_task("hi", {"priority": 2}), make_task("a")], 0.0)
    (hi,) = store.lease("w1", 1, 0.0, LEASE)
    store.add([make_task("mid", {"priority": 1})], 1.0)
    store.release("w1", leases(hi))
    assert ids(store.lease("w2", 3, 2.0, LEASE)) == ["hi", "mid", "a"]


def test_release_ignores_tasks_the_worker_does_not_hold_or_whose_token_it_does_not_know(store: TaskStore) -> None:
    fill(store, "a", "b")
    (a,) = store.lease("w1", 1, 0.0, LEASE)
    assert store.release("w2", leases(a)) == []  # another worker, even with the right token
    assert store.release("w1", [("a", a.token + 1), ("a", 0)]) == []  # the holder, with a wrong token
    assert store.release("w1", [("b", 1), ("unknown", 1)]) == []
    assert store.counts() == counts(pending=1, running=1)


def test_report_for_a_released_task_is_ignored(store: TaskStore) -> None:
    fill(store, "a")
    (task,) = store.lease("w1", 1, 0.0, LEASE)
    store.release("w1", leases(task))
    accepted, ignored = store.finish("w1", [done(task)], 1.0)
    assert (accepted, ignored) == ([], ["a"])
    assert store.counts() == counts(pending=1)


def test_released_task_is_not_failed_by_many_releases(store: TaskStore) -> None:
    fill(store, "a", max_attempts=1)
    for _ in range(5):
        store.release("w1", leases(*store.lease("w1", 1, 0.0, LEASE)))
    (task,) = store.lease("w1", 1, 0.0, LEASE)
    assert task.attempts == 1
    assert store.counts() == counts(running=1)


# ---- cancel ------------------------------------------------------------------------------------


def test_cancelled_pending_task_is_never_leased(store: TaskStore) -> None:
    fill(store, "a", "b")
    task = store.cancel("a", 2.0)
    assert task is not None
    for seen in (task, get(store, "a")):
        assert seen.state is TaskState.CANCELLED
        assert seen.finished == 2.0
        assert seen.payload is None
        assert is_finished(seen)
    assert store.counts() == counts(pending=1, cancelled=1)
    assert ids(store.lease("w1", 10, 3.0, LEASE)) == ["b"]
    assert store.lease("w1", 10, 3.0, LEASE) == []


def test_store_with_only_cancelled_tasks_has_nothing_pending(store: TaskStore) -> None:
    fill(store, "a")
    store.cancel("a", 1.0)
    assert not store.has_pending()
    assert store.pending_count() == 0
    assert store.lease("w1", 10, 2.0, LEASE) == []


def test_cancel_of_a_retrying_task_stops_its_retries(store: TaskStore) -> None:
    fill(store, "a", retries=3, retry_backoff=5.0)
    (task,) = store.lease("w1", 1, 0.0, LEASE)
    store.finish("w1", [failure(task)], 1.0)
    cancelled = store.cancel("a", 2.0)
    assert cancelled is not None and cancelled.state is TaskState.CANCELLED
    stored = get(store, "a")
    assert (stored.state, stored.due, stored.finished) == (TaskState.CANCELLED, None, 2.0)
    assert store.counts() == counts(cancelled=1)
    assert store.pending_count() == 0
    assert store.promote(100.0) == []
    assert store.lease("w1", 1, 100.0, LEASE) == []
    assert get(store, "a").state is TaskState.CANCELLED


def test_cancel_of_a_running_task_ends_its_lease(store: TaskStore) -> None:
    fill(store, "a", "b")
    task, _ = store.lease("w1", 2, 0.0, LEASE)
    cancelled = store.cancel("a", 1.0)
    assert cancelled is not None
    assert (cancelled.state, cancelled.worker) == (TaskState.CANCELLED, "w1")  # who to tell to stop
    assert store.counts() == counts(running=1, cancelled=1)
    assert store.renew("w1", held(store, "a"), held(store), 2.0, LEASE) == 0
    assert store.release("w1", leases(task)) == []
    assert ids(store.expire(100.0)[0]) == ["b"]  # only the lease still held
    accepted, ignored = store.finish("w1", [done(task)], 3.0)
    assert (accepted, ignored) == ([], ["a"])
    stored = get(store, "a")
    assert (stored.state, stored.result, stored.finished) == (TaskState.CANCELLED, None, 1.0)


def test_cancel_of_a_finished_unknown_or_forgotten_task_returns_none(store: TaskStore) -> None:
    fill(store, "a", "b")
    a, b = store.lease("w1", 2, 0.0, LEASE)
    store.finish("w1", [done(a), done(b)], 1.0)
    store.forget(["b"], 1.0)
    assert store.cancel("a", 2.0) is None
    assert store.cancel("b", 2.0) is None
    assert store.cancel("unknown", 2.0) is None
    assert get(store, "a").state is TaskState.DONE
    assert get(store, "b").state is TaskState.EXPIRED
    assert store.counts() == counts(done=1, expired=1)


def test_cancelling_twice_returns_none_the_second_time(store: TaskStore) -> None:
    fill(store, "a")
    assert store.cancel("a", 1.0) is not None
    assert store.cancel("a", 2.0) is None
    assert store.counts() == counts(cancelled=1)


# ---- forgetting and expiring results -----------------------------------------------------------


def finish_all(store: TaskStore, *task_ids: str, now: float) -> None:
    fill(store, *task_ids, now=now)
    leased = store.lease("w", len(task_ids), now, LEASE)
    assert ids(store.finish("w", [done(t, repr(t.id)) for t in leased], now)[0]) == list(task_ids)


def test_forget_drops_finished_results_and_leaves_a_tombstone(store: TaskStore) -> None:
    finish_all(store, "a", "b", now=1.0)
    fill(store, "p")
    store.lease("w", 1, 2.0, LEASE)
    fill(store, "q")
    assert store.forget(["a", "p", "q", "unknown"], 3.0) == ["a"]
    tomb = get(store, "a")
    assert tomb.state is TaskState.EXPIRED
    assert is_finished(tomb)
    assert tomb.result is None
    assert tomb.error is not None and tomb.error["type"] == "ResultExpired"
    assert "forgotten" in tomb.error["message"] and "a" in tomb.error["message"]
    assert get(store, "b").result == "'b'"
    assert store.counts() == counts(running=1, pending=1, done=1, expired=1)
    assert store.forget(["a"], 4.0) == []
    assert store.counts() == counts(running=1, pending=1, done=1, expired=1)


def test_forget_of_failed_and_cancelled_tasks(store: TaskStore) -> None:
    fill(store, "f", "c")
    (task,) = store.lease("w", 1, 0.0, LEASE)
    store.finish("w", [failure(task)], 1.0)
    store.cancel("c", 1.0)
    assert sorted(store.forget(["f", "c"], 2.0)) == ["c", "f"]
    assert store.counts() == counts(expired=2)


def test_expire_results_turns_old_results_into_tombstones_and_then_forgets_them(store: TaskStore) -> None:
    finish_all(store, "t0", now=0.0)
    finish_all(store, "t1", now=1.0)
    finish_all(store, "t2", now=2.0)
    fill(store, "running")
    store.lease("w2", 1, 2.0, LEASE)
    assert store.expire_results(11.5, 10.0) == 2
    assert [get(store, i).state for i in ("t0", "t1", "t2")] == [TaskState.EXPIRED, TaskState.EXPIRED, TaskState.DONE]
    error = get(store, "t0").error
    assert error is not None and error["type"] == "ResultExpired" and "expired" in error["message"]
    assert store.counts() == counts(running=1, done=1, expired=2)
    assert store.expire_results(11.5, 10.0) == 0
    assert store.expire_results(12.0, 10.0) == 0  # t2 finished at 2.0: not older than the ttl yet
    assert store.counts() == counts(running=1, done=1, expired=2)
    assert store.expire_results(21.5, 10.0) == 1  # t2 expires; the tombstones laid at 11.5 are not older yet
    assert store.counts() == counts(running=1, expired=3)
    assert get(store, "t0").state is TaskState.EXPIRED
    assert store.expire_results(21.6, 10.0) == 0
    assert store.get("t0") is None and store.get("t1") is None
    assert get(store, "t2").state is TaskState.EXPIRED
    assert get(store, "running").state is TaskState.RUNNING
    assert store.counts() == counts(running=1, expired=1)


def test_a_forgotten_id_can_be_submitted_again_and_expiry_leaves_the_new_task_alone(store: TaskStore) -> None:
    finish_all(store, "a", now=1.0)
    store.forget(["a"], 2.0)
    assert store.add([make_task("a")], 3.0) == 1
    assert get(store, "a").state is TaskState.PENDING
    assert store.expire_results(20.0, 10.0) == 0
    assert get(store, "a").state is TaskState.PENDING
    assert store.counts() == counts(pending=1)
    assert ids(store.lease("w", 1, 21.0, LEASE)) == ["a"]
    assert store.counts() == counts(running=1)


def footprint(store: TaskStore) -> int:
    """Everything the store keeps, including internal bookkeeping a leak would hide in."""
    if isinstance(store, SqliteStore):
        return sum(store._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in ("tasks", "gone"))
    assert isinstance(store, MemoryStore)
    parts = (store._tasks, store._level_heap, store._headers, store._retrying, store._finished, store._tombs,
             store._tomb_order)  # fmt: skip
    levels = sum(len(level.fresh) + len(level.returned) for level in store._levels.values())
    return sum(map(len, parts)) + levels + sum(map(len, store._targeted.values())) + len(store._running)


def test_store_stays_bounded_under_a_steady_stream(store: TaskStore) -> None:
    sizes = []
    for round_ in range(10):
        now = 10.0 * round_
        batch = [f"r{round_}-{i}" for i in range(20)]
        fill(store, *batch, now=now, retries=1)
        leased = store.lease("w", 20, now, LEASE)
        store.finish("w", [failure(t) for t in leased[:5]], now)  # retried at once
        store.cancel(batch[5], now)
        assert store.forget([batch[6]], now) == []  # still running
        leased = [t for t in leased if t.state is TaskState.RUNNING] + store.lease("w", 5, now, LEASE)
        store.finish("w", [done(t) for t in leased], now)
        store.forget([batch[7]], now)
        store.expire_results(now, 15.0)
        sizes.append(footprint(store))
        assert store.counts()["pending"] == store.counts()["running"] == 0
        assert sum(store.counts().values()) <= 80
    assert sizes[3:] == [sizes[3]] * 7  # steady from the fourth round on: nothing accumulates
    assert store.get("r0-0") is None


# ---- targeted tasks ----------------------------------------------------------------------------


def test_targeted_tasks_go_only_to_their_worker_and_first(store: TaskStore) -> None:
    store.add([make_task("g1"), make_task("t1", {"worker": "w1"})], 0.0)
    assert store.has_work_for("w2") and store.has_work_for("w1")
    assert ids(store.lease("w2", 10, 0.0, LEASE)) == ["g1"]
    assert not store.has_work_for("w2") and store.has_work_for("w1") and not store.has_pending()
    assert ids(store.lease("w1", 10, 0.0, LEASE)) == ["t1"]
    assert store.targeted_waiting() == {}


def test_cancelled_targeted_task_is_never_leased(store: TaskStore) -> None:
    fill(store, "t1", worker="w1")
    assert store.cancel("t1", 1.0) is not None
    assert not store.has_work_for("w1")
    assert store.lease("w1", 10, 1.0, LEASE) == []


def test_expired_targeted_task_fails_instead_of_moving_to_another_worker(store: TaskStore) -> None:
    fill(store, "t1", worker="w1")
    store.lease("w1", 1, 0.0, 5.0)
    requeued, failed = store.expire(10.0)
    assert requeued == [] and ids(failed) == ["t1"]
    error = get(store, "t1").error
    assert error is not None and "sent to worker w1" in error["message"]


def test_fail_targeted_fails_what_waits_for_a_gone_worker(store: TaskStore) -> None:
    fill(store, "t0", "t1", "t2", worker="gone")
    fill(store, "other", worker="here")
    failed = store.fail_targeted("gone", 1.0, "worker gone is not connected")
    assert sorted(ids(failed)) == ["t0", "t1", "t2"] and store.targeted_waiting() == {"here": 1}
    assert store.counts() == counts(pending=1, failed=3)
    error = get(store, "t1").error
    assert error is not None and error["message"] == "worker gone is not connected"
    assert store.fail_targeted("gone", 2.0, "again") == []


# ---- other -------------------------------------------------------------------------------------


def test_only_the_sqlite_store_is_durable() -> None:
    assert MemoryStore.durable is False
    assert SqliteStore.durable is True


def test_finish_rate_counts_the_last_minute_only() -> None:
    from pyrodist.tally import Totals

    def finished(count: int) -> list[Task]:
        tasks = [Task(f"t{i}", "math:sqrt", "", {}, None) for i in range(count)]
        for task in tasks:
            task.state = TaskState.DONE
        return tasks

    totals, young = Totals(started=0.0), Totals(started=1001.0)
    for meter in (totals, young):
        meter.finished(finished(30), now=1000.2)
        meter.finished(finished(30), now=1030.9)
    assert totals.rate(now=1031.0) == pytest.approx(1.0)  # 60 events over 60 s
    assert totals.rate(now=1075.0) == pytest.approx(0.5)  # the first 30 fell out of the window
    assert young.rate(now=1031.0) == pytest.approx(2.0)  # a master up for 30 s divides by 30
    assert totals.rate(now=2000.0) == 0.0
    assert totals.counts["done"] == 60
