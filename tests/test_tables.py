"""Aligned text tables: `format_table` itself, and the status and bench reports built with it."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import lab
from pyrodist.statustext import format_status
from pyrodist.texttable import format_table


def test_columns_are_padded_to_their_widest_cell_left_or_right() -> None:
    rows = [("throughput", "12,346", "tasks/s"), ("p99", "1.25", "ms")]
    assert format_table(rows, "  {:<}  {:>} {:<}") == ["  throughput  12,346 tasks/s", "  p99           1.25 ms"]


def test_centred_columns_and_any_text_between_them() -> None:
    assert format_table([("a", "b"), ("ccc", "dd")], "| {:^} | {:>} |") == ["|  a  |  b |", "| ccc | dd |"]


def test_a_bare_field_is_not_padded() -> None:
    assert format_table([("w1", "x"), ("worker2", "longer")], "{:<}  {}") == ["w1       x", "worker2  longer"]


def test_a_field_with_a_width_keeps_it_and_longer_cells_overflow() -> None:
    rows = [("a", "'short'", "default"), ("bb", "'" + "x" * 30 + "'", "flag")]
    assert format_table(rows, "{:<}  {:<10}  {}") == ["a   'short'     default", "bb  '" + "x" * 30 + "'  flag"]


def test_trailing_whitespace_is_stripped_unless_asked_to_keep_it() -> None:
    rows = [("a", "", ""), ("bbbb", "cc", "d ")]
    assert format_table(rows, "{:<}  {:<}  {}") == ["a", "bbbb  cc  d"]
    assert format_table(rows, "{:<}  {:<}  {}", strip=False) == ["a" + " " * 9, "bbbb  cc  d "]


def test_no_rows_no_lines() -> None:
    assert format_table([], "{:<}  {:>}") == []


def test_cells_are_text_as_given() -> None:
    assert format_table([("{0}", "two\nlines")], "{:>}: {}") == ["{0}: two\nlines"]


@pytest.mark.parametrize("rows", [[("a",)], [("a", "b", "c")], [("a", "b"), ("c",)]])
def test_a_row_must_have_one_cell_per_field(rows: list[tuple[str, ...]]) -> None:
    with pytest.raises(ValueError, match="has 2 columns"):
        format_table(rows, "{:<} {:<}")


@pytest.mark.parametrize("template", ["{0:<}", "{name}", "{!r:<}"])
def test_fields_take_the_cells_in_order_as_they_are(template: str) -> None:
    with pytest.raises(ValueError, match="without a name or conversion"):
        format_table([("a",)], template)


def test_status_table() -> None:
    worker = {"id": "node1-4711", "host": "node1", "pid": 4711, "running": 2, "done": 10, "failed": 0,
              "last_seen": 0.25}  # fmt: skip
    stats = {"workers": [worker], "counts": {"pending": 3}, "submitted": 13, "done": 10, "failed": 0}
    assert format_status(stats).splitlines()[:2] == [
        "WORKER      HOST   PID   RUNNING  DONE  FAILED  LAST SEEN",
        "node1-4711  node1  4711  2        10    0       0.2s ago",
    ]


def test_bench_figures_table() -> None:
    figures = lab.Figures("title")
    figures.add("tasks pending", 1_000_000, "")
    figures.add("master CPU", 0.5, "% of one core")
    figures.add("not measured", None, "s")
    assert figures.format() == (
        "title\n\n  tasks pending  1,000,000\n  master CPU           0.5 % of one core\n  not measured         n/a s"
    )


def test_status_says_when_the_store_fails_and_says_nothing_when_it_works() -> None:
    stats: dict[str, Any] = {"workers": [], "counts": {"pending": 3}, "submitted": 3, "done": 0, "failed": 0,
                             "master": {"store_error": None}}  # fmt: skip
    assert "STORE" not in format_status(stats)
    stats["master"] = {"store_error": "database or disk is full"}
    assert "STORE FAILING: database or disk is full (new tasks and results are refused" in format_status(stats)
