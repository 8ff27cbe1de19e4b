"""Monte Carlo estimate of pi: each task throws random points at a square, the client adds up the hits.

A point (x, y) drawn uniformly from the unit square falls inside the quarter circle x² + y² <= 1 with
probability pi/4. Every task draws its own points from `random.Random(seed)` with a different seed, so
the run is reproducible and no two tasks draw the same points. Run from the repository root::

    python -m examples.montecarlo_pi                      # on a LocalCluster of 2 workers
    python -m examples.montecarlo_pi --tasks 200 --samples 50000
    python -m examples.montecarlo_pi --ns-host 127.0.0.1  # a running cluster; workers need -I examples.montecarlo_pi
"""

from __future__ import annotations

import argparse
import math
import random
import time
from contextlib import ExitStack

from pyrodist import Client, LocalCluster

# Run as `python -m`, this file is __main__, which no worker can import: name the function by its module.
TASK = "examples.montecarlo_pi:count_inside"


def count_inside(seed: int, samples: int) -> int:
    """The task: how many of `samples` random points of the unit square fall inside the unit circle."""
    rng = random.Random(seed)
    draw = rng.random
    inside = 0
    for _ in range(samples):
        x, y = draw(), draw()
        if x * x + y * y <= 1.0:
            inside += 1
    return inside


def main() -> None:
    """Estimate pi from tasks x samples random points and print the estimate, its error and the rate."""
    parser = argparse.ArgumentParser(prog="python -m examples.montecarlo_pi", description=main.__doc__)
    parser.add_argument("--tasks", type=int, default=100, help="how many tasks, one seed each (default: %(default)s)")
    parser.add_argument("--samples", type=int, default=100_000, help="points per task (default: %(default)s)")
    parser.add_argument("--ns-host", help="name server of a running cluster (default: start a LocalCluster)")
    parser.add_argument("--ns-port", type=int, help="its port (default: 9090)")
    parser.add_argument("--master", help="the master's name (default: pyrodist.master)")
    args = parser.parse_args()
    if args.tasks < 1 or args.samples < 1:
        parser.error("--tasks and --samples must be at least 1")

    with ExitStack() as stack:
        started = time.perf_counter()
        if args.ns_host is None:
            cluster = stack.enter_context(LocalCluster(workers=2, imports=["examples.montecarlo_pi"]))
            client = stack.enter_context(cluster.client())
            print(f"local cluster of 2 workers started in {time.perf_counter() - started:.2f} s")
        else:
            client = stack.enter_context(Client(args.master, args.ns_host, args.ns_port))

        started = time.perf_counter()
        seeds = range(args.tasks)
        inside = sum(client.gather(client.map(TASK, seeds, [args.samples] * args.tasks)))
        elapsed = time.perf_counter() - started

    total = args.tasks * args.samples
    estimate = 4.0 * inside / total
    print(f"{inside:,} of {total:,} points inside the circle")
    print(f"pi estimate: {estimate:.6f}")
    print(f"error vs math.pi: {estimate - math.pi:+.6f}")
    print(f"{args.tasks} tasks in {elapsed:.3f} s ({args.tasks / elapsed:.0f} tasks/s)")


if __name__ == "__main__":
    main()
