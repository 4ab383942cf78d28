"""trained subspace interventions (DAS): runs by method, subspaces, dataset splits, iia_cells by subspace

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

* `runs.method`: how a run intervenes, `das` for trained subspaces; NULL (every run before this
  revision) is full-vector patching, read as `patch`.
* `subspaces`: one trained subspace per DAS cell (run, subspace_id): where it lives (layer,
  position, component), what it was trained for (target, control), its rank k, seed, split
  hash, optimizer settings, losses and IIA, and its safetensors file under the store.
* `dataset_splits`: a dataset's examples split into train and test, seeded, by name.
* Patched outputs gain `method`, `k`, `trained_for` and `subspace_id` (NULL in files written
  before, and in full-vector runs); `iia_cells` counts each subspace's cells apart, and adds
  `method`, `subspace_id`, `k`, `trained_for` and `control` after every column it had: on a
  store of full-vector runs it returns the same rows and figures as before, with method
  'patch' and the new columns NULL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from addpatch.store.output_schema import OUTPUT_COLUMNS_0009, empty_outputs_select

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

IIA_CELLS = """CREATE OR REPLACE MACRO iia_cells(run_filter, target_filter, informative := false) AS TABLE
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
    SELECT run_id, layer, component, head, position, subspace_id, count(*) AS n
    FROM patched_outputs
    WHERE run_filter IS NULL OR run_id = run_filter
    GROUP BY ALL
),
lane_sums AS (  -- one join per output (no row per matched target), summed lane-wise per cell
    SELECT o.run_id, o.layer, o.component, o.head, o.position, o.subspace_id, p.lane_group,
           sum(p.packed) AS lanes
    FROM patched_outputs AS o
    JOIN packed_labels AS p
        ON p.run_id = o.run_id AND p.example_id = o.example_id AND p.label = o.answer
    GROUP BY ALL
),
hits AS (
    SELECT s.run_id, t.target, s.layer, s.component, s.head, s.position, s.subspace_id,
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
    SELECT o.run_id, o.layer, o.component, o.head, o.position, o.subspace_id, p.lane_group,
           sum(p.packed) AS lanes
    FROM patched_outputs AS o
    JOIN informative_lanes AS p ON p.run_id = o.run_id AND p.example_id = o.example_id
    GROUP BY ALL
),
informative_n AS (
    SELECT s.run_id, t.target, s.layer, s.component, s.head, s.position, s.subspace_id,
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
    SELECT c.run_id, t.target, c.layer, c.component, c.head, c.position, c.subspace_id,
           coalesce(h.hits, 0) AS hits,
           CASE WHEN informative THEN coalesce(i.n, 0) ELSE c.n END AS n
    FROM cells AS c
    JOIN targets AS t ON t.run_id = c.run_id
    LEFT JOIN hits AS h
        ON h.run_id = c.run_id AND h.target = t.target AND h.layer = c.layer
       AND h.position = c.position AND h.component = c.component
       AND h.head IS NOT DISTINCT FROM c.head
       AND h.subspace_id IS NOT DISTINCT FROM c.subspace_id
    LEFT JOIN informative_n AS i
        ON i.run_id = c.run_id AND i.target = t.target AND i.layer = c.layer
       AND i.position = c.position AND i.component = c.component
       AND i.head IS NOT DISTINCT FROM c.head
       AND i.subspace_id IS NOT DISTINCT FROM c.subspace_id
),
wilson AS (  -- 95% Wilson score interval: centre and half-width, both over 1 + z^2 / n
    SELECT *, hits / n AS p, 1.959963984540054::DOUBLE AS z
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
        / (1 + w.z * w.z / w.n)) END AS iia_high,
    coalesce(r.method, 'patch') AS method,
    w.subspace_id,
    s.k,
    s.target AS trained_for,
    s.control
FROM wilson AS w
LEFT JOIN baselines AS b ON b.run_id = w.run_id AND b.target = w.target
JOIN runs AS r ON r.id = w.run_id
JOIN models AS m ON m.id = r.model_id
JOIN datasets AS d ON d.id = r.dataset_id
JOIN run_positions AS p ON p.run_id = w.run_id AND p.position = w.position
LEFT JOIN subspaces AS s ON s.run_id = w.run_id AND s.subspace_id = w.subspace_id
"""

EMPTY_OUTPUTS_VIEW = "CREATE OR REPLACE VIEW patched_outputs AS " + empty_outputs_select(
    OUTPUT_COLUMNS_0009
)


def upgrade() -> None:
    op.add_column("runs", sa.Column("method", sa.String(), nullable=True))
    op.create_table(
        "subspaces",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id"), primary_key=True),
        sa.Column("subspace_id", sa.Integer(), primary_key=True),
        sa.Column("target", sa.String(), nullable=False),
        sa.Column("control", sa.String(), nullable=True),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("layer", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("component", sa.String(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("split_sha256", sa.String(), nullable=False),
        sa.Column("settings_json", sa.Text(), nullable=False),
        sa.Column("final_train_loss", sa.Double(), nullable=False),
        sa.Column("train_iia", sa.Double(), nullable=False),
        sa.Column("test_iia", sa.Double(), nullable=False),
        sa.Column("train_examples", sa.Integer(), nullable=False),
        sa.Column("test_examples", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(), nullable=False, unique=True),
        sa.Column("sha256", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "dataset_splits",
        sa.Column("dataset_id", sa.Integer(), sa.ForeignKey("datasets.id"), primary_key=True),
        sa.Column("split", sa.String(), primary_key=True),
        sa.Column("example_id", sa.Integer(), primary_key=True),
        sa.Column("part", sa.String(), nullable=False),
    )
    op.execute(EMPTY_OUTPUTS_VIEW)
    op.execute(IIA_CELLS)


def downgrade() -> None:
    """Restore the macro and view of 0005 (read from its migration file next to this one), then
    drop what this revision added."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).with_name("0005_components.py")
    spec = importlib.util.spec_from_file_location("migration_0005", path)
    assert spec is not None and spec.loader is not None
    previous = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(previous)
    op.execute(previous.EMPTY_OUTPUTS_VIEW)
    op.execute(previous.IIA_CELLS)
    from addpatch.store.drop_columns import drop_columns

    op.drop_table("dataset_splits")
    op.drop_table("subspaces")
    # DuckDB cannot ALTER a table that other tables reference: rebuilt, rows kept
    drop_columns(op.get_bind(), "runs", ["method"])
