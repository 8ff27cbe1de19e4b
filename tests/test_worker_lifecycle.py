"""A worker's life: waiting for the master, graceful stop, burst and max-tasks exits, death and leases.

The rules (burst and max-tasks exits, a silent worker lost, leases kept by heartbeats) run in-process with the
master's clock in the test's hands; waiting for a name server and SIGTERM need real processes.
"""

from __future__ import annotations

import signal
from pathlib import Path

from tests import tasks
from tests.conftest import (
    Cluster,
    InProcess,
    Processes,
    free_port,
    port_open,
    start_cluster,
    start_linked_worker,
    started_pids,
    wait_until,
)

# ---- real processes: the name server, signals -------------------------------------------------


def test_worker_started_before_name_server_and_master_connects_once_they_are_up(procs: Processes) -> None:
    port = free_port()
    cluster = Cluster(procs, port)
    worker = cluster.start_worker()
    wait_until(lambda: "waiting for the master" in procs.log(worker), what="the worker to say what it waits for")
    assert "no name server found at 127.0.0.1" in procs.log(worker)
    procs.start("nameserver", "--host", "127.0.0.1", "--port", str(port))
    wait_until(lambda: port_open(port), what="the name server")
    wait_until(lambda: "no master registered" in procs.log(worker), what="the worker to wait for the master")
    procs.start("master", *cluster.ns_args)
    wait_until(lambda: len(cluster.live_workers()) == 1, timeout=30, what="the worker to connect")
    with cluster.client() as client:
        assert client.submit(tasks.inc, 41).result(timeout=20) == 42
    assert worker.poll() is None


def test_sigterm_stops_a_worker_cleanly_and_loses_no_task(procs: Processes) -> None:
    cluster = start_cluster(procs, workers=2)
    first, _second = (p for p in procs.procs if "worker" in p.args)  # type: ignore[operator]
    with cluster.client() as client:
        futures = client.map(tasks.sleep_return, [0.05] * 30, range(30))
        wait_until(lambda: client.stats()["done"] >= 5, what="some tasks to finish")
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=20) == 0
        assert client.gather(futures, timeout=60) == list(range(30))
        stats = client.stats()
        assert stats["done"] == 30 and stats["counts"]["pending"] == 0 and stats["counts"]["running"] == 0
        assert len(stats["workers"]) == 1  # the stopped worker said goodbye
    log = procs.log(first)
    assert "stopping" in log and "stopped after" in log


# ---- in-process: exits, lost workers, leases --------------------------------------------------


def test_burst_worker_exits_when_the_queue_is_empty(inproc: InProcess) -> None:
    client = inproc.client()
    futures = client.map(tasks.inc, range(30))
    worker = inproc.start_worker(burst=True)
    worker.thread.join(60)
    assert not worker.thread.is_alive() and worker.exit_code == 0
    assert client.gather(futures, timeout=10) == list(range(1, 31))


def test_max_tasks_worker_exits_after_that_many(inproc: InProcess) -> None:
    client = inproc.client()
    futures = client.map(tasks.inc, range(12))
    worker = inproc.start_worker(max_tasks=5, prefetch=2)
    worker.thread.join(60)
    assert not worker.thread.is_alive() and worker.exit_code == 0
    wait_until(lambda: sum(f.done() for f in futures) == 5, what="the five results to reach the client")
    stats = client.stats()
    assert stats["counts"]["pending"] == 7 and stats["done"] == 5


def test_silent_worker_is_marked_lost_and_its_task_runs_elsewhere(inproc: InProcess, tmp_path: Path) -> None:
    victim, link = start_linked_worker(inproc, worker_id="victim", grace=0)
    client = inproc.client()
    log, release = tmp_path / "runs", tmp_path / "release"
    future = client.submit(tasks.hold, str(log), str(release), "survived")
    wait_until(lambda: started_pids(log), what="the task to start")
    wait_until(
        lambda: [w for w in client.stats()["workers"] if w["id"] == "victim" and w["running"] == 1],
        what="a heartbeat saying the task runs",
    )
    link.cut()  # the worker falls silent, as a killed one does
    inproc.reap(advance=inproc.settings.lease_timeout / 2)
    assert client.stats()["lost_workers"] == [] and client.lookup([future.task_id])[0]["state"] == "running"  # type: ignore[index]
    inproc.reap(advance=inproc.settings.lease_timeout)
    assert [w["id"] for w in client.stats()["lost_workers"]] == ["victim"]
    record = client.lookup([future.task_id])[0]
    assert record is not None and record["state"] == "pending" and record["lost"] == 1 and record["attempts"] == 1
    error = record["errors"][-1]
    assert error["type"] == "WorkerLost" and "victim was lost while running" in error["message"]

    victim.worker.abort()  # its child is killed; nothing reaches the master any more
    victim.thread.join(15)
    assert not victim.thread.is_alive() and victim.exit_code == 0
    release.touch()
    inproc.start_worker(worker_id="rescuer")
    assert future.result(timeout=30) == "survived"
    record = client.lookup([future.task_id])[0]
    assert record is not None and record["worker"] == "rescuer" and record["attempts"] == 2
    assert len(set(started_pids(log))) == 2  # it ran again, in another process
    stats = client.stats()
    assert stats["counts"]["done"] == 1 and [w["id"] for w in stats["lost_workers"]] == ["victim"]


def test_long_task_keeps_its_lease_through_heartbeats(inproc: InProcess, tmp_path: Path) -> None:
    """A task that outlives many lease periods on the master's clock is never handed out again while its worker
    heartbeats, though another worker keeps asking for work."""
    client = inproc.client()
    inproc.start_worker(worker_id="busy", grace=0)
    log, release = tmp_path / "runs", tmp_path / "release"
    slow = client.submit(tasks.hold, str(log), str(release), "once")
    wait_until(lambda: started_pids(log), what="the long task to start")
    inproc.start_worker(worker_id="idle", grace=0)  # grace 0: a held task never delays the teardown
    assert client.submit(tasks.whoami).result(timeout=20) > 0  # the other worker takes new work meanwhile

    def heard_from_both_since_the_clock_moved() -> bool:
        workers = client.stats()["workers"]
        return len(workers) == 2 and all(w["last_seen"] == 0 for w in workers)

    lease = inproc.settings.lease_timeout
    for _ in range(10):  # 8 lease periods; between two rounds only heartbeats can keep the lease
        inproc.clock.advance(0.8 * lease)
        wait_until(heard_from_both_since_the_clock_moved, what="both workers to call after the clock moved")
        inproc.reap()
        record = client.lookup([slow.task_id])[0]
        assert record is not None and record["state"] == "running" and record["worker"] == "busy"
    assert record["attempts"] == 1 and record["lost"] == 0
    assert inproc.clock() - record["started"] > 7 * lease
    release.touch()
    assert slow.result(timeout=30) == "once"
    record = client.lookup([slow.task_id])[0]
    assert record is not None and record["attempts"] == 1  # never handed out twice while its worker lived
    assert len(started_pids(log)) == 1
    assert {w["id"]: w["done"] for w in client.stats()["workers"]} == {"busy": 1, "idle": 1}
