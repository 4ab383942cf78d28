"""Reading attribution runs back: labels to score, metrics, ranked cells, estimate vs exact."""

from __future__ import annotations

import json

import duckdb
import polars as pl

from addpatch.store.attributions import Cell

COMPONENT_ORDER = "list_position(['resid', 'attn', 'mlp', 'heads'], component)"


def labels_of(
    conn: duckdb.DuckDBPyConnection, dataset_id: int, targets: list[str]
) -> dict[str, dict[int, int]]:
    """target -> example id -> label, for the dataset's stored labels of `targets`."""
    rows = conn.execute(
        "SELECT target, example_id, label FROM labels WHERE dataset_id = ? "
        "AND list_contains(?, target)",
        [dataset_id, targets],
    ).fetchall()
    labels: dict[str, dict[int, int]] = {t: {} for t in targets}
    for target, example_id, label in rows:
        labels[str(target)][int(example_id)] = int(label)
    return labels


def examples_without_metric(conn: duckdb.DuckDBPyConnection, run_id: int) -> pl.DataFrame:
    """Per target: examples scored, those without a metric, and the reasons they have none."""
    return conn.execute(
        "SELECT target, count(*) AS examples, count(no_metric) AS without_metric, "
        "list(DISTINCT no_metric) FILTER (WHERE no_metric IS NOT NULL) AS reasons "
        "FROM attribution_metrics WHERE run_id = ? GROUP BY target ORDER BY target",
        [run_id],
    ).pl()


def best_by_estimate(
    conn: duckdb.DuckDBPyConnection, run_id: int, top: int
) -> list[tuple[str, Cell, float]]:
    """The `top` cells of each target by mean estimate over all components (ties: component,
    layer, head, position): (target, cell, mean estimate), best first per target."""
    rows = conn.execute(
        "SELECT * FROM (SELECT target, component, layer, position, head, "
        "avg(estimate) AS mean FROM attribution_estimates WHERE run_id = ? "
        "GROUP BY target, component, layer, position, head) "
        f"QUALIFY row_number() OVER (PARTITION BY target ORDER BY mean DESC, {COMPONENT_ORDER}, "
        "layer, head, position) <= ? ORDER BY target, mean DESC",
        [run_id, top],
    ).fetchall()
    return [
        (str(t), (str(c), int(layer), int(p), None if h is None else int(h)), float(mean))
        for t, c, layer, p, h, mean in rows
    ]


def cells_of_run(conn: duckdb.DuckDBPyConnection, run_id: int) -> list[Cell]:
    """Every cell an attribution run scored: (component, layer, position, head)."""
    rows = conn.execute(
        "SELECT DISTINCT component, layer, position, head FROM attribution_estimates "
        "WHERE run_id = ? ORDER BY ALL",
        [run_id],
    ).fetchall()
    return [(str(c), int(layer), int(p), None if h is None else int(h)) for c, layer, p, h in rows]


def exact_run_ids(conn: duckdb.DuckDBPyConnection, attribution_run_id: int) -> list[int]:
    """Exact (patch) runs of the attribution run's model and dataset."""
    row = conn.execute(
        "SELECT model_id, dataset_id FROM runs WHERE id = ?", [attribution_run_id]
    ).fetchone()
    if row is None:
        raise KeyError(attribution_run_id)
    rows = conn.execute(
        "SELECT id, provenance_json FROM runs WHERE model_id = ? AND dataset_id = ? "
        "AND id <> ? ORDER BY id",
        [row[0], row[1], attribution_run_id],
    ).fetchall()
    return [int(i) for i, p in rows if json.loads(p).get("method", "patch") == "patch"]


def estimate_vs_exact(conn: duckdb.DuckDBPyConnection, attribution_run_id: int) -> pl.DataFrame:
    """Per target, component, layer, head (-1: none) and position name: the mean estimate and
    the exact IIA over informative examples, for the cells that have both (the latest exact
    run of the model and dataset that has the cell), and whether that run patched the cell
    because a screen ranked it among the target's best (`screened`) rather than at random or as
    part of a whole grid."""
    exact = exact_run_ids(conn, attribution_run_id)
    if not exact:
        return pl.DataFrame()
    return conn.execute(
        f"""
        WITH est AS (
            SELECT e.target, e.component, e.layer, coalesce(e.head, -1) AS head,
                   p.name AS position_name, avg(e.estimate) AS mean_estimate, count(*) AS n_est
            FROM attribution_estimates AS e
            JOIN run_positions AS p ON p.run_id = e.run_id AND p.position = e.position
            WHERE e.run_id = $run
            GROUP BY ALL
        ),
        exact AS (
            SELECT * FROM (
                SELECT c.run_id, c.target, c.component, c.layer, coalesce(c.head, -1) AS head,
                       c.position, p.name AS position_name, c.iia, c.n
                FROM iia_cells(NULL, NULL, informative := true) AS c
                JOIN run_positions AS p ON p.run_id = c.run_id AND p.position = c.position
                WHERE list_contains($exact, c.run_id) AND c.iia IS NOT NULL
            )
            QUALIFY row_number() OVER (
                PARTITION BY target, component, layer, head, position_name
                ORDER BY run_id DESC) = 1
        )
        SELECT est.*, exact.iia, exact.n AS n_exact, exact.run_id AS exact_run_id,
               s.run_id IS NOT NULL AS screened
        FROM est JOIN exact USING (target, component, layer, head, position_name)
        LEFT JOIN screened_cells AS s ON s.run_id = exact.run_id AND s.target = exact.target
            AND s.component = exact.component AND s.layer = exact.layer
            AND s.position = exact.position AND s.head = exact.head
        ORDER BY target, {COMPONENT_ORDER}, layer, head, position_name
        """,
        {"run": attribution_run_id, "exact": exact},
    ).pl()
