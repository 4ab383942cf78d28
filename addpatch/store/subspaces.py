"""Catalog rows of trained interventions: dataset splits, labels by target, subspaces."""

from __future__ import annotations

from typing import Any

import duckdb

from addpatch.store.catalog import _insert, _now, insert_output_file, transaction
from addpatch.store.schema import DatasetSplit, Subspace


def read_split(
    *, conn: duckdb.DuckDBPyConnection, dataset_id: int, split: str
) -> dict[int, str] | None:
    rows = conn.execute(
        "SELECT example_id, part FROM dataset_splits WHERE dataset_id = ? AND split = ?",
        [dataset_id, split],
    ).fetchall()
    return {int(i): str(p) for i, p in rows} if rows else None


def insert_split(
    *, conn: duckdb.DuckDBPyConnection, dataset_id: int, split: str, parts: dict[int, str]
) -> None:
    with transaction(conn):
        for example_id, part in sorted(parts.items()):
            _insert(
                conn,
                DatasetSplit,
                {"dataset_id": dataset_id, "split": split, "example_id": example_id, "part": part},
            )


def target_labels(
    *, conn: duckdb.DuckDBPyConnection, dataset_id: int, target: str
) -> dict[int, int]:
    rows = conn.execute(
        "SELECT example_id, label FROM labels WHERE dataset_id = ? AND target = ?",
        [dataset_id, target],
    ).fetchall()
    return {int(i): int(v) for i, v in rows}


def register_subspace(
    *,
    conn: duckdb.DuckDBPyConnection,
    run_id: int,
    subspace_id: int,
    output_path: str,
    rows: int,
    sha256: str,
    record: dict[str, Any],
) -> None:
    """The cell's output file and its subspace, in one transaction: both or neither."""
    from addpatch.store.outputs_view import refresh_outputs_view

    with transaction(conn):
        insert_output_file(
            conn, run_id=run_id, batch_index=subspace_id, path=output_path, rows=rows, sha256=sha256
        )
        _insert(
            conn,
            Subspace,
            {**record, "run_id": run_id, "subspace_id": subspace_id, "created_at": _now()},
        )
        refresh_outputs_view(conn)


def run_subspaces(*, conn: duckdb.DuckDBPyConnection, run_id: int) -> list[dict[str, Any]]:
    cursor = conn.execute(
        "SELECT s.*, p.name AS unit FROM subspaces AS s "
        "JOIN run_positions AS p ON p.run_id = s.run_id AND p.position = s.position "
        "WHERE s.run_id = ? ORDER BY s.subspace_id",
        [run_id],
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
