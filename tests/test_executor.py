"""`ClusterExecutor` behaves like the standard library's executors.

Adapted from CPython's Lib/test/test_concurrent_futures (ExecutorTest, the shutdown tests). Workers run only
allow-listed modules (tests.tasks, math, operator), so `pow` and `divmod` become `operator.pow` and
`operator.truediv`, and a remote exception arrives as TaskError carrying its type name.

In-process: the module's master with two worker threads (`inproc_pair`), or a test's own (`inproc`) when it
needs no workers or one that fetches one task at a time. Tasks that must still be running when the test
looks wait for its `gate` (`tasks.wait_for_file`) instead of sleeping.
"""

from __future__ import annotations

import concurrent.futures
import operator
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyrodist import Client, Future, PyrodistError, TaskError
from pyrodist.executor import ClusterExecutor
from tests import doc_primes, tasks
from tests.conftest import InProcess, start_workers, wait_until


@pytest.fixture
def client(inproc_pair: InProcess) -> Iterator[Client]:
    """A client of the module's in-process master with two one-slot workers."""
    with inproc_pair.client() as c:
        yield c


@pytest.fixture
def executor(client: Client) -> Iterator[ClusterExecutor]:
    """An executor on the module cluster's client."""
    with ClusterExecutor(client) as ex:
        yield ex


def counts(client: Client) -> dict[str, int]:
    """The master's number of tasks per state."""
    return dict(client.stats()["counts"])


def is_closed(client: Client) -> bool:
    """Whether the client refuses calls because it was closed."""
    try:
        client.stats()
    except PyrodistError as exc:
        return "closed" in str(exc)
    return False


# ---- ExecutorTest


def test_submit(executor: ClusterExecutor) -> None:
    assert isinstance(executor, concurrent.futures.Executor)
    future = executor.submit(operator.pow, 2, 8)
    assert isinstance(future, Future)
    assert future.result(30) == 256


