"""Notifier fan-out: order, filters, targeted publish, dropping broken or lagging subscribers, shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from pyrodist import notify
from pyrodist.notify import Notifier, Published
from pyrodist.protocol import TaskState
from pyrodist.wire import TaskRecord

WAIT = 5.0


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
    """Poll predicate until it holds or timeout passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return predicate()
        time.sleep(0.005)
    return True


def records(*task_ids: str, owner: str | None = None) -> list[Published]:
    return [(TaskRecord(task_id, TaskState.DONE, "tests.tasks:inc"), owner) for task_id in task_ids]


class RecordingSink:
    """Keeps every record and every batch it is handed."""

    def __init__(self) -> None:
        self.records: list[TaskRecord] = []
        self.batches: list[int] = []
        self.closed = threading.Event()
        self._lock = threading.Lock()

    def deliver(self, batch: list[TaskRecord]) -> None:
        with self._lock:
            self.records.extend(batch)
            self.batches.append(len(batch))

    def close(self) -> None:
        self.closed.set()

    def ids(self) -> list[str]:
        with self._lock:
            return [r.id for r in self.records]

    def has(self, task_id: str) -> bool:
        return task_id in self.ids()


class GatedSink(RecordingSink):
    """Blocks in deliver until its gate opens, like a client that stopped reading."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()

    def deliver(self, batch: list[TaskRecord]) -> None:
        self.entered.set()
        assert self.gate.wait(WAIT * 4), "test never opened the gate"
        super().deliver(batch)


class FailingSink(RecordingSink):
    """A subscriber that has vanished: every delivery raises."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def deliver(self, batch: list[TaskRecord]) -> None:
        self.attempts += 1
        raise ConnectionError("subscriber is gone")


@pytest.fixture
def notifier() -> Iterator[Notifier]:
    hub = Notifier()
    yield hub
    hub.close()


@pytest.fixture
def gated() -> Iterator[GatedSink]:
    sink = GatedSink()
    yield sink
    sink.gate.set()  # never leave a delivery thread blocked behind a failed test


# ---- delivery ----------------------------------------------------------------------------------


def test_every_record_is_delivered_once_and_in_order(notifier: Notifier) -> None:
    sink = RecordingSink()
    sub_id = notifier.subscribe(sink)
    expected = [f"t{i}" for i in range(2_000)]
    for start in range(0, len(expected), 7):
        notifier.publish(records(*expected[start : start + 7]))
    assert wait_until(lambda: len(sink.ids()) >= len(expected))
    assert notifier.unsubscribe(sub_id)
    assert sink.closed.wait(WAIT)
    assert sink.ids() == expected


def test_every_subscriber_gets_every_record(notifier: Notifier) -> None:
    sinks = [RecordingSink() for _ in range(3)]
    for sink in sinks:
        notifier.subscribe(sink)
    notifier.publish(records("a", "b", "c"))
    for sink in sinks:
        assert wait_until(lambda sink=sink: len(sink.ids()) >= 3)
        assert sink.ids() == ["a", "b", "c"]


def test_publishing_nothing_or_to_no_subscribers_is_harmless(notifier: Notifier) -> None:
    notifier.publish(records("a"))
    sink = RecordingSink()
    notifier.subscribe(sink)
    notifier.publish([])
    notifier.publish(records("b"))
    assert wait_until(lambda: sink.has("b"))
    assert sink.ids() == ["b"]


def test_deliveries_are_batched_at_most_max_batch(notifier: Notifier, gated: GatedSink) -> None:
    notifier.subscribe(gated)
    notifier.publish(records("first"))
    assert gated.entered.wait(WAIT)
    expected = [f"t{i}" for i in range(notify.MAX_BATCH * 2 + 10)]
    notifier.publish(records(*expected))
    gated.gate.set()
    assert wait_until(lambda: len(gated.ids()) >= len(expected) + 1)
    assert gated.ids() == ["first", *expected]
    assert max(gated.batches) == notify.MAX_BATCH
    assert len(gated.batches) < len(expected)


def test_subscription_ids_are_distinct(notifier: Notifier) -> None:
    first = notifier.subscribe(RecordingSink())
    second = notifier.subscribe(RecordingSink())
    assert first != second
    assert notifier.count() == 2


# ---- filters -----------------------------------------------------------------------------------


