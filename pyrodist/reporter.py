"""A worker's reporter: sends results in batches, heartbeats, and follows what the master answers.

It batches whatever results are ready (lingering a moment only while other tasks are in flight), beats at
least three times per lease while the worker holds tasks (and more rarely when idle: its long-polls tell the
master it lives), stops the tasks the master's replies say were cancelled, and says goodbye at the end.
Results that could not be sent are kept until the master is back, or until its task store can record them
again (heartbeats go on meanwhile, so the leases live). It never dies silently: a reporter that fails
aborts the worker.
"""

from __future__ import annotations

import logging
import operator
import queue
import threading
import time
from collections.abc import Callable

from .connection import Connection
from .errors import ConnectionFailed, StoreUnavailable
from .protocol import MAX_BATCH, OVER_LIMIT, error_info, in_messages, wire_estimate
from .retry import retry_delays, retrying
from .wire import HeartbeatReply, Outcome, WorkerStatus
from .workstate import FETCH_WAIT, PIPELINE_TASKS, WorkerState

log = logging.getLogger(__name__)

IDLE_HEARTBEAT_FACTOR = 4
"""An idle worker heartbeats this many times less often: its long-polls already tell the master it lives."""
LINGER = 0.002
"""Seconds the reporter waits for more results to batch, only while other tasks are in flight."""


