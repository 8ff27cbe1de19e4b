"""Fixtures of the multi-host tests: a `Network` of namespaces and pyrodist started on its hosts.

Every host runs the real `python -m pyrodist ...` commands with one shared key file; the client runs
`python -m tests.cluster.clustertasks` on its own host. Processes are stopped by pid and the network
is deleted after each test, also when it fails. Without root, iproute2 or namespace support the tests
are skipped, saying which of them is missing.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until

from .netns import Network, stop_processes, unavailable_reason

NS_PORT = 9090
MASTER_PORT = 9100
TASKS_MODULE = "tests.cluster.clustertasks"
CLIENT_PROGRAM = ["-m", TASKS_MODULE]


def report(scenario: str, figures: dict[str, Any]) -> None:
    """Print a scenario's figures (shown by pytest -n0 -s) and append them to $PYRODIST_NETNS_REPORT."""
    line = json.dumps({"scenario": scenario, **figures}, sort_keys=False)
    print(f"\n[multihost] {line}")
    path = os.environ.get("PYRODIST_NETNS_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(line + "\n")


class ClientRun:
    """The client program running on a host: its JSON events, read as they come."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="client-events", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                event = {"event": "output", "text": raw.decode(errors="replace")}
            with self._changed:
                self.events.append(event)
                self._changed.notify_all()
        self.proc.stdout.close()
        with self._changed:
            self.events.append({"event": "exit"})
            self._changed.notify_all()

    def log(self) -> str:
        """What the program wrote to stderr (its log and tracebacks)."""
        return Path(self.proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]

    def wait_event(self, accept: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
        """The first event accept() likes; fails the test on timeout or when the program ended without it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events:
                    if accept(event):
                        return event
                    if event["event"] in ("error", "exit"):
                        pytest.fail(f"the client ended before {what}: {event}\n{self.log()[-3000:]}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"timed out after {timeout} s waiting for the client: {what}\n{self.log()[-3000:]}")
                self._changed.wait(remaining)

    def progress(self, done: int, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until at least `done` results arrived."""
        return self.wait_event(lambda e: e["event"] == "progress" and e["done"] >= done, timeout, f"{done} results")

    def result(self, timeout: float = 120.0) -> dict[str, Any]:
        """The program's "done" event (its figures), once it exited with code 0."""
        done = self.wait_event(lambda e: e["event"] == "done", timeout, "the end of its job")
        assert self.proc.wait(timeout=30) == 0
        return done


class MultiHost:
    """pyrodist on the hosts of a Network: name server, master and workers each on its own host."""

    def __init__(self, net: Network, folder: Path) -> None:
        self.net = net
        self.folder = folder
        self.key_file = folder / "key"
        self.key_file.write_text(secrets.token_hex(16))
        self.key_file.chmod(0o600)
        self.exec_log = folder / "executions"
        self.exec_log.mkdir()
        self.nameserver: subprocess.Popen[bytes] | None = None
        self.master: subprocess.Popen[bytes] | None = None
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.clients: list[ClientRun] = []

    def env(self, host: str) -> dict[str, str]:
        """The environment of a process on host: the cluster's name server and key, nothing inherited."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYRODIST_", "PYRO_"))}
        env.update(
            PYRODIST_NS_HOST=self.net.address("ns"), PYRODIST_NS_PORT=str(NS_PORT),
            PYRODIST_KEY_FILE=str(self.key_file), PYRODIST_CLUSTER_HOST=host, PYRODIST_EXEC_LOG=str(self.exec_log),
        )  # fmt: skip
        return env

    def pyrodist(self, host: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start `python -m pyrodist ARGS` on host (env adds to its environment)."""
        return self.net.python(host, ["-m", "pyrodist", *args], name=args[0], env={**self.env(host), **(env or {})})

    def start(
        self, workers: Sequence[str], lease_timeout: float = 3.0, concurrency: int = 2,
        master_env: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        """Name server, master and workers, each on its host; returns once every worker has joined."""
        self.nameserver = self.pyrodist("ns", "nameserver", "--host", self.net.address("ns"), "--port",
                                        str(NS_PORT), "--no-broadcast")  # fmt: skip
        wait_started(self.nameserver, "name server running at", "the name server")
        where = ("--host", self.net.address("master"), "--port", str(MASTER_PORT))
        self.master = self.pyrodist("master", "master", *where, "--lease-timeout", str(lease_timeout), env=master_env)
        wait_started(self.master, " serving at ", "the master")
        for name in workers:
            self.workers[name] = self.pyrodist(name, "worker", "--id", name, "-I", TASKS_MODULE, "-c",
                                               str(concurrency), "--heartbeat", "0.5")  # fmt: skip
        for name, worker in self.workers.items():
            wait_started(worker, f"worker {name} connected to", f"worker {name}")
            self.wait_master_log(rf"worker {name} joined", timeout=30)

    def master_log(self) -> str:
        """The master's log so far."""
        assert self.master is not None
        return log_of(self.master)

    def wait_master_log(self, pattern: str, timeout: float, after: int = 0) -> re.Match[str]:
        """The first match of pattern in the master's log past offset `after`, waiting up to timeout s."""
        regex = re.compile(pattern)
        match = wait_until(
            lambda: regex.search(self.master_log(), after), timeout, 0.05, f"master log: {pattern}",
            details=lambda: "the master's log ends with:\n" + self.master_log()[-3000:],
        )  # fmt: skip
        return match  # type: ignore[no-any-return]

    def client(self, mode: str, *args: str, host: str = "client") -> ClientRun:
        """Start the client program on host."""
        proc = self.net.python(host, [*CLIENT_PROGRAM, mode, *args], name=mode, env=self.env(host), pipe_stdout=True)
        self.clients.append(ClientRun(proc))
        return self.clients[-1]

    def executions(self, start: int, stop: int) -> dict[int, list[tuple[float, str]]]:
        """When and on which host each x in [start, stop) was executed, from every worker's execution log."""
        runs: dict[int, list[tuple[float, str]]] = collections.defaultdict(list)
        for path in self.exec_log.iterdir():
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) == 3 and start <= int(parts[1]) < stop:  # (a line being written may be cut short)
                    runs[int(parts[1])].append((float(parts[2]), parts[0]))
        return {x: sorted(times) for x, times in runs.items()}

    def expired_leases(self, after: int = 0) -> int:
        """How many leases the master took back (its "N leases expired" lines) past offset `after` of its log."""
        return sum(int(n) for n in re.findall(r"(\d+) leases expired", self.master_log()[after:]))

    def stop(self) -> None:
        """Stop clients, workers, the master, then the name server, each by pid, after repairing the network."""
        for host in list(self.net.cut_hosts):  # so that workers can give their tasks back and say goodbye
            self.net.restore(host)
        if self.net.impaired:
            self.net.clear_impairment()
        stop_processes([run.proc for run in self.clients])
        stop_processes(list(self.workers.values()))
        for server in (self.master, self.nameserver):  # the master unregisters from the name server
            if server is not None:
                stop_processes([server])


def log_of(proc: subprocess.Popen[bytes]) -> str:
    """Everything a process started by the Network logged so far."""
    return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


def wait_started(proc: subprocess.Popen[bytes], text: str, what: str, timeout: float = 60.0) -> None:
    """Wait until proc logs text; fail at once, with its log, if it exits first."""
    wait_until(
        lambda: text in log_of(proc) or proc.poll() is not None, timeout, 0.05, what,
        details=lambda: f"{what} logged:\n{log_of(proc)[-3000:]}",
    )  # fmt: skip
    if text not in log_of(proc):
        pytest.fail(f"{what} exited with code {proc.returncode}:\n{log_of(proc)[-3000:]}")


@pytest.fixture
def multihost(tmp_path: Path) -> Iterator[Callable[[Sequence[str]], MultiHost]]:
    """Make a network with these hosts and a MultiHost on it; both are torn down after the test."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"multi-host tests skipped: {reason}")
    numbers = itertools.count()
    with contextlib.ExitStack() as teardown:  # every step runs, also after a failed one, newest first

        def make(hosts: Sequence[str]) -> MultiHost:
            folder = tmp_path / f"net{next(numbers)}"
            folder.mkdir()
            net = Network(hosts, folder)
            teardown.callback(net.close)
            cluster = MultiHost(net, folder)
            teardown.callback(cluster.stop)
            return cluster

        yield make


__all__ = ["ClientRun", "MultiHost", "report"]