def test_subscriber_with_task_ids_gets_only_those(notifier: Notifier) -> None:
    sink = RecordingSink()
    notifier.subscribe(sink, task_ids=["a", "c", "marker"])
    notifier.publish(records("a", "b", "c", "d"))
    notifier.publish(records("e", "c", "marker"))
    assert wait_until(lambda: sink.has("marker"))
    assert sink.ids() == ["a", "c", "c", "marker"]


def test_subscriber_with_owner_gets_only_that_owners_records(notifier: Notifier) -> None:
    alice = RecordingSink()
    everyone = RecordingSink()
    plain = RecordingSink()
    notifier.subscribe(alice, owner="alice")
    notifier.subscribe(everyone, everything=True)  # what the admin key allows
    notifier.subscribe(plain)  # without it: only tasks of no client
    notifier.publish(
        [
            *records("a1", owner="alice"),
            *records("b1", owner="bob"),
            *records("n1"),
            *records("no-owner-key"),
            *records("a2", owner="alice"),
        ]
    )
    assert wait_until(lambda: len(everyone.ids()) >= 5)
    assert everyone.ids() == ["a1", "b1", "n1", "no-owner-key", "a2"]
    assert wait_until(lambda: alice.has("a2"))
    assert alice.ids() == ["a1", "a2"]
    assert wait_until(lambda: plain.has("no-owner-key"))
    assert plain.ids() == ["n1", "no-owner-key"]


def test_task_ids_filter_accepts_any_iterable(notifier: Notifier) -> None:
    sink = RecordingSink()
    notifier.subscribe(sink, task_ids=(t for t in ["x"]))
    notifier.publish(records("y", "x"))
    assert wait_until(lambda: sink.has("x"))
    assert sink.ids() == ["x"]


# ---- publish(only=...) ---------------------------------------------------------------------------


def test_publish_only_goes_to_that_subscription(notifier: Notifier) -> None:
    target, other = RecordingSink(), RecordingSink()
    target_id = notifier.subscribe(target)
    notifier.subscribe(other)
    notifier.publish(records("private"), only=target_id)
    notifier.publish(records("marker"))
    assert wait_until(lambda: other.has("marker") and target.has("marker"))
    assert target.ids() == ["private", "marker"]
    assert other.ids() == ["marker"]


def test_publish_only_still_applies_the_subscriptions_filter(notifier: Notifier) -> None:
    sink = RecordingSink()
    sub_id = notifier.subscribe(sink, task_ids=["wanted", "marker"])
    notifier.publish(records("unwanted", "wanted"), only=sub_id)
    notifier.publish(records("marker"))
    assert wait_until(lambda: sink.has("marker"))
    assert sink.ids() == ["wanted", "marker"]


def test_publish_only_to_an_unknown_subscription_goes_nowhere(notifier: Notifier) -> None:
    sink = RecordingSink()
    notifier.subscribe(sink)
    notifier.publish(records("lost"), only="sub-999")
    notifier.publish(records("marker"))
    assert wait_until(lambda: sink.has("marker"))
    assert sink.ids() == ["marker"]


# ---- failing and slow subscribers ----------------------------------------------------------------


def test_subscriber_whose_sink_fails_is_dropped_and_closed(notifier: Notifier) -> None:
    broken = FailingSink()
    healthy = RecordingSink()
    notifier.subscribe(broken)
    notifier.subscribe(healthy)
    assert notifier.count() == 2
    notifier.publish(records("a"))
    assert wait_until(lambda: notifier.count() == 1)
    assert broken.closed.wait(WAIT)
    assert broken.attempts == 1
    notifier.publish(records("b"))
    assert wait_until(lambda: healthy.has("b"))
    assert healthy.ids() == ["a", "b"]
    assert broken.attempts == 1


def test_slow_subscriber_does_not_block_publish_or_others(notifier: Notifier, gated: GatedSink) -> None:
    fast = RecordingSink()
    notifier.subscribe(gated)
    notifier.subscribe(fast)
    notifier.publish(records("first"))
    assert gated.entered.wait(WAIT)

    later = [f"t{i}" for i in range(100)]
    publisher = threading.Thread(target=notifier.publish, args=(records(*later),))
    publisher.start()
    publisher.join(WAIT)
    assert not publisher.is_alive(), "publish() waited for a blocked subscriber"
    assert wait_until(lambda: len(fast.ids()) >= 101)
    assert fast.ids() == ["first", *later]
    assert gated.ids() == []

    gated.gate.set()
    assert wait_until(lambda: len(gated.ids()) >= 101)
    assert gated.ids() == ["first", *later]


