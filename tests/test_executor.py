"""`ClusterExecutor` behaves like the standard library's executors.

Adapted from CPython's Lib/test/test_concurrent_futures (ExecutorTest, the shutdown tests). Workers run only
allow-listed modules (tests.tasks, math, operator), so `pow` and `divmod` become `operator.pow` and
`operator.truediv`, and a remote exception arrives as TaskError carrying its type name.
"""

from __future__ import annotations

import concurrent.futures
import operator
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pyrodist import Client, Future, PyrodistError, TaskError
from pyrodist.executor import ClusterExecutor
from tests import doc_primes, tasks
from tests.conftest import Cluster, Processes, start_cluster, wait_until


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


@pytest.mark.parametrize("chunksize", [None, 1, 3])
def test_map(executor: ClusterExecutor, chunksize: int | None) -> None:
    results = executor.map(operator.pow, range(10), range(10), chunksize=chunksize)
    assert isinstance(results, Iterator)
    assert list(results) == list(map(pow, range(10), range(10)))


def test_chunksize_is_the_number_of_calls_per_submit(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[int] = []
    submit_encoded = client._conn.submit_encoded

    def spy(client_id: str, submitted: Any) -> int:
        sent.append(len(submitted))
        return submit_encoded(client_id, submitted)

    monkeypatch.setattr(client._conn, "submit_encoded", spy)
    with ClusterExecutor(client) as ex:
        assert list(ex.map(operator.pow, range(10), range(10), chunksize=3)) == list(map(pow, range(10), range(10)))
        assert list(ex.map(tasks.inc, range(10))) == list(range(1, 11))
    assert sent == [3, 3, 3, 1, 10]  # each call is still its own task; the default sends up to MAP_CHUNK at once


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


def test_map_timeout(executor: ClusterExecutor) -> None:
    results = []
    with pytest.raises(TimeoutError):  # concurrent.futures.TimeoutError is the builtin since 3.11
        for value in executor.map(tasks.sleep_return, [0, 0, 3], ["a", "b", "c"], timeout=2.0):
            results.append(value)
    assert results == ["a", "b"]


def test_bad_chunksize_and_conflicting_arguments(client: Client, cluster: Cluster) -> None:
    with ClusterExecutor(client) as ex, pytest.raises(ValueError, match="chunksize"):
        ex.map(tasks.inc, [1], chunksize=0)
    with pytest.raises(TypeError, match="not both"):
        ClusterExecutor(client, settings=cluster.settings)
    with pytest.raises(ValueError, match="unknown task option"):
        ClusterExecutor(client, options={"bogus": 1})


def test_options_reach_the_tasks(client: Client) -> None:
    with ClusterExecutor(client, options={"timeout": 0.5}) as ex:
        future = ex.submit(tasks.sleep_return, 10, "late")
        with pytest.raises(TaskError) as info:
            future.result(30)
    assert info.value.type_name == "TimeoutError"


# ---- shutdown and the context manager


def test_shutdown_waits_for_every_future(client: Client) -> None:
    ex = ClusterExecutor(client)
    futures = [ex.submit(tasks.sleep_return, 0.3, i) for i in range(4)]
    results = ex.map(tasks.sleep_return, [0.3, 0.3], [4, 5])
    ex.shutdown(wait=True)
    assert [f.result(0) for f in futures] == [0, 1, 2, 3]
    assert list(results) == [4, 5]  # finished already: the map's iterator does not wait


def test_shutdown_without_wait_returns_at_once(client: Client) -> None:
    ex = ClusterExecutor(client)
    future = ex.submit(tasks.sleep_return, 1.0, "x")
    started = time.monotonic()
    ex.shutdown(wait=False)
    assert time.monotonic() - started < 0.5
    assert not future.done()
    assert future.result(30) == "x"


def test_submit_after_shutdown(client: Client) -> None:
    ex = ClusterExecutor(client)
    ex.shutdown()
    ex.shutdown()  # twice is fine
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.submit(tasks.inc, 1)
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.map(tasks.inc, [1])


def test_context_manager_waits_and_leaves_a_given_client_open(client: Client) -> None:
    with ClusterExecutor(client) as ex:
        futures = [ex.submit(tasks.sleep_return, 0.2, i) for i in range(3)]
    assert all(f.done() for f in futures)
    assert client.submit(tasks.inc, 1).result(30) == 2


def test_an_executor_closes_the_client_it_created(cluster: Cluster) -> None:
    with ClusterExecutor(settings=cluster.settings) as ex:
        assert ex.submit(tasks.inc, 1).result(30) == 2
    assert is_closed(ex.client)

    ex = ClusterExecutor(settings=cluster.settings)
    future = ex.submit(tasks.sleep_return, 0.5, "x")
    ex.shutdown(wait=False)
    assert future.result(30) == "x"  # not failed by an early close
    wait_until(lambda: is_closed(ex.client), what="the executor's own client to close")


def test_shutdown_cancel_futures(idle_cluster: Cluster) -> None:
    with idle_cluster.client() as client:
        ex = ClusterExecutor(client)
        futures = [ex.submit(tasks.inc, i) for i in range(5)]
        shutdown = threading.Thread(target=ex.shutdown, kwargs={"wait": True, "cancel_futures": True})
        shutdown.start()
        shutdown.join(10)  # no worker: it would wait forever for a task it did not cancel
        assert not shutdown.is_alive()
        assert all(f.cancelled() for f in futures)
        assert counts(client).get("pending", 0) == 0  # the client stays open


def test_map_timeout_cancels_the_remaining_calls(idle_cluster: Cluster) -> None:
    with idle_cluster.client() as client:
        ex = ClusterExecutor(client)
        results = ex.map(tasks.inc, range(5), timeout=0.2)
        with pytest.raises(TimeoutError):
            next(results)
        assert counts(client).get("pending", 0) == 0
        ex.shutdown(wait=False)


# ---- a cluster with one worker that fetches one task at a time


def test_closing_map_early_cancels_the_remaining_calls(procs: Processes) -> None:
    cluster = start_cluster(procs, workers=0)
    cluster.start_worker("--prefetch", "1")
    wait_until(lambda: len(cluster.live_workers()) == 1, timeout=30, what="the worker")
    with cluster.client() as client, ClusterExecutor(client) as ex:
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


def test_the_docs_process_pool_example(procs: Processes, capsys: pytest.CaptureFixture[str]) -> None:
    cluster = start_cluster(procs, workers=0)
    for _ in range(2):
        cluster.start_worker("-I", "tests.doc_primes")
    wait_until(lambda: len(cluster.live_workers()) == 2, timeout=30, what="the workers")
    PRIMES, is_prime = doc_primes.PRIMES, doc_primes.is_prime  # noqa: N806 - the docs' names
    client = cluster.client()

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
