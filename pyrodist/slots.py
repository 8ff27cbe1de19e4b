"""A worker's slots: each a thread with its own child process, running tasks from the shared buffer.

A slot takes a batch (one task, or a few fast ones pipelined to its child), runs it, and hands the results
to the reporter as soon as taking the next one would wait, so several that arrive together cost one
hand-over and none waits for a slow one. A child that crashes or times out is replaced; tasks a crash
left unrun go back to the buffer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from .protocol import error_info
from .retry import retrying
from .runner import ChildProcess, TaskCall
from .wire import FetchedTask, Outcome
from .workstate import WorkerState

log = logging.getLogger(__name__)


class Slots:
    """The slot threads of one worker."""

    def __init__(self, worker_id: str, state: WorkerState, imports: Sequence[str], max_payload: int) -> None:
        self._worker_id = worker_id
        self._state = state
        self._imports = list(imports)
        self._max_payload = max_payload
        self._threads = [
            threading.Thread(target=self._slot, args=(i,), name=f"slot-{i}", daemon=True)
            for i in range(state.concurrency)
        ]

    def start(self) -> None:
        """Start every slot."""
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        """Wait for the slots to leave; once the grace period is over (or on abort), kill what still runs."""
        for thread in self._threads:
            while thread.is_alive():
                if self._state.over():
                    for task_id in self._state.drop_running(list(self._state.running), "stopped"):
                        log.warning("task %s stopped: killing its process", task_id)
                thread.join(0.05)

    def _slot(self, index: int) -> None:
        child = self._state.children[index] = ChildProcess(self._imports, self._max_payload)
        try:
            while (batch := self._state.take_batch(index)) is not None:
                child = self._state.children[index] = self._run_batch(child, batch)
        finally:
            child.close()

    def _run_batch(self, child: ChildProcess, batch: list[FetchedTask]) -> ChildProcess:
        """Run a batch on child and queue its results; tasks a crash left unrun go back to the buffer."""
        calls = [TaskCall(t.id, t.func, t.payload, t.options.get("timeout")) for t in batch]
        if log.isEnabledFor(logging.DEBUG):
            for call in calls:
                log.debug("task %s (%s) starting", call.task_id, call.func)
        done = 0
        ready: list[Outcome] = []
        last = time.perf_counter()
        try:
            for ok, result in child.run_batch(calls):
                now = time.perf_counter()
                self._finished(batch[done], ok, result, now - last, ready)
                done, last = done + 1, now
                if ready and not child.has_result():
                    self._state.results.put(ready)
                    ready = []
        except Exception as exc:  # the child could not be run (fds, memory): fail that task, go on
            log.exception("worker %s could not run task %s", self._worker_id, batch[done].id)
            self._finished(batch[done], False, error_info(exc, tb=""), 0.0, ready)
            done += 1
            child = self._fresh_child(child)
        finally:
            if ready:
                self._state.results.put(ready)
            if done < len(batch):
                self._state.put_back(batch[done:])
        return child

    def _finished(self, task: FetchedTask, ok: bool, result: Any, elapsed: float, ready: list[Outcome]) -> None:
        """Account for a finished task and add its report to ready (unless it was cancelled or stopped)."""
        if not self._state.finished(task.id, elapsed):
            return
        if ok:
            ready.append(Outcome(task.id, task.token, True, result=result))
            if log.isEnabledFor(logging.DEBUG):
                log.debug("task %s (%s) done in %.4f s", task.id, task.func, elapsed)
        else:
            ready.append(Outcome(task.id, task.token, False, error=result))
            log.warning("task %s (%s) failed: %s: %s", task.id, task.func, result["type"], result["message"])

    def _fresh_child(self, broken: ChildProcess) -> ChildProcess:
        """Replace a child that failed; wait a little between attempts so a lasting cause does not spin."""
        broken.kill()

        def complain(exc: Exception, delay: float) -> None:
            log.error("worker %s cannot start a child process: %s (retrying)", self._worker_id, exc)

        return retrying(
            lambda: ChildProcess(self._imports, self._max_payload), OSError, stop=self._state.abort, on_retry=complain
        )