def test_subscriber_that_falls_too_far_behind_is_dropped(
    notifier: Notifier, gated: GatedSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify, "MAX_QUEUE", 3)
    fast = RecordingSink()
    notifier.subscribe(gated)
    notifier.subscribe(fast)
    notifier.publish(records("first"))
    assert gated.entered.wait(WAIT)
    for task_id in ["a", "b", "c"]:  # one at a time, so only the blocked subscriber falls behind
        notifier.publish(records(task_id))
        assert wait_until(lambda task_id=task_id: fast.has(task_id))
    assert notifier.count() == 2
    notifier.publish(records("d"))
    assert notifier.count() == 1
    notifier.publish(records("after"))
    assert wait_until(lambda: fast.has("after"))
    assert fast.ids() == ["first", "a", "b", "c", "d", "after"]


def test_subscriber_dropped_for_overflow_has_its_sink_closed(
    notifier: Notifier, gated: GatedSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify, "MAX_QUEUE", 2)
    notifier.subscribe(gated)
    notifier.publish(records("first"))
    assert gated.entered.wait(WAIT)
    notifier.publish(records("a", "b", "c"))
    assert notifier.count() == 0
    gated.gate.set()
    assert gated.closed.wait(2.0)


# ---- unsubscribe and close -----------------------------------------------------------------------


def test_unsubscribe_delivers_what_was_queued_then_closes_the_sink(notifier: Notifier) -> None:
    sink = RecordingSink()
    sub_id = notifier.subscribe(sink)
    notifier.publish(records("a", "b", "c"))
    assert notifier.unsubscribe(sub_id) is True
    assert notifier.count() == 0
    assert sink.closed.wait(WAIT)
    assert sink.ids() == ["a", "b", "c"]


def test_unsubscribe_stops_delivery(notifier: Notifier) -> None:
    sink = RecordingSink()
    other = RecordingSink()
    sub_id = notifier.subscribe(sink)
    notifier.subscribe(other)
    notifier.unsubscribe(sub_id)
    assert sink.closed.wait(WAIT)  # its delivery thread has ended
    notifier.publish(records("after"))
    assert wait_until(lambda: other.has("after"))
    assert sink.ids() == []


def test_unsubscribe_of_an_unknown_id_returns_false(notifier: Notifier) -> None:
    sub_id = notifier.subscribe(RecordingSink())
    assert notifier.unsubscribe("sub-999") is False
    assert notifier.unsubscribe(sub_id) is True
    assert notifier.unsubscribe(sub_id) is False
    assert notifier.count() == 0


def test_close_stops_and_closes_every_subscription() -> None:
    notifier = Notifier()
    sinks = [RecordingSink() for _ in range(3)]
    sub_ids = [notifier.subscribe(sink) for sink in sinks]
    notifier.publish(records("a"))
    notifier.close()
    assert notifier.count() == 0
    for sink in sinks:
        assert sink.closed.wait(WAIT)
        assert sink.ids() == ["a"]
    notifier.publish(records("after"))
    assert all(sink.ids() == ["a"] for sink in sinks)
    assert not any(notifier.unsubscribe(sub_id) for sub_id in sub_ids)


def test_subscribing_after_close_works_again() -> None:
    notifier = Notifier()
    notifier.close()
    sink = RecordingSink()
    notifier.subscribe(sink)
    notifier.publish(records("a"))
    assert wait_until(lambda: sink.has("a"))
    notifier.close()
    assert sink.closed.wait(WAIT)


def test_batches_stop_growing_at_about_max_batch_bytes(
    notifier: Notifier, gated: GatedSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify, "MAX_BATCH_BYTES", 1000)
    notifier.subscribe(gated)
    notifier.publish(records("first"))
    assert gated.entered.wait(WAIT)  # held: the next records queue up behind it
    notifier.publish([(TaskRecord(f"big{i}", TaskState.DONE, "f", "x" * 400), None) for i in range(6)])
    gated.gate.set()
    assert wait_until(lambda: len(gated.ids()) == 7)
    assert gated.batches[1:] == [3, 3]  # 400 + 400 + 400 reaches 1000: a batch ends there
