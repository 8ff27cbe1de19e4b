"""A worker's life: waiting for the master, graceful stop, burst and max-tasks exits, death and leases."""

from __future__ import annotations

import signal

from tests import tasks
from tests.conftest import Cluster, Processes, free_port, port_open, start_cluster, wait_until


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
        futures = client.map(tasks.sleep_return, [0.05] * 60, range(60))
        wait_until(lambda: client.stats()["done"] >= 5, what="some tasks to finish")
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=20) == 0
        assert client.gather(futures, timeout=60) == list(range(60))
        stats = client.stats()
        assert stats["done"] == 60 and stats["counts"]["pending"] == 0 and stats["counts"]["running"] == 0
        assert len(stats["workers"]) == 1  # the stopped worker said goodbye
    log = procs.log(first)
    assert "stopping" in log and "stopped after" in log


def test_burst_worker_exits_when_the_queue_is_empty(procs: Processes) -> None:
    cluster = start_cluster(procs, workers=0)
    with cluster.client() as client:
        futures = client.map(tasks.inc, range(30))
        worker = cluster.start_worker("--burst")
        assert worker.wait(timeout=60) == 0
        assert client.gather(futures, timeout=10) == list(range(1, 31))


def test_max_tasks_worker_exits_after_that_many(procs: Processes) -> None:
    cluster = start_cluster(procs, workers=0)
    with cluster.client() as client:
        futures = client.map(tasks.inc, range(12))
        worker = cluster.start_worker("--max-tasks", "5", "--prefetch", "2")
        assert worker.wait(timeout=60) == 0
        wait_until(lambda: sum(f.done() for f in futures) == 5, what="the five results to reach the client")
        stats = client.stats()
        assert stats["counts"]["pending"] == 7 and stats["done"] == 5


def test_killed_worker_is_marked_lost_and_its_task_runs_elsewhere(procs: Processes) -> None:
    cluster = start_cluster(procs, workers=1)  # the master's lease timeout is 3 s here
    victim = next(p for p in procs.procs if "worker" in p.args)  # type: ignore[operator]
    with cluster.client() as client:
        future = client.submit(tasks.sleep_return, 1.0, "survived")
        wait_until(lambda: client.stats()["counts"]["running"] == 1, what="the task to start")
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        wait_until(lambda: client.stats()["lost_workers"], timeout=20, what="the worker to be marked lost")
        cluster.start_worker()
        assert future.result(timeout=30) == "survived"
        assert client.stats()["counts"]["done"] == 1


def test_long_task_keeps_its_lease_through_heartbeats(procs: Processes) -> None:
    cluster = start_cluster(procs, workers=2)  # lease timeout 3 s, heartbeat 0.5 s
    with cluster.client() as client:
        future = client.submit(tasks.whoami)
        slow = client.submit(tasks.sleep_return, 5.0, "once")
        assert future.result(timeout=20) > 0
        assert slow.result(timeout=30) == "once"
        record = client.lookup([slow.task_id])[0]
        assert record["attempts"] == 1  # never handed out twice while its worker lived
