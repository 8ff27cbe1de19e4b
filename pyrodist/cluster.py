"""`LocalCluster`: a name server, a master and workers as real processes on 127.0.0.1.

It is the quickest way to try pyrodist and what the tests use. Every process it starts runs the real
`pyrodist` command and is stopped by its pid on exit, also when the body of the `with` raises.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import IO

from .client import Client
from .config import Settings
from .errors import ConnectionFailed, PyrodistError

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on host right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Launcher:
    """Starts `python -m pyrodist ...` processes, each in its own session, and stops them by pid."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        *args: str,
        output: IO[bytes] | int | None = subprocess.DEVNULL,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start one pyrodist command, its output (stdout and stderr) going to output."""
        cmd = [sys.executable, "-m", "pyrodist", *args]
        proc = subprocess.Popen(cmd, stdout=output, stderr=subprocess.STDOUT if output is not None else None,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"} if env is None else env,
                                cwd=cwd, start_new_session=True)  # fmt: skip
        self.procs.append(proc)
        return proc

    def stop(self, procs: Sequence[subprocess.Popen[bytes]] | None = None, timeout: float = 15.0) -> None:
        """SIGTERM these processes (all, newest first, by default), wait up to timeout, then SIGKILL the rest."""
        group = list(reversed(self.procs)) if procs is None else list(procs)
        for proc in group:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in group:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("pid %d did not stop in time; killing it", proc.pid)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


class LocalCluster:
    """A whole cluster on this machine, started on enter and stopped on exit."""

    def __init__(
        self,
        workers: int = 2,
        imports: Sequence[str] = (),
        concurrency: int = 1,
        prefetch: int | None = None,
        master_args: Sequence[str] = (),
        worker_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
        log_to: IO[bytes] | int | None = subprocess.DEVNULL,
        key: str | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.ns_port = free_port()
        self.settings = Settings(ns_host=self.host, ns_port=self.ns_port, key=key)
        self.imports = list(imports)
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.master_args = list(master_args)
        self.worker_args = list(worker_args)
        self.startup_timeout = startup_timeout
        self.nameserver: subprocess.Popen[bytes] | None = None
        self.master: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self._n_workers = workers
        self._log_to = log_to
        self._launcher = Launcher()

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def ns_args(self) -> list[str]:
        """The --ns-host/--ns-port arguments that reach this cluster."""
        return ["--ns-host", self.host, "--ns-port", str(self.ns_port)]

    def start(self) -> None:
        """Start the name server, the master and the workers; return once all workers are connected."""
        self.nameserver = self._spawn("nameserver", "--host", self.host, "--port", str(self.ns_port))
        self._wait_for_port(self.ns_port)
        self.master = self._spawn("master", *self.ns_args, *self.master_args)
        for _ in range(self._n_workers):
            self.add_worker()
        self.wait_for_workers(self._n_workers)

    def add_worker(self, *extra: str) -> subprocess.Popen[bytes]:
        """Start one more worker process."""
        args = ["worker", *self.ns_args, "-c", str(self.concurrency)]
        for module in self.imports:
            args += ["-I", module]
        if self.prefetch is not None:
            args += ["--prefetch", str(self.prefetch)]
        proc = self._spawn(*args, *self.worker_args, *extra)
        self.workers.append(proc)
        return proc

    def wait_for_workers(self, count: int, timeout: float | None = None) -> None:
        """Wait until the master lists count live workers."""
        deadline = time.monotonic() + (timeout or self.startup_timeout)
        seen = -1
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with Client(settings=self.settings) as client:
                    while time.monotonic() < deadline:
                        seen = len(client.stats()["workers"])
                        if seen >= count:
                            return
                        self._check_alive()
                        time.sleep(0.05)
            except ConnectionFailed:
                time.sleep(0.1)
        raise PyrodistError(f"local cluster: {seen} of {count} workers connected within the startup timeout")

    def client(self) -> Client:
        """A client connected to this cluster."""
        return Client(settings=self.settings)

    def _wait_for_port(self, port: int) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            self._check_alive()
            with socket.socket() as sock:
                if sock.connect_ex((self.host, port)) == 0:
                    return
            time.sleep(0.02)
        raise PyrodistError(f"local cluster: the name server did not listen on port {port} in time")

    def _check_alive(self) -> None:
        named = [("name server", self.nameserver), ("master", self.master)]
        named += [(f"worker {i}", proc) for i, proc in enumerate(self.workers)]
        for name, proc in named:
            if proc is not None and proc.poll() not in (None, 0):
                raise PyrodistError(f"local cluster: the {name} exited with code {proc.returncode}")

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        # The cluster's own flags decide; PYRODIST_* variables of the caller must not redirect its processes.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYRODIST_")}
        env["PYTHONUNBUFFERED"] = "1"
        if self.settings.key:
            env["PYRODIST_KEY"] = self.settings.key  # the environment, not argv: keys stay out of `ps`
        return self._launcher.start(*args, output=self._log_to, env=env)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every process by its pid, workers first, then the master, then the name server.

        Each group gets SIGTERM and `timeout` seconds; what is still running then gets SIGKILL.
        """
        for group in (self.workers, [self.master] if self.master else [], [self.nameserver] if self.nameserver else []):
            self._launcher.stop(group, timeout)
