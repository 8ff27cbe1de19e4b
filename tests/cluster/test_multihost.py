"""Several machines for real: pyrodist across network namespaces, with links cut and packets lost.

Each test builds its own network (tests/cluster/netns.py): the name server, the master, the workers
and the client each on a host of their own, in a private subnet, all sharing one key. Workers and
clients are given the name server's address only; they find the master through it. Every test prints
its figures (`pytest -s`) and appends them to $PYRODIST_NETNS_REPORT when that is set.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from .conftest import MASTER_PORT, MultiHost, log_of, report
from .netns import NetnsError

HOSTS = ("ns", "master", "w1", "w2", "w3", "client")
WORKERS = ("w1", "w2", "w3")
OUTAGE = 6.0
"""Seconds the master stays cut off in scenario 3: longer than its 3 s leases."""

Make = Callable[[Sequence[str]], MultiHost]
pytestmark = pytest.mark.slow


def reruns(cluster: MultiHost, start: int, tasks: int) -> tuple[int, list[list[tuple[float, str]]]]:
    """Executions beyond the first of the tasks x in [start, start + tasks), and each repeated task's runs.

    Every task must have run at least once.
    """
    runs = cluster.executions(start, start + tasks)
    assert sorted(runs) == list(range(start, start + tasks)), "some tasks never ran"
    repeated = [times for times in runs.values() if len(times) > 1]
    return sum(len(times) - 1 for times in repeated), repeated


def check_complete(result: dict[str, Any], tasks: int) -> None:
    """Every result arrived and is right, and the master recorded each task exactly once."""
    assert result["correct"], {k: v for k, v in result.items() if k != "finish_times"}
    assert result["records"] == tasks
    assert result["submitted_recorded"] == tasks
    assert result["done_recorded"] == tasks, "a task was recorded twice, or lost"
    assert result["failed_recorded"] == 0


def figures(result: dict[str, Any], **more: Any) -> dict[str, Any]:
    """The figures of a job worth printing."""
    keep = ("tasks", "seconds", "throughput", "by_worker", "connect_attempts")
    return {**{k: result[k] for k in keep}, **more}


def test_worker_link_cut_mid_job(multihost: Make) -> None:
    """Scenario 2: a worker's link goes down mid-job; its tasks run elsewhere; back, it rejoins."""
    cluster = multihost(HOSTS)
    cluster.start(WORKERS, lease_timeout=3)
    run = cluster.client("job", "--tasks", "3000", "--seconds", "0.002")
    run.progress(750)
    mark = len(cluster.master_log())
    cut = cluster.net.cut("w1")

    lost = cluster.wait_master_log(r"worker w1 lost: silent", timeout=30, after=mark)
    result = run.result(timeout=120)  # completes while w1 is still cut off
    check_complete(result, 3000)
    leases_expired = cluster.expired_leases(after=mark)
    assert leases_expired >= 1, "w1 held no task when its link was cut"
    re_executed, repeated = reruns(cluster, 0, 3000)  # w1 ran its tasks, but nobody heard of it: run again
    assert re_executed >= 1 and all(runs[-1][1] != "w1" for runs in repeated), repeated

    restored = cluster.net.restore("w1")
    cluster.wait_master_log(r"worker w1: ignored (\d+) stale", timeout=60, after=mark)
    cluster.wait_master_log(r"worker w1 joined", timeout=60, after=lost.end())
    rejoined = time.time()
    workers = cluster.client("broadcast").result(timeout=60)["results"]
    assert workers == {"w1": 49, "w2": 49, "w3": 49}, "w1 did not rejoin and run tasks again"
    ignored = sum(int(n) for n in re.findall(r"worker w1: ignored (\d+) stale", cluster.master_log()[mark:]))

    report("2 worker link cut", figures(
        result, leases_expired=leases_expired, re_executed=re_executed, stale_results_ignored=ignored,
        cut_to_recovery_s=round(max(runs[-1][0] for runs in repeated) - cut, 2),
        link_down_s=round(restored - cut, 2), restore_to_rejoin_s=round(rejoined - restored, 2),
    ))  # fmt: skip


def test_master_cut_off_for_seconds(multihost: Make) -> None:
    """Scenario 3: the master's host is cut off; workers and client carry on by themselves, nothing lost or doubled."""
    cluster = multihost(HOSTS)
    cluster.start(WORKERS, lease_timeout=3)
    run = cluster.client("job", "--tasks", "3000", "--seconds", "0.002")
    run.progress(750)
    mark = len(cluster.master_log())

    cut = cluster.net.cut("master")
    time.sleep(OUTAGE)  # a deliberate outage of OUTAGE seconds, not a wait for something
    restored = cluster.net.restore("master")
    result = run.result(timeout=150)

    check_complete(result, 3000)
    for name in WORKERS:  # silent past their leases: lost, then back by themselves
        cluster.wait_master_log(rf"worker {name} lost: silent", timeout=5, after=mark)
        cluster.wait_master_log(rf"worker {name} joined", timeout=60, after=mark)
    resumed = min(t for t in result["finish_times"] if t > restored)
    re_executed, _ = reruns(cluster, 0, 3000)
    report("3 master cut off", figures(
        result, leases_expired=cluster.expired_leases(after=mark), re_executed=re_executed,
        outage_s=round(restored - cut, 2), cut_to_recovery_s=round(resumed - cut, 2),
        restore_to_first_result_s=round(resumed - restored, 2),
    ))  # fmt: skip


