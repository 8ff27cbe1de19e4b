"""Retries, cancelling running tasks, forgetting results, task status, graceful stops and the durable store.

The master's and the worker's rules run in-process, the master's clock in the test's hands (backoff and
expiry without sleeps); the `status` command, SIGTERM and the store's life across master processes need
real processes.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from pyrodist import Client, ResultExpired, TaskError, TaskLost
from pyrodist.connection import LocalConnection
from pyrodist.protocol import client_id_of
from pyrodist.service import MasterService
from pyrodist.sqlstore import SqliteStore
from pyrodist.statustext import format_task
from pyrodist.values import encode_call, encode_value
from pyrodist.wire import SubmittedTask
from tests import tasks
from tests.conftest import ADMIN_ENV, Cluster, InProcess, Link, Processes, start_cluster, started_pids, wait_until
from tests.test_cli import pyrodist


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists (and is not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before, or while, its stat was read
        return False


# ---- retries ---------------------------------------------------------------------------------


def test_retries_run_a_failing_task_again_and_keep_every_error(inproc: InProcess, tmp_path: Path) -> None:
    inproc.start_worker()
    client = inproc.client()
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


def test_retries_run_out_and_the_last_error_fails_the_task(inproc: InProcess, tmp_path: Path) -> None:
    inproc.start_worker()
    client = inproc.client()
    future = client.options(retries=1).submit(tasks.fail_times, str(tmp_path / "calls"), 5)
    with pytest.raises(TaskError, match="call 2 refused") as caught:
        future.result(timeout=30)
    assert caught.value.type_name == "ConnectionRefusedError"
    record = client.lookup([future.task_id])[0]
    assert record is not None and len(record["errors"]) == 2 and record["attempts"] == 2


def test_retry_on_matches_base_classes_and_refuses_others(inproc: InProcess, tmp_path: Path) -> None:
    inproc.start_worker()
    client = inproc.client()
    matching = client.options(retries=2, retry_on=[OSError]).submit(tasks.fail_times, str(tmp_path / "a"), 1)
    other = client.options(retries=2, retry_on=["KeyError"]).submit(tasks.fail_times, str(tmp_path / "b"), 1)
    assert matching.result(timeout=30) == "ok"
    with pytest.raises(TaskError, match="call 1 refused"):
        other.result(timeout=30)
    assert (tmp_path / "b").read_text().count("run") == 1


def test_retry_backoff_waits_in_state_retrying_and_doubles(inproc: InProcess, tmp_path: Path) -> None:
    inproc.start_worker()
    client = inproc.client()
    calls = tmp_path / "calls"
    future = client.options(retries=2, retry_backoff=1.5).submit(tasks.fail_times, str(calls), 2)

    def waiting_after(failures: int) -> dict[str, Any] | None:
        """The task's record if it waits for its retry after this many failures."""
        record = client.lookup([future.task_id])[0]
        assert record is not None
        return record if record["state"] == "retrying" and len(record["errors"]) == failures else None

    for failures, backoff in ((1, 1.5), (2, 3.0)):
        record = wait_until(partial(waiting_after, failures), what=f"the task to wait for retry {failures}")
        failed_at = record["errors"][-1]["at"]
        assert record["retry_at"] == failed_at + backoff
        inproc.reap(advance=backoff - 0.1)
        assert waiting_after(failures) is not None  # still waiting: only the master's clock counts
        assert calls.read_text().count("run") == failures
        inproc.reap(advance=0.2)
    assert future.result(timeout=30) == "ok"
    record = client.lookup([future.task_id])[0]
    assert record is not None and record["started"] >= record["errors"][-1]["at"] + 3.0
    assert record["attempts"] == 3 and record["retries"] == 2


def test_time_limit_then_retry_says_it_ran_out_of_time(inproc: InProcess) -> None:
    inproc.start_worker()
    client = inproc.client()
    future = client.options(timeout=0.3, retries=1).submit(tasks.sleep_return, 5)
    with pytest.raises(TaskError, match="ran out of time") as caught:
        future.result(timeout=30)
    assert caught.value.type_name == "TimeoutError"
    record = client.lookup([future.task_id])[0]
    assert record is not None and [e["type"] for e in record["errors"]] == ["TimeoutError", "TimeoutError"]
    assert client.submit(tasks.inc, 1).result(timeout=20) == 2  # the worker goes on


