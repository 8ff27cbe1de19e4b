"""What every example shares: run on a new local cluster, or on a running one named with --ns-host."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pyrodist import Client, LocalCluster


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """--ns-host, --ns-port and --master: where a running cluster is (none: start a local one)."""
    parser.add_argument("--ns-host", help="name server of a running cluster (default: start a LocalCluster)")
    parser.add_argument("--ns-port", type=int, help="its port (default: 9090)")
    parser.add_argument("--master", help="the master's name (default: pyrodist.master)")


@contextmanager
def cluster_client(args: argparse.Namespace, module: str, announce: bool = False) -> Iterator[Client]:
    """A client of the running cluster args name, or of a new local cluster whose 2 workers allow module."""
    if args.ns_host is not None:
        with Client(args.master, args.ns_host, args.ns_port) as client:
            yield client
        return
    started = time.perf_counter()
    with LocalCluster(workers=2, imports=[module]) as cluster, cluster.client() as client:
        if announce:
            print(f"local cluster of 2 workers started in {time.perf_counter() - started:.2f} s")
        yield client
