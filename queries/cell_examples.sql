-- Drill-down: a sample of one cell's examples (or of every cell's) with the base and
-- counterfactual prompts, the patched answer, the label and whether they match. Per cell it
-- takes right and wrong examples in turn, each kind in example-id order (pairs are generated
-- at random, so that is a random sample), more of one kind when the other runs out, up to
-- per_cell; `cell_right` and `cell_n` count the whole cell. The target's labels must be stored
-- (`addpatch score --targets T` stores them). In a DAS run a cell holds one output per trained
-- subspace: only the subspaces trained for the target (no control) count, and of those the
-- one with the most hits at the cell (ties: the smaller k), the subspace its heatmap shows;
-- `subspace_id` picks another (`k` and `subspace_id` say which; NULL for whole vectors).
-- param run_id INTEGER      the run (required)
-- param target VARCHAR      the target variable, e.g. 'C_1' (required)
-- param layer INTEGER       only this layer, -1 = embeddings (unset: every layer)
-- param position INTEGER    only this position (unset: every position)
-- param per_cell INTEGER    examples per cell (unset: 10)
-- param informative BOOLEAN only examples whose label differs from the base answer (unset: false)
-- param component VARCHAR   the component patched: resid, attn, mlp or heads (unset: resid)
-- param head INTEGER        the head, for component heads (unset: every head)
-- param subspace_id INTEGER a DAS run's subspace (unset: each cell's best for the target)
WITH scored AS (
    SELECT
        o.run_id,
        l.target,
        o.layer,
        o.position,
        o.example_id,
        e.base_prompt,
        e.cf_prompt,
        e.base_sum AS base_answer,
        e.cf_sum AS cf_answer,
        l.label,
        o.text AS patched_text,
        o.answer AS patched_answer,
        coalesce(o.answer = l.label, false) AS correct,
        o.subspace_id,
        s.k
    FROM patched_outputs AS o
    JOIN runs AS r ON r.id = o.run_id
    LEFT JOIN subspaces AS s ON s.run_id = o.run_id AND s.subspace_id = o.subspace_id
    JOIN labels AS l ON l.dataset_id = r.dataset_id AND l.example_id = o.example_id
    JOIN examples AS e ON e.dataset_id = r.dataset_id AND e.example_id = o.example_id
    WHERE o.run_id = getvariable('run_id')
      AND l.target = getvariable('target')
      AND (getvariable('layer') IS NULL OR o.layer = getvariable('layer'))
      AND (getvariable('position') IS NULL OR o.position = getvariable('position'))
      AND o.component = coalesce(getvariable('component'), 'resid')
      AND (getvariable('head') IS NULL OR o.head = getvariable('head'))
      AND (NOT coalesce(getvariable('informative'), false) OR l.label <> e.base_sum)
      AND (o.subspace_id IS NULL OR getvariable('subspace_id') = o.subspace_id
           OR (getvariable('subspace_id') IS NULL AND s.target = l.target AND s.control IS NULL))
),
best AS (  -- per cell, the subspace with the most hits (whole vectors: the one NULL)
    SELECT layer, position, subspace_id
    FROM scored
    GROUP BY layer, position, subspace_id, k
    QUALIFY row_number() OVER (
        PARTITION BY layer, position ORDER BY count(*) FILTER (WHERE correct) DESC, k, subspace_id
    ) = 1
),
chosen AS (
    SELECT scored.*
    FROM scored
    JOIN best USING (layer, position)
    WHERE scored.subspace_id IS NOT DISTINCT FROM best.subspace_id
),
ranked AS (
    SELECT
        *,
        row_number() OVER (
            PARTITION BY layer, position, correct ORDER BY example_id
        ) AS kind_rank,
        count(*) FILTER (WHERE correct) OVER (PARTITION BY layer, position) AS cell_right,
        count(*) OVER (PARTITION BY layer, position) AS cell_n
    FROM chosen
),
balanced AS (  -- alternate right and wrong, so either kind fills in when the other runs out
    SELECT
        *,
        row_number() OVER (
            PARTITION BY layer, position ORDER BY kind_rank, NOT correct, example_id
        ) AS pick
    FROM ranked
)
SELECT
    run_id, target, layer, position, example_id, base_prompt, cf_prompt, base_answer,
    cf_answer, label, patched_text, patched_answer, correct, cell_right, cell_n, subspace_id, k
FROM balanced
WHERE pick <= coalesce(getvariable('per_cell'), 10)
ORDER BY layer, position, pick;
