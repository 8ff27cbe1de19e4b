"""Running tasks: resolving function references against an allow-list, in child processes.

A worker runs each task in one of its long-lived child processes (`python -m pyrodist.runner`), so a
task that crashes or runs past its time limit kills a child, never the worker. Parent and child
speak length-prefixed `rawjson` messages over private pipes (no pickle; a frame payload stays bytes):
the child moves its own stdout to stderr at start, so a task's print() cannot corrupt the protocol.

    parent ──[[task_id, func, payload, args_file], ...]──▶ child: resolve, decode, call, encode, each in turn
    parent ◀──[task_id, true, result] or [task_id, false, {type, message, traceback}]── one message per task

Values too big for a message stay out of the pipes: the worker downloads big arguments into a file the
child maps (`args_file`), and a child writes a big result into a file of the worker's spool folder
(`result` is then `{"file": path}`), which the worker uploads.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import mmap
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

from . import frames, protocol, rawjson, values
from .errors import ConfigError, FunctionNotAllowed, FunctionRefError

Result = tuple[bool, Any]
"""(True, encoded result) or (False, error record)."""
PIPELINE_BYTES = 32 * 1024
"""Most input bytes written to a child in one batch (below a pipe's buffer, so writing never blocks)."""
_LENGTH = struct.Struct("!I")
"""The length before each message on a child's pipes."""


def _write_message(stream: Any, value: Any) -> None:
    """Write value as one message to a child's pipe (a big bytes value is written as it is, not copied first)."""
    parts = rawjson.pack_parts(value)
    if len(parts) == 1:  # no bytes inside: one write (most messages)
        stream.write(_LENGTH.pack(len(parts[0])) + parts[0])
    else:
        stream.write(_LENGTH.pack(sum(len(p) if isinstance(p, bytes) else p.nbytes for p in parts)))
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


class Spool(NamedTuple):
    """Where a child writes results too big for a message (more than inline bytes encoded)."""

    folder: str
    inline: int


class AllowList:
    """The modules whose public functions a worker may run."""

    def __init__(self, modules: Sequence[str]) -> None:
        self.modules: dict[str, types.ModuleType] = {}
        for name in modules:
            try:
                self.modules[name] = importlib.import_module(name)
            except Exception as exc:  # noqa: BLE001 - any import failure is the user's to see, with its cause
                raise ConfigError(f"cannot import module {name!r} given with -I: {type(exc).__name__}: {exc}") from None
        self._cache: dict[str, Callable[..., Any]] = {}

    def describe(self) -> str:
        """The allowed modules, for messages."""
        return ", ".join(sorted(self.modules)) or "none"

    def resolve(self, ref: str) -> Callable[..., Any]:
        """The function ref names, or FunctionNotAllowed saying why not."""
        func = self._cache.get(ref)
        if func is None:
            func = self._cache[ref] = self._resolve(ref)
        return func

    def _resolve(self, ref: str) -> Callable[..., Any]:
        try:
            module_name, name = protocol.split_ref(ref)
        except FunctionRefError as exc:
            raise FunctionNotAllowed(str(exc)) from None
        hint = f"this worker allows modules {self.describe()} (start it with -I MODULE to allow more)"
        if name.startswith("_"):
            raise FunctionNotAllowed(f"function {ref!r} is not allowed: private names are never run; {hint}")
        for allowed_name, module in self._candidates(module_name):
            func = getattr(module, name, None)
            if func is None or not callable(func) or isinstance(func, types.ModuleType):
                continue
            exported = name in getattr(module, "__all__", ())
            defined_here = getattr(func, "__module__", None) in (allowed_name, "_" + allowed_name)
            if (exported or defined_here) and (allowed_name == module_name or _same(module_name, name, func)):
                return func  # type: ignore[no-any-return]
        if module_name in self.modules:
            raise FunctionNotAllowed(
                f"unknown task function {ref!r}: module {module_name} has no public function {name!r}"
            )
        raise FunctionNotAllowed(f"function {ref!r} is not allowed on this worker: {hint}")

    def _candidates(self, module_name: str) -> list[tuple[str, types.ModuleType]]:
        """The allowed module itself, else allowed modules that may re-export from module_name."""
        if module_name in self.modules:
            return [(module_name, self.modules[module_name])]
        if module_name not in sys.modules:
            return []  # never import a module only because a task named it
        return list(self.modules.items())


def _same(module_name: str, name: str, func: object) -> bool:
    """Whether module_name (already imported) defines name as this very object (a re-export)."""
    return getattr(sys.modules.get(module_name), name, None) is func


# ---- the child process ------------------------------------------------------------------------


def run_task(
    allow: AllowList,
    func_ref: str,
    payload: values.Payload,
    limit: int = values.MAX_PAYLOAD,
    args_file: str | None = None,
    spool: Spool | None = None,
) -> Result:
    """Resolve, decode, call and encode one task, turning every failure into an error record."""
    try:
        func = allow.resolve(func_ref)
        args, kwargs = _read_call(args_file) if args_file else values.decode_call(payload)
    except Exception as exc:  # noqa: BLE001 - refusals and undecodable arguments fail the task, not the child
        return False, protocol.error_info(exc, tb="")
    try:
        value = func(*args, **kwargs)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the task's own error (sys.exit() too): the child goes on
        return False, protocol.error_info(exc, _task_traceback(exc))
    try:
        what = f"the result of {func_ref}"
        if spool is None:
            return True, values.encode_value(value, what, limit)
        encoded = values.encode_big(value, what, limit, spool.inline)
        return True, _spooled(encoded, spool.folder) if isinstance(encoded, values.BigValue) else encoded
    except Exception as exc:  # noqa: BLE001 - a value that cannot be sent (or too large): a failed task
        return False, protocol.error_info(exc, tb="")


def _read_call(path: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A call's arguments from a file the worker downloaded them into (a frame mapped, not read into memory)."""
    with open(path, "rb") as source:
        if os.fstat(source.fileno()).st_size == 0:
            raise ValueError(f"the arguments file {path} is empty")
        mapped = mmap.mmap(source.fileno(), 0, access=mmap.ACCESS_READ)
    view = memoryview(mapped)
    try:
        if view[:1] != bytes([frames.VERSION]):
            return values.decode_call(str(view, "utf-8", "surrogatepass"))
        args, kwargs = frames.decode_frame(view)
        return tuple(args), kwargs
    finally:
        with contextlib.suppress(BufferError):  # a view of it still held by an error's traceback: GC closes it
            view.release()
            mapped.close()


def _spooled(big: values.BigValue, folder: str) -> dict[str, str]:
    """Write a big result's payload into a new file of the spool folder; what the child answers instead of it."""
    handle, path = tempfile.mkstemp(dir=folder, suffix=".result")
    with os.fdopen(handle, "wb") as out:
        for part in big.parts:
            out.write(part)
    return {"file": path}


def _task_traceback(exc: BaseException) -> str:
    """The traceback without this module's own frame."""
    frames = traceback.extract_tb(exc.__traceback__)[1:]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)] if frames else []
    return "".join(lines + traceback.format_exception_only(type(exc), exc))


