"""The task of the multi-host tests, and the client program they run on the client's host.

Workers import this module with `-I tests.cluster.clustertasks`; `square` is the only task. With
PYRODIST_EXEC_LOG set to a folder, every execution appends "HOST X TIME" to a file there (one per
process, HOST from PYRODIST_CLUSTER_HOST), so a test can count the tasks that ran twice.

`python -m tests.cluster.clustertasks job|callbacks|broadcast ...` is the client program: it finds the
master through the name server only (PYRODIST_NS_HOST, PYRODIST_NS_PORT, PYRODIST_KEY_FILE) and writes
JSON lines to stdout: progress events while it waits, then one "done" event with its figures, or an
"error" event (exit code 1).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

_log_fd: int | None = None
SQUARE = "tests.cluster.clustertasks:square"
"""The task as clients name it (run as a program, this module is __main__, which no worker imports)."""


def square(x: int, seconds: float = 0.0) -> int:
    """x * x, after sleeping `seconds`; the execution is logged when PYRODIST_EXEC_LOG is set."""
    global _log_fd
    if seconds > 0:
        time.sleep(seconds)
    folder = os.environ.get("PYRODIST_EXEC_LOG")
    if folder:
        host = os.environ.get("PYRODIST_CLUSTER_HOST") or socket.gethostname()
        if _log_fd is None:
            path = os.path.join(folder, f"{host}-{os.getpid()}.log")
            _log_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(_log_fd, f"{host} {x} {time.time():.6f}\n".encode())  # one write: a whole line, unbuffered
    return x * x


# ---- the client program (private names: a worker never runs them as tasks) ----------------------


def _emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "t": time.time(), **fields}), flush=True)


def _connect(attempts: int = 3) -> tuple[Any, int]:
    """A Client, retrying its first connection (one SYN too many lost on a bad link); (client, attempts)."""
    from pyrodist import Client, ConnectionFailed

    for attempt in range(1, attempts + 1):
        try:
            return Client(), attempt
        except ConnectionFailed:
            if attempt == attempts:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


def _records(settings: Any, secret: str, task_ids: list[str]) -> list[dict[str, Any]]:
    """The master's records of these tasks (state, worker, timestamps), looked up in batches."""
    from pyrodist import protocol
    from pyrodist.remote_connection import PyroConnection

    records: list[dict[str, Any]] = []
    master = PyroConnection(settings)
    try:
        for start in range(0, len(task_ids), protocol.MAX_BATCH):
            records.extend(
                r.to_wire() for r in master.lookup(task_ids[start : start + protocol.MAX_BATCH], secret) if r
            )
    finally:
        master.close()
    return records


def _job(args: argparse.Namespace) -> dict[str, Any]:
    """Submit `tasks` squares with map, wait for every result, check them; the job's figures."""
    from pyrodist import as_completed

    client, attempts = _connect()
    with client:
        _emit("connected", connect_attempts=attempts)
        before = client.stats()
        xs = list(range(args.start, args.start + args.tasks))
        started = time.time()
        futures = client.map(SQUARE, xs, [args.seconds] * len(xs), chunksize=1)  # each call its own task
        _emit("submitted", tasks=len(futures))
        expected = {future: x * x for future, x in zip(futures, xs, strict=True)}
        finish_times: list[float] = []
        wrong, errors, first_error = 0, 0, ""
        step = max(1, len(xs) // 20)
        for future in as_completed(futures, timeout=args.timeout):
            finish_times.append(time.time())
            exc = future.exception()
            if exc is not None:
                errors += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"
            elif future.result() != expected[future]:
                wrong += 1
            if len(finish_times) % step == 0:
                _emit("progress", done=len(finish_times), tasks=len(xs))
        seconds = time.time() - started
        after = client.stats()
        records = _records(client.settings, client.secret, [f.task_id for f in futures])
    return {
        "tasks": len(xs), "seconds": round(seconds, 3), "throughput": round(len(xs) / seconds, 1),
        "correct": wrong == 0 and errors == 0 and len(finish_times) == len(xs),
        "wrong": wrong, "errors": errors, "first_error": first_error,
        "submitted_recorded": after["submitted"] - before["submitted"],
        "done_recorded": after["done"] - before["done"], "failed_recorded": after["failed"] - before["failed"],
        "records": len(records), "by_worker": dict(collections.Counter(str(r["worker"]) for r in records)),
        "connect_attempts": attempts, "started": started, "finish_times": [round(t, 4) for t in finish_times],
    }  # fmt: skip


def _callbacks(args: argparse.Namespace) -> dict[str, Any]:
    """Ask for on_result callbacks, then check that futures and synchronous reads work either way."""
    import Pyro4

    from pyrodist import PyrodistError, remote

    client, _ = _connect()
    with client:
        received: list[str] = []
        arrived = threading.Condition()

        def on_result(record: dict[str, Any]) -> None:
            with arrived:
                received.append(record["id"])
                arrived.notify_all()

        asked = time.time()
        try:
            client.on_result(on_result)
            callback_error, error_type = None, None
        except PyrodistError as exc:
            callback_error, error_type = str(exc), type(exc).__name__
        callback_seconds = time.time() - asked
        _emit("callbacks", error=callback_error)
        xs = list(range(args.start, args.start + args.tasks))
        futures = client.map(SQUARE, xs, [0.0] * len(xs), chunksize=1)
        values = client.gather(futures, timeout=args.timeout)
        ids = {f.task_id for f in futures}
        with arrived:
            arrived.wait_for(lambda: ids <= set(received) or callback_error is not None, timeout=args.timeout)
            pushed = len(ids & set(received))
        future = client.options(keep=True).submit(SQUARE, 12)  # read by id below, after the client collected it
        shell = Pyro4.Proxy(remote.lookup_master(client.settings))  # a plain Pyro4 caller, serpent on the wire
        shell._pyroHmacKey = client.settings.key_bytes
        with shell:
            synchronous = shell.result(future.task_id, args.timeout, client.secret)
    return {
        "tasks": len(xs), "callback_error": callback_error, "callback_error_type": error_type,
        "callback_seconds": round(callback_seconds, 3), "callbacks_received": pushed,
        "futures_correct": values == [x * x for x in xs],
        "synchronous_state": synchronous["state"], "synchronous_value": synchronous["value"],
    }  # fmt: skip


def _broadcast(args: argparse.Namespace) -> dict[str, Any]:
    """Run square(7) once on every live worker."""
    client, _ = _connect()
    with client:
        return {"results": client.broadcast(SQUARE, 7)}


def _main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.clustertasks")
    parser.add_argument("mode", choices=["job", "callbacks", "broadcast"])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--start", type=int, default=0, help="first x (jobs of one cluster use distinct ranges)")
    parser.add_argument("--seconds", type=float, default=0.0, help="sleep of each task")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the results")
    args = parser.parse_args(argv)
    try:
        figures = {"job": _job, "callbacks": _callbacks, "broadcast": _broadcast}[args.mode](args)
    except Exception as exc:  # noqa: BLE001 - reported to the test as an event, with its type
        _emit("error", type=type(exc).__name__, message=str(exc))
        return 1
    _emit("done", **figures)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
