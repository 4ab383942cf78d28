"""The catalog and output reads behind the label-log-prob metric (`addpatch.probabilities`)."""

from __future__ import annotations

import duckdb
import polars as pl

LOGPROB_SQL = """
WITH scored AS (
    SELECT o.run_id, l.target, o.layer, o.position, o.digit_step,
           list_position(o.digit_top_ids, t.token_id) AS rank, o.digit_top_logprobs
    FROM patched_outputs AS o
    JOIN runs AS r ON r.id = o.run_id
    JOIN labels AS l ON l.dataset_id = r.dataset_id AND l.example_id = o.example_id
    JOIN examples AS e ON e.dataset_id = r.dataset_id AND e.example_id = o.example_id
    JOIN label_tokens AS t ON t.label = l.label
    WHERE o.run_id = $run_id AND list_contains($targets, l.target) AND o.component = 'resid'
      AND (NOT $informative OR l.label <> e.base_sum)
)
SELECT run_id, target, layer, position,
       avg(digit_top_logprobs[rank]) FILTER (WHERE rank > 0) AS label_logprob,
       count(*) FILTER (WHERE rank > 0) / count(*) AS coverage,
       count(*) AS n
FROM scored
GROUP BY ALL
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
