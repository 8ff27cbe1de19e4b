"""The worker: fetch tasks from the master, run them in child processes, report results.

Threads, each with its own proxy where it talks to the master (a Pyro4 proxy serialises calls)::

    main (fetch loop) ──fetch(id, n, wait)──▶ master      long-poll; n keeps `held` ≤ concurrency + prefetch - 1
         │ buffer (fetched, not started)
         ▼
    slot x concurrency: ChildProcess.run(task) ──▶ results queue
                                                    │
    reporter ──report(id, batch)──▶ master ◀────────┘  batches whatever is ready; heartbeats renew leases

Stopping (SIGINT/SIGTERM): stop fetching, give unstarted tasks back at once, let the running ones
finish within the grace period (then kill them and give them back too), flush every result, say
goodbye, exit 0. A lost master is waited for with capped backoff; results that could not be reported
are kept and sent once it is back. Tasks cancelled while running are named in the master's replies to
heartbeats and reports: their child process is killed and nothing is reported for them.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from . import protocol, remote
from .config import Settings
from .errors import ConnectionFailed
from .protocol import MAX_BATCH, TaskState
from .runner import PIPELINE_BYTES, AllowList, ChildProcess, TaskCall

log = logging.getLogger(__name__)

FETCH_WAIT = 2.0
"""Seconds one fetch long-polls; also how soon a stopping worker notices."""
IDLE_HEARTBEAT_FACTOR = 4
"""An idle worker heartbeats this many times less often: its long-polls already tell the master it lives."""
BUFFER_SECONDS = 0.05
"""Adaptive prefetch holds about this much work per slot (judged from the observed task time)."""
MAX_PREFETCH = 256
PIPELINE_TASKS = 16
"""Most tasks a slot hands its child at once (see runner.ChildProcess.run_batch)."""
PIPELINE_BELOW = 0.005
"""Tasks are pipelined only while they take less than this (seconds): a slow one must not hold others back."""
LINGER = 0.002
"""Seconds the reporter waits for more results to batch, only while other tasks are in flight."""
DONE, FAILED = TaskState.DONE.value, TaskState.FAILED.value
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
    ) -> None:
        self.settings = settings
        self.allow = AllowList(imports)  # fail now, clearly, if a module does not import
        self.imports = list(imports)
        self.concurrency = concurrency or os.cpu_count() or 1
        self.prefetch = prefetch  # None: adaptive, from the observed task time
        if self.concurrency < 1 or (prefetch is not None and prefetch < 1):
            raise ValueError("concurrency and prefetch must be at least 1")
        self._task_time: float | None = None  # moving average of one task's run time, seconds
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.burst = burst
        self.max_tasks = max_tasks
        self.grace = grace
        self.done = 0
        lock = threading.RLock()  # one lock, two conditions: a finished task need not wake a slot, nor a fetch a slot
        self._cond = threading.Condition(lock)  # slots wait here for tasks in the buffer
        self._room = threading.Condition(lock)  # the fetch loop waits here for room in the buffer
        self._buffer: collections.deque[dict[str, Any]] = collections.deque()
        self._running: dict[str, dict[str, Any]] = {}
        self._children: list[ChildProcess | None] = [None] * self.concurrency  # per slot, to kill one task
        self._dropped: dict[str, str] = {}  # running tasks being killed, and why: "cancelled" or "stopped"
        self._results: queue.Queue[list[dict[str, Any]] | None] = queue.Queue()  # reports, a group per item
        self._fetched = 0
        self._drained = False  # the last fetch got fewer tasks than it asked for
        self._stopping = threading.Event()  # stop fetching, finish what runs
        self._stop_deadline = float("inf")  # when running tasks are killed and given back
        self._abort = threading.Event()  # give up on reaching the master
        self._draining = False
        self._heartbeat = settings.heartbeat
        self._fetch_wait = FETCH_WAIT

    def stop(self) -> None:
        """Stop gracefully: no more fetching; running tasks finish and are reported."""
        if not self._stopping.is_set():
            log.info(
                "worker %s stopping: %d running tasks may finish within %g s", self.id, len(self._running), self.grace
            )
            self._stop_deadline = time.monotonic() + self.grace
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
            self._room.notify_all()

    def abort(self) -> None:
        """Stop now: also give up waiting for an absent master (the second Ctrl-C)."""
        log.warning("worker %s aborting", self.id)
        self._abort.set()
        self.stop()

    def run(self) -> int:
        """Work until stopped (or, with burst/max_tasks, until done); returns the exit code."""
        remote.configure_pyro(self.settings)
        master = remote.wait_for_master(self.settings, self._stopping, f"worker {self.id}")
        if master is None:
            return 0
        log.info(
            "worker %s connected to %s: concurrency %d, prefetch %s, modules %s",
            self.id, master._pyroUri, self.concurrency, self.prefetch or "adaptive", self.allow.describe(),
        )  # fmt: skip
        slots = [
            threading.Thread(target=self._slot, args=(i,), name=f"slot-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        reporter = threading.Thread(target=self._report_loop, name="reporter", daemon=True)
        for thread in [*slots, reporter]:
            thread.start()
        try:
            master = self._fetch_loop(master)
            if self._stopping.is_set():  # stopped by a signal: unstarted tasks go back to the queue
                self._give_back(master)
        finally:
            with self._cond:
                self._draining = True
                self._cond.notify_all()
                self._room.notify_all()
            self._join_slots(slots)
            self._give_back_stopped(master)
            self._results.put(None)
            reporter.join()
            if master is not None:
                master._pyroRelease()
        log.info("worker %s stopped after %d tasks", self.id, self.done)
        return 0

    # ---- fetching

    def current_prefetch(self) -> int:
        """Tasks fetched per call: the --prefetch given, else about BUFFER_SECONDS of work per slot."""
        if self.prefetch is not None:
            return self.prefetch
        if self._task_time is None:
            return self.concurrency  # nothing measured yet: fair
        wanted = self.concurrency * BUFFER_SECONDS / max(self._task_time, 1e-6)
        return max(1, min(MAX_PREFETCH, round(wanted)))

    def _fetch_loop(self, master: Any) -> Any:
        while not self._stopping.is_set():
            with self._cond:
                while not self._stopping.is_set() and not self._wants_tasks():
                    self._room.wait(0.5)
                want = self.concurrency + self.current_prefetch() - 1 - len(self._buffer) - len(self._running)
                if self.max_tasks is not None:
                    want = min(want, self.max_tasks - self._fetched)
            if self._stopping.is_set():
                break
            if want <= 0:  # max_tasks reached: finish and exit
                break
            try:
                tasks = master.fetch(self.id, want, self._fetch_wait)
            except remote.CommunicationError as exc:
                master = self._reconnect(master, exc)
                if master is None:
                    break
                continue
            with self._cond:
                self._buffer.extend(tasks)
                self._fetched += len(tasks)
                self._drained = len(tasks) < want
                idle = not self._buffer and not self._running
                self._cond.notify_all()
            if self.burst and not tasks and idle:
                log.info("worker %s: queue empty, leaving (burst mode)", self.id)
                break
            if tasks:
                time.sleep(0)  # let a slot take the GIL and start them before this thread asks for more
        return master

    def _wants_tasks(self) -> bool:
        """Whether to ask for more: the tasks held are down to the low-water mark (half the prefetch).

        Once the master had fewer tasks than asked for, only a free slot asks: a fetch then would only wait,
        and sending it while a task runs would take CPU from that task and its result on the way back.
        """
        held = len(self._buffer) + len(self._running)
        if self._drained:
            return held < self.concurrency
        return held <= self.concurrency - 1 + self.current_prefetch() // 2

    def _give_back(self, master: Any) -> None:
        with self._cond:
            unstarted = [t["id"] for t in self._buffer]
            self._buffer.clear()
        if self._release(master, unstarted):
            log.info("worker %s gave back %d unstarted tasks", self.id, len(unstarted))

    def _release(self, master: Any, task_ids: list[str]) -> bool:
        """Give tasks back to the master; False when there were none or it cannot be reached (leases expire)."""
        if not task_ids or master is None:
            return False
        try:
            master.release(self.id, task_ids)
            return True
        except remote.CommunicationError as exc:
            log.warning(
                "worker %s could not give back %d tasks (their leases will expire): %s", self.id, len(task_ids), exc
            )
            return False

    def _join_slots(self, slots: list[threading.Thread]) -> None:
        """Wait for the slots to finish; once the grace period is over (or on abort), kill what still runs."""
        for thread in slots:
            while thread.is_alive():
                if self._abort.is_set() or time.monotonic() >= self._stop_deadline:
                    self._drop_running(list(self._running), "stopped")
                thread.join(0.05)

    def _give_back_stopped(self, master: Any) -> None:
        """Give back the tasks killed at the end of the grace period: they run again elsewhere."""
        stopped = [task_id for task_id, why in self._dropped.items() if why == "stopped"]
        if stopped:
            log.warning(
                "worker %s stopped %d running tasks after %g s; giving them back", self.id, len(stopped), self.grace
            )
            self._release(master, stopped)

    def cancel(self, task_ids: list[str]) -> None:
        """The master cancelled these tasks: drop the unstarted ones, kill the running ones' children."""
        with self._cond:
            unstarted = {t["id"] for t in self._buffer} & set(task_ids)
            if unstarted:
                kept = [t for t in self._buffer if t["id"] not in unstarted]
                self._buffer.clear()
                self._buffer.extend(kept)
                self._room.notify_all()
        for task_id in unstarted:
            log.info("task %s cancelled before it started", task_id)
        self._drop_running(task_ids, "cancelled")

    def _drop_running(self, task_ids: list[str], why: str) -> None:
        """Kill the children running these tasks; nothing is reported for them."""
        with self._cond:
            for task_id in task_ids:
                task = self._running.get(task_id)
                if task is None or task_id in self._dropped:
                    continue
                self._dropped[task_id] = why
                child = self._children[task["slot"]]
                log.warning("task %s %s: killing its process", task_id, why)
                if child is not None:
                    child.interrupt()

    def _reconnect(self, master: Any, exc: Exception) -> Any:
        log.warning("worker %s lost the master: %s; reconnecting", self.id, exc)
        master._pyroRelease()
        return remote.wait_for_master(
            self.settings, self._abort if self._stopping.is_set() else self._stopping, f"worker {self.id}"
        )

    # ---- running

    def _slot(self, index: int) -> None:
        child = self._children[index] = ChildProcess(self.imports, self.settings.max_payload)
        try:
            while (batch := self._take_batch(index)) is not None:
                child = self._children[index] = self._run_batch(child, batch)
        finally:
            child.close()

    def _take_batch(self, slot: int) -> list[dict[str, Any]] | None:
        """The next tasks for one slot: a fair share of the buffer, small enough to pipeline to its child."""
        with self._cond:
            while not self._buffer and not self._draining:
                self._cond.wait()
            if not self._buffer:
                return None
            fast = self._task_time is not None and self._task_time < PIPELINE_BELOW
            share = min(PIPELINE_TASKS, -(-len(self._buffer) // self.concurrency)) if fast else 1
            batch: list[dict[str, Any]] = []
            size = 0
            while self._buffer and len(batch) < share:
                payload = self._buffer[0]["payload"]
                # Bytes as written: json escapes each non-ASCII character to up to 12 bytes; 200 for the rest.
                size += 200 + (len(payload) if payload.isascii() else 12 * len(payload))
                if batch and size > PIPELINE_BYTES:
                    break
                task = self._buffer.popleft()
                task["slot"] = slot
                self._running[task["id"]] = task
                batch.append(task)
            return batch

    def _run_batch(self, child: ChildProcess, batch: list[dict[str, Any]]) -> ChildProcess:
        """Run a batch on child and queue its results; tasks a crash left unrun go back to the buffer.

        Results are handed to the reporter as soon as taking the next one would wait, so several that
        arrive together cost one hand-over (and wake the reporter once), and none waits for a slow one.
        """
        calls = [TaskCall(t["id"], t["func"], t["payload"], t["options"].get("timeout")) for t in batch]
        if log.isEnabledFor(logging.DEBUG):
            for call in calls:
                log.debug("task %s (%s) starting", call.task_id, call.func)
        done = 0
        ready: list[dict[str, Any]] = []
        last = time.perf_counter()
        try:
            for ok, result in child.run_batch(calls):
                now = time.perf_counter()
                self._finished_task(batch[done], ok, result, now - last, ready)
                done, last = done + 1, now
                if ready and not child.has_line():
                    self._results.put(ready)
                    ready = []
        except Exception as exc:  # the child could not be run (fds, memory): fail that task, go on
            log.exception("worker %s could not run task %s", self.id, batch[done]["id"])
            self._finished_task(batch[done], False, protocol.error_info(exc, tb=""), 0.0, ready)
            done += 1
            child = self._fresh_child(child)
        finally:
            if ready:
                self._results.put(ready)
            if done < len(batch):
                self._put_back(batch[done:])
        return child

    def _put_back(self, unrun: list[dict[str, Any]]) -> None:
        """Tasks a batch did not run go back to the buffer; killed ones (all, once the grace is over) do not."""
        over = self._abort.is_set() or time.monotonic() >= self._stop_deadline
        with self._cond:
            again = []
            for task in unrun:
                del self._running[task["id"]]
                why = self._dropped.get(task["id"])
                if why == "cancelled":
                    del self._dropped[task["id"]]
                elif why is None and over:
                    self._dropped[task["id"]] = "stopped"
                elif why is None:
                    again.append(task)
            self._buffer.extendleft(reversed(again))
            self._cond.notify_all()
            self._room.notify_all()

    def _finished_task(
        self, task: dict[str, Any], ok: bool, result: Any, elapsed: float, ready: list[dict[str, Any]]
    ) -> None:
        """Account for a finished task and add its report to ready (unless it was cancelled or stopped)."""
        with self._cond:
            why = self._dropped.get(task["id"])
            if why is not None:  # cancelled, or stopped and given back: the master expects nothing
                del self._running[task["id"]]
                if why == "cancelled":
                    del self._dropped[task["id"]]
                self._room.notify_all()
                return
        if ok:
            report = {"id": task["id"], "token": task["token"], "state": DONE, "payload": result}
        else:
            report = {"id": task["id"], "token": task["token"], "state": FAILED, "error": result}
            log.warning("task %s (%s) failed: %s: %s", task["id"], task["func"], result["type"], result["message"])
        if ok and log.isEnabledFor(logging.DEBUG):
            log.debug("task %s (%s) done in %.4f s", task["id"], task["func"], elapsed)
        with self._cond:  # before the report is handed over, so the reporter sees no task left to wait for
            del self._running[task["id"]]
            self.done += 1
            self._task_time = elapsed if self._task_time is None else 0.8 * self._task_time + 0.2 * elapsed
            if self._wants_tasks():
                self._room.notify()
        ready.append(report)

    def _fresh_child(self, broken: ChildProcess) -> ChildProcess:
        """Replace a child that failed; wait a little between attempts so a lasting cause does not spin."""
        broken.kill()
        for delay in remote.retry_delays(0.1, 5.0):
            try:
                return ChildProcess(self.imports, self.settings.max_payload)
            except OSError as exc:
                log.error("worker %s cannot start a child process: %s (retrying)", self.id, exc)
                if self._abort.wait(delay):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover - retry_delays never ends

    # ---- reporting and heartbeats

    def _report_loop(self) -> None:
        """Report results in batches and heartbeat; never dies silently (a dead reporter stops the worker)."""
        try:
            self._report_until_done()
        except Exception:
            log.exception("worker %s reporter failed; stopping the worker", self.id)
            self.abort()

    def _report_until_done(self) -> None:
        master = self._reconnect_reporter([])
        last_beat = 0.0
        finished = False
        pending: list[dict[str, Any]] = []
        while master is not None:
            try:
                holding = bool(self._running or self._buffer)  # leases to renew
                interval = self._heartbeat if holding else self._heartbeat * IDLE_HEARTBEAT_FACTOR
                if time.monotonic() - last_beat >= interval:
                    self._adopt(master.heartbeat(self.id, self._status()))
                    last_beat = time.monotonic()
                if not pending and not finished:
                    finished = self._collect(pending)
                if pending:
                    self._send(master, pending)
                    pending = []
                if finished:
                    self._say_goodbye(master)
                    break
            except remote.CommunicationError as exc:
                log.warning("worker %s reporter lost the master: %s; %d results kept", self.id, exc, len(pending))
                master._pyroRelease()
                master = self._reconnect_reporter(pending)
        if master is not None:
            master._pyroRelease()

    def _send(self, master: Any, batch: list[dict[str, Any]]) -> None:
        """Report a batch; a batch the wire cannot carry is sent again as failures saying why."""
        try:
            self._follow(master.report(self.id, batch))
        except (remote.CommunicationError, remote.ProtocolError):
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. a string json cannot encode; fail those tasks, clearly
            log.error("worker %s could not report %d results (%s); reporting them as failed", self.id, len(batch), exc)
            error = protocol.error_info(RuntimeError(f"the worker could not report this task's result: {exc}"), "")
            master.report(
                self.id, [{"id": r["id"], "token": r["token"], "state": "failed", "error": error} for r in batch]
            )

    def _reconnect_reporter(self, pending: list[dict[str, Any]]) -> Any:
        """Connect to the master; a stopping worker with nothing left to report gives up instead of waiting."""
        # Retries at least once per heartbeat: the leases this worker holds must be renewed before they expire.
        for delay in remote.retry_delays(0.05, min(5.0, self._heartbeat)):
            if self._abort.is_set() or (self._stopping.is_set() and not pending and self._results.empty()):
                if self._stopping.is_set() and not self._abort.is_set():
                    log.info("worker %s: no master to say goodbye to; leaving", self.id)
                return None
            try:
                return remote.connect_master(self.settings)
            except ConnectionFailed as exc:
                log.warning("worker %s reporter waiting for the master: %s", self.id, exc)
            self._abort.wait(delay)
        return None  # pragma: no cover - retry_delays never ends

    def _follow(self, reply: Any) -> None:
        """Stop the tasks the master's reply says were cancelled."""
        cancelled = reply.get("cancel") if isinstance(reply, dict) else None
        if cancelled and isinstance(cancelled, list):
            self.cancel([task_id for task_id in cancelled if isinstance(task_id, str)])

    def _adopt(self, reply: Any) -> None:
        """Follow the master's lease timeout (heartbeat at least three times per lease) and cancellations."""
        self._follow(reply)
        lease = reply.get("lease_timeout") if isinstance(reply, dict) else None
        if isinstance(lease, (int, float)) and lease > 0:
            self._fetch_wait = min(FETCH_WAIT, lease / 3)  # an idle worker's long-polls are its sign of life
        if isinstance(lease, (int, float)) and lease > 0 and self._heartbeat > lease / 3:
            log.warning("worker %s: heartbeat %.2f s is too slow for the master's %.2f s leases; using %.2f s",
                        self.id, self._heartbeat, lease, lease / 3)  # fmt: skip
            self._heartbeat = lease / 3

    def _say_goodbye(self, master: Any) -> None:
        """Tell the master this worker is gone; without a master there is nobody to tell."""
        try:
            master.heartbeat(self.id, {"state": "stopped"})
        except remote.CommunicationError as exc:
            log.info("worker %s could not say goodbye (the master will mark it lost): %s", self.id, exc)

    def _collect(self, batch: list[dict[str, Any]]) -> bool:
        """Wait up to a heartbeat for results, then take all that are ready; True at the end sentinel."""
        try:
            first = self._results.get(timeout=self._heartbeat / 2)
        except queue.Empty:
            return False
        linger_until = time.monotonic() + LINGER if self._running or self._buffer else None
        item: list[dict[str, Any]] | None = first
        while item is not None:
            batch.extend(item)
            if len(batch) > MAX_BATCH - PIPELINE_TASKS:  # a group holds at most a pipelined batch
                return False
            try:
                item = self._results.get_nowait()
            except queue.Empty:
                remaining = 0.0 if linger_until is None else linger_until - time.monotonic()
                if remaining <= 0:
                    return False
                try:  # more results are on their way: one report for several
                    item = self._results.get(timeout=remaining)
                except queue.Empty:
                    return False
        return True

    def _status(self) -> dict[str, Any]:
        with self._cond:
            running, prefetched = list(self._running), [t["id"] for t in self._buffer]
        return {
            "host": socket.gethostname(), "pid": os.getpid(), "concurrency": self.concurrency,
            "running": running, "prefetched": prefetched,  # both keep their leases
            "state": "stopping" if self._stopping.is_set() else "live",
        }  # fmt: skip
