"""Prime factorisations streamed to a callback as they finish, then checked.

Each task factorises one ~12-digit number by trial division, which takes from microseconds to a good
fraction of a second depending on its largest prime factor, so the results finish out of order. The
client subscribes with `client.on_result(fn)` before submitting; the callback only puts each record on a
queue and the main thread prints them in completion order. Run from the repository root::

    python -m examples.primes                      # on a LocalCluster of 2 workers
    python -m examples.primes --count 40 --digits 13
    python -m examples.primes --ns-host 127.0.0.1  # on a running cluster; its workers need -I examples.primes

On a running cluster the master must be able to connect back to this machine to deliver callbacks.
"""

from __future__ import annotations

import argparse
import math
import queue
import random
import time
from typing import Any

from examples.common import add_cluster_arguments, cluster_client

# Run as `python -m`, this file is __main__, which no worker can import: name the function by its module.
TASK = "examples.primes:factorize"
WAIT = 60.0
"""Seconds to wait for all callbacks (and results) before giving up."""


def factorize(n: int) -> list[int]:
    """The task: the prime factors of n >= 2 in ascending order, by trial division."""
    factors: list[int] = []
    for p in (2, 3):
        while n % p == 0:
            factors.append(p)
            n //= p
    p, step = 5, 2
    while p * p <= n:  # candidates 5, 7, 11, 13, 17, 19, ...: 6k - 1 and 6k + 1
        while n % p == 0:
            factors.append(p)
            n //= p
        p += step
        step = 6 - step
    if n > 1:
        factors.append(n)
    return factors


def show(factors: list[int]) -> str:
    """Factors as a product with exponents, e.g. 2^3 * 5."""
    return " * ".join(f"{p}^{factors.count(p)}" if factors.count(p) > 1 else str(p) for p in sorted(set(factors)))


def main() -> int:
    """Factorise random numbers on the cluster, print each result as it arrives, then verify them all."""
    parser = argparse.ArgumentParser(prog="python -m examples.primes", description=main.__doc__)
    parser.add_argument("--count", type=int, default=20, help="how many numbers (default: %(default)s)")
    parser.add_argument("--digits", type=int, default=12, help="digits per number (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random numbers (default: %(default)s)")
    add_cluster_arguments(parser)
    args = parser.parse_args()
    if args.count < 1 or args.digits < 2:
        parser.error("--count must be at least 1 and --digits at least 2")
    rng = random.Random(args.seed)
    numbers = [rng.randrange(10 ** (args.digits - 1), 10**args.digits) for _ in range(args.count)]

    with cluster_client(args, "examples.primes") as client:
        arrived: queue.Queue[dict[str, Any]] = queue.Queue()
        client.on_result(arrived.put)  # subscribe before submitting, so no result is missed
        started = time.perf_counter()
        futures = client.map(TASK, numbers)
        inputs = {f.task_id: n for f, n in zip(futures, numbers, strict=True)}

        deadline = time.monotonic() + WAIT
        for count in range(len(futures)):
            try:
                record = arrived.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                print(f"only {count} of {len(futures)} callbacks arrived within {WAIT:g} s")
                return 1
            n = inputs[record["id"]]
            outcome = show(record["value"]) if record["state"] == "done" else record["error"]["message"]
            print(f"{time.perf_counter() - started:6.3f} s  {n} = {outcome}")

        results = client.gather(futures, timeout=WAIT)  # the futures complete on their own path

    wrong = [n for n, factors in zip(numbers, results, strict=True) if math.prod(factors) != n]
    if wrong:
        print(f"{len(wrong)} of {len(numbers)} factorizations are wrong: {wrong}")
        return 1
    print(f"all {len(numbers)} factorizations verified (product of the factors == n)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
