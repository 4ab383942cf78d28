"""The catalog and output reads behind the label-log-prob metric (`addpatch.probabilities`)."""

from __future__ import annotations

import duckdb
import polars as pl

# A DAS run holds one output per subspace at a cell: only the subspaces trained for the target
# (no control) count, and of those the one with the most hits (ties: the smaller k), the
# subspace the cell's heatmap and drill-down show. Whole-vector outputs have no subspace.
LOGPROB_SQL = """
WITH scored AS (
    SELECT o.run_id, l.target, o.layer, o.position, o.digit_step, o.subspace_id, s.k,
           coalesce(o.answer = l.label, false) AS correct,
           list_position(o.digit_top_ids, t.token_id) AS rank, o.digit_top_logprobs
    FROM patched_outputs AS o
    JOIN runs AS r ON r.id = o.run_id
    JOIN labels AS l ON l.dataset_id = r.dataset_id AND l.example_id = o.example_id
    JOIN examples AS e ON e.dataset_id = r.dataset_id AND e.example_id = o.example_id
    JOIN label_tokens AS t ON t.label = l.label
    LEFT JOIN subspaces AS s ON s.run_id = o.run_id AND s.subspace_id = o.subspace_id
    WHERE o.run_id = $run_id AND list_contains($targets, l.target) AND o.component = 'resid'
      AND (NOT $informative OR l.label <> e.base_sum)
      AND (o.subspace_id IS NULL OR (s.target = l.target AND s.control IS NULL))
),
per_subspace AS (
    SELECT run_id, target, layer, position, subspace_id, k,
           avg(digit_top_logprobs[rank]) FILTER (WHERE rank > 0) AS label_logprob,
           count(*) FILTER (WHERE rank > 0) / count(*) AS coverage,
           count(*) AS n,
           count(*) FILTER (WHERE correct) AS hits
    FROM scored
    GROUP BY ALL
)
SELECT run_id, target, layer, position, label_logprob, coverage, n
FROM per_subspace
QUALIFY row_number() OVER (
    PARTITION BY run_id, target, layer, position ORDER BY hits DESC, k, subspace_id
) = 1
ORDER BY run_id, target, layer, position
"""


def digit_step_coverage(conn: duckdb.DuckDBPyConnection, run_id: int) -> tuple[int, int]:
    """How many of the run's outputs have the digit step's log-probs, of how many."""
    row = conn.execute(
        "SELECT count(digit_top_ids), count(*) FROM patched_outputs WHERE run_id = ?", [run_id]
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def run_labels(conn: duckdb.DuckDBPyConnection, run_id: int, targets: list[str]) -> list[int]:
    """The distinct label values of the run's dataset for `targets`."""
    rows = conn.execute(
        "SELECT DISTINCT l.label FROM labels l JOIN runs r ON r.dataset_id = l.dataset_id "
        "WHERE r.id = ? AND list_contains(?, l.target)",
        [run_id, targets],
    ).fetchall()
    return [int(r[0]) for r in rows]


def label_logprob_cells(
    conn: duckdb.DuckDBPyConnection,
    *,
    run_id: int,
    targets: list[str],
    informative: bool,
    tokens: pl.DataFrame,
) -> pl.DataFrame:
    """`LOGPROB_SQL` for one run, with `tokens` (label -> token_id) as `label_tokens`."""
    conn.register("label_tokens", tokens.to_arrow())
    try:
        params = {"run_id": run_id, "targets": targets, "informative": informative}
        return conn.execute(LOGPROB_SQL, params).pl()
    finally:
        conn.unregister("label_tokens")
