"""LocalCluster: real processes that start in order and are all gone afterwards."""

from __future__ import annotations

import os

import pytest

from pyrodist import LocalCluster, PyrodistError
from tests import tasks


def test_local_cluster_runs_tasks_and_stops_every_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYRODIST_MASTER", "someone.else")  # the cluster's own settings must win in its processes
    with LocalCluster(workers=2, imports=["tests.tasks"]) as cluster, cluster.client() as client:
        assert client.gather(client.map(tasks.inc, range(100)), timeout=60) == list(range(1, 101))
        procs = [cluster.nameserver, cluster.master, *cluster.workers]
        assert all(p is not None and p.poll() is None for p in procs)
    assert all(p is not None and p.poll() is not None for p in procs)
    for proc in procs:
        assert proc is not None
        with pytest.raises(ProcessLookupError):
            os.kill(proc.pid, 0)


def test_local_cluster_stops_everything_when_the_body_raises() -> None:
    cluster = LocalCluster(workers=1, imports=["tests.tasks"])
    with pytest.raises(RuntimeError, match="body failed"), cluster:
        raise RuntimeError("body failed")
    assert all(p is not None and p.poll() is not None for p in [cluster.nameserver, cluster.master, *cluster.workers])


def test_local_cluster_with_a_bad_module_fails_clearly() -> None:
    with (
        pytest.raises(PyrodistError, match="worker 0 exited with code 1"),
        LocalCluster(workers=1, imports=["no_such_module_xyz"], startup_timeout=30),
    ):
        pass
