-- The best cells per run and target: where the variable lives, by IIA (ties: earlier layer).
-- param run_id INTEGER      only this run (unset: every run)
-- param targets VARCHAR[]   only these targets (unset: all labelled)
-- param top INTEGER         cells per run and target (unset: 1)
WITH cells AS (
    SELECT
        o.run_id,
        m.name AS model,
        d.num_digits,
        l.target,
        o.layer,
        o.position,
        p.name AS position_name,
        p.token_text AS position_label,
        avg(CASE WHEN o.answer = l.label THEN 1.0 ELSE 0.0 END) AS iia,
        count(*) AS n
    FROM patched_outputs AS o
    JOIN runs AS r ON r.id = o.run_id
    JOIN models AS m ON m.id = r.model_id
    JOIN datasets AS d ON d.id = r.dataset_id
    JOIN labels AS l ON l.dataset_id = r.dataset_id AND l.example_id = o.example_id
    JOIN run_positions AS p ON p.run_id = o.run_id AND p.position = o.position
    WHERE (getvariable('run_id') IS NULL OR o.run_id = getvariable('run_id'))
      AND (getvariable('targets') IS NULL OR list_contains(getvariable('targets'), l.target))
    GROUP BY ALL
)
SELECT *
FROM cells
QUALIFY row_number() OVER (
    PARTITION BY run_id, target ORDER BY iia DESC, layer, position
) <= coalesce(getvariable('top'), 1)
ORDER BY run_id, target, iia DESC, layer, position;