# ---- cancelling, forgetting, expiry, status --------------------------------------------------


def test_cancelling_a_running_task_with_force_kills_its_process_and_the_worker_goes_on(
    inproc: InProcess, tmp_path: Path
) -> None:
    for name in ("one", "two"):
        inproc.start_worker(worker_id=name)
    client = inproc.client()
    log = tmp_path / "runs"
    future = client.submit(tasks.hold, str(log), str(tmp_path / "never"))
    pid = wait_until(lambda: started_pids(log), what="the task to start")[0]
    assert future.running() and future.cancel() is False  # as the standard library: a running call goes on
    assert process_alive(pid)
    assert client.cancel([future], force=True) == 1
    assert future.cancelled()
    wait_until(lambda: not process_alive(pid), timeout=10, what="the cancelled task's process to be killed")
    record = client.lookup([future.task_id])[0]
    assert record is not None and record["state"] == "cancelled"
    assert client.gather(client.map(tasks.inc, range(20)), timeout=30) == list(range(1, 21))
    workers = client.stats()["workers"]
    assert sorted(w["id"] for w in workers) == ["one", "two"] and sum(w["done"] for w in workers) == 20
    assert all(w["failed"] == 0 for w in workers)  # nothing was reported for the killed task


def test_forgotten_result_reads_as_expired(inproc: InProcess) -> None:
    inproc.start_worker()
    client = inproc.client()
    future = client.submit(tasks.inc, 41)
    assert future.result(timeout=20) == 42
    assert client.forget([future]) == 1
    assert client.forget([future.task_id]) == 0
    record = client.lookup([future.task_id])[0]
    assert record is not None and record["state"] == "expired"
    assert "forgotten" in record["error"]["message"]
    shown = format_task(future.task_id, record)
    assert "expired" in shown and "forgotten" in shown
    assert future.result(timeout=0) == 42  # the future keeps its own copy


def test_a_result_its_client_collected_is_released_on_the_master_unless_kept(inproc: InProcess) -> None:
    inproc.start_worker()
    client = inproc.client()
    futures = client.map(tasks.echo, [b"x" * 1000] * 5)
    kept = client.options(keep=True).submit(tasks.echo, b"kept")
    assert client.gather([*futures, kept], timeout=20) == [b"x" * 1000] * 5 + [b"kept"]
    store = inproc.master._store
    released = lambda: all(store.get(f.task_id).result is None for f in futures)  # type: ignore[union-attr]  # noqa: E731
    wait_until(released, what="the client's next collect to release what it has")
    assert store.get(kept.task_id).result is not None  # type: ignore[union-attr]
    record = client.lookup([futures[0].task_id])[0]
    assert record is not None and record["state"] == "done" and record["payload"] is None
    assert "collected by its client" in record["error"]["message"] and "keep=True" in record["error"]["message"]
    plain = inproc.service.result(futures[0].task_id, 0, client.secret)
    assert plain["value"] is None and plain["error"]["type"] == "ResultExpired"
    assert inproc.master.result(kept.task_id, 0, client.secret).payload is not None
    assert futures[0].result(timeout=0) == b"x" * 1000  # the future keeps its own copy
    assert client.forget(futures) == 5  # a released record can still be forgotten (and then expires)


def echo_calls(secret: str, values: list[Any]) -> list[SubmittedTask]:
    """tasks.echo of each value, as the client with this secret sends them (for tests that collect by hand)."""
    owner = client_id_of(secret)
    return [SubmittedTask(f"{owner}.{i}", "tests.tasks:echo", encode_call((v,), {}), {}) for i, v in enumerate(values)]


def test_a_result_is_not_released_before_its_client_says_it_has_it(inproc: InProcess) -> None:
    inproc.start_worker()
    secret = "a-client-that-collects-by-hand"
    conn = inproc.connect()
    [task] = echo_calls(secret, [b"v"])
    conn.submit_encoded(secret, [task])
    got = conn.collect(secret, timeout=20, sequence=1)
    assert [r.id for r in got] == [task.task_id]
    store = inproc.master._store
    assert store.get(task.task_id).result is not None  # type: ignore[union-attr]  # the answer may be lost on the way
    again = conn.collect(secret, timeout=20, sequence=1)  # the same call again: its answer was lost
    assert again == got and store.get(task.task_id).result is not None  # type: ignore[union-attr]
    assert conn.collect(secret, timeout=0, sequence=2) == []  # the next number says the last batch arrived
    assert store.get(task.task_id).result is None  # type: ignore[union-attr]


