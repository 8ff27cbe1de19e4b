"""Results pushed to callbacks: exactly once, never blocking report, dead subscribers dropped.

In-process (the module's master with two worker threads, reached through `LocalConnection`) for what the
master and client do with subscriptions; real processes for what needs Pyro4: plain subscribers called back
through their own daemon, the checks on a callback the master cannot call, a subscriber process that dies,
and a client's on_result through its callback daemon.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import Pyro4
import pytest

from pyrodist import Client
from pyrodist.wire import TaskRecord, TaskSpec
from tests import tasks
from tests.conftest import Cluster, InProcess, Processes, start_cluster, wait_until


@pytest.fixture
def client(inproc_pair: InProcess) -> Iterator[Client]:
    """A client of the module's in-process master with two one-slot workers."""
    with inproc_pair.client() as c:
        yield c


class SlowSink:
    """A subscriber's sink that keeps what it is given, once release is set."""

    def __init__(self, release: threading.Event | None = None, fail: bool = False) -> None:
        self.records: list[TaskRecord] = []
        self.release = release
        self.fail = fail

    def deliver(self, records: list[TaskRecord]) -> None:
        if self.release is not None:
            self.release.wait(30)
        if self.fail:
            raise ConnectionError("the subscriber vanished")
        self.records.extend(records)

    def close(self) -> None:
        pass


def test_on_result_receives_each_of_the_clients_tasks_exactly_once(inproc_pair: InProcess) -> None:
    with inproc_pair.client() as client, inproc_pair.client() as other:
        seen: list[dict[str, Any]] = []
        lock = threading.Lock()

        def record(rec: dict[str, Any]) -> None:
            with lock:
                seen.append(rec)

        client.on_result(record)
        futures = client.map(tasks.inc, range(500))
        other.gather(other.map(tasks.inc, range(50)), timeout=60)  # not this client's: never delivered
        client.gather(futures, timeout=60)
        wanted = {f.task_id for f in futures}
        wait_until(lambda: len(seen) >= 500, what="500 callbacks")
        assert sorted(r["id"] for r in seen) == sorted(wanted)
        by_id = {r["id"]: r for r in seen}
        assert all(by_id[f.task_id]["value"] == f.result() for f in futures)
        assert all(r["state"] == "done" for r in seen)


def test_a_raising_callback_does_not_stop_delivery(client: Client) -> None:
    seen: list[str] = []
    calls: list[str] = []

    def bad(rec: dict[str, Any]) -> None:
        calls.append(rec["id"])
        raise RuntimeError("callback bug")

    client.on_result(bad)
    client.on_result(lambda rec: seen.append(rec["id"]))
    client.gather(client.map(tasks.inc, range(20)), timeout=30)
    wait_until(lambda: len(seen) == 20, what="20 callbacks")
    assert sorted(calls) == sorted(seen)  # the raising one was called for each record too


def test_a_subscription_to_listed_tasks_gets_finished_ones_at_once(inproc_pair: InProcess) -> None:
    conn = inproc_pair.connect()
    first = conn.submit(TaskSpec("tests.tasks:inc", [1], {}))
    assert conn.result(first, timeout=20).state == "done"
    second = conn.submit(TaskSpec("tests.tasks:echo", ["raw"], {}))  # a json caller's values are json's
    sink = SlowSink()
    sub = conn.subscribe(sink, [first, second])
    wait_until(lambda: len(sink.records) == 2, what="both records")
    conn.unsubscribe(sub)
    assert {r.id: r.to_plain()["value"] for r in sink.records} == {first: 2, second: "raw"}


def test_a_slow_subscriber_never_blocks_others(client: Client, inproc_pair: InProcess) -> None:
    release = threading.Event()
    slow = SlowSink(release)
    conn = inproc_pair.connect()
    sub = conn.subscribe(slow, None, inproc_pair.admin("watcher"))  # every client's tasks: the admin key
    try:
        fast: list[str] = []
        client.on_result(lambda r: fast.append(r["id"]))
        futures = client.map(tasks.inc, range(200))
        assert client.gather(futures, timeout=30) == list(range(1, 201))  # report was never blocked
        wait_until(lambda: len(fast) == 200, what="the fast subscriber")
        assert len(slow.records) == 0
        release.set()
        wait_until(lambda: len(slow.records) >= 200, what="the slow subscriber to catch up")
    finally:
        release.set()
        conn.unsubscribe(sub)


def test_a_subscriber_whose_delivery_fails_is_dropped(client: Client, inproc_pair: InProcess) -> None:
    before = client.stats()["subscriptions"]
    inproc_pair.connect().subscribe(SlowSink(fail=True), None, inproc_pair.admin("watcher"))
    assert client.stats()["subscriptions"] == before + 1
    client.gather(client.map(tasks.inc, range(10)), timeout=30)  # results still flow
    wait_until(lambda: client.stats()["subscriptions"] == before, what="the dead subscription to be dropped")


def test_closing_a_client_ends_its_subscription(inproc_pair: InProcess) -> None:
    with inproc_pair.client() as watcher:
        before = watcher.stats()["subscriptions"]
        with inproc_pair.client() as client:
            client.on_result(lambda record: None)
            assert watcher.stats()["subscriptions"] == before + 1
        assert watcher.stats()["subscriptions"] == before


# ---- over Pyro4, with real processes: the module's cluster (two one-slot workers)


