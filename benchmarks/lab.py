"""The benchmark lab's scenarios (`python -m benchmarks --idle/--callbacks/--queue/--scaling/--targets`).

They talk to the master through `MasterAPI` (a `PyroConnection`) like any other client, beside local
clusters of real processes (`LocalCluster`).

- idle: N idle workers connected to a new master: its CPU share, and how soon a task submitted then starts.
  The workers are `EmulatedWorker` loops, threads of this process doing on the wire what an idle
  `pyrodist worker` does (a long-poll fetch at a time, a heartbeat every 4 heartbeat periods): real
  ones cost two processes each, and the master sees the same connections and calls either way.
- callbacks: how fast `on_result` callbacks arrive compared with the results themselves.
- queue: N tasks submitted to a master without workers: the time, and the master's memory then.
- scaling: the master's CPU per task (submit, fetch, report, collect) with 10 ... 1,000,000 tasks
  waiting in its queue at a lower priority, through emulated workers (no task code runs).
- targets: all of it and the throughput run, each figure next to the target issue 4 set.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pyrodist import benchtasks, values
from pyrodist.bench import RESULT_TIMEOUT, WARMUP_TASKS, cpu_seconds, format_number, memory_mb, run_bench
from pyrodist.client import Client
from pyrodist.cluster import LocalCluster
from pyrodist.config import Settings
from pyrodist.remote_connection import PyroConnection
from pyrodist.texttable import format_table
from pyrodist.wire import Outcome, WorkerStatus

log = logging.getLogger(__name__)

FETCH_WAIT = 2.0
"""Longest long-poll of an emulated worker, as `pyrodist worker` waits (shorter when leases are shorter)."""
IDLE_HEARTBEAT_FACTOR = 4
"""An idle `pyrodist worker` heartbeats this many times less often than a busy one; so does an emulated one."""

START_SAMPLES = 20
"""Tasks whose start delay is measured on the idle cluster, one at a time."""
SCALING_DEPTHS = (10, 1_000, 100_000, 1_000_000)
SCALING_TASKS = 20_000
"""Tasks measured at each queue depth."""
FILLER_PRIORITY = -1
"""Priority of the tasks that only fill the queue in the scaling run (the measured ones have 0)."""
DONE = values.encode_value(None)


@dataclasses.dataclass
class Figures:
    """One scenario's results: named figures with units, printed as a table."""

    title: str
    rows: list[tuple[str, float | None, str]] = dataclasses.field(default_factory=list)

    def add(self, label: str, value: float | None, unit: str) -> None:
        """Add one figure."""
        self.rows.append((label, value, unit))

    def get(self, prefix: str) -> float | None:
        """The value of the first figure whose label starts with prefix."""
        return next((value for label, value, _ in self.rows if label.startswith(prefix)), None)

    def as_dict(self) -> dict[str, Any]:
        """The figures as a JSON-ready dict."""
        figures = [{"label": label, "value": value, "unit": unit} for label, value, unit in self.rows]
        return {"title": self.title, "figures": figures}

    def format(self) -> str:
        """An aligned table."""
        rows = [
            (label, f"{value:,}" if isinstance(value, int) else format_number(value), unit)
            for label, value, unit in self.rows
        ]
        return "\n".join([self.title, "", *format_table(rows, "  {:<}  {:>} {}")])


class Quota:
    """How many more tasks emulated workers may fetch (so that they take the measured tasks and no others)."""

    def __init__(self) -> None:
        self._left = 0
        self._cond = threading.Condition()

    def allow(self, tasks: int) -> None:
        """Let the workers fetch this many more."""
        with self._cond:
            self._left += tasks
            self._cond.notify_all()

    def take(self, most: int, stop: threading.Event) -> int:
        """Up to most, waiting while none is allowed (0 once stop is set)."""
        with self._cond:
            while not self._left and not stop.is_set():
                self._cond.wait(0.1)
            granted = min(most, self._left)
            self._left -= granted
            return granted


