"""Before outputs are read: each registered Parquet file is there, whole, and what the catalog
says it is, checked from its footer alone (no data read, no hash; `store verify` does the rest).

A file fails when it is missing or unreadable, holds another number of rows than the catalog
registered, has columns that are not the output columns (a name outside them, another type, or
a column of the first output files missing; files written before a later column existed lack
it, and are fine), or holds another run's rows (the footer's run_id statistics).

    check_outputs(store, run_ids=[1])      # StoreError naming the first damaged file
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from addpatch.errors import StoreError
from addpatch.store.output_schema import OUTPUT_COLUMNS, OUTPUT_COLUMNS_0002, sql_type

if TYPE_CHECKING:
    from addpatch.store.store import Store

_TYPES = {name: sql_type(t) for name, t in OUTPUT_COLUMNS}
_REQUIRED = [name for name, _ in OUTPUT_COLUMNS_0002]
_READS_OUTPUTS = re.compile(r"\b(patched_outputs|iia_cells)\b", re.IGNORECASE)


def reads_outputs(sql: str) -> bool:
    """Whether a statement names the outputs (the `patched_outputs` view or the `iia_cells`
    macro that reads it); one that reads only catalog tables needs no check."""
    return _READS_OUTPUTS.search(sql) is not None


def file_problem(path: Path, rows: int, run_id: int) -> str | None:
    """What is wrong with one registered file, from its footer; None when it looks whole."""
    try:
        metadata = pq.read_metadata(path)
    except FileNotFoundError:
        return "is missing"
    except Exception:  # not Parquet, truncated, unreadable: pyarrow raises several kinds
        return "is not a readable Parquet file"
    try:
        problem, run_column = _columns(metadata)
    except Exception:
        return "is not a readable Parquet file"
    if problem is not None:
        return problem
    if metadata.num_rows != rows:
        return f"holds {metadata.num_rows} rows, the catalog registered {rows}"
    return _run_problem(metadata, run_column, run_id)


_ARROW_SCHEMA = b"ARROW:schema"
_CHECKED: dict[bytes, tuple[str | None, int]] = {}  # Arrow schema as stored -> _columns' answer


def _columns(metadata: pq.FileMetaData) -> tuple[str | None, int]:
    """(what is wrong with the file's columns or None, index of run_id); checked once per
    distinct schema (the Arrow schema pyarrow stores in the footer is the key)."""
    stored = (metadata.metadata or {}).get(_ARROW_SCHEMA)
    if stored is not None and stored in _CHECKED:
        return _CHECKED[stored]
    schema = metadata.schema.to_arrow_schema()
    answer = (_schema_problem(schema), schema.get_field_index("run_id"))
    if stored is not None and len(_CHECKED) < 64:
        _CHECKED[stored] = answer
    return answer


def _schema_problem(schema: pa.Schema) -> str | None:
    for field in schema:
        if field.name not in _TYPES:
            return f"has a column {field.name!r} that outputs do not have (another file's schema)"
        try:
            found = sql_type(field.type)
        except KeyError:
            found = str(field.type)
        if found != _TYPES[field.name]:
            return f"has column {field.name} as {found}, outputs have {_TYPES[field.name]}"
    absent = [name for name in _REQUIRED if name not in schema.names]
    if absent:
        return f"lacks the output column {absent[0]} (another file's schema)"
    return None


def _run_problem(metadata: pq.FileMetaData, column: int, run_id: int) -> str | None:
    """Another run's rows, when the footer's statistics of run_id say so."""
    for group in range(metadata.num_row_groups):
        stats = metadata.row_group(group).column(column).statistics
        if stats is None or not stats.has_min_max:
            continue
        if stats.min != run_id or stats.max != run_id:
            return f"holds rows of run {stats.min}, it is registered for run {run_id}"
    return None


def registered_files(
    conn: duckdb.DuckDBPyConnection, run_ids: Iterable[int] | None = None
) -> list[tuple[str, int, int]]:
    """(path, rows, run_id) of the registered files of `run_ids` (None: every run)."""
    sql = "SELECT path, rows, run_id FROM output_files"
    params: list[object] = []
    if run_ids is not None:
        sql += " WHERE list_contains(?, run_id)"
        params.append(sorted(set(run_ids)))
    rows = conn.execute(sql + " ORDER BY id", params).fetchall()
    return [(str(path), int(count), int(run)) for path, count, run in rows]


def damaged_outputs(root: Path, files: Iterable[tuple[str, int, int]]) -> list[tuple[str, str]]:
    """(path, what is wrong) for each damaged file among `files` (path, rows, run_id)."""
    found = []
    for path, rows, run_id in files:
        problem = file_problem(root / path, rows, run_id)
        if problem is not None:
            found.append((path, problem))
    return found


def connection_root(conn: duckdb.DuckDBPyConnection) -> Path:
    """The store directory of a connection `Store.connect` opened (its file_search_path)."""
    row = conn.execute("SELECT current_setting('file_search_path')").fetchone()
    return Path(row[0] if row and row[0] else ".")


def check_outputs_on(
    conn: duckdb.DuckDBPyConnection, root: Path, run_ids: Iterable[int] | None = None
) -> None:
    """StoreError naming the first damaged registered file of `run_ids` (None: every run)."""
    damaged = damaged_outputs(root, registered_files(conn, run_ids))
    if damaged:
        path, problem = damaged[0]
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        raise StoreError(
            f"the outputs file {path} {problem}{more}, so nothing was read; run "
            "`addpatch store verify` (its --repair and a rerun of the run recompute the file)"
        )


def check_outputs(store: Store, run_ids: Iterable[int] | None = None) -> None:
    """`check_outputs_on` on a read-only connection of `store`."""
    with store.connect(read_only=True) as conn:
        check_outputs_on(conn, store.root, run_ids)
