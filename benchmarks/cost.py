"""What one round trip and one task cost each process: `python benchmarks/cost.py [--round-trips N] [--tasks N]`.

On a 2-worker `LocalCluster` from the repository's root (any version: it uses only `LocalCluster` and
`tests.tasks`, so two clones can be measured side by side): N sequential `submit(inc).result()` calls (p50,
and the CPU of the master, the workers with their children, and this client per call, from /proc), then
`map(inc, range(N))` (tasks/s and CPU per task).
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import time

from pyrodist import Client
from pyrodist.cluster import LocalCluster

INC = "tests.tasks:inc"
# A task per call: since map packs calls by itself (its chunksize defaults to None), chunksize is calls per task;
# before, it was calls per submit, and the default gave a task per call.
PER_TASK = {"chunksize": 1} if inspect.signature(Client.map).parameters["chunksize"].default is None else {}


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User and system CPU of a process (and, with children, of its child processes too)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115 - read once, closed by GC
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    if children:
        with open(f"/proc/{pid}/task/{pid}/children") as listed:
            total += sum(cpu_seconds(int(child), True) for child in listed.read().split())
    return total


def main() -> None:
    """Measure, print two lines."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument("--tasks", type=int, default=20_000)
    args = parser.parse_args()
    with LocalCluster(workers=2, imports=["tests.tasks"]) as cluster, cluster.client() as client:
        master, workers = cluster.master, cluster.workers
        assert master is not None

        def sample() -> tuple[float, float, float, float]:
            spent = sum(cpu_seconds(w.pid, True) for w in workers)
            return cpu_seconds(master.pid), spent, time.process_time(), time.perf_counter()

        client.gather(client.map(INC, range(2000), **PER_TASK), timeout=60)  # warm: connections, children, imports
        before, times = sample(), []
        for i in range(args.round_trips):
            started = time.perf_counter()
            client.submit(INC, i).result(timeout=30)
            times.append(time.perf_counter() - started)
        after = sample()
        us = [round((a - b) / args.round_trips * 1e6) for a, b in zip(after[:3], before[:3], strict=True)]
        print(f"round trip: p50 {statistics.median(times) * 1000:.3f} ms; CPU per round trip: master {us[0]} us, "
              f"workers {us[1]} us, client {us[2]} us")  # fmt: skip
        before = sample()
        client.gather(client.map(INC, range(args.tasks), **PER_TASK), timeout=600)
        after = sample()
        per_task = [round((a - b) / args.tasks * 1e6, 1) for a, b in zip(after[:3], before[:3], strict=True)]
        print(f"map: {args.tasks / (after[3] - before[3]):,.0f} tasks/s; CPU per task: master {per_task[0]} us, "
              f"workers {per_task[1]} us, client {per_task[2]} us")  # fmt: skip


if __name__ == "__main__":
    main()
