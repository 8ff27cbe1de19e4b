"""Importable task functions for the tests; workers are started with `-I tests.tasks`."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any, NamedTuple

import pyrodist


@pyrodist.register_value_class
@dataclasses.dataclass
class Point:
    """A value class the tests' clients and workers both register."""

    x: float
    y: float
    label: str = ""


@pyrodist.register_value_class
class Span(NamedTuple):
    """A registered named tuple."""

    start: int
    end: int


def moved(point: Point, dx: float) -> Point:
    """A registered class in, another out."""
    return dataclasses.replace(point, x=point.x + dx)


def echo(value: Any) -> Any:
    """Return the value unchanged."""
    return value


def inc(x: int) -> int:
    """x + 1."""
    return x + 1


def add(a: Any, b: Any = 0) -> Any:
    """a + b, with a keyword default."""
    return a + b


def boom(message: str = "boom 42") -> None:
    """Raise a ValueError."""
    raise ValueError(message)


def unserializable() -> object:
    """Return something serpent cannot carry."""
    return object()


def crash(code: int = 3) -> None:
    """Kill the process running the task."""
    os._exit(code)


def sleep_return(seconds: float, value: Any = None) -> Any:
    """Sleep, then return value."""
    time.sleep(seconds)
    return value


def noisy(value: Any) -> Any:
    """Print to stdout and stderr (must not disturb the worker), then return value."""
    print("noise on stdout", value)
    print("noise on stderr", value, file=sys.stderr)
    return value


def big_result(size: int) -> bytes:
    """A bytes result of the given size."""
    return b"x" * size


def whoami() -> int:
    """The pid of the process running the task."""
    return os.getpid()


def undecodable_error() -> None:
    """Fail with a message holding a lone surrogate, as a file name read with os.listdir() can."""
    raise ValueError("cannot parse " + b"caf\xe9.txt".decode("utf-8", "surrogateescape"))


def crash_on(x: int, bad: int) -> int:
    """x, except that the process dies when x == bad."""
    if x == bad:
        os._exit(9)
    return x


def sleep_on(x: int, bad: int, seconds: float) -> int:
    """x, after sleeping `seconds` when x == bad."""
    if x == bad:
        time.sleep(seconds)
    return x


def fail_times(path: str, times: int, value: Any = "ok") -> Any:
    """Count this call in the file at path; raise ConnectionRefusedError for the first `times` calls."""
    with open(path, "a") as log:
        log.write("run\n")
    with open(path) as log:
        calls = sum(1 for _ in log)
    if calls <= times:
        raise ConnectionRefusedError(f"call {calls} refused")
    return value


def pid_then_sleep(path: str, seconds: float) -> int:
    """Write the running process's pid to path, then sleep."""
    with open(path, "w") as out:
        out.write(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


WORKER_PID = os.getppid()
"""In a worker's child process: the worker's pid, read at start-up; 1 when the worker died before the child
had even started (it then still runs what the worker had written to its pipe)."""


def logged_square(log_dir: str, x: int, seconds: float = 0.0) -> int:
    """x * x; each execution first appends 'x worker-pid start-time' to its process's log in log_dir."""
    with open(os.path.join(log_dir, f"runs-{os.getpid()}.log"), "a") as log:
        log.write(f"{x} {WORKER_PID} {time.time():.6f}\n")
    if seconds:
        time.sleep(seconds)
    return x * x


def wait_for_file(path: str, value: Any = None, timeout: float = 60.0) -> Any:
    """Return value once a file exists at path (a gate the test opens); TimeoutError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout} s")
        time.sleep(0.005)
    return value


def hold(log: str, release: str, value: Any = None, limit: float = 60.0) -> Any:
    """Append this process's pid to the file `log`, then wait until the file `release` exists; value.

    The test decides when the task ends, so nothing sleeps for a guessed time; after `limit` seconds it fails.
    """
    with open(log, "a") as out:
        out.write(f"{os.getpid()}\n")
    return wait_for_file(release, value, limit)


class Refused(Exception):
    """An exception class of this module: a caller that imported it catches it by its class."""


def refuse(message: str) -> None:
    """Raise Refused(message)."""
    raise Refused(message)


def lookup_key(mapping: dict[str, Any], key: str) -> Any:
    """mapping[key]: a KeyError for a missing key."""
    return mapping[key]


def leave(code: int = 3) -> None:
    """sys.exit(code) inside a task."""
    sys.exit(code)


def overlap(folder: str, seconds: float) -> int:
    """Note this call's start and end as files in folder and return how many calls were running at its start."""
    mark = os.path.join(folder, f"{os.getpid()}-{time.monotonic_ns()}")
    open(mark + ".run", "w").close()
    running = sum(name.endswith(".run") for name in os.listdir(folder))
    time.sleep(seconds)
    os.rename(mark + ".run", mark + ".end")
    return running


class Coded(Exception):
    """An exception whose __new__ wants arguments of its own (as some libraries' do)."""

    def __new__(cls, code: int, text: str) -> Coded:
        error = super().__new__(cls, code, text)
        error.code = code  # type: ignore[attr-defined]
        return error

    def __init__(self, code: int, text: str) -> None:
        super().__init__(code, text)


def raise_coded(code: int = 7) -> None:
    """Raise Coded(code, "bad")."""
    raise Coded(code, "bad")


def raise_group() -> None:
    """Raise an ExceptionGroup."""
    raise ExceptionGroup("grouped", [ValueError("inner")])


class Parser:
    """A class with an exception class of its own (nested: not found by its name in this module)."""

    class Error(Exception):
        """Parser's error."""


def parse_fails() -> None:
    """Raise Parser.Error."""
    raise Parser.Error("cannot parse")


def big_or_unsendable(x: int, size: int) -> Any:
    """object() (which cannot be sent) for x == 1, else size bytes."""
    return object() if x == 1 else b"x" * size