class EmulatedWorker(threading.Thread):
    """An idle worker's conversation with the master, in a thread: long-poll fetches and idle heartbeats.

    Tasks it gets are reported done at once: no code runs. With a quota, it fetches only what the quota allows.
    """

    def __init__(self, settings: Settings, worker_id: str, batch: int = 1, quota: Quota | None = None) -> None:
        super().__init__(name=worker_id, daemon=True)
        self.settings = settings
        self.worker_id = worker_id
        self.batch = batch
        self.quota = quota
        self.received: dict[str, float] = {}  # task id -> when its fetch returned (perf_counter)
        self.stop = threading.Event()
        self.connected = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        """Fetch, report and heartbeat until stopped."""
        try:
            with ExitStack() as stack:
                fetcher = PyroConnection(self.settings)
                stack.callback(fetcher.close)
                reporter = PyroConnection(self.settings)  # as a worker: two connections
                stack.callback(reporter.close)
                idle = WorkerStatus(running=[], prefetched=[])
                wait = min(FETCH_WAIT, reporter.heartbeat(self.worker_id, idle).lease_timeout / 3)
                beat_every, last_beat = self.settings.heartbeat * IDLE_HEARTBEAT_FACTOR, time.monotonic()
                self.connected.set()
                while not self.stop.is_set():
                    want = self.batch if self.quota is None else self.quota.take(self.batch, self.stop)
                    if not want:
                        break
                    tasks = fetcher.fetch(self.worker_id, want, wait)
                    now = time.perf_counter()
                    self.received.update((t.id, now) for t in tasks)
                    if self.quota is not None and len(tasks) < want:
                        self.quota.allow(want - len(tasks))
                    if tasks:
                        reporter.report(self.worker_id, [Outcome(t.id, t.token, True, result=DONE) for t in tasks])
                    if time.monotonic() - last_beat >= beat_every:
                        reporter.heartbeat(self.worker_id, idle)
                        last_beat = time.monotonic()
                reporter.heartbeat(self.worker_id, WorkerStatus(state="stopped"))
        except BaseException as exc:  # noqa: BLE001 - kept for the bench to report, never lost
            self.error = exc
            self.connected.set()


