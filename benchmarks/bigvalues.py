"""Big values: `python benchmarks/bigvalues.py [--tasks N] [--size BYTES] [--kind bytes|str|array] [--gib]`.

N tasks each returning SIZE bytes (random `bytes`, an ASCII `str` or a NumPy float64 array) on a 2-worker
`LocalCluster`, next to
`concurrent.futures.ProcessPoolExecutor(2).map` of the same function in the same run: wall seconds of each,
their ratio, the master's peak resident memory and how far the client's grew while it held every result.
Run from the repository's root, in any version that has `pyrodist.benchtasks.random_bytes` and `text`.
With --gib: one 1 GiB `bytes` argument, then one 1 GiB result, on one worker: seconds of each and every
process's peak resident memory.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import subprocess
import time

from pyrodist import benchtasks
from pyrodist.bench import cpu_seconds, memory_mb
from pyrodist.cluster import LocalCluster


def main() -> None:
    """Measure, print one line per system and the memory figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--size", type=int, default=1024 * 1024)
    parser.add_argument("--kind", choices=("bytes", "str", "array"), default="bytes")
    parser.add_argument("--gib", action="store_true", help="a 1 GiB argument, then a 1 GiB result")
    args = parser.parse_args()
    if args.gib:
        one_gib()
        return
    func = {"bytes": benchtasks.random_bytes, "str": benchtasks.text, "array": benchtasks.array}[args.kind]
    sizes = [args.size] * args.tasks

    started = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        kept = list(pool.map(func, sizes))
    pool_seconds = time.perf_counter() - started
    del kept

    client_before = memory_mb(os.getpid())[0] or 0.0
    with LocalCluster(workers=2, imports=["pyrodist.benchtasks"]) as cluster, cluster.client() as client:
        client.gather(client.map(func, [1] * 10), timeout=60)  # warm: children, connections
        master_pid = cluster.master.pid if cluster.master else None
        cpu_before = [cpu_seconds(master_pid) or 0.0, time.process_time()]
        started = time.perf_counter()
        results = client.gather(client.map(func, sizes), timeout=3600)
        seconds = time.perf_counter() - started
        cpu = [(cpu_seconds(master_pid) or 0.0) - cpu_before[0], time.process_time() - cpu_before[1]]
        assert all(len(r) == (args.size // 8 if args.kind == "array" else args.size) for r in results)
        master_peak = memory_mb(master_pid)[1]
        client_now = memory_mb(os.getpid())[0] or 0.0
    print(f"{args.tasks} tasks each returning {args.size:,} bytes of {args.kind}, 2 workers:")
    print(f"  pyrodist {seconds:.2f} s (CPU: master {cpu[0]:.2f} s, client {cpu[1]:.2f} s); "
          f"ProcessPoolExecutor(2) {pool_seconds:.2f} s; ratio {seconds / pool_seconds:.2f}")  # fmt: skip
    print(f"  master peak RSS {master_peak:.0f} MB; client RSS +{client_now - client_before:.0f} MB "
          f"(holding {args.tasks * args.size / 1e6:.0f} MB of results)")  # fmt: skip


def one_gib() -> None:
    """A 1 GiB argument, then a 1 GiB result, on one worker; seconds and peak memory of every process."""
    size = 1 << 30
    with LocalCluster(workers=1, imports=["pyrodist.benchtasks"]) as cluster, cluster.client() as client:
        worker = cluster.workers[0].pid
        value = os.urandom(size)
        started = time.perf_counter()
        assert client.submit(benchtasks.payload, value).result(timeout=3600) == size
        print(f"a 1 GiB argument: {time.perf_counter() - started:.1f} s")
        del value
        started = time.perf_counter()
        assert len(client.submit(benchtasks.random_bytes, size).result(timeout=3600)) == size
        print(f"a 1 GiB result: {time.perf_counter() - started:.1f} s")
        listed = subprocess.run(["ps", "-o", "pid=", "--ppid", str(worker)], capture_output=True, text=True)
        children = [memory_mb(int(pid))[1] or 0.0 for pid in listed.stdout.split()]
        master = cluster.master.pid if cluster.master else None
        print(f"peak RSS: client {memory_mb(os.getpid())[1]:.0f} MB, master {memory_mb(master)[1]:.0f} MB, "
              f"worker {memory_mb(worker)[1]:.0f} MB, its children {[round(c) for c in children]} MB")  # fmt: skip


if __name__ == "__main__":
    main()