def test_a_collect_without_a_sequence_number_never_releases_anything(inproc: InProcess) -> None:
    inproc.start_worker()
    secret = "a-plain-caller-that-collects"
    conn = inproc.connect()
    [task] = echo_calls(secret, [b"v"])
    conn.submit_encoded(secret, [task])
    assert [r.id for r in conn.collect(secret, timeout=20)] == [task.task_id]
    assert conn.collect(secret, timeout=0) == [] and conn.collect(secret, timeout=0) == []
    assert inproc.master._store.get(task.task_id).result is not None  # type: ignore[union-attr]


def test_a_collect_takes_at_most_max_payload_bytes_of_values_but_always_one_record() -> None:
    cluster = InProcess(max_payload=64 * 1024)
    try:
        cluster.start_worker()
        secret, conn = "a-client-that-collects-by-hand", cluster.connect()
        values = [b"x" * 30_000] * 6 + [b"y" * 60_000]
        calls = echo_calls(secret, values)
        conn.submit_encoded(secret, calls)
        ids = [c.task_id for c in calls]
        wait_until(lambda: all(r and r.state.value == "done" for r in conn.lookup(ids, secret)), what="every task")
        batches = []
        while batch := conn.collect(secret, timeout=0):
            batches.append([len(r.payload or b"") for r in batch])
        assert sorted(n for b in batches for n in b) == sorted(len(encode_value(v)) for v in values)
        assert len(batches) >= 4 and all(sum(b) <= 64 * 1024 or len(b) == 1 for b in batches), batches
    finally:
        cluster.close()


def test_a_durable_master_keeps_collected_results_on_disk(tmp_path: Path) -> None:
    cluster = InProcess(store=SqliteStore(tmp_path / "s.db", 0.0, 30.0))
    try:
        cluster.start_worker()
        client = cluster.client()
        futures = client.map(tasks.inc, range(3))
        assert client.gather(futures, timeout=20) == [1, 2, 3]
        assert client.submit(tasks.inc, 9).result(timeout=20) == 10  # another collect: the first ones said received
        assert [r["payload"] for r in client.lookup(f.task_id for f in futures)] == [" 1", " 2", " 3"]  # type: ignore[index]
    finally:
        cluster.close()


def test_expired_result_fails_its_future_with_result_expired(inproc: InProcess) -> None:
    link = Link(inproc.service)
    client = Client(settings=inproc.settings, connect=lambda _settings: link)
    inproc.clients.append(client)
    future = client.submit(tasks.inc, 1)
    link.cut()  # the client loses the master before the result is ready
    wait_until(lambda: link.refused, what="the client to notice")
    inproc.start_worker()
    other = inproc.connect()  # a connection that never collects it, with the client's secret
    look = lambda: other.lookup([future.task_id], client.secret)[0]  # noqa: E731
    wait_until(lambda: look().state.value == "done", what="the task to run")  # type: ignore[union-attr]
    inproc.reap(advance=inproc.settings.result_ttl - 1)
    assert look().state.value == "done"  # type: ignore[union-attr]
    inproc.reap(advance=2)
    found = look()
    record = None if found is None else found.to_plain()
    assert record is not None and record["state"] == "expired" and "expired" in record["error"]["message"]
    link.mend()  # back: the client looks up what it missed
    with pytest.raises(ResultExpired, match="expired"):
        future.result(timeout=30)
    assert issubclass(ResultExpired, TaskLost)


# ---- graceful stop ---------------------------------------------------------------------------


