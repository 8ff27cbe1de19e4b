"""Tiny calls through the executor and the client: `python benchmarks/dropin.py [--calls N] [--rounds R]`.

On a 2-worker `LocalCluster`, next to `concurrent.futures.ProcessPoolExecutor(2)` in the same run, R rounds
each (medians printed): N no-op calls through `ClusterExecutor.map(fn, xs, chunksize=1000)` and
`ProcessPoolExecutor.map` with the same chunksize, then through `Client.map` with its default (tiny calls
packed by themselves) and with `chunksize=1` (a task per call, what `Client.map` did before).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import time
from collections.abc import Callable

from pyrodist import ClusterExecutor
from pyrodist import benchtasks as tasks
from pyrodist.cluster import LocalCluster


def timed(run: Callable[[], object]) -> float:
    """Seconds run takes."""
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    """Measure, print one line per comparison."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    xs = range(args.calls)
    runs: dict[str, list[float]] = {"cluster": [], "pool": [], "auto": [], "per task": []}
    with (
        LocalCluster(workers=2, imports=["pyrodist.benchtasks"]) as cluster,
        cluster.client() as client,
        ClusterExecutor(client=client) as executor,
        concurrent.futures.ProcessPoolExecutor(2) as pool,
    ):
        list(executor.map(tasks.inc, range(2000), chunksize=100))  # warm: connections, children, imports
        list(pool.map(tasks.inc, range(2000), chunksize=100))
        for _ in range(args.rounds):
            runs["cluster"].append(timed(lambda: list(executor.map(tasks.inc, xs, chunksize=1000))))
            runs["pool"].append(timed(lambda: list(pool.map(tasks.inc, xs, chunksize=1000))))
            runs["auto"].append(timed(lambda: client.gather(client.map(tasks.inc, xs), timeout=600)))
            runs["per task"].append(timed(lambda: client.gather(client.map(tasks.inc, xs, chunksize=1), timeout=600)))
    median = {name: statistics.median(seconds) for name, seconds in runs.items()}
    print(f"{args.calls:,} no-op calls, 2 workers, medians of {args.rounds}:")
    print(f"  ClusterExecutor.map(chunksize=1000) {median['cluster']:.3f} s; ProcessPoolExecutor(2) "
          f"{median['pool']:.3f} s; ratio {median['cluster'] / median['pool']:.2f}")  # fmt: skip
    print(f"  Client.map default {median['auto']:.3f} s; a task per call {median['per task']:.3f} s; "
          f"{median['per task'] / median['auto']:.1f}x faster")  # fmt: skip


if __name__ == "__main__":
    main()