def test_a_job_across_hosts_then_on_lossy_slow_links(multihost: Make) -> None:
    """Scenarios 1 and 4 on one network: a 3,000-task job across the hosts, found through the name server,
    every result correct; then 10% loss and 50 ms delay on every link, and 2,000 more tasks complete."""
    cluster = multihost(HOSTS)
    cluster.start(WORKERS, lease_timeout=10)
    master_uri = f"PYRO:pyrodist.master@{cluster.net.address('master')}:{MASTER_PORT}"
    assert master_uri in cluster.master_log()
    for name, worker in cluster.workers.items():  # given only the name server, each found the master there
        assert f"worker {name} connected to {master_uri}" in log_of(worker)

    clean = cluster.client("job", "--tasks", "3000", "--seconds", "0.001").result(timeout=120)

    check_complete(clean, 3000)
    assert set(clean["by_worker"]) == set(WORKERS), clean["by_worker"]
    re_executed, _ = reruns(cluster, 0, 3000)
    report("1 job across hosts", figures(
        clean, leases_expired=cluster.expired_leases(), re_executed=re_executed, cut_to_recovery_s=None
    ))  # fmt: skip

    how = cluster.net.impair(loss_percent=10, delay_ms=50)
    try:
        lossy = cluster.client("job", "--tasks", "2000", "--start", "3000", "--seconds", "0.001").result(timeout=150)
    finally:
        wire = cluster.net.clear_impairment()

    check_complete(lossy, 2000)
    print(
        f"\nthroughput: clean {clean['throughput']:,.0f} tasks/s (3000 tasks, {clean['seconds']:.2f} s); "
        f"10% loss + 50 ms delay {lossy['throughput']:,.0f} tasks/s (2000 tasks, {lossy['seconds']:.2f} s) "
        f"= {lossy['throughput'] / clean['throughput']:.1%} of clean [{how}]"
    )
    report("4 lossy slow links", figures(
        lossy, leases_expired=cluster.expired_leases(), re_executed=reruns(cluster, 3000, 2000)[0],
        clean_throughput=clean["throughput"], clean_seconds=clean["seconds"], impairment=how,
        wire_frames=wire or None, cut_to_recovery_s=None,
    ))  # fmt: skip


def test_callbacks_to_an_unreachable_client(multihost: Make) -> None:
    """Scenario 5: the master cannot reach the client back: on_result fails clearly, results still come."""
    cluster = multihost(("ns", "master", "w1", "w2", "client", "open"))
    # the master gives up connecting back after 2 s instead of the default 5 (nothing answers the dropped SYNs)
    cluster.start(("w1", "w2"), lease_timeout=10, master_env={"PYRODIST_CONNECT_TIMEOUT": "2"})
    try:
        cluster.net.refuse_inbound_tcp("client")  # like NAT or a personal firewall: it connects out, nobody in
    except NetnsError as exc:
        pytest.skip(f"this kernel cannot filter inbound connections with tc (cls_bpf): {exc}")

    blocked = cluster.client("callbacks", "--tasks", "300", "--timeout", "60").result(timeout=120)
    reachable = cluster.client("callbacks", "--tasks", "300", "--start", "300", host="open").result(timeout=120)

    assert reachable["callback_error"] is None and reachable["callbacks_received"] == 300  # the control
    error = blocked["callback_error"]
    assert error is not None, "on_result succeeded although the master cannot connect to the client"
    assert blocked["callback_error_type"] == "MasterRejected"
    assert "cannot call back" in error and cluster.net.address("client") in error, error
    assert "synchronous results still work" in error, error
    assert blocked["callback_seconds"] < 30
    assert blocked["futures_correct"] and reachable["futures_correct"]
    assert (blocked["synchronous_state"], blocked["synchronous_value"]) == ("done", 144)
    report("5 callbacks to an unreachable client", {
        "tasks": blocked["tasks"], "callback_error_s": blocked["callback_seconds"], "callback_error": error,
        "futures_correct": blocked["futures_correct"], "synchronous_value": blocked["synchronous_value"],
        "reachable_client_callbacks": reachable["callbacks_received"], "cut_to_recovery_s": None,
    })  # fmt: skip
