"""iia_cells by component and head, with the intervals and the informative restriction of 0004

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

Patched outputs are keyed by component (resid, attn, mlp, heads) and head (NULL but for heads)
as well as layer and position; the `patched_outputs` view reads files written before that as
component 'resid', head NULL. The macro keeps its parameters and every column it had, in the
same order, and adds `component` and `head` after `baseline` (before 0004's hits and interval):
on a store of residual-stream runs it returns the same
rows and figures as before, with component 'resid' and head NULL.
"""

from __future__ import annotations

from alembic import op

from addpatch.store.output_schema import OUTPUT_COLUMNS_0005, empty_outputs_select

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

WILSON_Z = 1.959963984540054  # the 97.5% quantile of the standard normal: a 95% interval

IIA_CELLS = f"""
CREATE OR REPLACE MACRO iia_cells(run_filter, target_filter, informative := false) AS TABLE
WITH all_labels AS (  -- each run's labels: (run, example, target) -> label, and label <> base
    SELECT r.id AS run_id, r.model_id, r.dataset_id, l.example_id, l.target, l.label,
           l.label <> e.base_sum AS differs
    FROM runs AS r
    JOIN labels AS l ON l.dataset_id = r.dataset_id
    JOIN examples AS e ON e.dataset_id = l.dataset_id AND e.example_id = l.example_id
    WHERE (run_filter IS NULL OR r.id = run_filter)
      AND (target_filter IS NULL OR list_contains(target_filter, l.target))
),
run_labels AS (  -- the examples that count: all, or the informative ones
    SELECT * FROM all_labels WHERE NOT informative OR differs
),
targets AS (  -- target t of a run counts in 24-bit lane t % 5 of packed sum t // 5
    SELECT run_id, target, row_number() OVER (PARTITION BY run_id ORDER BY target) - 1 AS idx
    FROM (SELECT DISTINCT run_id, target FROM all_labels)
),
packed_labels AS (  -- per example and answer value: the lanes of the targets it would match
    SELECT l.run_id, l.example_id, l.label, t.idx // 5 AS lane_group,
           sum(1::HUGEINT << (24 * (t.idx % 5))::INTEGER) AS packed
    FROM run_labels AS l
    JOIN targets AS t ON t.run_id = l.run_id AND t.target = l.target
    GROUP BY ALL
),
cells AS (
    SELECT run_id, layer, component, head, position, count(*) AS n
    FROM patched_outputs
    WHERE run_filter IS NULL OR run_id = run_filter
    GROUP BY ALL
),
lane_sums AS (  -- one join per output (no row per matched target), summed lane-wise per cell
    SELECT o.run_id, o.layer, o.component, o.head, o.position, p.lane_group,
           sum(p.packed) AS lanes
    FROM patched_outputs AS o
    JOIN packed_labels AS p
        ON p.run_id = o.run_id AND p.example_id = o.example_id AND p.label = o.answer
    GROUP BY ALL
),
hits AS (
    SELECT s.run_id, t.target, s.layer, s.component, s.head, s.position,
           ((s.lanes >> (24 * (t.idx % 5))::INTEGER) & 16777215)::BIGINT AS hits
    FROM lane_sums AS s
    JOIN targets AS t ON t.run_id = s.run_id AND t.idx // 5 = s.lane_group
),
informative_lanes AS (  -- informative only: per example, the lanes of the targets it counts for
    SELECT l.run_id, l.example_id, t.idx // 5 AS lane_group,
           sum(1::HUGEINT << (24 * (t.idx % 5))::INTEGER) AS packed
    FROM run_labels AS l
    JOIN targets AS t ON t.run_id = l.run_id AND t.target = l.target
    WHERE informative
    GROUP BY ALL
),
informative_sums AS (
    SELECT o.run_id, o.layer, o.component, o.head, o.position, p.lane_group,
           sum(p.packed) AS lanes
    FROM patched_outputs AS o
    JOIN informative_lanes AS p ON p.run_id = o.run_id AND p.example_id = o.example_id
    GROUP BY ALL
),
informative_n AS (
    SELECT s.run_id, t.target, s.layer, s.component, s.head, s.position,
           ((s.lanes >> (24 * (t.idx % 5))::INTEGER) & 16777215)::BIGINT AS n
    FROM informative_sums AS s
    JOIN targets AS t ON t.run_id = s.run_id AND t.idx // 5 = s.lane_group
),
baselines AS (  -- IIA of a patch that changes nothing: the share whose label is the base answer
    SELECT l.run_id, l.target, avg(CASE WHEN l.label = e.base_sum THEN 1.0 ELSE 0.0 END) AS baseline
    FROM run_labels AS l
    JOIN filter_results AS f
        ON f.model_id = l.model_id AND f.dataset_id = l.dataset_id AND f.example_id = l.example_id
       AND f.base_correct AND f.cf_correct
    JOIN examples AS e ON e.dataset_id = l.dataset_id AND e.example_id = l.example_id
    GROUP BY ALL
),
counted AS (
    SELECT c.run_id, t.target, c.layer, c.component, c.head, c.position,
           coalesce(h.hits, 0) AS hits,
           CASE WHEN informative THEN coalesce(i.n, 0) ELSE c.n END AS n
    FROM cells AS c
    JOIN targets AS t ON t.run_id = c.run_id
    LEFT JOIN hits AS h
        ON h.run_id = c.run_id AND h.target = t.target AND h.layer = c.layer
       AND h.position = c.position AND h.component = c.component
       AND h.head IS NOT DISTINCT FROM c.head
    LEFT JOIN informative_n AS i
        ON i.run_id = c.run_id AND i.target = t.target AND i.layer = c.layer
       AND i.position = c.position AND i.component = c.component
       AND i.head IS NOT DISTINCT FROM c.head
),
wilson AS (  -- 95% Wilson score interval: centre and half-width, both over 1 + z^2 / n
    SELECT *, hits / n AS p, {WILSON_Z}::DOUBLE AS z
    FROM counted
)
SELECT
    w.run_id,
    m.name AS model,
    d.num_digits,
    w.target,
    w.layer,
    w.position,
    p.name AS position_name,
    p.token_text AS position_label,
    w.p AS iia,
    w.n,
    b.baseline,
    w.component,
    w.head,
    w.hits,
    CASE WHEN w.hits = 0 AND w.n > 0 THEN 0.0 ELSE greatest(0.0, (w.p + w.z * w.z / (2 * w.n)
        - w.z * sqrt(w.p * (1 - w.p) / w.n + w.z * w.z / (4 * w.n * w.n)))
        / (1 + w.z * w.z / w.n)) END AS iia_low,
    CASE WHEN w.hits = w.n AND w.n > 0 THEN 1.0 ELSE least(1.0, (w.p + w.z * w.z / (2 * w.n)
        + w.z * sqrt(w.p * (1 - w.p) / w.n + w.z * w.z / (4 * w.n * w.n)))
        / (1 + w.z * w.z / w.n)) END AS iia_high
FROM wilson AS w
LEFT JOIN baselines AS b ON b.run_id = w.run_id AND b.target = w.target
JOIN runs AS r ON r.id = w.run_id
JOIN models AS m ON m.id = r.model_id
JOIN datasets AS d ON d.id = r.dataset_id
JOIN run_positions AS p ON p.run_id = w.run_id AND p.position = w.position
"""


# The macro binds against the view: give it the new columns first (an empty view; addpatch
# redefines it over the registered files right after upgrading).
EMPTY_OUTPUTS_VIEW = "CREATE OR REPLACE VIEW patched_outputs AS " + empty_outputs_select(
    OUTPUT_COLUMNS_0005
)


def upgrade() -> None:
    op.execute(EMPTY_OUTPUTS_VIEW)
    op.execute(IIA_CELLS)


def downgrade() -> None:
    """Restore the macro of 0004 (read from its migration file next to this one); it reads only
    columns the view still has."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).with_name("0004_iia_intervals.py")
    spec = importlib.util.spec_from_file_location("migration_0004", path)
    assert spec is not None and spec.loader is not None
    previous = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(previous)
    op.execute(previous.IIA_CELLS)
