"""Fault injection: workers SIGKILLed at random and restarted throughout a job, the master SIGKILLed once
and restarted on its store. Nothing may be lost, recorded twice, or left hanging.

Each run prints its figures (pytest -n0 -s shows them; PYRODIST_FAULT_REPORT=FILE appends them as JSON lines).
The lease rule behind "never twice while its worker lives" (heartbeats renew leases, silence loses them) is
shown in-process first, over many lease periods of the master's clock and without sleeps; the real runs add
what needs processes: SIGKILLed workers whose children outlive them, a master killed and restarted on its
store while tasks run (their leases held over until their workers reconnect).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import tasks
from tests.conftest import (
    Cluster,
    InProcess,
    Processes,
    free_port,
    port_open,
    start_linked_worker,
    started_pids,
    wait_until,
)

WORKERS = 4
LEASE_TIMEOUT = 2.0
HEARTBEAT = 0.4


@dataclass
class Chaos:
    """Kills workers at random (and the master once) while a job runs; remembers what it killed and when."""

    procs: Processes
    cluster: Cluster
    store: str
    rng: random.Random
    master: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    worker_kills: dict[int, float] = field(default_factory=dict)  # worker pid -> when it was killed
    master_kills: int = 0

    def start_worker(self) -> None:
        """One more worker."""
        self.workers.append(self.cluster.start_worker("--heartbeat", str(HEARTBEAT)))

    def kill_a_worker(self) -> None:
        """SIGKILL a random live worker and start another in its place."""
        victim = self.rng.choice([w for w in self.workers if w.poll() is None])
        victim.send_signal(signal.SIGKILL)
        self.worker_kills[victim.pid] = time.time()
        victim.wait(timeout=10)
        self.workers.remove(victim)
        self.start_worker()

    def kill_the_master(self) -> None:
        """SIGKILL the master, then start it again on the same store."""
        self.master.send_signal(signal.SIGKILL)
        self.master.wait(timeout=10)
        self.master_kills += 1
        self.master = start_master(self.procs, self.cluster, self.store)

    def run(self, progress: Any, stop: threading.Event, total: int) -> None:
        """Kill a worker every 0.5-1.5 s until stop; the master once, when a third of the job is done."""
        while not stop.wait(self.rng.uniform(0.5, 1.5)):
            if self.master_kills == 0 and progress() >= total // 3:
                self.kill_the_master()
            else:
                self.kill_a_worker()


def start_master(procs: Processes, cluster: Cluster, store: str) -> subprocess.Popen[bytes]:
    """A master on the store with short leases."""
    return procs.start("master", *cluster.ns_args, "--lease-timeout", str(LEASE_TIMEOUT), "--store", store)


def read_runs(log_dir: Path) -> list[tuple[int, int, float]]:
    """Every execution the tasks logged: (x, worker pid, start time)."""
    runs = []
    for path in log_dir.glob("runs-*.log"):
        for line in path.read_text().splitlines():
            x, pid, started = line.split()
            runs.append((int(x), int(pid), float(started)))
    return runs


def run_job(tmp_path: Path, n_tasks: int, seconds: float, seed: int) -> dict[str, Any]:
    """The whole fault-injection run; returns its figures after checking them."""
    log_dir = tmp_path / "runs"
    log_dir.mkdir()
    store = str(tmp_path / "state.db")
    procs = Processes(tmp_path)
    stop = threading.Event()
    try:
        port = free_port()
        procs.start("nameserver", "--host", "127.0.0.1", "--port", str(port))
        wait_until(lambda: port_open(port), what="the name server")
        cluster = Cluster(procs, port)
        chaos = Chaos(procs, cluster, store, random.Random(seed), start_master(procs, cluster, store))
        wait_until(cluster.master_up, timeout=30, what="the master")
        for _ in range(WORKERS):
            chaos.start_worker()
        wait_until(lambda: len(cluster.live_workers()) >= WORKERS, timeout=30, what="the workers")
        started = time.monotonic()
        with cluster.client() as client:
            # Workers die every second here: a task may be unlucky more than the default 3 times.
            futures = client.options(max_attempts=20).map(
                tasks.logged_square, [str(log_dir)] * n_tasks, range(n_tasks), [seconds] * n_tasks
            )
            done_count = lambda: sum(f.done() for f in futures)  # noqa: E731 - a tiny probe for the chaos thread
            killer = threading.Thread(target=chaos.run, args=(done_count, stop, n_tasks), daemon=True)
            killer.start()
            finished, hung = concurrent.futures.wait(futures, timeout=100)
            stop.set()
            killer.join(timeout=30)
            elapsed = time.monotonic() - started
            results = [f.result() for f in finished if f.exception() is None]
            failed = [f.exception() for f in finished if f.exception() is not None]
            correct = sorted(results) == [x * x for x in range(n_tasks)]
        chaos.master.send_signal(signal.SIGTERM)
        assert chaos.master.wait(timeout=20) == 0
    finally:
        stop.set()
        procs.stop_all()

    with sqlite3.connect(store) as db:
        recorded = dict(db.execute("SELECT state, count(*) FROM tasks GROUP BY state").fetchall())
    runs = read_runs(log_dir)
    by_task: dict[int, list[tuple[float, int]]] = {}
    for x, pid, when in runs:
        by_task.setdefault(x, []).append((when, pid))
    twice_while_alive = []
    recovery = 0.0
    for x, executions in by_task.items():
        executions.sort()
        for (_, first_pid), (second_start, _) in itertools.pairwise(executions):
            if first_pid == 1:  # run by a child whose worker had died already: no lease was held by a live worker
                continue
            killed_at = chaos.worker_kills.get(first_pid)
            if killed_at is None or killed_at > second_start:
                twice_while_alive.append(x)  # ran again while the first worker lived
            else:
                recovery = max(recovery, second_start - killed_at)
    figures = {
        "tasks": n_tasks, "task_seconds": seconds, "seconds": round(elapsed, 2),
        "worker_kills": len(chaos.worker_kills), "master_kills": chaos.master_kills,
        "lost": n_tasks - len(results), "hung": len(hung), "failed": len(failed),
        "recorded_done": recorded.get("done", 0), "recorded_other": {k: v for k, v in recorded.items() if k != "done"},
        "executions": len(runs), "extra_executions": len(runs) - len(by_task),
        "ran_twice_while_worker_alive": len(twice_while_alive), "longest_recovery_s": round(recovery, 2),
    }  # fmt: skip
    print("\nfault injection:", json.dumps(figures))
    if report := os.environ.get("PYRODIST_FAULT_REPORT"):
        with open(report, "a") as out:
            out.write(json.dumps(figures) + "\n")

    assert not hung, f"{len(hung)} futures never completed"
    assert not failed, f"{len(failed)} tasks failed, e.g. {failed[0]}"
    assert correct, "some results are wrong or missing"
    assert recorded == {"done": n_tasks}, f"the store should hold exactly one result per task: {recorded}"
    assert set(by_task) == set(range(n_tasks))
    assert not twice_while_alive, f"tasks executed twice while their first worker lived: {twice_while_alive[:10]}"
    assert chaos.master_kills == 1 and len(chaos.worker_kills) >= 3
    return figures


def test_tasks_longer_than_a_heartbeat_never_run_twice_while_their_worker_lives(
    inproc: InProcess, tmp_path: Path
) -> None:
    """Four long tasks on four workers; two workers die. Over eight lease periods of the master's clock, the
    tasks of the living two are never handed out again (their heartbeats renew the leases) though idle workers
    keep asking; those of the dead two run once more, elsewhere."""
    client = inproc.client()
    workers = {name: start_linked_worker(inproc, worker_id=name, grace=0) for name in ("w0", "w1", "w2", "w3")}
    logs = [tmp_path / f"runs-{i}" for i in range(4)]
    release = tmp_path / "release"
    futures = client.map(tasks.hold, map(str, logs), [str(release)] * 4, range(4))
    wait_until(lambda: all(started_pids(log) for log in logs), what="the four tasks to start")
    wait_until(lambda: sum(w["running"] for w in client.stats()["workers"]) == 4, what="heartbeats saying so")
    holder = {r["worker"]: i for i, r in enumerate(client.lookup([f.task_id for f in futures])) if r is not None}
    assert sorted(holder) == ["w0", "w1", "w2", "w3"]  # one each: a one-slot worker holds one task at most

    for name in ("w0", "w1"):  # they die: silent from now on, their children killed
        thread, link = workers[name]
        link.cut()
        thread.worker.abort()
        thread.thread.join(15)
        assert not thread.thread.is_alive()
    inproc.start_worker(worker_id="r0", grace=0)
    inproc.start_worker(worker_id="r1", grace=0)
    alive = {"w2", "w3", "r0", "r1"}

    def heard_from_the_living_since_the_clock_moved() -> bool:
        seen = {w["id"]: w["last_seen"] for w in client.stats()["workers"]}
        return all(seen.get(name) == 0 for name in alive)

    lease = inproc.settings.lease_timeout
    for _ in range(10):  # 8 lease periods; between two rounds only heartbeats keep a lease
        inproc.clock.advance(0.8 * lease)
        wait_until(heard_from_the_living_since_the_clock_moved, what="the living workers to call")
        inproc.reap()
    records = client.lookup([f.task_id for f in futures])
    for name in ("w2", "w3"):
        record = records[holder[name]]
        assert record is not None and record["state"] == "running" and record["worker"] == name
        assert record["attempts"] == 1 and record["lost"] == 0 and len(started_pids(logs[holder[name]])) == 1
    wait_until(lambda: all(len(started_pids(logs[holder[name]])) == 2 for name in ("w0", "w1")),
               what="the dead workers' tasks to start again")  # fmt: skip
    records = client.lookup([f.task_id for f in futures])
    for name in ("w0", "w1"):
        record = records[holder[name]]
        assert record is not None and record["state"] == "running" and record["worker"] in ("r0", "r1")
        assert record["attempts"] == 2 and record["lost"] == 1
    assert sorted(w["id"] for w in client.stats()["lost_workers"]) == ["w0", "w1"]

    release.touch()
    assert client.gather(futures, timeout=30) == [0, 1, 2, 3]
    lost = {holder["w0"], holder["w1"]}
    assert [len(started_pids(log)) for log in logs] == [2 if i in lost else 1 for i in range(4)]


@pytest.mark.timeout(200)
def test_short_and_long_tasks_survive_killed_workers_and_a_killed_master(tmp_path: Path) -> None:
    """Two jobs at once, each on its own cluster: 3,000 short tasks, and 24 tasks longer than a heartbeat.

    The long job (6 rounds of 1 s tasks on 4 workers: time for the master kill and >= 3 worker kills, one
    a second) mostly waits on its tasks, so the two share the machine.
    """
    jobs = {"short": (3000, 0.004, 7), "long": (24, 2 * HEARTBEAT + 0.2, 11)}
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        running = {}
        for name, (n_tasks, seconds, seed) in jobs.items():
            (tmp_path / name).mkdir()
            running[name] = pool.submit(run_job, tmp_path / name, n_tasks, seconds, seed)
        for future in running.values():
            future.result()
