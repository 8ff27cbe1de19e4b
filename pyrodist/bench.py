"""`run_bench`: what a task costs in pyrodist, measured on a real cluster (behind `pyrodist bench`).

The steps, against a new `LocalCluster` (W workers, one slot each) or the running cluster `settings` name:

1. warm-up: a small `map` and a few sequential calls, so connections, worker children and imports exist;
2. latency: `LATENCY_CALLS` sequential `client.submit(inc, i).result()` round trips (median, p99);
3. throughput: N tasks through `client.map`, from the first submit to the last result in the client; the
   submit rate is N over the time `map` took to return. For a local master, its CPU time (utime + stime
   from /proc/<pid>/stat) is read before and after this step, and its peak memory (VmHWM) at the end.
4. with `compare`, after the cluster is stopped, in this process: `multiprocessing.Pool(W).map` of the
   same function with chunksize 1, and a raw Pyro4 call loop (one proxy, a no-op method); with a
   `store` too, the same steps on an in-memory local cluster, for the durable/in-memory ratio.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

from . import benchtasks, remote
from .client import Client
from .cluster import LocalCluster
from .config import Settings
from .errors import ConfigError
from .remote_servers import Server
from .texttable import format_table

log = logging.getLogger(__name__)

TASK_MODULE = "pyrodist.benchtasks"
"""The module the bench's workers must allow (`-I pyrodist.benchtasks`)."""
LATENCY_CALLS = 200
"""Sequential round trips the latency figures are taken from."""
WARMUP_TASKS = 200
WARMUP_CALLS = 20
RAW_RPC_MAX_CALLS = 5_000
"""At most this many calls in the raw Pyro4 loop (it is sequential, so N would take long)."""
RESULT_TIMEOUT = 60.0
"""Seconds a round trip may take; the throughput step also allows 10 ms per task on top."""


@dataclasses.dataclass(frozen=True)
class BenchResult:
    """The figures of one run: rates in tasks (or calls) per second, times in ms, memory in MB; None = not measured."""

    tasks: int
    workers: int
    payload: int
    local: bool
    throughput: float
    submit_rate: float
    latency_median_ms: float
    latency_p99_ms: float
    master_cpu_per_task_ms: float | None
    master_peak_mb: float | None
    pool_throughput: float | None
    raw_rpc_calls_per_s: float | None
    store: str | None
    memory_throughput: float | None
    cpus: int
    python: str
    platform: str

    @property
    def vs_pool(self) -> float | None:
        """pyrodist throughput / multiprocessing.Pool throughput."""
        return self.throughput / self.pool_throughput if self.pool_throughput else None

    @property
    def vs_raw_rpc(self) -> float | None:
        """pyrodist throughput / raw Pyro4 calls per second."""
        return self.throughput / self.raw_rpc_calls_per_s if self.raw_rpc_calls_per_s else None

    @property
    def vs_memory(self) -> float | None:
        """Throughput with the durable store / throughput of an in-memory master."""
        return self.throughput / self.memory_throughput if self.memory_throughput else None

    def as_dict(self) -> dict[str, Any]:
        """The figures and ratios as a JSON-ready dict."""
        ratios = {"vs_pool": self.vs_pool, "vs_raw_rpc": self.vs_raw_rpc, "vs_memory": self.vs_memory}
        return {**dataclasses.asdict(self), **ratios}


