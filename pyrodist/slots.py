"""A worker's slots: each a thread with its own child process, running tasks from the shared buffer.

A slot takes a batch (one task, or a few fast ones pipelined to its child), runs it, and hands the results
to the reporter as soon as taking the next one would wait, so several that arrive together cost one
hand-over and none waits for a slow one. A child that crashes or times out is replaced; tasks a crash
left unrun go back to the buffer. Arguments and results too big for a message move through the spool
folder: a slot downloads the arguments into a file before the child runs the task, and uploads a result
the child wrote into a file before reporting it (`transfer.py`).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .api import MasterAPI
from .chunks import CHUNK_OPTION
from .errors import ConnectionFailed, PyrodistError, StoreUnavailable
from .protocol import ErrorRecord, error_info
from .retry import retrying
from .runner import ChildProcess, Spool, TaskCall
from .transfer import download_to_file, upload_file
from .values import BlobRef, is_blob_ref
from .wire import FetchedTask, Outcome
from .workstate import WorkerState

log = logging.getLogger(__name__)

T = TypeVar("T")
TRANSFER_RETRIES = 60.0
"""Seconds a big value's transfer is tried again while the master is away or its disk full, before the task fails."""


class Slots:
    """The slot threads of one worker."""

    def __init__(
        self,
        worker_id: str,
        state: WorkerState,
        imports: Sequence[str],
        max_value: int,
        conn: MasterAPI | None = None,
        spool: Spool | None = None,
    ) -> None:
        """max_value: the largest result; conn and spool: where big values go (without them, none are made)."""
        self._worker_id = worker_id
        self._state = state
        self._imports = list(imports)
        self._max_value = max_value
        self._conn = conn
        self._spool = spool if conn is not None else None
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
        child = self._state.children[index] = self._new_child()
        try:
            while (batch := self._state.take_batch(index)) is not None:
                child = self._state.children[index] = self._run_batch(child, batch)
        finally:
            child.close()

    def _new_child(self) -> ChildProcess:
        return ChildProcess(self._imports, self._max_value, self._spool)

    def _run_batch(self, child: ChildProcess, fetched: list[FetchedTask]) -> ChildProcess:
        """Run a batch on child and queue its results; tasks a crash left unrun go back to the buffer."""
        ready: list[Outcome] = []
        files = self._arguments(fetched, ready)
        batch = [task for task in fetched if task.id in files]
        try:
            return self._run_calls(child, batch, files, ready)
        finally:
            for path in files.values():
                if path is not None:
                    os.unlink(path)

    def _arguments(self, batch: list[FetchedTask], ready: list[Outcome]) -> dict[str, str | None]:
        """Download the big arguments of these tasks into files (failures are reported in ready); by task id,
        the file of each task that can run (None: its arguments are in its payload)."""
        files: dict[str, str | None] = {}
        for task in batch:
            if not is_blob_ref(task.payload):
                files[task.id] = None
                continue
            if self._conn is None or self._spool is None:  # no spool: the child says it cannot read them
                files[task.id] = None
                continue
            path = Path(self._spool.folder) / f"{task.id}.args"
            try:
                ref = BlobRef.parse(task.payload)
                assert ref is not None
                self._transient(functools.partial(download_to_file, self._conn, ref, path))
                files[task.id] = str(path)
            except (PyrodistError, ValueError, OSError) as exc:
                path.unlink(missing_ok=True)
                self._finished(
                    task, False, _failed(exc, f"the arguments of task {task.id} could not be read"), 0.0, ready
                )
        return files

    def _run_calls(
        self, child: ChildProcess, batch: list[FetchedTask], files: dict[str, str | None], ready: list[Outcome]
    ) -> ChildProcess:
        calls = [TaskCall(t.id, t.func, "" if files[t.id] else t.payload, t.options.get("timeout"), files[t.id],
                          bool(t.options.get(CHUNK_OPTION))) for t in batch]  # fmt: skip
        if log.isEnabledFor(logging.DEBUG):
            for call in calls:
                log.debug("task %s (%s) starting", call.task_id, call.func)
        done = 0
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
            if ok and isinstance(result, dict):
                os.unlink(result["file"])
            return
        if ok and isinstance(result, dict):  # a big result the child wrote into a file: upload it
            ok, result = self._uploaded(task, Path(result["file"]))
        if ok:
            ready.append(Outcome(task.id, task.token, True, result=result))
            if log.isEnabledFor(logging.DEBUG):
                log.debug("task %s (%s) done in %.4f s", task.id, task.func, elapsed)
        else:
            ready.append(Outcome(task.id, task.token, False, error=result))
            log.warning("task %s (%s) failed: %s: %s", task.id, task.func, result["type"], result["message"])

    def _uploaded(self, task: FetchedTask, path: Path) -> tuple[bool, Any]:
        """Upload a result file as the task's blob: (True, its reference), or (False, why it failed)."""
        assert self._conn is not None
        try:
            return True, self._transient(functools.partial(upload_file, self._conn, task.id, "r", path))
        except (PyrodistError, ValueError, OSError) as exc:
            return False, _failed(exc, f"the result of task {task.id} could not be sent to the master")
        finally:
            path.unlink(missing_ok=True)

    def _transient(self, move: Callable[[], T]) -> T:
        """Move a big value, again with capped backoff while the master cannot be reached or its disk cannot be
        used, for up to TRANSFER_RETRIES seconds (a small result would wait in the reporter as long)."""

        def waiting(exc: Exception, delay: float) -> None:
            log.warning("worker %s: %s; moving the value again in %.1f s", self._worker_id, exc, delay)

        return retrying(move, (ConnectionFailed, StoreUnavailable), stop=self._state.abort, within=TRANSFER_RETRIES,
                        start=0.2, cap=5.0, on_retry=waiting)  # fmt: skip

    def _fresh_child(self, broken: ChildProcess) -> ChildProcess:
        """Replace a child that failed; wait a little between attempts so a lasting cause does not spin."""
        broken.kill()

        def complain(exc: Exception, delay: float) -> None:
            log.error("worker %s cannot start a child process: %s (retrying)", self._worker_id, exc)

        return retrying(self._new_child, OSError, stop=self._state.abort, on_retry=complain)


def _failed(exc: Exception, what: str) -> ErrorRecord:
    """The error record of a big value that could not be moved: its exception's type, what failed and why."""
    record = error_info(exc, tb="")
    record["message"] = f"{what}: {record['message']}"
    return record
