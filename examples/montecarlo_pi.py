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

from examples.common import add_cluster_arguments, cluster_client

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
    add_cluster_arguments(parser)
    args = parser.parse_args()
    if args.tasks < 1 or args.samples < 1:
        parser.error("--tasks and --samples must be at least 1")

    with cluster_client(args, "examples.montecarlo_pi", announce=True) as client:
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
