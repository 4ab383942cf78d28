"""Attribution estimates in the store: Parquet files per batch, their registration, the views.

Layout: attributions/model=M/run=R/batch-NNNNN.parquet, one file per batch of an attribution
run, written atomically and registered in `attribution_files`; only registered files are
visible. Two views read them (paths relative to the store, like `patched_outputs`):

  attribution_estimates  run_id, method, example_id, target, layer, position, component, head,
                         estimate: one row per example, target and cell
  attribution_metrics    run_id, example_id, target, step, label_token, base_token, no_metric:
                         one row per example and target (no_metric: why it has no estimate)
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from addpatch.store.attribution_schema import ATTRIBUTION_COLUMNS, EMPTY_ATTRIBUTIONS
from addpatch.store.catalog import _insert, _next_id, _now, transaction
from addpatch.store.outputs import write_output_file
from addpatch.store.schema import AttributionFile, ScreenedCell

METHOD = "attribution"
Cell = tuple[str, int, int, int | None]  # (component, layer, position index, head)

_ESTIMATE_COLUMNS = "run_id, method, example_id, target, layer, position, component, head, estimate"
_METRIC_COLUMNS = "run_id, example_id, target, step, label_token, base_token, no_metric"


def attribution_relpath(model_id: int, run_id: int, batch_index: int) -> str:
    return f"attributions/model={model_id}/run={run_id}/batch-{batch_index:05d}.parquet"


def write_attribution_file(
    root: Path, relpath: str, run_id: int, table: pa.Table
) -> tuple[int, str]:
    """Write an engine table (with the method column added; run_id is added by the writer)
    atomically to root/relpath; its rows and sha256."""
    method = pa.field(*ATTRIBUTION_COLUMNS[1])
    table = table.add_column(0, method, pa.array([METHOD] * table.num_rows, method.type))
    return write_output_file(root, relpath, run_id, table)


def refresh_attribution_views(conn: duckdb.DuckDBPyConnection) -> None:
    """(Re)create both views over the registered files (typed and empty when there are none)."""
    paths = [
        row[0] for row in conn.execute("SELECT path FROM attribution_files ORDER BY id").fetchall()
    ]
    body = EMPTY_ATTRIBUTIONS
    if paths:
        files = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
        body = (
            f"({EMPTY_ATTRIBUTIONS}) UNION ALL BY NAME "
            f"(SELECT * FROM read_parquet([{files}], union_by_name = true))"
        )
    conn.execute(
        f"CREATE OR REPLACE VIEW attribution_estimates AS SELECT {_ESTIMATE_COLUMNS} "
        f"FROM ({body}) WHERE component IS NOT NULL"
    )
    conn.execute(
        f"CREATE OR REPLACE VIEW attribution_metrics AS SELECT {_METRIC_COLUMNS} "
        f"FROM ({body}) WHERE component IS NULL"
    )


def register_attribution_file(
    *,
    conn: duckdb.DuckDBPyConnection,
    run_id: int,
    batch_index: int,
    path: str,
    rows: int,
    sha256: str,
) -> None:
    with transaction(conn):
        _insert(
            conn,
            AttributionFile,
            {
                "id": _next_id(conn, "attribution_files"),
                "run_id": run_id,
                "batch_index": batch_index,
                "path": path,
                "rows": rows,
                "sha256": sha256,
                "created_at": _now(),
            },
        )
        refresh_attribution_views(conn)


def registered_attribution_batches(*, conn: duckdb.DuckDBPyConnection, run_id: int) -> set[int]:
    rows = conn.execute(
        "SELECT batch_index FROM attribution_files WHERE run_id = ?", [run_id]
    ).fetchall()
    return {int(r[0]) for r in rows}


def unreadable_attribution_files(
    *, conn: duckdb.DuckDBPyConnection, root: Path, run_id: int
) -> list[str]:
    """The run's registered files that are missing, unreadable or hold other than their rows."""
    registered = conn.execute(
        "SELECT path, rows FROM attribution_files WHERE run_id = ? ORDER BY id", [run_id]
    ).fetchall()
    bad = []
    for path, rows in registered:
        try:
            if pq.ParquetFile(root / path).metadata.num_rows != rows:
                bad.append(path)
        except Exception:
            bad.append(path)
    return bad


def unregister_attribution_files(
    *, conn: duckdb.DuckDBPyConnection, root: Path, paths: list[str]
) -> None:
    """Forget damaged files (moved to damaged/) so that a rerun recomputes their batches."""
    for relative in paths:
        full = root / relative
        if full.exists():
            target = root / "damaged" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            full.replace(target)
    with transaction(conn):
        conn.execute(
            "UPDATE runs SET status = 'running' WHERE id IN "
            "(SELECT run_id FROM attribution_files WHERE list_contains(?, path))",
            [paths],
        )
        conn.execute("DELETE FROM attribution_files WHERE list_contains(?, path)", [paths])
        refresh_attribution_views(conn)


def insert_screened_cells(
    *,
    conn: duckdb.DuckDBPyConnection,
    run_id: int,
    attribution_run_id: int,
    ranked: list[tuple[str, Cell, int, float]],  # (target, cell, rank, mean estimate)
) -> None:
    """Record the cells a run patches because they were screened in (once per run)."""
    found = conn.execute(
        "SELECT count(*) FROM screened_cells WHERE run_id = ?", [run_id]
    ).fetchone()
    if found and found[0]:
        return
    with transaction(conn):
        for target, (component, layer, position, head), rank, mean in ranked:
            _insert(
                conn,
                ScreenedCell,
                {
                    "run_id": run_id,
                    "target": target,
                    "component": component,
                    "layer": layer,
                    "position": position,
                    "head": -1 if head is None else head,
                    "attribution_run_id": attribution_run_id,
                    "rank": rank,
                    "mean_estimate": mean,
                },
            )


def run_method(conn: duckdb.DuckDBPyConnection, run_id: int) -> str:
    """`attribution` or `patch` (the run's provenance says; runs before methods: patch)."""
    row = conn.execute("SELECT provenance_json FROM runs WHERE id = ?", [run_id]).fetchone()
    if row is None:
        raise KeyError(run_id)
    return str(json.loads(row[0]).get("method", "patch"))
