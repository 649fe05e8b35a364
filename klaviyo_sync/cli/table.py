"""Plain-text tables for the list commands: a header row, columns aligned by the cells a
terminal gives each character (East Asian wide and full-width characters take two, combining
marks none), so names in Japanese or Chinese do not push the columns out of line."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import click


def display_width(text: str) -> int:
    """Terminal cells ``text`` takes."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def truncate(text: str, cells: int) -> str:
    """``text`` cut to at most ``cells`` display cells (with an ellipsis when cut)."""
    if display_width(text) <= cells:
        return text
    out, used = [], 0
    for ch in text:
        w = display_width(ch)
        if used + w > cells - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def _pad(text: str, width: int, right: bool) -> str:
    gap = " " * (width - display_width(text))
    return gap + text if right else text + gap


def render(headers: Sequence[str], rows: Sequence[Sequence[str]],
           right: Sequence[int] = ()) -> list[str]:
    """The lines of a table; columns in ``right`` are right-aligned (numbers). The last
    column is not padded, so lines carry no trailing blanks."""
    widths = [max(display_width(str(cell)) for cell in column)
              for column in zip(headers, *rows, strict=True)]
    lines = []
    for row in (headers, *rows):
        cells = [_pad(str(cell), widths[i], i in right) if i < len(row) - 1 else str(cell)
                 for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return lines


def echo_table(headers: Sequence[str], rows: Sequence[Sequence[str]], empty: str,
               right: Sequence[int] = ()) -> None:
    """Print the table, or ``empty`` (e.g. "no events") when there are no rows."""
    if not rows:
        click.echo(empty)
        return
    for line in render(headers, rows, right):
        click.echo(line)
