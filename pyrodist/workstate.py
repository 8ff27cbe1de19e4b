"""What a worker holds, shared by its fetcher, slots and reporter under one lock.

Tasks move ``buffer`` (fetched, not started) ──take──▶ ``running`` (in a slot's child) ──finish──▶ the
results queue, whose groups the reporter sends. A running task being killed is in ``dropped`` with why:
"cancelled" (the master cancelled it: nothing is reported) or "stopped" (the grace period ended: it is
given back). One lock, two conditions: a finished task need not wake a slot, nor a fetch a slot.
"""

from __future__ import annotations

import collections
import os
import queue
import socket
import threading
import time

from .runner import PIPELINE_BYTES, ChildProcess
from .wire import FetchedTask, Lease, Outcome, WorkerStatus

FETCH_WAIT = 2.0
"""Seconds one fetch long-polls; also how soon a stopping worker notices."""
BUFFER_SECONDS = 0.05
"""Adaptive prefetch holds about this much work per slot (judged from the observed task time)."""
MAX_PREFETCH = 256
PIPELINE_TASKS = 16
"""Most tasks a slot hands its child at once (see runner.ChildProcess.run_batch)."""
PIPELINE_BELOW = 0.005
"""Tasks are pipelined only while they take less than this (seconds): a slow one must not hold others back."""


