"""Tasks from submit to result: the Client and the master's plain API, values, map, futures, priorities.

In-process (the `inproc` master, workers as threads) unless a test needs Pyro4 for real: values over the
real wire, a plain `Pyro4.Proxy` shell session and its errors, and the `pyrodist broadcast` command.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import decimal
import math
import operator
import subprocess
import sys
import time
import uuid
import zoneinfo
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import Pyro4
import pytest

from pyrodist import Client, FunctionRefError, ValueEncodingError, as_completed
from pyrodist.wire import TaskSpec
from tests import tasks
from tests.conftest import ROOT, Cluster, InProcess, start_workers, wait_until

VALUES = [
    None, True, False, 0, -1, 10**40, -(10**40), 1.5, -0.0, float("inf"), 1 + 2j, "", "héllo \u2028 wörld",
    b"", b"\x00\xff bytes", [], [1, [2, [3]]], (), (1,), ((),), {}, {"a": {"b": b"c"}}, {(1, 2): b"k", b"x": None},
    set(), {1, 2, 3}, frozenset(), frozenset({"a"}), [set(), frozenset(), (b"",)],
    bytearray(b"\x00\xff"), {None: 1, 2.5: b"", frozenset({1}): ()},
    datetime.datetime(2024, 3, 31, 2, 30, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
    datetime.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone(datetime.timedelta(hours=-5), "EST")),
    datetime.datetime(2024, 11, 3, 1, 30, fold=1), datetime.date(2024, 2, 29), datetime.time(23, 59, 59, 999_999),
    datetime.timedelta(days=-1, microseconds=1), decimal.Decimal("-0.00"), decimal.Decimal("NaN"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"), tasks.Point(1.5, -2.0, "p"), tasks.Span(1, 2),
    [tasks.Point(0.0, 0.0)] * 3,
]  # fmt: skip


def same(a: Any, b: Any) -> bool:
    """Equal and of the same type, all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())
    if isinstance(a, decimal.Decimal | datetime.datetime | datetime.time):  # NaN, and what == ignores (fold, zone)
        return str(a) == str(b) and (getattr(a, "tzinfo", None), getattr(a, "fold", 0)) == (
            getattr(b, "tzinfo", None),
            getattr(b, "fold", 0),
        )
    return bool(a == b)


@pytest.fixture
def client(inproc_pair: InProcess) -> Iterator[Client]:
    """A client of the module's in-process master with two one-slot workers."""
    with inproc_pair.client() as c:
        yield c


def test_submit_returns_the_result(client: Client) -> None:
    assert client.submit(math.factorial, 20).result(timeout=20) == math.factorial(20)
    assert client.submit("tests.tasks:add", 2, b=3).result(timeout=20) == 5


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_values_come_back_equal_and_of_the_same_type(client: Client, value: Any) -> None:
    assert same(client.submit(tasks.echo, value).result(timeout=20), value)


def test_a_registered_class_goes_in_and_comes_back(client: Client) -> None:
    assert client.submit(tasks.moved, tasks.Point(1.0, 2.0, "a"), 0.5).result(timeout=20) == tasks.Point(1.5, 2.0, "a")


