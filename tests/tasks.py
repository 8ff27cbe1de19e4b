"""Importable task functions for the tests; workers are started with `-I tests.tasks`."""

from __future__ import annotations

import os
import sys
import time
from typing import Any


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