def run_bench(
    tasks: int = 10_000,
    workers: int = 2,
    payload: int = 0,
    store: str | None = None,
    compare: bool = False,
    settings: Settings | None = None,
) -> BenchResult:
    """Measure a new LocalCluster (or the running cluster settings point at) and return the figures."""
    if tasks < 1 or workers < 1 or payload < 0:
        raise ConfigError(f"bench needs tasks >= 1, workers >= 1, payload >= 0 (got {tasks}, {workers}, {payload})")
    if store is not None and settings is not None:
        raise ConfigError("--store applies to the local cluster the bench starts; start the running master with it")
    func: Callable[..., Any] = benchtasks.payload if payload else benchtasks.inc
    args: Sequence[Any] = [b"x" * payload] * tasks if payload else range(tasks)
    with ExitStack() as stack:
        master_pid: int | None = None
        if settings is None:
            cluster = LocalCluster(workers, imports=[TASK_MODULE], concurrency=1,
                                   master_args=["--store", store] if store is not None else [])  # fmt: skip
            log.info("bench: starting a local cluster with %d workers", workers)
            stack.enter_context(cluster)
            settings = cluster.settings
            master_pid = cluster.master.pid if cluster.master is not None else None
        client = stack.enter_context(Client(settings=settings))
        served_by = len(client.stats()["workers"])
        if not served_by:
            raise ConfigError(
                f"the master {settings.master_name!r} has no live workers; start some with -I {TASK_MODULE}"
            )
        log.info("bench: %d workers; warming up", served_by)
        client.gather(client.map(func, args[:WARMUP_TASKS], chunksize=1), RESULT_TIMEOUT)
        _latencies(client, WARMUP_CALLS)
        log.info("bench: %d sequential round trips", LATENCY_CALLS)
        latencies = _latencies(client, LATENCY_CALLS)
        log.info("bench: %d tasks through map", tasks)
        cpu_before = cpu_seconds(master_pid)
        start = time.perf_counter()
        futures = client.map(func, args, chunksize=1)  # a task per call, as Pool.map(chunksize=1) below
        submitted = time.perf_counter()
        client.gather(futures, RESULT_TIMEOUT + 0.01 * tasks)
        finished = time.perf_counter()
        cpu_after = cpu_seconds(master_pid)
        peak_mb = memory_mb(master_pid)[1]
    pool = raw_rpc = memory = None
    if compare:
        if store is not None:
            log.info("bench: the same on an in-memory master")
            memory = run_bench(tasks, workers, payload).throughput
        log.info("bench: baselines")
        pool = _pool_throughput(func, args, served_by)  # as many processes as workers served
        raw_rpc = _raw_rpc_calls_per_s(min(tasks, RAW_RPC_MAX_CALLS), settings)
    cpu_ms = (cpu_after - cpu_before) * 1000 / tasks if cpu_before is not None and cpu_after is not None else None
    return BenchResult(
        tasks=tasks, workers=served_by, payload=payload, local=master_pid is not None,
        throughput=tasks / (finished - start), submit_rate=tasks / (submitted - start),
        latency_median_ms=statistics.median(latencies) * 1000, latency_p99_ms=_percentile(latencies, 99) * 1000,
        master_cpu_per_task_ms=cpu_ms, master_peak_mb=peak_mb, pool_throughput=pool, raw_rpc_calls_per_s=raw_rpc,
        store=store, memory_throughput=memory,
        cpus=os.cpu_count() or 0, python=platform.python_version(), platform=platform.platform(),
    )  # fmt: skip


def format_result(result: BenchResult) -> str:
    """The figures as an aligned table, with the baselines and ratios when measured, and the machine."""
    what = f"payload(b'x' * {result.payload:,})" if result.payload else "inc(x)"
    where = "a new local cluster" if result.local else "a running cluster"
    if result.store is not None:
        where += f" with --store {result.store}"
    rows = [
        ("throughput (map, submit to last result)", format_number(result.throughput), "tasks/s", ""),
        ("submit rate (map returned)", format_number(result.submit_rate), "tasks/s", ""),
        (f"latency median ({LATENCY_CALLS} round trips)", format_number(result.latency_median_ms), "ms", ""),
        (f"latency p99 ({LATENCY_CALLS} round trips)", format_number(result.latency_p99_ms), "ms", ""),
        ("master CPU per task", format_number(result.master_cpu_per_task_ms), "ms", ""),
        ("master peak memory (VmHWM)", format_number(result.master_peak_mb), "MB", ""),
    ]
    if result.memory_throughput is not None:
        rows.append(("the same with an in-memory master", format_number(result.memory_throughput),
                     "tasks/s", f"durable / in-memory = {format_number(result.vs_memory)}"))  # fmt: skip
    if result.pool_throughput is not None:
        rows.append((f"baseline multiprocessing.Pool({result.workers}).map", format_number(result.pool_throughput),
                     "tasks/s", f"pyrodist / baseline = {format_number(result.vs_pool)}"))  # fmt: skip
    if result.raw_rpc_calls_per_s is not None:
        rows.append(("baseline raw Pyro4 call loop (json)", format_number(result.raw_rpc_calls_per_s),
                     "calls/s", f"pyrodist / baseline = {format_number(result.vs_raw_rpc)}"))  # fmt: skip
    workers = f"{result.workers} worker{'s' if result.workers != 1 else ''}"
    lines = [f"pyrodist bench: {result.tasks:,} x {what} on {where}, {workers} x 1 slot", ""]
    lines += format_table(rows, "  {:<}  {:>} {:<}  {}")
    lines += ["", f"machine: {result.cpus} CPUs, Python {result.python}, {result.platform}"]
    return "\n".join(lines)


