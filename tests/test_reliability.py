"""Retries, cancelling running tasks, forgetting results, task status, graceful stops and the durable store,
against real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyrodist import Client, ResultExpired, TaskError, TaskLost
from tests import tasks
from tests.conftest import ROOT, Cluster, Processes, start_cluster, wait_until


def pyrodist(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run one `pyrodist` command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "pyrodist", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists (and is not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


# ---- retries ---------------------------------------------------------------------------------


def test_retries_run_a_failing_task_again_and_keep_every_error(client: Client, tmp_path: Path) -> None:
    counter = tmp_path / "calls"
    future = client.options(retries=3).submit(tasks.fail_times, str(counter), 2, "third time lucky")
    assert future.result(timeout=30) == "third time lucky"
    record = client.lookup([future.task_id])[0]
    assert record is not None
    assert record["state"] == "done"
    assert record["attempts"] == 3 and record["retries"] == 2
    assert [e["type"] for e in record["errors"]] == ["ConnectionRefusedError"] * 2
    assert [e["attempt"] for e in record["errors"]] == [1, 2]
    assert counter.read_text().count("run") == 3


def test_retries_run_out_and_the_last_error_fails_the_task(client: Client, tmp_path: Path) -> None:
    future = client.options(retries=1).submit(tasks.fail_times, str(tmp_path / "calls"), 5)
    with pytest.raises(TaskError, match="call 2 refused") as caught:
        future.result(timeout=30)
    assert caught.value.type_name == "ConnectionRefusedError"
    record = client.lookup([future.task_id])[0]
    assert record is not None and len(record["errors"]) == 2 and record["attempts"] == 2


def test_retry_on_matches_base_classes_and_refuses_others(client: Client, tmp_path: Path) -> None:
    matching = client.options(retries=2, retry_on=[OSError]).submit(tasks.fail_times, str(tmp_path / "a"), 1)
    other = client.options(retries=2, retry_on=["KeyError"]).submit(tasks.fail_times, str(tmp_path / "b"), 1)
    assert matching.result(timeout=30) == "ok"
    with pytest.raises(TaskError, match="call 1 refused"):
        other.result(timeout=30)
    assert (tmp_path / "b").read_text().count("run") == 1


def test_retry_backoff_waits_in_state_retrying(client: Client, tmp_path: Path) -> None:
    future = client.options(retries=1, retry_backoff=1.5).submit(tasks.fail_times, str(tmp_path / "calls"), 1)
    record = wait_until(
        lambda: (r := client.lookup([future.task_id])[0]) is not None and r["state"] == "retrying" and r,
        timeout=20,
        what="the task to wait for its retry",
    )
    assert record["retry_at"] > record["errors"][0]["at"] + 1.0
    assert future.result(timeout=30) == "ok"
    record = client.lookup([future.task_id])[0]
    assert record is not None and record["started"] >= record["errors"][0]["at"] + 1.5 - 0.3


def test_time_limit_then_retry_says_it_ran_out_of_time(client: Client) -> None:
    future = client.options(timeout=0.3, retries=1).submit(tasks.sleep_return, 5)
    with pytest.raises(TaskError, match="ran out of time") as caught:
        future.result(timeout=30)
    assert caught.value.type_name == "TimeoutError"
    record = client.lookup([future.task_id])[0]
    assert record is not None and [e["type"] for e in record["errors"]] == ["TimeoutError", "TimeoutError"]
    assert client.submit(tasks.inc, 1).result(timeout=20) == 2  # the worker goes on


# ---- cancelling, forgetting, status ----------------------------------------------------------


def test_cancelling_a_running_task_kills_its_process_and_the_worker_goes_on(client: Client, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    future = client.submit(tasks.pid_then_sleep, str(pid_file), 60)
    pid = wait_until(lambda: pid_file.exists() and pid_file.read_text() and int(pid_file.read_text()), timeout=20)
    assert future.cancel() is True
    assert future.cancelled()
    wait_until(lambda: not process_alive(pid), timeout=10, what="the cancelled task's process to be killed")
    record = client.lookup([future.task_id])[0]
    assert record is not None and record["state"] == "cancelled"
    assert client.map(tasks.inc, range(20))[-1].result(timeout=30) == 20  # both workers still work


def test_forgotten_result_reads_as_expired(client: Client, cluster: Cluster) -> None:
    future = client.submit(tasks.inc, 41)
    assert future.result(timeout=20) == 42
    assert client.forget([future]) == 1
    assert client.forget([future.task_id]) == 0
    record = client.lookup([future.task_id])[0]
    assert record is not None and record["state"] == "expired"
    assert "forgotten" in record["error"]["message"]
    shown = pyrodist("status", future.task_id, *cluster.ns_args)
    assert shown.returncode == 0 and "expired" in shown.stdout and "forgotten" in shown.stdout


def test_status_of_a_task_tells_its_story(client: Client, cluster: Cluster, tmp_path: Path) -> None:
    future = client.options(retries=2, priority=3).submit(tasks.fail_times, str(tmp_path / "c"), 1, "fine")
    assert future.result(timeout=30) == "fine"
    shown = pyrodist("status", future.task_id, *cluster.ns_args)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert f"task {future.task_id}: done" in text
    assert "tests.tasks:fail_times" in text
    assert "attempts   2 (retries 1, lost with a worker 0)" in text
    assert "priority=3" in text and "retries=2" in text
    assert "attempt 1 on " in text and "ConnectionRefusedError: call 1 refused" in text
    as_json = json.loads(pyrodist("status", "--json", future.task_id, *cluster.ns_args).stdout)
    assert as_json[future.task_id]["state"] == "done"
    unknown = pyrodist("status", "nosuch.1", *cluster.ns_args)
    assert unknown.returncode == 1 and "unknown to this master" in unknown.stdout


def test_expired_result_fails_its_future_with_result_expired(procs: Processes) -> None:
    cluster = start_cluster(procs, workers=1, master_args=("--result-ttl", "0.3"))
    with cluster.client() as client:
        future = client.submit(tasks.inc, 1)
        wait_until(lambda: client.lookup([future.task_id])[0]["state"] == "expired", timeout=20)  # type: ignore[index]
    with cluster.client() as other:  # a client that never collected it
        record = other.lookup([future.task_id])[0]
        assert record is not None and record["state"] == "expired" and "expired" in record["error"]["message"]
    assert issubclass(ResultExpired, TaskLost)


# ---- graceful stop ---------------------------------------------------------------------------


def test_sigterm_gives_a_running_task_its_grace_then_gives_it_back(procs: Processes, tmp_path: Path) -> None:
    cluster = start_cluster(procs, workers=0)
    first = cluster.start_worker("--grace", "0.5", "--id", "first")
    wait_until(lambda: len(cluster.live_workers()) == 1, timeout=30)
    pid_file = tmp_path / "pid"
    with cluster.client() as client:
        future = client.submit(tasks.pid_then_sleep, str(pid_file), 4)
        pid = wait_until(lambda: pid_file.exists() and pid_file.read_text() and int(pid_file.read_text()), timeout=20)
        stopped_at = time.monotonic()
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=20) == 0
        assert time.monotonic() - stopped_at < 3.5, "the worker waited for the task instead of its 0.5 s grace"
        assert not process_alive(pid)
        assert "giving them back" in procs.log(first)
        record = client.lookup([future.task_id])[0]
        assert record is not None and record["state"] == "pending" and record["attempts"] == 0
        cluster.start_worker("--id", "second")
        assert future.result(timeout=30) != pid  # it ran again, elsewhere


def test_sigterm_lets_a_short_task_finish_within_the_grace(procs: Processes, tmp_path: Path) -> None:
    cluster = start_cluster(procs, workers=0)
    worker = cluster.start_worker("--grace", "20")
    wait_until(lambda: len(cluster.live_workers()) == 1, timeout=30)
    pid_file = tmp_path / "pid"
    with cluster.client() as client:
        future = client.submit(tasks.pid_then_sleep, str(pid_file), 1.0)
        # Started, not only leased: a leased task still in the worker's buffer would be given back unstarted.
        pid = wait_until(lambda: pid_file.exists() and pid_file.read_text() and int(pid_file.read_text()), timeout=20)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0
        assert future.result(timeout=5) == pid


# ---- the durable store -----------------------------------------------------------------------


def test_in_memory_master_says_state_will_not_survive(procs: Processes) -> None:
    cluster = start_cluster(procs, workers=0)
    master = procs.procs[1]
    assert "in-memory store: state will not survive a restart" in procs.log(master)
    assert cluster.master_up()


def test_master_killed_and_restarted_on_its_store_loses_nothing(procs: Processes, tmp_path: Path) -> None:
    store = str(tmp_path / "state.db")
    cluster = start_cluster(procs, workers=0, master_args=("--store", store))
    master = procs.procs[1]
    assert "state survives restarts" in procs.log(master)
    with cluster.client() as client:
        finished = client.submit(tasks.inc, 0)
        cluster.start_worker("--max-tasks", "1")  # runs exactly that one, then leaves
        assert finished.result(timeout=30) == 1
        waiting = client.map(tasks.inc, range(1, 201))
        assert client.stats()["counts"]["pending"] == 200
        master.send_signal(signal.SIGKILL)
        master.wait(timeout=10)
        procs.start("master", *cluster.ns_args, "--lease-timeout", "3", "--store", store)
        wait_until(cluster.master_up, timeout=30, what="the restarted master")
        stats = client.stats()
        assert stats["master"]["durable"] is True
        assert stats["counts"]["pending"] == 200 and stats["counts"]["done"] == 1
        record = client.lookup([finished.task_id])[0]
        assert record is not None and record["state"] == "done"
        cluster.start_worker()
        assert [f.result(timeout=60) for f in waiting] == list(range(2, 202))


def test_master_sigterm_flushes_its_store_and_exits_0(procs: Processes, tmp_path: Path) -> None:
    store = str(tmp_path / "state.db")
    cluster = start_cluster(procs, workers=0, master_args=("--store", store))
    master = procs.procs[1]
    with cluster.client() as client:
        ids = [f.task_id for f in client.map(tasks.inc, range(50))]
    master.send_signal(signal.SIGTERM)
    assert master.wait(timeout=20) == 0
    procs.start("master", *cluster.ns_args, "--store", store)
    wait_until(cluster.master_up, timeout=30, what="the restarted master")
    with cluster.client() as client:
        records = client.lookup(ids)
        assert all(r is not None and r["state"] == "pending" for r in records)


def test_a_second_master_on_the_same_store_is_refused(procs: Processes, tmp_path: Path) -> None:
    store = str(tmp_path / "state.db")
    cluster = start_cluster(procs, workers=0, master_args=("--store", store))
    second = pyrodist("master", *cluster.ns_args, "--name", "other.master", "--store", store, timeout=60)
    assert second.returncode != 0
    assert "in use by another master" in second.stderr


def test_store_path_that_is_not_a_database_is_a_clear_error(procs: Processes, tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(4096))
    cluster = start_cluster(procs, workers=0)
    result = pyrodist("master", *cluster.ns_args, "--name", "other.master", "--store", str(junk), timeout=60)
    assert result.returncode != 0
    assert "is not a pyrodist store" in result.stderr and str(junk) in result.stderr
