"""MemoryStore's queue, leases, reports, expiry and cancellation, driven by an explicit clock."""

from __future__ import annotations

from typing import Any

import pytest

from pyrodist.protocol import TaskState
from pyrodist.store import DEFAULT_MAX_ATTEMPTS, MemoryStore, Outcome, Task, is_finished

LEASE = 10.0


def make_task(task_id: str, options: dict[str, Any] | None = None, owner: str | None = None) -> Task:
    return Task(task_id, "math:sqrt", "((4,),{})", options or {}, owner)


def store_with(*task_ids: str, now: float = 0.0) -> MemoryStore:
    store = MemoryStore()
    store.add([make_task(t) for t in task_ids], now)
    return store


def ids(tasks: list[Task]) -> list[str]:
    return [t.id for t in tasks]


def counts(pending: int = 0, running: int = 0, done: int = 0, failed: int = 0, cancelled: int = 0) -> dict[str, int]:
    return {"pending": pending, "running": running, "done": done, "failed": failed, "cancelled": cancelled}


def done(task: Task, result: str = "2.0") -> Outcome:
    return Outcome(task.id, task.token, True, result=result)


# ---- adding and leasing in order ---------------------------------------------------------------


def test_new_store_is_empty() -> None:
    store = MemoryStore()
    assert store.counts() == counts()
    assert not store.has_pending()
    assert store.lease("w1", 10, 0.0, LEASE) == []


def test_added_tasks_are_pending_and_stamped_with_the_time() -> None:
    store = store_with("a", "b", now=5.0)
    assert store.counts() == counts(pending=2)
    assert store.has_pending()
    task = store.get("a")
    assert task is not None
    assert task.state is TaskState.PENDING
    assert task.submitted == 5.0
    assert store.get("nope") is None


def test_lease_hands_out_tasks_first_in_first_out() -> None:
    store = store_with("a", "b", "c", "d")
    assert ids(store.lease("w1", 2, 1.0, LEASE)) == ["a", "b"]
    assert ids(store.lease("w2", 10, 1.0, LEASE)) == ["c", "d"]
    assert store.lease("w3", 10, 1.0, LEASE) == []


def test_tasks_added_in_later_batches_come_after_earlier_ones() -> None:
    store = store_with("a")
    store.add([make_task("b")], 1.0)
    store.add([make_task("c")], 2.0)
    assert ids(store.lease("w1", 10, 3.0, LEASE)) == ["a", "b", "c"]


def test_lease_respects_max_tasks() -> None:
    store = store_with(*[f"t{i}" for i in range(10)])
    assert len(store.lease("w1", 3, 0.0, LEASE)) == 3
    assert len(store.lease("w1", 1, 0.0, LEASE)) == 1
    assert store.lease("w1", 0, 0.0, LEASE) == []
    assert store.counts() == counts(pending=6, running=4)


def test_higher_priority_is_leased_first_and_fifo_within_a_priority() -> None:
    store = MemoryStore()
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


def test_later_high_priority_task_overtakes_queued_ones() -> None:
    store = store_with("a", "b")
    store.add([make_task("urgent", {"priority": 1})], 1.0)
    assert ids(store.lease("w1", 3, 2.0, LEASE)) == ["urgent", "a", "b"]


def test_lease_records_worker_token_deadline_attempt_and_start() -> None:
    store = store_with("a", "b")
    first, second = store.lease("w1", 2, 3.0, LEASE)
    assert first.state is TaskState.RUNNING
    assert first.worker == "w1"
    assert first.deadline == 3.0 + LEASE
    assert first.attempts == 1
    assert first.started == 3.0
    assert first.token != second.token
    assert store.counts() == counts(running=2)
    assert not store.has_pending()


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


# ---- idempotent add ----------------------------------------------------------------------------


def test_adding_a_known_id_again_changes_nothing() -> None:
    store = store_with("a", now=1.0)
    original = store.get("a")
    store.add([make_task("a", {"priority": 100})], 2.0)
    assert store.get("a") is original
    assert store.counts() == counts(pending=1)
    assert ids(store.lease("w1", 10, 3.0, LEASE)) == ["a"]
    assert store.lease("w1", 10, 3.0, LEASE) == []


def test_readding_a_running_or_finished_task_does_not_requeue_it() -> None:
    store = store_with("run", "fin")
    running, finished = store.lease("w1", 2, 0.0, LEASE)
    store.finish("w1", [done(finished)], 1.0)
    store.add([make_task("run"), make_task("fin")], 2.0)
    assert store.counts() == counts(running=1, done=1)
    assert store.lease("w2", 10, 3.0, LEASE) == []
    assert running.state is TaskState.RUNNING


