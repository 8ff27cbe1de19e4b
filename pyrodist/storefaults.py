"""All-or-nothing store operations: a storage fault is undone and reported, never half applied.

A store operation changes memory (counts, leases) and then writes the file. `atomic` wraps each one:
when the storage fails (a full disk, a read-only file, an I/O error), the store's `_undo` brings memory
back to what the file holds and the caller gets `StoreUnavailable`; the next operation simply tries the
storage again. `fault` says what failed (for stats) until operations succeed again.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Concatenate, Generic, ParamSpec, TypeVar

from .errors import StoreUnavailable

FAULT_HELD = 2.0
"""Seconds a storage fault stays reported after the last failure: a nearly full disk takes small writes and
refuses big ones, and the fault must not flicker in stats and logs with each."""

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
U = TypeVar("U", bound="Undoable")  # type: ignore[type-arg]


class Undoable(Generic[T]):
    """What a store knows of its storage's faults, and the hooks that undo one (T: what `_undo` needs)."""

    faults: tuple[type[Exception], ...] = ()
    """The storage's own errors, which `atomic` undoes and turns into StoreUnavailable (none in memory)."""

    def __init__(self) -> None:
        self.fault: str | None = None
        """What the storage last failed with, until operations succeed again."""
        self.fault_at = 0.0
        """When (time.monotonic()) the storage last failed."""
        self.stale = False
        """Memory may not match the storage (undoing a fault failed): read it again before the next operation."""

    def _snapshot(self) -> T:
        """What `_undo` needs of memory as it was before an operation (taken only where faults can happen)."""
        raise NotImplementedError

    def _fault(self, exc: Exception) -> StoreUnavailable:
        """Note a fault of the storage (for stats and the log); the error to raise."""
        raise NotImplementedError

    def _undo(self, exc: Exception, before: T) -> StoreUnavailable:
        """Bring memory back to what it was before the failed operation (and the storage holds); the error to raise."""
        raise NotImplementedError

    def _reload(self) -> None:
        """Read the whole state again from the storage (when undoing a fault failed: memory may be half changed)."""
        raise NotImplementedError


def atomic(operation: Callable[Concatenate[U, P], R]) -> Callable[Concatenate[U, P], R]:
    """A store operation that changes all or nothing (see the module docstring)."""

    @functools.wraps(operation)
    def run(store: U, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if not store.faults:
            return operation(store, *args, **kwargs)
        if store.stale:
            try:
                store._reload()
            except store.faults as exc:  # nothing changed yet, and memory stays marked stale
                raise store._fault(exc) from exc
        before = store._snapshot()
        try:
            result = operation(store, *args, **kwargs)
        except store.faults as exc:
            raise store._undo(exc, before) from exc
        if store.fault is not None and time.monotonic() - store.fault_at > FAULT_HELD:
            log.warning("the task store works again (it failed: %s)", store.fault)
            store.fault = None
        return result

    return run
