"""The worker: fetch tasks from the master, run them in child processes, report results.

Three roles over one shared `WorkerState`; the fetcher and the reporter each have their own connection to
the master (a long-poll never holds up a report, and neither waits on the other's lock)::

    Fetcher (main thread) ──fetch(id, n, wait)──▶ master      long-poll; n keeps held ≤ concurrency + prefetch - 1
         │ buffer (fetched, not started)
         ▼
    Slots x concurrency: ChildProcess.run_batch ──▶ results queue
                                                     │
    Reporter ──report(id, batch)──▶ master ◀─────────┘  batches whatever is ready; heartbeats renew leases

Stopping (SIGINT/SIGTERM): stop fetching, give unstarted tasks back at once, let the running ones
finish within the grace period (then kill them and give them back too), flush every result, say
goodbye, exit 0. A lost master is waited for with capped backoff; results that could not be reported
are kept and sent once it is back. Tasks cancelled while running are named in the master's replies to
heartbeats and reports: their child process is killed and nothing is reported for them.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Sequence

from .allowlist import AllowList
from .config import Settings
from .connection import Connect, Connection, wait_for_master
from .fetcher import Fetcher
from .remote_connection import PyroConnection
from .reporter import Reporter
from .runner import Spool
from .slots import Slots
from .workstate import WorkerState

log = logging.getLogger(__name__)

DEFAULT_GRACE = 30.0
"""Seconds a stopping worker lets running tasks finish before it kills them and gives them back."""


class Worker:
    """A pyrodist worker process's engine."""

    def __init__(
        self,
        settings: Settings,
        imports: Sequence[str],
        concurrency: int | None = None,
        prefetch: int | None = None,
        worker_id: str | None = None,
        burst: bool = False,
        max_tasks: int | None = None,
        grace: float = DEFAULT_GRACE,
        connect: Connect = PyroConnection,
    ) -> None:
        self.settings = settings
        self.allow = AllowList(imports)  # fail now, clearly, if a module does not import
        self.imports = list(imports)
        self.concurrency = concurrency or os.cpu_count() or 1
        if self.concurrency < 1 or (prefetch is not None and prefetch < 1):
            raise ValueError("concurrency and prefetch must be at least 1")
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.burst = burst
        self.grace = grace
        self.state = WorkerState(self.concurrency, prefetch, max_tasks, settings.heartbeat, settings.lease_timeout)
        self._connect = connect

    @property
    def done(self) -> int:
        """Tasks run to the end so far."""
        return self.state.done

    def stop(self) -> None:
        """Stop gracefully: no more fetching; running tasks finish and are reported."""
        state = self.state
        if not state.stopping.is_set():
            log.info("worker %s stopping: %d running tasks may finish within %g s", self.id, len(state.running),
                     self.grace)  # fmt: skip
            state.stop_deadline = time.monotonic() + self.grace
        state.stopping.set()
        with state.tasks:
            state.tasks.notify_all()
            state.room.notify_all()
        state.results.put([])  # wakes the reporter, which tells the master: it ends this worker's long-poll

    def abort(self) -> None:
        """Stop now: also give up waiting for an absent master (the second Ctrl-C)."""
        log.warning("worker %s aborting", self.id)
        self.state.abort.set()
        self.stop()

    def run(self) -> int:
        """Work until stopped (or, with burst/max_tasks, until done); returns the exit code."""
        fetching, reporting = self._connect(self.settings), self._connect(self.settings)
        try:
            if not wait_for_master(fetching, self.state.stopping, f"worker {self.id}"):
                return 0
            log.info("worker %s connected to %s: concurrency %d, prefetch %s, modules %s", self.id, fetching.address,
                     self.concurrency, self.state.prefetch or "adaptive", self.allow.describe())  # fmt: skip
            self._work(fetching, reporting)
        finally:
            fetching.close()
            reporting.close()
        log.info("worker %s stopped after %d tasks", self.id, self.done)
        return 0

    def _work(self, fetching: Connection, reporting: Connection) -> None:
        state = self.state
        limits = fetching.limits()  # a result over the master's max_payload goes in chunks (within its max_value)
        inline = min(self.settings.max_payload, limits.max_payload)
        max_value = min(self.settings.max_value, max(limits.max_value, inline))
        spool = tempfile.mkdtemp(prefix=f"pyrodist-{self.id}-")  # big values on their way: removed at the end
        fetcher = Fetcher(self.id, state, fetching, self.burst)
        slots = Slots(self.id, state, self.imports, max_value, reporting, Spool(spool, inline))
        reporter = Reporter(self.id, state, reporting, self.abort, inline)
        slots.start()
        reporter.start()
        reached = True
        try:
            reached = fetcher.run()
            if reached and state.stopping.is_set():  # stopped by a signal: unstarted tasks go back to the queue
                fetcher.give_back(state.take_unstarted(), "unstarted")
        finally:
            state.drain()
            slots.join()
            stopped = state.stopped_leases()
            if stopped:
                log.warning("worker %s stopped %d running tasks after %g s; giving them back", self.id, len(stopped),
                            self.grace)  # fmt: skip
            if reached:
                fetcher.give_back(stopped, "stopped")
            reporter.finish()
            shutil.rmtree(spool, ignore_errors=True)
