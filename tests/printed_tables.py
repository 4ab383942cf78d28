"""Read back a table the CLI printed (rich's box drawing) to compare it whole with the store."""

from __future__ import annotations

import polars as pl

from cli.output import cell_text


def printed_table(text: str, title: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the first table under the line holding `title`, cells stripped."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if title in line)
    header: list[str] = []
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        stripped = line.strip()
        if stripped.startswith("┃"):
            header = [cell.strip() for cell in stripped.strip("┃").split("┃")]
        elif stripped.startswith("│"):
            rows.append([cell.strip() for cell in stripped.strip("│").split("│")])
        elif stripped.startswith("└"):
            break
    return header, rows


def as_printed(frame: pl.DataFrame, float_digits: int = 3) -> tuple[list[str], list[list[str]]]:
    """`frame` as the CLI prints it (cell by cell, as `print_frame` does)."""
    rows = [[cell_text(value, float_digits) for value in row] for row in frame.iter_rows()]
    return frame.columns, rows
