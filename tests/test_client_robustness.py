"""The client under stress: many threads, cancel storms, closing early, a master that restarts.

Cancel storms and closing run in-process; the master's thread pool and a killed master need real processes.
"""

from __future__ import annotations

import concurrent.futures
import logging
import signal
import threading

import pytest

from pyrodist import MasterRejected, PyrodistError, TaskLost
from pyrodist.wire import SubmittedTask
from tests import tasks
from tests.conftest import InProcess, Processes, start_cluster, start_linked_worker, wait_until


def test_many_short_lived_threads_do_not_exhaust_the_masters_threads(procs: Processes) -> None:
    cluster = start_cluster(procs, workers=1, master_args=("--max-connections", "12"))
    with cluster.client() as client:
        results: list[int] = []

        def one(i: int) -> None:
            results.append(client.submit(tasks.inc, i).result(timeout=30))

        for batch in range(5):  # 40 threads in all, each gone after its call
            threads = [threading.Thread(target=one, args=(batch * 8 + i,)) for i in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
        assert sorted(results) == list(range(1, 41))
        with cluster.client() as other:  # the pool still has room for newcomers
            assert other.submit(tasks.inc, 0).result(timeout=30) == 1


def test_another_client_that_knows_a_clients_id_cannot_take_its_results(inproc: InProcess) -> None:
    victim = inproc.client()
    futures = victim.map(tasks.inc, range(300), chunksize=1)
    assert all(f.task_id.startswith(victim.id + ".") for f in futures)  # the id is no secret: it is in every task id
    thief = inproc.connect()
    with pytest.raises(MasterRejected, match="not one of this client's"):  # nor can it add tasks as the victim
        thief.submit_encoded(victim.id, [SubmittedTask(f"{victim.id}.999", "tests.tasks:inc", "[[1],{}]", {})])
    inproc.start_worker()
    stolen = []
    while len(stolen) < 300 and not all(f.done() for f in futures):  # bounded: the victim's futures end it
        stolen += thief.collect(victim.id, 0.05, 10_000)
    assert stolen == []
    assert victim.gather(futures, timeout=30) == list(range(1, 301))
    first = futures[0].task_id  # nor read, cancel or forget them: to the thief they do not exist
    assert thief.lookup([first]) == [None] and thief.lookup([first], victim.id) == [None]
    with pytest.raises(MasterRejected, match="unknown task id"):
        thief.cancel(first)
    assert thief.forget([first]) == 0
    assert victim.lookup([first])[0]["state"] == "done"  # type: ignore[index]


def test_cancel_storm_never_raises_and_settles_every_future(inproc: InProcess) -> None:
    client = inproc.client()  # no worker: every task stays pending until cancelled
    futures = client.map(tasks.inc, range(400), chunksize=1)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda f: f.cancel(), futures + futures))
    assert all(isinstance(o, bool) for o in outcomes)
    assert all(f.cancelled() for f in futures)
    done, not_done = concurrent.futures.wait(futures, timeout=10)
    assert len(done) == 400 and not not_done
    assert client.stats()["counts"]["cancelled"] == 400


def test_closing_the_client_fails_its_unfinished_futures(inproc: InProcess) -> None:
    client = inproc.client()
    future = client.submit(tasks.inc, 1)
    client.close()
    with pytest.raises(PyrodistError, match="closed before task"):
        future.result(timeout=10)


def test_client_rides_through_a_master_restart(procs: Processes) -> None:
    cluster = start_cluster(procs, workers=0)
    master = next(p for p in procs.procs if "master" in p.args)  # type: ignore[operator]
    with cluster.client() as client:
        lost = client.submit(tasks.inc, 1)  # no worker: still pending when the master goes
        master.send_signal(signal.SIGKILL)
        master.wait(timeout=10)
        procs.start("master", *cluster.ns_args)
        wait_until(cluster.master_up, timeout=30, what="the new master")
        with pytest.raises(TaskLost, match=r"restarted and lost it|went with it"):  # seen back, or seen gone first
            lost.result(timeout=30)
        cluster.start_worker()
        assert client.submit(tasks.inc, 41).result(timeout=30) == 42  # new proxies find the new master


def test_futures_of_an_in_memory_master_that_is_gone_fail_instead_of_hanging(procs: Processes) -> None:
    cluster = start_cluster(procs, workers=0)
    master = next(p for p in procs.procs if "master" in p.args)  # type: ignore[operator]
    with cluster.client() as client:
        futures = client.map(tasks.inc, range(3))  # no worker: still pending when the master goes
        master.send_signal(signal.SIGKILL)
        master.wait(timeout=10)
        for future in futures:  # nobody starts another master: before, these waited as long as one was away
            with pytest.raises(TaskLost, match=r"the master is gone .*kept its tasks in memory, they went with it"):
                future.result(timeout=30)


def test_worker_stops_cleanly_while_the_master_is_down(procs: Processes) -> None:
    start_cluster(procs, workers=1)
    master = next(p for p in procs.procs if "master" in p.args)  # type: ignore[operator]
    worker = next(p for p in procs.procs if "worker" in p.args)  # type: ignore[operator]
    master.send_signal(signal.SIGKILL)
    master.wait(timeout=10)
    wait_until(lambda: "lost the master" in procs.log(worker), timeout=20, what="the worker to notice")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0


def test_worker_stops_cleanly_when_its_reporter_already_waits_for_the_master(
    inproc: InProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pyrodist")
    worker, link = start_linked_worker(inproc)
    client = inproc.client()
    wait_until(lambda: client.stats()["workers"], what="the worker to connect")
    link.cut()  # the master is gone
    wait_until(lambda: "reporter waiting for the master" in caplog.text, what="the reporter to wait for the master")
    try:
        worker.stop()  # what SIGTERM does; there is nothing to report, so nobody to wait for
        assert worker.exit_code == 0
    finally:
        worker.worker.abort()  # what a second SIGTERM does: lets a hung worker go, so the teardown does not hang
