"""iia_cells table macro: IIA per run, target, layer and position

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

The one scoring computation every query builds on, kept in the catalog (as llm keeps its common
join in a view) so that the .sql files in queries/ stay short and run unchanged in the shell:
    SELECT * FROM iia_cells(run_id, ['C_1', 'raw_output'])    -- NULL means every run / target
Each cell's IIA is the share of examples whose patched answer equals the label; `baseline` is
the IIA of a patch that changes nothing (the share whose label is the base answer).

Speed: every output is joined once with the labels it could match, and the matches of up to
five targets are summed together, each in its own 24-bit lane of a HUGEINT (so a cell may hold
up to 16.7 million examples); no row is made per (output, target).
"""

from __future__ import annotations

from alembic import op

from addpatch.store.output_schema import OUTPUT_COLUMNS_0002, empty_outputs_select

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

IIA_CELLS = """
CREATE OR REPLACE MACRO iia_cells(run_filter, target_filter) AS TABLE
WITH run_labels AS (  -- each run's labels: (run, example, target) -> label
    SELECT r.id AS run_id, r.model_id, r.dataset_id, l.example_id, l.target, l.label
    FROM runs AS r
    JOIN labels AS l ON l.dataset_id = r.dataset_id
    WHERE (run_filter IS NULL OR r.id = run_filter)
      AND (target_filter IS NULL OR list_contains(target_filter, l.target))
),
targets AS (  -- target t of a run counts in 24-bit lane t % 5 of packed sum t // 5
    SELECT run_id, target, row_number() OVER (PARTITION BY run_id ORDER BY target) - 1 AS idx
    FROM (SELECT DISTINCT run_id, target FROM run_labels)
),
packed_labels AS (  -- per example and answer value: the lanes of the targets it would match
    SELECT l.run_id, l.example_id, l.label, t.idx // 5 AS lane_group,
           sum(1::HUGEINT << (24 * (t.idx % 5))::INTEGER) AS packed
    FROM run_labels AS l
    JOIN targets AS t ON t.run_id = l.run_id AND t.target = l.target
    GROUP BY ALL
),
cells AS (
    SELECT run_id, layer, position, count(*) AS n
    FROM patched_outputs
    WHERE run_filter IS NULL OR run_id = run_filter
    GROUP BY ALL
),
lane_sums AS (  -- one join per output (no row per matched target), summed lane-wise per cell
    SELECT o.run_id, o.layer, o.position, p.lane_group, sum(p.packed) AS lanes
    FROM patched_outputs AS o
    JOIN packed_labels AS p
        ON p.run_id = o.run_id AND p.example_id = o.example_id AND p.label = o.answer
    GROUP BY ALL
),
hits AS (
    SELECT s.run_id, t.target, s.layer, s.position,
           ((s.lanes >> (24 * (t.idx % 5))::INTEGER) & 16777215)::BIGINT AS hits
    FROM lane_sums AS s
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
)
SELECT
    c.run_id,
    m.name AS model,
    d.num_digits,
    t.target,
    c.layer,
    c.position,
    p.name AS position_name,
    p.token_text AS position_label,
    coalesce(h.hits, 0) / c.n AS iia,
    c.n,
    b.baseline
FROM cells AS c
JOIN targets AS t ON t.run_id = c.run_id
LEFT JOIN hits AS h
    ON h.run_id = c.run_id AND h.target = t.target AND h.layer = c.layer AND h.position = c.position
LEFT JOIN baselines AS b ON b.run_id = c.run_id AND b.target = t.target
JOIN runs AS r ON r.id = c.run_id
JOIN models AS m ON m.id = r.model_id
JOIN datasets AS d ON d.id = r.dataset_id
JOIN run_positions AS p ON p.run_id = c.run_id AND p.position = c.position
"""


# The view of registered output files; addpatch redefines it as files are registered. A store
# created at 0001 got it from addpatch itself, a new one needs it before the macro can bind.
EMPTY_OUTPUTS_VIEW = "CREATE VIEW IF NOT EXISTS patched_outputs AS " + empty_outputs_select(
    OUTPUT_COLUMNS_0002
)


def upgrade() -> None:
    op.execute(EMPTY_OUTPUTS_VIEW)
    op.execute(IIA_CELLS)


def downgrade() -> None:
    op.execute("DROP MACRO TABLE IF EXISTS iia_cells")
