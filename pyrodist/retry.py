"""Doing something again: capped exponential backoff (the one way pyrodist retries), and a periodic thread."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


def retry_delays(start: float = 0.1, cap: float = 5.0) -> Iterator[float]:
    """Capped exponential backoff: start, 2 x start, 4 x start, ... up to cap, forever."""
    delay = start
    while True:
        yield delay
        delay = min(delay * 2, cap)


def retrying(
    call: Callable[[], T],
    retry_on: type[Exception] | tuple[type[Exception], ...],
    *,
    stop: threading.Event | None = None,
    give_up: Callable[[Exception], bool] = lambda exc: False,
    within: float | None = None,
    start: float = 0.1,
    cap: float = 5.0,
    on_retry: Callable[[Exception, float], None] | None = None,
) -> T:
    """call() until it returns, waiting with capped backoff after each failure of the retry_on kinds.

    The failure is raised again once give_up(exc) is true, once stop is set (also while waiting), or once
    the next try would start more than `within` seconds after the first. on_retry(exc, delay) may log.
    """
    deadline = None if within is None else time.monotonic() + within
    for delay in retry_delays(start, cap):
        try:
            return call()
        except retry_on as exc:
            if give_up(exc) or (stop is not None and stop.is_set()):
                raise
            if deadline is not None and time.monotonic() + delay > deadline:
                raise
            if on_retry is not None:
                on_retry(exc, delay)
            if stop is not None:
                if stop.wait(delay):
                    raise
            else:
                time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover - retry_delays never ends


def warn_once(who: str, what: str) -> Callable[[Exception, float], None]:
    """An on_retry that logs what we wait for once per distinct reason, not at every retry."""
    last = ""

    def warn(exc: Exception, _delay: float) -> None:
        nonlocal last
        if str(exc) != last:
            log.warning("%s waiting for %s: %s (retrying)", who, what, exc)
            last = str(exc)

    return warn


class Periodic:
    """Calls action every interval seconds in a thread of its own until stopped; what it raises is logged."""

    def __init__(self, interval: float, action: Callable[[], object], name: str) -> None:
        self._interval = interval
        self._action = action
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start calling."""
        self._thread.start()

    def stop(self) -> None:
        """Stop, and wait for a call under way to end."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._action()
            except Exception:  # the thread must survive anything; the error is logged with its traceback
                log.exception("%s failed", self._thread.name)
