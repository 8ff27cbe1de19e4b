"""A worker's child process: reads task messages from its parent, runs them, writes one result message each.

Started by `runner.ChildProcess` as `python -m pyrodist.child LIMIT SPOOL INLINE MODULE...`; see `runner` for
the messages on its pipes. It moves its own stdout to stderr at start, so a task's print() cannot corrupt the
protocol, and ignores SIGINT: the worker decides when tasks stop.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Sequence
from typing import Any

from . import chunks, frames, protocol, rawjson, values
from .allowlist import AllowList
from .runner import LENGTH, Result, Spool, write_message


def run_task(
    allow: AllowList,
    func_ref: str,
    payload: values.Payload,
    limit: int = values.MAX_PAYLOAD,
    args_file: str | None = None,
    spool: Spool | None = None,
    chunk: bool = False,
) -> Result:
    """Resolve, decode, call and encode one task (a chunk: its calls, `chunks.run`), turning every failure
    into an error record."""
    try:
        func = allow.resolve(func_ref)
        arguments = _read_value(args_file) if args_file else values.decode_value(payload)
        call = None if chunk else values.as_call(arguments)
    except Exception as exc:  # noqa: BLE001 - refusals and undecodable arguments fail the task, not the child
        return False, protocol.error_info(exc, tb="")
    try:
        value = chunks.run(func, arguments, _task_traceback) if call is None else func(*call[0], **call[1])
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the task's own error (sys.exit() too): the child goes on
        return False, protocol.error_info(exc, _task_traceback(exc))
    what = f"the result of {func_ref}"

    def encode(value: Any) -> values.Payload | values.BigValue:
        if spool is None:
            return values.encode_value(value, what, limit)
        return values.encode_big(value, what, limit, spool.inline)

    try:
        encoded = chunks.encoded_result(value, what, encode) if chunk else encode(value)
        return True, _spooled(encoded, spool.folder) if isinstance(encoded, values.BigValue) and spool else encoded
    except Exception as exc:  # noqa: BLE001 - a value that cannot be sent (or too large): a failed task
        return False, protocol.error_info(exc, tb="")


def _read_value(path: str) -> Any:
    """A task's arguments from a file the worker downloaded them into (a frame mapped, not read into memory)."""
    with open(path, "rb") as source:
        if os.fstat(source.fileno()).st_size == 0:
            raise ValueError(f"the arguments file {path} is empty")
        mapped = mmap.mmap(source.fileno(), 0, access=mmap.ACCESS_READ)
    view = memoryview(mapped)
    try:
        if view[:1] != bytes([frames.VERSION]):
            return values.decode_value(str(view, "utf-8", "surrogatepass"))
        return frames.decode_frame(view)
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
    while len(head := proto_in.read(LENGTH.size)) == LENGTH.size:
        for task_id, func_ref, payload, args_file, chunk in rawjson.unpack(proto_in.read(LENGTH.unpack(head)[0])):
            ok, result = run_task(allow, func_ref, payload, limit, args_file, spool, chunk)
            write_message(proto_out, [task_id, ok, result])


if __name__ == "__main__":
    folder, inline = sys.argv[2], int(sys.argv[3])
    child_main(int(sys.argv[1]), Spool(folder, inline) if folder else None, sys.argv[4:])