def test_stop_gives_a_running_task_its_grace_then_gives_it_back(
    inproc: InProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pyrodist")
    first = inproc.start_worker(worker_id="first", grace=0.5)
    client = inproc.client()
    log, release = tmp_path / "runs", tmp_path / "release"
    future = client.submit(tasks.hold, str(log), str(release), "ran again")
    pid = wait_until(lambda: started_pids(log), what="the task to start")[0]
    stopped_at = time.monotonic()
    first.stop()  # what SIGTERM does (see the real-process test below)
    assert first.exit_code == 0
    assert time.monotonic() - stopped_at < 3.5, "the worker waited for the task instead of its 0.5 s grace"
    assert not process_alive(pid)
    assert "giving them back" in caplog.text
    record = client.lookup([future.task_id])[0]
    assert record is not None and record["state"] == "pending" and record["attempts"] == 0
    release.touch()
    inproc.start_worker(worker_id="second")
    assert future.result(timeout=30) == "ran again"
    record = client.lookup([future.task_id])[0]
    assert record is not None and record["worker"] == "second" and record["attempts"] == 1
    assert len(set(started_pids(log))) == 2  # it ran again, elsewhere


def test_sigterm_lets_a_short_task_finish_within_the_grace(procs: Processes, tmp_path: Path) -> None:
    cluster = start_cluster(procs, workers=0)
    worker = cluster.start_worker("--grace", "20")
    wait_until(lambda: len(cluster.live_workers()) == 1, timeout=30)
    log, release = tmp_path / "runs", tmp_path / "release"
    with cluster.client() as client:
        future = client.submit(tasks.hold, str(log), str(release), "finished")
        # Started, not only leased: a leased task still in the worker's buffer would be given back unstarted.
        wait_until(lambda: started_pids(log), timeout=20, what="the task to start")
        worker.send_signal(signal.SIGTERM)
        wait_until(lambda: "stopping" in procs.log(worker), what="the worker to begin its stop")
        release.touch()  # the task ends after the stop began, well within the grace
        assert worker.wait(timeout=20) == 0
        assert future.result(timeout=5) == "finished"
        record = client.lookup([future.task_id])[0]
        assert record is not None and record["attempts"] == 1 and len(started_pids(log)) == 1


# ---- real processes: the status command, the store -------------------------------------------


def test_status_command_tells_a_tasks_story(client: Client, cluster: Cluster, tmp_path: Path) -> None:
    future = client.options(retries=2, priority=3).submit(tasks.fail_times, str(tmp_path / "c"), 1, "fine")
    assert future.result(timeout=30) == "fine"
    forgotten = client.submit(tasks.inc, 41)
    assert forgotten.result(timeout=20) == 42 and client.forget([forgotten]) == 1
    shown = pyrodist("status", future.task_id, forgotten.task_id, *cluster.ns_args, env=ADMIN_ENV)  # another client's
    assert shown.returncode == 0, shown.stderr
    story, gone = shown.stdout.split("\n\n")
    assert f"task {future.task_id}: done" in story
    assert "tests.tasks:fail_times" in story
    assert "attempts   2 (retries 1, lost with a worker 0)" in story
    assert "priority=3" in story and "retries=2" in story
    assert "attempt 1 on " in story and "ConnectionRefusedError: call 1 refused" in story
    assert f"task {forgotten.task_id}: expired" in gone and "forgotten" in gone
    as_json = json.loads(pyrodist("status", "--json", future.task_id, *cluster.ns_args, env=ADMIN_ENV).stdout)
    assert json.loads(pyrodist("status", "--json", future.task_id, *cluster.ns_args).stdout)[future.task_id] is None
    assert as_json[future.task_id]["state"] == "done"
    unknown = pyrodist("status", "nosuch.1", *cluster.ns_args)
    assert unknown.returncode == 1 and "unknown to this master" in unknown.stdout


def test_in_memory_master_says_state_will_not_survive(cluster: Cluster) -> None:
    master = cluster.procs.procs[1]
    assert "master" in master.args  # type: ignore[operator]
    assert "in-memory store: state will not survive a restart" in cluster.procs.log(master)
    assert cluster.master_up()


def test_store_path_that_is_not_a_database_is_a_clear_error(cluster: Cluster, tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(4096))
    result = pyrodist("master", *cluster.ns_args, "--name", "other.master", "--store", str(junk), timeout=60)
    assert result.returncode != 0
    assert "is not a pyrodist store" in result.stderr and str(junk) in result.stderr


def test_master_killed_and_restarted_on_its_store_loses_nothing(procs: Processes, tmp_path: Path) -> None:
    store = str(tmp_path / "state.db")
    cluster = start_cluster(procs, workers=0, master_args=("--store", store))
    master = procs.procs[1]
    assert "state survives restarts" in procs.log(master)
    with cluster.client() as client:
        finished = client.submit(tasks.inc, 0)
        cluster.start_worker("--max-tasks", "1")  # runs exactly that one, then leaves
        assert finished.result(timeout=30) == 1
        waiting = client.map(tasks.inc, range(1, 201), chunksize=1)
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
        secret = client.secret
    master.send_signal(signal.SIGTERM)
    assert master.wait(timeout=20) == 0
    procs.start("master", *cluster.ns_args, "--store", store)
    wait_until(cluster.master_up, timeout=30, what="the restarted master")
    with Client(settings=cluster.settings, secret=secret) as client:  # the same client, reaching its tasks again
        records = client.lookup(ids)
        assert all(r is not None and r["state"] == "pending" for r in records)


def test_a_second_master_on_the_same_store_is_refused(procs: Processes, tmp_path: Path) -> None:
    store = str(tmp_path / "state.db")
    cluster = start_cluster(procs, workers=0, master_args=("--store", store))
    second = pyrodist("master", *cluster.ns_args, "--name", "other.master", "--store", store, timeout=60)
    assert second.returncode != 0
    assert "in use by another master" in second.stderr


def test_results_beyond_max_held_wait_on_the_masters_disk_and_arrive_exact() -> None:
    cluster = InProcess(max_held=0)  # every result over 64 KiB waits on disk
    try:
        cluster.start_worker()
        client = cluster.client()
        values = [bytes([i]) * 100_000 for i in range(5)] + [b"small"]
        futures = client.options(keep=True).map(tasks.echo, values)
        assert client.gather(futures, timeout=30) == values
        records = client.lookup(f.task_id for f in futures)
        refs = [r["payload"] for r in records if r is not None]
        assert all(p.startswith("@blob ") for p in refs[:5]) and refs[5] != "@blob", refs  # type: ignore[union-attr]
        assert len(cluster.master.blobs) == 5
    finally:
        cluster.close()


class _LostCollectReply(LocalConnection):
    """A connection whose first collect answer that holds records is lost: the call is sent again, as
    `PyroConnection` does after a lost connection (and the client learns the connection was lost)."""

    def __init__(self, service: object) -> None:
        super().__init__(service)
        self.dropped: list[str] = []

    def _invoke(self, method: Any, *args: Any) -> Any:
        answer = super()._invoke(method, *args)
        if method.__name__ == "collect" and answer and not self.dropped:
            self.dropped = [record["id"] for record in answer]
            self.reconnects += 1
            return super()._invoke(method, *args)
        return answer


def test_a_collect_answer_lost_on_the_way_loses_no_result() -> None:
    cluster = InProcess()
    try:
        cluster.start_worker()
        link = _LostCollectReply(cluster.service)
        client = Client(settings=cluster.settings, connect=lambda _settings: link)
        cluster.clients.append(client)
        futures = client.map(tasks.echo, range(20))
        assert client.gather(futures, timeout=30) == list(range(20))  # ResultExpired before sequence numbers
        assert link.dropped
    finally:
        cluster.close()


def test_a_fetch_carries_at_most_max_payload_bytes_of_arguments_and_gives_the_rest_back_in_order() -> None:
    cluster = InProcess(max_payload=64 * 1024)
    try:
        secret, conn = "a-client-that-submits-by-hand", cluster.connect()
        calls = echo_calls(secret, [bytes([i]) * 40_000 for i in range(5)])
        conn.submit_encoded(secret, calls)
        fetched = []
        while batch := conn.fetch("w1", 5):
            assert len(batch) == 1  # two of 40 KB would be over 64 KiB
            fetched += batch
        assert [t.id for t in fetched] == [c.task_id for c in calls]  # those given back kept their place
        records = conn.lookup([c.task_id for c in calls], secret)
        assert all(r is not None and r.attempts == 1 for r in records)  # a give-back is no attempt
    finally:
        cluster.close()


def test_results_nobody_collects_count_in_max_held_and_plain_callers_still_read_them() -> None:
    cluster = InProcess(max_held=250_000)  # two results of 100 KB are held; later ones wait on disk
    plain = MasterService(cluster.master, cluster.settings)  # a serpent caller: values come back decoded
    try:
        cluster.start_worker()
        sent = [chr(65 + i) * 100_000 for i in range(6)]
        ids = plain.submit_many([{"func": "tests.tasks:echo", "args": [value]} for value in sent])
        got = [plain.result(task_id, timeout=30) for task_id in ids]
        assert [record["value"] for record in got] == sent
        assert len(cluster.master.blobs) >= 3  # the results beyond max_held were spilled to the blob folder
        assert 0 < cluster.master._store.results_held <= 250_000
    finally:
        cluster.close()