def test_duplicate_ids_within_one_batch_add_one_task() -> None:
    store = MemoryStore()
    store.add([make_task("a"), make_task("a")], 0.0)
    assert store.counts() == counts(pending=1)


# ---- reports -----------------------------------------------------------------------------------


def test_counts_follow_a_task_through_its_life() -> None:
    store = store_with("a", "b", "c")
    assert store.counts() == counts(pending=3)
    a, b = store.lease("w1", 2, 0.0, LEASE)
    assert store.counts() == counts(pending=1, running=2)
    store.finish("w1", [done(a)], 1.0)
    assert store.counts() == counts(pending=1, running=1, done=1)
    store.finish("w1", [Outcome(b.id, b.token, False, error={"type": "E", "message": "m", "traceback": ""})], 2.0)
    assert store.counts() == counts(pending=1, done=1, failed=1)
    store.cancel("c", 3.0)
    assert store.counts() == counts(done=1, failed=1, cancelled=1)


def test_report_with_the_right_token_is_accepted_and_records_the_result() -> None:
    store = store_with("a")
    (task,) = store.lease("w1", 1, 1.0, LEASE)
    accepted, ignored = store.finish("w1", [done(task, "42")], 4.0)
    assert accepted == [task]
    assert ignored == []
    assert task.state is TaskState.DONE
    assert task.result == "42"
    assert task.error is None
    assert task.finished == 4.0
    assert is_finished(task)


def test_failed_report_records_the_error() -> None:
    store = store_with("a")
    (task,) = store.lease("w1", 1, 0.0, LEASE)
    error = {"type": "ZeroDivisionError", "message": "division by zero", "traceback": "Traceback ..."}
    accepted, _ = store.finish("w1", [Outcome("a", task.token, False, error=error)], 1.0)
    assert accepted == [task]
    assert task.state is TaskState.FAILED
    assert task.error == error
    assert task.result is None
    assert is_finished(task)


@pytest.mark.parametrize(
    ("worker", "task_id", "token_offset"),
    [("w1", "a", 1), ("w2", "a", 0), ("w1", "unknown", 0)],
    ids=["wrong token", "wrong worker", "unknown id"],
)
def test_report_that_does_not_match_the_lease_is_ignored(worker: str, task_id: str, token_offset: int) -> None:
    store = store_with("a")
    (task,) = store.lease("w1", 1, 0.0, LEASE)
    accepted, ignored = store.finish(worker, [Outcome(task_id, task.token + token_offset, True, result="1")], 1.0)
    assert accepted == []
    assert ignored == [task_id]
    assert task.state is TaskState.RUNNING
    assert store.counts() == counts(running=1)


def test_report_for_a_pending_task_is_ignored() -> None:
    store = store_with("a")
    accepted, ignored = store.finish("w1", [Outcome("a", 0, True, result="1")], 1.0)
    assert (accepted, ignored) == ([], ["a"])
    assert store.counts() == counts(pending=1)


def test_first_valid_report_wins() -> None:
    store = store_with("a")
    (task,) = store.lease("w1", 1, 0.0, LEASE)
    store.finish("w1", [done(task, "'first'")], 1.0)
    accepted, ignored = store.finish(
        "w1", [Outcome("a", task.token, False, error={"type": "E", "message": "late", "traceback": ""})], 2.0
    )
    assert (accepted, ignored) == ([], ["a"])
    assert task.state is TaskState.DONE
    assert task.result == "'first'"
    assert task.finished == 1.0
    assert store.counts() == counts(done=1)


def test_duplicate_report_in_one_batch_counts_once() -> None:
    store = store_with("a")
    (task,) = store.lease("w1", 1, 0.0, LEASE)
    accepted, ignored = store.finish("w1", [done(task, "1"), done(task, "2")], 1.0)
    assert ids(accepted) == ["a"]
    assert ignored == ["a"]
    assert task.result == "1"


def test_batch_report_accepts_the_good_and_ignores_the_bad() -> None:
    store = store_with("a", "b")
    a, b = store.lease("w1", 2, 0.0, LEASE)
    accepted, ignored = store.finish("w1", [done(a), Outcome("b", b.token + 99, True, result="x"), done(b)], 1.0)
    assert ids(accepted) == ["a", "b"]
    assert ignored == ["b"]


