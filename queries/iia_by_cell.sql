-- Interchange-intervention accuracy (IIA) per run, target, layer and position.
-- A cell's IIA is the share of examples whose patched answer equals the counterfactual label.
-- (Computed in one pass over the outputs: each answer is matched against a bit mask of the
-- targets whose label it equals, instead of joining every output with every target.)
-- param run_id INTEGER      only this run (unset: every run)
-- param targets VARCHAR[]   only these targets, e.g. ['C_1', 'raw_output'] (unset: all labelled)
WITH outputs AS (
    SELECT o.run_id, r.dataset_id, o.example_id, o.layer, o.position, o.answer
    FROM patched_outputs AS o
    JOIN runs AS r ON r.id = o.run_id
    WHERE getvariable('run_id') IS NULL OR o.run_id = getvariable('run_id')
),
chosen_labels AS (
    SELECT dataset_id, example_id, target, label
    FROM labels
    WHERE getvariable('targets') IS NULL OR list_contains(getvariable('targets'), target)
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
    c.n
FROM cells AS c
JOIN targets AS t ON t.dataset_id = c.dataset_id
LEFT JOIN hits AS h
    ON h.run_id = c.run_id AND h.target = t.target AND h.layer = c.layer AND h.position = c.position
JOIN runs AS r ON r.id = c.run_id
JOIN models AS m ON m.id = r.model_id
JOIN datasets AS d ON d.id = r.dataset_id
JOIN run_positions AS p ON p.run_id = c.run_id AND p.position = c.position
ORDER BY c.run_id, t.target, c.layer, c.position;
