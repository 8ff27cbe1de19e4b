"""The classic first program: the squares of a range of numbers, computed by the workers.

Run from the repository root::

    python -m examples.squares                      # on a LocalCluster of 2 workers
    python -m examples.squares --ns-host 127.0.0.1  # on a running cluster; its workers need -I examples.squares
"""

from __future__ import annotations

import argparse
import time

from examples.common import add_cluster_arguments, cluster_client

# Run as `python -m`, this file is __main__, which no worker can import: name the function by its module.
TASK = "examples.squares:compute"


def compute(num: int) -> int:
    """The task: num squared."""
    return num * num


def main() -> None:
    """Square 0..count-1 on the cluster and print the results, their sum and the time taken."""
    parser = argparse.ArgumentParser(prog="python -m examples.squares", description=main.__doc__)
    parser.add_argument("--count", type=int, default=100, help="how many numbers (default: %(default)s)")
    add_cluster_arguments(parser)
    args = parser.parse_args()

    with cluster_client(args, "examples.squares", announce=True) as client:
        started = time.perf_counter()
        results = client.gather(client.map(TASK, range(args.count)))
        elapsed = time.perf_counter() - started

    print(results)
    print(f"sum: {sum(results)}")
    print(f"{args.count} tasks in {elapsed:.3f} s ({args.count / elapsed:.0f} tasks/s)")


if __name__ == "__main__":
    main()
