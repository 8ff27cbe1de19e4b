"""The classic first program: the squares of a range of numbers, computed by the workers.

Run from the repository root::

    python -m examples.squares                      # on a LocalCluster of 2 workers
    python -m examples.squares --ns-host 127.0.0.1  # on a running cluster; its workers need -I examples.squares
"""

from __future__ import annotations

import argparse
import time
from contextlib import ExitStack

from pyrodist import Client, LocalCluster

# Run as `python -m`, this file is __main__, which no worker can import: name the function by its module.
TASK = "examples.squares:compute"


def compute(num: int) -> int:
    """The task: num squared."""
    return num * num


def main() -> None:
    """Square 0..count-1 on the cluster and print the results, their sum and the time taken."""
    parser = argparse.ArgumentParser(prog="python -m examples.squares", description=main.__doc__)
    parser.add_argument("--count", type=int, default=100, help="how many numbers (default: %(default)s)")
    parser.add_argument("--ns-host", help="name server of a running cluster (default: start a LocalCluster)")
    parser.add_argument("--ns-port", type=int, help="its port (default: 9090)")
    parser.add_argument("--master", help="the master's name (default: pyrodist.master)")
    args = parser.parse_args()

    with ExitStack() as stack:
        started = time.perf_counter()
        if args.ns_host is None:
            cluster = stack.enter_context(LocalCluster(workers=2, imports=["examples.squares"]))
            client = stack.enter_context(cluster.client())
            print(f"local cluster of 2 workers started in {time.perf_counter() - started:.2f} s")
        else:
            client = stack.enter_context(Client(args.master, args.ns_host, args.ns_port))

        started = time.perf_counter()
        results = client.gather(client.map(TASK, range(args.count)))
        elapsed = time.perf_counter() - started

    print(results)
    print(f"sum: {sum(results)}")
    print(f"{args.count} tasks in {elapsed:.3f} s ({args.count / elapsed:.0f} tasks/s)")


if __name__ == "__main__":
    main()