def test_arguments_are_dropped_once_a_task_finishes() -> None:
    store = store_with("ok", "bad")
    ok, bad = store.lease("w1", 2, 0.0, LEASE)
    assert ok.payload is not None
    store.finish(
        "w1", [done(ok), Outcome("bad", bad.token, False, error={"type": "E", "message": "", "traceback": ""})], 1.0
    )
    assert ok.payload is None
    assert bad.payload is None


def test_record_shows_the_public_fields_with_the_result_as_payload() -> None:
    store = store_with("a", now=1.0)
    (task,) = store.lease("w1", 1, 2.0, LEASE)
    store.finish("w1", [done(task, "9")], 3.0)
    assert task.record() == {
        "id": "a",
        "state": "done",
        "func": "math:sqrt",
        "payload": "9",
        "error": None,
        "worker": "w1",
        "attempts": 1,
        "submitted": 1.0,
        "started": 2.0,
        "finished": 3.0,
    }


# ---- renew and expire --------------------------------------------------------------------------


def test_expire_before_the_deadline_takes_nothing_back() -> None:
    store = store_with("a")
    store.lease("w1", 1, 0.0, LEASE)
    assert store.expire(LEASE) == ([], [])
    assert store.counts() == counts(running=1)


def test_renew_extends_the_deadline_so_expire_later_keeps_the_lease() -> None:
    store = store_with("a", "b")
    a, b = store.lease("w1", 2, 0.0, LEASE)
    assert store.renew("w1", ["a"], 8.0, LEASE) == 1
    assert a.deadline == 8.0 + LEASE
    requeued, failed = store.expire(15.0)
    assert requeued == [b]
    assert failed == []
    assert a.state is TaskState.RUNNING
    assert a.worker == "w1"
    accepted, _ = store.finish("w1", [done(a)], 16.0)
    assert accepted == [a]


def test_renew_only_counts_leases_the_worker_holds() -> None:
    store = store_with("a", "b")
    a, _ = store.lease("w1", 2, 0.0, LEASE)
    assert store.renew("w2", ["a", "b"], 5.0, LEASE) == 0
    assert store.renew("w1", ["a", "unknown"], 5.0, LEASE) == 1
    assert a.deadline == 5.0 + LEASE
    store.finish("w1", [done(a)], 6.0)
    assert store.renew("w1", ["a"], 7.0, LEASE) == 0


def test_expired_task_goes_back_to_pending_and_is_leased_again_with_a_new_token() -> None:
    store = store_with("a")
    (first,) = store.lease("w1", 1, 0.0, LEASE)
    old_token = first.token
    requeued, failed = store.expire(LEASE + 1)
    assert (requeued, failed) == ([first], [])
    assert first.state is TaskState.PENDING
    assert first.worker is None
    assert store.counts() == counts(pending=1)

    (again,) = store.lease("w2", 1, 12.0, LEASE)
    assert again is first
    assert again.token != old_token
    assert again.worker == "w2"
    assert again.attempts == 2

    accepted, ignored = store.finish("w1", [Outcome("a", old_token, True, result="'late'")], 13.0)
    assert (accepted, ignored) == ([], ["a"])
    accepted, ignored = store.finish("w2", [done(again, "'new'")], 14.0)
    assert (accepted, ignored) == ([again], [])
    assert again.result == "'new'"


def test_late_report_with_the_old_token_is_ignored_even_from_the_new_worker() -> None:
    store = store_with("a")
    (task,) = store.lease("w1", 1, 0.0, LEASE)
    old_token = task.token
    store.expire(LEASE + 1)
    store.lease("w1", 1, 12.0, LEASE)
    accepted, ignored = store.finish("w1", [Outcome("a", old_token, True, result="1")], 13.0)
    assert (accepted, ignored) == ([], ["a"])
    assert store.counts() == counts(running=1)


def test_expired_task_keeps_its_place_ahead_of_later_tasks() -> None:
    store = store_with("a", "b", "c")
    store.lease("w1", 1, 0.0, LEASE)
    store.expire(LEASE + 1)
    assert ids(store.lease("w2", 3, 12.0, LEASE)) == ["a", "b", "c"]


def expire_repeatedly(store: MemoryStore, times: int) -> tuple[list[Task], list[Task]]:
    """Lease the one task and let its lease run out, `times` times; returns the last expire's lists."""
    now = 0.0
    result: tuple[list[Task], list[Task]] = ([], [])
    for _ in range(times):
        assert len(store.lease("w1", 1, now, LEASE)) == 1
        now += LEASE + 1
        result = store.expire(now)
    return result