@Pyro4.expose
class PlainCallback:
    """A callback object as a plain Pyro4 user writes it."""

    def __init__(self, delay: threading.Event | None = None) -> None:
        self.records: list[dict[str, Any]] = []
        self.delay = delay

    def task_done(self, record: dict[str, Any]) -> None:
        if self.delay is not None:
            self.delay.wait(30)
        self.records.append(record)


@pytest.fixture
def daemon() -> Iterator[Pyro4.Daemon]:
    d = Pyro4.Daemon(host="127.0.0.1", port=0)
    thread = threading.Thread(target=d.requestLoop, daemon=True)
    thread.start()
    yield d
    d.shutdown()
    thread.join(timeout=10)
    d.close()


def plain_master(cluster: Cluster) -> Any:
    return Pyro4.Proxy(f"PYRONAME:pyrodist.master@127.0.0.1:{cluster.ns_port}")


def test_plain_subscriber_gets_listed_tasks_including_finished_ones(cluster: Cluster, daemon: Pyro4.Daemon) -> None:
    callback = PlainCallback()
    daemon.register(callback)
    with plain_master(cluster) as master:
        first = master.submit("tests.tasks:inc", [1])
        assert master.result(first, timeout=20)["state"] == "done"
        second = master.submit("tests.tasks:echo", [b"raw"])
        sub = master.subscribe(callback, [first, second])
        wait_until(lambda: len(callback.records) == 2, what="both records")
        master.unsubscribe(sub)
    values = {r["id"]: r["value"] for r in callback.records}
    assert values[first] == 2
    assert values[second] in (b"raw", {"data": "cmF3", "encoding": "base64"})  # serpent wire: base64 dict


def test_subscribe_refuses_what_it_cannot_call(cluster: Cluster) -> None:
    with plain_master(cluster) as master:
        with pytest.raises(TypeError, match="registered"):
            master.subscribe({"not": "a proxy"})
        with pytest.raises(ValueError, match="unknown subscription"):
            master.unsubscribe("sub-none")
        with pytest.raises(ValueError, match="unknown task id"):
            master.subscribe(Pyro4.Proxy("PYRO:x@127.0.0.1:1"), ["no-such-task"])


def test_a_subscriber_the_master_cannot_call_back_is_refused(cluster: Cluster) -> None:
    dead_daemon = Pyro4.Daemon(host="127.0.0.1", port=0)
    dead = PlainCallback()
    dead_daemon.register(dead)  # never served: calls to it fail
    with plain_master(cluster) as master:
        before = master.stats()["subscriptions"]
        dead_uri = Pyro4.Proxy(dead_daemon.uriFor(dead))
        with pytest.raises(ValueError, match="cannot call back"):
            dead_daemon.close()
            master.subscribe(dead_uri)
        assert master.stats()["subscriptions"] == before


SUBSCRIBER = """
import sys, threading, Pyro4
@Pyro4.expose
class Callback:
    def task_done(self, record):
        pass
daemon = Pyro4.Daemon(host="127.0.0.1", port=0)
callback = daemon.register(Callback())
threading.Thread(target=daemon.requestLoop, daemon=True).start()
master = Pyro4.Proxy(f"PYRONAME:pyrodist.master@127.0.0.1:{sys.argv[1]}")
print(master.subscribe(Pyro4.Proxy(callback)), flush=True)
threading.Event().wait(120)
"""


def test_subscriber_that_vanishes_is_dropped(cluster: Cluster) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, str(cluster.ns_port)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("sub-")
        with plain_master(cluster) as master:
            before = master.stats()["subscriptions"]
            proc.kill()
            proc.wait(timeout=10)
            ids = master.submit_many([{"func": "tests.tasks:inc", "args": [i]} for i in range(10)])  # of no client:
            assert [master.result(i, 30)["value"] for i in ids] == list(range(1, 11))  # what it would be sent
            wait_until(lambda: master.stats()["subscriptions"] < before, what="the dead subscription to be dropped")
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_client_callbacks_carry_failures_too(cluster: Cluster) -> None:
    """A client's on_result over Pyro4: the master calls back the client's own callback daemon."""
    with cluster.client() as client:
        seen: list[dict[str, Any]] = []
        client.on_result(seen.append)
        future = client.submit(tasks.boom, "cb")
        wait_until(lambda: seen, what="the failure record")
        assert future.exception(timeout=10) is not None
        assert seen[0]["state"] == "failed" and seen[0]["error"]["message"] == "cb"
        echoed = client.submit(tasks.echo, {b"k": (1, {2})})
        wait_until(lambda: len(seen) == 2, what="the second record")
        assert seen[1]["id"] == echoed.task_id and seen[1]["value"] == {b"k": (1, {2})}


def test_on_result_calls_back_each_task_once_across_a_master_restart(procs: Processes, tmp_path: Path) -> None:
    store = str(tmp_path / "state.db")
    cluster = start_cluster(procs, workers=0, master_args=("--store", store))
    master = procs.procs[1]
    with cluster.client() as client:
        called: list[str] = []
        client.on_result(lambda record: called.append(record["id"]))
        futures = client.map(tasks.inc, range(300))  # no worker yet: all pending when the master dies
        master.send_signal(signal.SIGKILL)
        master.wait(timeout=10)
        cluster.start_worker()  # it runs them all as soon as the new master is up, before the client is back
        procs.start("master", *cluster.ns_args, "--lease-timeout", "3", "--store", store)
        assert client.gather(futures, timeout=60) == list(range(1, 301))
        wait_until(lambda: len(called) >= 300, timeout=30, what="a callback for every task")
        assert sorted(called) == sorted(f.task_id for f in futures)  # each once