class Reporter:
    """The reporting thread of one worker."""

    def __init__(
        self, worker_id: str, state: WorkerState, conn: Connection, on_failure: Callable[[], None], budget: int
    ) -> None:
        self._worker_id = worker_id
        self._budget = budget  # bytes of results per report call (the master reads at most max_message of them)
        self._state = state
        self._conn = conn
        self._on_failure = on_failure
        self._thread = threading.Thread(target=self._run, name="reporter", daemon=True)

    def start(self) -> None:
        """Start reporting."""
        self._thread.start()

    def finish(self) -> None:
        """Report what is left, say goodbye, and wait for the thread."""
        self._state.results.put(None)
        self._thread.join()

    def _run(self) -> None:
        try:
            self._report_until_done()
        except Exception:
            log.exception("worker %s reporter failed; stopping the worker", self._worker_id)
            self._on_failure()

    def _report_until_done(self) -> None:
        state = self._state
        last_beat = 0.0
        told_stopping = False
        finished = False
        pending: list[Outcome] = []
        store_waits = None  # backoff while the master's store cannot record results
        while True:
            try:
                interval = state.heartbeat if state.holding() else state.heartbeat * IDLE_HEARTBEAT_FACTOR
                stopping = state.stopping.is_set() and not told_stopping  # the master then ends its long-poll
                if stopping or time.monotonic() - last_beat >= interval:
                    told_stopping = told_stopping or state.stopping.is_set()
                    self._adopt(self._conn.heartbeat(self._worker_id, state.status()))
                    last_beat = time.monotonic()
                if not pending and not finished:
                    finished = self._collect(pending)
                if pending:
                    self._send(pending)
                    if store_waits is not None:
                        log.info("worker %s: the master records results again", self._worker_id)
                        store_waits = None
                if finished:
                    self._say_goodbye()
                    return
            except ConnectionFailed as exc:
                log.warning("worker %s reporter lost the master: %s; %d results kept", self._worker_id, exc,
                            len(pending))  # fmt: skip
                if not self._wait_for_master(pending):
                    return
            except StoreUnavailable as exc:
                if store_waits is None:
                    log.warning("worker %s: %s; %d results kept and sent again", self._worker_id, exc, len(pending))
                    store_waits = retry_delays(0.05, min(2.0, state.heartbeat))
                if state.abort.wait(next(store_waits)):
                    return

    def _wait_for_master(self, pending: list[Outcome]) -> bool:
        """Wait for the master; a stopping worker with nothing left to report gives up instead (False)."""
        state = self._state

        def nothing_to_tell(exc: Exception) -> bool:
            with state.results.mutex:  # the end sentinel (None) and a wake-up ([]) are no results
                unsent = any(state.results.queue)
            return state.stopping.is_set() and not pending and not unsent

        def waiting(exc: Exception, delay: float) -> None:
            log.warning("worker %s reporter waiting for the master: %s", self._worker_id, exc)

        try:  # at least once per heartbeat: the leases this worker holds must be renewed before they expire
            retrying(self._conn.ping, ConnectionFailed, stop=state.abort, give_up=nothing_to_tell, start=0.05,
                     cap=min(5.0, state.heartbeat), on_retry=waiting)  # fmt: skip
        except ConnectionFailed:
            if not state.abort.is_set():
                log.info("worker %s: no master to say goodbye to; leaving", self._worker_id)
            return False
        return True

    def _send(self, pending: list[Outcome]) -> None:
        """Report pending results in calls the master reads, taking each call's results out once reported."""
        results = sum(map(len, filter(None, map(_RESULT, pending))))  # most reports need no cutting at all
        whole = not any(map(_ERROR, pending)) and 100 * len(pending) + 4 * results <= self._budget
        for batch in [list(pending)] if whole else in_messages(list(pending), _size, self._budget):
            self._report(batch)
            del pending[: len(batch)]

    def _report(self, batch: list[Outcome]) -> None:
        """Report a batch (in halves, if the master reads less at once); one the wire cannot carry is sent again
        as failures saying why."""
        try:
            self._follow(self._conn.report(self._worker_id, batch).cancel)
        except (ConnectionFailed, StoreUnavailable):
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. a string json cannot encode; fail those tasks, clearly
            if OVER_LIMIT in str(exc) and len(batch) > 1:  # a master with a smaller --max-payload than this worker
                self._report(batch[: len(batch) // 2])
                self._report(batch[len(batch) // 2 :])
                return
            log.error("worker %s could not report %d results (%s); reporting them as failed", self._worker_id,
                      len(batch), exc)  # fmt: skip
            error = error_info(RuntimeError(f"the worker could not report this task's result: {exc}"), "")
            self._conn.report(self._worker_id, [Outcome(o.task_id, o.token, False, error=error) for o in batch])

    def _follow(self, cancelled: list[str]) -> None:
        """Stop the tasks the master says were cancelled."""
        if not cancelled:
            return
        unstarted, killed = self._state.cancel(cancelled)
        for task_id in unstarted:
            log.info("task %s cancelled before it started", task_id)
        for task_id in killed:
            log.warning("task %s cancelled: killing its process", task_id)

    def _adopt(self, reply: HeartbeatReply) -> None:
        """Follow the master's lease timeout (heartbeat at least three times per lease) and cancellations."""
        state = self._state
        self._follow(reply.cancel)
        lease = reply.lease_timeout
        if lease > 0:
            state.fetch_wait = min(FETCH_WAIT, lease / 3)  # an idle worker's long-polls are its sign of life
            if state.heartbeat > lease / 3:
                log.warning("worker %s: heartbeat %.2f s is too slow for the master's %.2f s leases; using %.2f s",
                            self._worker_id, state.heartbeat, lease, lease / 3)  # fmt: skip
                state.heartbeat = lease / 3

    def _say_goodbye(self) -> None:
        """Tell the master this worker is gone; without a master there is nobody to tell."""
        try:
            self._conn.heartbeat(self._worker_id, WorkerStatus(state="stopped"))
        except ConnectionFailed as exc:
            log.info("worker %s could not say goodbye (the master will mark it lost): %s", self._worker_id, exc)

    def _collect(self, batch: list[Outcome]) -> bool:
        """Wait up to half a heartbeat for results, then take all that are ready; True at the end sentinel."""
        state = self._state
        try:
            first = state.results.get(timeout=state.heartbeat / 2)
        except queue.Empty:
            return False
        linger_until = time.monotonic() + LINGER if state.holding() else None
        item: list[Outcome] | None = first
        while item is not None:
            batch.extend(item)
            if len(batch) > MAX_BATCH - PIPELINE_TASKS:  # a group holds at most a pipelined batch
                return False
            try:
                item = state.results.get_nowait()
            except queue.Empty:
                remaining = 0.0 if linger_until is None else linger_until - time.monotonic()
                if remaining <= 0:
                    return False
                try:  # more results are on their way: one report for several
                    item = state.results.get(timeout=remaining)
                except queue.Empty:
                    return False
        return True


_RESULT, _ERROR = operator.attrgetter("result"), operator.attrgetter("error")


def _size(outcome: Outcome) -> int:
    """About how many bytes an outcome takes in a report call."""
    error = outcome.error
    texts = (outcome.result,) if error is None else (outcome.result, error["message"], error.get("traceback"))
    return 100 + sum(wire_estimate(text) for text in texts)