def test_task_fails_as_worker_lost_after_the_default_number_of_attempts() -> None:
    assert DEFAULT_MAX_ATTEMPTS == 3
    store = store_with("a")
    requeued, failed = expire_repeatedly(store, DEFAULT_MAX_ATTEMPTS - 1)
    assert ids(requeued) == ["a"]
    assert failed == []
    assert store.counts() == counts(pending=1)

    requeued, failed = expire_repeatedly(store, 1)
    assert requeued == []
    assert ids(failed) == ["a"]
    task = failed[0]
    assert task.state is TaskState.FAILED
    assert task.attempts == 3
    assert task.error is not None
    assert task.error["type"] == "WorkerLost"
    assert "3 times" in task.error["message"]
    assert "max_attempts=3" in task.error["message"]
    assert "w1" in task.error["message"]
    assert task.payload is None
    assert store.counts() == counts(failed=1)
    assert store.lease("w1", 1, 1000.0, LEASE) == []


def test_max_attempts_one_fails_on_the_first_lost_lease() -> None:
    store = MemoryStore()
    store.add([make_task("a", {"max_attempts": 1})], 0.0)
    requeued, failed = expire_repeatedly(store, 1)
    assert requeued == []
    assert ids(failed) == ["a"]
    assert failed[0].error is not None
    assert failed[0].error["type"] == "WorkerLost"
    assert "1 times" in failed[0].error["message"]
    assert "max_attempts=1" in failed[0].error["message"]


def test_report_after_the_task_was_failed_as_lost_is_ignored() -> None:
    store = MemoryStore()
    store.add([make_task("a", {"max_attempts": 1})], 0.0)
    (task,) = store.lease("w1", 1, 0.0, LEASE)
    store.expire(LEASE + 1)
    accepted, ignored = store.finish("w1", [done(task)], LEASE + 2)
    assert (accepted, ignored) == ([], ["a"])
    assert task.state is TaskState.FAILED


# ---- release -----------------------------------------------------------------------------------


def test_released_tasks_go_back_ahead_of_later_tasks_without_counting_an_attempt() -> None:
    store = store_with("a", "b", "c", "d")
    a, _ = store.lease("w1", 2, 0.0, LEASE)
    released = store.release("w1", ["b", "a"])
    assert set(ids(released)) == {"a", "b"}
    assert a.state is TaskState.PENDING
    assert a.attempts == 0
    assert a.worker is None
    assert store.counts() == counts(pending=4)
    assert ids(store.lease("w2", 4, 1.0, LEASE)) == ["a", "b", "c", "d"]
    assert a.attempts == 1


def test_release_ignores_tasks_the_worker_does_not_hold() -> None:
    store = store_with("a", "b")
    store.lease("w1", 1, 0.0, LEASE)
    assert store.release("w2", ["a"]) == []
    assert store.release("w1", ["b", "unknown"]) == []
    assert store.counts() == counts(pending=1, running=1)


def test_report_for_a_released_task_is_ignored() -> None:
    store = store_with("a")
    (task,) = store.lease("w1", 1, 0.0, LEASE)
    store.release("w1", ["a"])
    accepted, ignored = store.finish("w1", [done(task)], 1.0)
    assert (accepted, ignored) == ([], ["a"])
    assert store.counts() == counts(pending=1)


def test_released_task_is_not_failed_by_many_releases() -> None:
    store = MemoryStore()
    store.add([make_task("a", {"max_attempts": 1})], 0.0)
    for _ in range(5):
        store.lease("w1", 1, 0.0, LEASE)
        store.release("w1", ["a"])
    (task,) = store.lease("w1", 1, 0.0, LEASE)
    assert task.attempts == 1
    assert store.counts() == counts(running=1)


# ---- cancel ------------------------------------------------------------------------------------


def test_cancelled_pending_task_is_never_leased() -> None:
    store = store_with("a", "b")
    task = store.cancel("a", 2.0)
    assert task is store.get("a")
    assert task is not None
    assert task.state is TaskState.CANCELLED
    assert task.finished == 2.0
    assert task.payload is None
    assert is_finished(task)
    assert store.counts() == counts(pending=1, cancelled=1)
    assert ids(store.lease("w1", 10, 3.0, LEASE)) == ["b"]
    assert store.lease("w1", 10, 3.0, LEASE) == []


def test_store_with_only_cancelled_tasks_has_nothing_pending() -> None:
    store = store_with("a")
    store.cancel("a", 1.0)
    assert not store.has_pending()
    assert store.lease("w1", 10, 2.0, LEASE) == []


