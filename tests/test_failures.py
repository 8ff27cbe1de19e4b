"""Tasks that fail in every way a task can: each is a clear failed task, and the worker goes on.

In-process: the module's master with two worker threads, whose tasks still run in child processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pyrodist import Client, RemoteTraceback, TaskError
from pyrodist.values import MAX_PAYLOAD
from tests import tasks
from tests.conftest import InProcess


@pytest.fixture
def client(inproc_pair: InProcess) -> Iterator[Client]:
    """A client of the module's in-process master with two one-slot workers."""
    with inproc_pair.client() as c:
        yield c


def failure(client: Client, func: Callable[..., Any] | str, *args: Any, **options: Any) -> TaskError:
    """Submit a task that must fail, and return its TaskError."""
    submitter = client.options(**options) if options else client
    with pytest.raises(TaskError) as info:
        submitter.submit(func, *args).result(timeout=30)
    return info.value


def assert_workers_still_work(client: Client) -> None:
    assert client.gather(client.map(tasks.inc, range(20)), timeout=30) == list(range(1, 21))
    assert len(client.stats()["workers"]) == 2


def test_raising_task_carries_type_message_and_remote_traceback(client: Client) -> None:
    error = failure(client, tasks.boom, "no luck")
    assert (error.type_name, error.message) == ("ValueError", "no luck")
    assert "tasks.py" in error.remote_traceback and "raise ValueError(message)" in error.remote_traceback
    assert isinstance(error, ValueError) and error.args == ("no luck",)  # the task's own exception's message
    assert str(error) == f"task {error.task_id} failed: ValueError: no luck"
    assert isinstance(error.__cause__, RemoteTraceback)  # printed above it, as concurrent.futures does
    assert "raise ValueError(message)" in str(error.__cause__)
    assert error.task_id
    assert_workers_still_work(client)


def test_disallowed_function_is_refused_naming_it_and_the_allowed_modules(client: Client) -> None:
    error = failure(client, "os:getcwd")
    assert error.type_name == "FunctionNotAllowed"
    assert "os:getcwd" in error.message and "tests.tasks" in error.message and "-I MODULE" in error.message
    assert_workers_still_work(client)


def test_unknown_module_is_a_clear_failure(client: Client) -> None:
    error = failure(client, "no_such_module_xyz:run")
    assert "no_such_module_xyz:run" in error.message and "not allowed" in error.message
    assert_workers_still_work(client)


def test_unknown_function_in_an_allowed_module(client: Client) -> None:
    error = failure(client, "tests.tasks:does_not_exist")
    assert "unknown task function" in error.message
    assert_workers_still_work(client)


@pytest.mark.parametrize("ref", ["tests.tasks:os", "tests.tasks:_private", "builtins:eval", "math:sqrt.__call__"])
def test_allow_list_is_strict(client: Client, ref: str) -> None:
    with pytest.raises((TaskError, ValueError)) as info:
        client.submit(ref).result(timeout=30)
    assert ref.split(":")[0] in str(info.value)


def test_unserializable_result_is_a_failed_task(client: Client) -> None:
    error = failure(client, tasks.unserializable)
    assert error.type_name == "ValueEncodingError" and "builtins.object" in error.message
    assert_workers_still_work(client)


def test_a_result_over_max_payload_travels_in_chunks(client: Client) -> None:
    assert client.submit(tasks.big_result, MAX_PAYLOAD + 100).result(timeout=60) == b"x" * (MAX_PAYLOAD + 100)
    assert_workers_still_work(client)


def test_too_large_result_is_a_failed_task_naming_the_limit_and_its_setting() -> None:
    cluster = InProcess(max_payload=4096, max_value=64 * 1024)
    try:
        cluster.start_worker()
        client = cluster.client()
        error = failure(client, tasks.big_result, 70_000)
        assert error.type_name == "ValueEncodingError"
        assert "limit is 65536" in error.message and "--max-value" in error.message
        assert client.submit(tasks.big_result, 60_000).result(timeout=30) == b"x" * 60_000  # in chunks
    finally:
        cluster.close()


def test_crashing_task_kills_its_child_not_the_worker(client: Client) -> None:
    error = failure(client, tasks.crash, 7)
    assert error.type_name == "ChildProcessError" and "exit code 7" in error.message
    assert_workers_still_work(client)


def test_time_limit_kills_the_task_and_the_worker_goes_on(client: Client) -> None:
    error = failure(client, tasks.sleep_return, 30, timeout=0.5)
    assert error.type_name == "TimeoutError" and "ran out of time" in error.message
    assert_workers_still_work(client)


def test_failures_are_counted(client: Client) -> None:
    before = client.stats()["failed"]
    failure(client, tasks.boom)
    assert client.stats()["failed"] == before + 1


def test_error_message_with_undecodable_characters_is_reported(client: Client) -> None:
    error = failure(client, tasks.undecodable_error)
    assert "caf\\udce9.txt" in error.message
    assert_workers_still_work(client)


def test_a_crash_inside_a_pipelined_batch_fails_only_that_task(client: Client) -> None:
    client.gather(client.map(tasks.inc, range(200)), timeout=30)  # workers learn the tasks are fast: they pipeline
    futures = client.map(tasks.crash_on, range(60), [17] * 60)
    for i, future in enumerate(futures):
        if i == 17:
            assert "died" in str(future.exception(timeout=30))
        else:
            assert future.result(timeout=30) == i
    assert_workers_still_work(client)


def test_a_time_limit_inside_a_pipelined_batch_fails_only_that_task(client: Client) -> None:
    client.gather(client.map(tasks.inc, range(200)), timeout=30)  # workers learn the tasks are fast: they pipeline
    futures = client.options(timeout=1.0).map(tasks.sleep_on, range(60), [23] * 60, [30] * 60)
    for i, future in enumerate(futures):
        if i == 23:
            assert "ran out of time" in str(future.exception(timeout=30))
        else:
            assert future.result(timeout=30) == i
    assert_workers_still_work(client)