def _percentile(samples: Sequence[float], q: float) -> float:
    """The nearest-rank q-th percentile: one of the samples, never interpolated."""
    ordered = sorted(samples)
    return ordered[min(len(ordered), max(1, math.ceil(q / 100 * len(ordered)))) - 1]


def format_number(value: float | None) -> str:
    """A figure for a table: thousands separated, three significant digits below 1, "n/a" for None."""
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def _latencies(client: Client, calls: int) -> list[float]:
    samples = []
    for i in range(calls):
        start = time.perf_counter()
        client.submit(benchtasks.inc, i).result(RESULT_TIMEOUT)
        samples.append(time.perf_counter() - start)
    return samples


def proc_lines(pid: int, name: str) -> list[str] | None:
    """The lines of /proc/<pid>/<name>, or None (logged) where there is no such file."""
    try:
        with open(f"/proc/{pid}/{name}", encoding="ascii") as f:
            return f.read().splitlines()
    except OSError as exc:  # not Linux, or the process is gone
        log.warning("bench: cannot read /proc/%d/%s: %s", pid, name, exc)
        return None


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a process, in seconds."""
    lines = None if pid is None else proc_lines(pid, "stat")
    if not lines:
        return None
    fields = lines[0].rsplit(")", 1)[1].split()  # the command name in (...) may hold spaces; field 3 follows it
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # fields 14 and 15 of proc(5)


def memory_mb(pid: int | None) -> tuple[float | None, float | None]:
    """A process's resident memory now and at its peak (VmRSS, VmHWM), in MB."""
    found: dict[str, float] = {}
    for line in (None if pid is None else proc_lines(pid, "status")) or []:
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(rest.split()[0]) / 1024  # kB
    return found.get("VmRSS"), found.get("VmHWM")


def _pool_throughput(func: Callable[..., Any], args: Sequence[Any], workers: int) -> float:
    """Tasks per second of `multiprocessing.Pool(workers).map(func, args, chunksize=1)`, after a warm-up."""
    with multiprocessing.Pool(workers) as pool:
        pool.map(func, args[:WARMUP_TASKS], chunksize=1)
        start = time.perf_counter()
        pool.map(func, args, chunksize=1)
        return len(args) / (time.perf_counter() - start)


@remote.expose
class NoopTarget:
    """The raw Pyro4 baseline's remote object (Pyro4 refuses to expose a name starting with _)."""

    def noop(self) -> None:
        """Do nothing."""


def _raw_rpc_calls_per_s(calls: int, settings: Settings) -> float:
    """Sequential no-op calls per second through one json Pyro4 proxy to a daemon in a thread of this process.

    This measures the transport itself, as pyrodist configures it for these settings (`remote_servers.Server`,
    `remote.proxy`: serializer, key, TLS), with no pyrodist logic on either side: the ceiling of one Pyro4
    conversation on this machine.
    """
    server = Server(settings)
    try:
        uri = server.register(NoopTarget())
        server.start()
        with remote.proxy(uri, settings) as proxy:
            proxy.noop()  # connect before the clock starts
            start = time.perf_counter()
            for _ in range(calls):
                proxy.noop()
            return calls / (time.perf_counter() - start)
    finally:
        server.close()