def test_bytes_travel_raw_at_the_frame_boundaries(client: Client) -> None:
    sizes = [0, 1, 127, 128, 16_383, 16_384, 65_535, 65_536, 65_537, 3 * 1024 * 1024]
    values = [bytes(range(256)) * (n // 256) + bytes(n % 256) for n in sizes]
    assert [len(v) for v in client.gather(client.map(tasks.echo, values), timeout=60)] == sizes
    assert client.gather(client.map(tasks.echo, values), timeout=60) == values


def test_nan_comes_back_as_nan(client: Client) -> None:
    assert math.isnan(client.submit(tasks.echo, float("nan")).result(timeout=20))


def test_map_of_10000_tasks_loses_and_duplicates_nothing(client: Client) -> None:
    before = client.stats()
    futures = client.map(tasks.inc, range(10_000), chunksize=1)
    assert len({f.task_id for f in futures}) == 10_000
    assert client.gather(futures, timeout=120) == [i + 1 for i in range(10_000)]
    after = client.stats()
    assert after["done"] - before["done"] == 10_000
    assert after["submitted"] - before["submitted"] == 10_000
    done_before = {w["id"]: w["done"] for w in before["workers"]}
    workers = {w["id"]: w["done"] - done_before[w["id"]] for w in after["workers"]}
    assert len(workers) == 2 and all(n > 0 for n in workers.values()), workers


def test_map_packs_tiny_calls_by_itself_and_every_call_gets_its_result(client: Client) -> None:
    before = client.stats()
    futures = client.map(tasks.inc, range(10_000))  # tiny calls: the first ones measure them, the rest are packed
    assert client.gather(futures, timeout=120) == [i + 1 for i in range(10_000)]
    tasks_sent = client.stats()["submitted"] - before["submitted"]
    assert len({f.task_id for f in futures}) == tasks_sent < 1000, tasks_sent


def test_map_zips_several_iterables_like_the_builtin(client: Client) -> None:
    futures = client.map(operator.pow, range(100), [2] * 100, chunksize=7)
    assert client.gather(futures, timeout=30) == [i * i for i in range(100)]


def test_as_completed_and_wait_work_on_pyrodist_futures(client: Client) -> None:
    futures = [client.submit(operator.mul, i, 3) for i in range(50)]
    assert sorted(f.result() for f in as_completed(futures, timeout=30)) == [i * 3 for i in range(50)]
    done, not_done = concurrent.futures.wait(futures, timeout=30)
    assert len(done) == 50 and not not_done
    assert all(isinstance(f, concurrent.futures.Future) and f.task_id for f in futures)


def test_future_result_times_out_while_the_task_runs(client: Client, gate: Path) -> None:
    future = client.submit(tasks.wait_for_file, str(gate), "late")
    wait_until(lambda: client.lookup([future.task_id])[0]["state"] == "running", what="the task to start")
    with pytest.raises(TimeoutError):
        future.result(timeout=0.05)
    gate.touch()
    assert future.result(timeout=20) == "late"


def test_waiting_on_one_future_is_not_cut_short_by_others_finishing(client: Client, gate: Path) -> None:
    """A client's futures share one condition: a wait ends at its own result or timeout, not at another's."""
    slow = client.submit(tasks.wait_for_file, str(gate), "slow")
    fast = [client.submit(tasks.inc, i) for i in range(20)]
    waited_from = time.monotonic()
    with pytest.raises(concurrent.futures.TimeoutError):
        slow.result(timeout=0.3)  # others finish meanwhile, waking this wait: it goes on waiting
    assert time.monotonic() - waited_from >= 0.3
    gate.touch()
    assert slow.exception(timeout=30) is None
    assert slow.result(timeout=30) == "slow"
    assert [f.result(timeout=30) for f in fast] == list(range(1, 21))


def test_a_task_printing_to_stdout_does_not_disturb_its_worker(client: Client) -> None:
    assert client.gather([client.submit(tasks.noisy, i) for i in range(10)], timeout=20) == list(range(10))


@pytest.mark.parametrize(
    "func",
    [lambda x: x, Client.submit, [].append, type("Local", (), {"f": staticmethod(lambda: 1)}).f],
    ids=["lambda", "method", "bound-method", "nested"],
)
def test_functions_no_worker_can_import_are_refused_at_once(inproc: InProcess, func: Any) -> None:
    client = inproc.client()
    with pytest.raises(FunctionRefError, match=r"import|method|lambda"):
        client.submit(func, 1)
    assert client.stats()["submitted"] == 0


def test_function_from_main_is_refused_with_advice(inproc: InProcess) -> None:
    def local() -> None: ...

    local.__module__ = "__main__"
    local.__qualname__ = "local"
    with pytest.raises(FunctionRefError, match=r"__main__.*-I"):
        inproc.client().submit(local)


def test_unsendable_argument_is_refused_before_anything_is_sent(inproc: InProcess) -> None:
    client = inproc.client()
    before = client.stats()["submitted"]
    with pytest.raises(ValueEncodingError, match="object"):
        client.map(tasks.echo, [1, 2, object()])
    assert client.stats()["submitted"] == before


def test_cancel_a_pending_task(inproc: InProcess) -> None:
    client = inproc.client()  # no worker yet: the task stays pending
    queued = client.submit(tasks.inc, 1)
    assert queued.cancel() and queued.cancelled()
    assert client.stats()["counts"]["cancelled"] == 1
    start_workers(inproc, 1)
    assert client.submit(tasks.inc, 2).result(timeout=30) == 3
    assert client.stats()["counts"]["done"] == 1  # the cancelled task never ran
    assert client.lookup([queued.task_id])[0]["state"] == "cancelled"


def test_a_busy_worker_leaves_new_tasks_to_an_idle_one(inproc: InProcess, gate: Path) -> None:
    """With the queue empty, a worker whose only slot is busy does not prefetch: the idle worker takes each task."""
    start_workers(inproc, 2)
    client = inproc.client()
    client.gather(client.map(tasks.inc, range(300)), timeout=30)  # both learn tasks are fast: prefetch grows
    slow = client.submit(tasks.wait_for_file, str(gate), "slow")
    wait_until(lambda: client.lookup([slow.task_id])[0]["state"] == "running", what="the slow task to start")
    busy = client.lookup([slow.task_id])[0]["worker"]
    for i in range(5):  # one at a time: each finds the queue empty
        quick = client.submit(tasks.inc, i)
        assert quick.result(timeout=4) == i + 1  # not stuck behind the slow task
        assert client.lookup([quick.task_id])[0]["worker"] != busy
    assert not slow.done()
    gate.touch()
    assert slow.result(timeout=30) == "slow"


def test_a_long_poll_that_got_the_last_task_ends_a_busy_workers_prefetch(tmp_path: Path) -> None:
    """A fetch that had to wait and then got its one task means the queue is empty: no prefetch behind a slow task.

    One worker with --prefetch 2 and one slot: a fetch of two gets both (the queue had more); while the second runs,
    the worker may ask for one more, and that long-poll waits, then gets exactly the one task it asked for: the
    slow one, and the queue is empty. Once that slow task runs, the worker must not fetch again: the next task
    belongs to the idle worker that joins.
    """
    inproc = InProcess(lease_timeout=3.0)  # long-polls of 1 s: a fetch the busy worker sends stays open meanwhile
    gate_a, gate_b, gate_slow = (tmp_path / name for name in ("a", "b", "slow"))
    try:
        start_workers(inproc, 1, prefetch=2)
        client = inproc.client()
        first = client.map(tasks.wait_for_file, [str(gate_a), str(gate_b)], ["a", "b"])  # one fetch takes both
        gate_a.touch()
        assert first[0].result(timeout=20) == "a"  # b runs now
        slow = client.submit(tasks.wait_for_file, str(gate_slow), "slow")
        gate_b.touch()
        assert first[1].result(timeout=20) == "b"
        wait_until(lambda: client.lookup([slow.task_id])[0]["state"] == "running", what="the slow task to start")
        quick = client.submit(tasks.inc, 1)  # the slow task holds the worker's only slot
        start_workers(inproc, 1)
        assert quick.result(timeout=5) == 2, "the busy worker took it, behind its slow task"
        assert client.lookup([quick.task_id])[0]["worker"] == "w2"
        gate_slow.touch()
        assert slow.result(timeout=20) == "slow"
    finally:
        for gate in (gate_a, gate_b, gate_slow):
            gate.touch()
        inproc.close()


def test_bad_options_are_refused_naming_the_field(inproc: InProcess) -> None:
    client = inproc.client()
    with pytest.raises(ValueError, match="unknown task option 'retires'"):
        client.options(retires=3)
    with pytest.raises(TypeError, match="priority"):
        client.options(priority="high")


def test_priority_runs_higher_first_fifo_within_one(inproc: InProcess, tmp_path: Path) -> None:
    client = inproc.client()  # no worker yet: every task is queued before one runs
    order = ["low-1", "normal-1", "urgent-1", "normal-2", "urgent-2"]
    priority = {"low": -5, "normal": 0, "urgent": 10}
    futures = [
        client.options(priority=priority[name.split("-")[0]]).submit(tasks.logged_square, str(tmp_path), i)
        for i, name in enumerate(order)
    ]
    start_workers(inproc, 1, prefetch=1)
    client.gather(futures, timeout=60)
    runs = [line.split() for log in tmp_path.glob("runs-*.log") for line in log.read_text().splitlines()]
    ran = [order[int(x)] for x, _, _ in sorted(runs, key=lambda run: float(run[2]))]
    assert ran == ["urgent-1", "urgent-2", "normal-1", "normal-2", "low-1"]


def test_oversized_arguments_are_refused_at_the_client_naming_the_limit_and_its_setting() -> None:
    cluster = InProcess(max_payload=4096, max_value=64 * 1024)
    try:
        client = cluster.client()
        with pytest.raises(ValueEncodingError, match=r"limit is 65536 \(max_value, --max-value\)"):
            client.submit(tasks.echo, b"x" * 70_000)
        assert client.stats()["submitted"] == 0
    finally:
        cluster.close()


def test_broadcast_runs_once_on_every_live_worker(client: Client) -> None:
    results = client.broadcast(tasks.whoami)
    workers = {w["id"] for w in client.stats()["workers"]}
    assert set(results) == workers == {"w1", "w2"}
    assert len(set(results.values())) == len(workers)  # each ran in its own worker's child process
    assert client.options(priority=3).broadcast(tasks.add, 1, b=2) == dict.fromkeys(workers, 3)


def test_task_sent_to_an_absent_worker_fails_clearly(inproc: InProcess) -> None:
    conn = inproc.connect()
    task_id = conn.submit(TaskSpec("tests.tasks:inc", [1], {}, {"worker": "nobody-here"}))
    inproc.reap()
    assert conn.result(task_id).state == "pending"  # a worker may still connect within a lease
    inproc.reap(advance=inproc.settings.lease_timeout + 1)
    record = conn.result(task_id, timeout=20)
    assert record.state == "failed" and record.error is not None
    assert "worker nobody-here is not connected" in record.error["message"]


def test_map_with_progress_returns_the_futures_and_draws_nothing_off_a_terminal(
    client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    futures = client.map(tasks.inc, range(50), progress=True)
    assert client.gather(futures, timeout=30) == list(range(1, 51))
    assert capsys.readouterr().err == ""  # stderr is not a terminal here: the bar stays quiet


def test_long_non_ascii_arguments_pass_through_pipelined_batches(client: Client) -> None:
    text = "é" * 1900  # json escapes each to 6 bytes: batches must be sized by what is written
    client.gather(client.map(tasks.inc, range(200)), timeout=30)  # workers learn the tasks are fast
    assert client.gather(client.map(tasks.echo, [text] * 100), timeout=60) == [text] * 100


# ---- the master's plain API, in-process (the wire's json round trip, no Pyro4)


def test_plain_result_with_zero_timeout_returns_the_current_state(inproc: InProcess, gate: Path) -> None:
    conn = inproc.connect()
    tid = conn.submit(TaskSpec("tests.tasks:wait_for_file", [str(gate), 1], {}))
    asked = time.monotonic()
    assert conn.result(tid).state == "pending"  # no worker yet
    assert time.monotonic() - asked < 1.0  # answered at once, not after a wait
    start_workers(inproc, 1)
    wait_until(lambda: conn.result(tid).state == "running", what="the task to start")
    gate.touch()
    assert conn.result(tid, timeout=20).state == "done"


def test_failed_task_record_carries_the_remote_error(inproc: InProcess) -> None:
    start_workers(inproc, 1)
    conn = inproc.connect()
    record = conn.result(conn.submit(TaskSpec("tests.tasks:boom", ["kaput"], {})), timeout=20)
    assert record.state == "failed" and record.error is not None
    assert record.error["type"] == "ValueError" and record.error["message"] == "kaput"
    assert "def boom" in record.error["traceback"] or "boom" in record.error["traceback"]


# ---- over Pyro4, with real processes: the module's cluster (two one-slot workers)


def plain_proxy(cluster: Cluster) -> Any:
    return Pyro4.Proxy(f"PYRONAME:pyrodist.master@127.0.0.1:{cluster.ns_port}")


def test_values_of_every_type_cross_the_real_wire(cluster: Cluster) -> None:
    with cluster.client() as client:
        back = client.gather(client.map(tasks.echo, [*VALUES, float("nan")]), timeout=30)
    assert all(same(got, sent) for got, sent in zip(back, VALUES, strict=False)), back
    assert math.isnan(back[-1])


def test_plain_pyro4_shell_session(cluster: Cluster) -> None:
    with plain_proxy(cluster) as master:
        tid = master.submit("math:factorial", [20])
        record = master.result(tid, timeout=20)
        assert record["value"] == 2432902008176640000
        assert record["state"] == "done" and record["id"] == tid and record["error"] is None
        ids = master.submit_many([{"func": "operator:add", "args": [i, 1]} for i in range(5)])
        assert [master.result(i, timeout=20)["value"] for i in ids] == [1, 2, 3, 4, 5]
        assert {"workers", "counts"} <= set(master.stats())


def test_plain_pyro4_errors_arrive_readable(cluster: Cluster) -> None:
    with plain_proxy(cluster) as master:
        with pytest.raises(ValueError, match="unknown task id 'nope'"):
            master.result("nope")
        with pytest.raises(ValueError, match="bad function reference"):
            master.submit("not a function")
        with pytest.raises(TypeError, match="args must be a list"):
            master.submit("math:sqrt", 4)
        with pytest.raises(ValueError, match="unknown task option"):
            master.submit("math:sqrt", [4], {}, {"colour": "red"})
        assert master.ping() == "pong"  # the master is unharmed


def test_broadcast_from_the_shell(cluster: Cluster) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pyrodist", "broadcast", "tests.tasks:add", "-1", "2", *cluster.ns_args],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and all(line.split()[-1] == "1" for line in lines)
