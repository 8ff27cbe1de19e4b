"""A parameter sweep written to a CSV: a damped oscillator simulated for every (alpha, beta, seed).

Each task integrates x'' = -alpha² x - 2 beta alpha x' (alpha: natural frequency, beta: damping ratio)
from a start drawn with `random.Random(seed)` and returns a few metrics. The client maps over the grid
`itertools.product(alphas, betas, seeds)`, writes one CSV row per task in grid order and prints the
(alpha, beta) that settles fastest on average. Run from the repository root::

    python -m examples.sweep                                  # on a LocalCluster of 2 workers
    python -m examples.sweep --alphas 1 2 --betas 0.2 0.7 --seeds 4 --out sweep.csv
    python -m examples.sweep --ns-host 127.0.0.1              # on a running cluster; its workers need -I examples.sweep
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from examples.common import add_cluster_arguments, cluster_client

# Run as `python -m`, this file is __main__, which no worker can import: name the function by its module.
TASK = "examples.sweep:simulate"
COLUMNS = ["alpha", "beta", "seed", "settling_time", "overshoot", "crossings", "final_energy"]
DT = 0.001
STEPS = 20_000
"""Time step and number of steps: 20 simulated seconds."""


def simulate(alpha: float, beta: float, seed: int) -> dict[str, Any]:
    """The task: simulate one oscillator and return its settling time, overshoot, crossings and final energy."""
    rng = random.Random(seed)
    x, v = rng.uniform(0.5, 1.5), rng.uniform(-1.0, 1.0)
    amplitude = math.hypot(x, v / alpha)
    band = 0.02 * amplitude  # settled: |x| stays within 2 % of the starting amplitude
    settling, lowest, crossings = 0.0, x, 0
    for step in range(1, STEPS + 1):
        v += (-alpha * alpha * x - 2.0 * beta * alpha * v) * DT  # semi-implicit Euler: stable for oscillators
        new_x = x + v * DT
        if new_x * x < 0.0:
            crossings += 1
        x = new_x
        lowest = min(lowest, x)
        if abs(x) > band:
            settling = step * DT
    energy = 0.5 * v * v + 0.5 * alpha * alpha * x * x
    overshoot = max(0.0, -lowest) / amplitude  # x starts positive: how far it swings past zero
    return {
        "settling_time": round(settling, 3),  # STEPS * DT: not settled within the simulated time
        "overshoot": round(overshoot, 4),
        "crossings": crossings,
        "final_energy": float(f"{energy:.6g}"),
    }


def main() -> None:
    """Run the sweep on the cluster, write the CSV and print the fastest-settling parameters."""
    parser = argparse.ArgumentParser(prog="python -m examples.sweep", description=main.__doc__)
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0], help="natural frequencies")
    parser.add_argument("--betas", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 1.0, 1.5], help="damping")
    parser.add_argument("--seeds", type=int, default=3, help="starts per (alpha, beta) (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="CSV file to write (default: a new temporary file)")
    add_cluster_arguments(parser)
    args = parser.parse_args()
    if any(a <= 0 for a in args.alphas) or args.seeds < 1:
        parser.error("alphas must be positive and --seeds at least 1")

    grid = list(itertools.product(args.alphas, args.betas, range(args.seeds)))
    with cluster_client(args, "examples.sweep") as client:
        started = time.perf_counter()
        metrics = client.gather(client.map(TASK, *zip(*grid, strict=True)))
        elapsed = time.perf_counter() - started

    out = args.out
    if out is None:
        with tempfile.NamedTemporaryFile(prefix="sweep-", suffix=".csv", delete=False) as file:
            out = Path(file.name)
    rows = [{"alpha": a, "beta": b, "seed": s, **m} for (a, b, s), m in zip(grid, metrics, strict=True)]
    with out.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)

    settling: dict[tuple[float, float], list[float]] = {}
    for row in rows:
        settling.setdefault((row["alpha"], row["beta"]), []).append(row["settling_time"])
    (alpha, beta), times = min(settling.items(), key=lambda item: sum(item[1]) / len(item[1]))
    print(f"{len(grid)} simulations in {elapsed:.3f} s ({len(grid) / elapsed:.0f} tasks/s)")
    print(f"best: alpha={alpha:g} beta={beta:g}, mean settling time {sum(times) / len(times):.3f} s")
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main()
