"""The progress bar and spinner: what they draw on a terminal, silence elsewhere, and never failing the wait."""

from __future__ import annotations

import io
import itertools
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from pyrodist.progressbar import Spinner, format_bar, format_duration, progress
from tests.conftest import wait_until

WAIT = 10.0  # seconds any test waits for a thread, at most


class FakeTTY(io.StringIO):
    """A StringIO that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class StepClock:
    """A clock that moves `step` seconds each time it is read."""

    def __init__(self, step: float = 1.0) -> None:
        self.now = -step
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def finished(*values: Any) -> list[Future[Any]]:
    futures: list[Future[Any]] = []
    for value in values:
        future: Future[Any] = Future()
        future.set_result(value)
        futures.append(future)
    return futures


def run_bounded(fn: Callable[[], Any]) -> Any:
    """Run fn in a thread and return its result; fail the test if it takes longer than WAIT."""
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive(), f"still waiting after {WAIT} s"
    assert box, "the call raised (see the thread's traceback above)"
    return box[0]


def wait_with_bar(futures: Iterable[Future[Any]], **kwargs: Any) -> list[Future[Any]]:
    """progress(futures, **kwargs), failing the test instead of hanging."""
    return run_bounded(lambda: progress(futures, **kwargs))  # type: ignore[no-any-return]


def draws(text: str) -> list[str]:
    """The lines drawn in turn, each stripped of the padding that blanks the previous one."""
    return [part.rstrip() for part in text.replace("\n", "").split("\r") if part.strip()]


def spinner_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "pyrodist-spinner"]


# ---- format_bar


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((0, 0, 0, 0.0), "[####################] 0/0 100% ?/s eta 00:00"),
        ((0, 40, 0, 3.0), "[....................] 0/40   0% ?/s eta ?"),
        ((10, 40, 0, 5.0), "[#####...............] 10/40  25% 2.0/s eta 00:15"),
        ((39, 40, 0, 3.0), "[###################.] 39/40  97% 13.0/s eta 00:01"),
        ((40, 40, 0, 16.0), "[####################] 40/40 100% 2.5/s eta 00:00"),
        ((12, 40, 3, 4.0), "[######..............] 12/40  30% 3.0/s eta 00:10 3 failed"),
        ((3, 40, 0, 100.0), "[#...................] 3/40   7% 1.8/min eta 20:34"),
    ],
)
def test_format_bar(args: tuple[int, int, int, float], expected: str) -> None:
    assert format_bar(*args, width=20) == expected


def test_format_bar_final_line_shows_elapsed_time() -> None:
    assert format_bar(40, 40, 2, 3725.0, width=10, final=True) == "[##########] 40/40 100% 0.6/min in 1:02:05 2 failed"


def test_format_bar_default_width() -> None:
    assert format_bar(15, 30, 0, 1.0).startswith("[" + "#" * 15 + "." * 15 + "] ")


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, 4.4, 59.6, 61, 3600, -3)] == [
        "00:00", "00:04", "01:00", "01:01", "1:00:00", "00:00"
    ]  # fmt: skip


# ---- progress


def test_returns_the_same_futures_in_order() -> None:
    futures = finished(1, 2, 3)
    result = wait_with_bar(iter(futures), file=io.StringIO())
    assert result == futures
    assert all(a is b for a, b in zip(result, futures, strict=True))


def test_a_repeated_future_is_returned_twice_and_counted_once() -> None:
    a, b = finished("a", "b")
    out = FakeTTY()
    assert wait_with_bar([a, b, a], file=out, clock=StepClock()) == [a, b, a]
    assert "2/2 100%" in draws(out.getvalue())[-1]


def test_draws_on_a_tty_as_futures_finish_from_another_thread() -> None:
    futures: list[Future[Any]] = [Future() for _ in range(5)]
    out = FakeTTY()

    def settle() -> None:
        for i, future in enumerate(futures):
            future.set_result(i)

    setter = threading.Timer(0.05, settle)
    setter.start()
    assert wait_with_bar(futures, file=out, label="squares", min_interval=0.0, clock=StepClock()) == futures
    setter.join(WAIT)
    text = out.getvalue()
    assert text.startswith("\r") and text.endswith("\n") and text.count("\n") == 1
    lines = draws(text)
    assert lines[0] == "squares [" + "." * 30 + "] 0/5   0% ?/s eta ?"
    assert lines[-1] == "squares [" + "#" * 30 + "] 5/5 100% 0.8/s in 00:06"
    assert len(lines) == 6  # the first, 1/5 .. 4/5, and the final line


def test_redraws_at_most_every_min_interval() -> None:
    out = FakeTTY()
    wait_with_bar(finished(*range(10)), file=out, min_interval=2.5, clock=StepClock())
    done_counts = [line.split("] ")[1].split()[0] for line in draws(out.getvalue())]
    assert done_counts == ["0/10", "3/10", "6/10", "9/10", "10/10"]


def test_a_frozen_clock_draws_only_the_first_and_final_lines() -> None:
    out = FakeTTY()
    wait_with_bar(finished(*range(100)), file=out, clock=lambda: 7.0)
    assert draws(out.getvalue()) == [
        "[" + "." * 30 + "] 0/100   0% ?/s eta ?",
        "[" + "#" * 30 + "] 100/100 100% ?/s in 00:00",
    ]


def test_a_shorter_line_blanks_the_rest_of_the_longer_one() -> None:
    out = FakeTTY()
    clock = iter([0.0, 4000.0, 4001.0, 4002.0, 4003.0]).__next__  # start, three completions, the end
    wait_with_bar(finished(1, 2, 3), file=out, min_interval=0.0, clock=clock)
    segments = out.getvalue().split("\r")[1:]
    assert [s.rstrip().split(" eta ")[-1] for s in segments[1:3]] == ["2:13:20", "33:21"]  # the line shrinks
    for previous, current in itertools.pairwise(segments):
        assert len(current.rstrip("\n")) >= len(previous.rstrip())


def test_quiet_when_not_a_tty() -> None:
    out = io.StringIO()
    futures = finished(1, 2)
    assert wait_with_bar(futures, file=out, label="x") == futures
    assert out.getvalue() == ""


def test_waits_for_every_future_even_when_quiet() -> None:
    futures: list[Future[Any]] = [Future() for _ in range(3)]
    timers = [threading.Timer(0.01 * i, f.set_result, (i,)) for i, f in enumerate(futures)]
    for timer in timers:
        timer.start()
    result = wait_with_bar(futures, file=io.StringIO())
    assert all(f.done() for f in result)
    for timer in timers:
        timer.join(WAIT)


def test_force_draws_on_a_non_tty() -> None:
    out = io.StringIO()
    wait_with_bar(finished(1, 2), file=out, force=True, clock=StepClock())
    assert out.getvalue().endswith("\n")
    assert draws(out.getvalue())[-1] == "[" + "#" * 30 + "] 2/2 100% 0.7/s in 00:03"


def test_a_closed_stream_is_quiet() -> None:
    out = FakeTTY()
    out.close()
    futures = finished(1)
    assert wait_with_bar(futures, file=out) == futures


def test_defaults_to_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    err = FakeTTY()
    monkeypatch.setattr(sys, "stderr", err)
    wait_with_bar(finished(1), clock=StepClock())
    assert "1/1 100%" in err.getvalue()


def test_failed_and_cancelled_futures_are_counted_and_do_not_raise() -> None:
    ok, failed, cancelled = Future(), Future(), Future()  # type: ignore[var-annotated]
    ok.set_result(1)
    failed.set_exception(RuntimeError("task failed"))
    assert cancelled.cancel()
    out = FakeTTY()
    assert wait_with_bar([ok, failed, cancelled], file=out, clock=StepClock()) == [ok, failed, cancelled]
    assert draws(out.getvalue())[-1].endswith("3/3 100% 0.8/s in 00:04 2 failed")


def test_futures_failing_while_the_bar_waits_are_counted() -> None:
    notified, pending, raising = Future(), Future(), Future()  # type: ignore[var-annotated]
    notified.cancel()
    notified.set_running_or_notify_cancel()  # how an executor (and pyrodist's Future) settles a cancel

    def settle() -> None:
        pending.cancel()
        raising.set_exception(KeyError("k"))

    timer = threading.Timer(0.05, settle)
    timer.start()
    out = FakeTTY()
    wait_with_bar([notified, pending, raising], file=out, min_interval=0.0, clock=StepClock())
    timer.join(WAIT)
    assert draws(out.getvalue())[-1].endswith("3/3 100% 0.8/s in 00:04 3 failed")


def test_no_failed_count_when_nothing_failed() -> None:
    out = FakeTTY()
    wait_with_bar(finished(1, 2), file=out)
    assert "failed" not in out.getvalue()


@pytest.mark.parametrize("out", [FakeTTY(), io.StringIO()])
def test_an_empty_list_prints_nothing(out: io.StringIO) -> None:
    assert wait_with_bar([], file=out, force=True) == []
    assert out.getvalue() == ""


# ---- Spinner


@pytest.fixture
def no_spinner_left() -> Iterator[None]:
    yield
    assert not spinner_threads()


@pytest.mark.usefixtures("no_spinner_left")
def test_spinner_draws_on_a_tty_and_clears_the_line_on_exit() -> None:
    out = FakeTTY()
    with Spinner("waiting for task c1.1", file=out, clock=lambda: 0.0):
        assert spinner_threads()
        wait_until(lambda: out.getvalue().count("\r") >= 2, timeout=WAIT, what="two spinner frames")
    assert not spinner_threads()
    text = out.getvalue()
    first, second = draws(text)[:2]
    assert first == "| waiting for task c1.1 (0s)"
    assert second == "/ waiting for task c1.1 (0s)"
    blank = text.rsplit("\r", 2)[1]
    assert text.endswith("\r") and blank.strip() == "" and len(blank) == len(first)


@pytest.mark.usefixtures("no_spinner_left")
def test_spinner_shows_elapsed_seconds() -> None:
    out = FakeTTY()
    with Spinner("working", file=out, clock=StepClock(1.5)):
        wait_until(lambda: "(3s)" in out.getvalue(), timeout=WAIT, what="3 s on the spinner")


@pytest.mark.usefixtures("no_spinner_left")
def test_spinner_is_quiet_on_a_non_tty() -> None:
    out = io.StringIO()
    with Spinner("waiting", file=out):
        assert not spinner_threads()
    assert out.getvalue() == ""


@pytest.mark.usefixtures("no_spinner_left")
def test_spinner_force_draws_on_a_non_tty() -> None:
    out = io.StringIO()
    with Spinner("waiting", file=out, force=True):
        wait_until(out.getvalue, timeout=WAIT, what="a spinner frame")
    assert "waiting" in out.getvalue()


@pytest.mark.usefixtures("no_spinner_left")
def test_spinner_stops_when_the_block_raises() -> None:
    out = FakeTTY()
    with pytest.raises(KeyError), Spinner("waiting", file=out):
        raise KeyError("x")
    assert not spinner_threads()
