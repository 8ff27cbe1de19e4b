"""Running tasks in child processes: the worker's handle on one (`ChildProcess`) and the messages between them.

A worker runs each task in one of its long-lived child processes (`python -m pyrodist.child`), so a
task that crashes or runs past its time limit kills a child, never the worker. Parent and child
speak length-prefixed `rawjson` messages over private pipes (no pickle; a frame payload stays bytes):
the child moves its own stdout to stderr at start, so a task's print() cannot corrupt the protocol.

    parent ──[[task_id, func, payload, args_file, chunk], ...]──▶ child: resolve, decode, call, encode, in turn
    parent ◀──[task_id, true, result] or [task_id, false, {type, message, traceback}]── one message per task

Values too big for a message stay out of the pipes: the worker downloads big arguments into a file the
child maps (`args_file`), and a child writes a big result into a file of the worker's spool folder
(`result` is then `{"file": path}`), which the worker uploads.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from . import protocol, rawjson, values

Result = tuple[bool, Any]
"""(True, encoded result) or (False, error record)."""
PIPELINE_BYTES = 32 * 1024
"""Most input bytes written to a child in one batch (below a pipe's buffer, so writing never blocks)."""
LENGTH = struct.Struct("!I")
"""The length before each message on a child's pipes."""


def write_message(stream: Any, value: Any) -> None:
    """Write value as one message to a child's pipe (a big bytes value is written as it is, not copied first)."""
    parts = rawjson.pack_parts(value)
    if len(parts) == 1:  # no bytes inside: one write (most messages)
        stream.write(LENGTH.pack(len(parts[0])) + parts[0])
    else:
        stream.write(LENGTH.pack(sum(len(p) if isinstance(p, bytes) else p.nbytes for p in parts)))
        for part in parts:
            stream.write(part)
    stream.flush()


class TaskCall(NamedTuple):
    """One task as a child runs it."""

    task_id: str
    func: str
    payload: values.Payload
    timeout: float | None = None
    args_file: str | None = None
    """Where its arguments are, when too big for a message (payload is then empty)."""
    chunk: bool = False
    """Whether it is a chunk of calls (`chunks.py`)."""


class Spool(NamedTuple):
    """Where a child writes results too big for a message (more than inline bytes encoded)."""

    folder: str
    inline: int


# ---- the parent's handle ----------------------------------------------------------------------


class ChildProcess:
    """One child process that runs tasks one at a time for a worker slot."""

    def __init__(
        self, modules: Sequence[str], max_payload: int = values.MAX_PAYLOAD, spool: Spool | None = None
    ) -> None:
        """max_payload: the largest result it encodes; with a spool, results over spool.inline go to files there."""
        self._modules = list(modules)
        self._max_payload = max_payload
        self._spool = spool
        self._proc: subprocess.Popen[bytes] | None = None
        self._buffer, self._start = b"", 0  # what was read from the child and not taken yet: _buffer[_start:]
        self._interrupted = False
        self._poll: select.poll | None = None
        self._spawn()

    @property
    def pid(self) -> int:
        """The child's process id."""
        assert self._proc is not None
        return self._proc.pid

    def _spawn(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        spool = [self._spool.folder, str(self._spool.inline)] if self._spool else ["", "0"]
        args = [sys.executable, "-m", "pyrodist.child", str(self._max_payload), *spool, *self._modules]
        # Own session: a signal to the worker's process group (Ctrl-C, systemd) must not kill running tasks;
        # the worker decides, and a child whose worker died exits when its input closes.
        self._proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True
        )
        self._buffer, self._start = b"", 0
        self._interrupted = False
        assert self._proc.stdout is not None
        self._poll = select.poll()  # one per child: an epoll object per line read cost more than the task
        self._poll.register(self._proc.stdout.fileno(), select.POLLIN)

    def interrupt(self) -> None:
        """Kill the child from another thread: the batch it runs ends with no result for the task killed."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._interrupted = True
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    def run(self, task_id: str, func_ref: str, payload: values.Payload, timeout: float | None = None) -> Result:
        """Run one task, killing the child (and starting a new one) on a time limit or crash."""
        return next(self.run_batch([TaskCall(task_id, func_ref, payload, timeout)]))

    def run_batch(self, calls: Sequence[TaskCall]) -> Iterator[Result]:
        """Run tasks in order, pipelined: all are written at once, results read as they come.

        Yields one result per task. A crash or a time limit yields that task's failure and ends the
        batch early: the child is replaced, and the tasks after it were not run (the caller runs them
        again); after `interrupt()` the batch ends without a result for the task that was running.
        Each time limit counts from the previous result, when the child starts that task.
        Keep a batch's input small (PIPELINE_BYTES): the whole batch is written before anything is read.
        """
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        with contextlib.suppress(BrokenPipeError):  # the child is gone: reading says so
            write_message(proc.stdin, [[c.task_id, c.func, c.payload, c.args_file, c.chunk] for c in calls])
        started = time.monotonic()
        for call in calls:
            try:
                message = self._read_message(proc, None if call.timeout is None else started + call.timeout)
            except OSError:
                message = b""
            if message is None:
                self.restart()
                seconds = f"{call.timeout:g}"
                late = TimeoutError(
                    f"task {call.task_id} ran out of time: killed after {seconds} s (timeout={seconds})"
                )
                yield False, protocol.error_info(late, tb="")
                return
            if not message:
                code = proc.wait()
                interrupted = self._interrupted
                self._spawn()
                if interrupted:
                    return
                how = f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
                died = ChildProcessError(f"the process running task {call.task_id} ({call.func}) died ({how})")
                yield False, protocol.error_info(died, tb="")
                return
            got_id, ok, result = rawjson.unpack(message)
            if got_id != call.task_id:
                raise RuntimeError(f"child answered for task {got_id} while running {call.task_id}")
            started = time.monotonic()
            yield bool(ok), result

    def _read_message(self, proc: subprocess.Popen[bytes], deadline: float | None) -> bytes | memoryview | None:
        """The next message from the child; b'' when it died, None when the deadline passed."""
        buffer, start = self._buffer, self._start
        if len(buffer) - start >= LENGTH.size:  # the usual case: the message was read with the ones before it
            end = start + LENGTH.size + LENGTH.unpack_from(buffer, start)[0]
            if end <= len(buffer):
                self._start = end
                return buffer[start + LENGTH.size : end]
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while len(buffer) - start < LENGTH.size:
            chunk = self._read(fd, 1 << 16, deadline)
            if not chunk:
                return chunk
            buffer, start = buffer[start:] + chunk, 0
        end = start + LENGTH.size + LENGTH.unpack_from(buffer, start)[0]
        if end - len(buffer) <= 1 << 16:  # short: read on into the same buffer
            while len(buffer) < end:
                chunk = self._read(fd, 1 << 16, deadline)
                if not chunk:
                    return chunk
                buffer, start, end = buffer[start:] + chunk, 0, end - start
            self._buffer, self._start = buffer, end
            return buffer[start + LENGTH.size : end]
        message = bytearray(end - start - LENGTH.size)  # long: into a buffer of its own size, once
        have = len(buffer) - start - LENGTH.size
        message[:have] = memoryview(buffer)[start + LENGTH.size :]
        self._buffer, self._start = b"", 0
        with memoryview(message) as view:
            while have < len(message):
                if not self._ready(deadline):
                    return None
                got = os.readv(fd, [view[have:]])
                if not got:
                    return b""
                have += got
        return memoryview(message)

    def _read(self, fd: int, most: int, deadline: float | None) -> bytes | None:
        """Up to most bytes from the child's output; b'' when it died, None when the deadline passed."""
        return os.read(fd, most) if self._ready(deadline) else None

    def _ready(self, deadline: float | None) -> bool:
        """Whether the child's output can be read before deadline (without one, a blocking read waits as well)."""
        if deadline is None:
            return True
        assert self._poll is not None
        return bool(self._poll.poll(max(0, math.ceil((deadline - time.monotonic()) * 1000))))

    def has_result(self) -> bool:
        """Whether the next result is already read (taking it will not wait)."""
        buffer, start = self._buffer, self._start
        if len(buffer) - start < LENGTH.size:
            return False
        length: int = LENGTH.unpack_from(buffer, start)[0]
        return start + LENGTH.size + length <= len(buffer)

    def restart(self) -> None:
        """Kill the child and start a fresh one."""
        self.kill()
        self._spawn()

    def kill(self) -> None:
        """Kill the child at once."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def close(self, timeout: float = 5.0) -> None:
        """Let the child exit by closing its input; kill it if it does not."""
        proc = self._proc
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):  # it is gone already
                proc.stdin.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