def test_cancel_of_a_running_task_returns_none_and_leaves_it_running() -> None:
    store = store_with("a")
    (task,) = store.lease("w1", 1, 0.0, LEASE)
    assert store.cancel("a", 1.0) is None
    assert task.state is TaskState.RUNNING
    assert store.counts() == counts(running=1)


def test_cancel_of_a_finished_or_unknown_task_returns_none() -> None:
    store = store_with("a")
    (task,) = store.lease("w1", 1, 0.0, LEASE)
    store.finish("w1", [done(task)], 1.0)
    assert store.cancel("a", 2.0) is None
    assert store.cancel("unknown", 2.0) is None
    assert task.state is TaskState.DONE


def test_cancelling_twice_returns_none_the_second_time() -> None:
    store = store_with("a")
    assert store.cancel("a", 1.0) is not None
    assert store.cancel("a", 2.0) is None
    assert store.counts() == counts(cancelled=1)


def test_store_is_not_durable() -> None:
    assert MemoryStore.durable is False


def test_forget_finished_expires_results_in_finishing_order() -> None:
    store = MemoryStore()
    store.add([Task(f"t{i}", "m:f", "((),{})", {}, None) for i in range(4)], now=0.0)
    leased = store.lease("w", 4, now=0.0, lease_timeout=10.0)
    for i, task in enumerate(leased[:3]):
        store.finish("w", [Outcome(task.id, task.token, True, result=str(i))], now=float(i))
    assert store.forget_finished(before=1.5) == 2
    assert store.get("t0") is None and store.get("t1") is None and store.get("t2") is not None
    assert store.counts() == {"pending": 0, "running": 1, "done": 1, "failed": 0, "cancelled": 0}
    assert store.forget_finished(before=100.0) == 1
    assert store.get("t3") is not None  # still running: never forgotten


def test_rate_meter_counts_the_last_minute_only() -> None:
    from pyrodist.master import RateMeter

    meter = RateMeter()
    meter.add(30, now=1000.2)
    meter.add(30, now=1030.9)
    assert meter.rate(now=1031.0, since=0.0) == pytest.approx(1.0)  # 60 events over 60 s
    assert meter.rate(now=1075.0, since=0.0) == pytest.approx(0.5)  # the first 30 fell out of the window
    assert meter.rate(now=1031.0, since=1001.0) == pytest.approx(2.0)  # a master up for 30 s divides by 30
    assert meter.rate(now=2000.0, since=0.0) == 0.0


def test_targeted_tasks_go_only_to_their_worker_and_first() -> None:
    store = MemoryStore()
    store.add([Task("g1", "m:f", "p", {}, None), Task("t1", "m:f", "p", {"worker": "w1"}, None)], now=0.0)
    assert store.has_work_for("w2") and store.has_work_for("w1")
    assert [t.id for t in store.lease("w2", 10, now=0.0, lease_timeout=5.0)] == ["g1"]
    assert not store.has_work_for("w2") and store.has_work_for("w1") and not store.has_pending()
    assert [t.id for t in store.lease("w1", 10, now=0.0, lease_timeout=5.0)] == ["t1"]
    assert store.targeted_waiting() == {}


def test_cancelled_targeted_task_is_never_leased() -> None:
    store = MemoryStore()
    store.add([Task("t1", "m:f", "p", {"worker": "w1"}, None)], now=0.0)
    assert store.cancel("t1", now=1.0) is not None
    assert not store.has_work_for("w1")
    assert store.lease("w1", 10, now=1.0, lease_timeout=5.0) == []


def test_expired_targeted_task_fails_instead_of_moving_to_another_worker() -> None:
    store = MemoryStore()
    store.add([Task("t1", "m:f", "p", {"worker": "w1"}, None)], now=0.0)
    store.lease("w1", 1, now=0.0, lease_timeout=5.0)
    requeued, failed = store.expire(now=10.0)
    assert requeued == [] and [t.id for t in failed] == ["t1"]
    assert failed[0].error is not None and "sent to worker w1" in failed[0].error["message"]


def test_fail_targeted_fails_what_waits_for_a_gone_worker() -> None:
    store = MemoryStore()
    store.add([Task(f"t{i}", "m:f", "p", {"worker": "gone"}, None) for i in range(3)], now=0.0)
    failed = store.fail_targeted("gone", now=1.0, message="worker gone is not connected")
    assert [t.id for t in failed] == ["t0", "t1", "t2"] and store.targeted_waiting() == {}
    assert store.counts()["failed"] == 3 and store.counts()["pending"] == 0