class WorkerState:
    """The shared state of one worker's threads (see the module docstring)."""

    def __init__(
        self, concurrency: int, prefetch: int | None, max_tasks: int | None, heartbeat: float, lease_timeout: float
    ) -> None:
        self.concurrency = concurrency
        self.prefetch = prefetch  # None: adaptive, from the observed task time
        self.max_tasks = max_tasks
        lock = threading.RLock()
        self.tasks = threading.Condition(lock)  # slots wait here for tasks in the buffer
        self.room = threading.Condition(lock)  # the fetcher waits here for room in the buffer
        self.buffer: collections.deque[FetchedTask] = collections.deque()
        self.running: dict[str, int] = {}  # task id -> the slot running it
        self.tokens: dict[str, int] = {}  # lease tokens of running tasks, and of stopped ones until given back
        self.children: list[ChildProcess | None] = [None] * concurrency  # per slot, to kill one task
        self.dropped: dict[str, str] = {}  # running tasks being killed, and why: "cancelled" or "stopped"
        self.results: queue.Queue[list[Outcome] | None] = queue.Queue()  # reports, a group per item
        self.task_time: float | None = None  # moving average of one task's run time, seconds
        self.fetched = 0
        self.done = 0
        self.drained = False  # the last fetch got fewer tasks than it asked for
        self.draining = False  # no more tasks will come: slots leave once the buffer is empty
        self.stopping = threading.Event()  # stop fetching, finish what runs
        self.abort = threading.Event()  # give up on reaching the master
        self.stop_deadline = float("inf")  # when running tasks are killed and given back
        self.heartbeat = heartbeat  # seconds; at most a third of the master's lease timeout
        # An idle worker's long-polls are its sign of life: a third of a lease (the master's reply has the real one).
        self.fetch_wait = min(FETCH_WAIT, lease_timeout / 3)

    def over(self) -> bool:
        """Whether running tasks are to be killed now (aborted, or the grace period ended)."""
        return self.abort.is_set() or time.monotonic() >= self.stop_deadline

    def current_prefetch(self) -> int:
        """Tasks fetched per call: the --prefetch given, else about BUFFER_SECONDS of work per slot."""
        if self.prefetch is not None:
            return self.prefetch
        if self.task_time is None:
            return self.concurrency  # nothing measured yet: fair
        wanted = self.concurrency * BUFFER_SECONDS / max(self.task_time, 1e-6)
        return max(1, min(MAX_PREFETCH, round(wanted)))

    def wants_tasks(self) -> bool:
        """Whether to ask for more: the tasks held are down to the low-water mark (half the prefetch).

        Once the master had fewer tasks than asked for, only a free slot asks: a fetch then would only wait,
        and sending it while a task runs would take CPU from that task and its result on the way back.
        """
        held = len(self.buffer) + len(self.running)
        if self.drained:
            return held < self.concurrency
        return held <= self.concurrency - 1 + self.current_prefetch() // 2

    def next_fetch(self) -> tuple[int, float]:
        """How many tasks the next fetch asks for (0 or less once max_tasks is reached), and how long it may wait.

        Only a free slot long-polls: a worker whose slots are all busy takes what is pending now, and once the
        master had fewer than asked for, it stops asking until a slot is free (lock held).
        """
        held = len(self.buffer) + len(self.running)
        want = self.concurrency + self.current_prefetch() - 1 - held
        if self.max_tasks is not None:
            want = min(want, self.max_tasks - self.fetched)
        return want, self.fetch_wait if held < self.concurrency else 0.0

    def add(self, tasks: list[FetchedTask], asked: int) -> bool:
        """Buffer fetched tasks for the slots; whether the worker holds nothing at all now."""
        with self.tasks:
            self.buffer.extend(tasks)
            self.fetched += len(tasks)
            self.drained = len(tasks) < asked
            self.tasks.notify_all()
            return not self.buffer and not self.running

    def take_unstarted(self) -> list[Lease]:
        """Empty the buffer; the leases (id and token) of the tasks it held."""
        with self.tasks:
            unstarted = [(task.id, task.token) for task in self.buffer]
            self.buffer.clear()
        return unstarted

    def take_batch(self, slot: int) -> list[FetchedTask] | None:
        """The next tasks for one slot: a fair share of the buffer, small enough to pipeline to its child."""
        with self.tasks:
            while not self.buffer and not self.draining:
                self.tasks.wait()
            if not self.buffer:
                return None
            fast = self.task_time is not None and self.task_time < PIPELINE_BELOW
            share = min(PIPELINE_TASKS, -(-len(self.buffer) // self.concurrency)) if fast else 1
            batch: list[FetchedTask] = []
            size = 0
            while self.buffer and len(batch) < share:
                payload = self.buffer[0].payload
                # Bytes as written: json escapes each non-ASCII character to up to 12 bytes; 200 for the rest.
                size += 200 + (len(payload) if isinstance(payload, bytes) or payload.isascii() else 12 * len(payload))
                if batch and size > PIPELINE_BYTES:
                    break
                task = self.buffer.popleft()
                self.running[task.id] = slot
                self.tokens[task.id] = task.token
                batch.append(task)
            return batch

    def put_back(self, unrun: list[FetchedTask]) -> None:
        """Tasks a batch did not run go back to the buffer; killed ones (all, once the grace is over) do not."""
        over = self.over()
        with self.tasks:
            again = []
            for task in unrun:
                task_id = task.id
                del self.running[task_id]
                why = self.dropped.get(task_id)
                if why == "cancelled":
                    del self.dropped[task_id]
                elif why is None and over:
                    self.dropped[task_id] = "stopped"
                elif why is None:
                    again.append(task)
                if self.dropped.get(task_id) != "stopped":
                    del self.tokens[task_id]
            self.buffer.extendleft(reversed(again))
            self.tasks.notify_all()
            self.room.notify_all()

    def finished(self, task_id: str, elapsed: float) -> bool:
        """Account for a task whose child answered; False when it was dropped (nothing is to be reported)."""
        with self.tasks:
            del self.running[task_id]
            why = self.dropped.get(task_id)
            if why != "stopped":
                del self.tokens[task_id]
            if why is not None:  # cancelled, or stopped and given back: the master expects nothing
                if why == "cancelled":
                    del self.dropped[task_id]
                self.room.notify_all()
                return False
            self.done += 1
            self.task_time = elapsed if self.task_time is None else 0.8 * self.task_time + 0.2 * elapsed
            if self.wants_tasks():
                self.room.notify()
        return True

    def cancel(self, task_ids: list[str]) -> tuple[list[str], list[str]]:
        """The master cancelled these tasks: drop the unstarted ones, kill the running ones' children; both's ids."""
        with self.tasks:
            unstarted = {task.id for task in self.buffer} & set(task_ids)
            if unstarted:
                kept = [task for task in self.buffer if task.id not in unstarted]
                self.buffer.clear()
                self.buffer.extend(kept)
                self.room.notify_all()
        return sorted(unstarted), self.drop_running(task_ids, "cancelled")

    def drop_running(self, task_ids: list[str], why: str) -> list[str]:
        """Kill the children running these tasks; nothing is reported for them. The ids killed."""
        killed = []
        with self.tasks:
            for task_id in task_ids:
                slot = self.running.get(task_id)
                if slot is None or task_id in self.dropped:
                    continue
                self.dropped[task_id] = why
                killed.append(task_id)
                child = self.children[slot]
                if child is not None:
                    child.interrupt()
        return killed

    def stopped_leases(self) -> list[Lease]:
        """Running tasks killed at the end of the grace period (to be given back): their ids and tokens."""
        with self.tasks:
            return [(task_id, self.tokens[task_id]) for task_id, why in self.dropped.items() if why == "stopped"]

    def holding(self) -> bool:
        """Whether any task is held (leases to renew)."""
        return bool(self.running or self.buffer)

    def drain(self) -> None:
        """No more tasks will come: wake the slots so they leave once the buffer is empty."""
        with self.tasks:
            self.draining = True
            self.tasks.notify_all()
            self.room.notify_all()

    def status(self) -> WorkerStatus:
        """What the next heartbeat tells the master."""
        with self.tasks:
            running = [(task_id, self.tokens[task_id]) for task_id in self.running]
            prefetched = [(task.id, task.token) for task in self.buffer]
        state = "stopping" if self.stopping.is_set() else "live"
        return WorkerStatus(socket.gethostname(), os.getpid(), self.concurrency, running, prefetched, state)
