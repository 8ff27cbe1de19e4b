"""Results pushed to a callback as they finish, in the order they finish.

`client.on_result(fn)` makes the master call fn(record) for each of this client's tasks that
finishes, from a background thread of the client. Here the callback only puts each record on a
queue; the main thread prints them as they arrive, so the lines never interleave. Run from the
repository root::

    python -m examples.callbacks                      # on a LocalCluster of 2 workers
    python -m examples.callbacks --ns-host 127.0.0.1  # on a running cluster; its workers need -I examples.callbacks

On a running cluster the master must be able to connect back to this machine to deliver callbacks.
"""

from __future__ import annotations

import argparse
import queue
import time
from typing import Any

from examples.common import add_cluster_arguments, cluster_client

# Run as `python -m`, this file is __main__, which no worker can import: name the function by its module.
TASK = "examples.callbacks:slow_square"
NUMBERS = [7, 1, 9, 3, 0, 8, 2, 6, 4, 5]
WAIT = 30.0
"""Seconds to wait for all callbacks (and results) before giving up."""


def slow_square(n: int) -> int:
    """The task: sleep n * 0.05 s, then return n squared."""
    time.sleep(n * 0.05)
    return n * n


def describe(record: dict[str, Any], n: int) -> str:
    """One line for a finished task's record."""
    outcome = repr(record["value"]) if record["state"] == "done" else record["error"]["message"]
    return f"slow_square({n}) = {outcome:<4} (task {record['id']} {record['state']} on {record['worker']})"


def main() -> int:
    """Submit tasks of varying length and print each result as its callback arrives."""
    parser = argparse.ArgumentParser(prog="python -m examples.callbacks", description=main.__doc__)
    add_cluster_arguments(parser)
    args = parser.parse_args()

    with cluster_client(args, "examples.callbacks") as client:
        arrived: queue.Queue[dict[str, Any]] = queue.Queue()
        client.on_result(arrived.put)  # subscribe before submitting, so no result is missed
        started = time.perf_counter()
        futures = client.map(TASK, NUMBERS)
        inputs = {f.task_id: n for f, n in zip(futures, NUMBERS, strict=True)}

        deadline = time.monotonic() + WAIT
        for count in range(len(futures)):
            try:
                record = arrived.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                print(f"only {count} of {len(futures)} callbacks arrived within {WAIT:g} s")
                return 1
            print(f"{time.perf_counter() - started:5.2f} s  {describe(record, inputs[record['id']])}")

        results = client.gather(futures, timeout=WAIT)  # the futures complete on their own path
    print(f"all {len(results)} done; in submission order: {results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
