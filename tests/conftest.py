"""Shared fixtures and helpers.

Two kinds of cluster: `InProcess` (a master in this process with a fake clock, reached through
`LocalConnection`, workers as threads: for logic) and real processes on 127.0.0.1 with free ports,
stopped by pid in teardown (for what needs processes: Pyro4, signals, keys, TLS, NAT).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pyrodist import Client, ConnectionFailed, LocalCluster, Settings
from pyrodist.cluster import Launcher
from pyrodist.connection import LocalConnection
from pyrodist.master import Master
from pyrodist.protocol import admin_secret
from pyrodist.service import MasterService
from pyrodist.store import TaskStore
from pyrodist.worker import Worker

ROOT = Path(__file__).resolve().parent.parent
TASK_MODULES = ["tests.tasks", "math", "operator"]


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 15.0,
    interval: float = 0.02,
    what: str = "",
    details: Callable[[], str] | None = None,
) -> Any:
    """Poll predicate until it returns something truthy; fail the test after timeout seconds (with details())."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            more = f"\n{details()}" if details is not None else ""
            pytest.fail(f"timed out after {timeout} s waiting for {what or predicate}{more}")
        time.sleep(interval)


class FakeClock:
    """Time that moves only when a test says so."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


class WorkerThread:
    """A `Worker` running in a thread of this process (its tasks still run in child processes)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.exit_code: int | None = None
        self.thread = threading.Thread(target=self._run, name=f"worker-{worker.id}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.exit_code = self.worker.run()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the worker gracefully and wait for its thread."""
        self.worker.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"worker {self.worker.id} did not stop within {timeout} s"


ADMIN_KEY = "test-admin"
"""The admin key of every master the tests start (in-process, and by start_cluster)."""
ADMIN_ENV = {"PYRODIST_ADMIN_KEY": ADMIN_KEY}
"""The environment that gives a process that key (a `pyrodist status` that sees every client's tasks)."""


class InProcess:
    """A master in this process with a fake clock; clients and workers reach it through `LocalConnection`.

    The reaper does not run: a test moves the clock (`advance`) and reaps when it wants leases to expire.
    The lease timeout is short in real time too, so workers' long-polls end quickly when they stop.
    """

    def __init__(self, store: TaskStore | None = None, **settings: Any) -> None:
        self.clock = FakeClock()
        self.settings = Settings(**{"lease_timeout": 0.3, "heartbeat": 0.1, **settings})
        # The master knows an admin key its clients do not: they see their own tasks only (see admin()).
        self.master = Master(dataclasses.replace(self.settings, admin_key=ADMIN_KEY), store, clock=self.clock)
        self.service = MasterService(self.master, self.settings, caller_uses_json=lambda: True)
        self.clients: list[Client] = []
        self.workers: list[WorkerThread] = []

    def admin(self, name: str) -> str:
        """A client secret that holds this master's admin key: it sees every client's tasks."""
        return admin_secret(ADMIN_KEY, name)

    def connect(self, _settings: Settings | None = None) -> LocalConnection:
        """A connection to this master (the `connect` factory of clients and workers)."""
        return LocalConnection(self.service)

    def client(self) -> Client:
        """A client of this master, closed with the cluster."""
        client = Client(settings=self.settings, connect=self.connect)
        self.clients.append(client)
        return client

    def start_worker(self, *imports: str, concurrency: int = 1, **options: Any) -> WorkerThread:
        """A worker thread allowed the test task modules (or imports), stopped with the cluster."""
        worker = Worker(self.settings, list(imports or TASK_MODULES), concurrency, connect=self.connect, **options)
        running = WorkerThread(worker)
        self.workers.append(running)
        return running

    def reap(self, advance: float = 0.0) -> None:
        """Move the clock, then run one round of the reaper."""
        self.clock.advance(advance)
        self.master.reap()

    def close(self) -> None:
        """Stop the workers, close the clients, stop the master and close its store."""
        for running in self.workers:
            running.worker.stop()
        for running in self.workers:
            running.stop()
        for client in self.clients:
            client.close()
        self.master.close()
        self.master.close_store()


@pytest.fixture
def inproc() -> Iterator[InProcess]:
    """A master in this process, with no workers yet; everything it started is stopped afterwards."""
    cluster = InProcess()
    try:
        yield cluster
    finally:
        cluster.close()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Processes(Launcher):
    """`LocalCluster`'s launcher, each process writing to its own log file in log_dir."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__()
        self.log_dir = log_dir

    def start(self, *args: str, env: dict[str, str] | None = None, **_: Any) -> subprocess.Popen[bytes]:  # type: ignore[override]
        """Start one pyrodist command (from the repository's root; env adds to the environment); its output
        goes to a log file."""
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(self.log_dir / f"{len(self.procs)}-{args[0]}.log", "wb") as log:  # the child keeps its own copy
            proc = super().start(*args, output=log, cwd=str(ROOT), env=environment)
        proc.log_path = log.name  # type: ignore[attr-defined]
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        """What the process wrote so far."""
        return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]

    def stop_all(self) -> None:
        """SIGTERM every live process (newest first), then SIGKILL what did not exit."""
        self.stop()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """A process starter whose processes are all stopped after the test."""
    starter = Processes(tmp_path)
    try:
        yield starter
    finally:
        starter.stop_all()


class Cluster:
    """Addresses of a running test cluster and helpers to reach it."""

    def __init__(self, procs: Processes, ns_port: int) -> None:
        self.procs = procs
        self.ns_port = ns_port
        self.settings = Settings(ns_host="127.0.0.1", ns_port=ns_port)
        self.ns_args = ["--ns-host", "127.0.0.1", "--ns-port", str(ns_port)]

    def client(self) -> Client:
        """A client of this cluster."""
        return Client(settings=self.settings)

    def start_worker(self, *extra: str) -> subprocess.Popen[bytes]:
        """One more worker allowed to run the test task modules."""
        imports = [arg for module in TASK_MODULES for arg in ("-I", module)]
        return self.procs.start("worker", *self.ns_args, *imports, "-c", "1", "--heartbeat", "0.5", *extra)

    def master_up(self) -> bool:
        """Whether the master is registered and answers."""
        try:
            with self.client():
                return True
        except ConnectionFailed:
            return False

    def live_workers(self) -> list[dict[str, Any]]:
        """The master's list of live workers (none while the master is not there yet)."""
        try:
            with self.client() as client:
                return list(client.stats()["workers"])
        except ConnectionFailed:
            return []


def start_cluster(procs: Processes, workers: int, master_args: tuple[str, ...] = ()) -> Cluster:
    """Name server, master and workers as real processes; returns once the workers are connected."""
    port = free_port()
    procs.start("nameserver", "--host", "127.0.0.1", "--port", str(port))
    wait_until(lambda: port_open(port), what="the name server")
    cluster = Cluster(procs, port)
    procs.start("master", *cluster.ns_args, "--lease-timeout", "3", *master_args, env=ADMIN_ENV)
    wait_until(cluster.master_up, timeout=30, interval=0.05, what="the master")
    for _ in range(workers):
        cluster.start_worker()
    wait_until(lambda: len(cluster.live_workers()) >= workers, timeout=30, interval=0.1, what="workers")
    return cluster


@contextmanager
def running_cluster(folder: Path, workers: int, master_args: tuple[str, ...] = ()) -> Iterator[Cluster]:
    """A cluster for the duration of a with-block; every process stopped by pid afterwards."""
    starter = Processes(folder)
    try:
        yield start_cluster(starter, workers, master_args)
    finally:
        starter.stop_all()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster with two one-slot workers shared by a test module."""
    with running_cluster(tmp_path_factory.mktemp("cluster"), workers=2) as running:
        yield running


@pytest.fixture(scope="module")
def idle_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster without workers shared by a test module: tasks stay where a test puts them."""
    with running_cluster(tmp_path_factory.mktemp("idle"), workers=0) as running:
        yield running


@pytest.fixture
def client(cluster: Cluster) -> Iterator[Client]:
    """A client of the module's cluster, closed after the test."""
    with cluster.client() as c:
        yield c


__all__ = [
    "ROOT", "Cluster", "FakeClock", "InProcess", "LocalCluster", "Processes", "WorkerThread", "free_port", "port_open",
    "start_cluster", "wait_until",
]  # fmt: skip


def start_workers(inproc: InProcess, count: int, **options: Any) -> list[str]:
    """Start count one-slot worker threads named w1, w2...; returns their ids once the master lists them all."""
    ids = [f"w{i}" for i in range(len(inproc.workers) + 1, len(inproc.workers) + count + 1)]
    for worker_id in ids:
        inproc.start_worker(worker_id=worker_id, **options)
    wait_until(lambda: {w.id for w in inproc.master.stats().workers} >= set(ids), what=f"workers {ids}")
    return ids


@pytest.fixture(scope="module")
def inproc_pair() -> Iterator[InProcess]:
    """An in-process master with two one-slot workers (w1, w2) shared by a test module, like `cluster`."""
    cluster = InProcess()
    try:
        start_workers(cluster, 2)
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Path]:
    """A path that gated tasks (`tasks.wait_for_file`) wait for: touch it to let them finish; touched at teardown."""
    path = tmp_path / "gate"
    try:
        yield path
    finally:
        path.touch()


class Link(LocalConnection):
    """A `LocalConnection` a test can cut (a worker that died, a master out of reach) and mend again."""

    def __init__(self, service: MasterService) -> None:
        super().__init__(service)
        self._calls = threading.Condition()
        self._cut = False
        self._in_flight = 0
        self.refused = 0
        """Calls failed because the link was cut."""

    def _invoke(self, method: Callable[..., Any], *args: Any) -> Any:
        with self._calls:
            if self._cut:
                self.refused += 1
                raise ConnectionFailed(f"{method.__name__}: the link to the master was cut by the test")
            self._in_flight += 1
        try:
            return super()._invoke(method, *args)
        finally:
            with self._calls:
                self._in_flight -= 1
                self._calls.notify_all()

    def cut(self, timeout: float = 15.0) -> None:
        """Fail every call from now on; returns once no call is in flight, so none reaches the master later."""
        with self._calls:
            self._cut = True
            assert self._calls.wait_for(lambda: self._in_flight == 0, timeout), "calls still in flight after cut"

    def mend(self) -> None:
        """Let calls through again."""
        with self._calls:
            self._cut = False


def start_linked_worker(
    cluster: InProcess, *imports: str, concurrency: int = 1, **options: Any
) -> tuple[WorkerThread, Link]:
    """A worker thread of cluster (as `InProcess.start_worker`) whose link to the master the test can cut."""
    link = Link(cluster.service)
    worker = Worker(cluster.settings, list(imports or TASK_MODULES), concurrency, connect=lambda _s: link, **options)
    running = WorkerThread(worker)
    cluster.workers.append(running)
    return running, link


def started_pids(log: Path) -> list[int]:
    """The pids of the processes that started `tasks.hold` with this log, in order."""
    return [int(pid) for pid in log.read_text().split()] if log.exists() else []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the figures tests measured (`record_property("figures", text)`), in every run, with or without xdist."""
    shown = set()
    for report in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", []):
        for name, text in getattr(report, "user_properties", ()):
            if name == "figures" and report.nodeid not in shown:
                shown.add(report.nodeid)
                terminalreporter.write_sep("-", f"figures of {report.nodeid}")
                terminalreporter.write_line(str(text))
