"""The connection limit we promise: the default pool (800) serves 200 workers and their clients at once.

Each worker holds two connections to the master (its fetch loop and its reporter) and each client up to
three (its collector and pooled calls). The 200 workers here are `EmulatedWorker` loops: the master sees
the same connections and calls as from real `pyrodist worker` processes, which would cost two processes each.
"""

from __future__ import annotations

import threading

from benchmarks.lab import EmulatedWorker
from tests import tasks
from tests.conftest import Processes, start_cluster, wait_until

WORKERS = 200
CLIENTS = 20


def test_200_workers_and_20_busy_clients_are_all_served_by_the_default_pool(procs: Processes) -> None:
    cluster = start_cluster(procs, workers=1)  # and one real worker
    emulated = [EmulatedWorker(cluster.settings, f"emulated-{i}") for i in range(WORKERS)]
    try:
        for worker in emulated:
            worker.start()
        for worker in emulated:
            assert worker.connected.wait(60), f"{worker.worker_id} could not connect"
            assert worker.error is None, worker.error
        wait_until(lambda: len(cluster.live_workers()) >= WORKERS + 1, timeout=30, what="every worker listed")
        results: dict[int, list[int]] = {}

        def busy_client(n: int) -> None:
            with cluster.client() as client:
                futures = client.map(tasks.inc, range(50))
                results[n] = [f.result(timeout=60) for f in futures]

        clients = [threading.Thread(target=busy_client, args=(n,)) for n in range(CLIENTS)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(timeout=120)
        # Emulated workers report their tasks done with None; the real worker returns x + 1.
        assert sorted(results) == list(range(CLIENTS))
        assert all(
            len(values) == 50 and all(v in (None, i + 1) for i, v in enumerate(values)) for values in results.values()
        )
    finally:
        for worker in emulated:
            worker.stop.set()
        for worker in emulated:
            worker.join(10)
    assert not any(worker.is_alive() for worker in emulated)
    assert all(worker.error is None for worker in emulated)
