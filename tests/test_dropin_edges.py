"""Edges of the drop-in behaviour found by review: exceptions that cannot be rebuilt, chunks' neighbours,
cancels that must not block, held calls, the memory a call's future keeps."""

from __future__ import annotations

import concurrent.futures
import copy
import gc
import pickle
import socket
import time
import weakref

import pytest

from pyrodist import ClusterExecutor, TaskError, chunks, values
from pyrodist.client import _Asks
from pyrodist.config import Settings
from pyrodist.errors import task_error
from pyrodist.futures import FutureTable
from pyrodist.remote_connection import PyroConnection
from tests import tasks
from tests.conftest import InProcess


@pytest.fixture
def cluster() -> InProcess:
    running = InProcess()
    running.start_worker()
    yield running
    running.close()


@pytest.mark.parametrize("func", [tasks.raise_coded, tasks.raise_group])
def test_an_exception_that_cannot_be_rebuilt_is_a_plain_task_error(cluster: InProcess, func: object) -> None:
    client = cluster.client()
    error = client.submit(func).exception(timeout=30)  # before: never finished (its __new__ refused the message)
    assert type(error) is TaskError
    calls = client.map(func, [], chunksize=2) + client.map(tasks.inc, [1, 2], chunksize=2)
    assert [f.result(timeout=30) for f in calls] == [2, 3]


def test_a_nested_exception_class_is_not_mistaken_for_a_top_level_one(cluster: InProcess) -> None:
    error = cluster.client().submit(tasks.parse_fails).exception(timeout=30)
    assert type(error) is TaskError and error.type_name == "Error"  # type: ignore[union-attr]


def test_a_rebuilt_exception_pickles_and_copies() -> None:
    error = task_error("c1.1", {"type": "KeyError", "message": "'k'", "traceback": "remote", "module": "builtins"})
    for again in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
        assert isinstance(again, KeyError) and isinstance(again, TaskError)
        assert (again.task_id, again.message, again.remote_traceback) == ("c1.1", "'k'", "remote")


def test_a_big_value_beside_an_unsendable_one_in_a_chunk_still_arrives(cluster: InProcess) -> None:
    size = values.MAX_PAYLOAD + 10  # big: travels as a blob, as it would in a task of its own
    first, second = cluster.client().map(tasks.big_or_unsendable, [1, 2], [size, size], chunksize=2)
    assert isinstance(first.exception(timeout=60), TaskError)
    assert second.result(timeout=60) == b"x" * size


def test_a_calls_future_does_not_keep_its_chunk_once_settled(cluster: InProcess) -> None:
    futures = cluster.client().map(tasks.echo, [[i] * 1000 for i in range(50)], chunksize=50)
    concurrent.futures.wait(futures, timeout=30)
    kept, sibling = futures[0], weakref.ref(futures[1])
    del futures
    gc.collect()
    assert kept.result(timeout=0) == [0] * 1000 and sibling() is None


def test_cancel_does_not_wait_for_a_lost_master(cluster: InProcess) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on: no name server there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lost = PyroConnection(Settings(ns_host="127.0.0.1", ns_port=port), reconnect_for=30.0)
    asks = _Asks(lost, "a secret", FutureTable())
    try:
        started = time.monotonic()
        assert asks.cancel_queued("c1.1") is None and asks.held("c1.1") is False
        assert time.monotonic() - started < 10  # before: each call waited out reconnect_for (30 s here)
    finally:
        lost.close()


def test_client_cancel_of_a_call_an_executor_holds_back_cancels_it_there(cluster: InProcess, tmp_path: object) -> None:
    client = cluster.client()
    with ClusterExecutor(1, client=client) as executor:
        gate = f"{tmp_path}/gate"
        first = executor.submit(tasks.wait_for_file, gate, "first")
        waiting = executor.submit(tasks.inc, 1)  # held back: max_workers=1
        assert client.cancel([waiting]) == 1 and waiting.cancelled()
        open(gate, "w").close()
        assert first.result(timeout=30) == "first"


def test_a_submit_racing_shutdown_without_wait_is_still_sent(cluster: InProcess) -> None:
    executor = ClusterExecutor(1, client=cluster.client())
    assert executor.submit(tasks.inc, 1).result(timeout=30) == 2
    executor._cap.stop()  # type: ignore[union-attr]  # as shutdown(wait=False) does, while a submit is under way
    executor._cap.join()  # type: ignore[union-attr]
    late = executor.submit(tasks.inc, 2)  # that submit lands after the cap's thread left
    assert late.result(timeout=30) == 3
    executor.shutdown()


def test_the_automatic_chunk_size_follows_time_slots_and_bytes() -> None:
    assert chunks.auto_size(100_000, 2, 1e-6) == chunks.MAX_AUTO_CHUNK  # tiny calls: as many as allowed
    assert chunks.auto_size(100_000, 2, 0.01) == 5  # 10 ms calls: about CHUNK_SECONDS a task
    assert chunks.auto_size(100, 2, 1e-6) == 13  # few calls: 4 tasks a slot
    assert chunks.auto_size(100_000, 2, 1e-6, call_bytes=1 << 20) == 1  # big values: a task each
    assert chunks.auto_size(100_000, 2, 1e-6, call_bytes=1024) == 64


def test_map_does_not_pack_calls_with_big_results(cluster: InProcess) -> None:
    client = cluster.client()
    before = client.stats()["submitted"]
    futures = client.map(tasks.big_result, [100_000] * 80)  # a result each over CHUNK_BYTES
    assert all(len(f.result(timeout=60)) == 100_000 for f in futures)
    assert client.stats()["submitted"] - before == 80  # before: packed 50 to a task, each chunk a big value
