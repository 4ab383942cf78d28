"""Console output for the CLI: progress bars, tables, errors (the library never prints)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    import polars as pl

    from addpatch.experiment.progress import Progress as ProgressCallback

# Piped output is not cut to 80 columns: tables stay whole in logs and files.
console = Console(width=None if sys.stdout.isatty() else 200, markup=False)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 400, markup=False)


@contextmanager
def progress_bars() -> Iterator[ProgressCallback]:
    """A progress callback (stage, done, total) drawing one bar per stage."""
    bars = Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    )
    tasks: dict[str, TaskID] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total)
        bars.update(tasks[stage], completed=done, total=total)

    with bars:
        yield update


METHOD_COLUMNS = ("method", "subspace_id", "k", "trained_for", "control")


def without_unused_method_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """Drop the trained-subspace columns (`method`, `k`, ...) from a result of full-vector
    cells only: what such a store printed before DAS existed. Kept when any row is DAS's."""
    if "method" not in frame.columns or set(frame.get_column("method").to_list()) - {"patch"}:
        return frame
    return frame.drop([c for c in METHOD_COLUMNS if c in frame.columns])


def print_frame(frame: pl.DataFrame, title: str | None = None, float_digits: int = 3) -> None:
    table = Table(title=title, show_lines=False)
    for column in frame.columns:
        table.add_column(
            column, justify="right" if frame[column].dtype.is_numeric() else "left", overflow="fold"
        )
    for row in frame.iter_rows():
        table.add_row(*[cell_text(value, float_digits) for value in row])
    console.print(table)


def cell_text(value: object, float_digits: int = 3) -> str:
    """A table cell: floats rounded, text with edge spaces quoted (`' is'`), the rest as str."""
    if isinstance(value, float):
        return f"{value:.{float_digits}f}"
    if isinstance(value, str) and value.strip() != value:
        return repr(value)
    return str(value)


def write_frame(frame: pl.DataFrame, fmt: str, output: str | None) -> None:
    """table | csv | json | parquet (parquet needs --output)."""
    if fmt == "table":
        print_frame(frame)
    elif fmt == "csv":
        text = frame.write_csv()
        _emit(text, output)
    elif fmt == "json":
        _emit(frame.write_json(), output)
    elif fmt == "parquet":
        assert output is not None
        frame.write_parquet(output)
        console.print(f"wrote {frame.height} rows to {output}")


def _emit(text: str, output: str | None) -> None:
    if output:
        with open(output, "w") as handle:
            handle.write(text)
    else:
        print(text, end="" if text.endswith("\n") else "\n")


NOT_LOCALIZED = "not localized"


def best_cells_view(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """`columns` of a best_cells frame for display: a row whose cell is not localized (its 95%
    interval not above the baseline) shows "not localized" instead of naming a cell."""
    import polars as pl

    where = [c for c in ("layer", "position", "position_label") if c in columns]
    localized = pl.col("localized") if "localized" in frame.columns else pl.lit(True)
    return frame.with_columns(
        pl.when(localized)
        .then(pl.col(c).cast(pl.String))
        .otherwise(pl.lit(NOT_LOCALIZED if c == "position_label" else "—"))
        .alias(c)
        for c in where
    ).select(columns)


def print_error(message: str, *, prefix: bool = True) -> None:
    """One line on stderr; `message` is printed as it is (never read as markup)."""
    line = Text()
    if prefix:
        line.append("Error:", style="bold red")
        line.append(" ")
    line.append(message)
    errors.print(line, highlight=False, soft_wrap=True)