def _start_emulated(settings: Settings, count: int, batch: int = 1, quota: Quota | None = None) -> list[EmulatedWorker]:
    workers = [EmulatedWorker(settings, f"emulated-{i}", batch, quota) for i in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.connected.wait(60)
        if worker.error is not None:
            raise worker.error
    return workers


def _stop_emulated(workers: Sequence[EmulatedWorker]) -> None:
    for worker in workers:
        worker.stop.set()
    for worker in workers:
        worker.join(FETCH_WAIT + 5)


def _master_pid(cluster: LocalCluster) -> int | None:
    return cluster.master.pid if cluster.master is not None else None


def run_idle(workers: int = 200, seconds: float = 10.0) -> Figures:
    """Master CPU with `workers` idle workers connected, and the start delay of a task submitted then."""
    figures = Figures(f"{workers} idle workers (emulated: 2 connections each) on a new local master")
    with LocalCluster(0) as cluster, Client(settings=cluster.settings) as client:
        emulated = _start_emulated(cluster.settings, workers)
        try:
            pid = _master_pid(cluster)
            figures.add("workers the master lists", len(client.stats()["workers"]), "")
            cpu_before, start = cpu_seconds(pid), time.monotonic()
            time.sleep(seconds)  # the measurement itself: the master's CPU over this interval
            cpu_after, elapsed = cpu_seconds(pid), time.monotonic() - start
            if cpu_before is not None and cpu_after is not None:
                figures.add(f"master CPU over {seconds:g} s", 100 * (cpu_after - cpu_before) / elapsed, "% of one core")
            delays = []
            for i in range(START_SAMPLES):
                submitted = time.perf_counter()
                future = client.submit(benchtasks.inc, i)
                future.result(RESULT_TIMEOUT)
                started = next(w.received[future.task_id] for w in emulated if future.task_id in w.received)
                delays.append((started - submitted) * 1000)
            figures.add(f"task start delay, median of {START_SAMPLES}", statistics.median(delays), "ms")
            figures.add(f"task start delay, worst of {START_SAMPLES}", max(delays), "ms")
        finally:
            _stop_emulated(emulated)
    return figures


def run_callbacks(tasks: int = 20_000, workers: int = 2) -> Figures:
    """Results per second through map, and on_result callbacks per second in the same run."""
    figures = Figures(f"on_result callbacks for {tasks:,} x inc(x), {workers} workers x 1 slot")
    with LocalCluster(workers, imports=[benchtasks.__name__]) as cluster, Client(settings=cluster.settings) as client:
        client.gather(client.map(benchtasks.inc, range(WARMUP_TASKS), chunksize=1), RESULT_TIMEOUT)
        arrived = threading.Semaphore(0)
        client.on_result(lambda record: arrived.release())
        start = time.perf_counter()
        client.gather(client.map(benchtasks.inc, range(tasks), chunksize=1), RESULT_TIMEOUT + 0.01 * tasks)
        results_done = time.perf_counter()
        got = sum(arrived.acquire(timeout=RESULT_TIMEOUT) for _ in range(tasks))
        callbacks_done = time.perf_counter()
    figures.add("results (map, submit to last result)", tasks / (results_done - start), "tasks/s")
    figures.add("callbacks received", got, f"of {tasks:,}")
    figures.add("callbacks (submit to last callback)", got / (callbacks_done - start), "callbacks/s")
    figures.add("last callback after the last result", (callbacks_done - results_done) * 1000, "ms")
    return figures


def run_queue(tasks: int = 1_000_000, store: str | None = None) -> Figures:
    """Submit `tasks` to a master with no workers: how long it takes, and the master's memory then."""
    where = f"--store {store}" if store else "in-memory"
    figures = Figures(f"{tasks:,} tasks submitted to a master with no workers ({where})")
    args = ["--max-pending", str(tasks + 1)] + (["--store", store] if store else [])
    with LocalCluster(0, master_args=args) as cluster, Client(settings=cluster.settings) as client:
        start = time.perf_counter()
        futures = client.map(benchtasks.inc, range(tasks), chunksize=1)
        took = time.perf_counter() - start
        pending = client.stats()["counts"]["pending"]
        rss, peak = memory_mb(_master_pid(cluster))
        del futures
    figures.add("submit time (map returned)", took, "s")
    figures.add("submit rate", tasks / took, "tasks/s")
    figures.add("tasks pending at the master", pending, "")
    figures.add("master memory (VmRSS)", rss, "MB")
    figures.add("master peak memory (VmHWM)", peak, "MB")
    return figures


def run_scaling(
    depths: Sequence[int] = SCALING_DEPTHS, tasks: int = SCALING_TASKS, store: str | None = None
) -> Figures:
    """The master's CPU per task with `depth` tasks waiting in its queue, for each depth."""
    figures = Figures(f"master CPU per task ({tasks:,} tasks through 2 emulated workers) by queue depth")
    args = ["--max-pending", str(max(depths) + tasks + 1)] + (["--store", store] if store else [])
    quota = Quota()
    with LocalCluster(0, master_args=args) as cluster, Client(settings=cluster.settings) as client:
        fillers = client.options(priority=FILLER_PRIORITY)
        emulated = _start_emulated(cluster.settings, 2, batch=100, quota=quota)
        try:
            queued = 0
            for depth in sorted(depths):
                fillers.map(benchtasks.inc, range(depth - queued), chunksize=1)  # never run: no worker may reach them
                queued = depth
                before = cpu_seconds(_master_pid(cluster))
                # All measured tasks wait ahead of the fillers before the workers may take exactly that many.
                futures = client.map(benchtasks.inc, range(tasks), chunksize=1)
                quota.allow(tasks)
                client.gather(futures, RESULT_TIMEOUT + 0.01 * tasks)
                after = cpu_seconds(_master_pid(cluster))
                cost = None if before is None or after is None else (after - before) * 1e6 / tasks
                figures.add(f"{depth:>9,} tasks queued", cost, "us/task")
        finally:
            _stop_emulated(emulated)
    return figures


@dataclasses.dataclass(frozen=True)
class Target:
    """One of issue 4's targets and what this machine measured for it."""

    what: str
    goal: str
    value: float | None
    unit: str
    met: bool | None  # None: not measured here


def run_targets(tasks: int = 20_000, queue: int = 1_000_000) -> list[Target]:
    """Every scenario, each figure next to its target (the durable stores live in a temporary folder)."""
    with tempfile.TemporaryDirectory(prefix="pyrodist-bench-") as folder:
        memory = run_bench(tasks, compare=True)
        durable = run_bench(tasks, store=str(Path(folder) / "throughput.db"))
        idle_two, idle_many = run_idle(2, 5.0), run_idle(200, 10.0)
        callbacks = run_callbacks(tasks)
        queued = run_queue(queue)
        queued_durable = run_queue(queue, str(Path(folder) / "queue.db"))
        scaling = run_scaling()
    shallow, deep = scaling.rows[0][1], scaling.rows[-1][1]
    results, calls = callbacks.get("results"), callbacks.get("callbacks (")
    checks: list[tuple[str, str, float | None, str, Callable[[float], bool]]] = [
        ("throughput, in-memory store", ">= 20,000", memory.throughput, "tasks/s", lambda v: v >= 20_000),
        ("throughput, --store", ">= 10,000", durable.throughput, "tasks/s", lambda v: v >= 10_000),
        ("round trip, median", "<= 1 ms", memory.latency_median_ms, "ms", lambda v: v <= 1.0),
        ("round trip, p99", "<= 3 ms", memory.latency_p99_ms, "ms", lambda v: v <= 3.0),
        ("task start, idle cluster of 2 workers, median", "<= 1 ms", idle_two.get("task start delay, m"), "ms",
         lambda v: v <= 1.0),
        (f"submit {queue:,} tasks, in-memory", "<= 60 s", queued.get("submit time"), "s", lambda v: v <= 60),
        (f"master RSS, {queue:,} queued, in-memory", "<= 300 MB", queued.get("master memory"), "MB",
         lambda v: v <= 300),
        (f"submit {queue:,} tasks, --store", "<= 60 s", queued_durable.get("submit time"), "s", lambda v: v <= 60),
        (f"master peak RSS, {queue:,} queued, --store", "< 150 MB", queued_durable.get("master peak memory"), "MB",
         lambda v: v < 150),
        ("master CPU, 200 idle workers", "< 5 %", idle_many.get("master CPU"), "% of one core", lambda v: v < 5),
        ("task start, 200 idle workers, worst", "<= 10 ms", idle_many.get("task start delay, w"), "ms",
         lambda v: v <= 10),
        ("callbacks/s over results/s", "~ 1", calls / results if calls and results else None, "", lambda v: v >= 0.9),
        ("master CPU per task, 1,000,000 over 10 queued", "~ 1 (flat)", deep / shallow if deep and shallow else None,
         "", lambda v: v <= 1.5),
    ]  # fmt: skip
    targets = [Target(what, goal, value, unit, None if value is None else ok(value))
               for what, goal, value, unit, ok in checks]  # fmt: skip
    return [
        *targets,
        Target("baseline: multiprocessing.Pool(2).map", "", memory.pool_throughput, "tasks/s", None),
        Target("baseline: raw Pyro4 call loop", "", memory.raw_rpc_calls_per_s, "calls/s", None),
    ]


def format_targets(targets: Sequence[Target]) -> str:
    """The targets as an aligned table: what, goal, measured, met."""
    verdicts: dict[bool | None, str] = {True: "met", False: "MISSED", None: ""}
    rows = [(t.what, t.goal, f"{format_number(t.value)} {t.unit}".strip(), verdicts[t.met]) for t in targets]
    title = "python -m benchmarks --targets: issue 4's targets on this machine"
    return "\n".join([title, "", *format_table(rows, "  {:<}  {:<}  {:>}  {}")])
