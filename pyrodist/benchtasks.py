"""The task functions `pyrodist bench` runs; its workers are started with `-I pyrodist.benchtasks`."""

from __future__ import annotations

import os


def inc(x: int) -> int:
    """x + 1: a task that costs next to nothing, so a benchmark measures the framework."""
    return x + 1


def payload(data: bytes) -> int:
    """The length of data: a task whose cost is moving its argument."""
    return len(data)


def random_bytes(size: int) -> bytes:
    """size random bytes: a task whose cost is moving its result."""
    return os.urandom(size)


def array(size: int) -> object:
    """A NumPy array of size bytes of random float64 (needs the numpy extra)."""
    import numpy  # only the array benchmark needs it

    return numpy.random.default_rng().random(size // 8)


def text(size: int) -> str:
    """A str of size characters (ASCII): a task whose cost is moving its result."""
    return "x" * size
