"""iia_cells table macro: IIA per run, target, layer and position

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

The one scoring computation every query builds on, kept in the catalog (as llm keeps its common
join in a view) so that the .sql files in queries/ stay short and run unchanged in the shell:
    SELECT * FROM iia_cells(run_id, ['C_1', 'raw_output'])    -- NULL means every run / target
Each cell's IIA is the share of examples whose patched answer equals the label; `baseline` is
the IIA of a patch that changes nothing (the share whose label is the base answer).
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

IIA_CELLS = """
CREATE OR REPLACE MACRO iia_cells(run_filter, target_filter) AS TABLE
WITH outputs AS (
    SELECT o.run_id, r.dataset_id, o.example_id, o.layer, o.position, o.answer
    FROM patched_outputs AS o
    JOIN runs AS r ON r.id = o.run_id
    WHERE run_filter IS NULL OR o.run_id = run_filter
),
chosen_labels AS (
    SELECT dataset_id, example_id, target, label
    FROM labels
    WHERE target_filter IS NULL OR list_contains(target_filter, target)
),
targets AS (  -- each target of a dataset gets a bit: word idx // 64, bit idx % 64
    SELECT dataset_id, target, row_number() OVER (PARTITION BY dataset_id ORDER BY target) - 1 AS idx
    FROM (SELECT DISTINCT dataset_id, target FROM chosen_labels)
),
label_masks AS (  -- per example and answer value: which targets that answer would match
    SELECT l.dataset_id, l.example_id, l.label, t.idx // 64 AS word,
           bit_or(1::UBIGINT << (t.idx % 64)::UBIGINT) AS mask
    FROM chosen_labels AS l
    JOIN targets AS t ON t.dataset_id = l.dataset_id AND t.target = l.target
    GROUP BY ALL
),
cells AS (
    SELECT run_id, dataset_id, layer, position, count(*) AS n
    FROM outputs
    GROUP BY ALL
),
cell_masks AS (  -- one pass over the outputs: how many answers per cell match each mask
    SELECT o.run_id, o.dataset_id, o.layer, o.position, m.word, m.mask, count(*) AS k
    FROM outputs AS o
    JOIN label_masks AS m
        ON m.dataset_id = o.dataset_id AND m.example_id = o.example_id AND m.label = o.answer
    GROUP BY ALL
),
baselines AS (  -- IIA of a patch that changes nothing: the share whose label is the base answer
    SELECT r.id AS run_id, l.target, avg(CASE WHEN l.label = e.base_sum THEN 1.0 ELSE 0.0 END) AS baseline
    FROM runs AS r
    JOIN filter_results AS f
        ON f.model_id = r.model_id AND f.dataset_id = r.dataset_id AND f.base_correct AND f.cf_correct
    JOIN examples AS e ON e.dataset_id = f.dataset_id AND e.example_id = f.example_id
    JOIN chosen_labels AS l ON l.dataset_id = e.dataset_id AND l.example_id = e.example_id
    WHERE run_filter IS NULL OR r.id = run_filter
    GROUP BY ALL
),
hits AS (
    SELECT c.run_id, t.target, c.layer, c.position, sum(c.k) AS hits
    FROM cell_masks AS c
    JOIN targets AS t
        ON t.dataset_id = c.dataset_id AND t.idx // 64 = c.word
       AND (c.mask >> (t.idx % 64)::UBIGINT) & 1::UBIGINT = 1::UBIGINT
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
JOIN targets AS t ON t.dataset_id = c.dataset_id
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
EMPTY_OUTPUTS_VIEW = """
CREATE VIEW IF NOT EXISTS patched_outputs AS
SELECT NULL::INTEGER AS run_id, NULL::BIGINT AS example_id, NULL::SMALLINT AS layer,
       NULL::SMALLINT AS position, NULL::INTEGER[] AS token_ids, NULL::VARCHAR AS text,
       NULL::BIGINT AS answer, NULL::INTEGER[] AS top_ids, NULL::FLOAT[] AS top_logprobs
LIMIT 0
"""


def upgrade() -> None:
    op.execute(EMPTY_OUTPUTS_VIEW)
    op.execute(IIA_CELLS)


def downgrade() -> None:
    op.execute("DROP MACRO TABLE IF EXISTS iia_cells")
