"""Progress on a terminal: a one-line bar over futures (`progress`) and a `Spinner`; both quiet off a TTY."""

from __future__ import annotations

import concurrent.futures
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, TextIO, TypeVar

F = TypeVar("F", bound=concurrent.futures.Future[Any])

SPINNER_FRAMES = "|/-\\"


def format_duration(seconds: float) -> str:
    """`mm:ss`, or `h:mm:ss` from an hour on."""
    minutes, secs = divmod(max(0, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def format_bar(done: int, total: int, failed: int, elapsed: float, width: int = 30, *, final: bool = False) -> str:
    """One progress line: bar, done/total (failed ones included), percent, rate, ETA (or `in` elapsed when final)."""
    shown = min(done, total) if total > 0 else 1  # integer steps: 29/100 must not show as 28%
    filled, percent = shown * width // max(total, 1), shown * 100 // max(total, 1)
    rate = done / elapsed if done > 0 and elapsed > 0 else 0.0
    speed = "?/s" if rate == 0 else f"{rate * 60:.1f}/min" if rate < 0.1 else f"{rate:.1f}/s"
    if final:
        timing = f"in {format_duration(elapsed)}"
    elif done >= total:
        timing = f"eta {format_duration(0)}"
    else:
        timing = f"eta {format_duration(math.ceil((total - done) / rate))}" if rate > 0 else "eta ?"
    line = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {percent:3d}% {speed} {timing}"
    return f"{line} {failed} failed" if failed > 0 else line


def _is_tty(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (OSError, ValueError):  # a closed or detached stream
        return False


class _Line:
    """One line redrawn in place with `\\r`, padded over what it held before; silent when stream is None."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self._width = 0

    def draw(self, text: str, end: str = "") -> None:
        """Replace the line with text; end="\\n" keeps it and starts a new line, end="\\r" with no text blanks it."""
        pad = " " * max(0, self._width - len(text))
        self._write("\r" + text + pad + end)
        self._width = 0 if end else len(text)

    def _write(self, text: str) -> None:
        if self._stream is None:
            return
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # a closed pipe or file: give up drawing, not the work
            self._stream = None


def progress(
    futures: Iterable[F],
    *,
    file: TextIO | None = None,
    label: str = "",
    min_interval: float = 0.1,
    clock: Callable[[], float] = time.monotonic,
    force: bool = False,
) -> list[F]:
    """Wait for futures, drawing a progress bar on `file` (stderr) when it is a TTY or force; returns them in order."""
    items = list(futures)
    unique = list(dict.fromkeys(items))  # a repeated future counts once
    total = len(unique)
    stream = sys.stderr if file is None else file
    line = _Line(stream if total and (force or _is_tty(stream)) else None)
    prefix = f"{label} " if label else ""
    # Done callbacks, not as_completed: a future cancelled outside an executor is done, but never wakes a waiter.
    finished: list[concurrent.futures.Future[Any]] = []
    changed = threading.Condition()

    def on_done(future: concurrent.futures.Future[Any]) -> None:
        with changed:
            finished.append(future)
            changed.notify()

    done = failed = 0
    start = last_draw = clock()
    line.draw(prefix + format_bar(0, total, 0, 0.0))
    for item in unique:
        item.add_done_callback(on_done)
    try:
        while done < total:
            with changed:
                while len(finished) == done:
                    changed.wait()
                batch = finished[done:]
            for future in batch:
                done += 1
                if future.cancelled() or future.exception() is not None:
                    failed += 1
                now = clock()
                if now - last_draw >= min_interval and done < total:
                    line.draw(prefix + format_bar(done, total, failed, now - start))
                    last_draw = now
    finally:  # also when interrupted: the line shows how far it got, and the shell prompt goes below it
        line.draw(prefix + format_bar(done, total, failed, clock() - start, final=True), end="\n")
    return items


class Spinner:
    """`with Spinner("waiting for task c1.1"):` spins `|/-\\` with elapsed seconds on a TTY, then clears the line."""

    def __init__(
        self,
        message: str = "",
        *,
        file: TextIO | None = None,
        force: bool = False,
        interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.message = message
        self._file = file
        self._force = force
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._line = _Line(None)
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Spinner:
        stream = sys.stderr if self._file is None else self._file
        if self._force or _is_tty(stream):
            self._line = _Line(stream)
            self._stop.clear()
            args = (self._clock(),)
            self._thread = threading.Thread(target=self._spin, args=args, name="pyrodist-spinner", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=max(1.0, 5 * self._interval))
        self._thread = None
        with self._lock:
            self._line.draw("", end="\r")
            self._line = _Line(None)  # a thread that failed to stop in time draws nothing more

    def _spin(self, start: float) -> None:
        frame = 0
        while True:
            with self._lock:
                if self._stop.is_set():
                    return
                elapsed = int(max(0.0, self._clock() - start))
                self._line.draw(f"{SPINNER_FRAMES[frame % len(SPINNER_FRAMES)]} {self.message} ({elapsed}s)")
            frame += 1
            if self._stop.wait(self._interval):
                return