def child_main(limit: int, spool: Spool | None, modules: Sequence[str]) -> None:
    """The child's loop: read task messages, write result messages, until the parent closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when to stop, not the terminal
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(2, 1)  # a task's print() goes to the worker's stderr, not into the protocol
    sys.stdout = sys.stderr
    allow = AllowList(modules)
    while len(head := proto_in.read(_LENGTH.size)) == _LENGTH.size:
        for task_id, func_ref, payload, args_file in rawjson.unpack(proto_in.read(_LENGTH.unpack(head)[0])):
            ok, result = run_task(allow, func_ref, payload, limit, args_file, spool)
            _write_message(proto_out, [task_id, ok, result])


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
        args = [sys.executable, "-m", "pyrodist.runner", str(self._max_payload), *spool, *self._modules]
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
            _write_message(proc.stdin, [[c.task_id, c.func, c.payload, c.args_file] for c in calls])
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
        if len(buffer) - start >= _LENGTH.size:  # the usual case: the message was read with the ones before it
            end = start + _LENGTH.size + _LENGTH.unpack_from(buffer, start)[0]
            if end <= len(buffer):
                self._start = end
                return buffer[start + _LENGTH.size : end]
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while len(buffer) - start < _LENGTH.size:
            chunk = self._read(fd, 1 << 16, deadline)
            if not chunk:
                return chunk
            buffer, start = buffer[start:] + chunk, 0
        end = start + _LENGTH.size + _LENGTH.unpack_from(buffer, start)[0]
        if end - len(buffer) <= 1 << 16:  # short: read on into the same buffer
            while len(buffer) < end:
                chunk = self._read(fd, 1 << 16, deadline)
                if not chunk:
                    return chunk
                buffer, start, end = buffer[start:] + chunk, 0, end - start
            self._buffer, self._start = buffer, end
            return buffer[start + _LENGTH.size : end]
        message = bytearray(end - start - _LENGTH.size)  # long: into a buffer of its own size, once
        have = len(buffer) - start - _LENGTH.size
        message[:have] = memoryview(buffer)[start + _LENGTH.size :]
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
        if len(buffer) - start < _LENGTH.size:
            return False
        length: int = _LENGTH.unpack_from(buffer, start)[0]
        return start + _LENGTH.size + length <= len(buffer)

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


if __name__ == "__main__":
    folder, inline = sys.argv[2], int(sys.argv[3])
    child_main(int(sys.argv[1]), Spool(folder, inline) if folder else None, sys.argv[4:])
