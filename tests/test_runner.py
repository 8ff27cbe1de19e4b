"""A worker's child process, driven in-process: results of every length come back whole and in order."""

from __future__ import annotations

import pytest

from pyrodist import values
from pyrodist.runner import ChildProcess, TaskCall

ECHO = "tests.tasks:echo"
SIZES = [0, 1, 1000, (1 << 16) - 40, 1 << 16, (1 << 16) + 7, 200_000, 3 * 1024 * 1024 + 5]
"""Result lengths around the 64 KiB reads from a child's pipe, and well past them."""


@pytest.fixture
def child() -> ChildProcess:
    """A child that may run tests.tasks, stopped after the test."""
    process = ChildProcess(["tests.tasks"])
    yield process
    process.close()


def call(task_id: str, value: object, timeout: float | None = None, func: str = ECHO) -> TaskCall:
    """A task running func(value)."""
    return TaskCall(task_id, func, values.encode_call((value,), {}), timeout)


@pytest.mark.parametrize("kind", [bytes, str])
def test_results_of_every_length_come_back_whole_and_in_order(child: ChildProcess, kind: type) -> None:
    sent = [kind(b"x" * size) if kind is bytes else "y" * size for size in SIZES]
    batch = [call(f"t{i}", value) for i, value in enumerate(sent)]
    results = list(child.run_batch(batch))
    assert [ok for ok, _ in results] == [True] * len(sent)
    assert [values.decode_value(result) for _, result in results] == sent


def test_many_short_results_read_in_few_reads_each_come_back(child: ChildProcess) -> None:
    for round_ in range(3):
        batch = [call(f"r{round_}-{i}", i) for i in range(300)]
        assert [values.decode_value(result) for _, result in child.run_batch(batch)] == list(range(300))


def test_a_long_result_under_a_time_limit_comes_back_whole(child: ChildProcess) -> None:
    value = b"z" * (3 * 1024 * 1024)
    (ok, result), *_ = child.run_batch([call("long", value, timeout=60)])
    assert ok and values.decode_value(result) == value


def test_a_child_that_dies_mid_batch_fails_that_task_and_ends_the_batch(child: ChildProcess) -> None:
    batch = [call("a", 1), call("b", 3, func="tests.tasks:crash"), call("c", 2)]
    results = list(child.run_batch(batch))
    assert len(results) == 2
    assert results[0] == (True, values.encode_value(1))
    assert results[1][0] is False and "died" in results[1][1]["message"]
    assert [values.decode_value(result) for _, result in child.run_batch([call("d", 4)])] == [4]


def test_a_task_over_its_time_limit_is_killed_and_the_next_runs_in_a_new_child(child: ChildProcess) -> None:
    first = child.pid
    slow = TaskCall("slow", "tests.tasks:sleep_return", values.encode_call((30, None), {}), 0.3)
    (ok, error), *_ = child.run_batch([slow])
    assert not ok and error["type"] == "TimeoutError"
    assert child.pid != first
    assert [values.decode_value(result) for _, result in child.run_batch([call("e", 5)])] == [5]