def test_submit_keyword(executor: ClusterExecutor) -> None:
    assert executor.submit(tasks.add, 2, b=8).result(30) == 10
    with pytest.raises(TypeError):
        executor.submit(fn=tasks.add, a=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        executor.submit(a=1)  # type: ignore[call-arg]


@pytest.mark.parametrize("chunksize", [1, 3, 10, 100])
def test_map(executor: ClusterExecutor, chunksize: int) -> None:
    results = executor.map(operator.pow, range(10), range(10), chunksize=chunksize)
    assert isinstance(results, Iterator)
    assert list(results) == list(map(pow, range(10), range(10)))


def test_chunksize_is_the_number_of_calls_per_task(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[int] = []
    submit_encoded = client._conn.submit_encoded

    def spy(client_secret: str, submitted: Any) -> int:
        sent.append(len(submitted))
        return submit_encoded(client_secret, submitted)

    monkeypatch.setattr(client._conn, "submit_encoded", spy)
    with ClusterExecutor(client) as ex:
        assert list(ex.map(operator.pow, range(10), range(10), chunksize=3)) == list(map(pow, range(10), range(10)))
        assert list(ex.map(tasks.inc, range(10))) == list(range(1, 11))
    # 3 + 3 + 3 + 1 calls in 4 tasks, sent 2 at first, then more per submit; the default: a task per call
    assert sent == [2, 2, 10]


def test_map_stops_at_the_shortest_iterable(executor: ClusterExecutor) -> None:
    assert list(executor.map(tasks.add, range(5), range(3))) == [0, 2, 4]
    assert list(executor.map(tasks.inc, [])) == []


def test_map_exception(executor: ClusterExecutor) -> None:
    results = executor.map(operator.truediv, [1, 1, 1, 1], [2, 4, 0, 5])
    assert next(results) == 0.5
    assert next(results) == 0.25
    with pytest.raises(TaskError) as info:
        next(results)
    assert info.value.type_name == "ZeroDivisionError"
    with pytest.raises(StopIteration):  # like the stdlib's: an error ends the iterator
        next(results)


def test_map_timeout(executor: ClusterExecutor, tmp_path: Path, gate: Path) -> None:
    results = []
    (tmp_path / "open").touch()
    with pytest.raises(TimeoutError):  # concurrent.futures.TimeoutError is the builtin since 3.11
        paths = [str(tmp_path / "open"), str(tmp_path / "open"), str(gate)]
        for value in executor.map(tasks.wait_for_file, paths, ["a", "b", "c"], timeout=1.0):
            results.append(value)
    assert results == ["a", "b"]


def test_bad_chunksize_and_conflicting_arguments(client: Client) -> None:
    with ClusterExecutor(client) as ex, pytest.raises(ValueError, match="chunksize"):
        ex.map(tasks.inc, [1], chunksize=0)
    with pytest.raises(TypeError, match="not both"):
        ClusterExecutor(client, settings=client.settings)
    with pytest.raises(ValueError, match="unknown task option"):
        ClusterExecutor(client, options={"bogus": 1})


def test_options_reach_the_tasks(client: Client) -> None:
    with ClusterExecutor(client, options={"timeout": 0.5}) as ex:
        future = ex.submit(tasks.sleep_return, 10, "late")
        with pytest.raises(TaskError) as info:
            future.result(30)
    assert info.value.type_name == "TimeoutError"


# ---- shutdown and the context manager


def test_shutdown_waits_for_every_future(client: Client, gate: Path) -> None:
    ex = ClusterExecutor(client)
    futures = [ex.submit(tasks.wait_for_file, str(gate), i) for i in range(4)]
    results = ex.map(tasks.wait_for_file, [str(gate)] * 2, [4, 5])
    shutdown = threading.Thread(target=ex.shutdown, kwargs={"wait": True})
    shutdown.start()
    shutdown.join(0.2)
    assert shutdown.is_alive()  # waiting: no task can finish before the gate opens
    gate.touch()
    shutdown.join(30)
    assert not shutdown.is_alive()
    assert [f.result(0) for f in futures] == [0, 1, 2, 3]
    assert list(results) == [4, 5]  # finished already: the map's iterator does not wait


def test_shutdown_without_wait_returns_at_once(client: Client, gate: Path) -> None:
    ex = ClusterExecutor(client)
    future = ex.submit(tasks.wait_for_file, str(gate), "x")
    started = time.monotonic()
    ex.shutdown(wait=False)
    assert time.monotonic() - started < 0.5
    assert not future.done()
    gate.touch()
    assert future.result(30) == "x"


def test_submit_after_shutdown(client: Client) -> None:
    ex = ClusterExecutor(client)
    ex.shutdown()
    ex.shutdown()  # twice is fine
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.submit(tasks.inc, 1)
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.map(tasks.inc, [1])


def test_context_manager_waits_and_leaves_a_given_client_open(client: Client, gate: Path) -> None:
    opener = threading.Timer(0.1, gate.touch)  # the tasks finish only once the end of the block waits for them
    with ClusterExecutor(client) as ex:
        futures = [ex.submit(tasks.wait_for_file, str(gate), i) for i in range(3)]
        opener.start()
    assert all(f.done() for f in futures)
    assert client.submit(tasks.inc, 1).result(30) == 2


def test_an_executor_closes_the_client_it_created(inproc_pair: InProcess, gate: Path) -> None:
    with ClusterExecutor(settings=inproc_pair.settings, connect=inproc_pair.connect) as ex:
        assert ex.submit(tasks.inc, 1).result(30) == 2
    assert is_closed(ex.client)

    ex = ClusterExecutor(settings=inproc_pair.settings, connect=inproc_pair.connect)
    future = ex.submit(tasks.wait_for_file, str(gate), "x")
    ex.shutdown(wait=False)
    assert not is_closed(ex.client)  # its task is not finished
    gate.touch()
    assert future.result(30) == "x"  # not failed by an early close
    wait_until(lambda: is_closed(ex.client), what="the executor's own client to close")


def test_shutdown_cancel_futures(inproc: InProcess) -> None:
    with inproc.client() as client:  # no workers: tasks stay pending
        ex = ClusterExecutor(client)
        futures = [ex.submit(tasks.inc, i) for i in range(5)]
        shutdown = threading.Thread(target=ex.shutdown, kwargs={"wait": True, "cancel_futures": True})
        shutdown.start()
        shutdown.join(10)  # no worker: it would wait forever for a task it did not cancel
        assert not shutdown.is_alive()
        assert all(f.cancelled() for f in futures)
        assert counts(client).get("pending", 0) == 0  # the client stays open


def test_map_timeout_cancels_the_remaining_calls(inproc: InProcess) -> None:
    with inproc.client() as client:  # no workers: tasks stay pending
        ex = ClusterExecutor(client)
        results = ex.map(tasks.inc, range(5), timeout=0.2)
        with pytest.raises(TimeoutError):
            next(results)
        assert counts(client).get("pending", 0) == 0
        assert counts(client)["cancelled"] == 5
        ex.shutdown(wait=False)


# ---- a cluster with one worker that fetches one task at a time


def test_closing_map_early_cancels_the_remaining_calls(inproc: InProcess) -> None:
    start_workers(inproc, 1, prefetch=1)
    with inproc.client() as client, ClusterExecutor(client) as ex:
        results = ex.map(tasks.sleep_return, [0.2] * 10, range(10))
        assert next(results) == 0
        results.close()  # type: ignore[attr-defined]
        wait_until(lambda: counts(client).get("running", 0) == 0, what="the running task")
        final = counts(client)
    assert final.get("pending", 0) == 0
    assert final.get("cancelled", 0) >= 5


# ---- the ProcessPoolExecutor example of the Python docs, with one line changed


DOCS_OUTPUT = """\
112272535095293 is prime: True
112582705942171 is prime: True
112272535095293 is prime: True
115280095190773 is prime: True
115797848077099 is prime: True
1099726899285419 is prime: False
"""


def test_the_docs_process_pool_example(inproc: InProcess, capsys: pytest.CaptureFixture[str]) -> None:
    for worker_id in ("w1", "w2"):
        inproc.start_worker("tests.doc_primes", worker_id=worker_id)
    wait_until(lambda: len(inproc.master.stats().workers) == 2, what="the workers")
    PRIMES, is_prime = doc_primes.PRIMES, doc_primes.is_prime  # noqa: N806 - the docs' names
    client = inproc.client()

    # fmt: off
    def main() -> None:
        with ClusterExecutor(client) as executor:  # was: concurrent.futures.ProcessPoolExecutor()
            for number, prime in zip(PRIMES, executor.map(is_prime, PRIMES)):  # noqa: B905 - the docs' code
                print('%d is prime: %s' % (number, prime))  # noqa: UP031 - the docs' code
    # fmt: on

    try:
        main()
    finally:
        client.close()
    assert capsys.readouterr().out == DOCS_OUTPUT


def test_an_executor_on_a_client_runs_processpool_style_code(client: Client) -> None:
    with ClusterExecutor(client, options={"priority": 1}) as executor:
        assert list(executor.map(operator.pow, range(10), range(10))) == [i**i for i in range(10)]
        assert executor.submit(operator.add, 2, 3).result(timeout=30) == 5
    assert client.submit(operator.add, 1, 1).result(timeout=30) == 2  # the client stays open
