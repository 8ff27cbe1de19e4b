"""Aligned text tables, for the command line's and the bench's reports."""

from __future__ import annotations

import string
from collections.abc import Sequence

_ALIGNMENTS = ("<", ">", "^")


def format_table(rows: Sequence[Sequence[str]], template: str, strip: bool = True) -> list[str]:
    """Rows of cells as lines of text in aligned columns, one line a row.

    template is a format string with one field per column, e.g. "  {:<}  {:>} {}". A field with an
    alignment and no width ("{:<}", "{:>}") pads each cell to the widest of its column; one with a width
    ("{:<24}") pads to that width, as str.format does (longer cells overflow); "{}" does not pad.
    With strip, trailing whitespace is removed from each line.

    Raises:
        ValueError: a row has not one cell per field, or a field has a name or a conversion.
    """
    pieces = list(string.Formatter().parse(template))
    specs = []
    for _, name, spec, conversion in pieces:
        if name is None:  # the text after the last field
            continue
        if name or conversion:
            raise ValueError(f"table template {template!r}: a field is {{}} or {{:SPEC}}, without a name or conversion")
        specs.append(spec or "")
    for row in rows:
        if len(row) != len(specs):
            raise ValueError(f"table template {template!r} has {len(specs)} columns, this row {len(row)}: {row!r}")
    if not rows:
        return []
    for column, spec in enumerate(specs):
        if spec.endswith(_ALIGNMENTS):
            specs[column] = spec + str(max(len(row[column]) for row in rows))
    lines = []
    for row in rows:
        cells = iter(format(cell, spec) for cell, spec in zip(row, specs, strict=True))
        line = "".join(text + (next(cells) if name is not None else "") for text, name, _, _ in pieces)
        lines.append(line.rstrip() if strip else line)
    return lines
