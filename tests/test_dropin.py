"""`ClusterExecutor` next to `ProcessPoolExecutor`: the same calls, the same `except` clauses, the same cancels.

Every test runs its scenario against both executors (the `kind` parameter) and asserts the same outcome;
where pyrodist differs on purpose (a remote `SystemExit`, `max_workers`), the test says so. The cluster is a
master in this process with two worker threads whose tasks run in real child processes.
"""

from __future__ import annotations

import concurrent.futures
import gc
import operator
import os
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyrodist import ClusterExecutor, RemoteTraceback, TaskError
from tests import tasks
from tests.conftest import InProcess, wait_until

KINDS = ["process pool", "cluster"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[InProcess]:
    """A master in this process with two one-slot workers, for the module."""
    running = InProcess()
    try:
        for _ in range(2):
            running.start_worker(concurrency=1, prefetch=1)
        yield running
    finally:
        running.close()


def executor_of(kind: str, cluster: InProcess, max_workers: int | None = None) -> concurrent.futures.Executor:
    """A new executor of that kind, with two processes (or the cluster's two worker slots)."""
    if kind == "process pool":
        return concurrent.futures.ProcessPoolExecutor(2 if max_workers is None else max_workers)
    return ClusterExecutor(max_workers, client=cluster.client())


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# ---- exceptions keep their type


@pytest.mark.parametrize(
    ("func", "args", "caught"),
    [
        (operator.truediv, (1, 0), ZeroDivisionError),
        (tasks.lookup_key, ({}, "missing"), KeyError),
        (tasks.refuse, ("no",), tasks.Refused),  # a class of a module the caller imported
        (operator.getitem, ([1], 5), IndexError),
    ],
)
def test_a_remote_exception_is_caught_by_its_own_type(
    kind: str, cluster: InProcess, func: Any, args: tuple[Any, ...], caught: type[Exception]
) -> None:
    with executor_of(kind, cluster) as executor:
        future = executor.submit(func, *args)
        with pytest.raises(caught) as raised:
            future.result(timeout=60)
        assert raised.value.__cause__ is not None  # the remote traceback, as concurrent.futures attaches it
        assert type(raised.value).__name__ == caught.__name__
        results = executor.map(func, *([arg] for arg in args))
        with pytest.raises(caught):
            next(results)
        if kind == "cluster":
            assert isinstance(raised.value, TaskError) and isinstance(raised.value.__cause__, RemoteTraceback)


def test_the_message_is_the_remote_ones(kind: str, cluster: InProcess) -> None:
    with executor_of(kind, cluster) as executor:
        error = executor.submit(operator.truediv, 1, 0).exception(timeout=60)
    assert error is not None and error.args == ("division by zero",)
    # On purpose: a TaskError reads "task ID failed: ZeroDivisionError: division by zero" (which task, what type).
    assert (
        str(error) == "division by zero"
        if kind == "process pool"
        else str(error).endswith("failed: ZeroDivisionError: division by zero")
    )


def test_sys_exit_in_a_task_fails_that_task_and_the_next_one_runs(kind: str, cluster: InProcess) -> None:
    with executor_of(kind, cluster) as executor:
        failed = executor.submit(tasks.leave, 3)
        # On purpose: the process pool raises SystemExit itself in the caller; the cluster never makes a
        # remote SystemExit exit the caller, so it is a TaskError naming it.
        expected = SystemExit if kind == "process pool" else TaskError
        with pytest.raises(expected) as raised:
            failed.result(timeout=60)
        if kind == "cluster":
            assert raised.value.type_name == "SystemExit"  # type: ignore[attr-defined]
        assert executor.submit(tasks.inc, 1).result(timeout=60) == 2


# ---- cancellation as the standard library means it


def test_a_running_call_is_not_cancelled_a_pending_one_is(kind: str, cluster: InProcess, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with executor_of(kind, cluster) as executor:
        log = tmp_path / "started"
        running = [executor.submit(tasks.hold, str(log), str(gate)) for _ in range(2)]
        wait_until(lambda: log.exists() and len(log.read_text().split()) == 2, what="both calls to start")
        later = [executor.submit(tasks.inc, i) for i in range(6)]
        assert [f.running() for f in running] == [True, True]
        assert [f.cancel() for f in running] == [False, False]
        assert later[-1].cancel() is True and later[-1].cancelled()
        gate.touch()
        assert [f.result(timeout=60) for f in running] == [None, None]
        assert [f.result(timeout=60) for f in later[:-1] if not f.cancelled()] == [
            i + 1 for i, f in enumerate(later[:-1]) if not f.cancelled()
        ]
        with pytest.raises(concurrent.futures.CancelledError):
            later[-1].result(timeout=0)


def test_shutdown_cancelling_futures_lets_running_calls_finish(kind: str, cluster: InProcess, tmp_path: Path) -> None:
    gate, log = tmp_path / "gate", tmp_path / "started"
    executor = executor_of(kind, cluster)
    running = [executor.submit(tasks.hold, str(log), str(gate), i) for i in range(2)]
    wait_until(lambda: log.exists() and len(log.read_text().split()) == 2, what="both calls to start")
    pending = [executor.submit(tasks.inc, i) for i in range(20)]
    threading.Timer(0.2, gate.touch).start()  # the running calls end once shutdown has cancelled the rest
    executor.shutdown(wait=True, cancel_futures=True)
    assert [f.result(timeout=0) for f in running] == [0, 1]  # finished, not cancelled
    cancelled = [f for f in pending if f.cancelled()]
    assert len(cancelled) >= 15  # the queued ones (an executor may have handed a few out already)
    assert all(f.done() for f in pending)


# ---- map


@pytest.mark.parametrize("chunksize", [1, 7, 100])
def test_map_with_chunks_gives_every_result_in_order(kind: str, cluster: InProcess, chunksize: int) -> None:
    with executor_of(kind, cluster) as executor:
        assert list(executor.map(operator.mul, range(250), range(250), chunksize=chunksize)) == [
            i * i for i in range(250)
        ]


@pytest.mark.parametrize("chunksize", [1, 4])
def test_map_raises_a_failed_calls_own_type_at_its_turn(kind: str, cluster: InProcess, chunksize: int) -> None:
    with executor_of(kind, cluster) as executor:
        results = executor.map(operator.truediv, [1, 2, 3, 4, 5], [1, 1, 0, 1, 1], chunksize=chunksize)
        before: list[float] = []
        with pytest.raises(ZeroDivisionError):
            for value in results:
                before.append(value)
    # On purpose: a process pool fails a chunk as a whole at its first call; the cluster fails only that call.
    assert before == ([] if kind == "process pool" and chunksize > 1 else [1.0, 2.0])


def test_the_map_iterator_keeps_no_result_it_handed_out(kind: str, cluster: InProcess) -> None:
    with executor_of(kind, cluster) as executor:
        results = executor.map(tasks.moved, [tasks.Point(1, 2), tasks.Point(3, 4)], [1, 1])
        first = next(results)
        gone = weakref.ref(first)
        del first
        gc.collect()
        assert gone() is None
        assert next(results) == tasks.Point(4, 4)


def test_bad_chunksize_is_refused(kind: str, cluster: InProcess) -> None:
    with executor_of(kind, cluster) as executor, pytest.raises(ValueError):
        executor.map(tasks.inc, [1], chunksize=0)


# ---- max_workers, shutdown


def test_max_workers_caps_the_calls_at_once(kind: str, cluster: InProcess, tmp_path: Path) -> None:
    many = InProcess()  # a worker with four slots: without the cap, four calls would run at once
    try:
        many.start_worker(concurrency=4, prefetch=1)
        with executor_of(kind, many, max_workers=2) as executor:
            counts = list(executor.map(tasks.overlap, [str(tmp_path)] * 12, [0.05] * 12))
        assert max(counts) <= 2 and len(counts) == 12
    finally:
        many.close()


def test_max_workers_must_be_positive(kind: str, cluster: InProcess) -> None:
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        executor_of(kind, cluster, max_workers=0)


def test_submit_after_shutdown_is_refused(kind: str, cluster: InProcess) -> None:
    executor = executor_of(kind, cluster)
    executor.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(tasks.inc, 1)


def test_closing_leaves_no_thread_of_its_own(kind: str, cluster: InProcess) -> None:
    before = set(threading.enumerate())
    executor = executor_of(kind, cluster)
    assert executor.submit(tasks.inc, 1).result(timeout=60) == 2
    executor.shutdown(wait=True)
    if kind == "cluster":
        executor.client.close()  # type: ignore[attr-defined]  # the test's client: the executor did not make it
    assert set(threading.enumerate()) - before == set()


SHUTDOWN_SCRIPT = """
import atexit, concurrent.futures, sys
from pyrodist import ClusterExecutor
from tests import tasks
from tests.conftest import InProcess

kind = sys.argv[1]
if kind == "cluster":
    cluster = InProcess()
    cluster.start_worker()
    executor = ClusterExecutor(client=cluster.client())
else:
    executor = concurrent.futures.ProcessPoolExecutor(1)
executor.submit(tasks.inc, 1).result(timeout=60)

def late():
    try:
        executor.submit(tasks.inc, 2)
        print("accepted")
    except RuntimeError as exc:
        print("refused:", exc)
    if kind == "cluster":
        executor.shutdown()
        cluster.close()

atexit.register(late)
"""


def test_submit_while_the_interpreter_exits_is_refused(kind: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SHUTDOWN_SCRIPT, kind], capture_output=True, text=True, timeout=120,
        cwd=Path(__file__).parent.parent, env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )  # fmt: skip
    # (the process pool, shut down by its own exit hook by then, says "after shutdown")
    assert "refused: cannot schedule new futures after" in done.stdout, done.stderr[-2000:]
